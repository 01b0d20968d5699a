/* One EventSource per page on a feed's SSE stream, with gap-free resume and duplicate removal.

   The browser's EventSource resends Last-Event-ID by itself when it reconnects after a network
   error. When the server closes the stream for good (readyState CLOSED), we open a new one and
   pass the last id as ?last_event_id= (a new EventSource cannot set the header). Events already
   seen (same id) are dropped: a replay may overlap what arrived live. */
"use strict";
(function () {
  const SEEN_LIMIT = 20000;

  class FeedStream {
    constructor(api, handlers) {
      this.url = api + "/stream";
      this.handlers = handlers;   // {point(p), open(), state(text)}
      this.lastId = null;
      this.seen = new Set();
      this.order = [];
      this.retry = 1000;
      this.source = null;
      this.opened = false;
    }

    start() { this.connect(); }

    connect() {
      let url = this.url;
      if (this.lastId !== null) url += "?last_event_id=" + encodeURIComponent(this.lastId);
      const source = new EventSource(url, { withCredentials: true });
      this.source = source;
      this.state("connecting…");
      source.onopen = () => {
        this.retry = 1000;
        this.state("live");
        if (!this.opened) {
          this.opened = true;
          if (this.handlers.open) this.handlers.open();
        }
      };
      source.addEventListener("point", (event) => this.receive(event));
      source.onerror = () => {
        if (source.readyState === EventSource.CLOSED) {
          source.close();
          this.state("disconnected, retrying…");
          setTimeout(() => this.connect(), this.retry);
          this.retry = Math.min(this.retry * 2, 30000);
        } else {
          this.state("reconnecting…");
        }
      };
    }

    receive(event) {
      let point;
      try { point = JSON.parse(event.data); } catch (e) { return; }
      const id = Number(point.id !== undefined ? point.id : event.lastEventId);
      if (this.seen.has(id)) return;
      this.seen.add(id);
      this.order.push(id);
      if (this.order.length > SEEN_LIMIT) this.seen.delete(this.order.shift());
      if (this.lastId === null || id > this.lastId) this.lastId = id;
      this.handlers.point({ id: id, axis: point.axis, x: Number(point.x), y: Number(point.y) });
    }

    state(text) { if (this.handlers.state) this.handlers.state(text); }
  }

  /* History of one axis from the points API: [{id, x, y}] oldest first. */
  async function fetchPoints(api, axis, params) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined) query.set(k, v);
    const response = await fetch(api + "/axes/" + encodeURIComponent(axis) + "/points?" + query, {
      headers: { "Accept": "application/json" }, credentials: "same-origin",
    });
    if (!response.ok) throw new Error("points of " + axis + ": HTTP " + response.status);
    const data = await response.json();
    return data.points || [];
  }

  window.RTDP_STREAM = { FeedStream, fetchPoints };
})();

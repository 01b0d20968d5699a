/* One EventSource per page on a feed's SSE stream, with gap-free resume and duplicate removal.

   Every reconnect is ours, not the browser's: its automatic one sends Last-Event-ID only after an
   event arrived, so a client dropped before its first event would resume from "now" and lose
   points. We close the failed EventSource and open a new one with ?last_event_id= (a new
   EventSource cannot set the header), where the last id is the highest of the events received
   and the history the page loaded (noteId). Events already seen (same id) are dropped: a replay
   may overlap what arrived live. */
"use strict";
(function () {
  const SEEN_LIMIT = 20000;

  class FeedStream {
    /* `api` is a feed's API URL (its stream is api + "/stream"), or {url, seenLimit} for a stream of
       several feeds. */
    constructor(api, handlers, resumeId) {
      this.url = typeof api === "string" ? api + "/stream" : api.url;
      this.seenLimit = (typeof api === "object" && api.seenLimit) || SEEN_LIMIT;
      this.handlers = handlers;   // {point(p), open(), state(text)}
      // The highest point id when the page was rendered: anything newer is replayed to us.
      this.lastId = typeof resumeId === "number" ? resumeId : null;
      this.seen = new Set();
      this.order = [];
      this.retry = 500;
      this.source = null;
      this.opened = false;
      this.delivered = 0;
      this.connects = 0;
    }

    /* A point id the page has (from history): a resume need not replay it or anything before. */
    noteId(id) {
      if (this.lastId === null || id > this.lastId) this.lastId = id;
    }

    start() { this.connect(); }

    connect() {
      let url = this.url;
      if (this.lastId !== null) url += (url.includes("?") ? "&" : "?") + "last_event_id=" + encodeURIComponent(this.lastId);
      const source = new EventSource(url, { withCredentials: true });
      this.source = source;
      this.state("connecting…");
      source.onopen = () => {
        this.retry = 500;
        this.connects += 1;
        document.documentElement.dataset.streamConnects = String(this.connects);
        this.state("live");
        if (!this.opened) {
          this.opened = true;
          if (this.handlers.open) this.handlers.open();
        }
      };
      source.addEventListener("point", (event) => this.receive(event));
      // Alerts on this feed (no id: they do not move Last-Event-ID); notify.js shows them.
      source.addEventListener("alert", (event) =>
        document.dispatchEvent(new CustomEvent("rtdp:alert", { detail: event.data })));
      source.onerror = () => {
        if (this.source !== source) return;
        source.close();
        this.source = null;
        this.state("reconnecting…");
        setTimeout(() => this.connect(), this.retry);
        this.retry = Math.min(this.retry * 2, 30000);
      };
    }

    receive(event) {
      let point;
      try { point = JSON.parse(event.data); } catch (e) { return; }
      const id = Number(point.id !== undefined ? point.id : event.lastEventId);
      if (this.seen.has(id)) return;
      this.seen.add(id);
      this.order.push(id);
      if (this.order.length > this.seenLimit) this.seen.delete(this.order.shift());
      this.noteId(id);
      this.delivered += 1;
      document.documentElement.dataset.streamEvents = String(this.delivered);
      this.handlers.point({ id: id, feed: point.feed, axis: point.axis, x: Number(point.x), y: Number(point.y) });
    }

    state(text) { if (this.handlers.state) this.handlers.state(text); }
  }

  /* History of one axis from the points API: [{id, x, y}] oldest first. `signal` (optional) aborts it. */
  async function fetchPoints(api, axis, params, signal) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined) query.set(k, v);
    const response = await fetch(api + "/axes/" + encodeURIComponent(axis) + "/points?" + query, {
      headers: { "Accept": "application/json" }, credentials: "same-origin", signal: signal,
    });
    if (!response.ok) throw new Error("points of " + axis + ": HTTP " + response.status);
    const data = await response.json();
    return data.points || [];
  }

  window.RTDP_STREAM = { FeedStream, fetchPoints };
})();

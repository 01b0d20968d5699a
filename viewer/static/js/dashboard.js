/* A dashboard: widgets on a 12-column grid, all fed by ONE EventSource over every feed they show
   (/api/v1/stream?feed=A&feed=B), with one time range for all of them.

   Each series (feed/axis) is loaded once however many widgets show it, and kept in a Store: its points in
   the range (sorted x and y arrays, bounded like the graph page's), its latest point and the latest few
   (for tables). A live point updates its store and marks the widgets that show it; redraws happen at most
   once per animation frame and every MIN_REDRAW_MS, so a busy stream costs a few redraws a second per
   widget, not one per point. Dragging across a chart zooms every widget's history to that time (fetched
   again at that resolution); "Back to live" returns to the sliding range.

   The server sends only what this viewer may read: a widget on a feed they may not read arrives as
   {"hidden": true}, with no feed or axis, and is drawn as an empty tile. Editing (owner and admins) goes
   through /api/v1/dashboards with the page's CSRF token. */
"use strict";
(function () {
  const config = RTDP.pageConfig();
  let dash = config.dashboard;
  const seriesInfo = config.series || {};
  const grid = document.getElementById("grid");
  const stateEl = document.getElementById("live-state");
  const rangeText = document.getElementById("range-text");
  const backButton = document.getElementById("back-to-live");
  const MIN_REDRAW_MS = 200;  // live redraws of a widget at most 5 times a second
  const FRAME_BUDGET_MS = 6;  // of one animation frame spent redrawing; the other widgets wait for the next
  const TABLE_ROWS = 8;
  const KEEP_PER_PIXEL = 3;   // points a store keeps per pixel of its widest widget before reducing the older ones
  const SVG = "http://www.w3.org/2000/svg";
  // Timing marks for bench/graph_page.py (ms since navigation start).
  const timings = window.rtdpDashTimings = {};

  let rangeSeconds = dash.range;
  let absolute = null;        // {min, max} while zoomed
  let views = [];
  let stores = new Map();
  let dirty = new Set();
  let frameRequested = false;
  let lastDraw = 0;
  let loadGeneration = 0;
  let editing = false;

  const keyOf = function (s) { return s.feed + "/" + s.axis; };
  const visibleSeries = function (w) {
    return (w.series || [w]).filter(function (s) { return !s.hidden && s.feed !== undefined; });
  };
  const apiOf = function (feed) { return "/api/v1/feeds/" + encodeURIComponent(feed); };

  /* -- numbers and times ---------------------------------------------------------------------------- */

  /* Numbers as every page shows them (RTDP.formatNumber, with the axis's unit); a bool axis by its unit's
     "false/true" names ("closed/open") or true/false. */
  function formatValue(y, info) {
    if (y === null || y === undefined || Number.isNaN(y)) return "–";
    if (info && info.y_cast === "bool") {
      const names = (info.unit || "").split("/");
      return names.length === 2 && names[0] && names[1] ? names[y ? 1 : 0] : (y ? "true" : "false");
    }
    return RTDP.formatNumber(y, info ? info.unit : "");
  }

  function formatX(x, info) {
    return info && info.x_cast !== "datetime" ? String(x) : RTDP.formatTime(x, false);
  }

  /* -- one series' data -------------------------------------------------------------------------------- */

  class Store {
    constructor(info) {
      this.info = info;
      this.xs = []; this.ys = [];
      this.recent = [];       // the latest points, oldest first, at most TABLE_ROWS
      this.last = info.last_x === null || info.last_x === undefined ? null : { x: info.last_x, y: Number(info.last_y) };
      this.previous = null;
      this.keep = 3000;
    }
    lowerBound(value) {
      const xs = this.xs; let lo = 0, hi = xs.length;
      while (lo < hi) { const mid = (lo + hi) >>> 1; if (xs[mid] < value) lo = mid + 1; else hi = mid; }
      return lo;
    }
    setHistory(points) {
      this.xs = points.map(function (p) { return p.x; });
      this.ys = points.map(function (p) { return Number(p.y); });
      const n = points.length;
      if (n && (this.last === null || points[n - 1].x >= this.last.x)) {
        this.last = { x: points[n - 1].x, y: Number(points[n - 1].y) };
        if (n > 1) this.previous = { x: points[n - 2].x, y: Number(points[n - 2].y) };
      }
    }
    setRecent(points) {
      this.recent = points.map(function (p) { return { x: p.x, y: Number(p.y) }; }).sort(function (a, b) { return a.x - b.x; });
      const n = this.recent.length;
      if (n && (this.last === null || this.recent[n - 1].x >= this.last.x)) this.last = this.recent[n - 1];
      if (n > 1 && this.previous === null) this.previous = this.recent[n - 2];
    }
    add(x, y, inRange) {
      if (this.last === null || x >= this.last.x) {
        if (this.last !== null && x > this.last.x) this.previous = this.last;
        this.last = { x: x, y: y };
      }
      const r = this.recent;
      if (!r.length || x > r[r.length - 1].x) { r.push({ x: x, y: y }); if (r.length > TABLE_ROWS) r.shift(); }
      if (!inRange) return;
      const xs = this.xs, n = xs.length;
      if (n === 0 || x > xs[n - 1]) { xs.push(x); this.ys.push(y); }
      else {
        const i = this.lowerBound(x);
        if (xs[i] === x) this.ys[i] = y; else { xs.splice(i, 0, x); this.ys.splice(i, 0, y); }
      }
      if (xs.length > this.keep) this.reduce();
    }
    dropBefore(cutoff) {
      const i = this.lowerBound(cutoff);
      if (i > 0) { this.xs.splice(0, i); this.ys.splice(0, i); }
    }
    /* The older three quarters become each pair of neighbours' lowest and highest: a spike survives. */
    reduce() {
      const end = Math.floor(this.xs.length * 3 / 4) & ~1;
      const xs = [], ys = [];
      for (let i = 0; i < end; i += 4) {
        let lo = i, hi = i;
        for (let j = i + 1; j < Math.min(i + 4, end); j++) { if (this.ys[j] < this.ys[lo]) lo = j; if (this.ys[j] > this.ys[hi]) hi = j; }
        const a = Math.min(lo, hi), b = Math.max(lo, hi);
        xs.push(this.xs[a]); ys.push(this.ys[a]);
        if (b !== a) { xs.push(this.xs[b]); ys.push(this.ys[b]); }
      }
      this.xs = xs.concat(this.xs.slice(end)); this.ys = ys.concat(this.ys.slice(end));
    }
  }

  function since() { return absolute ? absolute.min : Date.now() / 1000 - rangeSeconds; }

  /* -- widgets ------------------------------------------------------------------------------------------ */

  function tile(widget, index, kindLabel) {
    const el = document.createElement("section");
    el.className = "widget widget-" + widget.type;
    el.style.gridColumn = "span " + widget.w;
    el.style.gridRow = "span " + widget.h;
    el.dataset.index = String(index);
    el.dataset.type = widget.type;
    const head = document.createElement("header");
    const title = document.createElement("h2");
    title.id = "widget-title-" + index;
    const shown = visibleSeries(widget);
    title.textContent = widget.title || (shown.length ? shown.map(keyOf).join(", ") : kindLabel);
    // Each widget is a region: named by its kind and place too, since two may show one series untitled.
    el.setAttribute("aria-label", kindLabel + " " + (index + 1) + ": " + title.textContent);
    head.appendChild(title);
    if (dash.editable) head.appendChild(editButtons(index));
    el.appendChild(head);
    const body = document.createElement("div");
    body.className = "widget-body";
    el.appendChild(body);
    return { el: el, body: body, title: title };
  }

  function hiddenNote(body) {
    body.parentElement.style.gridRow = "span 1";
    body.parentElement.classList.add("widget-unavailable");
    const p = document.createElement("p");
    p.className = "muted widget-hidden";
    p.textContent = "Not available to you.";
    body.appendChild(p);
  }

  /* A chart widget on the shared chart module (static/js/chart.js, RTDP_CHART): the module fetches and draws its series, zooms and pans (drag, wheel, pinch, keys) and takes the live
     points this page's one stream hands it; a zoom on one chart moves every other widget to that range. */
  class ChartView {
    constructor(widget, index) {
      Object.assign(this, tile(widget, index, "Chart"));
      this.keys = visibleSeries(widget).map(keyOf);
      this.chart = null;
      if (!this.keys.length) { hiddenNote(this.body); return; }
      this.box = document.createElement("div");
      this.box.className = "plot";
      this.body.appendChild(this.box);
    }
    make() {
      const self = this;
      const infos = this.keys.map(function (k) { return stores.get(k).info; });
      const height = Math.max(80, (this.body.clientHeight || 200) - 64);  // its legend and data-table summary above and below
      this.chart = RTDP_CHART.create(this.box, {
        series: infos.map(function (info) {
          return {
            feed: info.feed, axis: info.axis, label: info.label || (info.feed + "/" + info.axis), unit: info.unit || "",
            y_cast: info.y_cast, last: info.last_x === null ? undefined : { x: info.last_x, y: info.last_y },
          };
        }),
        x_cast: infos[0].x_cast, range: chartRange(), title: this.title.textContent, height: height,
        // Once this chart fetches its new range (at once for a drag, when a wheel or pinch pauses), the
        // others follow: their requests for that range join its one (sharedFetch).
        onRange: function (range, zoomed, settled) {
          if (!syncing && zoomed && settled && range.min !== undefined) zoomTo(range.min, range.max, self);
        },
        redrawMs: MIN_REDRAW_MS, fetchPoints: sharedFetch,
      });
    }
    draw() { if (!this.chart && this.keys.length) this.make(); }
    push(p) { if (this.chart) this.chart.push(p.feed, { axis: p.axis, x: p.x, y: p.y }); }
    setRange(range) {
      if (!this.chart) return;
      syncing = true;
      try { this.chart.setRange(range); } finally { syncing = false; }
    }
    loading() { return this.box !== undefined && this.box.dataset.loading !== undefined; }
    resize() { if (this.chart) this.chart.resize(); }
    destroy() { if (this.chart) this.chart.destroy(); }
  }

  /* The points API for every widget of the page: several charts of one series (and one range and width)
     ask once. Times are rounded to the second for the key: charts computing "now - range" a few ms apart
     still share; an answer is shared for 2 s. */
  const answers = new Map();
  /* The latest range each series was fetched for by a chart ({since, until, answer}, by api|axis): value
     tiles' sparklines of that series and range draw the chart's answer instead of asking again. */
  const chartAnswers = new Map();
  function sharedFetch(api, axis, params, signal) {
    const answer = fetchOnce(api, axis, params, signal);
    if (params.max_points !== undefined && !params.newest) {
      chartAnswers.set(api + "|" + axis, { since: params.since, until: params.until, answer: answer });
    }
    return answer;
  }
  /* The chart's answer for this series when it covers [from, until] (to the second), or null. */
  function chartAnswer(info, from, until) {
    const a = chartAnswers.get(apiOf(info.feed) + "|" + info.axis);
    const near = function (p, q) { return (p === null || p === undefined) ? (q === null || q === undefined) : (q !== null && q !== undefined && Math.abs(p - q) < 1); };
    return a && near(a.since, from) && near(a.until, until) ? a.answer : null;
  }
  /* One request per key while it is wanted: it is aborted once every chart that asked for it with a
     signal has aborted (superseded by a newer range), unless someone asked without one. */
  function fetchOnce(api, axis, params, signal) {
    const key = api + "|" + axis + "|" + Object.keys(params).sort().map(function (k) {
      const v = params[k];
      return k + "=" + (typeof v === "number" && (k === "since" || k === "until") ? Math.round(v) : v);
    }).join("&");
    let entry = answers.get(key);
    if (!entry) {
      const controller = new AbortController();
      const made = entry = { controller: controller, wanted: 0, answer: RTDP_STREAM.fetchPoints(api, axis, params, controller.signal) };
      const forget = function () { if (answers.get(key) === made) answers.delete(key); };
      answers.set(key, made);
      setTimeout(forget, 2000);
      made.answer.catch(forget);
    }
    const shared = entry;
    if (!signal) shared.wanted = Infinity;
    else {
      shared.wanted += 1;
      signal.addEventListener("abort", function () {
        shared.wanted -= 1;
        if (shared.wanted === 0) { if (answers.get(key) === shared) answers.delete(key); shared.controller.abort(); }
      }, { once: true });
    }
    return shared.answer;
  }

  let syncing = false;
  function chartRange() { return absolute ? { min: absolute.min, max: absolute.max } : { window: rangeSeconds }; }

  class ValueView {
    constructor(widget, index) {
      Object.assign(this, tile(widget, index, "Value"));
      this.keys = visibleSeries(widget).map(keyOf);
      if (!this.keys.length) { hiddenNote(this.body); return; }
      this.value = document.createElement("p");
      this.value.className = "big-value";
      this.trend = document.createElement("span");
      this.trend.className = "trend";
      this.number = document.createElement("span");
      this.value.append(this.number, this.trend);
      this.canvas = document.createElement("canvas");
      this.canvas.className = "spark";
      this.canvas.setAttribute("role", "img");
      this.canvas.setAttribute("aria-label", "Sparkline of " + this.keys[0]);
      this.when = document.createElement("p");
      this.when.className = "muted when";
      this.body.append(this.value, this.canvas, this.when);
    }
    draw() {
      if (!this.keys.length) return;
      const store = stores.get(this.keys[0]);
      const last = store.last, prev = store.previous;
      this.number.textContent = last ? formatValue(last.y, store.info) : "–";
      let trend = "equal";
      if (last && prev) trend = last.y > prev.y ? "up" : last.y < prev.y ? "down" : "equal";
      this.value.className = "big-value trend-" + trend;
      this.trend.textContent = trend === "up" ? " ▲" : trend === "down" ? " ▼" : " ●";
      this.trend.setAttribute("aria-label", trend === "equal" ? "unchanged" : trend);
      this.when.textContent = last ? formatX(last.x, store.info) : "no points yet";
      sparkline(this.canvas, store, trend);
    }
    resize() { if (this.canvas) { delete this.canvas.dataset.w; this.draw(); } }
  }

  function sparkline(canvas, store, trend) {
    const ratio = window.devicePixelRatio || 1;
    // Measured once (and again after a resize): reading it per redraw would force a layout each time.
    if (!canvas.dataset.w) { canvas.dataset.w = String(canvas.clientWidth || 200); canvas.dataset.h = String(canvas.clientHeight || 36); }
    const w = Number(canvas.dataset.w), h = Number(canvas.dataset.h);
    if (canvas.width !== Math.round(w * ratio)) { canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio); }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const xs = store.xs, ys = store.ys, n = xs.length;
    if (n < 2) return;
    // Live, the line spans the points held (all inside the range): a feed younger than the range is not a
    // sliver at the right edge, as the charts fit their window to it too.
    const x0 = absolute ? absolute.min : xs[0];
    const x1 = absolute ? absolute.max : Math.max(xs[n - 1], x0 + 1);
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < n; i++) { if (ys[i] < lo) lo = ys[i]; if (ys[i] > hi) hi = ys[i]; }
    if (hi === lo) { hi += 1; lo -= 1; }
    if (!canvas.dataset.color) canvas.dataset.color = getComputedStyle(canvas).color;
    ctx.strokeStyle = canvas.dataset.color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    // One vertical stroke per pixel column, from its lowest to its highest point: a spike survives.
    const scaleX = (w - 2) / (x1 - x0), scaleY = (h - 4) / (hi - lo);
    let column = -1, top = 0, bottom = 0, first = true;
    for (let i = 0; i <= n; i++) {
      const px = i < n ? Math.round((xs[i] - x0) * scaleX) + 1 : -2;
      if (px !== column || i === n) {
        if (column >= 0) {
          if (first) { ctx.moveTo(column, h - 2 - (bottom - lo) * scaleY); first = false; }
          ctx.lineTo(column, h - 2 - (bottom - lo) * scaleY);
          ctx.lineTo(column, h - 2 - (top - lo) * scaleY);
        }
        if (i === n) break;
        column = px; top = bottom = ys[i];
      } else {
        if (ys[i] > top) top = ys[i];
        if (ys[i] < bottom) bottom = ys[i];
      }
    }
    ctx.stroke();
  }

  class GaugeView {
    constructor(widget, index) {
      Object.assign(this, tile(widget, index, "Gauge"));
      this.widget = widget;
      this.keys = visibleSeries(widget).map(keyOf);
      if (!this.keys.length) { hiddenNote(this.body); return; }
      const svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("viewBox", "0 0 200 120");
      svg.setAttribute("class", "gauge");
      svg.setAttribute("role", "img");
      this.svg = svg;
      const track = document.createElementNS(SVG, "path");
      track.setAttribute("d", arc(0, 1));
      track.setAttribute("class", "gauge-track");
      this.bar = document.createElementNS(SVG, "path");
      svg.append(track, this.bar);
      (widget.thresholds || []).forEach(function (t) {
        const f = (t - widget.min) / (widget.max - widget.min);
        const tick = document.createElementNS(SVG, "line");
        const a = Math.PI * (1 - f);
        tick.setAttribute("x1", 100 + 66 * Math.cos(a)); tick.setAttribute("y1", 100 - 66 * Math.sin(a));
        tick.setAttribute("x2", 100 + 94 * Math.cos(a)); tick.setAttribute("y2", 100 - 94 * Math.sin(a));
        tick.setAttribute("class", "gauge-tick");
        svg.appendChild(tick);
      });
      this.text = document.createElementNS(SVG, "text");
      this.text.setAttribute("x", "100"); this.text.setAttribute("y", "96");
      this.text.setAttribute("class", "gauge-value");
      const low = document.createElementNS(SVG, "text");
      low.setAttribute("x", "20"); low.setAttribute("y", "116"); low.setAttribute("class", "gauge-end");
      low.textContent = formatValue(widget.min);
      const high = document.createElementNS(SVG, "text");
      high.setAttribute("x", "180"); high.setAttribute("y", "116"); high.setAttribute("class", "gauge-end");
      high.textContent = formatValue(widget.max);
      svg.append(this.text, low, high);
      this.body.appendChild(svg);
    }
    draw() {
      if (!this.keys.length) return;
      const store = stores.get(this.keys[0]), w = this.widget;
      const y = store.last ? store.last.y : null;
      this.text.textContent = formatValue(y, store.info);
      this.svg.setAttribute("aria-label", "Gauge of " + this.keys[0] + ": " + formatValue(y, store.info) +
        " between " + formatValue(w.min) + " and " + formatValue(w.max));
      if (y === null) { this.bar.setAttribute("d", ""); return; }
      const f = Math.max(0, Math.min(1, (y - w.min) / (w.max - w.min)));
      const passed = (w.thresholds || []).filter(function (t) { return y >= t; }).length;
      const level = passed === 0 ? "ok" : passed === (w.thresholds || []).length ? "alarm" : "warn";
      this.bar.setAttribute("d", f > 0 ? arc(0, f) : "");
      this.bar.setAttribute("class", "gauge-bar gauge-" + level);
      this.el.dataset.level = level;
    }
    resize() {}
  }

  /* The gauge's arc from fraction a to b of a half circle (radius 80 around 100,100). */
  function arc(a, b) {
    const p = function (f) { const t = Math.PI * (1 - f); return (100 + 80 * Math.cos(t)).toFixed(2) + " " + (100 - 80 * Math.sin(t)).toFixed(2); };
    return "M " + p(a) + " A 80 80 0 0 1 " + p(b);
  }

  class StateView {
    constructor(widget, index) {
      Object.assign(this, tile(widget, index, "State"));
      this.widget = widget;
      this.keys = visibleSeries(widget).map(keyOf);
      if (!this.keys.length) { hiddenNote(this.body); return; }
      this.pill = document.createElement("p");
      this.pill.className = "state-pill";
      this.when = document.createElement("p");
      this.when.className = "muted when";
      this.body.append(this.pill, this.when);
    }
    draw() {
      if (!this.keys.length) return;
      const store = stores.get(this.keys[0]);
      const last = store.last;
      const on = last !== null && Boolean(last.y);
      this.pill.textContent = last === null ? "unknown" : on ? this.widget.on : this.widget.off;
      this.pill.className = "state-pill " + (last === null ? "state-unknown" : on ? "state-on" : "state-off");
      this.el.dataset.state = last === null ? "unknown" : on ? "on" : "off";
      this.when.textContent = last ? "since " + formatX(last.x, store.info) : "no points yet";
    }
    resize() {}
  }

  class TableView {
    constructor(widget, index) {
      Object.assign(this, tile(widget, index, "Table"));
      this.keys = visibleSeries(widget).map(keyOf);
      if (!this.keys.length) { hiddenNote(this.body); return; }
      const wrap = document.createElement("div");
      wrap.className = "table-wrap";
      wrap.tabIndex = 0;  // it may scroll: reachable by keyboard
      const table = document.createElement("table");
      const head = document.createElement("thead");
      const row = document.createElement("tr");
      // One series: its name is the widget's title, and a phone has room for the time and the value only.
      this.columns = this.keys.length > 1 ? ["Time", "Series", "Value"] : ["Time", "Value"];
      this.columns.forEach(function (label) {
        const th = document.createElement("th"); th.scope = "col"; th.textContent = label;
        if (label === "Value") th.className = "num";
        row.appendChild(th);
      });
      head.appendChild(row);
      this.tbody = document.createElement("tbody");
      table.append(head, this.tbody);
      wrap.appendChild(table);
      this.body.appendChild(wrap);
    }
    draw() {
      if (!this.keys.length) return;
      const rows = [];
      this.keys.forEach(function (k) { stores.get(k).recent.forEach(function (p) { rows.push([p, k]); }); });
      rows.sort(function (a, b) { return b[0].x - a[0].x; });
      const fragment = document.createDocumentFragment();
      const several = this.columns.length === 3;
      rows.slice(0, TABLE_ROWS).forEach(function (r) {
        const info = stores.get(r[1]).info;
        const tr = document.createElement("tr");
        const cells = several ? [formatX(r[0].x, info), r[1], formatValue(r[0].y, info)] : [formatX(r[0].x, info), formatValue(r[0].y, info)];
        cells.forEach(function (text, i) {
          const td = document.createElement("td"); td.textContent = text;
          if (i === cells.length - 1) td.className = "num";
          tr.appendChild(td);
        });
        fragment.appendChild(tr);
      });
      this.tbody.replaceChildren(fragment);
      this.el.dataset.rows = String(Math.min(rows.length, TABLE_ROWS));
    }
    resize() {}
  }

  const KINDS = {
    chart: ChartView, value: ValueView, gauge: GaugeView, state: StateView, table: TableView,
  };

  /* -- loading and live ----------------------------------------------------------------------------------- */

  function build() {
    // Kept across rebuilds (a widget moved or resized): the latest points came live since the page loaded.
    Object.keys(seriesInfo).forEach(function (k) { if (!stores.has(k)) stores.set(k, new Store(seriesInfo[k])); });
    views.forEach(function (v) { if (v.plot) v.plot.destroy(); if (v.destroy) v.destroy(); });
    grid.replaceChildren();
    views = dash.widgets.map(function (w, i) {
      const view = new KINDS[w.type](w, i);
      grid.appendChild(view.el);
      return view;
    });
    // Module charts fetch their own history: at once, in parallel with the other widgets'.
    views.forEach(function (v) { if (v.push) v.draw(); });
    if (!dash.widgets.length) {
      const p = document.createElement("p");
      p.className = "muted";
      p.id = "no-widgets";
      p.textContent = dash.editable ? "No widgets yet: choose Edit, then add one." : "This dashboard has no widgets yet.";
      grid.appendChild(p);
    }
    document.body.classList.toggle("editing", editing);
  }

  function wanted(kinds) {
    const keys = new Set();
    dash.widgets.forEach(function (w) {
      if (kinds.indexOf(w.type) >= 0) visibleSeries(w).forEach(function (s) { if (stores.has(keyOf(s))) keys.add(keyOf(s)); });
    });
    return Array.from(keys);
  }

  async function loadHistory() {
    const generation = ++loadGeneration;
    const from = since(), until = absolute ? absolute.max : null;
    // Two points per pixel of the widest widget showing a series: what the server's min/max downsampling
    // needs to stay true there, and no more to draw on every live redraw.
    const pixels = new Map();
    views.forEach(function (v) {
      const el = v.box || v.canvas;
      if (!el || !v.keys) return;
      v.keys.forEach(function (k) { pixels.set(k, Math.max(pixels.get(k) || 0, el.clientWidth || 600)); });
    });
    const maxPointsOf = function (k) { return Math.min(4000, Math.max(200, 2 * (pixels.get(k) || 600))); };
    stateEl.dataset.loading = "1";
    const fetchStart = performance.now();
    const history = wanted(["chart", "value"]).map(function (k) {
      const store = stores.get(k), info = store.info;
      store.keep = Math.max(600, KEEP_PER_PIXEL * (pixels.get(k) || 600));
      const answer = chartAnswer(info, from, until) || RTDP_STREAM.fetchPoints(apiOf(info.feed), info.axis, { since: from, until: until, max_points: maxPointsOf(k) });
      return answer.then(function (points) { return [k, points]; });
    });
    const recent = absolute ? [] : wanted(["table"]).map(function (k) {
      const info = stores.get(k).info;
      return RTDP_STREAM.fetchPoints(apiOf(info.feed), info.axis, { limit: TABLE_ROWS, newest: "true" })
        .then(function (points) { return [k, points]; });
    });
    try {
      const loaded = await Promise.all([Promise.all(history), Promise.all(recent)]);
      if (generation !== loadGeneration) return;
      timings.fetch_ms = performance.now() - fetchStart;
      loaded[0].forEach(function (pair) { stores.get(pair[0]).setHistory(pair[1]); });
      loaded[1].forEach(function (pair) { stores.get(pair[0]).setRecent(pair[1]); });
      delete stateEl.dataset.loading;
    } catch (error) {
      if (generation !== loadGeneration) return;
      stateEl.textContent = "could not load history: " + error.message;
    }
    views.forEach(function (v) { dirty.add(v); });
    const drawStart = performance.now();
    drawNow(Infinity);
    timings.draw_ms = performance.now() - drawStart;
    if (timings.drawn === undefined) {
      const drawn = await chartsLoaded();
      if (timings.drawn === undefined) window.rtdpDashReady = timings.drawn = drawn;
    }
    return performance.now();
  }

  /* Redraw the marked widgets, in page order, until `budget` ms are spent; the rest wait for the next frame
     (so a busy stream never makes one long frame of twelve redraws). True when none is left. */
  function drawNow(budget) {
    const start = performance.now();
    if (!absolute) { const cut = since(); stores.forEach(function (s) { if (s.xs.length && s.xs[0] < cut) s.dropBefore(cut); }); }
    for (const view of views) {
      if (!dirty.has(view)) continue;
      view.draw();
      dirty.delete(view);
      if (performance.now() - start > budget) break;
    }
    if (!dirty.size) lastDraw = start;
    return dirty.size === 0;
  }

  function schedule() {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(function frame(now) {
      if (now - lastDraw < MIN_REDRAW_MS) { requestAnimationFrame(frame); return; }
      if (drawNow(FRAME_BUDGET_MS)) frameRequested = false;
      else requestAnimationFrame(frame);
    });
  }

  function addPoint(p) {
    const store = stores.get(p.feed + "/" + p.axis);
    if (!store) return;
    store.add(p.x, p.y, !absolute && p.x >= since());
    const k = p.feed + "/" + p.axis;
    views.forEach(function (v) {
      if (!v.keys || v.keys.indexOf(k) < 0) return;
      if (v.push) v.push(p); else dirty.add(v);
    });
    schedule();
  }

  function showRange() {
    document.querySelectorAll("[data-range]").forEach(function (b) {
      const on = !absolute && Number(b.dataset.range) === rangeSeconds;
      b.classList.toggle("active", on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    });
    backButton.hidden = !absolute;
    rangeText.textContent = absolute ? RTDP.formatTime(absolute.min, false) + " – " + RTDP.formatTime(absolute.max, false) : "";
  }

  /* Every module chart loaded what its range shows (each fetches its own). */
  function chartsLoaded() {
    return new Promise(function (resolve) {
      (function check() {
        if (views.some(function (v) { return v.loading && v.loading(); })) requestAnimationFrame(check);
        else resolve(performance.now());
      })();
    });
  }

  /* Every widget to [min, max] (`source`: the chart zoomed by hand, which has that range already). */
  function zoomTo(min, max, source) {
    timings.zoom_start = performance.now();
    absolute = { min: min, max: max };
    showRange();
    views.forEach(function (v) { if (v !== source && v.setRange) v.setRange(chartRange()); });
    return loadHistory().then(chartsLoaded).then(function (done) { timings.zoom_done = done; return done; });
  }

  function setLive() {
    absolute = null;
    showRange();
    views.forEach(function (v) { if (v.setRange) v.setRange(chartRange()); });
    loadHistory();
  }
  window.rtdpDashZoom = zoomTo;

  backButton.addEventListener("click", setLive);
  document.querySelectorAll("[data-range]").forEach(function (button) {
    button.addEventListener("click", function () {
      rangeSeconds = Number(button.dataset.range);
      setLive();
      // While editing, the range chosen becomes the dashboard's: what it opens with, for everyone.
      if (editing) {
        call("PATCH", "/api/v1/dashboards/" + encodeURIComponent(dash.id), { range: rangeSeconds })
          .then(function (saved) { dash.range = saved.range; }, function (error) { RTDP.showError(editorError, error.message); });
      }
    });
  });

  function startStream() {
    const feeds = Array.from(new Set(Array.from(stores.values()).map(function (s) { return s.info.feed; })));
    if (!feeds.length) { stateEl.textContent = "nothing to follow"; return; }
    const url = "/api/v1/stream?" + feeds.map(function (f) { return "feed=" + encodeURIComponent(f); }).join("&");
    // Ids remembered against duplicates: a few seconds' worth is enough (a replay only overlaps what
    // arrived just before a reconnect, and a point seen twice lands on the same x anyway).
    const stream = new RTDP_STREAM.FeedStream({ url: url, seenLimit: 2000 }, {
      point: addPoint,
      open: function () { timings.stream_open = performance.now(); },
      state: function (text) { stateEl.textContent = text; },
    }, config.resume);
    stream.start();
  }

  let resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { views.forEach(function (v) { v.resize(); }); }, 100);
  });

  /* -- editing (owner and admins) --------------------------------------------------------------------------- */

  const editorError = document.getElementById("editor-error");

  async function call(method, url, body) {
    const response = await fetch(url, {
      method: method, credentials: "same-origin",
      headers: { "Accept": "application/json", "Content-Type": "application/json", "X-CSRF-Token": RTDP.csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return null;
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) throw new Error((data && data.error) || ("the server answered " + response.status));
    return data;
  }

  /* The widgets as they are saved: series this viewer cannot see cannot be sent back (nor kept by them). */
  function savable() {
    return dash.widgets.map(function (w) {
      const copy = Object.assign({}, w);
      delete copy.hidden;
      if (copy.series) copy.series = copy.series.filter(function (s) { return !s.hidden; });
      return copy;
    }).filter(function (w) { return w.series ? w.series.length > 0 : w.feed !== undefined; });
  }

  async function saveWidgets(widgets, reload) {
    RTDP.showError(editorError, "");
    try {
      const saved = await call("PATCH", "/api/v1/dashboards/" + encodeURIComponent(dash.id), { widgets: widgets });
      if (reload) { location.assign(location.pathname + "?edit=1"); return; }
      dash = saved;
      build();
      loadHistory();
    } catch (error) { RTDP.showError(editorError, error.message); }
  }

  function editButtons(index) {
    const box = document.createElement("span");
    box.className = "widget-edit";
    const actions = [
      ["◂", "Move earlier", function (ws) { if (index > 0) ws.splice(index - 1, 0, ws.splice(index, 1)[0]); }],
      ["▸", "Move later", function (ws) { if (index < ws.length - 1) ws.splice(index + 1, 0, ws.splice(index, 1)[0]); }],
      ["wider", "Wider", function (ws) { ws[index].w = Math.min(12, ws[index].w + 1); }],
      ["narrower", "Narrower", function (ws) { ws[index].w = Math.max(1, ws[index].w - 1); }],
      ["taller", "Taller", function (ws) { ws[index].h = Math.min(6, ws[index].h + 1); }],
      ["shorter", "Shorter", function (ws) { ws[index].h = Math.max(1, ws[index].h - 1); }],
      ["✕", "Remove", function (ws) { ws.splice(index, 1); }],
    ];
    actions.forEach(function (action) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = action[0];
      button.title = action[1];
      button.setAttribute("aria-label", action[1] + " widget " + (index + 1));
      button.dataset.action = action[1].toLowerCase().replace(" ", "-");
      button.addEventListener("click", function () {
        const ws = dash.widgets.map(function (w) { return Object.assign({}, w); });
        action[2](ws);
        dash.widgets = ws;
        saveWidgets(savable(), false);
      });
      box.appendChild(button);
    });
    return box;
  }

  function setupEditor() {
    const toggle = document.getElementById("edit-toggle");
    const editor = document.getElementById("editor");
    if (!toggle || !editor) return;
    function open(on) {
      editing = on;
      editor.hidden = !on;
      toggle.setAttribute("aria-expanded", on ? "true" : "false");
      toggle.textContent = on ? "Done" : "Edit";
      document.body.classList.toggle("editing", on);
    }
    toggle.addEventListener("click", function () { open(!editing); });

    const form = document.getElementById("add-widget");
    const select = form.elements.series;
    (config.feeds || []).forEach(function (feed) {
      const group = document.createElement("optgroup");
      group.label = feed.feed;
      feed.axes.forEach(function (axis) {
        const option = document.createElement("option");
        option.value = JSON.stringify({ feed: feed.feed, axis: axis });
        option.textContent = feed.feed + " / " + axis;
        group.appendChild(option);
      });
      select.appendChild(group);
    });
    function showFields() {
      const type = form.elements.type.value;
      form.querySelectorAll(".for-gauge").forEach(function (el) { el.hidden = type !== "gauge"; });
      form.querySelectorAll(".for-state").forEach(function (el) { el.hidden = type !== "state"; });
    }
    form.elements.type.addEventListener("change", showFields);
    showFields();
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      const type = form.elements.type.value;
      const chosen = Array.from(select.selectedOptions).map(function (o) { return JSON.parse(o.value); });
      if (!chosen.length) { RTDP.showError(editorError, "choose at least one series"); return; }
      const widget = { type: type };
      if (form.elements.title.value.trim()) widget.title = form.elements.title.value.trim();
      if (type === "chart" || type === "table") widget.series = chosen;
      else { widget.feed = chosen[0].feed; widget.axis = chosen[0].axis; }
      if (type === "gauge") {
        widget.min = Number(form.elements.min.value);
        widget.max = Number(form.elements.max.value);
        const marks = form.elements.thresholds.value.split(",").map(function (t) { return t.trim(); }).filter(Boolean);
        widget.thresholds = marks.map(Number);
      }
      if (type === "state") { widget.on = form.elements.on.value; widget.off = form.elements.off.value; }
      saveWidgets(savable().concat([widget]), true);
    });

    document.getElementById("rename-form").addEventListener("submit", async function (event) {
      event.preventDefault();
      RTDP.showError(editorError, "");
      try {
        const saved = await call("PATCH", "/api/v1/dashboards/" + encodeURIComponent(dash.id), { name: event.target.elements.name.value });
        dash.name = saved.name;
        document.getElementById("dashboard-name").textContent = saved.name;
        document.title = saved.name + " · rtdp";
      } catch (error) { RTDP.showError(editorError, error.message); }
    });

    const link = document.getElementById("public-link");
    document.getElementById("link-text").textContent = location.origin + "/dashboards/" + dash.id;
    document.getElementById("public-form").elements.public.addEventListener("change", async function (event) {
      RTDP.showError(editorError, "");
      try {
        const saved = await call("PATCH", "/api/v1/dashboards/" + encodeURIComponent(dash.id), { public: event.target.checked });
        link.hidden = !saved.public;
      } catch (error) { RTDP.showError(editorError, error.message); event.target.checked = !event.target.checked; }
    });

    const shareList = document.getElementById("shares");
    function showShares() {
      shareList.replaceChildren();
      (dash.shares || []).forEach(function (share) {
        const li = document.createElement("li");
        li.textContent = (share.user ? "user " + share.user : "group " + share.group) + " (read-only) ";
        const remove = document.createElement("button");
        remove.type = "button"; remove.className = "danger"; remove.textContent = "Remove";
        remove.setAttribute("aria-label", "Remove share with " + (share.user || share.group));
        remove.addEventListener("click", async function () {
          try {
            await call("DELETE", "/api/v1/dashboards/" + encodeURIComponent(dash.id) + "/shares/" + share.id);
            dash.shares = dash.shares.filter(function (s) { return s.id !== share.id; });
            showShares();
          } catch (error) { RTDP.showError(editorError, error.message); }
        });
        li.appendChild(remove);
        shareList.appendChild(li);
      });
    }
    showShares();
    document.getElementById("share-form").addEventListener("submit", async function (event) {
      event.preventDefault();
      const f = event.target;
      const body = {};
      body[f.elements.kind.value] = f.elements.grantee.value;
      RTDP.showError(editorError, "");
      try {
        const share = await call("POST", "/api/v1/dashboards/" + encodeURIComponent(dash.id) + "/shares", body);
        dash.shares = (dash.shares || []).filter(function (s) { return s.id !== share.id; }).concat([share]);
        f.elements.grantee.value = "";
        showShares();
      } catch (error) { RTDP.showError(editorError, error.message); }
    });

    document.getElementById("delete-dashboard").addEventListener("click", async function () {
      if (!window.confirm("Delete dashboard " + dash.name + "? Its feeds and points stay.")) return;
      try {
        await call("DELETE", "/api/v1/dashboards/" + encodeURIComponent(dash.id));
        location.assign("/dashboards");
      } catch (error) { RTDP.showError(editorError, error.message); }
    });
    if (config.edit) open(true);
  }

  /* -- start ------------------------------------------------------------------------------------------------- */

  if (typeof uPlot === "undefined") stateEl.textContent = "chart library missing";
  setupEditor();
  build();
  showRange();
  timings.history_start = performance.now();
  // The stream replays whatever was stored after this page was rendered (config.resume): the history can
  // load meanwhile and nothing falls in between.
  startStream();
  loadHistory();
  // The range slides even when nothing arrives.
  setInterval(function () {
    if (absolute) return;
    views.forEach(function (v) { if (v instanceof ChartView || v instanceof ValueView) dirty.add(v); });
    schedule();
  }, 1000);
})();

/* All axes of a feed on one uPlot chart: history from the points API, then live points from ONE
   EventSource.

   Each axis keeps its points in two sorted arrays (x, y): a live point is nearly always the newest,
   so it is appended; a replacement (same x) overwrites its y and a replayed event changes nothing.
   Memory stays bounded however long the page is open: points that left the time window are
   dropped, and when an axis holds more than a few points per pixel of the chart, its older points
   are reduced to each pixel column's lowest and highest (what the server's downsampling keeps too,
   so a spike survives). Live updates are batched: at most one redraw per animation frame. */
"use strict";
(function () {
  const config = RTDP.pageConfig();
  const chartEl = document.getElementById("chart");
  const stateEl = document.getElementById("live-state");
  const pauseButton = document.getElementById("pause");
  const backButton = document.getElementById("zoom-back");
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
  const MIN_REDRAW_MS = 100;  // live redraws at most 10 times a second: smooth enough, and cheap on the CPU
  const api = config.api;
  const isTime = config.x_cast === "datetime";

  /* One axis's points, sorted by x. */
  class Series {
    constructor() { this.xs = []; this.ys = []; this.compacted = 0; }
    get size() { return this.xs.length; }
    /* Index of the first x >= value. */
    lowerBound(value) {
      const xs = this.xs;
      let lo = 0, hi = xs.length;
      while (lo < hi) { const mid = (lo + hi) >>> 1; if (xs[mid] < value) lo = mid + 1; else hi = mid; }
      return lo;
    }
    has(x) { const i = this.lowerBound(x); return i < this.xs.length && this.xs[i] === x; }
    set(x, y) {
      const xs = this.xs, n = xs.length;
      if (n === 0 || x > xs[n - 1]) { xs.push(x); this.ys.push(y); return; }
      const i = this.lowerBound(x);
      if (xs[i] === x) { this.ys[i] = y; return; }
      xs.splice(i, 0, x); this.ys.splice(i, 0, y);
    }
    /* History (sorted) under what is already here: a live point that arrived meanwhile is newer and wins. */
    mergeHistory(points) {
      this.compacted += points.length;  // the server downsampled it already
      if (this.xs.length === 0) {
        this.xs = points.map(function (p) { return p.x; });
        this.ys = points.map(function (p) { return p.y; });
        return;
      }
      const xs = [], ys = [], oldX = this.xs, oldY = this.ys;
      let i = 0, j = 0;
      while (i < points.length || j < oldX.length) {
        if (j >= oldX.length || (i < points.length && points[i].x < oldX[j])) { xs.push(points[i].x); ys.push(points[i].y); i++; }
        else { if (i < points.length && points[i].x === oldX[j]) i++; xs.push(oldX[j]); ys.push(oldY[j]); j++; }
      }
      this.xs = xs; this.ys = ys;
    }
    dropBefore(cutoff) {
      const i = this.lowerBound(cutoff);
      if (i > 0) { this.xs.splice(0, i); this.ys.splice(0, i); this.compacted = Math.max(0, this.compacted - i); }
    }
    clear() { this.xs = []; this.ys = []; this.compacted = 0; }
    /* Points before index `end`: each bucket of `step` x keeps its lowest and highest point, in x order. */
    decimate(end, step) {
      const xs = [], ys = [], oldX = this.xs, oldY = this.ys;
      let i = 0;
      while (i < end) {
        const bucket = Math.floor(oldX[i] / step);
        let lo = i, hi = i, j = i + 1;
        while (j < end && Math.floor(oldX[j] / step) === bucket) {
          if (oldY[j] < oldY[lo]) lo = j;
          if (oldY[j] > oldY[hi]) hi = j;
          j++;
        }
        const first = Math.min(lo, hi), second = Math.max(lo, hi);
        xs.push(oldX[first]); ys.push(oldY[first]);
        if (second !== first) { xs.push(oldX[second]); ys.push(oldY[second]); }
        i = j;
      }
      for (let k = end; k < oldX.length; k++) { xs.push(oldX[k]); ys.push(oldY[k]); }
      this.xs = xs; this.ys = ys;
      this.compacted = xs.length;
    }
  }

  const axes = config.axes.slice();
  const data = new Map(axes.map(function (name) { return [name, new Series()]; }));
  let windowSeconds = isTime ? 3600 : null;
  let paused = false;
  let plot = null;
  let changed = true;      // the points changed since the last setData
  let frameRequested = false;
  let lastDraw = 0;
  let zoomStack = [];
  let loadGeneration = 0;
  let loading = false;
  let streamText = "connecting…";
  let historyShown = false;
  // Timing marks for bench/graph_page.py (ms since navigation start).
  const timings = window.rtdpGraphTimings = {};

  if (typeof uPlot === "undefined") { stateEl.textContent = "chart library missing"; return; }

  function width() { return Math.max(240, chartEl.clientWidth || 600); }
  function height() { return Math.max(220, Math.min(480, Math.round(window.innerHeight * 0.55))); }

  function showState() {
    const text = loading ? "loading history…" : streamText;
    stateEl.textContent = paused ? "paused (" + text + ")" : text;
  }

  function seriesFor(name, index) {
    const series = { label: name, stroke: COLORS[index % COLORS.length], width: 2, spanGaps: true, points: { show: false } };
    if (config.y_cast === "bool") series.paths = uPlot.paths.stepped({ align: 1 });
    return series;
  }

  function makePlot() {
    if (plot) plot.destroy();
    const options = {
      width: width(), height: height(),
      scales: { x: { time: isTime } },
      series: [{ label: isTime ? "time" : "x" }].concat(axes.map(seriesFor)),
      axes: [{}, {}],
      cursor: { drag: { x: true, y: false, setScale: false } },
      legend: { live: true },
      hooks: { setSelect: [onSelect] },
    };
    plot = new uPlot(options, aligned(), chartEl);
    changed = false;
  }

  function onSelect(u) {
    if (u.select.width < 3) return;
    const min = u.posToVal(u.select.left, "x");
    const max = u.posToVal(u.select.left + u.select.width, "x");
    zoomStack.push({ min: u.scales.x.min, max: u.scales.x.max });
    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    u.setScale("x", { min: min, max: max });
    backButton.disabled = false;
  }

  backButton.addEventListener("click", function () {
    const previous = zoomStack.pop();
    backButton.disabled = zoomStack.length === 0;
    if (zoomStack.length === 0) { schedule(true); return; }
    if (previous && plot) plot.setScale("x", previous);
  });

  function cutoff() { return isTime && windowSeconds ? Date.now() / 1000 - windowSeconds : null; }

  /* Bounded memory: drop what left the window; every half a chart width of new points, reduce all
     but the newest quarter width to 2 points per pixel column. An axis then holds at most about
     3 points per pixel, and each redraw stays cheap. */
  function bound(series) {
    const limit = cutoff();
    if (limit !== null && series.size && series.xs[0] < limit) { series.dropBefore(limit); changed = true; }
    const pixels = width();
    if (series.size - series.compacted <= pixels / 2) return;
    const xs = series.xs;
    const span = isTime && windowSeconds ? windowSeconds : xs[xs.length - 1] - xs[0];
    if (!(span > 0)) return;
    series.decimate(Math.max(0, xs.length - Math.ceil(pixels / 4)), span / pixels);
    changed = true;
  }

  function trim() {
    const limit = cutoff();
    data.forEach(function (series) {
      if (limit !== null && series.size && series.xs[0] < limit) { series.dropBefore(limit); changed = true; }
    });
  }

  /* uPlot's columns: the union of every axis's x, each axis's y or null. A k-way merge of sorted arrays. */
  function aligned() {
    const list = axes.map(function (name) { return data.get(name); });
    const k = list.length;
    const heads = new Array(k).fill(0);
    let total = 0;
    list.forEach(function (s) { total += s.size; });
    const xs = [];
    const columns = list.map(function () { return []; });
    for (;;) {
      let min = Infinity;
      for (let s = 0; s < k; s++) if (heads[s] < list[s].size && list[s].xs[heads[s]] < min) min = list[s].xs[heads[s]];
      if (min === Infinity) break;
      xs.push(min);
      for (let s = 0; s < k; s++) {
        if (heads[s] < list[s].size && list[s].xs[heads[s]] === min) { columns[s].push(list[s].ys[heads[s]]); heads[s]++; }
        else columns[s].push(null);
      }
    }
    chartEl.dataset.points = String(total);
    return [xs].concat(columns);
  }

  function draw(force) {
    if (!plot || (paused && !force)) return;
    lastDraw = performance.now();
    trim();
    const zoomed = zoomStack.length > 0;
    if (changed || force) { plot.setData(aligned(), !zoomed); changed = false; }
    if (!zoomed && isTime && windowSeconds) {
      const now = Date.now() / 1000;
      plot.setScale("x", { min: now - windowSeconds, max: now });
    }
    if (historyShown && window.rtdpGraphReady === undefined) window.rtdpGraphReady = timings.drawn = performance.now();
  }

  /* One redraw per animation frame at most, and live ones at most every MIN_REDRAW_MS. */
  function schedule(force) {
    if (force) { zoomStack = []; backButton.disabled = true; changed = true; }
    if (frameRequested && !force) return;
    frameRequested = true;
    requestAnimationFrame(function frame(now) {
      if (!force && now - lastDraw < MIN_REDRAW_MS) { requestAnimationFrame(frame); return; }
      frameRequested = false;
      draw(force);
    });
  }

  function addPoint(p) {
    let series = data.get(p.axis);
    if (!series) {
      // A new axis appeared: rebuild the chart with one more series.
      axes.push(p.axis);
      series = new Series();
      data.set(p.axis, series);
      series.set(p.x, p.y);
      makePlot();
      return;
    }
    const limit = cutoff();
    if (limit !== null && p.x < limit) return;
    series.set(p.x, p.y);
    changed = true;
    bound(series);
    schedule(false);
  }

  async function loadHistory() {
    const generation = ++loadGeneration;
    const since = cutoff();
    loading = true;
    showState();
    if (timings.history_start === undefined) timings.history_start = performance.now();
    try {
      // The axes' histories in parallel, each downsampled by the server to the chart's width: with
      // 2 points per pixel asked, the server's buckets (max_points/4 to max_points/2) are 1-2 pixels wide.
      const results = await Promise.all(axes.map(function (name) {
        return RTDP_STREAM.fetchPoints(api, name, { since: since, max_points: 2 * width() });
      }));
      if (generation !== loadGeneration) return;
      if (timings.history_done === undefined) timings.history_done = performance.now();
      historyShown = true;
      results.forEach(function (points, i) {
        const series = data.get(axes[i]);
        series.mergeHistory(points);
        bound(series);
      });
      loading = false;
      showState();
    } catch (error) {
      if (generation !== loadGeneration) return;
      loading = false;
      stateEl.textContent = "could not load history: " + error.message;
    }
    schedule(true);
  }

  function setWindow(key) {
    windowSeconds = key === "all" ? null : Number(key);
    document.querySelectorAll("[data-window]").forEach(function (b) { b.classList.toggle("active", b.dataset.window === key); });
    data.forEach(function (series) { series.clear(); });
    loadHistory();
  }

  document.querySelectorAll("[data-window]").forEach(function (button) {
    button.addEventListener("click", function () { setWindow(button.dataset.window); });
  });

  pauseButton.addEventListener("click", function () {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    pauseButton.classList.toggle("active", paused);
    showState();
    if (!paused) schedule(true);
  });

  window.addEventListener("resize", function () { if (plot) plot.setSize({ width: width(), height: height() }); });

  makePlot();
  // The stream replays every point stored after this page was rendered (config.resume), so the
  // history can load at once, in parallel with the stream connecting: nothing falls in between,
  // and what both deliver is the same point (same x), stored once.
  const resumable = typeof config.resume === "number";
  const stream = new RTDP_STREAM.FeedStream(api, {
    point: addPoint,
    open: function () {
      timings.stream_open = performance.now();
      if (!resumable) setWindow(isTime ? "3600" : "all");
    },
    state: function (text) { streamText = text; showState(); },
  }, config.resume);
  stream.start();
  if (resumable) setWindow(isTime ? "3600" : "all");
  // The time window slides even when nothing arrives.
  setInterval(function () { if (isTime && windowSeconds && !paused) schedule(false); }, 1000);
})();

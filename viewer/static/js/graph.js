/* All axes of a feed on one uPlot chart: history from the points API, then live points from ONE
   EventSource. Points are kept per axis in a Map keyed by x (a replacement with the same x wins;
   a replayed event changes nothing), bounded by the time window and a maximum count. */
"use strict";
(function () {
  const config = RTDP.pageConfig();
  const chartEl = document.getElementById("chart");
  const stateEl = document.getElementById("live-state");
  const pauseButton = document.getElementById("pause");
  const backButton = document.getElementById("zoom-back");
  const MAX_PER_AXIS = 20000;
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
  const api = config.api;
  const isTime = config.x_cast === "datetime";

  const axes = config.axes.slice();
  const data = new Map(axes.map(function (name) { return [name, new Map()]; }));
  let windowSeconds = isTime ? 3600 : null;
  let paused = false;
  let plot = null;
  let dirty = false;
  let zoomStack = [];
  let loadGeneration = 0;
  let historyShown = false;
  // Timing marks for bench/graph_page.py (ms since navigation start).
  const timings = window.rtdpGraphTimings = {};

  if (typeof uPlot === "undefined") { stateEl.textContent = "chart library missing"; return; }

  function width() { return Math.max(240, chartEl.clientWidth || 600); }
  function height() { return Math.max(220, Math.min(480, Math.round(window.innerHeight * 0.55))); }

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

  /* Drop what left the window, and the oldest beyond the cap (bounded memory). */
  function trim() {
    const cutoff = isTime && windowSeconds ? Date.now() / 1000 - windowSeconds : null;
    data.forEach(function (points) {
      if (cutoff !== null) for (const x of points.keys()) if (x < cutoff) points.delete(x);
      if (points.size > MAX_PER_AXIS) {
        const keys = Array.from(points.keys()).sort(function (a, b) { return a - b; });
        for (let i = 0; i < keys.length - MAX_PER_AXIS; i++) points.delete(keys[i]);
      }
    });
  }

  function aligned() {
    const xs = new Set();
    data.forEach(function (points) { for (const x of points.keys()) xs.add(x); });
    const sorted = Array.from(xs).sort(function (a, b) { return a - b; });
    const columns = [sorted];
    let total = 0;
    axes.forEach(function (name) {
      const points = data.get(name);
      total += points.size;
      columns.push(sorted.map(function (x) { const y = points.get(x); return y === undefined ? null : y; }));
    });
    chartEl.dataset.points = String(total);
    return columns;
  }

  function draw(force) {
    dirty = false;
    if (!plot || (paused && !force)) return;
    trim();
    const zoomed = zoomStack.length > 0;
    plot.setData(aligned(), !zoomed);
    if (!zoomed && isTime && windowSeconds) {
      const now = Date.now() / 1000;
      plot.setScale("x", { min: now - windowSeconds, max: now });
    }
    if (historyShown && window.rtdpGraphReady === undefined) window.rtdpGraphReady = timings.drawn = performance.now();
  }

  function schedule(force) {
    if (force) { zoomStack = []; backButton.disabled = true; requestAnimationFrame(function () { draw(true); }); return; }
    if (dirty) return;
    dirty = true;
    // At most a few redraws a second, whatever the event rate.
    setTimeout(function () { requestAnimationFrame(function () { draw(false); }); }, 250);
  }

  function addPoint(p) {
    let points = data.get(p.axis);
    if (!points) {
      // A new axis appeared: rebuild the chart with one more series.
      axes.push(p.axis);
      points = new Map();
      data.set(p.axis, points);
      points.set(p.x, p.y);
      makePlot();
      return;
    }
    if (isTime && windowSeconds && p.x < Date.now() / 1000 - windowSeconds) return;
    points.set(p.x, p.y);
    schedule(false);
  }

  async function loadHistory() {
    const generation = ++loadGeneration;
    const since = isTime && windowSeconds ? Date.now() / 1000 - windowSeconds : null;
    stateEl.textContent = "loading history…";
    if (timings.history_start === undefined) timings.history_start = performance.now();
    try {
      const results = await Promise.all(axes.map(function (name) {
        return RTDP_STREAM.fetchPoints(api, name, { since: since, max_points: width() });
      }));
      if (generation !== loadGeneration) return;
      if (timings.history_done === undefined) timings.history_done = performance.now();
      historyShown = true;
      results.forEach(function (points, i) {
        const target = data.get(axes[i]);
        // History never overwrites a live point that arrived meanwhile (the live one is newer).
        points.forEach(function (p) { if (!target.has(p.x)) target.set(p.x, p.y); stream.noteId(p.id); });
      });
      stateEl.textContent = stream.opened ? "live" : "connecting…";
    } catch (error) {
      stateEl.textContent = "could not load history: " + error.message;
    }
    schedule(true);
  }

  function setWindow(key) {
    windowSeconds = key === "all" ? null : Number(key);
    document.querySelectorAll("[data-window]").forEach(function (b) { b.classList.toggle("active", b.dataset.window === key); });
    data.forEach(function (points) { points.clear(); });
    loadHistory();
  }

  document.querySelectorAll("[data-window]").forEach(function (button) {
    button.addEventListener("click", function () { setWindow(button.dataset.window); });
  });

  pauseButton.addEventListener("click", function () {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    pauseButton.classList.toggle("active", paused);
    if (!paused) schedule(true);
  });

  window.addEventListener("resize", function () { if (plot) plot.setSize({ width: width(), height: height() }); });

  makePlot();
  const stream = new RTDP_STREAM.FeedStream(api, {
    point: addPoint,
    // History only once the stream is open, so nothing stored in between is missed.
    open: function () { timings.stream_open = performance.now(); setWindow(isTime ? "3600" : "all"); },
    state: function (text) { stateEl.textContent = paused ? "paused (" + text + ")" : text; },
  }, config.resume);
  stream.start();
  setInterval(function () { if (isTime && windowSeconds && !paused) schedule(false); }, 5000);
})();

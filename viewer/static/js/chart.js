/* RTDP_CHART: a live chart of several series (axes of one or more feeds) on uPlot, for any page.

   const chart = RTDP_CHART.create(element, {
     series: [{feed: "kitchen", axis: "temperature", label: "Kitchen", unit: "°C", y_cast: "float",
               last: {x: 1796000000, y: 21.5}}, ...],   // label, unit, y_cast ("float", "int", "bool"), last optional
     x_cast: "datetime",            // the feeds' x type: "datetime" (epoch seconds), "float" or "int"
     range: {window: 3600},         // relative: the last N seconds, following now ({window: null}: everything);
                                    // or absolute: {min: x0, max: x1}
     title: "kitchen",              // the chart's accessible name starts with it
     height: 320,                   // optional; else from the window's height
     onRange: function (range, zoomed, settled) {},  // optional: the range changed (picker, zoom, pan, back);
                                    // settled: its fetch starts now (a wheel or pinch calls first with false per step)
     onState: function (text) {},           // optional: "loading…", "" when done, or an error
     redrawMs: 100,                 // optional: live redraws at most every that many ms
     fetchPoints: RTDP_STREAM.fetchPoints,  // optional: how to fetch (api, axis, params, signal); a page of several
                                    // charts shares answers. A load that a newer one supersedes is aborted.
   });
   chart.push(feed, {axis, x, y})  // a live point from the page's one FeedStream (other series' points are ignored)
   chart.addSeries(series)         // one more series, as in options.series (its history is fetched)
   chart.setRange(range)           // as in the options; fetches what it shows
   chart.back()                    // undo the last zoom or pan; returns whether more remain
   chart.pause(true|false)         // stop or resume redrawing (points are still kept)
   chart.drawn()                   // [{feed, axis, xs, ys}]: the points the chart holds and draws now
   chart.columns(), chart.dots(), chart.yAxes()   // uPlot's data (null: a break), dots, y axes (tests)
   chart.resize(); chart.destroy()

   What it draws is min/max-true at every zoom level: each range (the picker, drag, wheel, pinch, pan, keys)
   is fetched again from the points API with `max_points` of twice the plot's width, so each pixel column
   holds the range's lowest and highest point. Live points are appended; while following now, points older
   than the window are dropped and older ones thinned to each pixel column's min and max, so memory stays
   bounded. A line breaks where a series has no point for more than GAP_FACTOR of its usual spacing, and a
   point alone between gaps is drawn as a dot. Each unit gets its own y scale (first left, second right, ...);
   int and bool series are drawn as steps, bool with its labels (a unit "closed/open" names false and true).
   The legend shows each series' latest value with its unit (the hovered one under the cursor). */
"use strict";
(function () {
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#e07b00", "#9467bd", "#8c564b", "#d43d9f", "#0f9fb0", "#7f7f7f", "#9a9a1f"];
  const MIN_REDRAW_MS = 100;   // live redraws at most 10 times a second
  const GAP_FACTOR = 4;        // no point for 4 usual intervals: the line breaks
  const FETCH_DELAY_MS = 180;  // wheel and pinch: fetch once the gesture pauses
  const TABLE_ROWS = 200;

  /* One series' points, sorted by x. */
  class Points {
    constructor() { this.xs = []; this.ys = []; this.compacted = 0; }
    get size() { return this.xs.length; }
    lowerBound(value) {
      const xs = this.xs;
      let lo = 0, hi = xs.length;
      while (lo < hi) { const mid = (lo + hi) >>> 1; if (xs[mid] < value) lo = mid + 1; else hi = mid; }
      return lo;
    }
    set(x, y) {
      const xs = this.xs, n = xs.length;
      if (n === 0 || x > xs[n - 1]) { xs.push(x); this.ys.push(y); return; }
      const i = this.lowerBound(x);
      if (xs[i] === x) { this.ys[i] = y; return; }
      xs.splice(i, 0, x); this.ys.splice(i, 0, y);
    }
    /* History (sorted) under what is already here: a live point that arrived meanwhile is newer and wins. */
    merge(points) {
      this.compacted += points.length;
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
      return i > 0;
    }
    clear() { this.xs = []; this.ys = []; this.compacted = 0; }
    /* Points before index `end`: each bucket of `step` keeps its lowest and highest point, in x order. */
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
    /* The spacing beyond which the line breaks: GAP_FACTOR times the usual (75th percentile) spacing. */
    gapLimit() {
      const n = this.xs.length;
      if (n < 4) return Infinity;
      const step = Math.max(1, Math.floor(n / 512)), gaps = [];
      for (let i = step; i < n; i += step) gaps.push(this.xs[i] - this.xs[i - 1]);
      gaps.sort(function (a, b) { return a - b; });
      const usual = gaps[Math.floor(gaps.length * 0.75)];
      return usual > 0 ? usual * GAP_FACTOR : Infinity;
    }
  }

  function boolLabels(unit) {
    const parts = (unit || "").split("/");
    return parts.length === 2 && parts[0] && parts[1] ? parts : ["off", "on"];
  }

  function cssVar(name, fallback) {
    const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function create(element, options) {
    const xCast = options.x_cast || "datetime";
    const fetchPoints = options.fetchPoints || RTDP_STREAM.fetchPoints;
    const isTime = xCast === "datetime";
    function makeSpec(s, i) {
      const bool = s.y_cast === "bool";
      return {
        feed: s.feed, axis: s.axis, label: s.label || s.axis, unit: bool ? "" : (s.unit || ""), yCast: s.y_cast || "float",
        labels: bool ? boolLabels(s.unit) : null, color: COLORS[i % COLORS.length], points: new Points(),
        latest: s.last && s.last.y !== null && s.last.y !== undefined ? { x: s.last.x, y: s.last.y } : null,
        api: "/api/v1/feeds/" + encodeURIComponent(s.feed), isolated: null,
      };
    }
    const specs = options.series.map(makeSpec);
    let range = options.range || { window: isTime ? 3600 : null };
    let fitStart = null;        // relative window on a feed holding less: the first point's x (the window fits the data)
    let zoomStack = [];
    let paused = false, changed = true, frameRequested = false, lastDraw = 0, generation = 0, fetchTimer = null;
    let inflight = null;        // the running load's AbortController
    let plot = null;

    element.classList.add("rtdp-chart");
    element.replaceChildren();
    const legend = document.createElement("ul");
    legend.className = "chart-legend";
    const canvasBox = document.createElement("div");
    canvasBox.className = "chart-canvas";
    canvasBox.setAttribute("role", "img");
    canvasBox.tabIndex = 0;
    const table = document.createElement("details");
    table.className = "chart-table";
    const summary = document.createElement("summary");
    summary.textContent = "Data table";
    const tableBox = document.createElement("div");
    tableBox.className = "scroll";
    table.append(summary, tableBox);
    element.append(legend, canvasBox, table);

    function label(spec) { return spec.label + (spec.unit ? " (" + spec.unit + ")" : ""); }
    function describe() {
      const text = (options.title ? options.title + ": " : "") + "chart of " + specs.map(label).join(", ") +
        ". Drag, use the wheel or pinch to zoom, arrow keys to pan; the data table below lists the points.";
      canvasBox.setAttribute("aria-label", text);
    }
    describe();

    function formatValue(spec, y) {
      if (y === null || y === undefined) return "–";
      if (spec.labels) return spec.labels[y ? 1 : 0];
      return RTDP.formatNumber(y, spec.unit);
    }
    function formatXValue(x) { return isTime ? RTDP.formatTime(x, true) : RTDP.formatNumber(x); }

    // Legend: a button per series (shows or hides it), its colour, name and latest (or hovered) value.
    const legendItems = [];
    function addLegendItem(spec, i) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "series";
      button.setAttribute("aria-pressed", "true");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = spec.color;
      const name = document.createElement("span");
      name.textContent = spec.label;
      const value = document.createElement("span");
      value.className = "value";
      button.append(swatch, name, value);
      button.addEventListener("click", function () {
        const show = button.getAttribute("aria-pressed") !== "true";
        button.setAttribute("aria-pressed", String(show));
        if (plot) plot.setSeries(i + 1, { show: show });
      });
      li.append(button);
      legend.append(li);
      legendItems.push(value);
    }
    specs.forEach(addLegendItem);
    let hoverIndex = null;
    function showLegend() {
      specs.forEach(function (spec, i) {
        let y = spec.latest ? spec.latest.y : null;
        if (hoverIndex !== null && plot) {
          const v = plot.data[i + 1][hoverIndex];
          y = v === undefined ? null : v;
        }
        legendItems[i].textContent = formatValue(spec, y);
      });
    }

    function width() { return Math.max(200, canvasBox.clientWidth || element.clientWidth || 600); }
    function height() { return options.height || Math.max(220, Math.min(480, Math.round(window.innerHeight * 0.55))); }
    function plotWidth() { return plot ? Math.max(100, Math.round(plot.bbox.width / (window.devicePixelRatio || 1))) : width(); }

    /* The y scales: one per unit (bool series share one 0..1 scale). */
    function scaleKey(spec) { return spec.labels ? "bool" : "y:" + spec.unit; }
    let scaleKeys = [];
    function planScales() {
      scaleKeys = [];
      specs.forEach(function (spec) { if (scaleKeys.indexOf(scaleKey(spec)) < 0) scaleKeys.push(scaleKey(spec)); });
      // The first two units get the left and right axes; series without a unit come after them.
      scaleKeys.sort(function (a, b) { return (a === "y:") - (b === "y:"); });
    }
    planScales();

    function timeValues(u, splits, axisIdx, space, incr) {
      let previousDay = null;
      return splits.map(function (x) {
        const d = new Date(x * 1000);
        const day = d.toDateString();
        const time = incr < 60 ? RTDP.formatClock(x, true) : RTDP.formatClock(x, false);
        let text = incr >= 86400 ? RTDP.formatDay(x) : time;
        if (incr < 86400 && day !== previousDay) text += "\n" + RTDP.formatDay(x);
        previousDay = day;
        return text;
      });
    }

    function makePlot() {
      if (plot) plot.destroy();
      const fg = cssVar("--fg", "#1d2329"), grid = cssVar("--grid", "#e3e7eb");
      const axisStyle = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
      const scales = { x: { time: isTime } };
      const axes = [Object.assign({ space: 90, values: isTime ? timeValues : function (u, splits) { return splits.map(function (v) { return RTDP.formatNumber(v); }); } }, axisStyle)];
      scaleKeys.forEach(function (key, index) {
        const spec = specs.find(function (s) { return scaleKey(s) === key; });
        const axis = Object.assign({}, axisStyle, { scale: key, side: index % 2 === 0 ? 3 : 1, size: 70 });
        if (index > 0) axis.grid = { show: false };
        if (spec.labels) {
          scales[key] = { range: [-0.15, 1.15] };
          axis.splits = function () { return [0, 1]; };
          axis.values = function (u, splits) { return splits.map(function (v) { return spec.labels[v ? 1 : 0]; }); };
        } else {
          scales[key] = {};
          const ints = specs.every(function (s) { return scaleKey(s) !== key || s.yCast === "int"; });
          if (ints) axis.incrs = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6, 1e7, 1e8, 1e9];
          axis.values = function (u, splits) { return splits.map(function (v) { return RTDP.formatNumber(v, spec.unit, 3); }); };
          if (spec.unit) axis.label = spec.unit;
          axis.labelSize = 18;
        }
        axes.push(axis);
      });
      const series = [{ label: isTime ? "time" : "x" }].concat(specs.map(function (spec, i) {
        const s = {
          label: label(spec), scale: scaleKey(spec), stroke: spec.color, width: 2, spanGaps: false,
          points: {
            size: 6, fill: spec.color,
            filter: function () { return spec.isolated && spec.isolated.length ? spec.isolated : null; },
          },
        };
        if (spec.yCast !== "float") s.paths = uPlot.paths.stepped({ align: 1 });
        return s;
      }));
      plot = new uPlot({
        width: width(), height: height(), scales: scales, series: series, axes: axes,
        legend: { show: false },
        cursor: { drag: { x: true, y: false, setScale: false } },
        hooks: {
          setSelect: [onSelect],
          setCursor: [function (u) { hoverIndex = u.cursor.idx === undefined ? null : u.cursor.idx; showLegend(); }],
        },
      }, aligned(), canvasBox);
      changed = false;
      bindGestures(plot);
      applyRange(false);
    }

    /* uPlot's columns: the union of the series' x; a series' y, undefined where it has no point at that x
       (spanned), and null at an inserted x inside a gap (the line breaks). */
    function aligned() {
      const k = specs.length;
      const limits = specs.map(function (s) { return s.points.gapLimit(); });
      const heads = new Array(k).fill(0);
      const xs = [];
      const columns = specs.map(function () { return []; });
      const breaks = specs.map(function () { return []; });  // gap midpoints per series, sorted
      specs.forEach(function (s, si) {
        const px = s.points.xs;
        for (let i = 1; i < px.length; i++) if (px[i] - px[i - 1] > limits[si]) breaks[si].push((px[i] + px[i - 1]) / 2);
      });
      const breakHeads = new Array(k).fill(0);
      for (;;) {
        let min = Infinity;
        for (let s = 0; s < k; s++) {
          if (heads[s] < specs[s].points.size && specs[s].points.xs[heads[s]] < min) min = specs[s].points.xs[heads[s]];
          if (breakHeads[s] < breaks[s].length && breaks[s][breakHeads[s]] < min) min = breaks[s][breakHeads[s]];
        }
        if (min === Infinity) break;
        xs.push(min);
        for (let s = 0; s < k; s++) {
          const p = specs[s].points;
          if (breakHeads[s] < breaks[s].length && breaks[s][breakHeads[s]] === min) { columns[s].push(null); breakHeads[s]++; }
          else if (heads[s] < p.size && p.xs[heads[s]] === min) { columns[s].push(p.ys[heads[s]]); heads[s]++; }
          else columns[s].push(undefined);
        }
      }
      // A point with no drawn neighbour on either side (gaps or the ends) is drawn as a dot.
      specs.forEach(function (spec, s) {
        const column = columns[s], isolated = [];
        const defined = [];
        for (let i = 0; i < column.length; i++) if (column[i] !== undefined) defined.push(i);
        for (let j = 0; j < defined.length; j++) {
          const i = defined[j];
          if (column[i] === null) continue;
          const before = j > 0 ? column[defined[j - 1]] : null, after = j + 1 < defined.length ? column[defined[j + 1]] : null;
          if (before === null && after === null) isolated.push(i);
        }
        spec.isolated = isolated;
      });
      element.dataset.points = String(specs.reduce(function (n, s) { return n + s.points.size; }, 0));
      return [xs].concat(columns);
    }

    function now() { return Date.now() / 1000; }

    /* The x range shown now: [min, max], or null to fit all the data. */
    function visible() {
      if (range.min !== undefined) return [range.min, range.max];
      if (!isTime || !range.window) return null;
      const t = now();
      let low = t - range.window;
      if (fitStart !== null) {
        let first = Infinity;
        specs.forEach(function (s) { if (s.points.size) first = Math.min(first, s.points.xs[0]); });
        if (first === Infinity) first = t - 60;
        const span = Math.max(t - first, 10);
        low = Math.max(low, first - span * 0.05);
      }
      return [low, t];
    }

    function applyRange(force) {
      if (!plot) return;
      const v = visible();
      if (v) plot.setScale("x", { min: v[0], max: v[1] });
      else if (force) plot.setData(plot.data, true);
    }

    function draw(force) {
      if (!plot || (paused && !force)) return;
      lastDraw = performance.now();
      trim();
      if (changed || force) { plot.setData(aligned(), visible() === null); changed = false; }
      applyRange(false);
      showLegend();
      if (table.open) fillTable();
    }

    function schedule(force) {
      if (force) changed = true;
      if (frameRequested && !force) return;
      frameRequested = true;
      requestAnimationFrame(function frame(t) {
        if (!force && t - lastDraw < (options.redrawMs || MIN_REDRAW_MS)) { requestAnimationFrame(frame); return; }
        frameRequested = false;
        draw(force);
      });
    }

    function following() { return range.min === undefined; }
    function cutoff() { return following() && isTime && range.window ? now() - range.window : null; }
    function trim() {
      const limit = cutoff();
      if (limit === null) return;
      specs.forEach(function (s) { if (s.points.size && s.points.xs[0] < limit && s.points.dropBefore(limit)) changed = true; });
    }

    /* Bounded memory while following now: every half a plot width of new points, thin all but the newest
       quarter width to 2 points per pixel column. */
    function bound(points) {
      const pixels = plotWidth();
      if (points.size - points.compacted <= pixels / 2) return;
      const xs = points.xs;
      const span = isTime && range.window ? range.window : xs[xs.length - 1] - xs[0];
      if (!(span > 0)) return;
      points.decimate(Math.max(0, xs.length - Math.ceil(pixels / 4)), span / pixels);
      changed = true;
    }

    function state(text) { if (options.onState) options.onState(text); }

    /* Fetch what the range shows, for every series, at 2 points per pixel column; the load it supersedes
       is aborted (its answers would be dropped anyway), so the server and the network serve this one. */
    async function load() {
      const mine = ++generation;
      if (inflight) inflight.abort();
      const controller = inflight = new AbortController();
      specs.forEach(function (s) { s.points.clear(); });
      fitStart = null;
      changed = true;
      const v = range.min !== undefined ? [range.min, range.max] : [cutoff(), null];
      const maxPoints = 2 * plotWidth();
      state("loading…");
      element.dataset.loading = "1";
      delete element.dataset.loadError;
      try {
        const results = await Promise.all(specs.map(function (s) {
          return fetchPoints(s.api, s.axis, { since: v[0], until: v[1], max_points: maxPoints }, controller.signal);
        }));
        if (mine !== generation) return;
        results.forEach(function (points, i) {
          const spec = specs[i];
          spec.points.merge(points);
          const last = points[points.length - 1];
          if (last && (!spec.latest || last.x >= spec.latest.x)) spec.latest = { x: last.x, y: last.y };
          if (following()) bound(spec.points);
        });
        if (following() && isTime && range.window) await fit(v[0], mine, controller.signal);
        if (mine !== generation) return;
      } catch (error) {
        if (mine !== generation) return;
        state("could not load: " + error.message);
        element.dataset.loadError = error.message;
      }
      if (inflight === controller) inflight = null;
      changed = true;
      draw(true);  // now, not next frame: data-loads then says the fetched range is drawn
      delete element.dataset.loading;
      element.dataset.loads = String(Number(element.dataset.loads || 0) + 1);
      if (element.dataset.loadError === undefined) state("");
    }

    /* The default window fits the data when the series hold less than it: nothing before the window. Asked
       only then (after the history): a window the data fills, the usual case, costs no request more. */
    async function fit(since, mine, signal) {
      let first = Infinity;
      specs.forEach(function (s) { if (s.points.size) first = Math.min(first, s.points.xs[0]); });
      if (first !== Infinity && first < since + range.window * 0.1) return;
      const older = await Promise.all(specs.map(function (s) {
        return fetchPoints(s.api, s.axis, { until: since, newest: true, limit: 1 }, signal);
      }));
      if (mine !== generation) return;
      if (older.every(function (points) { return points.length === 0; })) fitStart = first === Infinity ? now() : first;
    }

    function setRange(next, zoomed) {
      range = next.min !== undefined ? { min: next.min, max: next.max } : { window: next.window === undefined ? null : next.window };
      if (!zoomed) zoomStack = [];
      if (options.onRange) options.onRange(range, zoomStack.length > 0, true);
      applyRange(true);
      load();
    }

    function currentSpan() {
      if (!plot) return null;
      const min = plot.scales.x.min, max = plot.scales.x.max;
      return min === null || max === null || !(max > min) ? null : [min, max];
    }

    /* A zoom or a pan: remember where we were (once per gesture), show the new range at once, fetch soon. */
    let gestureSaved = false;
    function moveTo(min, max, delay) {
      if (!(max > min)) return;
      if (!gestureSaved) { zoomStack.push(range); gestureSaved = true; }
      range = { min: min, max: max };
      if (plot) plot.setScale("x", { min: min, max: max });
      clearTimeout(fetchTimer);
      if (delay === 0) { settle(); return; }
      if (options.onRange) options.onRange(range, true, false);
      fetchTimer = setTimeout(settle, delay);
    }
    function settle() {
      gestureSaved = false;
      if (options.onRange) options.onRange(range, true, true);
      load();
    }

    function onSelect(u) {
      if (u.select.width < 3) return;
      const min = u.posToVal(u.select.left, "x"), max = u.posToVal(u.select.left + u.select.width, "x");
      u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
      moveTo(min, max, 0);
    }

    function zoomAround(centre, factor, delay) {
      const span = currentSpan();
      if (!span) return;
      moveTo(centre - (centre - span[0]) * factor, centre + (span[1] - centre) * factor, delay);
    }
    function pan(fraction, delay) {
      const span = currentSpan();
      if (!span) return;
      const shift = (span[1] - span[0]) * fraction;
      moveTo(span[0] + shift, span[1] + shift, delay);
    }

    function bindGestures(u) {
      const over = u.over;
      over.addEventListener("wheel", function (event) {
        event.preventDefault();
        if (event.shiftKey || Math.abs(event.deltaX) > Math.abs(event.deltaY)) {
          pan(((event.shiftKey ? event.deltaY : 0) + event.deltaX) > 0 ? 0.1 : -0.1, FETCH_DELAY_MS);
          return;
        }
        const rect = over.getBoundingClientRect();
        zoomAround(u.posToVal(event.clientX - rect.left, "x"), event.deltaY > 0 ? 1.25 : 0.8, FETCH_DELAY_MS);
      }, { passive: false });
      // Touch: one finger pans, two fingers pinch-zoom.
      let touch = null;
      function touchState(event) {
        const rect = over.getBoundingClientRect();
        const xs = Array.from(event.touches).map(function (t) { return t.clientX - rect.left; });
        const span = currentSpan();
        return { xs: xs, y: event.touches[0] ? event.touches[0].clientY : 0, span: span, width: rect.width };
      }
      over.addEventListener("touchstart", function (event) { touch = touchState(event); }, { passive: true });
      over.addEventListener("touchmove", function (event) {
        if (!touch || !touch.span) return;
        const xs = Array.from(event.touches).map(function (t) { return t.clientX - over.getBoundingClientRect().left; });
        const perPixel = (touch.span[1] - touch.span[0]) / touch.width;
        if (xs.length >= 2 && touch.xs.length >= 2) {
          event.preventDefault();
          const before = Math.abs(touch.xs[1] - touch.xs[0]) || 1, after = Math.abs(xs[1] - xs[0]) || 1;
          const centre = touch.span[0] + ((touch.xs[0] + touch.xs[1]) / 2) * perPixel;
          const factor = before / after;
          moveTo(centre - (centre - touch.span[0]) * factor, centre + (touch.span[1] - centre) * factor, FETCH_DELAY_MS);
        } else if (xs.length === 1 && touch.xs.length === 1) {
          const dy = Math.abs(event.touches[0].clientY - touch.y);
          if (dy > Math.abs(touch.xs[0] - xs[0])) return;  // a vertical swipe scrolls the page
          event.preventDefault();
          const shift = (touch.xs[0] - xs[0]) * perPixel;
          moveTo(touch.span[0] + shift, touch.span[1] + shift, FETCH_DELAY_MS);
        }
      }, { passive: false });
      over.addEventListener("touchend", function () { touch = null; }, { passive: true });
    }

    canvasBox.addEventListener("keydown", function (event) {
      const span = currentSpan();
      if (!span) return;
      const centre = (span[0] + span[1]) / 2;
      const actions = {
        ArrowLeft: function () { pan(-0.25, FETCH_DELAY_MS); }, ArrowRight: function () { pan(0.25, FETCH_DELAY_MS); },
        "+": function () { zoomAround(centre, 0.5, FETCH_DELAY_MS); }, "=": function () { zoomAround(centre, 0.5, FETCH_DELAY_MS); },
        "-": function () { zoomAround(centre, 2, FETCH_DELAY_MS); }, Escape: function () { back(); },
      };
      if (actions[event.key]) { event.preventDefault(); actions[event.key](); }
    });

    function back() {
      const previous = zoomStack.pop();
      if (!previous) return false;
      gestureSaved = false;
      clearTimeout(fetchTimer);
      setRange(previous, true);
      return zoomStack.length > 0;
    }

    /* The data table: the drawn points, newest first (at most TABLE_ROWS x values). */
    function fillTable() {
      const data = plot ? plot.data : [[]];
      const t = document.createElement("table");
      t.className = "points";
      const caption = document.createElement("caption");
      caption.textContent = (options.title ? options.title + ": " : "") + "the " + Math.min(TABLE_ROWS, data[0].length) + " newest points drawn";
      const head = document.createElement("tr");
      [isTime ? "Time" : "x"].concat(specs.map(label)).forEach(function (text, i) {
        const th = document.createElement("th");
        th.scope = "col";
        th.textContent = text;
        if (i) th.className = "num";
        head.append(th);
      });
      const thead = document.createElement("thead");
      thead.append(head);
      const body = document.createElement("tbody");
      let rows = 0;
      for (let i = data[0].length - 1; i >= 0 && rows < TABLE_ROWS; i--) {
        let any = false;
        const cells = specs.map(function (spec, s) { const y = data[s + 1][i]; if (y !== null && y !== undefined) any = true; return y; });
        if (!any) continue;
        const tr = document.createElement("tr");
        const th = document.createElement("th");
        th.scope = "row";
        th.textContent = formatXValue(data[0][i]);
        tr.append(th);
        cells.forEach(function (y, s) {
          const td = document.createElement("td");
          td.className = "num";
          td.textContent = y === null || y === undefined ? "" : formatValue(specs[s], y);
          tr.append(td);
        });
        body.append(tr);
        rows++;
      }
      t.append(caption, thead, body);
      tableBox.replaceChildren(t);
    }
    table.addEventListener("toggle", function () { if (table.open) fillTable(); });

    function push(feed, p) {
      let changedHere = false;
      specs.forEach(function (spec) {
        if (spec.feed !== feed || spec.axis !== p.axis) return;
        if (!spec.latest || p.x >= spec.latest.x) spec.latest = { x: p.x, y: p.y };
        const limit = cutoff();
        if (limit !== null && p.x < limit) return;
        if (range.min !== undefined && (p.x < range.min || p.x > range.max)) return;
        spec.points.set(p.x, p.y);
        if (following()) bound(spec.points);
        changedHere = true;
      });
      if (changedHere) { changed = true; schedule(false); }
      else showLegend();
    }

    function onResize() { if (plot) plot.setSize({ width: width(), height: height() }); }
    window.addEventListener("resize", onResize);
    // The window slides even when nothing arrives.
    const ticker = setInterval(function () { if (following() && isTime && range.window && !paused) schedule(false); }, 1000);
    // The colours follow the browser's light or dark scheme.
    const scheme = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
    function onScheme() { makePlot(); }
    if (scheme) scheme.addEventListener("change", onScheme);

    makePlot();
    showLegend();
    load();

    const chart = {
      element: element,
      push: push,
      setRange: function (next) { setRange(next, false); },
      back: back,
      zoomed: function () { return zoomStack.length > 0; },
      range: function () { return range; },
      visibleRange: function () { return plot ? [plot.scales.x.min, plot.scales.x.max] : null; },
      pause: function (on) { paused = !!on; if (!paused) schedule(true); },
      drawn: function () { return specs.map(function (s) { return { feed: s.feed, axis: s.axis, xs: s.points.xs.slice(), ys: s.points.ys.slice() }; }); },
      // What uPlot was given (null: a break, undefined: no point there), the dots, and the y axes.
      columns: function () { return plot ? plot.data.map(function (c) { return Array.from(c, function (v) { return v === undefined ? "none" : v; }); }) : []; },
      dots: function () { return specs.map(function (s) { return (s.isolated || []).slice(); }); },
      yAxes: function () { return plot ? plot.axes.slice(1).map(function (a) { return { scale: a.scale, side: a.side, label: a.label || "" }; }) : []; },
      /* Another series (e.g. an axis that started sending): a spec as in options.series; its history loads. */
      addSeries: function (spec) {
        const added = makeSpec(spec, specs.length);
        specs.push(added);
        addLegendItem(added, specs.length - 1);
        planScales();
        describe();
        makePlot();
        const v = range.min !== undefined ? [range.min, range.max] : [cutoff(), null];
        fetchPoints(added.api, added.axis, { since: v[0], until: v[1], max_points: 2 * plotWidth() }).then(function (points) {
          added.points.merge(points);
          schedule(true);
        }, function (error) { state("could not load " + added.axis + ": " + error.message); });
      },
      resize: onResize,
      destroy: function () {
        generation++;
        if (inflight) inflight.abort();
        clearInterval(ticker);
        clearTimeout(fetchTimer);
        window.removeEventListener("resize", onResize);
        if (scheme) scheme.removeEventListener("change", onScheme);
        if (plot) plot.destroy();
        plot = null;
        element.replaceChildren();
      },
    };
    element.rtdpChart = chart;
    return chart;
  }

  window.RTDP_CHART = { create: create };
})();

/* The graph page: every axis of a feed on one live chart (chart.js), fed by ONE EventSource, with the
   relative (5 min ... all) and absolute (from, to) range picker. */
"use strict";
(function () {
  const config = RTDP.pageConfig();
  const chartEl = document.getElementById("chart");
  const stateEl = document.getElementById("live-state");
  const pauseButton = document.getElementById("pause");
  const backButton = document.getElementById("zoom-back");
  const picker = document.getElementById("range-picker");
  const isTime = config.x_cast === "datetime";
  let streamText = "connecting…", loadText = "", paused = false;

  if (typeof uPlot === "undefined") { stateEl.textContent = "chart library missing"; return; }

  function showState() {
    const text = loadText || streamText;
    stateEl.textContent = paused ? "paused (" + text + ")" : text;
  }

  /* datetime-local inputs hold local wall time: "YYYY-MM-DDTHH:MM:SS". */
  function toInput(seconds) {
    const d = new Date(seconds * 1000);
    const pad = function (n) { return String(n).padStart(2, "0"); };
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function fromInput(value) { return value ? new Date(value).getTime() / 1000 : NaN; }
  function inputValue(input, x) { input.value = isTime ? toInput(x) : String(x); }
  function readInput(input) { return isTime ? fromInput(input.value) : Number(input.value); }

  function onRange(range, zoomed) {
    backButton.disabled = !zoomed;
    const key = range.min !== undefined ? null : (range.window === null ? "all" : String(range.window));
    document.querySelectorAll("[data-window]").forEach(function (b) {
      const on = b.dataset.window === key;
      b.classList.toggle("active", on);
      b.setAttribute("aria-pressed", String(on));
    });
    if (range.min !== undefined) { inputValue(picker.elements.from, range.min); inputValue(picker.elements.to, range.max); }
  }

  // Timing marks for bench/graph_page.py (ms since navigation start): the first history request, its
  // answer drawn (rtdpGraphReady), the stream open.
  const timings = window.rtdpGraphTimings = {};
  const initial = isTime ? { window: 3600 } : { window: null };
  const chart = RTDP_CHART.create(chartEl, {
    series: config.series,
    x_cast: config.x_cast,
    range: initial,
    title: config.feed,
    onRange: onRange,
    onState: function (text) {
      if (text === "loading…" && timings.history_start === undefined) timings.history_start = performance.now();
      if (text === "" && window.rtdpGraphReady === undefined) window.rtdpGraphReady = timings.history_done = timings.drawn = performance.now();
      loadText = text;
      showState();
      // The picker shows the range on screen, ready to be edited into an absolute one.
      const shown = text === "" && chart ? chart.visibleRange() : null;
      if (shown && shown[0] !== null && document.activeElement.form !== picker) {
        inputValue(picker.elements.from, shown[0]);
        inputValue(picker.elements.to, shown[1]);
      }
    },
  });
  onRange(initial, false);
  window.rtdpChart = chart;

  document.querySelectorAll("[data-window]").forEach(function (button) {
    button.addEventListener("click", function () {
      chart.setRange({ window: button.dataset.window === "all" ? null : Number(button.dataset.window) });
    });
  });
  backButton.addEventListener("click", function () { chart.back(); });
  picker.addEventListener("submit", function (event) {
    event.preventDefault();
    const from = readInput(picker.elements.from), to = readInput(picker.elements.to);
    const error = document.getElementById("range-error");
    if (!(isFinite(from) && isFinite(to) && to > from)) {
      RTDP.showFieldError(picker.elements.to, "choose a “from” before “to”");
      return;
    }
    RTDP.showFieldError(picker.elements.to, "");
    if (error) error.textContent = "";
    chart.setRange({ min: from, max: to });
  });
  pauseButton.addEventListener("click", function () {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    pauseButton.setAttribute("aria-pressed", String(paused));
    chart.pause(paused);
    showState();
  });

  // The stream replays every point stored after this page was rendered (config.resume): the history
  // loads at once, in parallel, and nothing falls in between (a point both deliver is stored once).
  const stream = new RTDP_STREAM.FeedStream(config.api, {
    point: function (p) {
      if (!config.series.some(function (s) { return s.axis === p.axis; })) {
        // A new axis started sending: chart it too.
        const spec = { feed: config.feed, axis: p.axis, y_cast: config.y_cast };
        config.series.push(spec);
        chart.addSeries(spec);
      }
      chart.push(config.feed, p);
    },
    open: function () { if (timings.stream_open === undefined) timings.stream_open = performance.now(); },
    state: function (text) { streamText = text; showState(); },
  }, config.resume);
  stream.start();
})();

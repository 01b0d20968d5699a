/* One sparkline per axis: its newest stored points (exact, never downsampled: "Last" is the real
   latest value and "Recent" spans the latest points, not the whole history), then live points. */
"use strict";
(function () {
  const config = RTDP.pageConfig();
  const stateEl = document.getElementById("live-state");
  const MAX = 240;
  const lines = new Map();
  const units = new Map((config.series || []).map(function (s) { return [s.axis, s.unit]; }));
  function colour(name, fallback) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback; }

  document.querySelectorAll("#sparklines tbody tr").forEach(function (row) {
    lines.set(row.dataset.axis, { row: row, canvas: row.querySelector("canvas"), points: new Map() });
  });

  function draw(line) {
    const canvas = line.canvas;
    const ctx = canvas.getContext("2d");
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 240, h = canvas.clientHeight || 40;
    if (canvas.width !== Math.round(w * ratio)) { canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio); }
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const xs = Array.from(line.points.keys()).sort(function (a, b) { return a - b; });
    if (xs.length === 0) return;
    const ys = xs.map(function (x) { return line.points.get(x); });
    const minX = xs[0], maxX = xs[xs.length - 1];
    const minY = Math.min.apply(null, ys), maxY = Math.max.apply(null, ys);
    const sx = function (x) { return maxX === minX ? w / 2 : 2 + (x - minX) / (maxX - minX) * (w - 4); };
    const sy = function (y) { return maxY === minY ? h / 2 : h - 3 - (y - minY) / (maxY - minY) * (h - 6); };
    ctx.strokeStyle = colour("--accent", "#1f77b4");
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    xs.forEach(function (x, i) {
      if (i === 0) ctx.moveTo(sx(x), sy(ys[i]));
      else if (config.y_cast === "bool") { ctx.lineTo(sx(x), sy(ys[i - 1])); ctx.lineTo(sx(x), sy(ys[i])); }
      else ctx.lineTo(sx(x), sy(ys[i]));
    });
    ctx.stroke();
    ctx.fillStyle = colour("--down", "#d62728");
    ctx.beginPath();
    ctx.arc(sx(maxX), sy(ys[ys.length - 1]), 2.5, 0, 2 * Math.PI);
    ctx.fill();
    line.row.querySelector(".last").textContent = RTDP.formatY(ys[ys.length - 1], config.y_cast, units.get(line.row.dataset.axis));
    line.canvas.dataset.points = String(xs.length);
  }

  function add(line, x, y) {
    line.points.set(x, y);
    if (line.points.size > MAX) {
      const oldest = Math.min.apply(null, Array.from(line.points.keys()));
      line.points.delete(oldest);
    }
  }

  const pending = new Set();
  function schedule(line) {
    if (pending.has(line)) return;
    pending.add(line);
    requestAnimationFrame(function () { pending.delete(line); draw(line); });
  }

  const stream = new RTDP_STREAM.FeedStream(config.api, {
    point: function (p) { const line = lines.get(p.axis); if (line) { add(line, p.x, p.y); schedule(line); } },
    open: function () {
      lines.forEach(function (line, name) {
        RTDP_STREAM.fetchPoints(config.api, name, { limit: MAX, newest: true }).then(function (points) {
          points.forEach(function (p) { if (!line.points.has(p.x)) add(line, p.x, p.y); stream.noteId(p.id); });
          schedule(line);
        }, function (error) { stateEl.textContent = error.message; });
      });
    },
    state: function (text) { stateEl.textContent = text; },
  }, config.resume);
  stream.start();
})();

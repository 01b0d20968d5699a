/* One axis's live table: new points on top with the original's trend colours (compared as numbers). */
"use strict";
(function () {
  const config = RTDP.pageConfig();
  const table = document.getElementById("points");
  const stateEl = document.getElementById("live-state");
  const body = table.tBodies[0];
  const labels = { up: "▲ up", down: "▼ down", equal: "= equal" };

  if (config.x_cast === "datetime") {
    body.querySelectorAll("time[data-x]").forEach(function (el) { el.textContent = RTDP.formatTime(parseFloat(el.dataset.x), true); });
  }

  function trendOf(y, previous) {
    if (previous === null || isNaN(previous)) return "none";
    return y > previous ? "up" : y < previous ? "down" : "equal";
  }

  function row(point, trend) {
    const tr = document.createElement("tr");
    tr.className = "trend-" + trend;
    tr.dataset.id = point.id; tr.dataset.x = point.x; tr.dataset.y = point.y;
    const x = document.createElement("td");
    const time = document.createElement("time");
    time.textContent = RTDP.formatX(point.x, config.x_cast);
    x.append(time);
    const y = document.createElement("td");
    y.className = "num";
    y.textContent = RTDP.formatY(point.y, config.y_cast, config.unit);
    const t = document.createElement("td");
    t.textContent = labels[trend] || "";
    tr.append(x, y, t);
    return tr;
  }

  /* The header's count and last seen follow the points that arrive (a replacement is not a new point). */
  const countEl = document.getElementById("point-count");
  const seenEl = document.getElementById("last-seen");
  function noteArrival(isNew) {
    if (isNew && countEl) {
      countEl.dataset.count = String(Number(countEl.dataset.count || 0) + 1);
      countEl.textContent = RTDP.formatNumber(Number(countEl.dataset.count));
    }
    if (seenEl) { const now = Date.now() / 1000; seenEl.dataset.epoch = String(now); seenEl.textContent = RTDP.formatTime(now); }
  }

  function add(point, live) {
    // A replacement (same x) updates its row; an older x than the top is history, not news.
    const same = Array.from(body.rows).find(function (r) { return Number(r.dataset.x) === point.x; });
    if (live) noteArrival(!same);
    if (same) {
      same.dataset.y = point.y;
      same.cells[1].textContent = RTDP.formatY(point.y, config.y_cast, config.unit);
      return;
    }
    const top = body.rows[0];
    if (top && Number(top.dataset.x) > point.x) return;
    const previous = top ? Number(top.dataset.y) : null;
    body.insertBefore(row(point, trendOf(point.y, previous)), top || null);
    while (body.rows.length > config.page) body.deleteRow(body.rows.length - 1);
    const empty = document.getElementById("no-points");
    if (empty) empty.remove();
  }

  const api = "/api/v1/feeds/" + encodeURIComponent(config.feed);
  const stream = new RTDP_STREAM.FeedStream(api, {
    point: function (p) { if (p.axis === config.axis) add(p, true); },
    // Points stored between rendering this page and the stream opening: fetch them once.
    open: function () {
      const top = body.rows[0];
      const since = top ? Number(top.dataset.x) : null;
      RTDP_STREAM.fetchPoints(api, config.axis, { since: since, limit: config.page }).then(function (points) {
        points.forEach(function (p) { add(p); stream.noteId(p.id); });
      }, function (error) { stateEl.textContent = "live (" + error.message + ")"; });
    },
    state: function (text) { stateEl.textContent = text; },
  }, config.resume);
  stream.start();
})();

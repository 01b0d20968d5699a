/* The admin dashboard: redraws the system numbers, the feed table (with a per-minute sparkline for the
   last hour) and the recent rejections from each `snapshot` event of /admin/stream (every 2 s).
   Data is only ever written with textContent. */
"use strict";
(function () {
  const config = RTDP.pageConfig();
  const live = document.getElementById("admin-live");
  const errorBox = document.getElementById("admin-error");
  const SVG = "http://www.w3.org/2000/svg";

  /* Numbers as people read them: 4 significant digits, thousands separators, bytes in kB/MB/GB. */
  function shown(value, key) {
    if (value === null || value === undefined || value === "") return "—";
    if (typeof value !== "number") return String(value);
    return RTDP.formatNumber(value, key === "database_bytes" ? "B" : "");
  }

  function cell(text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  function timeCell(epoch) {
    const td = document.createElement("td");
    const el = document.createElement("time");
    if (epoch) {
      el.dataset.epoch = String(epoch);
      el.textContent = RTDP.formatTime(epoch);
    }
    td.appendChild(el);
    return td;
  }

  function sparkline(values) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", "120");
    svg.setAttribute("height", "24");
    svg.setAttribute("viewBox", "0 0 120 24");
    svg.dataset.key = "history";
    const known = values.filter(function (v) { return v !== null; });
    if (!known.length) return svg;
    const top = Math.max.apply(null, known.concat([1]));
    const step = 120 / Math.max(1, values.length - 1);
    const points = [];
    values.forEach(function (v, i) {
      if (v !== null) points.push((i * step).toFixed(1) + "," + (23 - (v / top) * 22).toFixed(1));
    });
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "currentColor");
    line.setAttribute("stroke-width", "1.5");
    const title = document.createElementNS(SVG, "title");
    title.textContent = "points per minute, last hour (max " + top + ")";
    svg.appendChild(title);
    svg.appendChild(line);
    return svg;
  }

  function retention(feed) {
    const parts = [];
    if (feed.retention_days) parts.push(feed.retention_days + " days");
    if (feed.retention_points) parts.push(feed.retention_points + " points");
    return parts.length ? parts.join(", ") : "keep all";
  }

  function renderSystem(system) {
    document.querySelectorAll("table.system td[data-key]").forEach(function (td) {
      td.textContent = shown(system[td.dataset.key], td.dataset.key);
    });
  }

  function renderFeeds(feeds) {
    const body = document.querySelector("#admin-feeds tbody");
    const rows = [];
    feeds.forEach(function (feed) {
      const axes = feed.axes.length ? feed.axes : [null];
      axes.forEach(function (axis) {
        const tr = document.createElement("tr");
        tr.dataset.feed = feed.feed;
        const name = document.createElement("td");
        const link = document.createElement("a");
        link.href = "/feeds/" + encodeURIComponent(feed.feed);
        link.textContent = feed.feed;
        name.appendChild(link);
        tr.appendChild(name);
        tr.appendChild(cell(axis ? axis.axis : ""));
        tr.appendChild(cell(feed.owner));
        if (axis) tr.dataset.axis = axis.axis;
        const points = cell(axis ? shown(axis.points) : "", "num");
        points.dataset.key = "points";
        tr.appendChild(points);
        const rate = cell(axis ? shown(axis.per_minute) : "", "num");
        rate.dataset.key = "per_minute";
        tr.appendChild(rate);
        const chart = document.createElement("td");
        if (axis) chart.appendChild(sparkline(axis.history));
        tr.appendChild(chart);
        tr.appendChild(timeCell(axis ? axis.last_seen : null));
        tr.appendChild(cell(retention(feed)));
        const rejected = cell(axis ? String(axis.rejected) : "", "num");
        rejected.dataset.key = "rejected";
        tr.appendChild(rejected);
        rows.push(tr);
      });
    });
    body.replaceChildren.apply(body, rows);
  }

  function renderRejections(rejections) {
    renderLog("#admin-rejections tbody", rejections, "reason", "None.");
  }

  function renderPurges(purges) {
    renderLog("#admin-purges tbody", purges || [], "removed", "Nothing yet.");
  }

  // A table of (time, feed, axis, `last`) rows, or one muted row saying `empty`.
  function renderLog(selector, items, last, empty) {
    const body = document.querySelector(selector);
    const rows = items.map(function (r) {
      const tr = document.createElement("tr");
      tr.appendChild(timeCell(r.at));
      tr.appendChild(cell(r.feed));
      tr.appendChild(cell(r.axis));
      tr.appendChild(cell(String(r[last])));
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = cell(empty, "muted");
      td.colSpan = 4;
      tr.appendChild(td);
      rows.push(tr);
    }
    body.replaceChildren.apply(body, rows);
  }

  function render(snapshot) {
    renderSystem(snapshot.system);
    renderFeeds(snapshot.feeds);
    renderRejections(snapshot.rejections);
    renderPurges(snapshot.purges);
    const updated = document.getElementById("admin-updated");
    updated.dataset.epoch = String(snapshot.at);
    updated.textContent = RTDP.formatTime(snapshot.at);
  }

  if (config.snapshot) renderFeeds(config.snapshot.feeds);  // draws the sparklines of the first snapshot
  const source = new EventSource(config.stream);
  source.addEventListener("open", function () {
    live.textContent = "(live)";
    RTDP.showError(errorBox, "");
  });
  source.addEventListener("snapshot", function (event) {
    render(JSON.parse(event.data));
  });
  source.addEventListener("error", function () {
    // EventSource reconnects by itself; say so rather than show stale numbers as live.
    live.textContent = "(reconnecting…)";
  });
})();

/* /alerts: the firing rules and recent events, live. Each feed with rules is followed on its existing SSE
   stream (stream.js; its `alert` events reach notify.js, which reads the lists again and hands them here). */
"use strict";
(function () {
  const page = document.getElementById("alerts-page");
  if (!page) return;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const live = document.getElementById("alerts-live");
  const feeds = (page.dataset.feeds || "").split(" ").filter(Boolean);

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function time(seconds) { return RTDP.formatTime(seconds, false); }

  function render(rules, events) {
    const list = document.getElementById("firing-list");
    list.replaceChildren();
    const firing = rules.filter((r) => r.state === "firing");
    for (const rule of firing) {
      const li = document.createElement("li");
      li.className = "severity-" + rule.severity;
      li.dataset.rule = String(rule.id);
      const strong = document.createElement("strong");
      strong.textContent = rule.name;
      li.appendChild(strong);
      li.appendChild(document.createTextNode(" on " + rule.feed + "/" + rule.axis + " since " + time(rule.since)));
      list.appendChild(li);
    }
    if (!firing.length) {
      const li = document.createElement("li");
      li.className = "muted none";
      li.textContent = "Nothing is firing.";
      list.appendChild(li);
    }
    const body = document.querySelector("#events-table tbody");
    body.replaceChildren();
    for (const event of events) {
      const row = document.createElement("tr");
      row.dataset.event = String(event.id);
      cell(row, time(event.at));
      cell(row, event.rule_name, "severity-" + event.severity);
      cell(row, event.feed + "/" + event.axis);
      cell(row, event.state, "state-" + event.state);
      cell(row, event.point ? String(event.point.y) : "");
      const last = cell(row, "");
      if (event.acknowledged) {
        last.textContent = "acknowledged by " + event.acknowledged_by;
        last.className = "muted";
      } else if (event.state === "firing") {
        const form = document.createElement("form");
        form.method = "post";
        form.action = "/alerts/events/" + event.id + "/ack";
        form.className = "inline ack";
        const token = document.createElement("input");
        token.type = "hidden"; token.name = "csrf_token"; token.value = csrf;
        const button = document.createElement("button");
        button.type = "submit"; button.textContent = "Acknowledge";
        form.appendChild(token); form.appendChild(button);
        last.appendChild(form);
      }
      body.appendChild(row);
    }
    if (!events.length) {
      const row = document.createElement("tr");
      row.className = "none";
      const only = cell(row, "No events yet: a rule's changes of state show here.", "muted");
      only.colSpan = 6;
      body.appendChild(row);
    }
    document.documentElement.dataset.alertsRendered =
      String(Number(document.documentElement.dataset.alertsRendered || "0") + 1);
  }

  document.addEventListener("rtdp:alerts", (event) => render(event.detail.rules, event.detail.events));

  const permission = document.getElementById("notify-permission");
  if (!("Notification" in window) || Notification.permission === "granted") permission.hidden = true;
  permission.addEventListener("click", async () => {
    if ("Notification" in window) await Notification.requestPermission();
    permission.hidden = Notification.permission === "granted";
  });

  let open = 0;
  for (const feed of feeds) {
    const stream = new RTDP_STREAM.FeedStream("/api/v1/feeds/" + encodeURIComponent(feed), {
      point: function () {},
      open: function () {
        open += 1;
        live.textContent = "live";
        document.documentElement.dataset.alertStreams = String(open);
      },
    }, null);
    stream.start();
  }
  if (!feeds.length) live.textContent = "";
})();

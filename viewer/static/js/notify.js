/* Alerts in the browser, on every page of a signed-in user: an `alert` event arriving on a feed's SSE
   stream (stream.js turns it into a "rtdp:alert" DOM event) becomes a notification (the browser's own
   when permitted, and a note on the page), and the header's count of firing rules is read again.
   Data is only ever written with textContent. */
"use strict";
(function () {
  const badge = document.getElementById("alerts-firing");
  let box = null;

  function note(title, text, severity) {
    if (!box) {
      box = document.createElement("div");
      box.id = "alert-notes";
      box.setAttribute("role", "status");
      document.body.appendChild(box);
    }
    const item = document.createElement("div");
    item.className = "alert-note severity-" + severity;
    const strong = document.createElement("strong");
    strong.textContent = title;
    item.appendChild(strong);
    item.appendChild(document.createTextNode(" " + text));
    box.appendChild(item);
    setTimeout(() => item.remove(), 15000);
  }

  function notify(alert) {
    const title = alert.rule.name + " is " + alert.state;
    let text = alert.feed + "/" + alert.axis;
    if (alert.point) text += " = " + String(alert.point.y);
    note(title, text, alert.rule.severity);
    document.documentElement.dataset.alertsNotified =
      String(Number(document.documentElement.dataset.alertsNotified || "0") + 1);
    if ("Notification" in window && Notification.permission === "granted") {
      try { new Notification(title, { body: text, tag: "rtdp-alert-" + alert.rule.id + "-" + alert.time }); }
      catch (e) { /* a page without permission to notify after all: the note on the page stays */ }
    }
  }

  async function refresh() {
    let rules, events;
    try {
      const [a, e] = await Promise.all([
        fetch("/api/v1/alerts", { credentials: "same-origin" }),
        fetch("/api/v1/alerts/events?limit=50", { credentials: "same-origin" }),
      ]);
      if (!a.ok || !e.ok) return;
      rules = (await a.json()).alerts;
      events = await e.json();
    } catch (err) { return; }
    if (badge) {
      badge.textContent = String(events.firing);
      badge.classList.toggle("none", !events.firing);
    }
    document.dispatchEvent(new CustomEvent("rtdp:alerts", { detail: { rules: rules, events: events.events } }));
  }

  document.addEventListener("rtdp:alert", (event) => {
    let alert;
    try { alert = JSON.parse(event.detail); } catch (e) { return; }
    if (alert.notify) notify(alert);
    refresh();
  });
  window.RTDP_ALERTS = { refresh: refresh };
})();

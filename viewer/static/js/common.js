/* Shared helpers for every page: CSRF-protected fetch, time formatting, copy buttons, confirmations.
   Data from the server is only ever written with textContent, never innerHTML. */
"use strict";
(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";

  const formats = new Map();
  function cached(kind, options) {
    const key = kind + JSON.stringify(options);
    let format = formats.get(key);
    if (!format) {
      format = kind === "n" ? new Intl.NumberFormat(undefined, options) : new Intl.DateTimeFormat(undefined, options);
      formats.set(key, format);
    }
    return format;
  }

  /* Epoch seconds -> one date-and-time format everywhere, in the browser's locale and time zone
     ("Dec 5, 2026, 11:52:35 PM" in en-US), with milliseconds when asked and not zero. */
  function formatTime(seconds, withMillis) {
    const d = new Date(seconds * 1000);
    const options = { year: "numeric", month: "short", day: "numeric", hour: "numeric", minute: "2-digit", second: "2-digit" };
    if (withMillis && d.getMilliseconds()) options.fractionalSecondDigits = 3;
    return cached("t", options).format(d);
  }
  /* The chart's time ticks: "11:52 PM" (with seconds when asked) and "Dec 5". */
  function formatClock(seconds, withSeconds) {
    const options = { hour: "numeric", minute: "2-digit" };
    if (withSeconds) options.second = "2-digit";
    return cached("t", options).format(new Date(seconds * 1000));
  }
  function formatDay(seconds) { return cached("t", { month: "short", day: "numeric" }).format(new Date(seconds * 1000)); }

  const BYTES = /^(B|bytes?)(\/s)?$/i;
  const PREFIXES = ["", "k", "M", "G", "T", "P"];
  /* A number for people: `digits` significant digits (4) below 10^digits, whole with thousands separators
     above, in the browser's locale; bytes scaled to kB, MB, ...; the unit after it ("21.5 °C", "45 %"). */
  function formatNumber(value, unit, digits) {
    if (value === null || value === undefined || value === "") return "–";
    let v = Number(value);
    if (!isFinite(v)) return String(value);
    digits = digits || 4;
    unit = unit || "";
    const bytes = BYTES.exec(unit);
    if (bytes) {
      let p = 0;
      while (Math.abs(v) >= 1000 && p < PREFIXES.length - 1) { v /= 1000; p++; }
      unit = PREFIXES[p] + "B" + (bytes[2] || "");
    }
    const abs = Math.abs(v);
    let text;
    if (abs >= Math.pow(10, digits)) text = cached("n", { maximumFractionDigits: 0 }).format(v);
    else if (abs !== 0 && abs < 1e-4) text = v.toExponential(digits - 1);
    else text = cached("n", { maximumSignificantDigits: digits }).format(v);
    return unit ? text + " " + unit : text;
  }

  function formatX(x, xCast) {
    return xCast === "datetime" ? formatTime(x, true) : formatNumber(x, "", 15);
  }

  function formatY(y, yCast, unit) {
    if (y === null || y === undefined) return "";
    if (yCast === "bool") {
      const labels = (unit || "").split("/");
      return labels.length === 2 && labels[0] && labels[1] ? labels[y ? 1 : 0] : (y ? "true" : "false");
    }
    return formatNumber(y, unit);
  }

  /* POST a form with fetch, asking for JSON; resolves to the parsed answer or throws Error(message). */
  async function postForm(form, extra) {
    const body = new URLSearchParams(new FormData(form));
    if (extra) for (const [k, v] of Object.entries(extra)) body.set(k, v);
    const response = await fetch(form.action, {
      method: "POST",
      body: body,
      headers: { "Accept": "application/json", "X-CSRF-Token": csrf },
      credentials: "same-origin",
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const error = new Error((data && data.error) || ("the server answered " + response.status));
      error.field = data && typeof data.field === "string" ? data.field : null;  // which form field it is about
      throw error;
    }
    return data;
  }

  function showError(element, message) {
    if (!element) return;
    element.textContent = message || "";
    element.classList.toggle("hidden", !message);
  }

  /* Show `message` next to `input` (or clear it): the same markup the server renders for a rejected form. */
  function showFieldError(input, message) {
    const id = (input.form && input.form.id ? input.form.id : "form") + "-" + input.name + "-error";
    let note = document.getElementById(id);
    if (!message) {
      if (note) note.remove();
      input.removeAttribute("aria-invalid");
      input.removeAttribute("aria-describedby");
      return;
    }
    if (!note) {
      note = document.createElement("span");
      note.className = "field-error";
      note.id = id;
      note.setAttribute("role", "alert");
      input.insertAdjacentElement("afterend", note);
    }
    note.textContent = message;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", id);
  }

  function pageConfig() {
    const el = document.getElementById("page-config");
    return el ? JSON.parse(el.textContent) : {};
  }

  function localizeTimes(root) {
    (root || document).querySelectorAll("time[data-epoch]").forEach(function (el) {
      const value = parseFloat(el.dataset.epoch);
      if (!isNaN(value)) { el.textContent = formatTime(value, false); el.title = new Date(value * 1000).toISOString(); }
    });
    // Numbers the server wrote raw: data-num (with data-unit, data-y-cast) gets the same format as live ones.
    (root || document).querySelectorAll("[data-num]").forEach(function (el) {
      if (el.dataset.num === "") return;
      el.textContent = el.dataset.yCast ? formatY(Number(el.dataset.num), el.dataset.yCast, el.dataset.unit)
        : formatNumber(Number(el.dataset.num), el.dataset.unit, Number(el.dataset.digits) || undefined);
    });
  }

  function setupCopyButtons(root) {
    (root || document).querySelectorAll("button.copy").forEach(function (button) {
      if (button.dataset.bound) return;
      button.dataset.bound = "1";
      button.addEventListener("click", function () {
        const target = button.dataset.copy ? document.getElementById(button.dataset.copy)
          : button.parentElement.querySelector("code");
        if (!target) return;
        const done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(target.textContent).then(done, function () { selectText(target); });
        } else {
          selectText(target);
        }
      });
    });
  }

  function selectText(node) {
    const range = document.createRange();
    range.selectNodeContents(node);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (form.classList && form.classList.contains("confirm") && !window.confirm(form.dataset.confirm || "Are you sure?")) {
      event.preventDefault();
    }
  });

  /* Tables shown as cards on a phone (data-cards): each cell carries its column's name. */
  function labelCells(root) {
    (root || document).querySelectorAll("table[data-cards]").forEach(function (table) {
      const names = Array.from(table.querySelectorAll("thead th")).map(function (th) { return th.textContent.trim(); });
      table.querySelectorAll("tbody tr").forEach(function (tr) {
        Array.from(tr.cells).forEach(function (td, i) { if (names[i] && !td.dataset.label) td.dataset.label = names[i]; });
      });
    });
  }
  // Rows added later (live tables, forms done in place) get their labels too.
  const labeller = new MutationObserver(function () { labelCells(); });
  document.addEventListener("DOMContentLoaded", function () {
    localizeTimes(); setupCopyButtons(); labelCells();
    document.querySelectorAll("table[data-cards] tbody").forEach(function (body) { labeller.observe(body, { childList: true }); });
  });

  window.RTDP = { csrf, formatTime, formatClock, formatDay, formatNumber, formatX, formatY, postForm, showError, showFieldError, pageConfig, localizeTimes, setupCopyButtons };
})();

/* Shared helpers for every page: CSRF-protected fetch, time formatting, copy buttons, confirmations.
   Data from the server is only ever written with textContent, never innerHTML. */
"use strict";
(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";

  function pad(n, w) { return String(n).padStart(w || 2, "0"); }

  /* Epoch seconds -> local "YYYY-MM-DD HH:MM:SS(.mmm)" in the browser's time zone. */
  function formatTime(seconds, withMillis) {
    const d = new Date(seconds * 1000);
    let text = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    if (withMillis && d.getMilliseconds()) text += "." + pad(d.getMilliseconds(), 3);
    return text;
  }

  function formatX(x, xCast) {
    return xCast === "datetime" ? formatTime(x, true) : String(x);
  }

  function formatY(y, yCast) {
    if (y === null || y === undefined) return "";
    if (yCast === "bool") return y ? "true" : "false";
    return String(y);
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

  document.addEventListener("DOMContentLoaded", function () { localizeTimes(); setupCopyButtons(); });

  window.RTDP = { csrf, formatTime, formatX, formatY, postForm, showError, showFieldError, pageConfig, localizeTimes, setupCopyButtons };
})();

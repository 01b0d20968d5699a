/* One feed's page: add, rename and delete axes in place (fetch; the forms still work without JS). */
"use strict";
(function () {
  const table = document.getElementById("axes");
  if (!table) return;
  const feed = table.dataset.feed;
  const yCast = table.dataset.yCast;
  const errorBox = document.getElementById("axes-error");
  const noAxes = document.getElementById("no-axes");
  const examples = document.getElementById("examples");
  const template = document.getElementById("examples-template");
  const base = "/feeds/" + encodeURIComponent(feed) + "/axes/";

  function fillExamples(details, axis) {
    details.dataset.axis = axis.name;
    details.querySelector('[data-field="axis"]').textContent = axis.name;
    for (const [key, value] of Object.entries(axis.examples || {})) {
      const node = details.querySelector('[data-field="' + key + '"]');
      if (node) node.textContent = value;
    }
  }

  function examplesFor(name) {
    return Array.from(examples.querySelectorAll("details.examples")).find(function (d) { return d.dataset.axis === name; });
  }

  function cell(text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function actionForms(name) {
    const td = document.createElement("td");
    td.className = "actions";
    const rename = document.createElement("form");
    rename.method = "post";
    rename.className = "inline rename-axis";
    rename.action = base + encodeURIComponent(name) + "/rename";
    const input = document.createElement("input");
    input.name = "name"; input.required = true; input.maxLength = 64; input.size = 12;
    input.pattern = "[A-Za-z0-9_.\\-]{1,64}"; input.value = name; input.setAttribute("aria-label", "new name");
    const renameButton = document.createElement("button");
    renameButton.type = "submit"; renameButton.textContent = "Rename";
    rename.append(input, renameButton);
    const del = document.createElement("form");
    del.method = "post";
    del.className = "inline delete-axis";
    del.action = base + encodeURIComponent(name) + "/delete";
    del.dataset.confirm = "Delete axis " + name + " and all its points?";
    const delButton = document.createElement("button");
    delButton.type = "submit"; delButton.className = "danger"; delButton.textContent = "Delete";
    del.append(delButton);
    td.append(rename, del);
    bindRow(rename, del);
    return td;
  }

  function setRowName(row, name) {
    row.dataset.axis = name;
    const nameCell = row.querySelector(".axis-name");
    nameCell.replaceChildren(link(base + encodeURIComponent(name), name));
    row.querySelector("td:nth-child(5)").replaceChildren(link(base + encodeURIComponent(name), "points"));
    const rename = row.querySelector("form.rename-axis");
    const del = row.querySelector("form.delete-axis");
    if (rename) rename.action = base + encodeURIComponent(name) + "/rename";
    if (del) { del.action = base + encodeURIComponent(name) + "/delete"; del.dataset.confirm = "Delete axis " + name + " and all its points?"; }
  }

  function addRow(axis) {
    const row = document.createElement("tr");
    row.dataset.axis = axis.name;
    const nameCell = cell("", "axis-name");
    row.append(nameCell, cell(RTDP.formatNumber(axis.point_count), "num"), cell(RTDP.formatY(axis.last_y, yCast, axis.unit), "num"), cell(""), cell(""), cell("", "spark"));
    // Rename and delete are for the feed's owner and admins (the page marks the table); writers only add.
    if (table.dataset.manage) row.append(actionForms(axis.name));
    table.tBodies[0].append(row);
    setRowName(row, axis.name);
    noAxes.hidden = true;
    const placeholder = examples.querySelector("details.examples[data-first]");
    if (placeholder) placeholder.remove();  // the new feed's examples for its first axis
    const details = template.content.firstElementChild.cloneNode(true);
    fillExamples(details, axis);
    examples.append(details);
    RTDP.setupCopyButtons(details);
  }

  function bindRow(rename, del) {
    rename.addEventListener("submit", async function (event) {
      event.preventDefault();
      const row = rename.closest("tr");
      const oldName = row.dataset.axis;
      try {
        const axis = await RTDP.postForm(rename);
        setRowName(row, axis.name);
        const details = examplesFor(oldName);
        if (details) fillExamples(details, axis);
        RTDP.showError(errorBox, "");
      } catch (error) {
        RTDP.showError(errorBox, "Could not rename " + oldName + ": " + error.message);
      }
    });
    del.addEventListener("submit", async function (event) {
      event.preventDefault();
      if (!window.confirm(del.dataset.confirm)) return;
      const row = del.closest("tr");
      const name = row.dataset.axis;
      try {
        await RTDP.postForm(del);
        row.remove();
        const details = examplesFor(name);
        if (details) details.remove();
        noAxes.hidden = table.tBodies[0].rows.length > 0;
        RTDP.showError(errorBox, "");
      } catch (error) {
        RTDP.showError(errorBox, "Could not delete " + name + ": " + error.message);
      }
    });
  }

  table.querySelectorAll("tbody tr").forEach(function (row) {
    const rename = row.querySelector("form.rename-axis");
    const del = row.querySelector("form.delete-axis");
    if (rename && del) bindRow(rename, del);
  });

  const addForm = document.getElementById("add-axis");
  if (addForm) {
    addForm.addEventListener("submit", async function (event) {
      event.preventDefault();
      const input = addForm.querySelector('input[name="name"]');
      try {
        const axis = await RTDP.postForm(addForm);
        addRow(axis);
        input.value = "";
        RTDP.showError(errorBox, "");
        RTDP.showFieldError(input, "");
      } catch (error) {
        // A bad or taken name belongs next to the field; anything else goes to the page's alert.
        if (error.field === "axis" || error.field === "name") {
          RTDP.showFieldError(input, error.message);
          RTDP.showError(errorBox, "");
        } else {
          RTDP.showError(errorBox, "Could not add the axis: " + error.message);
        }
      }
    });
  }

  /* Live: each point updates its axis's last value and last seen at once; the counts come from the feed's
     JSON, fetched at most every 2 s while points arrive. */
  const api = "/api/v1/feeds/" + encodeURIComponent(feed);
  const stateEl = document.getElementById("live-state");
  let refreshTimer = null;
  function rowOf(name) { return Array.from(table.tBodies[0].rows).find(function (r) { return r.dataset.axis === name; }); }
  function setLast(row, y, seen, unit) {
    const last = row.querySelector('[data-field="last"]');
    if (last && unit !== undefined) last.dataset.unit = unit;
    if (last) last.textContent = RTDP.formatY(y, yCast, last.dataset.unit);
    const time = row.querySelector("time");
    if (time && seen) { time.dataset.epoch = String(seen); time.textContent = RTDP.formatTime(seen); }
  }
  async function refresh() {
    refreshTimer = null;
    try {
      const response = await fetch(api, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) return;
      (await response.json()).axes.forEach(function (axis) {
        const row = rowOf(axis.name);
        if (!row) return;
        const points = row.querySelector('[data-field="points"]');
        if (points) points.textContent = RTDP.formatNumber(axis.point_count);
        const last = row.querySelector('[data-field="last"]');
        if (last) last.dataset.unit = axis.unit || "";
        setLast(row, axis.last_y, axis.last_seen);
      });
    } catch (error) { /* the next point tries again */ }
  }
  if (table.dataset.resume !== undefined && window.RTDP_STREAM) {
    const stream = new RTDP_STREAM.FeedStream(api, {
      point: function (p) {
        const row = rowOf(p.axis);
        if (row) setLast(row, p.y, Date.now() / 1000);
        if (!refreshTimer) refreshTimer = setTimeout(refresh, 2000);
      },
      state: function (text) { if (stateEl) stateEl.textContent = text; },
    }, Number(table.dataset.resume));
    stream.start();
  }

  /* Export: the From/To the browser shows (local time) go to the API as epoch seconds. */
  const exportForm = document.getElementById("export-form");
  if (exportForm) {
    exportForm.addEventListener("submit", function () {
      const isTime = table.dataset.xCast === "datetime";
      ["from", "to"].forEach(function (name, i) {
        const input = exportForm.elements[name], hidden = exportForm.elements[i ? "until" : "since"];
        const value = input.value ? (isTime ? new Date(input.value).getTime() / 1000 : Number(input.value)) : "";
        hidden.value = value === "" || isNaN(value) ? "" : String(value);
        hidden.disabled = hidden.value === "";
        input.disabled = true;  // not sent: since/until carry it
      });
      if (!exportForm.elements.axis.value) exportForm.elements.axis.disabled = true;
      setTimeout(function () { Array.from(exportForm.elements).forEach(function (e) { e.disabled = false; }); }, 0);
    });
  }

  /* Settings and units: PATCH the JSON API with the page's CSRF token (the session's scheme). */
  async function patch(url, body) {
    const response = await fetch(url, {
      method: "PATCH", credentials: "same-origin", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": RTDP.csrf },
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const error = new Error((data && data.error) || "the server answered " + response.status);
      error.field = data && data.field;
      throw error;
    }
    return data;
  }
  const settingsForm = document.getElementById("feed-settings");
  if (settingsForm) {
    settingsForm.addEventListener("submit", async function (event) {
      event.preventDefault();
      const status = document.getElementById("settings-status");
      const number = function (name) { const v = settingsForm.elements[name].value; return v === "" ? null : Number(v); };
      ["description", "retention_days", "retention_points"].forEach(function (n) { RTDP.showFieldError(settingsForm.elements[n], ""); });
      try {
        await patch(settingsForm.dataset.api, {
          description: settingsForm.elements.description.value,
          retention_days: number("retention_days"), retention_points: number("retention_points"),
        });
        status.textContent = "Saved.";
      } catch (error) {
        const input = error.field && settingsForm.elements[error.field];
        if (input) RTDP.showFieldError(input, error.message);
        status.textContent = "Not saved: " + error.message;
      }
    });
  }
  const unitsForm = document.getElementById("axis-units");
  if (unitsForm) {
    unitsForm.addEventListener("submit", async function (event) {
      event.preventDefault();
      const status = document.getElementById("units-status");
      let saved = 0;
      for (const row of Array.from(unitsForm.querySelectorAll("tbody tr"))) {
        const unit = row.querySelector('input[name="unit"]'), label = row.querySelector('input[name="label"]');
        if (unit.value === unit.defaultValue && label.value === label.defaultValue) continue;
        RTDP.showFieldError(unit, ""); RTDP.showFieldError(label, "");
        try {
          const axis = await patch(unitsForm.dataset.api + encodeURIComponent(row.dataset.unitsOf), { unit: unit.value, label: label.value });
          unit.defaultValue = unit.value = axis.unit || "";
          label.defaultValue = label.value = axis.label || "";
          const live = rowOf(axis.name);
          if (live) setLast(live, axis.last_y, null, axis.unit || "");
          saved++;
        } catch (error) {
          RTDP.showFieldError(error.field === "label" ? label : unit, error.message);
          status.textContent = "Not saved: " + error.message;
          return;
        }
      }
      status.textContent = saved ? "Saved." : "Nothing changed.";
    });
  }
})();

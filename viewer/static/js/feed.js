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
    const placeholder = examples.querySelector('details.examples[data-axis="AXIS"]');
    if (placeholder) placeholder.remove();  // the new feed's example for an axis still to name
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
})();

/* Feed list: delete asks for confirmation and waits for the server's answer before removing the card. */
"use strict";
(function () {
  const errorBox = document.getElementById("feeds-error");
  document.querySelectorAll("form.delete-feed").forEach(function (form) {
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      if (!window.confirm(form.dataset.confirm)) return;
      const button = form.querySelector("button");
      button.disabled = true;
      button.textContent = "Deleting…";
      try {
        await RTDP.postForm(form);
        form.closest("article").remove();
        RTDP.showError(errorBox, "");
      } catch (error) {
        RTDP.showError(errorBox, "Could not delete: " + error.message);
        button.disabled = false;
        button.textContent = "Delete";
      }
    });
  });
})();

/* Batch page: poll the batch API (same-origin, session cookie) and update the progress bar
   and each image's status until every image is done or failed. No framework, no CDN. */
(function () {
  "use strict";
  var card = document.getElementById("batch-progress");
  if (!card) { return; }
  var url = card.getAttribute("data-api");
  var delay = 1500;

  function update(batch) {
    var p = batch.progress;
    var bar = document.getElementById("batch-bar");
    bar.max = p.total;
    bar.value = p.done + p.failed;
    bar.textContent = p.percent + "%";
    document.getElementById("batch-percent").textContent = p.percent;
    ["queued", "running", "done", "failed"].forEach(function (key) {
      var el = card.querySelector('[data-count="' + key + '"]');
      if (el) { el.textContent = p[key]; }
    });
    (batch.images || []).forEach(function (image) {
      var cell = document.querySelector('tr[data-image="' + image.id + '"] .image-status');
      if (cell) { cell.textContent = image.status; cell.setAttribute("data-status", image.status); }
    });
    document.getElementById("batch-status").textContent = batch.status === "finished" ? "finished" : "in progress";
    card.setAttribute("data-status", batch.status);
    return batch.status !== "finished";
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { if (!response.ok) { throw new Error(response.status); } return response.json(); })
      .then(function (batch) { if (update(batch)) { window.setTimeout(poll, delay); } })
      .catch(function () { delay = Math.min(delay * 2, 30000); window.setTimeout(poll, delay); });
  }

  if (card.getAttribute("data-status") !== "finished") { window.setTimeout(poll, delay); }
})();

/* Batch page: poll the batch API (same-origin, session cookie) and update the progress bar
   and each image's status until every image is done or failed. No framework, no CDN.

   Result badges: an image that finishes while the page is open gets them here when the poll
   answer carries its `level` and `warnings` (the words come from the page's inert
   <template id="result-badges">, drawn by the server); otherwise, once the batch is finished,
   the page's own HTML is fetched again and its result cells copied in (no reload). Green only
   when the reading is reassuring: below the threshold with no warning at all. */
(function () {
  "use strict";
  var card = document.getElementById("batch-progress");
  if (!card) { return; }
  var url = card.getAttribute("data-api");
  var delay = 1500;
  var badges = document.getElementById("result-badges");
  var refreshWhenFinished = false;

  function badge(selector) {
    var found = badges && badges.content.querySelector(selector);
    return found ? found.cloneNode(true) : null;
  }

  function showResult(row, image) {
    var cell = row.querySelector(".image-result");
    if (!cell || cell.hasAttribute("data-level") || image.status !== "done") { return; }
    var main = image.level && Array.isArray(image.warnings) && badge('[data-level="' + image.level + '"]');
    if (!main) { refreshWhenFinished = true; return; }  // no result in this answer: the page has it
    cell.textContent = "";
    cell.appendChild(main);
    image.warnings.forEach(function (code) {
      var warning = badge('[data-warning="' + code + '"]');
      if (warning) { cell.appendChild(document.createTextNode(" ")); cell.appendChild(warning); }
    });
    cell.setAttribute("data-level", image.level);
  }

  // Once finished: the server-drawn result cells of the page, copied into this one.
  function refreshResults() {
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { if (!response.ok) { throw new Error(response.status); } return response.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        fresh.querySelectorAll("tr[data-image] .image-result").forEach(function (cell) {
          var row = document.querySelector('tr[data-image="' + cell.parentNode.getAttribute("data-image") + '"]');
          var mine = row && row.querySelector(".image-result");
          if (!mine || mine.hasAttribute("data-level") || !cell.hasAttribute("data-level")) { return; }
          mine.replaceWith(document.importNode(cell, true));
        });
      })
      .catch(function () { /* the badges appear on the next visit */ });
  }

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
      var row = document.querySelector('tr[data-image="' + image.id + '"]');
      if (!row) { return; }  // stored after the page was drawn: shown on the next visit
      var cell = row.querySelector(".image-status");
      if (cell) { cell.textContent = image.status; cell.setAttribute("data-status", image.status); }
      showResult(row, image);
    });
    document.getElementById("batch-status").textContent = batch.status === "finished" ? "finished" : "in progress";
    card.setAttribute("data-status", batch.status);
    if (batch.status === "finished" && refreshWhenFinished) { refreshResults(); }
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

/* Lesion form: a click on the front or back drawing places the lesion there. It writes the form's
   map_view, map_x and map_y (0-1 across and down the drawing) and moves the marker; typing in
   those fields moves it too. Without this script the fields are simply typed. No framework, no
   CDN, no inline script (the Content-Security-Policy allows none). */
(function () {
  "use strict";
  var field = document.getElementById("body-map-field");
  if (!field) { return; }
  var view = document.getElementById("id_map_view");
  var across = document.getElementById("id_map_x");
  var down = document.getElementById("id_map_y");
  var clear = document.getElementById("body-map-clear");
  var drawings = Array.prototype.slice.call(field.querySelectorAll("svg[data-view]"));

  function coordinate(input) {
    var value = parseFloat(input.value);
    return isFinite(value) && value >= 0 && value <= 1 ? value : null;
  }

  function show() {
    var x = coordinate(across), y = coordinate(down);
    var placed = view.value !== "" && x !== null && y !== null;
    drawings.forEach(function (svg) {
      var marker = svg.querySelector(".map-marker");
      var here = placed && svg.getAttribute("data-view") === view.value;
      marker.classList.toggle("off", !here);
      if (here) {
        var box = svg.viewBox.baseVal;
        marker.setAttribute("cx", String(x * box.width));
        marker.setAttribute("cy", String(y * box.height));
      }
    });
    clear.hidden = !placed;
  }

  function clamp(value) { return Math.min(1, Math.max(0, value)); }

  drawings.forEach(function (svg) {
    svg.addEventListener("click", function (event) {
      var matrix = svg.getScreenCTM();
      if (!matrix) { return; }
      var point = svg.createSVGPoint();
      point.x = event.clientX;
      point.y = event.clientY;
      var inDrawing = point.matrixTransform(matrix.inverse());
      var box = svg.viewBox.baseVal;
      view.value = svg.getAttribute("data-view");
      across.value = clamp(inDrawing.x / box.width).toFixed(3);
      down.value = clamp(inDrawing.y / box.height).toFixed(3);
      show();
    });
  });
  [view, across, down].forEach(function (input) {
    input.addEventListener("input", show);
    input.addEventListener("change", show);
  });
  clear.addEventListener("click", function () {
    view.value = "";
    across.value = "";
    down.value = "";
    show();
  });
  show();
})();

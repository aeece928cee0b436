/* vimha dashboard: draws the charts of a page with Chart.js (static/vendor, built from the
   npm registry). A chart is a <canvas data-chart='{Chart.js configuration as JSON}'>
   rendered by the server; nothing else runs here. Live refreshes replace the canvases
   (htmx swaps #live-body): the new ones are drawn and the charts of removed ones
   destroyed. No eval, no inline code (the page's CSP forbids both). */
(function () {
  "use strict";
  var drawn = new Map();

  function sweep() {
    drawn.forEach(function (chart, canvas) {
      if (!canvas.isConnected) {
        chart.destroy();
        drawn.delete(canvas);
      }
    });
  }

  function draw(root) {
    if (typeof window.Chart === "undefined") {
      return;
    }
    sweep();
    (root || document).querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (drawn.has(canvas)) {
        return;
      }
      var config;
      try {
        config = JSON.parse(canvas.getAttribute("data-chart"));
      } catch (e) {
        console.warn("vimha: a chart's configuration is not JSON", e);
        return;
      }
      config.options = Object.assign(
        { animation: false, responsive: true, maintainAspectRatio: false },
        config.options || {}
      );
      drawn.set(canvas, new window.Chart(canvas, config));
    });
  }

  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function (e) { draw(e.target); });
})();

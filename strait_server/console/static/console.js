// Live lists (a tbody with data-keep="N"): rows arrive at the top as runs are created.
// - A row already on the page that comes again (the browser reconnected its event stream, which sends the
//   newest rows again) replaces its older copy.
// - The newest N rows are kept, so a page left open all day does not grow without bound.
"use strict";
document.addEventListener("htmx:sseMessage", function () {
  document.querySelectorAll("tbody[data-keep]").forEach(function (body) {
    var seen = {};
    Array.prototype.slice.call(body.rows).forEach(function (row) {
      if (row.id && seen[row.id]) {
        row.remove();
      } else if (row.id) {
        seen[row.id] = true;
      }
    });
    var keep = parseInt(body.getAttribute("data-keep"), 10);
    while (body.rows.length > keep) {
      body.deleteRow(body.rows.length - 1);
    }
  });
});

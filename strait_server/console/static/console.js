// Live lists (a tbody with data-keep="N") keep their newest N rows: rows arrive at the top as runs are
// created, so a page left open all day would otherwise grow without bound.
"use strict";
document.addEventListener("htmx:sseMessage", function () {
  document.querySelectorAll("tbody[data-keep]").forEach(function (body) {
    var keep = parseInt(body.getAttribute("data-keep"), 10);
    while (body.rows.length > keep) {
      body.deleteRow(body.rows.length - 1);
    }
  });
});

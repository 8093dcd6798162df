// The live tail: Server-Sent Events from /events/stream, newest row first.
// Every value goes into the page as text (textContent), never as markup.
"use strict";
(function () {
  const MAX_ROWS = 500;
  const table = document.querySelector("table.tail");
  const body = document.getElementById("tail");
  const count = document.getElementById("count");
  const state = document.getElementById("state");
  const position = document.getElementById("position");
  let received = 0;

  function cell(row, text, href) {
    const td = row.insertCell();
    if (href) {
      const a = document.createElement("a");
      a.href = href;
      a.textContent = text;
      td.appendChild(a);
    } else {
      td.textContent = text;
    }
  }

  function show(event) {
    if (received === 0) body.textContent = "";
    received += 1;
    const row = body.insertRow(0);
    row.className = "fresh";
    row.dataset.type = event.type;
    cell(row, String(event.position));
    cell(row, event.time ? event.time.slice(11, 23) : "?");
    cell(row, event.type);
    const name = event.pipeline_name || event.pipeline_id.slice(0, 8);
    cell(row, name, "/runs?pipeline=" + encodeURIComponent(event.pipeline_id));
    if (event.processing_id) {
      cell(row, event.processing_id.slice(0, 8), "/runs/" + encodeURIComponent(event.processing_id));
    } else {
      cell(row, "");
    }
    cell(row, event.details);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
    count.textContent = String(received);
    position.textContent = String(event.position);
  }

  const source = new EventSource(table.dataset.stream);
  source.onopen = function () { state.textContent = "live"; state.className = "on"; };
  source.onerror = function () { state.textContent = "reconnecting…"; state.className = "off"; };
  source.onmessage = function (message) { show(JSON.parse(message.data)); };
})();

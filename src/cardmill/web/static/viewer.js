// cardmill viewer: live progress of a run's page. No inline script anywhere (the
// Content-Security-Policy forbids it): this file is all the script the viewer runs.
"use strict";

(function () {
  const root = document.querySelector("main[data-progress-url]");
  if (!root) {
    return;
  }
  const url = root.dataset.progressUrl;
  const every = Math.max(100, Number(root.dataset.pollMs) || 1000);
  let wasLive = root.dataset.live === "true";

  function show(data) {
    for (const el of document.querySelectorAll("[data-live]")) {
      const key = el.dataset.live;
      if (Object.prototype.hasOwnProperty.call(data.text, key)) {
        el.textContent = data.text[key];
      }
    }
    const status = document.getElementById("status");
    if (status) {
      status.className = "status status-" + data.status;
    }
    const bar = document.getElementById("progress");
    if (bar) {
      bar.max = Math.max(1, data.total);
      bar.value = data.done;
    }
    const rows = document.getElementById("batch-rows");
    if (rows) {
      const shown = new Set([...rows.querySelectorAll("tr[data-batch]")].map((r) => r.dataset.batch));
      for (const batch of data.batches) {
        if (!shown.has(batch.id)) {
          rows.appendChild(batchRow(batch.id));
        }
      }
      if (data.batches.length) {
        document.getElementById("batches").hidden = false;
      }
    }
    for (const row of document.querySelectorAll("tr[data-batch]")) {
      const batch = data.batches.find((b) => b.id === row.dataset.batch);
      if (!batch) {
        continue;
      }
      for (const part of row.querySelectorAll("[data-batch-part]")) {
        part.textContent = batch[part.dataset.batchPart];
      }
      const meter = row.querySelector("progress");
      meter.max = Math.max(1, batch.size);
      meter.value = batch.done;
    }
  }

  // A batch submitted after the page was drawn: a row like the server's, filled in by
  // show() through textContent (nothing from the server is ever parsed as HTML).
  function batchRow(id) {
    const row = document.createElement("tr");
    row.dataset.batch = id;
    const cell = (part) => {
      const td = document.createElement("td");
      if (part) {
        td.dataset.batchPart = part;
      }
      row.appendChild(td);
      return td;
    };
    const first = cell(null);
    first.textContent = id;
    const provider = document.createElement("div");
    provider.className = "id";
    provider.dataset.batchPart = "provider_id";
    first.appendChild(provider);
    cell("state");
    const meter = cell(null);
    meter.appendChild(document.createElement("progress"));
    meter.appendChild(document.createTextNode(" "));
    const text = document.createElement("span");
    text.dataset.batchPart = "text";
    meter.appendChild(text);
    cell("counts");
    cell("updated");
    return row;
  }

  async function tick() {
    try {
      const answer = await fetch(url, { cache: "no-store", headers: { accept: "application/json" } });
      if (answer.ok) {
        const data = await answer.json();
        show(data);
        document.body.dataset.polled = String(Number(document.body.dataset.polled || 0) + 1);
        if (wasLive && !data.live) {
          // The run settled: the uploads table and the pace chart are drawn anew.
          window.location.reload();
          return;
        }
        wasLive = wasLive || data.live;
      }
    } catch (err) {
      // The server may be restarting: try again at the next tick.
    }
    window.setTimeout(tick, every);
  }

  window.setTimeout(tick, every);
})();

"""The app's two pages, their script and their style, served as they are here.

The pages hold no data: the script fetches it and puts every string on the page with
``textContent``, under a Content-Security-Policy that allows no inline script.
"""

__all__ = ["INDEX", "RUN", "SCRIPT", "STYLE"]

INDEX = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cardmill: documents to cards</title>
<link rel="stylesheet" href="/webapp.css">
<script src="/webapp.js" defer></script>
</head>
<body data-page="index">
<h1>Documents to cards</h1>
<section>
  <h2>New run</h2>
  <p>Markdown, text, HTML or PDF files.</p>
  <p><input type="file" id="files" multiple accept=".md,.markdown,.txt,.text,.html,.htm,.pdf"></p>
  <p><label>Name (optional) <input type="text" id="name" maxlength="200"></label></p>
  <p><button type="button" id="upload">Upload and analyse</button></p>
  <p id="message" role="status"></p>
</section>
<section>
  <h2>Runs</h2>
  <table>
    <thead><tr><th>Run</th><th>Status</th><th>Uploads</th><th>Cards</th><th>Created</th></tr></thead>
    <tbody id="runs"></tbody>
  </table>
</section>
</body>
</html>
"""

RUN = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cardmill: run</title>
<link rel="stylesheet" href="/webapp.css">
<script src="/webapp.js" defer></script>
</head>
<body data-page="run">
<p><a href="/">All runs</a></p>
<h1 id="name">Run</h1>
<p>Status <strong id="status" data-live="status"></strong> <span id="note"></span></p>
<p><progress id="progress" value="0" max="1"></progress></p>
<table class="counters">
  <tr><th>Total</th><td data-live="total"></td></tr>
  <tr><th>Completed</th><td data-live="completed"></td></tr>
  <tr><th>Failed</th><td data-live="failed"></td></tr>
  <tr><th>Pending</th><td data-live="pending"></td></tr>
  <tr><th>Cards</th><td data-live="cards"></td></tr>
</table>
<h2>Uploads</h2>
<table>
  <thead><tr><th>Document</th><th>Status</th><th>Cards</th><th>Reason</th></tr></thead>
  <tbody id="uploads"></tbody>
</table>
<h2>Cards</h2>
<p id="cards-note">The cards appear when the run has finished.</p>
<div id="cards"></div>
</body>
</html>
"""

SCRIPT = """\
// The pages' script. Every string from the server goes in with textContent, never as HTML.
"use strict";

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

async function json(response) {
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// -- the index page: upload files, list runs --------------------------------------------

function base64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function upload() {
  const message = document.getElementById("message");
  const files = [...document.getElementById("files").files];
  if (!files.length) {
    message.textContent = "Pick one or more files first.";
    return;
  }
  message.textContent = `Uploading ${files.length} file(s)…`;
  try {
    const documents = [];
    for (const file of files) documents.push({ name: file.name, data: await base64(file) });
    const name = document.getElementById("name").value.trim() || null;
    const made = await json(
      await fetch("/runs", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name, documents }),
      }),
    );
    location.assign(`/runs/${encodeURIComponent(made.run_id)}/view`);
  } catch (error) {
    message.textContent = `Upload refused: ${error.message}`;
  }
}

async function listRuns() {
  const runs = await json(await fetch("/runs"));
  const body = document.getElementById("runs");
  body.replaceChildren(
    ...runs.reverse().map((run) => {
      const link = el("a", run.name || run.id);
      link.href = `/runs/${encodeURIComponent(run.id)}/view`;
      const name = el("td");
      name.append(link);
      const uploads = `${run.completed} completed, ${run.failed} failed of ${run.total}`;
      const status = el("td", run.status, `status-${run.status}`);
      return row([name, status, uploads, run.cards, run.created_at]);
    }),
  );
}

// -- a run's page: live progress, then the cards ----------------------------------------

function showProgress(now) {
  document.title = `cardmill: ${now.name}`;
  document.getElementById("name").textContent = now.name;
  const status = document.getElementById("status");
  status.textContent = now.status;
  status.className = `status-${now.status}`;
  for (const key of ["total", "completed", "failed", "pending", "cards"]) {
    document.querySelector(`[data-live=${key}]`).textContent = String(now[key]);
  }
  const progress = document.getElementById("progress");
  progress.max = Math.max(now.total, 1);
  progress.value = now.completed + now.failed;
  document.getElementById("uploads").replaceChildren(
    ...now.uploads.map((upload) => {
      const status = el("td", upload.status, `status-${upload.status}`);
      const tr = row([upload.name, status, upload.cards, upload.reason || ""]);
      tr.dataset.upload = upload.id;
      tr.dataset.status = upload.status;
      return tr;
    }),
  );
}

async function showCards(base) {
  const cards = await json(await fetch(`${base}/cards`));
  document.getElementById("cards-note").textContent = `${cards.length} card(s).`;
  document.getElementById("cards").replaceChildren(
    ...cards.map((card) => {
      const box = el("article", null, "card");
      box.append(el("h3", card.title, "card-title"));
      box.append(el("p", `from ${card.upload}`, "from"), el("p", card.body));
      if (card.quote) box.append(el("blockquote", card.quote));
      if (card.tags.length) box.append(el("p", card.tags.join(" · "), "tags"));
      return box;
    }),
  );
}

function followRun() {
  const id = decodeURIComponent(location.pathname.split("/")[2]);
  const base = `/runs/${encodeURIComponent(id)}`;
  const note = document.getElementById("note");
  const source = new EventSource(`${base}/events`);
  source.onmessage = (event) => {
    const now = JSON.parse(event.data);
    note.textContent = "";
    showProgress(now);
    if (now.finished) {
      source.close(); // or EventSource would connect again
      showCards(base).catch((error) => (note.textContent = error.message));
    }
  };
  // The browser connects again by itself (a server restarted mid-run goes on with it).
  source.onerror = () => (note.textContent = "(reconnecting…)");
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "index") {
    document.getElementById("upload").addEventListener("click", upload);
    listRuns().catch((error) => (document.getElementById("message").textContent = error.message));
  } else {
    followRun();
  }
});
"""

STYLE = """\
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0; }
th, td { text-align: left; padding: 0.25rem 0.75rem; border-bottom: 1px solid #ddd; }
progress { width: 20rem; }
.status-PENDING { color: #777; }
.status-LOADING { color: #b65f00; }
.status-COMPLETED { color: #16794a; }
.status-FAILED { color: #b00020; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 0.5rem 1rem; margin: 0.75rem 0; }
.card h3 { margin: 0.25rem 0; }
.card .from, .card .tags { color: #666; font-size: 0.9em; }
.card blockquote { border-left: 3px solid #ccc; margin: 0.5rem 0; padding-left: 0.75rem; }
"""

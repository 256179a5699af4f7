// Task-group page: sort and filter the list in place; apply live updates pushed by the
// server (server-sent events fed by the queue's RabbitMQ events). Text goes in with
// textContent only, never as markup.
"use strict";
(function () {
  const STATES = ["unscheduled", "pending", "running", "completed", "failed", "exception"];
  const RANK = { unscheduled: 0, pending: 1, running: 2, completed: 3, failed: 3, exception: 3 };
  const table = document.getElementById("tasks");
  if (!table) return;
  const groupId = table.dataset.groupId;
  const tbody = table.tBodies[0];
  const rows = new Map();
  for (const tr of tbody.rows) rows.set(tr.dataset.taskId, tr);
  const counts = {};
  for (const s of STATES) counts[s] = 0;
  for (const tr of rows.values()) counts[tr.dataset.state] = (counts[tr.dataset.state] || 0) + 1;
  const nodes = new Map();
  for (const g of document.querySelectorAll("svg.graph g.node")) nodes.set(g.dataset.taskId, g);

  // --- filter -------------------------------------------------------------------------
  const filter = document.getElementById("filter");
  const stateFilter = document.getElementById("state-filter");
  const shown = document.getElementById("shown");
  function applyFilter() {
    const text = filter.value.trim().toLowerCase();
    const state = stateFilter.value;
    let visible = 0;
    for (const tr of rows.values()) {
      const match = (!state || tr.dataset.state === state) &&
        (!text || tr.dataset.name.toLowerCase().includes(text) ||
         tr.dataset.taskId.toLowerCase().includes(text) || tr.dataset.queue.toLowerCase().includes(text));
      tr.hidden = !match;
      if (match) visible++;
    }
    shown.textContent = visible === rows.size ? "" : visible + " shown";
    for (const b of document.querySelectorAll(".count")) b.classList.toggle("active", b.dataset.state === state);
  }
  let filterTimer = 0;
  filter.addEventListener("input", () => { clearTimeout(filterTimer); filterTimer = setTimeout(applyFilter, 120); });
  stateFilter.addEventListener("change", applyFilter);
  for (const b of document.querySelectorAll(".count")) {
    b.addEventListener("click", () => {
      stateFilter.value = stateFilter.value === b.dataset.state ? "" : b.dataset.state;
      applyFilter();
    });
  }

  // --- sort ---------------------------------------------------------------------------
  let sortKey = "name", sortDir = 1;
  const keyOf = {
    state: (tr) => STATES.indexOf(tr.dataset.state),
    name: (tr) => tr.dataset.name.toLowerCase(),
    queue: (tr) => tr.dataset.queue,
    duration: (tr) => (tr.dataset.duration === "" ? -1 : parseFloat(tr.dataset.duration)),
    runs: (tr) => parseInt(tr.dataset.runs, 10),
  };
  function sortRows() {
    const key = keyOf[sortKey];
    const list = Array.from(rows.values()).map((tr) => [key(tr), tr.dataset.taskId, tr]);
    list.sort((a, b) => (a[0] < b[0] ? -sortDir : a[0] > b[0] ? sortDir : a[1] < b[1] ? -1 : 1));
    const fragment = document.createDocumentFragment();
    for (const item of list) fragment.appendChild(item[2]);
    tbody.appendChild(fragment);
  }
  for (const th of table.tHead.rows[0].cells) {
    th.addEventListener("click", () => {
      sortDir = sortKey === th.dataset.sort ? -sortDir : 1;
      sortKey = th.dataset.sort;
      for (const other of table.tHead.rows[0].cells) other.classList.remove("sorted-asc", "sorted-desc");
      th.classList.add(sortDir > 0 ? "sorted-asc" : "sorted-desc");
      sortRows();
    });
  }

  // --- live updates -------------------------------------------------------------------
  function pill(state) {
    const span = document.createElement("span");
    span.className = "pill state-" + state;
    span.textContent = state;
    return span;
  }
  function newRow(update) {
    const tr = document.createElement("tr");
    tr.id = "t-" + update.taskId;
    tr.dataset.taskId = update.taskId;
    tr.dataset.state = "unscheduled";
    tr.dataset.name = update.name || "";
    tr.dataset.queue = update.taskQueueId || "";
    tr.dataset.duration = "";
    tr.dataset.runs = "0";
    const cells = [0, 1, 2, 3, 4].map(() => tr.insertCell());
    cells[0].appendChild(pill("unscheduled"));
    const link = document.createElement("a");
    link.href = "/tasks/" + encodeURIComponent(update.taskId);
    link.textContent = update.name || update.taskId;
    cells[1].appendChild(link);
    cells[2].textContent = update.taskQueueId || "";
    cells[3].className = cells[4].className = "num";
    cells[4].textContent = "0";
    tbody.appendChild(tr);
    rows.set(update.taskId, tr);
    counts.unscheduled++;
    return tr;
  }
  function apply(update) {
    if (!update.taskId || !update.state) return;
    const tr = rows.get(update.taskId) || newRow(update);
    const runs = update.runs || 0;
    const haveRuns = parseInt(tr.dataset.runs, 10);
    const old = tr.dataset.state;
    // events may arrive out of order: never step back within a run
    if (runs < haveRuns || (runs === haveRuns && RANK[update.state] < RANK[old])) return;
    if (update.name && !tr.dataset.name) tr.dataset.name = update.name;
    tr.dataset.runs = String(runs);
    tr.cells[4].textContent = String(runs);
    let duration = update.duration;
    if (duration === undefined && update.started && update.resolved) {
      duration = Math.round((Date.parse(update.resolved) - Date.parse(update.started)) / 100) / 10;
    }
    if (duration !== undefined && duration !== null) {
      tr.dataset.duration = String(duration);
      tr.cells[3].textContent = duration.toFixed(1) + " s";
    }
    if (old !== update.state) {
      tr.dataset.state = update.state;
      tr.cells[0].replaceChildren(pill(update.state));
      counts[old]--;
      counts[update.state]++;
      const node = nodes.get(update.taskId);
      if (node) node.setAttribute("class", "node state-" + update.state);
    }
  }
  function redrawCounts() {
    const total = rows.size;
    for (const s of STATES) {
      document.getElementById("count-" + s).textContent = String(counts[s]);
      const bar = document.querySelector('.progress .bar[data-state="' + s + '"]');
      if (bar) bar.style.width = (total ? (100 * counts[s]) / total : 0) + "%";
    }
    document.getElementById("count-total").textContent = String(total);
  }
  const live = document.getElementById("live");
  if (!window.EventSource) return;
  // The first connection adopts the inbox the server opened before it listed the group;
  // EventSource's reconnects reuse the URL, find the token spent, and get a snapshot.
  const source = new EventSource("/tasks/groups/" + encodeURIComponent(groupId) +
    "/events?token=" + encodeURIComponent(table.dataset.liveToken || ""));
  source.addEventListener("ready", () => { document.body.dataset.liveReady = "1"; });
  source.addEventListener("open", () => { live.classList.remove("off"); live.title = "live updates on"; });
  source.addEventListener("error", () => { live.classList.add("off"); live.title = "reconnecting"; });
  source.addEventListener("snapshot", (event) => {
    for (const update of JSON.parse(event.data)) apply(update);
    redrawCounts();
    if (stateFilter.value || filter.value) applyFilter();
    document.body.dataset.liveReady = "1";
  });
  source.addEventListener("task", (event) => {
    apply(JSON.parse(event.data));
    redrawCounts();
    if (stateFilter.value) applyFilter();
  });
})();

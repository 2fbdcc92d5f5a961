// The taskq dashboard: reads the HTTP API, follows /api/events for live updates.
"use strict";

const STATUSES = ["pending", "scheduled", "running", "paused", "completed", "failed"];
const PAGE_SIZE = 25;
const CHART_SECONDS = 300;
// At most one re-read of the page's lists per this many ms, however busy the stream.
const REFRESH_MS = 500;

const state = { skip: 0, filters: {}, selected: null, tasks: [], workers: [], running: {} };
const finished = { completed: new Map(), failed: new Map() };
const $ = (selector) => document.querySelector(selector);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function utc(text) { return text ? new Date(text + "Z") : null; }
function ago(text) {
  const time = utc(text);
  if (!time) return "never";
  const seconds = Math.max(0, Math.round((Date.now() - time) / 1000));
  return seconds < 120 ? `${seconds} s ago` : `${Math.round(seconds / 60)} min ago`;
}

async function api(method, path) {
  const response = await fetch(path, { method, headers: { Accept: "application/json" } });
  // The token's cookie is gone or no longer valid: ask for the token again.
  if (response.status === 401) window.location.assign("/login");
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

function say(text) { $("#message").textContent = text; }

// --- counts and chart ---

async function loadStats() {
  const stats = await api("GET", "/api/stats");
  const counts = $("#counts");
  counts.replaceChildren(...STATUSES.map((status) => {
    const box = el("div", { className: "count", title: `show ${status} tasks` },
      el("b", { textContent: stats.by_status[status] }), status);
    box.dataset.status = status;
    box.onclick = () => { $("#filters").status.value = status; applyFilters(); };
    return box;
  }));
}

function noteFinished(succeeded) {
  const second = Math.floor(Date.now() / 1000);
  const series = succeeded ? finished.completed : finished.failed;
  series.set(second, (series.get(second) || 0) + 1);
}

function drawChart() {
  const canvas = $("#chart");
  const context = canvas.getContext("2d");
  const now = Math.floor(Date.now() / 1000);
  const points = (series) => Array.from({ length: CHART_SECONDS },
    (_, i) => series.get(now - CHART_SECONDS + 1 + i) || 0);
  const ok = points(finished.completed), bad = points(finished.failed);
  const top = Math.max(1, ...ok, ...bad);
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = "#888";
  context.fillText(`${top}/s`, 2, 10);
  for (const [values, color] of [[ok, "#2a7d2a"], [bad, "#c33"]]) {
    context.strokeStyle = color;
    context.beginPath();
    values.forEach((value, i) => {
      const x = (i / (CHART_SECONDS - 1)) * canvas.width;
      const y = canvas.height - 2 - (value / top) * (canvas.height - 14);
      if (i === 0) context.moveTo(x, y); else context.lineTo(x, y);
    });
    context.stroke();
  }
  const recent = (values) => values.slice(-60).reduce((a, b) => a + b, 0);
  const done = recent(ok), failed = recent(bad);
  const rate = done + failed ? Math.round((100 * failed) / (done + failed)) : 0;
  $("#rates").textContent = `last minute: ${done + failed} finished (${((done + failed) / 60).toFixed(2)}/s), ${rate}% failed`;
  for (const series of [finished.completed, finished.failed]) {
    for (const second of series.keys()) if (second <= now - CHART_SECONDS) series.delete(second);
  }
}

// --- tasks ---

function query() {
  const params = new URLSearchParams({ skip: state.skip, limit: PAGE_SIZE, order: "desc" });
  for (const [key, value] of Object.entries(state.filters)) if (value) params.set(key, value);
  return params;
}

async function loadTasks() {
  state.tasks = await api("GET", `/api/tasks/?${query()}`);
  $("#tasks tbody").replaceChildren(...state.tasks.map(taskRow));
  $("#page").textContent = `${state.skip + 1}–${state.skip + state.tasks.length}`;
  $("#prev").disabled = state.skip === 0;
  $("#next").disabled = state.tasks.length < PAGE_SIZE;
}

function actionsFor(task) {
  const buttons = [];
  const add = (label, run) => {
    const button = el("button", { textContent: label, type: "button" });
    button.dataset.action = label.toLowerCase();
    button.onclick = (event) => { event.stopPropagation(); act(run, task.id); };
    buttons.push(button);
  };
  if (["pending", "scheduled", "running"].includes(task.status)) add("Pause", (id) => api("PATCH", `/api/tasks/${id}/pause`));
  if (task.status === "paused") add("Resume", (id) => api("PATCH", `/api/tasks/${id}/resume`));
  if (task.status === "failed") add("Retry", (id) => api("POST", `/api/tasks/${id}/retry`));
  add("Delete", (id) => (confirm(`Delete task ${id}?`) ? api("DELETE", `/api/tasks/${id}`) : null));
  return buttons;
}

async function act(run, id) {
  try {
    say("");
    await run(id);
    if (state.selected === id) await loadDetail(id);
    scheduleRefresh();
  } catch (error) {
    say(`task ${id}: ${error.message}`);
  }
}

function statusBadge(status) { return el("span", { className: `status ${status}`, textContent: status }); }

function taskRow(task) {
  const row = el("tr", {},
    el("td", { textContent: task.id }), el("td", { textContent: task.name }),
    el("td", { textContent: task.priority }), el("td", {}, statusBadge(task.status)),
    el("td", { textContent: task.worker_id ?? "" }), el("td", { textContent: ago(task.updated_at) }),
    el("td", {}, ...actionsFor(task)));
  row.dataset.id = task.id;
  row.dataset.status = task.status;
  row.onclick = () => loadDetail(task.id);
  return row;
}

function applyFilters() {
  const form = $("#filters");
  state.filters = { status: form.status.value, name: form.name.value.trim(), priority: form.priority.value };
  state.skip = 0;
  loadTasks().catch((error) => say(error.message));
}

// --- one task ---

async function loadDetail(id) {
  let task;
  try {
    task = await api("GET", `/api/tasks/${id}`);
  } catch (error) {
    say(`task ${id}: ${error.message}`);
    $("#detail").hidden = true;
    state.selected = null;
    return;
  }
  state.selected = id;
  $("#detail").hidden = false;
  $("#detail-id").textContent = `${task.id} · ${task.name}`;
  $("#detail-actions").replaceChildren(statusBadge(task.status), " ", ...actionsFor(task));
  $("#detail-progress").replaceChildren(...progressOf(task));
  const fields = Object.entries(task).flatMap(([key, value]) => [
    el("dt", { textContent: key }),
    el("dd", { textContent: typeof value === "object" && value !== null ? JSON.stringify(value, null, 2) : String(value) }),
  ]);
  $("#detail-fields").replaceChildren(...fields);
}

function progressOf(task) {
  const parts = [];
  if (task.attempts !== undefined) parts.push(`attempt ${task.attempts} of ${task.max_attempts ?? "?"} `);
  const value = typeof task.progress === "number" ? task.progress : task.progress?.fraction;
  if (typeof value === "number") {
    const fraction = value > 1 ? value / 100 : value;
    parts.push(el("progress", { max: 1, value: fraction }), ` ${Math.round(fraction * 100)}%`);
  }
  return parts;
}

// --- workers ---

async function loadWorkers() {
  const [workers, running] = await Promise.all([
    api("GET", "/api/workers/"), api("GET", "/api/tasks/?status=running&limit=1000"),
  ]);
  state.workers = workers;
  state.running = Object.fromEntries(running.map((task) => [task.worker_id, task]));
  drawWorkers();
}

function drawWorkers() {
  $("#workers tbody").replaceChildren(...state.workers.map((worker) => {
    const task = state.running[worker.id];
    const row = el("tr", {},
      el("td", { textContent: worker.id }), el("td", { textContent: worker.name }),
      el("td", {}, statusBadge(task ? "running" : worker.status)),
      el("td", { textContent: task ? `${task.id} ${task.name}` : "" }),
      el("td", { textContent: ago(worker.last_heartbeat) }));
    row.dataset.id = worker.id;
    if (task) row.onclick = () => loadDetail(task.id);
    return row;
  }));
}

// --- live updates ---

let refreshTimer = null;
function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    try {
      await Promise.all([loadTasks(), loadStats(), loadWorkers()]);
      if (state.selected !== null) await loadDetail(state.selected);
    } catch (error) {
      say(error.message);
    }
  }, REFRESH_MS);
}

function onChange(change) {
  if (change.kind === "task.finished") noteFinished(change.detail.succeeded);
  const shown = change.task && document.querySelector(`#tasks tr[data-id="${change.task.id}"]`);
  if (shown) shown.replaceWith(taskRow(change.task));
  if (change.kind === "worker.updated" && change.worker) {
    const index = state.workers.findIndex((worker) => worker.id === change.worker.id);
    if (index >= 0) { state.workers[index] = change.worker; drawWorkers(); return; }
  }
  scheduleRefresh();
}

function follow() {
  const source = new EventSource("/api/events");
  source.onopen = () => { $("#live").textContent = "live"; $("#live").className = "badge"; };
  source.onerror = () => { $("#live").textContent = "reconnecting"; $("#live").className = "badge off"; };
  source.onmessage = (message) => onChange(JSON.parse(message.data));
}

function start() {
  const select = $("#filters").status;
  for (const status of STATUSES) select.append(el("option", { value: status, textContent: status }));
  $("#filters").onsubmit = (event) => { event.preventDefault(); applyFilters(); };
  $("#prev").onclick = () => { state.skip = Math.max(0, state.skip - PAGE_SIZE); loadTasks(); };
  $("#next").onclick = () => { state.skip += PAGE_SIZE; loadTasks(); };
  $("#detail-close").onclick = () => { $("#detail").hidden = true; state.selected = null; };
  follow();
  scheduleRefresh();
  setInterval(() => { drawChart(); drawWorkers(); }, 1000);
  drawChart();
}

start();

// The mbroker dashboard: hash-routed views over the JSON API, polled every few seconds.
// Everything that comes from the broker is put on the page with textContent.

import { api, ApiError, query, segment } from "./api.js";
import { LineChart } from "./chart.js";
import { PagedTable, pageOf, table } from "./table.js";

const params = new URLSearchParams(location.search);
// how often the page asks the broker (?poll=MS, at least 250 ms)
const POLL_MS = Math.max(250, Number(params.get("poll")) || 3000);
const PAGE_SIZE = 50;

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ helpers

function el(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (className) e.className = className;
  return e;
}

function button(label, onClick, className) {
  const b = el("button", label, className);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

function queueLink(name) {
  const a = el("a", name, "name");
  a.href = "#/queue/" + encodeURIComponent(name);
  return a;
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60), s = Math.floor(seconds % 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

// what the last action said stays up a few seconds
let statusUntil = 0;

function status(text, error = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", error);
  statusUntil = text ? Date.now() + 6000 : 0;
}

function failed(e) {
  if (e instanceof ApiError && e.status === 401) {
    status("Not logged in: reload the page to log in", true);
  } else if (e instanceof ApiError) {
    status(`${e.code}: ${e.reason}`, true);
  } else {
    status("The broker does not answer", true);
  }
}

// A card list (<dl>): `facts` is [[label, value], ...]; values replaced in place.
function cards(dl, facts) {
  if (dl.children.length !== facts.length) {
    dl.replaceChildren(...facts.map(([label]) => {
      const div = el("div");
      div.append(el("dt", label), el("dd"));
      return div;
    }));
  }
  facts.forEach(([label, value], i) => {
    const div = dl.children[i];
    div.firstChild.textContent = label;
    div.lastChild.textContent = String(value);
  });
}

// A confirmation in the page's <dialog>: resolves true when OK is pressed.
function confirmAction(text, okLabel) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    const done = (answer) => {
      $("confirm-ok").removeEventListener("click", ok);
      $("confirm-cancel").removeEventListener("click", cancel);
      dialog.removeEventListener("cancel", cancel);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const ok = () => done(true);
    const cancel = () => done(false);
    $("confirm-ok").addEventListener("click", ok);
    $("confirm-cancel").addEventListener("click", cancel);
    dialog.addEventListener("cancel", cancel);
    dialog.showModal();
  });
}

// --------------------------------------------------------------- actions

async function purgeQueue(name) {
  if (!(await confirmAction(`Purge queue “${name}”? Its ready messages are dropped.`, "Purge"))) return;
  try {
    const answer = await api("DELETE", `queues/${segment(name)}/contents`);
    status(`Purged ${answer.purged} message(s) from ${name}`);
  } catch (e) {
    failed(e);
  }
  await refreshNow();
  if (currentQueue === name) await peek();
}

async function deleteQueue(name) {
  if (!(await confirmAction(`Delete queue “${name}” and every message in it?`, "Delete"))) return;
  try {
    const answer = await api("DELETE", `queues/${segment(name)}`);
    status(`Deleted ${name} (${answer.dropped} message(s) dropped)`);
    if (currentQueue === name) {
      currentQueue = null;
      location.hash = "#/queues";
      return;
    }
  } catch (e) {
    failed(e);
  }
  await refreshNow();
}

async function closeConnection(c) {
  if (!(await confirmAction(`Close connection ${c.id} from ${c.peer}?`, "Close"))) return;
  try {
    await api("DELETE", `connections/${c.id}`);
    status(`Closed connection ${c.id}`);
  } catch (e) {
    failed(e);
  }
  await refreshNow();
}

async function createQueue(event) {
  event.preventDefault();
  const name = $("new-queue-name").value.trim();
  if (!name) return;
  try {
    const answer = await api("PUT", `queues/${segment(name)}`, { durable: $("new-queue-durable").checked });
    status(answer ? `Created ${name}` : `${name} exists already`);
    $("new-queue-name").value = "";
  } catch (e) {
    failed(e);
  }
  await refreshNow();
}

// ---------------------------------------------------------------- tables

const queueColumns = [
  { key: "name", label: "Name", sortable: true, render: (q) => queueLink(q.name) },
  { key: "messages_ready", label: "Ready", sortable: true, numeric: true },
  { key: "messages_unacknowledged", label: "Unacked", sortable: true, numeric: true },
  { key: "messages_delayed", label: "Delayed", numeric: true },
  { key: "messages", label: "Total", sortable: true, numeric: true },
  { key: "message_bytes_ready", label: "Bytes ready", sortable: true, numeric: true,
    render: (q) => bytes(q.message_bytes_ready) },
  { key: "consumers", label: "Consumers", sortable: true, numeric: true },
  { key: "durable", label: "Durable", render: (q) => (q.durable ? "yes" : "no") },
  { key: "actions", label: "", render: (q) => {
    const span = el("span", null, "toolbar");
    span.append(button("Purge", () => purgeQueue(q.name)), button("Delete", () => deleteQueue(q.name), "danger"));
    return span;
  } },
];

const exchangeColumns = [
  { key: "name", label: "Name", sortable: true, render: (e) => el("span", e.name || "(default)", "name") },
  { key: "type", label: "Type", sortable: true },
  { key: "durable", label: "Durable", render: (e) => (e.durable ? "yes" : "no") },
  { key: "bindings", label: "Bindings", sortable: true, numeric: true },
  { key: "publish_in", label: "Published", numeric: true, render: (e) => e.message_stats.publish_in },
  { key: "routed", label: "Routed", numeric: true, render: (e) => e.message_stats.routed },
  { key: "unroutable", label: "Unroutable", numeric: true, render: (e) => e.message_stats.unroutable },
];

const connectionColumns = [
  { key: "id", label: "Id", sortable: true, numeric: true },
  { key: "peer", label: "Peer", sortable: true },
  { key: "user", label: "User", sortable: true },
  { key: "connected_at", label: "Since", sortable: true,
    render: (c) => new Date(c.connected_at).toLocaleString() },
  { key: "subscriptions", label: "Subscriptions", sortable: true, numeric: true },
  { key: "messages_unacknowledged", label: "Unacked", sortable: true, numeric: true },
  { key: "recv_oct", label: "Bytes in", sortable: true, numeric: true, render: (c) => bytes(c.recv_oct) },
  { key: "send_oct", label: "Bytes out", sortable: true, numeric: true, render: (c) => bytes(c.send_oct) },
  { key: "actions", label: "", render: (c) => button("Close", () => closeConnection(c), "danger") },
];

function serverPages(kind) {
  return ({ page, pageSize, sort, reverse, name }) =>
    api("GET", kind + query({ page, page_size: pageSize, sort, sort_reverse: reverse ? "true" : "", name }));
}

const tables = {
  queues: new PagedTable($("queues-table"), {
    columns: queueColumns, fetchPage: serverPages("queues"), pageSize: PAGE_SIZE, what: "queues", onError: failed,
  }),
  exchanges: new PagedTable($("exchanges-table"), {
    columns: exchangeColumns, fetchPage: serverPages("exchanges"), pageSize: PAGE_SIZE, what: "exchanges",
    onError: failed,
  }),
  connections: new PagedTable($("connections-table"), {
    columns: connectionColumns, sort: "id", pageSize: PAGE_SIZE, what: "connections (peer or user)",
    onError: failed,
    fetchPage: async (state) =>
      pageOf(await api("GET", "connections"), state, (c) => `${c.peer} ${c.user ?? ""}`),
  }),
};

// --------------------------------------------------------------- overview

const rates = new LineChart($("chart-rates"), $("legend-rates"), ["published", "delivered", "acked"]);
const depths = new LineChart($("chart-depths"), $("legend-depths"), ["ready", "unacked", "delayed"]);
let lastCounts = null;

async function refreshOverview() {
  const o = await api("GET", "overview");
  const now = performance.now() / 1000;
  const ms = o.message_stats, totals = o.object_totals, q = o.queue_totals;
  $("version").textContent = `${o.product_name} ${o.product_version}`;
  const counts = [ms.publish, ms.deliver, ms.ack];
  if (lastCounts && counts.every((c, i) => c >= lastCounts.counts[i])) {
    const span = now - lastCounts.t;
    if (span > 0) rates.push(now, counts.map((c, i) => (c - lastCounts.counts[i]) / span));
  } else if (lastCounts) {
    rates.clear(); // the broker restarted
  }
  lastCounts = { t: now, counts };
  depths.push(now, [q.messages_ready, q.messages_unacknowledged, q.messages_delayed]);
  const oneMinute = (d) => (d && d.rate_1m !== undefined ? d.rate_1m.toFixed(1) + "/s" : "");
  cards($("totals"), [
    ["Uptime", duration(o.uptime)],
    ["Connections", totals.connections],
    ["Queues", totals.queues],
    ["Exchanges", totals.exchanges],
    ["Consumers", totals.consumers],
    ["Ready", q.messages_ready],
    ["Unacked", q.messages_unacknowledged],
    ["Published (1 min)", oneMinute(ms.publish_details)],
    ["Delivered (1 min)", oneMinute(ms.deliver_details)],
    ["Memory", bytes(o.memory.rss)],
    ["Store on disk", o.store ? bytes(o.store.disk_bytes) : "memory only"],
  ]);
  if (view === "overview") {
    const deepest = await api("GET", "queues" + query({ page: 1, page_size: 10, sort: "messages", sort_reverse: "true" }));
    $("deepest").replaceChildren(table(queueColumns.filter((c) => c.key !== "actions"), deepest.items, "no queues"));
  }
}

// ------------------------------------------------------------- one queue

let currentQueue = null;
const queueChart = new LineChart($("chart-queue"), $("legend-queue"), ["ready", "unacked", "delayed"]);

function openQueue(name) {
  if (currentQueue !== name) {
    currentQueue = name;
    queueChart.clear();
    $("queue-name").textContent = name;
    $("queue-facts").replaceChildren();
    $("queue-consumers").replaceChildren();
    $("queue-bindings").replaceChildren();
    $("queue-messages").replaceChildren();
    peek();
  }
}

async function refreshQueue() {
  const name = currentQueue;
  if (name === null) return;
  let q;
  try {
    q = await api("GET", `queues/${segment(name)}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404 && currentQueue === name) {
      currentQueue = null;
      status(`Queue ${name} is gone`, true);
      location.hash = "#/queues";
      return;
    }
    throw e;
  }
  if (currentQueue !== name) return;
  queueChart.push(performance.now() / 1000, [q.messages_ready, q.messages_unacknowledged, q.messages_delayed]);
  const a = q.arguments, st = q.message_stats;
  cards($("queue-facts"), [
    ["Ready", q.messages_ready],
    ["Unacked", q.messages_unacknowledged],
    ["Delayed", q.messages_delayed],
    ["Bytes ready", bytes(q.message_bytes_ready)],
    ["Consumers", q.consumers],
    ["Durable", q.durable ? "yes" : "no"],
    ["Private", q.private ? `yes (${q.owner ?? ""})` : "no"],
    ["Max length", a.max_length ?? "—"],
    ["Overflow", a.overflow],
    ["TTL (ms)", a.ttl ?? "—"],
    ["Dead letter", a.dead_letter ?? "—"],
    ["Published", st.publish],
    ["Delivered", st.deliver],
    ["Acked", st.ack],
    ["Redelivered", st.redeliver],
    ["Dead-lettered", st.dead_lettered],
  ]);
  $("queue-consumers").replaceChildren(table([
    { key: "connection", label: "Connection", numeric: true },
    { key: "sid", label: "Subscription" },
    { key: "ack", label: "Ack" },
    { key: "prefetch", label: "Prefetch", numeric: true },
    { key: "in_flight", label: "In flight", numeric: true },
    { key: "delivered", label: "Delivered", numeric: true },
    { key: "active", label: "Active", render: (c) => (c.active ? "yes" : "no") },
  ], q.consumer_details, "no consumers"));
  $("queue-bindings").replaceChildren(table([
    { key: "source", label: "Exchange", render: (b) => el("span", b.source || "(default)", "name") },
    { key: "routing_key", label: "Routing key", render: (b) => el("span", b.routing_key, "name") },
  ], q.bindings, "no bindings"));
}

// A message's id, priority and headers, one per line; a value's control characters,
// quotes and backslashes escaped as in JSON, base64 values marked (shown as text only).
function propertiesText(p) {
  const lines = [];
  if (p.message_id !== undefined) lines.push(`id: ${p.message_id}`);
  if (p.priority !== undefined) lines.push(`priority: ${p.priority}`);
  for (const [name, value] of Object.entries(p.headers || {})) {
    lines.push(`${name}: ${JSON.stringify(value).slice(1, -1)}`);
  }
  for (const [name, value] of Object.entries(p.headers_base64 || {})) {
    lines.push(`${name} (base64): ${value}`);
  }
  return lines.join("\n");
}

async function peek() {
  const name = currentQueue;
  if (name === null) return;
  try {
    const messages = await api("GET", `queues/${segment(name)}/messages?count=20&truncate=4096`);
    if (currentQueue !== name) return;
    messages.forEach((m, i) => { m.n = i + 1; });
    $("queue-messages").replaceChildren(table([
      { key: "n", label: "#", numeric: true },
      { key: "exchange", label: "Exchange", render: (m) => el("span", m.exchange || "(default)", "name") },
      { key: "routing_key", label: "Routing key", render: (m) => el("span", m.routing_key, "name") },
      { key: "deliveries", label: "Deliveries", numeric: true },
      { key: "payload_bytes", label: "Bytes", numeric: true },
      { key: "properties", label: "Properties", render: (m) => el("pre", propertiesText(m.properties || {}), "properties") },
      { key: "payload", label: "Payload", render: (m) => {
        const pre = el("pre", m.payload, "payload");
        if (m.payload_encoding === "base64") pre.title = "base64 (not UTF-8)";
        return pre;
      } },
    ], messages, "no ready messages"));
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) failed(e);
  }
}

// ---------------------------------------------------------------- routing

let view = "overview";

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  let name = null;
  if (hash.startsWith("/queue/")) {
    try {
      name = decodeURIComponent(hash.slice("/queue/".length));
    } catch (e) {
      name = null;
    }
  }
  view = name !== null ? "queue" : ({ "/queues": "queues", "/exchanges": "exchanges",
    "/connections": "connections" })[hash] || "overview";
  if (name === null) currentQueue = null;
  for (const section of document.querySelectorAll("section.view")) {
    section.hidden = section.id !== "view-" + view;
  }
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("current", a.dataset.view === (view === "queue" ? "queues" : view));
  }
  if (name !== null) openQueue(name);
  refreshNow();
}

// ---------------------------------------------------------------- polling

let timer = 0;
let pending = null;

async function refresh() {
  try {
    await refreshOverview();
    if (view in tables) await tables[view].refresh();
    if (view === "queue") await refreshQueue();
    if (Date.now() > statusUntil) status("");
    document.body.dataset.refreshed = String(Date.now());
  } catch (e) {
    failed(e);
  }
}

// Refresh now (after an action or a change of view: after the refresh under way),
// then every POLL_MS, or less often when the broker is slow to answer (10,000 queues):
// the page waits at least ten times as long as a refresh took.
function refreshNow() {
  clearTimeout(timer);
  let took = 0;
  const run = (pending || Promise.resolve()).then(async () => {
    const started = performance.now();
    await refresh();
    took = performance.now() - started;
  }).finally(() => {
    if (pending === run) {
      pending = null;
      clearTimeout(timer);
      timer = setTimeout(refreshNow, Math.max(POLL_MS, 10 * took));
    }
  });
  pending = run;
  return run;
}

$("create-queue").addEventListener("submit", createQueue);
$("queue-purge").addEventListener("click", () => currentQueue !== null && purgeQueue(currentQueue));
$("queue-delete").addEventListener("click", () => currentQueue !== null && deleteQueue(currentQueue));
$("queue-peek").addEventListener("click", peek);
window.addEventListener("hashchange", route);
window.addEventListener("resize", () => [rates, depths, queueChart].forEach((c) => c.draw()));
route();

"use strict";
// The Cairn console: volumes and snapshots (live progress, lineage), zones
// and chunk nodes, space saved by deduplication, recent errors. It reads
// the EC2 API (signed with the user's keys, see sigv4.js) and the gateway's
// operator endpoints, and refreshes itself.

const REFRESH_MS = 700;
const MAX_ERRORS = 20;
const $ = (id) => document.getElementById(id);

const state = { config: null, errors: [], seenErrors: new Set(), timer: null, finished: new Map() };

function keys() {
  const accessKey = localStorage.getItem("cairn.accessKey");
  const secretKey = localStorage.getItem("cairn.secretKey");
  return accessKey && secretKey ? { accessKey, secretKey } : null;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-") || k === "id" || k === "title") e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function noteError(source, message) {
  const key = `${source}|${message}`;
  if (state.seenErrors.has(key)) return;
  state.seenErrors.add(key);
  state.errors.unshift({ at: new Date(), source, message });
  state.errors.length = Math.min(state.errors.length, MAX_ERRORS);
}

// One EC2 Query call; the parsed XML document, or an Error "Code: Message".
async function ec2(action, params = {}) {
  const k = keys();
  const body = new URLSearchParams({ Action: action, Version: "2016-11-15", ...params }).toString();
  const headers = await sigv4.signEc2(body, {
    ...k, region: state.config.region, host: location.host, now: new Date(),
  });
  const res = await fetch("/", { method: "POST", headers, body });
  const doc = new DOMParser().parseFromString(await res.text(), "application/xml");
  if (!res.ok) {
    const code = doc.querySelector("Error > Code")?.textContent ?? `HTTP ${res.status}`;
    const message = doc.querySelector("Error > Message")?.textContent ?? "";
    throw new Error(`${action}: ${code}: ${message}`);
  }
  return doc;
}

// Every item of `set` over all pages.
async function describe(action, set) {
  const items = [];
  let token = "";
  do {
    const doc = await ec2(action, token ? { NextToken: token } : {});
    const list = doc.documentElement.querySelector(`:scope > ${set}`);
    if (list) items.push(...list.querySelectorAll(":scope > item"));
    token = doc.documentElement.querySelector(":scope > nextToken")?.textContent ?? "";
  } while (token);
  return items;
}

const text = (item, name) => item.querySelector(`:scope > ${name}`)?.textContent ?? "";
function tag(item, key) {
  for (const t of item.querySelectorAll(":scope > tagSet > item")) {
    if (text(t, "key") === key) return text(t, "value");
  }
  return "";
}

async function operator(path) {
  const res = await fetch(path);
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function bar(percent, kind) {
  return el("div", { class: `bar ${kind}` }, el("div"), el("span", {}, `${percent}%`));
}

function setBar(b, percent) {
  b.firstChild.style.width = `${percent}%`;
}

function renderSnapshots(snaps, live) {
  const body = $("snapshots").tBodies[0];
  body.replaceChildren();
  for (const s of snaps) {
    const l = live.get(s.id);
    const percent = s.state === "completed" ? 100 : Math.max(s.progress, Math.min(l?.percent ?? 0, 99));
    const b = bar(percent, s.state);
    setBar(b, percent);
    const stateCell = el("td", { class: `state-${s.state}` }, s.state);
    if (s.message) stateCell.title = s.message;
    body.append(el("tr", { id: `row-${s.id}`, "data-state": s.state, "data-progress": String(percent) },
      el("td", { class: "mono" }, s.id), el("td", { class: "mono" }, s.volume), stateCell,
      el("td", {}, b), el("td", {}, `${s.size} GiB`),
      el("td", {}, l ? bytes(l.bytes_sent) : "–"), el("td", {}, s.start), el("td", {}, s.description)));
  }
}

function renderVolumes(vols, snaps) {
  const body = $("volumes").tBodies[0];
  body.replaceChildren();
  for (const v of vols) {
    const chain = snaps.filter((s) => s.volume === v.id)
      .sort((a, b) => a.start.localeCompare(b.start));
    const lineage = el("td", { class: "mono" });
    chain.forEach((s, i) => {
      if (i > 0) lineage.append(" → ");
      lineage.append(el("span", { class: `state-${s.state}`, title: s.state }, s.id));
    });
    if (!chain.length) lineage.append("no snapshots");
    body.append(el("tr", { id: `row-${v.id}`, "data-state": v.state },
      el("td", { class: "mono" }, v.id), el("td", {}, v.name), el("td", {}, v.zone),
      el("td", {}, `${v.size} GiB`), el("td", { class: `state-${v.state}` }, v.state),
      el("td", {}, v.type), lineage));
  }
}

function renderZones(nodes) {
  // Availability zones first, then Outposts (named with their anchor zone).
  const byZone = new Map();
  for (const n of nodes) {
    if (n.state === "removed") continue;
    const zone = n.outpost ? `Outpost ${n.outpost} (${n.az})` : n.az;
    if (!byZone.has(zone)) byZone.set(zone, { outpost: Boolean(n.outpost), list: [] });
    byZone.get(zone).list.push(n);
  }
  const order = ([a, x], [b, y]) => (x.outpost - y.outpost) || (a < b ? -1 : a > b ? 1 : 0);
  const out = $("zones");
  out.replaceChildren();
  for (const [zone, { list }] of [...byZone].sort(order)) {
    const t = el("table", {}, el("thead", {}, el("tr", {},
      el("th", {}, "Node"), el("th", {}, "State"), el("th", {}, "Chunks"),
      el("th", {}, "Bytes"), el("th", {}, "Free disk"))));
    const tb = el("tbody");
    for (const n of list) {
      tb.append(el("tr", { id: `node-${n.node_id}`, "data-state": n.state },
        el("td", { class: "mono" }, n.node_id), el("td", { class: `state-${n.state}` }, n.state),
        el("td", {}, n.chunks ?? "–"), el("td", {}, bytes(n.bytes)), el("td", {}, bytes(n.disk_free_bytes))));
    }
    t.append(tb);
    out.append(el("div", { class: "zone" }, el("h3", {}, zone), t));
  }
}

function renderSummary(vols, snaps, nodes) {
  $("n-volumes").textContent = vols.length;
  $("n-snapshots").textContent = snaps.length;
  const logical = snaps.filter((s) => s.state === "completed").reduce((a, s) => a + s.full, 0);
  const rf = Math.max(1, state.config.replication_factor || 1);
  const stored = nodes.reduce((a, n) => a + (n.bytes ?? 0), 0) / rf;
  $("logical").textContent = bytes(logical);
  $("stored").textContent = bytes(stored);
  const saved = Math.max(0, logical - stored);
  $("saved").textContent = logical > 0 ? `${bytes(saved)} (${Math.round((100 * saved) / logical)}%)` : "0 B";
}

function renderVerdict(health, nodes) {
  const v = $("verdict");
  const reasons = [];
  if (!health || health.status !== "ok") reasons.push(health?.error ?? "the metadata group does not answer");
  for (const n of nodes) if (n.state === "down") reasons.push(`${n.node_id} is down`);
  const verdict = !health || health.status !== "ok" ? "unavailable" : reasons.length ? "degraded" : "healthy";
  v.className = `verdict ${verdict}`;
  v.textContent = reasons.length ? `${verdict}: ${reasons.join(", ")}` : verdict;
  for (const w of health?.workers ?? []) {
    if (w.last_error && w.consecutive_errors > 0) noteError(`worker ${w.name}`, w.last_error);
  }
}

function renderErrors() {
  const ul = $("errors");
  ul.replaceChildren();
  if (!state.errors.length) ul.append(el("li", { class: "none" }, "none"));
  for (const e of state.errors) {
    ul.append(el("li", {}, `${e.at.toLocaleTimeString()} ${e.source}: ${e.message}`));
  }
}

async function refresh() {
  try {
    const [volItems, snapItems, nodeList, health] = await Promise.all([
      describe("DescribeVolumes", "volumeSet"),
      describe("DescribeSnapshots", "snapshotSet"),
      operator("/_cairn/nodes").catch((e) => { noteError("nodes", e.message); return { nodes: [] }; }),
      fetch("/_cairn/health").then((r) => r.json()).catch(() => null),
    ]);
    const vols = volItems.map((i) => ({
      id: text(i, "volumeId"), name: tag(i, "Name"), zone: text(i, "availabilityZone"),
      size: Number(text(i, "size")), state: text(i, "status"), type: text(i, "volumeType"),
    })).sort((a, b) => a.id.localeCompare(b.id));
    const snaps = snapItems.map((i) => ({
      id: text(i, "snapshotId"), volume: text(i, "volumeId"), state: text(i, "status"),
      progress: parseInt(text(i, "progress"), 10) || 0, size: Number(text(i, "volumeSize")),
      start: text(i, "startTime"), description: text(i, "description"),
      message: text(i, "statusMessage"), full: Number(text(i, "fullSnapshotSizeInBytes")) || 0,
    })).sort((a, b) => b.start.localeCompare(a.start));
    for (const s of snaps) if (s.state === "error") noteError(s.id, s.message || "error");
    // Live figures of running copies; a finished copy's totals are asked
    // for once and kept (null: this gateway did not follow it).
    const live = new Map();
    await Promise.all(snaps.filter((s) => s.state === "pending" || !state.finished.has(s.id))
      .map(async (s) => {
        const p = await operator(`/_cairn/snapshots/${s.id}/progress`).catch(() => null);
        if (p?.live) live.set(s.id, p.live);
        if (p && p.state !== "pending") state.finished.set(s.id, p.live?.done ? p.live : null);
      }));
    for (const [id, l] of state.finished) if (l) live.set(id, l);
    const nodes = nodeList.nodes ?? [];
    renderSnapshots(snaps, live);
    renderVolumes(vols, snaps);
    renderZones(nodes);
    renderSummary(vols, snaps, nodes);
    renderVerdict(health, nodes);
  } catch (e) {
    noteError("console", e.message);
  }
  renderErrors();
  document.body.dataset.refreshed = String(Date.now());
  state.timer = setTimeout(refresh, REFRESH_MS);
}

function showLogin() {
  clearTimeout(state.timer);
  $("main").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
}

function start() {
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  refresh();
}

async function main() {
  state.config = await (await fetch("/console/config.json")).json();
  $("where").textContent = `region ${state.config.region} · account ${state.config.account_id} · zones ${state.config.zones.join(", ")}`;
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    localStorage.setItem("cairn.accessKey", $("access-key").value.trim());
    localStorage.setItem("cairn.secretKey", $("secret-key").value);
    start();
  });
  $("logout").addEventListener("click", () => {
    localStorage.removeItem("cairn.accessKey");
    localStorage.removeItem("cairn.secretKey");
    showLogin();
  });
  if (keys()) start(); else showLogin();
}

main().catch((e) => {
  noteError("console", e.message);
  renderErrors();
});

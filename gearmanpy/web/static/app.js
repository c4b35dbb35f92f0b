// The gearmanpy dashboard: polls the JSON API (docs/http-api.rst) every two seconds and
// redraws. Data goes into the page as text only (textContent), never as HTML.
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return Math.round(seconds * 1000) + " ms";
  if (seconds < 120) return seconds.toFixed(1) + " s";
  const m = Math.floor(seconds / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
  if (d) return d + "d " + (h % 24) + "h";
  if (h) return h + "h " + (m % 60) + "m";
  return m + "m " + Math.floor(seconds % 60) + "s";
}

function sparkline(values, kind) {
  const w = 160, h = 28, labelWidth = 44;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark " + kind);
  svg.setAttribute("width", w + labelWidth);
  svg.setAttribute("height", h);
  svg.setAttribute("viewBox", `0 0 ${w + labelWidth} ${h}`);
  const max = Math.max(1, ...values);
  const title = document.createElementNS(SVG, "title");
  title.textContent = values.length ? `now ${values[values.length - 1]}, max ${max}` : "no samples yet";
  svg.append(title);
  if (values.length > 1) {
    const step = w / (values.length - 1);
    const points = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 1 - (v / max) * (h - 3)).toFixed(1)}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    svg.append(line);
  }
  const label = document.createElementNS(SVG, "text");  // the peak, so the scale is known
  label.setAttribute("x", w + 6);
  label.setAttribute("y", 11);
  const peak = values.length ? Math.max(...values) : 0;
  label.textContent = values.length ? "max " + (Math.round(peak * 10) / 10) : "";
  svg.append(label);
  return svg;
}

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function drawOverview(o) {
  $("version").textContent = `version ${o.version} (gearmand ${o.gearmand} protocol)`;
  $("uptime").textContent = duration(o.uptime);
  $("connections").textContent = o.connections;
  $("workers-count").textContent = o.workers;
  $("clients-waiting").textContent = o.clients_waiting;
  $("jobs-count").textContent = o.jobs;
  $("completed").textContent = o.counters.completed;
  $("failed").textContent = o.counters.failed + o.counters.exceptions;
  const s = o.store;
  let text = s.durable ? `${s.name}, ${s.backlog} writes in flight` : "memory (not durable)";
  if (s.durable && s.ack.count) text += `, ack p50 ≤ ${duration(s.ack.p50)}, p99 ≤ ${duration(s.ack.p99)}`;
  if (s.outage) text += " — UNAVAILABLE";
  $("store").textContent = text;
}

function drawFunctions(functions, history) {
  const body = document.querySelector("#functions tbody");
  body.replaceChildren();
  for (const f of functions) {
    const series = history.functions[f.name] || { throughput: [], queued: [] };
    const q = f.queued;
    const c = f.counters;
    const name = c.broadcasts
      ? el("td", { class: "code name", title: `broadcast: ${c.broadcasts} submissions, ${c.deliveries} deliveries` },
          f.name, " ", el("span", { class: "muted broadcast" }, `(broadcast ${c.broadcasts}/${c.deliveries})`))
      : el("td", { class: "code name" }, f.name);
    const row = el("tr", { "data-function": f.name },
      name,
      el("td", { class: "num queued", title: `high ${q.high}, normal ${q.normal}, low ${q.low}` },
        q.high + q.normal + q.low),
      el("td", { class: "num running" }, f.running),
      el("td", { class: "num scheduled" }, f.scheduled),
      el("td", { class: "num workers" }, f.workers),
      el("td", { class: "num completed" }, f.counters.completed),
      el("td", { class: "num failed" }, f.counters.failed + f.counters.exceptions),
      el("td", { class: "num rate" }, f.rate.toFixed(1)),
      el("td", { class: "num" }, duration(f.wait.p50)),
      el("td", { class: "num" }, duration(f.run.p50)),
      el("td", {}, sparkline(series.throughput, "rate")),
      el("td", {}, sparkline(series.queued, "queue")));
    body.append(row);
  }
  $("functions-empty").hidden = functions.length > 0;
}

function drawWorkers(workers) {
  const body = document.querySelector("#workers tbody");
  body.replaceChildren();
  for (const w of workers) {
    body.append(el("tr", { "data-worker": w.client_id },
      el("td", { class: "code" }, w.client_id),
      el("td", { class: "code" }, `${w.ip} (fd ${w.fd})`),
      el("td", { class: "code functions" }, w.functions.join(", ")),
      el("td", { class: "code running" }, w.running.join(", ") || "–"),
      el("td", {}, w.running.length ? "running" : w.sleeping ? "sleeping" : "idle")));
  }
  $("workers-empty").hidden = workers.length > 0;
}

async function act(path, payload, done, result) {
  const headers = { "Content-Type": "application/json", "X-Gearmanpy-Action": "1" };
  const token = $("token").value.trim();
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, {
    method: "POST", headers, body: JSON.stringify(payload), credentials: "omit",
  });
  const body = await response.json().catch(() => ({}));
  const what = Object.values(payload)[0];
  $(result).textContent = response.ok ? `${done} ${what}` : `not ${done}: ${body.error || response.status}`;
  refresh();
}

function cancelJob(handle) {
  return act("api/jobs/cancel", { handle }, "cancelled", "action-result");
}

function drawDead(result) {
  const body = document.querySelector("#dead tbody");
  body.replaceChildren();
  for (const d of result.jobs) {
    const retry = el("button", { class: "retry", type: "button" }, "retry");
    retry.addEventListener("click", () => act("api/dead/retry", { what: d.handle }, "retried", "dead-result"));
    const drop = el("button", { class: "drop", type: "button" }, "drop");
    drop.addEventListener("click", () => act("api/dead/drop", { what: d.handle }, "dropped", "dead-result"));
    body.append(el("tr", { "data-handle": d.handle },
      el("td", { class: "code" }, d.handle),
      el("td", { class: "code" }, d.function),
      el("td", { class: "code" }, d.unique),
      el("td", { class: "num" }, d.attempts),
      el("td", {}, new Date(d.failed_at * 1000).toLocaleString()),
      el("td", { class: "code error" }, d.error),
      el("td", {}, retry, " ", drop)));
  }
  $("dead-total").textContent = result.error
    ? `cannot be read now (${result.error})`
    : `${result.jobs.length} shown of ${result.total} dead`;
  $("dead-empty").hidden = result.total > 0 || Boolean(result.error);
}

function drawJobs(result) {
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren();
  for (const j of result.jobs) {
    const cancel = el("button", { class: "cancel", type: "button" }, "cancel");
    cancel.addEventListener("click", () => cancelJob(j.handle));
    body.append(el("tr", { "data-handle": j.handle },
      el("td", { class: "code" }, j.handle),
      el("td", { class: "code" }, j.function),
      el("td", { class: "code" }, j.unique),
      el("td", {}, j.priority),
      el("td", {}, j.background ? "background" : "foreground"),
      el("td", { class: "state" }, j.state),
      el("td", { class: "num" }, duration(j.age)),
      el("td", { class: "num" }, j.retries),
      el("td", { class: "code" }, j.worker || "–"),
      el("td", {}, cancel)));
  }
  $("jobs-total").textContent = `${result.jobs.length} shown of ${result.total} live`;
}

async function refresh() {
  const query = new URLSearchParams({ q: $("job-query").value, state: $("job-state").value, limit: "50" });
  try {
    const [overview, functions, workers, jobs, history, dead] = await Promise.all([
      getJSON("api/overview"), getJSON("api/functions"), getJSON("api/workers"),
      getJSON("api/jobs?" + query), getJSON("api/history"),
      // On a cluster the dead set is the database's: a failed read shows in its panel only.
      getJSON("api/dead?limit=50").catch((error) => ({ total: 0, jobs: [], error: error.message })),
    ]);
    drawOverview(overview);
    drawFunctions(functions, history);
    drawWorkers(workers);
    drawJobs(jobs);
    drawDead(dead);
    $("status").textContent = "live · " + new Date().toLocaleTimeString();
    $("status").className = "status ok";
  } catch (error) {
    $("status").textContent = "disconnected: " + error.message;
    $("status").className = "status down";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem("gearmanpy-token") || "";
  $("token").addEventListener("change", () => sessionStorage.setItem("gearmanpy-token", $("token").value));
  $("job-search").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
  $("job-query").addEventListener("input", refresh);
  $("job-state").addEventListener("change", refresh);
  refresh();
  setInterval(refresh, POLL_MS);
});

// The vms console: reads the admin API with the token the user typed, which lives in this tab's sessionStorage
// only (never in a URL, a cookie or the page), and draws the engine's relayed Prometheus metrics on canvases.
"use strict";

const TOKEN_KEY = "vms-admin-token";
const STATUS_EVERY_MS = 2000;
const DEVICES_EVERY_MS = 10000;
const LOGS_EVERY_MS = 5000;
const CHART_POINTS = 150; // five minutes at one sample every two seconds
const ACTION_WORDS = {
  start: "Start the engine?",
  stop: "Stop the engine? Requests in flight are cut and the appliance stops being ready.",
  restart: "Restart the engine? Requests in flight are cut; it is ready again once the model has loaded.",
};

const $ = (id) => document.getElementById(id);
let timers = [];

// ---- the admin API --------------------------------------------------------------------------------------------
class LoggedOut extends Error {}

async function admin(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) throw new LoggedOut("not logged in");
  const response = await fetch(path, {
    ...options,
    cache: "no-store",
    headers: { Authorization: `Bearer ${token}` },
  });
  if (response.status === 401 || response.status === 403) {
    const body = await response.json().catch(() => ({}));
    throw new LoggedOut(body.detail || `refused (${response.status})`);
  }
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response;
}

// ---- log in and out -------------------------------------------------------------------------------------------
async function logIn(event) {
  event.preventDefault();
  const field = $("token");
  sessionStorage.setItem(TOKEN_KEY, field.value);
  field.value = "";
  try {
    await admin("/admin/status");
  } catch (error) {
    logOut(error instanceof LoggedOut ? error.message : `the admin API did not answer: ${error.message}`);
    return;
  }
  showConsole();
}

function logOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  timers.forEach(clearInterval);
  timers = [];
  $("console-view").hidden = true;
  $("logout").hidden = true;
  $("login-view").hidden = false;
  $("summary").textContent = "";
  $("login-error").textContent = message;
}

function showConsole() {
  $("login-view").hidden = true;
  $("console-view").hidden = false;
  $("logout").hidden = false;
  $("login-error").textContent = "";
  every(STATUS_EVERY_MS, refreshStatus);
  every(STATUS_EVERY_MS, refreshMetrics);
  every(DEVICES_EVERY_MS, refreshDevices);
  every(LOGS_EVERY_MS, refreshLogs);
}

function every(milliseconds, refresh) {
  const run = () =>
    refresh().catch((error) => (error instanceof LoggedOut ? logOut(error.message) : console.warn(error)));
  run();
  timers.push(setInterval(run, milliseconds));
}

// ---- what the page shows --------------------------------------------------------------------------------------
function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text ?? "–";
  if (className) td.className = className;
}

function fillTable(table, rows, fill) {
  const body = table.tBodies[0];
  body.replaceChildren();
  rows.forEach((item) => fill(body.insertRow(), item));
}

function duration(seconds) {
  if (seconds == null) return "–";
  const s = Math.floor(seconds);
  const [d, h, m] = [Math.floor(s / 86400), Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60)];
  return d ? `${d}d ${h}h ${m}m` : h ? `${h}h ${m}m ${s % 60}s` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

async function refreshStatus() {
  const status = await (await admin("/admin/status")).json();
  const state = $("state");
  state.textContent = status.state + (status.draining ? " (draining)" : "");
  state.className = `state ${status.state}`;
  $("summary").textContent = `${status.model} on ${status.device}`;
  const versions = Object.entries(status.versions || {}).map(([name, version]) => `${name} ${version ?? "?"}`);
  const facts = [
    ["Model", status.model],
    ["Device", status.device],
    ["Uptime", duration(status.uptime_s)],
    ["Restarts", String(status.restarts)],
    ["Engine pid", status.engine_pid == null ? "–" : String(status.engine_pid)],
    ["Last error", status.last_error || "none"],
    ["Versions", versions.join(", ")],
  ];
  $("facts").replaceChildren(
    ...facts.flatMap(([name, value]) => {
      const [dt, dd] = [document.createElement("dt"), document.createElement("dd")];
      dt.textContent = name;
      dd.textContent = value;
      dd.dataset.fact = name.toLowerCase().replace(" ", "-");
      return [dt, dd];
    }),
  );
  const newestFirst = [...(status.history || [])].reverse();
  fillTable($("history-table"), newestFirst, (row, change) =>
    [change.time.replace("T", " ").replace("+00:00", ""), change.from, change.to, change.reason].forEach((text) =>
      cell(row, text),
    ),
  );
}

async function refreshDevices() {
  const devices = await (await admin("/admin/devices")).json();
  const chips = devices.npu_smi?.chips || [];
  const smi = devices.npu_smi?.version ? `; npu-smi ${devices.npu_smi.version}` : "";
  const serving = devices.device === "ascend" ? "Ascend" : devices.device;
  $("npu-note").textContent = `Serving on ${serving}; ${devices.reason}${smi}`;
  $("npu-table").hidden = chips.length === 0;
  fillTable($("npu-table"), chips, (row, chip) => {
    cell(row, String(chip.npu));
    cell(row, String(chip.chip));
    cell(row, chip.name);
    cell(row, chip.health, chip.health === "OK" ? "" : "unhealthy");
    cell(row, chip.hbm_total_mb == null ? null : `${chip.hbm_used_mb} / ${chip.hbm_total_mb}`);
    cell(row, chip.temperature_c == null ? null : String(chip.temperature_c));
    cell(row, chip.power_w == null ? null : String(chip.power_w));
  });
}

async function refreshLogs() {
  const text = await (await admin("/admin/logs?lines=200")).text();
  const pre = $("log-tail");
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = text;
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

// ---- metrics: Prometheus text, summed over label sets, turned into rates between two scrapes --------------------
function parseExposition(text) {
  const totals = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const value = Number(match[3]);
    if (Number.isFinite(value)) totals.set(match[1], (totals.get(match[1]) || 0) + value);
  }
  return totals;
}

const charts = {
  requests: { canvas: "chart-requests", readout: "requests-now", lines: ["running", "waiting"], unit: "" },
  tokens: { canvas: "chart-tokens", readout: "tokens-now", lines: ["tokens/s"], unit: " tok/s" },
  ttft: { canvas: "chart-ttft", readout: "ttft-now", lines: ["ttft"], unit: " s" },
  kv: { canvas: "chart-kv", readout: "kv-now", lines: ["kv"], unit: " %", max: 100 },
};
for (const chart of Object.values(charts)) chart.points = chart.lines.map(() => []);
let previous = null;

function change(now, before, name) {
  if (!before || !now.has(name) || !before.values.has(name)) return null;
  const delta = now.get(name) - before.values.get(name);
  return delta < 0 ? null : delta; // a counter that went back: the engine restarted
}

async function refreshMetrics() {
  const values = parseExposition(await (await admin("/metrics")).text());
  const at = performance.now() / 1000;
  const seconds = previous ? at - previous.at : null;
  const tokens = change(values, previous, "vllm:generation_tokens_total");
  const firstTokenSum = change(values, previous, "vllm:time_to_first_token_seconds_sum");
  const firstTokens = change(values, previous, "vllm:time_to_first_token_seconds_count");
  const kv = values.get("vllm:kv_cache_usage_perc");
  record(charts.requests, [values.get("vllm:num_requests_running"), values.get("vllm:num_requests_waiting")]);
  record(charts.tokens, [tokens == null || !seconds ? null : tokens / seconds]);
  record(charts.ttft, [firstTokens ? firstTokenSum / firstTokens : null]);
  record(charts.kv, [kv == null ? null : kv * 100]);
  previous = { at, values };
  Object.values(charts).forEach(draw);
}

function record(chart, values) {
  chart.points.forEach((points, i) => {
    points.push(values[i] ?? null);
    if (points.length > CHART_POINTS) points.shift();
  });
  const last = values.map((v) => (v == null ? "–" : Number(v.toFixed(2)))).join(" / ");
  $(chart.readout).textContent = last + (values.some((v) => v != null) ? chart.unit : "");
  const canvas = $(chart.canvas);
  const peak = Math.max(0, ...chart.points.flat().filter((v) => v != null));
  canvas.dataset.peak = String(peak); // what the chart has drawn at most: read by the browser test
  canvas.dataset.samples = String(chart.points[0].filter((v) => v != null).length);
}

const COLOURS = ["#2457a6", "#c05621"];

function draw(chart) {
  const canvas = $(chart.canvas);
  const context = canvas.getContext("2d");
  if (canvas.clientWidth && canvas.width !== canvas.clientWidth) canvas.width = canvas.clientWidth; // sharp lines
  const [width, height, pad] = [canvas.width, canvas.height, 24];
  context.clearRect(0, 0, width, height);
  const peak = Number(canvas.dataset.peak);
  const top = chart.max ?? (peak > 0 ? peak * 1.15 : 1);
  context.strokeStyle = "#d8dde5";
  context.fillStyle = "#5b6474";
  context.font = "11px system-ui, sans-serif";
  for (const fraction of [0, 0.5, 1]) {
    const y = height - pad - fraction * (height - 2 * pad);
    context.beginPath();
    context.moveTo(pad + 20, y);
    context.lineTo(width - 4, y);
    context.stroke();
    context.fillText(String(Number((top * fraction).toPrecision(3))), 2, y + 4);
  }
  const step = (width - pad - 24) / (CHART_POINTS - 1);
  chart.points.forEach((points, i) => {
    context.strokeStyle = COLOURS[i];
    context.lineWidth = 2;
    context.beginPath();
    let drawing = false;
    const offset = CHART_POINTS - points.length;
    points.forEach((value, j) => {
      if (value == null) {
        drawing = false;
        return;
      }
      const x = pad + 20 + (offset + j) * step;
      const y = height - pad - (Math.min(value, top) / top) * (height - 2 * pad);
      drawing ? context.lineTo(x, y) : context.moveTo(x, y);
      drawing = true;
    });
    context.stroke();
    if (chart.lines.length > 1) {
      context.fillStyle = COLOURS[i];
      context.fillText(chart.lines[i], width - 70, 14 + 12 * i);
    }
  });
}

// ---- start / stop / restart, each confirmed first -------------------------------------------------------------
function confirmAction(action) {
  const dialog = $("confirm");
  $("confirm-text").textContent = ACTION_WORDS[action];
  $("confirm-yes").textContent = action[0].toUpperCase() + action.slice(1);
  $("confirm-yes").onclick = () => {
    dialog.close();
    control(action);
  };
  $("confirm-no").onclick = () => dialog.close();
  dialog.showModal();
}

async function control(action) {
  const result = $("action-result");
  result.textContent = `${action} requested…`;
  try {
    await admin(`/admin/engine/${action}`, { method: "POST" });
    result.textContent = `${action} done at ${new Date().toLocaleTimeString()}; the state above follows the engine`;
    await refreshStatus();
  } catch (error) {
    if (error instanceof LoggedOut) logOut(error.message);
    else result.textContent = `${action} failed: ${error.message}`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", logIn);
  $("logout").addEventListener("click", () => logOut());
  document.querySelectorAll("button[data-action]").forEach((button) => {
    button.addEventListener("click", () => confirmAction(button.dataset.action));
  });
  if (sessionStorage.getItem(TOKEN_KEY)) showConsole();
});

// The fastml console's one script. Every action goes through the JSON API, so the API's
// auth, roles and checks are the console's. Text from uploads and answers is only ever
// put on the page with textContent, never as HTML.
"use strict";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const JOB_POLL_MS = 1000;
const JOB_MAX_POLLS = 6 * 3600; // a training job followed for six hours at most
const METRICS_REFRESH_MS = 3000;
const MAX_HEADER_BYTES = 1 << 20;

function byId(id) {
  return document.getElementById(id);
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function modelPath(name) {
  return `/models/${encodeURIComponent(name)}`;
}

// A fetch of the API; a refusal becomes an Error carrying the API's own message.
async function api(method, url, body) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body instanceof FormData) {
    options.body = body;
  } else if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(url, options);
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) {
      return `${body.error.message} (HTTP ${response.status})`;
    }
  } catch (ignored) {
    // not JSON: the status says enough
  }
  return `the server answered HTTP ${response.status}`;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---- train page -------------------------------------------------------------------------

// The first record of a CSV text: fields split on commas, quotes as RFC 4180 has them.
function csvHeader(text) {
  const fields = [];
  let field = "";
  let quoted = false;
  for (let i = text.charCodeAt(0) === 0xfeff ? 1 : 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c === '"') {
      quoted = true;
    } else if (c === ",") {
      fields.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      break;
    } else {
      field += c;
    }
  }
  fields.push(field);
  return fields.map((name) => name.trim());
}

function suggestedName(fileName) {
  const stem = fileName.replace(/\.[^.]*$/, "").toLowerCase().replace(/[^a-z0-9_-]+/g, "-");
  const name = stem.replace(/^[^a-z0-9]+/, "").slice(0, 64);
  return name || "model";
}

function paramsOf(fieldset) {
  const params = {};
  for (const input of fieldset.querySelectorAll("input[data-param]")) {
    const text = input.value.trim();
    if (text === "") continue;
    try {
      params[input.dataset.param] = JSON.parse(text);
    } catch (ignored) {
      params[input.dataset.param] = text; // a bare word such as sqrt is meant as a string
    }
  }
  return params;
}

function initTrain() {
  const form = byId("train-form");
  const fileInput = form.elements.csv_file;
  const target = form.elements.target_variable;
  const estimator = form.elements.estimator;
  const errorBox = byId("train-error");

  fileInput.addEventListener("change", async () => {
    target.replaceChildren();
    const file = fileInput.files[0];
    if (!file) return;
    const columns = csvHeader(await file.slice(0, MAX_HEADER_BYTES).text());
    for (const column of columns) {
      const option = element("option", column);
      option.value = column;
      target.append(option);
    }
    target.value = columns[columns.length - 1]; // the usual place of the label
    target.disabled = false;
    if (!form.elements.name.value) form.elements.name.value = suggestedName(file.name);
  });

  const showParams = () => {
    for (const fieldset of form.querySelectorAll("fieldset.params")) {
      fieldset.hidden = fieldset.dataset.estimator !== estimator.value;
    }
  };
  estimator.addEventListener("change", showParams);
  showParams();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorBox.textContent = "";
    const name = form.elements.name.value;
    const data = new FormData();
    data.append("csv_file", fileInput.files[0]);
    data.append("target_variable", target.value);
    data.append("estimator", estimator.value);
    const fieldset = form.querySelector(`fieldset.params:not([hidden])`);
    const params = fieldset ? paramsOf(fieldset) : {};
    if (Object.keys(params).length) data.append("params", JSON.stringify(params));
    if (form.elements.evaluation.value === "cv") {
      data.append("cv", form.elements.cv.value);
    } else {
      data.append("test_size", form.elements.test_size.value);
    }
    data.append("promote", form.elements.promote.checked ? "true" : "false");
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const job = await (await api("POST", `${modelPath(name)}/train`, data)).json();
      await followJob(job);
    } catch (error) {
      errorBox.textContent = error.message;
    } finally {
      button.disabled = false;
    }
  });
}

// Polls GET /jobs/{id} until the job has finished (or the cap), showing each state it reads.
async function pollJob(job, show) {
  for (let poll = 0; poll < JOB_MAX_POLLS; poll++) {
    show(job);
    if (FINISHED.has(job.status)) break;
    await sleep(JOB_POLL_MS);
    job = await (await api("GET", `/jobs/${encodeURIComponent(job.id)}`)).json();
  }
  return job;
}

async function followJob(job) {
  const section = byId("job");
  const status = byId("job-status");
  const result = byId("job-result");
  const errorBox = byId("job-error");
  section.hidden = false;
  byId("job-id").textContent = job.id;
  result.replaceChildren();
  errorBox.textContent = "";
  const started = Date.now();
  job = await pollJob(job, (current) => {
    status.textContent = current.status;
    status.className = `job-status ${current.status}`;
    byId("job-elapsed").textContent = `(${Math.round((Date.now() - started) / 1000)} s)`;
  });
  if (job.status === "succeeded" && job.result) {
    const version = job.result.version;
    const link = element("a", `${job.model_name} v${version}`);
    link.href = `/ui/models/${encodeURIComponent(job.model_name)}#version-${version}`;
    link.id = "new-version";
    const accuracy = job.result.metrics ? job.result.metrics.accuracy : null;
    result.append("New version: ", link);
    if (typeof accuracy === "number") result.append(`, accuracy ${accuracy.toFixed(3)}`);
    result.append(job.result.promoted ? " (now current)" : " (not promoted)");
  } else if (job.error) {
    errorBox.textContent = job.error;
  }
}

// ---- model page ---------------------------------------------------------------------------

function initModel() {
  const table = byId("versions");
  const name = table.dataset.model;
  const statusBox = byId("promote-status");
  for (const button of document.querySelectorAll("button.promote")) {
    button.addEventListener("click", async () => {
      const version = Number(button.dataset.version);
      const question =
        `${button.textContent.trim()} of ${name}? ` +
        "Every worker serves it within seconds, without a restart.";
      if (!window.confirm(question)) return;
      statusBox.textContent = "…";
      try {
        await api("PUT", `${modelPath(name)}/current`, { version });
        window.location.reload();
      } catch (error) {
        statusBox.textContent = error.message;
        statusBox.className = "status error";
      }
    });
  }
}

// ---- predict page -------------------------------------------------------------------------

function initPredict() {
  const form = byId("predict-form");
  const name = form.dataset.model;
  const errorBox = byId("predict-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorBox.textContent = "";
    const row = {};
    for (const field of form.querySelectorAll("input[name], select[name]")) {
      // A listed category goes exactly as recorded; typed text loses stray spaces.
      const text = field.tagName === "SELECT" ? field.value : field.value.trim();
      if (text === "") row[field.name] = null;
      else row[field.name] = field.dataset.kind === "numeric" ? Number(text) : text;
    }
    try {
      const url = `${modelPath(name)}/predict?proba=true`;
      const answer = await (await api("POST", url, { rows: [row] })).json();
      showPrediction(answer);
    } catch (error) {
      byId("prediction").hidden = true;
      errorBox.textContent = error.message;
    }
  });

  initPredictCsv(name);
}

// The CSV form's two buttons: predict now and download, or run a batch-prediction job and
// link its file. Both post the file the same way and report in the same status line.
function initPredictCsv(name) {
  const csvForm = byId("predict-csv-form");
  const csvStatus = byId("predict-csv-status");
  const send = async (route, waiting, handle) => {
    csvStatus.textContent = waiting;
    csvStatus.className = "status";
    const data = new FormData();
    data.append("csv_file", csvForm.elements.csv_file.files[0]);
    const proba = csvForm.elements.proba.checked ? "true" : "false";
    try {
      await handle(await api("POST", `${modelPath(name)}/${route}?proba=${proba}`, data));
    } catch (error) {
      csvStatus.textContent = error.message;
      csvStatus.className = "status error";
    }
  };

  const download = async (response) => {
    const fileName = downloadName(response, `${name}-predictions.csv`);
    const blob = await response.blob();
    const link = element("a");
    link.href = URL.createObjectURL(blob);
    link.download = fileName;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    csvStatus.textContent = `downloaded ${fileName} (${blob.size} bytes)`;
  };

  const followBatchJob = async (response) => {
    const job = await pollJob(await response.json(), (current) => {
      const done = current.rows_done == null ? "" : `, ${current.rows_done} rows done`;
      csvStatus.textContent = `job ${current.id.slice(0, 8)} ${current.status}${done}`;
    });
    if (job.status !== "succeeded") throw new Error(job.error || `the job ${job.status}`);
    const link = element("a", "download the predictions", "download");
    link.href = `/jobs/${encodeURIComponent(job.id)}/result`;
    link.download = "";
    csvStatus.replaceChildren(`job ${job.id.slice(0, 8)} done, ${job.result.rows} rows: `, link);
  };

  csvForm.addEventListener("submit", (event) => {
    event.preventDefault();
    send("predict/csv", "predicting…", download);
  });
  byId("predict-csv-job").addEventListener("click", () => {
    if (csvForm.reportValidity()) send("predict/jobs", "submitting…", followBatchJob);
  });
}

function downloadName(response, fallback) {
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(disposition);
  return match ? match[1] : fallback;
}

function showPrediction(answer) {
  byId("predicted-label").textContent = String(answer.predictions[0]);
  byId("predicted-version").textContent = `(v${answer.version})`;
  const body = byId("probabilities").tBodies[0];
  body.replaceChildren();
  const probabilities = answer.probabilities ? answer.probabilities[0] : {};
  const sorted = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
  for (const [label, p] of sorted) {
    const row = element("tr");
    const bar = element("meter");
    bar.min = 0;
    bar.max = 1;
    bar.value = p;
    const cell = element("td");
    cell.append(bar);
    row.append(element("td", label), element("td", p.toFixed(3), "number"), cell);
    body.append(row);
  }
  byId("prediction").hidden = false;
}

// ---- jobs page ----------------------------------------------------------------------------

function initJobs() {
  const table = byId("jobs");
  if (!table) return;
  if (table.dataset.refresh) {
    setTimeout(() => window.location.reload(), Number(table.dataset.refresh) * 1000);
  }
  for (const button of document.querySelectorAll("button.cancel")) {
    button.addEventListener("click", async () => {
      if (!window.confirm("Cancel this queued job?")) return;
      try {
        await api("DELETE", `/jobs/${encodeURIComponent(button.dataset.job)}`);
        window.location.reload();
      } catch (error) {
        byId("jobs-status").textContent = error.message;
      }
    });
  }
}

// ---- server page --------------------------------------------------------------------------

// Prometheus text format: name{label="value",...} number
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = SAMPLE.exec(line);
    if (!match) continue;
    const labels = {};
    for (const label of (match[2] || "").matchAll(LABEL)) labels[label[1]] = label[2];
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

// Totals the page needs from one scrape. The page's own /metrics polls are left out.
function summarize(samples) {
  const summary = { requests: 0, client: 0, server: 0, buckets: new Map(), routes: new Map() };
  const routeOf = (labels) => {
    const key = `${labels.method} ${labels.route}`;
    if (!summary.routes.has(key)) {
      summary.routes.set(key, { method: labels.method, route: labels.route, requests: 0,
        client: 0, server: 0, seconds: 0, timed: 0 });
    }
    return summary.routes.get(key);
  };
  for (const { name, labels, value } of samples) {
    const isOwnPoll = labels.route === "/metrics";
    if (name === "fastml_http_requests_total") {
      const route = routeOf(labels);
      const status = Number(labels.status);
      route.requests += value;
      if (status >= 400 && status < 500) route.client += value;
      if (status >= 500) route.server += value;
      if (isOwnPoll) continue;
      summary.requests += value;
      if (status >= 400 && status < 500) summary.client += value;
      if (status >= 500) summary.server += value;
    } else if (name === "fastml_http_request_duration_seconds_sum") {
      routeOf(labels).seconds += value;
    } else if (name === "fastml_http_request_duration_seconds_count") {
      routeOf(labels).timed += value;
    } else if (name === "fastml_http_request_duration_seconds_bucket" && !isOwnPoll) {
      const le = labels.le === "+Inf" ? Infinity : Number(labels.le);
      summary.buckets.set(le, (summary.buckets.get(le) || 0) + value);
    }
  }
  return summary;
}

// histogram_quantile: linear within the bucket the rank falls in.
function quantile(q, buckets) {
  const bounds = [...buckets.keys()].sort((a, b) => a - b);
  const total = bounds.length ? buckets.get(Infinity) || 0 : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const bound of bounds) {
    const count = buckets.get(bound);
    if (count >= rank) {
      if (bound === Infinity) return lower;
      return lower + ((bound - lower) * (rank - below)) / Math.max(count - below, 1e-9);
    }
    lower = bound;
    below = count;
  }
  return lower;
}

function formatSeconds(seconds, none = "–") {
  if (seconds === null || Number.isNaN(seconds)) return none;
  if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1)} ms`;
  return `${seconds.toFixed(2)} s`;
}

function difference(now, before) {
  const buckets = new Map();
  for (const [bound, count] of now.buckets) {
    buckets.set(bound, count - ((before && before.buckets.get(bound)) || 0));
  }
  return buckets;
}

function initServer() {
  byId("refresh-seconds").textContent = String(METRICS_REFRESH_MS / 1000);
  let before = null;
  let beforeAt = 0;
  const refresh = async () => {
    try {
      const text = await (await api("GET", "/metrics")).text();
      const now = summarize(parseMetrics(text));
      const at = performance.now();
      const buckets = difference(now, before);
      for (const [id, q] of [["p50", 0.5], ["p90", 0.9], ["p99", 0.99]]) {
        byId(id).textContent = formatSeconds(quantile(q, buckets), "idle");
      }
      if (before) {
        const seconds = (at - beforeAt) / 1000;
        byId("rate").textContent = ((now.requests - before.requests) / seconds).toFixed(1);
        byId("errors-4xx").textContent = ((now.client - before.client) / seconds).toFixed(1);
        byId("errors-5xx").textContent = ((now.server - before.server) / seconds).toFixed(1);
      }
      showRoutes(now.routes);
      byId("server-error").textContent = "";
      before = now;
      beforeAt = at;
    } catch (error) {
      byId("server-error").textContent = error.message;
    }
    setTimeout(refresh, METRICS_REFRESH_MS);
  };
  refresh();
}

function showRoutes(routes) {
  const body = byId("routes").tBodies[0];
  body.replaceChildren();
  const sorted = [...routes.values()].sort((a, b) => b.requests - a.requests);
  for (const route of sorted) {
    const row = element("tr");
    row.append(
      element("td", route.method),
      element("td", route.route),
      element("td", route.requests, "number"),
      element("td", route.client, "number"),
      element("td", route.server, "number"),
      element("td", formatSeconds(route.timed ? route.seconds / route.timed : null), "number"),
    );
    body.append(row);
  }
}

const PAGES = {
  train: initTrain,
  model: initModel,
  predict: () => byId("predict-form") && initPredict(),
  jobs: initJobs,
  server: initServer,
};

document.addEventListener("DOMContentLoaded", () => {
  const init = PAGES[document.body.dataset.page];
  if (init) init();
});

/* Flower Ops dashboard: live through the WebSocket feed (docs/live-feed.md).
 *
 * Every piece of task data is rendered with textContent / setAttribute on
 * elements we create: never innerHTML, so nothing a task carries can become
 * markup or script. The page's Content-Security-Policy forbids inline script
 * as a second line of defence.
 */
(function () {
  "use strict";

  var root = document.getElementById("fo-app");
  if (!root) { return; }

  // Absolute URLs from the page's scheme, host and port only. A page opened
  // as http://user:pass@host/monitoring keeps the credentials in its base URL
  // (location.href drops them), and fetch() refuses any URL that carries
  // credentials, relative ones resolved against that base included.
  var ORIGIN = location.protocol + "//" + location.host;
  var API = ORIGIN + root.getAttribute("data-api-base");
  var WS_URL = (location.protocol === "https:" ? "wss://" : "ws://") + location.host
    + root.getAttribute("data-api-base") + "/ws";
  var MAX_ROWS = 200;
  var SNAPSHOT_LIMIT = 100;
  var CHART_POINTS = 90;
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 10000;
  // The lifecycle comes from the server (flower_ops/core/lifecycle.py), not typed again here
  var LIFECYCLE = JSON.parse(root.getAttribute("data-lifecycle"));
  var CANCELLABLE = toSet(LIFECYCLE.cancellable);
  var RETRYABLE = toSet(LIFECYCLE.retryable);
  var BADGES = {
    SUCCESS: "text-bg-success", FAILURE: "text-bg-danger", STARTED: "fo-state-started",
    RECEIVED: "fo-state-received", RETRY: "fo-state-retry", REVOKED: "text-bg-dark",
    PENDING: "text-bg-secondary"
  };

  var state = {
    token: null, tokenExpiresAt: 0, refreshTimer: null,
    ws: null, lastSeq: null, backoff: BACKOFF_MIN_MS, reconnectTimer: null, stopped: false,
    tasks: new Map(), rows: new Map(), filters: {}, renderQueued: false,
    throughput: [], failures: [], lastFailed: null, names: new Set()
  };

  function toSet(names) {
    var set = {};
    names.forEach(function (name) { set[name] = 1; });
    return set;
  }

  // -- small DOM helpers (text only) -------------------------------------------

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function clear(node) {
    while (node.firstChild) { node.removeChild(node.firstChild); }
  }

  function setText(id, text) {
    var node = document.getElementById(id);
    if (node) { node.textContent = text; }
  }

  function asText(value) {
    if (value === null || value === undefined) { return ""; }
    if (typeof value === "string") { return value; }
    try { return JSON.stringify(value); } catch (e) { return String(value); }
  }

  function pretty(value) {
    if (value === null || value === undefined) { return "—"; }
    if (typeof value === "string") { return value; }
    try { return JSON.stringify(value, null, 2); } catch (e) { return String(value); }
  }

  // Instants arrive as ISO 8601 in UTC with milliseconds ("2026-11-30T12:54:08.123Z");
  // milliseconds since the epoch, or null when absent or unreadable.
  function instantMs(value) {
    if (value === null || value === undefined || value === "") { return null; }
    var ms = typeof value === "number" ? value * 1000 : Date.parse(value);
    return isFinite(ms) ? ms : null;
  }

  function fmtTime(value) {
    var ms = instantMs(value);
    if (ms === null) { return "—"; }
    var d = new Date(ms);
    return d.toLocaleTimeString() + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  function fmtDateTime(value) {
    var ms = instantMs(value);
    if (ms === null) { return "—"; }
    return new Date(ms).toLocaleString();
  }

  function fmtNumber(n) {
    if (n === null || n === undefined) { return "—"; }
    return Number(n).toLocaleString();
  }

  function fmtBytes(n) {
    if (!n) { return "—"; }
    var units = ["B", "KiB", "MiB", "GiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + " " + units[i];
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined) { return "—"; }
    if (s < 1) { return (s * 1000).toFixed(0) + " ms"; }
    if (s < 120) { return s.toFixed(2) + " s"; }
    return (s / 60).toFixed(1) + " min";
  }

  // A task's first known instant (ISO string), and it in ms for sorting
  function taskTime(t) {
    return t.sent || t.received || t.started || t.timestamp || null;
  }

  function taskMs(t) {
    return instantMs(taskTime(t)) || 0;
  }

  // -- notices -----------------------------------------------------------------

  function notice(kind, text) {
    var box = document.getElementById("fo-notices");
    var item = el("div", "alert alert-" + kind + " alert-dismissible", text);
    item.setAttribute("role", "status");
    var close = el("button", "btn-close");
    close.type = "button";
    close.setAttribute("aria-label", "Dismiss");
    close.addEventListener("click", function () { item.remove(); });
    item.appendChild(close);
    box.appendChild(item);
    setTimeout(function () { item.remove(); }, 8000);
  }

  function setConnection(kind, text) {
    var label = document.getElementById("fo-conn");
    var dot = document.getElementById("fo-conn-dot");
    label.setAttribute("data-state", kind);
    label.textContent = text;
    dot.classList.toggle("status-dot-live", kind === "live");
    dot.classList.toggle("status-dot-error", kind === "disconnected");
  }

  // -- token -------------------------------------------------------------------

  function fetchToken() {
    return fetch(API + "/token", {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/json" }, body: "{}"
    }).then(function (response) {
      if (!response.ok) { throw new Error("token request failed: HTTP " + response.status); }
      return response.json();
    }).then(function (body) {
      state.token = body.access_token;
      state.tokenExpiresAt = Date.now() + body.expires_in * 1000;
      scheduleRefresh(body.expires_in);
      return state.token;
    });
  }

  function scheduleRefresh(expiresInSeconds) {
    clearTimeout(state.refreshTimer);
    var delay = Math.max(5, expiresInSeconds * 0.75) * 1000;
    state.refreshTimer = setTimeout(function () {
      fetchToken().then(function (token) {
        // A fresh token on the open socket keeps it open past the old expiry
        if (state.ws && state.ws.readyState === WebSocket.OPEN) {
          state.ws.send(JSON.stringify({ type: "auth", token: token }));
        }
      }).catch(function () { scheduleRefresh(10); });
    }, delay);
  }

  function tokenFresh() {
    return state.token && state.tokenExpiresAt - Date.now() > 15000;
  }

  // -- the socket --------------------------------------------------------------

  function connect() {
    state.reconnectTimer = null;
    if (state.stopped) { return; }
    setConnection("connecting", "Connecting…");
    var ready = tokenFresh() ? Promise.resolve(state.token) : fetchToken();
    ready.then(openSocket).catch(function (error) {
      setConnection("disconnected", "Disconnected — " + error.message);
      scheduleReconnect();
    });
  }

  function openSocket(token) {
    var ws = new WebSocket(WS_URL);
    state.ws = ws;
    ws.onopen = function () {
      var auth = { type: "auth", token: token, filters: state.filters, limit: SNAPSHOT_LIMIT };
      if (state.lastSeq !== null) { auth.resume = state.lastSeq; }
      ws.send(JSON.stringify(auth));
    };
    ws.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (typeof message.seq === "number") { state.lastSeq = message.seq; }
      handle(message);
    };
    ws.onclose = function (event) {
      if (state.ws !== ws) { return; }
      state.ws = null;
      if (event.code === 4003) {
        state.stopped = true;
        setConnection("disconnected", "Not allowed: your token lacks monitoring:read");
        return;
      }
      if (event.code === 4001) { state.token = null; }
      setConnection("disconnected", "Disconnected — reconnecting…");
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (state.reconnectTimer || state.stopped) { return; }
    // Capped exponential backoff with full jitter
    var delay = Math.random() * state.backoff + BACKOFF_MIN_MS / 2;
    state.backoff = Math.min(BACKOFF_MAX_MS, state.backoff * 2);
    state.reconnectTimer = setTimeout(connect, delay);
  }

  function handle(message) {
    switch (message.type) {
      case "snapshot":
        state.backoff = BACKOFF_MIN_MS;
        setConnection("live", "Live");
        applySnapshot(message);
        break;
      case "tasks":
        setConnection("live", "Live");
        applyTasks(message.tasks || [], message.removed || []);
        break;
      case "alert":
        applyAlert(message.event, message.alert || {});
        break;
      case "resumed":
        state.backoff = BACKOFF_MIN_MS;
        setConnection("live", "Live");
        break;
      case "error":
        notice("warning", "Feed: " + asText(message.error));
        break;
      default:
        break;
    }
  }

  function send(message) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(message));
    }
  }

  // -- applying messages --------------------------------------------------------

  function applySnapshot(message) {
    state.tasks = new Map();
    (message.tasks || []).forEach(function (t) { state.tasks.set(t.id, t); });
    renderStats(message.stats || {}, message.queues);
    state.alerts = new Map();
    (message.alerts || []).forEach(function (a, i) { state.alerts.set(a.id || String(i), a); });
    renderAlerts(Array.from(state.alerts.values()));
    renderWorkers(message.workers || []);
    renderQueues(message.queues, message.queues_error);
    setText("fo-task-count", "(" + fmtNumber(message.total) + " matching in memory)");
    queueRender();
  }

  function applyTasks(tasks, removed) {
    tasks.forEach(function (t) {
      if (matchesFilters(t)) { state.tasks.set(t.id, t); } else { state.tasks.delete(t.id); }
    });
    removed.forEach(function (id) { state.tasks.delete(id); });
    queueRender();
  }

  function matchesFilters(t) {
    var f = state.filters;
    return (!f.state || f.state.indexOf(t.state) >= 0)
      && (!f.name || f.name.indexOf(t.name) >= 0)
      && (!f.queue || f.queue.indexOf(t.queue) >= 0);
  }

  function queueRender() {
    if (state.renderQueued) { return; }
    state.renderQueued = true;
    requestAnimationFrame(function () {
      state.renderQueued = false;
      renderTasks();
    });
  }

  // -- tasks grid -----------------------------------------------------------------

  function renderTasks() {
    var ordered = Array.from(state.tasks.values()).sort(function (a, b) {
      return taskMs(b) - taskMs(a);
    });
    if (ordered.length > MAX_ROWS) {
      ordered.slice(MAX_ROWS).forEach(function (t) { state.tasks.delete(t.id); });
      ordered = ordered.slice(0, MAX_ROWS);
    }
    var tbody = document.querySelector("#fo-tasks tbody");
    var keep = new Set();
    ordered.forEach(function (t, index) {
      keep.add(t.id);
      var row = state.rows.get(t.id);
      if (!row) {
        row = createRow(t.id);
        state.rows.set(t.id, row);
        row.tr.classList.add("fo-row-new");
      }
      updateRow(row, t);
      if (tbody.children[index] !== row.tr) {
        tbody.insertBefore(row.tr, tbody.children[index] || null);
      }
      if (t.name) { state.names.add(t.name); }
    });
    state.rows.forEach(function (row, id) {
      if (!keep.has(id)) { row.tr.remove(); state.rows.delete(id); }
    });
    renderNames();
  }

  function createRow(id) {
    var tr = el("tr");
    tr.setAttribute("data-task-id", id);
    var cells = {};
    ["name", "state", "id", "args", "worker", "queue", "time", "runtime", "actions"].forEach(
      function (key) {
        var td = el("td");
        td.setAttribute("data-col", key);
        tr.appendChild(td);
        cells[key] = td;
      });
    cells.args.className = "fo-args";
    cells.id.className = "fo-id";
    cells.runtime.className = "text-end";
    cells.actions.className = "fo-actions";
    var badge = el("span", "badge");
    cells.state.appendChild(badge);
    var cancel = button("Cancel", "btn-outline-danger", "cancel");
    var retry = button("Retry", "btn-outline-primary", "retry");
    var details = button("Details", "btn-outline-secondary", "details");
    cancel.addEventListener("click", function () { act(id, "cancel", cancel); });
    retry.addEventListener("click", function () { act(id, "retry", retry); });
    details.addEventListener("click", function () { showDetails(id); });
    cells.actions.appendChild(cancel);
    cells.actions.appendChild(retry);
    cells.actions.appendChild(details);
    return { tr: tr, cells: cells, badge: badge, cancel: cancel, retry: retry, stateText: null };
  }

  function button(label, style, action) {
    var b = el("button", "btn btn-sm " + style, label);
    b.type = "button";
    b.setAttribute("data-action", action);
    return b;
  }

  function updateRow(row, t) {
    var c = row.cells;
    c.name.textContent = t.name || "—";
    if (row.stateText !== t.state) {
      row.stateText = t.state;
      row.badge.textContent = t.state;
      row.badge.className = "badge " + (BADGES[t.state] || "text-bg-secondary");
      row.tr.setAttribute("data-state", t.state);
    }
    c.id.textContent = t.id;
    var args = asText(t.args);
    var kwargs = t.kwargs && Object.keys(t.kwargs).length ? " " + asText(t.kwargs) : "";
    c.args.textContent = args + kwargs;
    c.args.title = args + kwargs;
    c.worker.textContent = t.worker || "—";
    c.queue.textContent = t.queue || "—";
    c.time.textContent = fmtTime(taskTime(t));
    c.runtime.textContent = t.runtime !== null && t.runtime !== undefined ? fmtSeconds(t.runtime) : "";
    row.cancel.disabled = !CANCELLABLE[t.state] || row.cancel.getAttribute("data-busy") === "1";
    row.retry.disabled = !RETRYABLE[t.state] || row.retry.getAttribute("data-busy") === "1";
  }

  function renderNames() {
    var list = document.getElementById("fo-names");
    if (list.children.length === state.names.size) { return; }
    clear(list);
    Array.from(state.names).sort().forEach(function (name) {
      var option = el("option");
      option.value = name;
      list.appendChild(option);
    });
  }

  // -- actions and details -----------------------------------------------------------

  function api(method, path, body) {
    var ready = tokenFresh() ? Promise.resolve(state.token) : fetchToken();
    return ready.then(function (token) {
      return fetch(API + path, {
        method: method, cache: "no-store",
        headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body)
      });
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var error = new Error(asText(data.error || ("HTTP " + response.status)));
          error.status = response.status;
          throw error;
        }
        return data;
      });
    });
  }

  function act(id, action, btn) {
    btn.disabled = true;
    btn.setAttribute("data-busy", "1");
    api("POST", "/tasks/" + encodeURIComponent(id) + "/" + action, {}).then(function (result) {
      if (action === "retry") {
        notice("success", "Retried " + id + " as " + asText(result.new_id || result.retried_as));
      } else {
        notice("success", "Cancelled " + id + " (" + asText(result.outcome || result.state) + ")");
      }
    }).catch(function (error) {
      notice("danger", "Could not " + action + " " + id + ": " + error.message);
    }).then(function () {
      btn.removeAttribute("data-busy");
      var task = state.tasks.get(id);
      var row = state.rows.get(id);
      if (task && row) { updateRow(row, task); }
    });
  }

  var DETAIL_FIELDS = [
    "id", "name", "state", "worker", "queue", "routing_key", "exchange", "retries",
    "parent_id", "root_id", "retry_of", "retried_as", "runtime", "eta", "expires", "source"
  ];
  var TIME_FIELDS = ["sent", "received", "started", "succeeded", "failed", "retried", "revoked"];

  function showDetails(id) {
    var body = document.getElementById("fo-details-body");
    setText("fo-details-title", "Task " + id);
    clear(body);
    body.appendChild(el("p", "text-body-secondary", "Loading…"));
    var modal = window.bootstrap.Modal.getOrCreateInstance(document.getElementById("fo-details"));
    modal.show();
    api("GET", "/tasks/" + encodeURIComponent(id)).then(function (task) {
      clear(body);
      body.appendChild(detailTable(task));
      body.appendChild(section("Arguments", pretty(task.args)));
      body.appendChild(section("Keyword arguments", pretty(task.kwargs)));
      body.appendChild(section("Result", pretty(task.result)));
      if (task.exception) { body.appendChild(section("Exception", task.exception)); }
      if (task.traceback) { body.appendChild(section("Traceback", task.traceback)); }
      body.appendChild(historyTable(task.history || []));
      if (task.children && task.children.length) {
        body.appendChild(section("Children", task.children.join("\n")));
      }
      var known = new Set(DETAIL_FIELDS.concat(TIME_FIELDS, ["args", "kwargs", "result",
        "exception", "traceback", "history", "children", "args_exact", "timestamp",
        "trace_id", "trace_url"]));
      var extra = {};
      Object.keys(task).forEach(function (key) { if (!known.has(key)) { extra[key] = task[key]; } });
      if (Object.keys(extra).length) { body.appendChild(section("More", pretty(extra))); }
    }).catch(function (error) {
      clear(body);
      body.appendChild(el("div", "alert alert-danger", "Could not load the task: " + error.message));
    });
  }

  function detailTable(task) {
    var table = el("table", "table table-sm fo-detail-table");
    table.setAttribute("data-testid", "fo-detail-fields");
    var tbody = el("tbody");
    DETAIL_FIELDS.forEach(function (key) {
      if (!(key in task)) { return; }
      var value = key === "runtime" ? fmtSeconds(task[key]) : task[key];
      tbody.appendChild(kvRow(key, value === null || value === undefined ? "—" : asText(value)));
    });
    TIME_FIELDS.forEach(function (key) {
      if (task[key]) { tbody.appendChild(kvRow(key, fmtDateTime(task[key]))); }
    });
    if (task.trace_id) { tbody.appendChild(traceRow(task)); }
    table.appendChild(tbody);
    return table;
  }

  // The trace id, linked to FLOWER_OPS_TRACE_URL's page when configured
  function traceRow(task) {
    var row = kvRow("trace", "");
    var cell = row.querySelector("td");
    if (task.trace_url && /^https?:\/\//i.test(task.trace_url)) {
      var link = el("a", null, String(task.trace_id));
      link.href = task.trace_url;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      link.setAttribute("data-testid", "fo-trace-link");
      cell.appendChild(link);
    } else {
      cell.textContent = String(task.trace_id);
    }
    return row;
  }

  function kvRow(key, value) {
    var tr = el("tr");
    tr.appendChild(el("th", null, key));
    var td = el("td", null, value);
    td.setAttribute("data-field", key);
    tr.appendChild(td);
    return tr;
  }

  function section(title, text) {
    var wrap = el("div", "mb-3");
    wrap.appendChild(el("h3", "fs-6", title));
    wrap.appendChild(el("pre", "fo-detail-pre", text));
    return wrap;
  }

  function historyTable(history) {
    var wrap = el("div", "mb-3");
    wrap.appendChild(el("h3", "fs-6", "History"));
    var table = el("table", "table table-sm");
    table.setAttribute("data-testid", "fo-history");
    var tbody = el("tbody");
    history.forEach(function (step) {
      var tr = el("tr");
      tr.appendChild(el("td", null, step.state || step.status || ""));
      tr.appendChild(el("td", null, fmtDateTime(step.timestamp || step.at)));
      var rest = Object.assign({}, step);
      delete rest.state; delete rest.timestamp;
      tr.appendChild(el("td", "text-body-secondary", Object.keys(rest).length ? asText(rest) : ""));
      tbody.appendChild(tr);
    });
    table.appendChild(tbody);
    wrap.appendChild(table);
    return wrap;
  }

  // -- stats, charts, workers, queues, alerts -------------------------------------------

  function renderStats(stats, queues) {
    var tasks = stats.tasks || {};
    var byState = tasks.by_state || {};
    setText("fo-stat-total", fmtNumber(tasks.total));
    // STARTED in the index: the same count, at the same moment, as the sum of
    // the worker cards' Active (each worker's STARTED tasks) in this snapshot
    setText("fo-stat-running", fmtNumber(byState.STARTED || 0));
    setText("fo-stat-success-rate",
      stats.success_rate === null || stats.success_rate === undefined ? "—"
        : (stats.success_rate * 100).toFixed(1) + "%");
    setText("fo-stat-failed", fmtNumber(byState.FAILURE));
    var workers = stats.workers || {};
    setText("fo-stat-workers", fmtNumber(workers.online) + " / " + fmtNumber(workers.offline));
    var qt = stats.queues || {};
    setText("fo-stat-queued", fmtNumber(qt.messages) + " / " + fmtNumber(qt.unacked));

    var perMinute = (stats.throughput || {})["1m"];
    if (perMinute !== undefined) {
      push(state.throughput, perMinute);
      setText("fo-throughput-now", fmtNumber(perMinute));
    }
    var failed = ((stats.completed_15m || {}).failure);
    if (failed !== undefined) {
      var delta = state.lastFailed === null ? 0 : Math.max(0, failed - state.lastFailed);
      state.lastFailed = failed;
      push(state.failures, delta);
      setText("fo-failures-now", fmtNumber(delta));
    }
    drawChart("fo-chart-throughput", state.throughput);
    drawChart("fo-chart-failures", state.failures);
  }

  function push(series, value) {
    series.push(Number(value) || 0);
    if (series.length > CHART_POINTS) { series.shift(); }
  }

  function drawChart(id, series) {
    var svg = document.getElementById(id);
    var ns = "http://www.w3.org/2000/svg";
    clear(svg);
    if (series.length < 2) { return; }
    var w = 300, h = 60, pad = 2;
    var max = Math.max.apply(null, series.concat([1]));
    var step = w / (CHART_POINTS - 1);
    var offset = (CHART_POINTS - series.length) * step;
    var points = series.map(function (v, i) {
      return (offset + i * step).toFixed(1) + "," + (h - pad - (v / max) * (h - 2 * pad)).toFixed(1);
    });
    var area = document.createElementNS(ns, "polygon");
    area.setAttribute("points", offset.toFixed(1) + "," + h + " " + points.join(" ") + " " + w + "," + h);
    var line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.join(" "));
    svg.appendChild(area);
    svg.appendChild(line);
  }

  function renderWorkers(workers) {
    var box = document.getElementById("fo-workers");
    clear(box);
    if (!workers.length) {
      box.appendChild(el("p", "text-body-secondary", "No workers seen yet."));
      return;
    }
    workers.forEach(function (w) {
      var online = w.status === "online";
      var card = el("article", "fo-worker" + (online ? "" : " fo-worker-offline"));
      card.setAttribute("data-worker", w.hostname);
      var head = el("div", "fo-worker-name");
      head.appendChild(el("span", null, w.hostname));
      head.appendChild(el("span", "badge " + (online ? "text-bg-success" : "text-bg-secondary"),
        w.status || "unknown"));
      card.appendChild(head);
      var dl = el("dl");
      var memory = w.memory || {};
      var pool = w.pool || {};
      [
        ["Active", fmtNumber(w.active)],
        ["Processed", fmtNumber(w.processed)],
        ["Load", (w.loadavg || []).map(function (x) { return Number(x).toFixed(2); }).join(" ") || "—"],
        ["Memory", fmtBytes(memory.rss_bytes) + (memory.kind === "max_rss" ? " (max)" : "")],
        // The pool as Celery's -P names it (prefork, threads, solo, ...)
        ["Concurrency", fmtNumber(w.max_concurrency) + (pool.implementation ? " · " + pool.implementation : "")],
        ["Queues", (w.queues || []).join(", ") || "—"],
        ["Heartbeat", w.heartbeat_age_seconds !== null && w.heartbeat_age_seconds !== undefined
          ? fmtSeconds(w.heartbeat_age_seconds) + " ago" : "—"]
      ].forEach(function (pair) {
        dl.appendChild(el("dt", null, pair[0]));
        var dd = el("dd", null, pair[1]);
        dd.setAttribute("data-field", pair[0].toLowerCase());
        dl.appendChild(dd);
      });
      card.appendChild(dl);
      box.appendChild(card);
    });
  }

  function renderQueues(queues, error) {
    var tbody = document.querySelector("#fo-queues tbody");
    clear(tbody);
    if (!queues) {
      var tr = el("tr");
      var td = el("td", "text-body-secondary", error || "Broker not polled yet");
      td.colSpan = 7;
      tr.appendChild(td);
      tbody.appendChild(tr);
      return;
    }
    queues.forEach(function (q) {
      var tr = el("tr");
      tr.setAttribute("data-queue", q.name);
      tr.appendChild(el("td", null, q.name));
      [q.messages, q.unacked, q.consumers].forEach(function (v) {
        tr.appendChild(el("td", "text-end", fmtNumber(v)));
      });
      [q.rate_in, q.rate_out].forEach(function (v) {
        tr.appendChild(el("td", "text-end", v === null || v === undefined ? "—" : Number(v).toFixed(2)));
      });
      var age = q.oldest_message_age_seconds !== undefined ? q.oldest_message_age_seconds : q.oldest_age_seconds;
      tr.appendChild(el("td", "text-end", age === null || age === undefined ? "—" : fmtSeconds(age)));
      tbody.appendChild(tr);
    });
  }

  function applyAlert(event, alert) {
    if (!state.alerts) { state.alerts = new Map(); }
    var key = alert.id || (asText(alert.kind) + ":" + asText(alert.subject));
    if (event === "resolved") { state.alerts.delete(key); } else { state.alerts.set(key, alert); }
    renderAlerts(Array.from(state.alerts.values()));
  }

  function renderAlerts(alerts) {
    var box = document.getElementById("fo-alerts");
    clear(box);
    alerts.forEach(function (a) {
      var severity = String(a.severity || a.level || "warning").toLowerCase();
      var kind = severity === "critical" || severity === "error" ? "danger"
        : severity === "info" ? "info" : "warning";
      var banner = el("div", "alert alert-" + kind);
      banner.setAttribute("role", "alert");
      banner.setAttribute("data-alert", asText(a.kind || a.type || a.id || ""));
      banner.appendChild(el("strong", null, asText(a.title || a.kind || a.type || "Alert") + ": "));
      banner.appendChild(document.createTextNode(asText(a.message || a.detail || a.description || "")));
      box.appendChild(banner);
    });
  }

  // -- filters -----------------------------------------------------------------------

  function readFilters() {
    var filters = {};
    var st = document.getElementById("fo-filter-state").value;
    var name = document.getElementById("fo-filter-name").value.trim();
    var queue = document.getElementById("fo-filter-queue").value.trim();
    if (st) { filters.state = [st]; }
    if (name) { filters.name = [name]; }
    if (queue) { filters.queue = [queue]; }
    return filters;
  }

  document.getElementById("fo-filters").addEventListener("submit", function (event) {
    event.preventDefault();
    state.filters = readFilters();
    send({ type: "subscribe", filters: state.filters, limit: SNAPSHOT_LIMIT });
  });
  document.getElementById("fo-filter-state").addEventListener("change", function () {
    state.filters = readFilters();
    send({ type: "subscribe", filters: state.filters, limit: SNAPSHOT_LIMIT });
  });
  document.getElementById("fo-filters").addEventListener("reset", function () {
    setTimeout(function () {
      state.filters = {};
      send({ type: "subscribe", filters: {}, limit: SNAPSHOT_LIMIT });
    }, 0);
  });

  window.addEventListener("pagehide", function () {
    state.stopped = true;
    if (state.ws) { state.ws.close(1000); }
  });

  connect();
}());

/* Flower Ops console: the live feed (docs/live-feed.md) and the alerts it carries.
 * The page subscribes to a window: the newest FO.WINDOW_LIMIT tasks (the
 * overview's grid) plus the tasks the current view shows (FO.watch(ids)); it
 * receives those rows' changes and fresh numbers, not every task change.
 * Emits "snapshot", "numbers" (fresh figures), "tasks" (whole rows that
 * changed, removed ids), "left" (ids that left the window), "alerts".
 */
(function () {
  "use strict";
  var FO = window.FO;
  if (!FO) { return; }
  var el = FO.el;

  var WINDOW_LIMIT = FO.WINDOW_LIMIT = 30;
  var WATCH_DELAY_MS = 150;
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 10000;
  var feed = FO.feed = {
    ws: null, lastSeq: null, instance: null, backoff: BACKOFF_MIN_MS, reconnectTimer: null, stopped: false,
    filters: {}, alerts: new Map(), ids: [], rows: new Map(), watchTimer: null
  };

  function subscription(type) {
    return { type: type, mode: "window", filters: feed.filters, limit: WINDOW_LIMIT, ids: feed.ids };
  }

  // Alerts in words, for people
  FO.ALERT_WORDS = {
    stuck_task: "Stuck task", orphaned_task: "Orphaned task", queue_backlog: "Queue backlog",
    worker_offline: "Worker offline", worker_saturated: "Worker saturated",
    monitor_key_mismatch: "Monitors disagree on the token key"
  };

  function setConnection(kind, text) {
    var label = document.getElementById("fo-conn");
    var dot = document.getElementById("fo-conn-dot");
    label.setAttribute("data-state", kind);
    label.textContent = text;
    dot.classList.toggle("status-dot-live", kind === "live");
    dot.classList.toggle("status-dot-error", kind === "disconnected");
  }

  function connect() {
    feed.reconnectTimer = null;
    if (feed.stopped) { return; }
    setConnection("connecting", "Connecting…");
    FO.ready().then(openSocket).catch(function (error) {
      setConnection("disconnected", "Disconnected — " + error.message);
      scheduleReconnect();
    });
  }

  function openSocket(token) {
    var ws = new WebSocket(FO.WS_URL);
    feed.ws = ws;
    ws.onopen = function () {
      var auth = subscription("auth");
      auth.token = token;
      // seqs are one monitor's: the instance tells another (behind a load
      // balancer) to answer with a fresh snapshot rather than a wrong replay
      if (feed.lastSeq !== null) { auth.resume = feed.lastSeq; auth.instance = feed.instance; }
      ws.send(JSON.stringify(auth));
    };
    ws.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (typeof message.seq === "number") { feed.lastSeq = message.seq; }
      if (typeof message.instance === "string") { feed.instance = message.instance; }
      handle(message);
    };
    ws.onclose = function (event) {
      if (feed.ws !== ws) { return; }
      feed.ws = null;
      if (event.code === 4003) {
        feed.stopped = true;
        setConnection("disconnected", "Not allowed: your token lacks monitoring:read");
        return;
      }
      if (event.code === 4001) { FO.token = null; }
      setConnection("disconnected", "Disconnected — reconnecting…");
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (feed.reconnectTimer || feed.stopped) { return; }
    // Capped exponential backoff with full jitter
    var delay = Math.random() * feed.backoff + BACKOFF_MIN_MS / 2;
    feed.backoff = Math.min(BACKOFF_MAX_MS, feed.backoff * 2);
    feed.reconnectTimer = setTimeout(connect, delay);
  }

  function handle(message) {
    switch (message.type) {
      case "snapshot":
        feed.backoff = BACKOFF_MIN_MS;
        setConnection("live", "Live");
        feed.rows = new Map();
        (message.tasks || []).forEach(function (t) { feed.rows.set(t.id, t); });
        FO.emit("snapshot", message);
        numbers(message);
        break;
      case "numbers":
        setConnection("live", "Live");
        FO.emit("numbers", message);
        numbers(message);
        break;
      case "view":
        setConnection("live", "Live");
        applyView(message);
        break;
      case "tasks":
        setConnection("live", "Live");
        FO.emit("tasks", message.tasks || [], message.removed || []);
        break;
      case "alert":
        applyAlert(message.event, message.alert || {});
        break;
      case "resumed":
        feed.backoff = BACKOFF_MIN_MS;
        setConnection("live", "Live");
        break;
      case "error":
        FO.notice("warning", "Feed: " + FO.asText(message.error));
        break;
      default:
        break;
    }
  }

  // Fresh figures (a snapshot's or a numbers message): the alerts they carry
  function numbers(message) {
    feed.alertsTotal = (message.stats || {}).alerts_total;
    if (message.alerts) {   // left out of a numbers message when unchanged
      feed.alerts = new Map();
      message.alerts.forEach(function (a, i) { feed.alerts.set(a.id || String(i), a); });
    }
    renderAlertCount();
    FO.emit("alerts", activeAlerts());
  }

  // A window change: rows new to it come whole, rows it holds only with the
  // fields that changed (null: the field is gone), ids that left it
  function applyView(message) {
    var changed = [];
    (message.rows || []).forEach(function (t) { feed.rows.set(t.id, t); changed.push(t); });
    (message.changed || []).forEach(function (delta) {
      var row = Object.assign({}, feed.rows.get(delta.id) || {}, delta);
      Object.keys(row).forEach(function (k) { if (row[k] === null) { delete row[k]; } });
      feed.rows.set(delta.id, row);
      changed.push(row);
    });
    (message.left || []).forEach(function (id) { feed.rows.delete(id); });
    if (changed.length) { FO.emit("tasks", changed, []); }
    if ((message.left || []).length) { FO.emit("left", message.left); }
    FO.emit("total", message.total);
  }

  // The tasks the current view shows, besides the window: their changes come
  // on the feed too (a task page, the rows of a listing, a workflow's steps)
  FO.watch = function (ids) {
    var next = (ids || []).slice(0, 500).sort();
    if (next.join(",") === feed.ids.join(",")) { return; }
    feed.ids = next;
    if (feed.watchTimer) { clearTimeout(feed.watchTimer); }
    feed.watchTimer = setTimeout(function () {
      feed.watchTimer = null;
      FO.send(subscription("subscribe"));
    }, WATCH_DELAY_MS);
  };

  FO.send = function (message) {
    if (feed.ws && feed.ws.readyState === WebSocket.OPEN) {
      feed.ws.send(JSON.stringify(message));
    }
  };
  FO.subscribe = function (filters) {
    feed.filters = filters;
    FO.send(subscription("subscribe"));
  };
  FO.on("token", function (token) {
    // A fresh token on the open socket keeps it open past the old expiry
    FO.send({ type: "auth", token: token });
  });

  function applyAlert(event, alert) {
    var key = alert.id || (FO.asText(alert.kind) + ":" + FO.asText(alert.subject));
    if (event === "resolved") { feed.alerts.delete(key); } else { feed.alerts.set(key, alert); }
    renderAlertCount();
    FO.emit("alerts", activeAlerts());
  }

  function activeAlerts() { return Array.from(feed.alerts.values()); }
  FO.activeAlerts = activeAlerts;

  // The task ids marked stuck or orphaned, for the rows
  FO.taskMarks = function () {
    var marks = {};
    feed.alerts.forEach(function (a) {
      var id = (a.details || {}).task_id || (/_task$/.test(a.kind || "") ? a.subject : null);
      if (id) { marks[id] = a.kind === "orphaned_task" ? "orphaned" : "stuck"; }
    });
    return marks;
  };

  // The alert count, in the console's header on every view
  function renderAlertCount() {
    // The count of every active alert; the list holds the most severe 100
    var n = typeof feed.alertsTotal === "number" ? Math.max(feed.alertsTotal, feed.alerts.size) : feed.alerts.size;
    var badge = document.getElementById("fo-alert-count");
    badge.textContent = String(n);
    badge.className = "badge rounded-pill " + (n ? "text-bg-danger" : "text-bg-secondary");
    var link = document.getElementById("fo-alert-link");
    link.title = n + " active alert" + (n === 1 ? "" : "s");
    link.setAttribute("data-count", String(n));
  }

  // One alert, in words: what, since when, how bad, a link and an action
  FO.alertItem = function (a) {
    var severity = String(a.severity || "warning").toLowerCase();
    var kind = severity === "critical" ? "danger" : severity === "info" ? "info" : "warning";
    var item = el("div", "alert alert-" + kind + " fo-alert");
    item.setAttribute("role", "alert");
    item.setAttribute("data-alert", FO.asText(a.kind || a.id || ""));
    var head = el("div", "fo-alert-head");
    head.appendChild(el("strong", null, FO.ALERT_WORDS[a.kind] || FO.asText(a.kind || "Alert")));
    head.appendChild(el("span", "badge text-bg-" + kind + " border", severity));
    var since = el("span", "fo-alert-since", "since ");
    since.appendChild(FO.timeEl(a.since, true));
    head.appendChild(since);
    item.appendChild(head);
    item.appendChild(el("div", "fo-alert-message", FO.asText(a.message || "")));
    var actions = el("div", "fo-alert-actions");
    var d = a.details || {};
    var taskId = d.task_id || (/_task$/.test(a.kind || "") ? a.subject : null);
    if (taskId) {
      actions.appendChild(FO.link("/tasks/" + encodeURIComponent(taskId), "Open task", "btn btn-sm btn-light"));
      if (FO.cancelButton) { actions.appendChild(FO.cancelButton(taskId, d.task_name, "STARTED", item)); }
    }
    var worker = d.worker || (/^worker_/.test(a.kind || "") ? a.subject : null);
    if (worker) {
      actions.appendChild(FO.link("/workers" + FO.query({ name: worker }), "Open worker " + worker,
        "btn btn-sm btn-light"));
    }
    var queue = d.queue || (/^queue_/.test(a.kind || "") ? a.subject : null);
    if (queue) {
      actions.appendChild(FO.link("/queues" + FO.query({ name: queue }), "Open queue " + queue,
        "btn btn-sm btn-light"));
    }
    item.appendChild(actions);
    return item;
  };

  window.addEventListener("pagehide", function () {
    feed.stopped = true;
    if (feed.ws) { feed.ws.close(1000); }
  });

  FO.connect = connect;
}());

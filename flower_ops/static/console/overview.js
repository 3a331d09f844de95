/* Flower Ops console: the overview (/monitoring): figures, alerts, workers,
 * queues and the live grid of the newest tasks, all from the feed.
 */
(function () {
  "use strict";
  var FO = window.FO;
  if (!FO) { return; }
  var el = FO.el;
  var MAX_ROWS = FO.WINDOW_LIMIT || 30;   // the feed's window: the newest tasks
  var grid = { tasks: new Map(), rows: new Map(), renderQueued: false };

  function taskMs(t) { return FO.instantMs(FO.taskTime(t)) || 0; }

  // The figures of a snapshot or of a numbers message (every 2 s)
  function renderNumbers(message) {
    renderStats(message.stats || {});
    renderWorkers(message.workers || []);
    renderQueues(message.queues, message.queues_error);
    FO.lastSnapshot = Object.assign({}, FO.lastSnapshot || {}, message);
  }
  function renderTotal(total) {
    var shown = Math.min(MAX_ROWS, total || 0);
    FO.setText("fo-task-count", "(the " + FO.fmtNumber(shown) + " newest of " + FO.fmtNumber(total) + " in memory)");
  }

  FO.on("snapshot", function (message) {
    grid.tasks = new Map();
    (message.tasks || []).forEach(function (t) { grid.tasks.set(t.id, t); });
    renderNumbers(message);
    renderTotal(message.total);
    queueRender();
  });
  FO.on("numbers", renderNumbers);
  FO.on("total", renderTotal);

  FO.on("tasks", function (tasks, removed) {
    tasks.forEach(function (t) { grid.tasks.set(t.id, t); });
    removed.forEach(function (id) { grid.tasks.delete(id); });
    queueRender();
  });
  FO.on("left", function (ids) {
    ids.forEach(function (id) { grid.tasks.delete(id); });
    queueRender();
  });

  FO.on("patch", function (patch) {
    var t = grid.tasks.get(patch.id);
    if (t) { grid.tasks.set(patch.id, Object.assign({}, t, patch)); queueRender(); }
  });

  // Alerts keep their element while active (an action's feedback stays with
  // it); only the message, which counts the seconds, is rewritten
  var alertNodes = new Map();
  FO.on("alerts", function (alerts) {
    var box = document.getElementById("fo-alerts");
    var keep = new Set();
    alerts.forEach(function (a, index) {
      var key = a.id || (a.kind + ":" + a.subject);
      keep.add(key);
      var node = alertNodes.get(key);
      if (!node) {
        node = FO.alertItem(a);
        alertNodes.set(key, node);
      } else {
        node.querySelector(".fo-alert-message").textContent = FO.asText(a.message || "");
      }
      if (box.children[index] !== node) { box.insertBefore(node, box.children[index] || null); }
    });
    alertNodes.forEach(function (node, key) {
      if (!keep.has(key)) { node.remove(); alertNodes.delete(key); }
    });
    FO.setText("fo-alerts-empty", alerts.length ? "" : "No active alerts.");
    grid.rows.forEach(function (row, id) { row.update(grid.tasks.get(id) || {}); });
  });

  function queueRender() {
    if (grid.renderQueued) { return; }
    grid.renderQueued = true;
    requestAnimationFrame(function () {
      grid.renderQueued = false;
      renderTasks();
    });
  }

  function renderTasks() {
    var ordered = Array.from(grid.tasks.values()).sort(function (a, b) { return taskMs(b) - taskMs(a); });
    if (ordered.length > MAX_ROWS) {
      ordered.slice(MAX_ROWS).forEach(function (t) { grid.tasks.delete(t.id); });
      ordered = ordered.slice(0, MAX_ROWS);
    }
    var tbody = document.querySelector("#fo-tasks tbody");
    var keep = new Set();
    ordered.forEach(function (t, index) {
      keep.add(t.id);
      var row = grid.rows.get(t.id);
      if (!row) {
        row = FO.makeRow(t, false);
        grid.rows.set(t.id, row);
        row.tr.classList.add("fo-row-new");
      } else {
        row.update(t);
      }
      if (tbody.children[index] !== row.tr) { tbody.insertBefore(row.tr, tbody.children[index] || null); }
    });
    grid.rows.forEach(function (row, id) {
      if (!keep.has(id)) { row.tr.remove(); grid.rows.delete(id); }
    });
  }

  function renderStats(stats) {
    var tasks = stats.tasks || {};
    var byState = tasks.by_state || {};
    FO.setText("fo-stat-total", FO.fmtNumber(tasks.total));
    // STARTED in the index: the same count, at the same moment, as the sum of
    // the worker cards' Active (each worker's STARTED tasks) in this snapshot
    FO.setText("fo-stat-running", FO.fmtNumber(byState.STARTED || 0));
    FO.setText("fo-stat-success-rate",
      stats.success_rate === null || stats.success_rate === undefined ? "—"
        : (stats.success_rate * 100).toFixed(1) + "%");
    FO.setText("fo-stat-failed", FO.fmtNumber(byState.FAILURE));
    var workers = stats.workers || {};
    FO.setText("fo-stat-workers", FO.fmtNumber(workers.online) + " / " + FO.fmtNumber(workers.offline));
    var qt = stats.queues || {};
    FO.setText("fo-stat-queued", FO.fmtNumber(qt.messages) + " / " + FO.fmtNumber(qt.unacked));
    FO.setText("fo-stat-throughput", FO.fmtNumber((stats.throughput || {})["1m"]));
  }

  function renderWorkers(workers) {
    var box = document.getElementById("fo-workers");
    FO.clear(box);
    if (!workers.length) {
      box.appendChild(el("p", "text-body-secondary", "No workers seen yet."));
      return;
    }
    workers.forEach(function (w) { box.appendChild(FO.workerCard(w)); });
  }

  FO.workerCard = function (w) {
    var online = w.status === "online";
    var card = el("article", "fo-worker" + (online ? "" : " fo-worker-offline"));
    card.setAttribute("data-worker", w.hostname);
    var head = el("div", "fo-worker-name");
    head.appendChild(FO.link("/workers" + FO.query({ name: w.hostname }), w.hostname));
    head.appendChild(el("span", "badge " + (online ? "text-bg-success" : "text-bg-secondary"),
      w.status || "unknown"));
    card.appendChild(head);
    var dl = el("dl");
    var memory = w.memory || {};
    var pool = w.pool || {};
    [
      ["Active", FO.fmtNumber(w.active)],
      ["Processed", FO.fmtNumber(w.processed)],
      ["Load", (w.loadavg || []).map(function (x) { return Number(x).toFixed(2); }).join(" ") || "—"],
      ["Memory", FO.fmtBytes(memory.rss_bytes) + (memory.kind === "max_rss" ? " (max)" : "")],
      // The pool as Celery's -P names it (prefork, threads, solo, ...)
      ["Concurrency", FO.fmtNumber(w.max_concurrency) + (pool.implementation ? " · " + pool.implementation : "")],
      ["Queues", (w.queues || []).join(", ") || "—"],
      ["Heartbeat", w.heartbeat_age_seconds !== null && w.heartbeat_age_seconds !== undefined
        ? FO.fmtSeconds(w.heartbeat_age_seconds) + " ago" : "—"]
    ].forEach(function (pair) {
      dl.appendChild(el("dt", null, pair[0]));
      var dd = el("dd", null, pair[1]);
      dd.setAttribute("data-field", pair[0].toLowerCase());
      dl.appendChild(dd);
    });
    card.appendChild(dl);
    return card;
  };

  function renderQueues(queues, error) {
    var tbody = document.querySelector("#fo-queues tbody");
    FO.clear(tbody);
    if (!queues) {
      var tr = el("tr");
      var td = el("td", "text-body-secondary", error || "Broker not polled yet");
      td.colSpan = 7;
      tr.appendChild(td);
      tbody.appendChild(tr);
      return;
    }
    queues.forEach(function (q) { tbody.appendChild(FO.queueRow(q)); });
  }

  FO.queueRow = function (q) {
    var tr = el("tr");
    tr.setAttribute("data-queue", q.name);
    var name = el("td");
    name.appendChild(FO.link("/queues" + FO.query({ name: q.name }), q.name));
    tr.appendChild(name);
    [q.messages, q.unacked, q.consumers].forEach(function (v) {
      tr.appendChild(el("td", "text-end fo-num", FO.fmtNumber(v)));
    });
    [q.rate_in, q.rate_out].forEach(function (v) {
      tr.appendChild(el("td", "text-end fo-num", v === null || v === undefined ? "—" : Number(v).toFixed(2)));
    });
    var age = q.oldest_message_age_seconds;
    tr.appendChild(el("td", "text-end fo-num", age === null || age === undefined ? "—" : FO.fmtSeconds(age)));
    return tr;
  };

  FO.on("timezone", function () {
    grid.rows.forEach(function (row, id) { row.update(grid.tasks.get(id) || {}); });
  });
}());

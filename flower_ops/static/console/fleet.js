/* Flower Ops console: the workers (/monitoring/workers) and queues
 * (/monitoring/queues) views; ?name= opens one of them.
 */
(function () {
  "use strict";
  var FO = window.FO;
  if (!FO) { return; }
  var el = FO.el;
  var fleet = { rows: new Map(), seq: 0 };

  function selected() { return new URLSearchParams(location.search).get("name"); }

  function taskTable(box, tasks, emptyText) {
    fleet.rows = new Map();
    var wrap = el("div", "table-responsive");
    var table = el("table", "table table-hover align-middle fo-table fo-task-table");
    FO.tableHead(table, false);
    var tbody = el("tbody");
    tasks.forEach(function (t) {
      var row = FO.makeRow(t, false);
      fleet.rows.set(t.id, row);
      tbody.appendChild(row.tr);
    });
    FO.watch(Array.from(fleet.rows.keys()));   // these rows follow the feed
    table.appendChild(tbody);
    wrap.appendChild(table);
    box.appendChild(wrap);
    if (!tasks.length) { box.appendChild(el("p", "text-body-secondary", emptyText)); }
  }

  function dl(pairs) {
    var list = el("dl", "fo-kv");
    pairs.forEach(function (p) {
      list.appendChild(el("dt", null, p[0]));
      var dd = el("dd");
      dd.setAttribute("data-field", p[0].toLowerCase());
      if (p[1] instanceof Node) { dd.appendChild(p[1]); } else { dd.textContent = p[1]; }
      list.appendChild(dd);
    });
    return list;
  }

  // -- workers ------------------------------------------------------------------------

  FO.showWorkers = function () {
    var seq = ++fleet.seq;
    fleet.activeWorker = null;
    var list = document.getElementById("fo-workers-list");
    var detail = document.getElementById("fo-worker-detail");
    var name = selected();
    FO.api("GET", "/workers").then(function (answer) {
      if (seq !== fleet.seq) { return; }
      var workers = answer.workers || [];
      FO.clear(list);
      workers.forEach(function (w) { list.appendChild(FO.workerCard(w)); });
      if (!workers.length) { FO.quiet(list, "No workers seen yet."); }
      FO.clear(detail);
      var w = workers.filter(function (x) { return x.hostname === name; })[0];
      if (!name) { return; }
      if (!w) { FO.quiet(detail, "No worker called " + name + "."); return; }
      detail.appendChild(el("h3", "fo-heading", "Worker " + w.hostname));
      var pool = w.pool || {};
      var memory = w.memory || {};
      var hb = el("span", null, w.heartbeat_age_seconds === null || w.heartbeat_age_seconds === undefined
        ? "—" : FO.fmtSeconds(w.heartbeat_age_seconds) + " ago");
      if (w.last_heartbeat) { hb.title = String(w.last_heartbeat); }
      detail.appendChild(dl([
        ["Status", w.status || "unknown"],
        ["Pool", (pool.implementation || "—") + " · " + FO.fmtNumber(w.max_concurrency) + " slots"
          + (pool.processes ? " · processes " + pool.processes.join(", ") : "")],
        ["Memory", FO.fmtBytes(memory.rss_bytes) + (memory.kind === "max_rss" ? " (max RSS)" : " (RSS)")],
        ["Heartbeat", hb],
        ["Queues", (w.queues || []).join(", ") || "—"],
        ["Processed", FO.fmtNumber(w.processed)],
        ["Load", (w.loadavg || []).join(" ") || "—"]
      ]));
      detail.appendChild(el("h3", "fo-heading", "Active tasks"));
      var box = el("div");
      box.id = "fo-worker-tasks";
      detail.appendChild(box);
      fleet.activeWorker = w.hostname;
      fleet.refreshActive = function () {
        return FO.api("GET", "/tasks" + FO.query({ worker: w.hostname, state: "STARTED", limit: 200 })).then(function (page) {
          if (seq !== fleet.seq) { return; }
          FO.clear(box);
          taskTable(box, page.tasks || [], "No task running on this worker.");
        });
      };
      return fleet.refreshActive();
    }).catch(function (error) { FO.quiet(list, "Workers: " + error.message); });
  };

  // -- queues -----------------------------------------------------------------------------

  FO.showQueues = function () {
    var seq = ++fleet.seq;
    fleet.activeWorker = null;
    var tbody = document.querySelector("#fo-queues-all tbody");
    var detail = document.getElementById("fo-queue-detail");
    var name = selected();
    FO.api("GET", "/queues").then(function (answer) {
      if (seq !== fleet.seq) { return; }
      var queues = answer.queues || [];
      FO.clear(tbody);
      queues.forEach(function (q) { tbody.appendChild(FO.queueRow(q)); });
      FO.clear(detail);
      if (!name) { return; }
      var q = queues.filter(function (x) { return x.name === name; })[0];
      detail.appendChild(el("h3", "fo-heading", "Queue " + name));
      if (q) {
        detail.appendChild(dl([
          ["Ready", FO.fmtNumber(q.messages)], ["Unacked", FO.fmtNumber(q.unacked)],
          ["Consumers", FO.fmtNumber(q.consumers)],
          ["Oldest message", q.oldest_message_age_seconds === null || q.oldest_message_age_seconds === undefined
            ? "—" : FO.fmtSeconds(q.oldest_message_age_seconds) + " old"],
          ["Rate in / out", (q.rate_in || 0).toFixed(2) + " / " + (q.rate_out || 0).toFixed(2) + " msg/s"]
        ]));
      } else {
        detail.appendChild(el("p", "text-body-secondary", "The broker does not report this queue now."));
      }
      var chart = el("div", "fo-charts");
      detail.appendChild(chart);
      FO.fetchSeries({ since: new Date(Date.now() - 3600000).toISOString(), queues: name }).then(function (s) {
        var xs = (s.minutes || []).map(function (m) { return FO.instantMs(m) / 1000; });
        FO.lineChart(chart, "Depth of " + name + " over the last hour", xs,
          [{ label: name, values: (s.queues || {})[name] || [] }]);
      }).catch(function (error) {
        FO.quiet(chart, error.status === 404 ? "Depth over time is not served by this monitor yet (GET /series)."
          : "Depth over time: " + error.message);
      });
      detail.appendChild(el("h3", "fo-heading", "Its tasks"));
      var box = el("div");
      detail.appendChild(box);
      var more = FO.link("/tasks" + FO.query({ queue: name }), "Browse all tasks of " + name);
      detail.appendChild(more);
      return FO.api("GET", "/tasks" + FO.query({ queue: name, limit: 50 })).then(function (page) {
        if (seq !== fleet.seq) { return; }
        taskTable(box, page.tasks || [], "No task of this queue in memory.");
      });
    }).catch(function (error) { FO.quiet(detail, "Queues: " + error.message); });
  };

  // A worker's active tasks: a task that ends leaves the list, a new one joins it
  FO.on("tasks", function (tasks) {
    var refresh = false;
    tasks.forEach(function (t) {
      var row = fleet.rows.get(t.id);
      if (row) { row.update(t); }
      if (fleet.activeWorker && t.worker === fleet.activeWorker && (row ? t.state !== "STARTED" : t.state === "STARTED")) {
        refresh = true;
      }
    });
    if (refresh && fleet.refreshActive && !fleet.refreshTimer
        && !document.getElementById("fo-view-workers").hidden) {
      fleet.refreshTimer = setTimeout(function () { fleet.refreshTimer = null; fleet.refreshActive(); }, 1000);
    }
  });
  FO.on("patch", function (patch) {
    var row = fleet.rows.get(patch.id);
    if (row) { row.update(patch); }
  });
}());

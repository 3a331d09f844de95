/* Flower Ops console: a task's own page (/monitoring/tasks/{id}). */
(function () {
  "use strict";
  var FO = window.FO;
  if (!FO) { return; }
  var el = FO.el;
  var page = { id: null, task: null, actions: null, seq: 0 };

  // Every field of GET /tasks/{id}, labelled for people
  var FIELDS = [
    ["id", "Task id"], ["name", "Task name"], ["state", "State"], ["worker", "Worker"],
    ["queue", "Queue"], ["routing_key", "Routing key"], ["exchange", "Exchange"],
    ["retries", "Retries so far"], ["runtime", "Runtime"], ["eta", "Scheduled for (ETA)"],
    ["expires", "Expires"], ["client", "Sent by"], ["source", "Read from"], ["args_exact", "Exact arguments known"]
  ];
  var TIMES = [
    ["sent", "Sent"], ["received", "Received by worker"], ["started", "Started"],
    ["succeeded", "Succeeded"], ["failed", "Failed"], ["retried", "Retried"],
    ["revoked", "Revoked"], ["rejected", "Rejected"], ["timestamp", "Last event"]
  ];
  var LINKS = [["parent_id", "Parent"], ["root_id", "Root (first of the workflow)"],
    ["retry_of", "Retry of"], ["retried_as", "Retried as"]];
  var SHOWN = ["args", "kwargs", "result", "exception", "traceback", "history", "children",
    "trace_id", "trace_url", "workflow_id"];

  FO.showTask = function (id) {
    page.id = id;
    FO.watch([id]);   // its changes come on the feed
    page.task = null;
    var seq = ++page.seq;
    var body = document.getElementById("fo-task-body");
    FO.setText("fo-task-title", "Task " + id);
    FO.clear(body);
    body.appendChild(el("p", "text-body-secondary", "Loading…"));
    FO.api("GET", "/tasks/" + encodeURIComponent(id)).then(function (task) {
      if (seq !== page.seq) { return; }
      page.task = task;
      render(task);
    }).catch(function (error) {
      if (seq !== page.seq) { return; }
      FO.clear(body);
      body.appendChild(el("div", "alert alert-danger", error.status === 404
        ? "No task " + id + " in memory or in PostgreSQL history."
        : "Could not load the task: " + error.message));
    });
  };

  function render(task) {
    var body = document.getElementById("fo-task-body");
    var kept = document.getElementById("fo-task-feedback");
    FO.clear(body);
    FO.setText("fo-task-title", (task.name || "Task") + " · " + FO.shortId(task.id));
    var head = el("div", "fo-task-head");
    head.appendChild(FO.badge(task.state));
    head.setAttribute("data-state", task.state);
    head.id = "fo-task-state";
    var marks = FO.taskMarks();
    if (marks[task.id]) { head.appendChild(el("span", "badge text-bg-warning fo-mark", marks[task.id])); }
    if (task.state === "STARTED" && task.started) {
      head.appendChild(el("span", "text-body-secondary", "running for "));
      head.appendChild(FO.elapsedEl(task.started));
    }
    page.actions = FO.actionGroup(function () { return page.task; },
      function () { return document.getElementById("fo-task-feedback"); }, false);
    page.actions.update(task);
    head.appendChild(page.actions.node);
    var flower = el("a", "btn btn-sm btn-outline-secondary", "Open in Flower");
    flower.href = FO.FLOWER + "/task/" + encodeURIComponent(task.id);
    flower.setAttribute("data-testid", "fo-flower-link");
    head.appendChild(flower);
    if (task.workflow_id) {
      // the chain, group or chord it is a step of, as one tree
      var workflow = FO.link(FO.workflowPath(task.workflow_id), "Workflow", "btn btn-sm btn-outline-secondary");
      workflow.setAttribute("data-testid", "fo-workflow-link");
      workflow.title = "The workflow this task is a step of: " + task.workflow_id;
      head.appendChild(workflow);
    }
    body.appendChild(head);
    var fb = kept && kept.getAttribute("data-for") === task.id ? kept : el("div", "fo-task-feedback");
    fb.id = "fo-task-feedback";
    fb.setAttribute("data-for", task.id);
    body.appendChild(fb);

    var grid = el("div", "fo-task-grid");
    grid.appendChild(fieldTable(task));
    grid.appendChild(timeline(task.history || []));
    body.appendChild(grid);
    body.appendChild(linksSection(task));
    body.appendChild(jsonSection("Arguments", task.args, "args"));
    body.appendChild(jsonSection("Keyword arguments", task.kwargs, "kwargs"));
    body.appendChild(jsonSection("Result", task.result, "result"));
    if (task.exception) { body.appendChild(textSection("Exception", task.exception, "exception")); }
    if (task.traceback) { body.appendChild(textSection("Traceback", task.traceback, "traceback")); }
    var known = new Set(FIELDS.concat(TIMES, LINKS).map(function (f) { return f[0]; }).concat(SHOWN));
    var extra = {};
    Object.keys(task).forEach(function (key) { if (!known.has(key)) { extra[key] = task[key]; } });
    if (Object.keys(extra).length) { body.appendChild(jsonSection("Other fields", extra, "more")); }
  }

  function kvRow(key, label, value) {
    var tr = el("tr");
    tr.appendChild(el("th", null, label));
    var td = el("td");
    td.setAttribute("data-field", key);
    if (value instanceof Node) { td.appendChild(value); } else { td.textContent = value; }
    tr.appendChild(td);
    return tr;
  }

  function fieldTable(task) {
    var table = el("table", "table table-sm fo-detail-table");
    table.setAttribute("data-testid", "fo-detail-fields");
    table.appendChild(el("caption", "fo-caption", "Fields"));
    var tbody = el("tbody");
    FIELDS.forEach(function (f) {
      if (!(f[0] in task)) { return; }
      var v = task[f[0]];
      if (f[0] === "runtime" && (v === null || v === undefined)) {
        var took = FO.runtimeOf(task);
        if (took) {
          tbody.appendChild(kvRow(f[0], f[1], FO.fmtSeconds(took.seconds) + " (from started to failed)"));
          return;
        }
      }
      var text = v === null || v === undefined || v === "" ? "—"
        : f[0] === "runtime" ? FO.fmtSeconds(v)
          : typeof v === "boolean" ? (v ? "yes" : "no") : FO.asText(v);
      if ((f[0] === "eta" || f[0] === "expires") && FO.instantMs(v) !== null) { text = FO.fmtDateTime(v); }
      tbody.appendChild(kvRow(f[0], f[1], text));
    });
    TIMES.forEach(function (f) {
      if (!task[f[0]]) { return; }
      var t = FO.timeEl(task[f[0]]);
      t.setAttribute("data-long", "1");
      t.textContent = FO.fmtDateTime(task[f[0]]);
      tbody.appendChild(kvRow(f[0], f[1], t));
    });
    if (task.trace_id) { tbody.appendChild(traceRow(task)); }
    table.appendChild(tbody);
    return table;
  }

  // The trace id, linked to FLOWER_OPS_TRACE_URL's page when configured
  function traceRow(task) {
    if (task.trace_url && /^https?:\/\//i.test(task.trace_url)) {
      var link = el("a", null, String(task.trace_id));
      link.href = task.trace_url;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      link.setAttribute("data-testid", "fo-trace-link");
      return kvRow("trace", "Trace", link);
    }
    return kvRow("trace", "Trace", String(task.trace_id));
  }

  // The history as a timeline, with the time between steps
  function timeline(history) {
    var wrap = el("section", "fo-timeline");
    wrap.appendChild(el("h3", "fs-6", "History"));
    var table = el("table", "table table-sm");
    table.setAttribute("data-testid", "fo-history");
    var tbody = el("tbody");
    var first = history.length ? FO.instantMs(history[0].timestamp) : null;
    var prev = null;
    history.forEach(function (step) {
      var at = FO.instantMs(step.timestamp);
      var tr = el("tr");
      var s = el("td");
      s.appendChild(FO.badge(step.state || step.status || ""));
      tr.appendChild(s);
      var when = el("td");
      when.appendChild(FO.timeEl(step.timestamp));
      tr.appendChild(when);
      // a step reported earlier than the one before it (publisher and worker
      // clocks differ) reads as a negative gap, not "+-8 ms"
      tr.appendChild(el("td", "fo-num text-end", prev === null || at === null ? "start"
        : (at >= prev ? "+" : "−") + FO.fmtSeconds(Math.abs(at - prev) / 1000)));
      tr.appendChild(el("td", "fo-num text-end text-body-secondary", first === null || at === null ? ""
        : "at " + FO.fmtSeconds((at - first) / 1000)));
      var rest = [];
      if (step.worker) { rest.push(step.worker); }
      if (step.runtime !== undefined && step.runtime !== null) { rest.push("runtime " + FO.fmtSeconds(step.runtime)); }
      if (step.source && step.source !== "event") { rest.push("from " + step.source); }
      tr.appendChild(el("td", "text-body-secondary", rest.join(" · ")));
      tbody.appendChild(tr);
      if (at !== null) { prev = at; }
    });
    table.appendChild(tbody);
    var scroll = el("div", "table-responsive");
    scroll.appendChild(table);
    wrap.appendChild(scroll);
    if (!history.length) { wrap.appendChild(el("p", "text-body-secondary", "No history recorded.")); }
    return wrap;
  }

  function linksSection(task) {
    var wrap = el("section", "fo-links");
    wrap.appendChild(el("h3", "fs-6", "Related tasks"));
    var dl = el("dl", "fo-kv");
    var any = false;
    LINKS.forEach(function (f) {
      var v = task[f[0]];
      if (!v || (f[0] === "root_id" && v === task.id)) { return; }
      any = true;
      dl.appendChild(el("dt", null, f[1]));
      var dd = el("dd");
      dd.setAttribute("data-link", f[0]);
      dd.appendChild(FO.taskLink(v));
      dl.appendChild(dd);
    });
    if (task.children && task.children.length) {
      any = true;
      dl.appendChild(el("dt", null, "Children (" + task.children.length + ")"));
      var dd = el("dd");
      dd.setAttribute("data-link", "children");
      task.children.forEach(function (c) { dd.appendChild(FO.taskLink(c)); dd.appendChild(document.createTextNode(" ")); });
      dl.appendChild(dd);
    }
    if (!any) { wrap.appendChild(el("p", "text-body-secondary", "No parent, children or retries.")); }
    wrap.appendChild(dl);
    return wrap;
  }

  // Formatted, collapsible JSON: objects and arrays fold, leaves are text
  function jsonNode(value, key, depth) {
    var isObj = value !== null && typeof value === "object";
    if (!isObj) {
      var line = el("div", "fo-json-leaf");
      if (key !== null) { line.appendChild(el("span", "fo-json-key", key + ": ")); }
      line.appendChild(el("span", "fo-json-" + (value === null ? "null" : typeof value),
        typeof value === "string" ? JSON.stringify(value) : String(value)));
      return line;
    }
    var keys = Object.keys(value);
    var details = el("details", "fo-json");
    details.open = depth < 2;
    var summary = el("summary");
    if (key !== null) { summary.appendChild(el("span", "fo-json-key", key + ": ")); }
    summary.appendChild(el("span", "text-body-secondary", Array.isArray(value)
      ? "[" + keys.length + " item" + (keys.length === 1 ? "" : "s") + "]"
      : "{" + keys.length + " key" + (keys.length === 1 ? "" : "s") + "}"));
    details.appendChild(summary);
    keys.forEach(function (k) { details.appendChild(jsonNode(value[k], k, depth + 1)); });
    return details;
  }

  function jsonSection(title, value, key) {
    var wrap = el("section", "fo-json-section mb-3");
    wrap.setAttribute("data-section", key);
    wrap.appendChild(el("h3", "fs-6", title));
    var box = el("div", "fo-detail-pre");
    box.appendChild(value === null || value === undefined ? el("span", "text-body-secondary", "—") : jsonNode(value, null, 0));
    wrap.appendChild(box);
    var raw = el("details", "fo-raw");
    raw.appendChild(el("summary", null, "as JSON text"));
    var pre = el("pre", "fo-detail-pre", value === undefined ? "" : JSON.stringify(value, null, 2));
    raw.appendChild(pre);
    wrap.appendChild(raw);
    return wrap;
  }

  function textSection(title, text, key) {
    var wrap = el("section", "mb-3");
    wrap.setAttribute("data-section", key);
    wrap.appendChild(el("h3", "fs-6", title));
    wrap.appendChild(el("pre", "fo-detail-pre", FO.asText(text)));
    return wrap;
  }

  // The page changes at once with an action, and follows the feed
  function follow(t) {
    if (!page.task || t.id !== page.id) { return; }
    var before = page.task.state;
    page.task = Object.assign({}, page.task, t);
    if (t.state && t.state !== before) {
      FO.showTask(page.id);   // a new state brings new fields and history
    } else if (page.actions) {
      page.actions.update(page.task);
    }
  }
  FO.on("tasks", function (tasks) {
    if (!page.id || !document.getElementById("fo-view-task").offsetParent) { return; }
    tasks.forEach(follow);
  });
  FO.on("patch", function (patch) {
    if (!page.task || patch.id !== page.id) { return; }
    page.task = Object.assign({}, page.task, patch);
    var head = document.getElementById("fo-task-state");
    if (patch.state && head) {
      head.setAttribute("data-state", patch.state);
      head.replaceChild(FO.badge(patch.state), head.firstChild);
    }
    page.actions.update(page.task);
  });
}());

/* Flower Ops console: one compact task row, shared by the live grid and the browser. */
(function () {
  "use strict";
  var FO = window.FO;
  if (!FO) { return; }
  var el = FO.el;

  var COLUMNS = [
    ["id", "ID"], ["name", "Name"], ["state", "State"], ["args", "Args"], ["kwargs", "Kwargs"],
    ["worker", "Worker"], ["queue", "Queue"], ["time", "Sent"], ["runtime", "Runtime"],
    ["actions", "Actions"]
  ];
  FO.ROW_COLUMNS = COLUMNS;

  FO.tableHead = function (table, selectable) {
    var thead = el("thead");
    var tr = el("tr");
    if (selectable) {
      var th = el("th", "fo-select");
      var all = el("input", "form-check-input");
      all.type = "checkbox";
      all.setAttribute("data-select", "page");
      all.setAttribute("aria-label", "Select every task on this page");
      th.appendChild(all);
      tr.appendChild(th);
    }
    COLUMNS.forEach(function (c) {
      var th = el("th", c[0] === "runtime" || c[0] === "actions" ? "text-end" : null, c[1]);
      th.setAttribute("scope", "col");
      if (c[0] === "time") { th.appendChild(el("span", "fo-zone text-body-secondary fo-small", " (" + FO.zoneName() + ")")); }
      tr.appendChild(th);
    });
    thead.appendChild(tr);
    table.appendChild(thead);
    return thead;
  };

  function argText(value) {
    if (value === null || value === undefined) { return ""; }
    if (Array.isArray(value) && !value.length) { return ""; }
    if (typeof value === "object" && !Array.isArray(value) && !Object.keys(value).length) { return ""; }
    return FO.asText(value);
  }

  FO.makeRow = function (task, selectable) {
    var current = task;
    var tr = el("tr");
    tr.setAttribute("data-task-id", task.id);
    var cells = {};
    if (selectable) {
      var td = el("td", "fo-select");
      var box = el("input", "form-check-input");
      box.type = "checkbox";
      box.value = task.id;
      box.setAttribute("data-select", "row");
      box.setAttribute("aria-label", "Select task " + task.id);
      td.appendChild(box);
      tr.appendChild(td);
    }
    COLUMNS.forEach(function (c) {
      var cell = el("td");
      cell.setAttribute("data-col", c[0]);
      tr.appendChild(cell);
      cells[c[0]] = cell;
    });
    cells.args.className = "fo-args";
    cells.kwargs.className = "fo-args";
    cells.runtime.className = "text-end fo-num";
    cells.actions.className = "fo-actions";
    cells.id.appendChild(FO.idCell(task.id));
    var actions = FO.actionGroup(function () { return current; }, function () { return cells.actions; }, true);
    cells.actions.appendChild(actions.node);
    var row = { tr: tr, cells: cells, actions: actions, stateText: null, key: null };
    row.update = function (t) {
      current = Object.assign({}, current, t);
      t = current;
      cells.name.textContent = t.name || "—";
      var marks = FO.taskMarks();
      var key = t.state + "|" + (marks[t.id] || "");
      if (row.key !== key) {
        row.key = key;
        FO.clear(cells.state);
        cells.state.appendChild(FO.badge(t.state));
        if (marks[t.id]) {
          var mark = el("span", "badge text-bg-warning ms-1 fo-mark", marks[t.id]);
          mark.setAttribute("data-mark", marks[t.id]);
          mark.title = marks[t.id] === "stuck" ? "Running far longer than usual (stuck task alert)"
            : "Its worker is gone (orphaned task alert)";
          cells.state.appendChild(mark);
        }
      }
      tr.setAttribute("data-state", t.state);
      var args = argText(t.args);
      var kwargs = argText(t.kwargs);
      cells.args.textContent = args;
      cells.args.title = args;
      cells.kwargs.textContent = kwargs;
      cells.kwargs.title = kwargs;
      cells.worker.textContent = t.worker || "—";
      cells.queue.textContent = t.queue || "—";
      var when = FO.taskTime(t);
      var timeKey = when + FO.zoneName();
      if (cells.time.getAttribute("data-key") !== timeKey) {
        cells.time.setAttribute("data-key", timeKey);
        FO.clear(cells.time);
        cells.time.appendChild(FO.timeEl(when));
      }
      FO.clear(cells.runtime);
      if (t.state === "STARTED" && t.started) {
        cells.runtime.appendChild(FO.elapsedEl(t.started));
      } else {
        var took = FO.runtimeOf(t);
        if (took) {
          cells.runtime.textContent = FO.fmtSeconds(took.seconds);
          if (took.derived) { cells.runtime.title = "from started to failed"; }
        }
      }
      actions.update(t);
    };
    row.update(task);
    return row;
  };
}());

/* Flower Ops console: the workflow list (/monitoring/workflows).
 * Chains, groups and chords newest first; the filters live in the query
 * string; pages by cursor (the server's "next", the way back remembered).
 */
(function () {
  "use strict";
  var FO = window.FO;
  if (!FO) { return; }
  var el = FO.el;
  var FILTERS = ["state", "name"];
  var view = { seq: 0, params: null, prevOf: {}, refreshTimer: null };

  // A workflow's overall state, coloured like the task states it sums up
  var WF_BADGES = { running: "fo-state-started", succeeded: "text-bg-success",
    failed: "text-bg-danger", cancelled: "text-bg-dark" };
  FO.workflowBadge = function (wfState) {
    var b = el("span", "badge " + (WF_BADGES[wfState] || "text-bg-secondary"), wfState || "?");
    b.setAttribute("data-workflow-state", wfState || "");
    return b;
  };
  // "5 steps: 2 SUCCESS · 3 FAILURE (2 never sent)", states in the lifecycle's order
  FO.workflowCounts = function (counts) {
    var by = (counts || {}).by_state || {};
    var order = FO.STATES.filter(function (s) { return by[s]; })
      .concat(Object.keys(by).filter(function (s) { return FO.STATES.indexOf(s) < 0 && by[s]; }));
    var total = (counts || {}).total || 0;
    return FO.fmtNumber(total) + " step" + (total === 1 ? "" : "s")
      + (order.length ? ": " + order.map(function (s) { return FO.fmtNumber(by[s]) + " " + s; }).join(" · ") : "")
      + (counts && counts.not_sent ? " (" + FO.fmtNumber(counts.not_sent) + " not sent)" : "");
  };
  FO.workflowPath = function (id) { return "/workflows/" + encodeURIComponent(id); };

  function form() { return document.getElementById("fo-wf-form"); }

  function paramsFromUrl() {
    var q = new URLSearchParams(location.search);
    var p = {};
    FILTERS.concat(["cursor", "limit"]).forEach(function (k) { var v = q.get(k); if (v) { p[k] = v; } });
    return p;
  }

  function readForm() {
    var p = {};
    FILTERS.forEach(function (k) {
      var v = form().elements.namedItem(k).value.trim();
      if (v) { p[k] = v; }
    });
    if (view.params && view.params.limit) { p.limit = view.params.limit; }
    return p;
  }

  function go(p) {
    history.pushState(null, "", FO.PAGE + "/workflows" + FO.query(p));
    FO.route();
  }

  FO.showWorkflows = function () {
    var p = paramsFromUrl();
    view.params = p;
    FILTERS.forEach(function (k) { form().elements.namedItem(k).value = p[k] || ""; });
    load(p, false);
  };

  function load(p, quiet) {
    var seq = ++view.seq;
    var status = document.getElementById("fo-wf-status");
    if (!quiet) { status.textContent = "Loading…"; }
    var q = { state: p.state, name: p.name, cursor: p.cursor, limit: p.limit || 50 };
    FO.api("GET", "/workflows" + FO.query(q)).then(function (page) {
      if (seq === view.seq) { render(page, p); }
    }).catch(function (error) {
      if (seq !== view.seq) { return; }
      var tbody = document.querySelector("#fo-wf-table tbody");
      FO.clear(tbody);
      status.textContent = error.status === 404 ? "This monitor does not list workflows."
        : "Could not list workflows: " + error.message;
    });
  }

  function cell(tr, col, content, className) {
    var td = el("td", className || null);
    td.setAttribute("data-col", col);
    if (content instanceof Node) { td.appendChild(content); } else if (content !== undefined) { td.textContent = content; }
    tr.appendChild(td);
    return td;
  }

  function took(w) {
    var a = FO.instantMs(w.started), b = FO.instantMs(w.finished);
    if (a === null) { return ""; }
    if (b === null) { return w.state === "running" ? "running" : "—"; }
    return FO.fmtSeconds(Math.max(0, b - a) / 1000);
  }

  function row(w) {
    var tr = el("tr");
    tr.setAttribute("data-workflow-id", w.root_id);
    tr.setAttribute("data-state", w.state);
    var who = el("div", "fo-wf-who");
    who.appendChild(FO.link(FO.workflowPath(w.root_id), w.name || "(unnamed)", "fo-wf-name"));
    var id = el("span", "fo-id text-body-secondary", FO.shortId(w.root_id));
    id.title = w.root_id;
    who.appendChild(id);
    cell(tr, "workflow", who);
    cell(tr, "kind", w.kind);
    var st = el("span");
    st.appendChild(FO.workflowBadge(w.state));
    if (w.failed_at) {
      st.appendChild(el("span", "text-body-secondary fo-small ms-1", "at " + FO.shortId(w.failed_at)));
    }
    cell(tr, "state", st);
    cell(tr, "steps", FO.workflowCounts(w.counts), "fo-small");
    cell(tr, "started", FO.timeEl(w.started));
    cell(tr, "took", took(w), "text-end fo-num");
    return tr;
  }

  function render(page, p) {
    var tbody = document.querySelector("#fo-wf-table tbody");
    FO.clear(tbody);
    var list = page.workflows || [];
    list.forEach(function (w) { tbody.appendChild(row(w)); });
    if (!list.length) {
      var tr = el("tr");
      var td = el("td", "text-body-secondary", p.state || p.name ? "No workflow matches these filters."
        : "No workflows yet: chains, groups and chords show here once they are sent.");
      td.colSpan = 6;
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
    var source = list.length ? list[0].source : null;
    document.getElementById("fo-wf-status").textContent = FO.fmtNumber(list.length) + " on this page"
      + (page.next ? " (more on the next)" : "")
      + (source ? " · from " + (source === "db" ? "PostgreSQL history" : source === "memory+db" ? "memory and PostgreSQL" : source) : "");
    if (page.next) { view.prevOf[page.next] = p.cursor || ""; }
    var prev = p.cursor ? view.prevOf[p.cursor] : null;
    pager("fo-wf-prev", p.cursor ? (prev === undefined ? "" : prev) : null, p);
    pager("fo-wf-next", page.next || null, p);
  }

  function pager(id, cursor, p) {
    var b = document.getElementById(id);
    b.disabled = cursor === null || cursor === undefined;
    b.onclick = function () {
      var q = Object.assign({}, p);
      if (cursor) { q.cursor = cursor; } else { delete q.cursor; }
      go(q);
    };
  }

  // The first page follows the feed: new and changing tasks refresh it, at most every 5 s
  FO.on("tasks", function (tasks) {
    if (!tasks.length || view.refreshTimer || document.getElementById("fo-view-workflows").hidden) { return; }
    if (view.params && view.params.cursor) { return; }
    view.refreshTimer = setTimeout(function () {
      view.refreshTimer = null;
      if (!document.getElementById("fo-view-workflows").hidden) { load(view.params || {}, true); }
    }, 5000);
  });
  FO.on("timezone", function () { FO.refreshTimes(document.getElementById("fo-wf-table")); });

  FO.initWorkflows = function () {
    var f = form();
    f.addEventListener("submit", function (event) { event.preventDefault(); go(readForm()); });
    f.addEventListener("reset", function (event) { event.preventDefault(); go({}); });
    f.elements.namedItem("state").addEventListener("change", function () { go(readForm()); });
  };
}());

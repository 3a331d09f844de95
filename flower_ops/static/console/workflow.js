/* Flower Ops console: one workflow as a tree (/monitoring/workflows/{id}).
 *
 * Steps are laid out in columns, left to right: a step one column after
 * the step that leads to it (chain, chord body, callback, errback, child);
 * a run that resumed or retried a step sits just below it, in its column.
 * A group's members stack in one block; a big one shows its first members
 * and folds the rest into a grid of small squares, so a chord of 1,000
 * stays light. Every piece of task data goes in as text.
 */
(function () {
  "use strict";
  var FO = window.FO;
  if (!FO) { return; }
  var el = FO.el;
  var SHOWN_MEMBERS = 8;       // a group's members shown as cards before it folds
  var FOLD_AT = 12;            // a group of more members than this folds
  var POLL_MS = 2000;
  var wf = { id: null, data: null, seq: 0, selected: null, expanded: new Set(), sig: null,
    timer: null, followUntil: 0, byId: new Map(), cards: new Map(), feedTimer: null };
  FO.workflowView = wf;

  var INCOMING = { chord: "chord body", callback: "callback", errback: "errback (on failure)",
    child: "child task" };

  function visible() { return !document.getElementById("fo-view-workflow").hidden; }

  FO.showWorkflow = function (id) {
    if (id !== wf.id) {
      wf.id = id; wf.data = null; wf.selected = null; wf.expanded = new Set(); wf.sig = null;
      FO.clear(document.getElementById("fo-wf-head"));
      FO.quiet(document.getElementById("fo-wf-tree"), "Loading…");
      FO.clear(document.getElementById("fo-wf-feedback"));
      FO.workflowPanel(null);
      FO.setText("fo-wf-title", "Workflow " + FO.shortId(id));
    }
    load();
  };

  // Fetch the tree; while it runs (or just after an action) keep following it
  function load() {
    var seq = ++wf.seq;
    clearTimeout(wf.timer);
    var id = wf.id;
    return FO.api("GET", FO.workflowPath(id)).then(function (data) {
      if (seq !== wf.seq || id !== wf.id) { return; }
      render(data);
      if (visible() && (data.state === "running" || Date.now() < wf.followUntil)) {
        wf.timer = setTimeout(function () { if (visible() && id === wf.id) { load(); } }, POLL_MS);
      }
    }).catch(function (error) {
      if (seq !== wf.seq) { return; }
      FO.clear(document.getElementById("fo-wf-head"));
      var tree = document.getElementById("fo-wf-tree");
      FO.clear(tree);
      tree.appendChild(el("div", "alert alert-danger", error.status === 404
        ? "No workflow " + id + " in memory or in PostgreSQL history."
        : "Could not load the workflow: " + error.message));
    });
  }
  FO.reloadWorkflow = function (followSeconds) {
    wf.followUntil = Math.max(wf.followUntil, Date.now() + (followSeconds || 0) * 1000);
    return load();
  };

  function signature(data) {
    return data.state + "|" + data.nodes.map(function (n) {
      return n.task_id + ":" + n.state + ":" + (n.published ? 1 : 0) + ":" + (n.retried_as || "") + ":" + (n.finished || "");
    }).join(",");
  }

  function render(data) {
    wf.data = data;
    wf.byId = new Map();
    data.nodes.forEach(function (n) { wf.byId.set(n.task_id, n); });
    FO.watch(data.nodes.filter(function (n) { return n.published; }).map(function (n) { return n.task_id; }));
    renderHead(data);
    FO.workflowActions.update(data);
    var sig = signature(data);
    if (sig !== wf.sig) {
      wf.sig = sig;
      renderTree(data);
    }
    FO.workflowPanel(wf.selected ? wf.byId.get(wf.selected) || null : null);
  }

  // -- the head: state, kind, counts, times ---------------------------------------------

  function renderHead(data) {
    var root = data.nodes[0] || {};
    FO.setText("fo-wf-title", (root.name || "Workflow") + " · " + FO.shortId(data.root_id));
    var head = document.getElementById("fo-wf-head");
    FO.clear(head);
    head.setAttribute("data-state", data.state);
    var line = el("div", "fo-wf-headline");
    line.appendChild(FO.workflowBadge(data.state));
    line.appendChild(el("span", "fo-wf-kind", data.kind));
    line.appendChild(el("span", "fo-wf-counts", FO.workflowCounts(data.counts)));
    head.appendChild(line);
    var dl = el("dl", "fo-kv fo-wf-facts");
    function fact(label, value) {
      dl.appendChild(el("dt", null, label));
      var dd = el("dd");
      if (value instanceof Node) { dd.appendChild(value); } else { dd.textContent = value; }
      dl.appendChild(dd);
    }
    if (data.failed_at) {
      var failed = wf.byId.get(data.failed_at) || {};
      var jump = FO.button((failed.name || "step") + " · " + FO.shortId(data.failed_at), "btn-link fo-wf-jump", "select-failed");
      jump.setAttribute("data-node-ref", data.failed_at);
      fact("Failed at", jump);
    }
    fact("Started", data.started ? FO.timeEl(data.started) : "—");
    var a = FO.instantMs(data.started), b = FO.instantMs(data.finished);
    if (b !== null) { fact("Finished", FO.timeEl(data.finished)); }
    fact("Took", a === null ? "—" : b === null ? (data.state === "running" ? "running…" : "—")
      : FO.fmtSeconds(Math.max(0, b - a) / 1000));
    fact("Workflow id", el("span", "fo-id", data.root_id));
    fact("Read from", data.source === "db" ? "PostgreSQL history" : data.source === "memory+db" ? "memory and PostgreSQL" : data.source);
    head.appendChild(dl);
  }

  // -- layout: a column for each step's depth -----------------------------------------------

  function layout(data) {
    var depth = new Map(), indeg = new Map(), out = new Map(), into = new Map();
    data.nodes.forEach(function (n) { depth.set(n.task_id, 0); indeg.set(n.task_id, 0); });
    data.edges.forEach(function (e) {
      if (!depth.has(e.from) || !depth.has(e.to) || e.from === e.to) { return; }
      (out.get(e.from) || out.set(e.from, []).get(e.from)).push(e);
      (into.get(e.to) || into.set(e.to, []).get(e.to)).push(e);
      indeg.set(e.to, indeg.get(e.to) + 1);
    });
    // longest path over a DAG (Kahn); a cycle, should one ever come, keeps depth 0
    var queue = data.nodes.filter(function (n) { return indeg.get(n.task_id) === 0; }).map(function (n) { return n.task_id; });
    for (var i = 0; i < queue.length; i++) {
      var from = queue[i];
      (out.get(from) || []).forEach(function (e) {
        var d = depth.get(from) + (e.kind === "retry" ? 0 : 1);
        if (d > depth.get(e.to)) { depth.set(e.to, d); }
        indeg.set(e.to, indeg.get(e.to) - 1);
        if (indeg.get(e.to) === 0) { queue.push(e.to); }
      });
    }
    var groupOf = new Map();
    // a chord's body, once sent, carries its header's group id: it is not a member
    wf.groups = (data.groups || []).map(function (g) {
      return Object.assign({}, g, { members: g.members.filter(function (m) { return m !== g.chord; }) });
    }).filter(function (g) { return g.members.length > 1 || (g.chord && g.members.length); });   // a lone errback's "group" is no group
    wf.groups.forEach(function (g) { g.members.forEach(function (m) { groupOf.set(m, g); }); });
    var columns = [], placed = new Set();
    data.nodes.forEach(function (n) {
      var g = groupOf.get(n.task_id);
      var key = g ? "g:" + g.group_id : n.task_id;
      if (placed.has(key)) { return; }
      placed.add(key);
      var d = g ? Math.min.apply(null, g.members.map(function (m) { return depth.has(m) ? depth.get(m) : 0; })) : depth.get(n.task_id);
      (columns[d] = columns[d] || []).push(g ? { group: g } : { node: n });
    });
    // a resumed run right below the step it replaced
    columns.forEach(function (col) {
      col.slice().forEach(function (item) {
        var n = item.node;
        if (!n || !n.retry_of) { return; }
        var replaced = function (it) { return it.node && it.node.task_id === n.retry_of; };
        if (col.findIndex(replaced) < 0) { return; }
        col.splice(col.indexOf(item), 1);
        col.splice(col.findIndex(replaced) + 1, 0, item);
      });
    });
    return { columns: columns.filter(Boolean), into: into };
  }

  // -- the tree -----------------------------------------------------------------------------

  function renderTree(data) {
    var tree = document.getElementById("fo-wf-tree");
    var keepScroll = tree.scrollLeft;
    FO.clear(tree);
    wf.cards = new Map();
    var plan = layout(data);
    wf.into = plan.into;
    var row = el("div", "fo-wf-columns");
    plan.columns.forEach(function (col, index) {
      var column = el("div", "fo-wf-column");
      column.setAttribute("data-column", String(index));
      if (index > 0) {
        var arrow = el("span", "fo-wf-arrow", "→");
        arrow.setAttribute("aria-hidden", "true");
        column.appendChild(arrow);
      }
      var stack = el("div", "fo-wf-stack");
      col.forEach(function (item) { stack.appendChild(item.group ? groupBlock(item.group, data) : card(item.node, data, false, index)); });
      column.appendChild(stack);
      row.appendChild(column);
    });
    tree.appendChild(row);
    tree.appendChild(legend());
    tree.scrollLeft = keepScroll;
    markSelected();
  }

  function incomingKinds(id) {
    var kinds = [];
    (wf.into.get(id) || []).forEach(function (e) {
      var word = INCOMING[e.kind];
      if (word && kinds.indexOf(word) < 0) { kinds.push(word); }
    });
    return kinds;
  }

  function card(n, data, inGroup, column) {
    var b = el("button", "fo-wf-node fo-wf-s-" + n.state + (inGroup ? " fo-wf-member" : ""));
    b.type = "button";
    b.setAttribute("data-node-id", n.task_id);
    b.setAttribute("data-state", n.state);
    b.setAttribute("data-published", n.published ? "true" : "false");
    b.setAttribute("aria-pressed", "false");
    var top = el("span", "fo-wf-node-top");
    top.appendChild(FO.badge(n.state));
    if (!n.published) { top.appendChild(el("span", "fo-wf-tag fo-wf-unsent-tag", "not sent")); }
    var at = inGroup ? (n.group_index === null || n.group_index === undefined ? null : "#" + n.group_index) : "step " + (column + 1);
    if (at) { top.appendChild(el("span", "fo-wf-index", at)); }
    b.appendChild(top);
    b.appendChild(el("span", "fo-wf-node-name", n.name || "(unknown task)"));
    var meta = FO.shortId(n.task_id);
    var took = FO.runtimeOf({ runtime: n.runtime, state: n.state, started: n.started, failed: n.finished });
    if (took) { meta += " · " + FO.fmtSeconds(took.seconds); } else if (n.state === "STARTED") { meta += " · running"; }
    b.appendChild(el("span", "fo-wf-node-meta", meta));
    if (!n.published) { b.classList.add("fo-wf-unsent"); }
    if (data.failed_at === n.task_id) {
      b.classList.add("fo-wf-failed-at");
      b.appendChild(el("span", "fo-wf-tag fo-wf-failed-tag", "failed here"));
    }
    incomingKinds(n.task_id).forEach(function (k) { b.appendChild(el("span", "fo-wf-via", k)); });
    if (n.retry_of) { b.appendChild(el("span", "fo-wf-via", "↻ resumes " + FO.shortId(n.retry_of))); }
    if (n.retried_as) {
      b.classList.add("fo-wf-replaced");
      b.appendChild(el("span", "fo-wf-via", "replaced by " + FO.shortId(n.retried_as) + " ↓"));
    }
    b.title = (n.name || "") + " " + n.task_id + " (" + n.state + (n.published ? "" : ", not sent") + ")";
    wf.cards.set(n.task_id, b);
    return b;
  }

  function groupBlock(g, data) {
    var box = el("div", "fo-wf-group");
    box.setAttribute("data-group-id", g.group_id);
    var members = g.members.map(function (m) { return wf.byId.get(m); }).filter(Boolean);
    var counts = {};
    members.forEach(function (n) { counts[n.state] = (counts[n.state] || 0) + 1; });
    var head = el("div", "fo-wf-group-head");
    head.appendChild(el("strong", null, (g.chord ? "Chord header" : "Group") + " · " + FO.fmtNumber(members.length)
      + " member" + (members.length === 1 ? "" : "s")));
    var tally = el("span", "fo-wf-tally");
    FO.STATES.forEach(function (s) {
      if (!counts[s]) { return; }
      var t = el("span", "fo-wf-tally-item");
      t.appendChild(el("span", "fo-wf-dot fo-wf-s-" + s));
      t.appendChild(document.createTextNode(FO.fmtNumber(counts[s]) + " " + s));
      tally.appendChild(t);
    });
    head.appendChild(tally);
    box.appendChild(head);
    var open = wf.expanded.has(g.group_id);
    if (members.length <= FOLD_AT) {
      members.forEach(function (n) { box.appendChild(card(n, data, true)); });
      return box;
    }
    // folded: the members that need an eye first (not succeeded), then the rest, in index order
    var shown = members.filter(function (n) { return n.state !== "SUCCESS"; }).slice(0, SHOWN_MEMBERS);
    members.some(function (n) {
      if (shown.length >= SHOWN_MEMBERS) { return true; }
      if (shown.indexOf(n) < 0) { shown.push(n); }
      return false;
    });
    shown.sort(function (x, y) { return members.indexOf(x) - members.indexOf(y); });
    if (!open) { shown.forEach(function (n) { box.appendChild(card(n, data, true)); }); }
    var more = FO.button(open ? "Show fewer members"
      : "… " + FO.fmtNumber(members.length - shown.length) + " more: show all " + FO.fmtNumber(members.length),
    "btn-outline-secondary fo-wf-more", "expand-group");
    more.setAttribute("aria-expanded", open ? "true" : "false");
    more.addEventListener("click", function () {
      if (open) { wf.expanded.delete(g.group_id); } else { wf.expanded.add(g.group_id); }
      renderTree(wf.data);
      var again = document.querySelector('.fo-wf-group[data-group-id="' + CSS.escape(g.group_id) + '"] .fo-wf-more');
      if (again) { again.focus(); }
    });
    box.appendChild(more);
    if (open) { box.appendChild(grid(members)); }
    return box;
  }

  // Every member as a small square, coloured by state: a thousand stay light
  function grid(members) {
    var wrap = el("div", "fo-wf-grid");
    wrap.setAttribute("role", "group");
    wrap.setAttribute("aria-label", "All " + members.length + " members, by group index");
    var frag = document.createDocumentFragment();
    members.forEach(function (n) {
      var chip = el("button", "fo-wf-chip fo-wf-s-" + n.state + (n.published ? "" : " fo-wf-unsent")
        + (wf.data.failed_at === n.task_id ? " fo-wf-failed-at" : ""));
      chip.type = "button";
      chip.setAttribute("data-node-id", n.task_id);
      chip.setAttribute("data-state", n.state);
      chip.setAttribute("aria-pressed", "false");
      var label = "#" + (n.group_index === null ? "?" : n.group_index) + " " + (n.name || "") + " " + FO.shortId(n.task_id) + " " + n.state;
      chip.setAttribute("aria-label", label);
      chip.title = label;
      wf.cards.set(n.task_id, wf.cards.get(n.task_id) || chip);
      frag.appendChild(chip);
    });
    wrap.appendChild(frag);
    return wrap;
  }

  function legend() {
    var box = el("p", "fo-wf-legend text-body-secondary fo-small");
    box.appendChild(document.createTextNode("Arrows: runs after · "));
    box.appendChild(el("span", "fo-wf-legend-unsent", "dashed"));
    box.appendChild(document.createTextNode(" not sent yet (or never: a step before it failed) · ↻ a resumed run below the step it replaced · click a step for its details"));
    return box;
  }

  function markSelected() {
    document.querySelectorAll("#fo-wf-tree [aria-pressed='true']").forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
    if (!wf.selected) { return; }
    document.querySelectorAll("#fo-wf-tree [data-node-id='" + CSS.escape(wf.selected) + "']").forEach(function (b) {
      b.setAttribute("aria-pressed", "true");
    });
  }

  FO.selectWorkflowNode = function (id, scroll) {
    var n = wf.byId.get(id);
    if (!n) { return; }
    wf.selected = id;
    markSelected();
    FO.workflowPanel(n);
    var target = scroll ? wf.cards.get(id) : null;
    if (target && target.isConnected) { target.scrollIntoView({ block: "nearest", inline: "nearest" }); }
    // on a phone the panel is below the tree: bring it into view
    if (window.matchMedia && window.matchMedia("(max-width: 991.98px)").matches) {
      document.getElementById("fo-wf-panel").scrollIntoView({ block: "start" });
    }
  };

  document.addEventListener("click", function (event) {
    var t = event.target.closest ? event.target.closest("#fo-view-workflow [data-node-id], #fo-view-workflow [data-node-ref]") : null;
    if (!t) { return; }
    var id = t.getAttribute("data-node-id") || t.getAttribute("data-node-ref");
    FO.selectWorkflowNode(id, t.hasAttribute("data-node-ref"));
  });

  // Its tasks change on the feed: fetch the tree again (at most once a second)
  FO.on("tasks", function (tasks) {
    if (!wf.data || !visible() || wf.feedTimer) { return; }
    if (!tasks.some(function (t) { return wf.byId.has(t.id); })) { return; }
    wf.feedTimer = setTimeout(function () { wf.feedTimer = null; if (visible()) { load(); } }, 1000);
  });
  FO.on("timezone", function () { FO.refreshTimes(document.getElementById("fo-view-workflow")); });
}());

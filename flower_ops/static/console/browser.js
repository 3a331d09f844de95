/* Flower Ops console: the task browser (/monitoring/tasks).
 * Filters live in the query string; pages by cursor both ways; counts per state.
 */
(function () {
  "use strict";
  var FO = window.FO;
  if (!FO) { return; }
  var el = FO.el;
  var FILTERS = ["state", "name", "queue", "worker", "since", "until", "search"];
  var PAGE_SIZE = 50;
  var view = { rows: new Map(), tasks: [], total: 0, about: "", params: null, seq: 0, sourceAll: true,
    prevOf: {}, selected: new Set(), allMatching: false };
  FO.browserView = view;

  function form() { return document.getElementById("fo-browse-form"); }

  // The view's question, from the URL
  function paramsFromUrl() {
    var q = new URLSearchParams(location.search);
    var p = {};
    FILTERS.concat(["order", "cursor", "source", "limit"]).forEach(function (k) {
      var v = q.get(k);
      if (v) { p[k] = v; }
    });
    return p;
  }

  function fillForm(p) {
    var f = form();
    FILTERS.concat(["order"]).forEach(function (k) {
      var input = f.elements.namedItem(k);
      if (input) { input.value = p[k] || (k === "order" ? "desc" : ""); }
    });
  }

  function readForm() {
    var f = form();
    var p = {};
    FILTERS.concat(["order"]).forEach(function (k) {
      var input = f.elements.namedItem(k);
      var v = input ? input.value.trim() : "";
      if (v && !(k === "order" && v === "desc")) { p[k] = v; }
    });
    if (view.params && view.params.limit) { p.limit = view.params.limit; }
    return p;
  }

  function go(p) {
    history.pushState(null, "", FO.PAGE + "/tasks" + FO.query(p));
    FO.route();
  }
  FO.browseTo = go;

  function apiFilters(p) {
    var q = {};
    FILTERS.forEach(function (k) { if (p[k]) { q[k] = p[k]; } });
    return q;
  }

  FO.showBrowser = function () {
    var p = paramsFromUrl();
    view.params = p;
    view.selected = new Set();
    view.allMatching = false;
    fillForm(p);
    var active = FILTERS.filter(function (k) { return p[k]; });
    FO.setText("fo-filter-summary", active.length ? active.map(function (k) { return k + "=" + p[k]; }).join(", ") : "none");
    // phones: the filters fold away, so the tasks come first
    if (window.matchMedia && window.matchMedia("(max-width: 767.98px)").matches) {
      document.getElementById("fo-filter-box").open = false;
    }
    load(p);
    loadCounts(p);
    renderBulkBar();
  };

  function load(p, noAll) {
    var seq = ++view.seq;
    var q = Object.assign(apiFilters(p), { limit: p.limit || PAGE_SIZE, order: p.order || "desc", cursor: p.cursor });
    var useAll = view.sourceAll && !noAll;
    if (useAll) { q.source = p.source || "all"; } else if (p.source && p.source !== "all") { q.source = p.source; }
    view.usedAll = useAll;
    var status = document.getElementById("fo-browse-status");
    status.textContent = "Loading…";
    FO.api("GET", "/tasks" + FO.query(q)).then(function (page) {
      if (seq !== view.seq) { return; }
      render(page, p);
    }).catch(function (error) {
      if (seq !== view.seq) { return; }
      var d = (error.data || {}).detail || {};
      if (useAll && (error.status === 400 || error.status >= 500) && !p.source) {
        // a monitor without one list of memory and history: memory, else PostgreSQL
        if (error.status === 400 && d.parameter === "source") { view.sourceAll = false; }
        load(p, true);
        return;
      }
      status.textContent = "Could not list tasks: " + error.message;
      FO.clear(document.querySelector("#fo-browse tbody"));
    });
  }

  function render(page, p) {
    var tbody = document.querySelector("#fo-browse tbody");
    FO.clear(tbody);
    view.rows = new Map();
    view.tasks = page.tasks || [];
    view.total = page.total;
    // past 1,000 rows PostgreSQL's total is the planner's estimate: say so
    view.about = page.total_estimated ? "about " : "";
    view.tasks.forEach(function (t) {
      var row = FO.makeRow(t, true);
      view.rows.set(t.id, row);
      tbody.appendChild(row.tr);
    });
    FO.watch(Array.from(view.rows.keys()));   // these rows follow the feed
    if (!view.tasks.length) {
      var tr = el("tr");
      var td = el("td", "text-body-secondary", "No task matches these filters.");
      td.colSpan = FO.ROW_COLUMNS.length + 1;
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
    var source = page.source || "memory";
    var text = (page.total !== undefined && page.total !== null ? view.about + FO.fmtNumber(page.total) + " matching" : "")
      + " · from " + (source === "db" ? "PostgreSQL history" : source === "all" ? "memory and PostgreSQL" : source)
      + (view.usedAll ? "" : " (memory and PostgreSQL as one list is not available from this monitor now)");
    document.getElementById("fo-browse-status").textContent = text;
    // Paging: the server's cursors; "prev" where the monitor gives it, else what we saw
    if (page.next) { view.prevOf[page.next] = p.cursor || ""; }
    var prev = "prev" in page ? page.prev : (p.cursor ? view.prevOf[p.cursor] : null);
    pager("fo-page-prev", p.cursor ? (prev === undefined ? "" : prev) : null, p);
    pager("fo-page-next", page.next || null, p);
    syncSelection();
  }

  function pager(id, cursor, p) {
    var b = document.getElementById(id);
    b.disabled = cursor === null || cursor === undefined;
    b.onclick = function () {
      var q = Object.assign({}, p);
      if (cursor) { q.cursor = cursor; } else { delete q.cursor; }
      go(q);
      document.getElementById("fo-browse").scrollIntoView({ block: "start" });
    };
  }

  function loadCounts(p, noAll) {
    var box = document.getElementById("fo-counts");
    var q = apiFilters(p);
    delete q.state;
    var useAll = view.sourceAll && !noAll;
    if (useAll) { q.source = p.source || "all"; }
    FO.api("GET", "/tasks/counts" + FO.query(q)).then(function (counts) {
      renderCounts(counts, p);
    }).catch(function (error) {
      if (useAll && (error.status === 400 || error.status >= 500)) { loadCounts(p, true); return; }
      FO.quiet(box, error.status === 404 || error.status === 400
        ? "Counts per state are not served by this monitor yet."
        : "Counts per state: " + error.message);
    });
  }

  function renderCounts(counts, p) {
    var box = document.getElementById("fo-counts");
    FO.clear(box);
    // a state past 1,000 rows in PostgreSQL is counted by the planner's estimate
    var about = counts.estimated_states || [];
    var all = FO.button("All " + (about.length ? "~" : "") + FO.fmtNumber(counts.total), p.state ? "btn-outline-secondary" : "btn-secondary", null);
    if (about.length) { all.title = "about: PostgreSQL's estimate"; }
    all.setAttribute("aria-pressed", p.state ? "false" : "true");
    all.addEventListener("click", function () { var q = readForm(); delete q.state; go(q); });
    box.appendChild(all);
    FO.STATES.forEach(function (s) {
      var n = (counts.by_state || {})[s] || 0;
      var estimated = about.indexOf(s) >= 0;
      var b = FO.button(s + " " + (estimated ? "~" : "") + FO.fmtNumber(n), p.state === s ? "btn-primary" : "btn-outline-secondary", null);
      if (estimated) { b.title = "about: PostgreSQL's estimate"; }
      b.setAttribute("data-count-state", s);
      b.setAttribute("aria-pressed", p.state === s ? "true" : "false");
      b.addEventListener("click", function () { var q = readForm(); q.state = s; go(q); });
      box.appendChild(b);
    });
  }

  // Live: rows on this page follow the feed
  FO.on("tasks", function (tasks) {
    if (!view.rows.size) { return; }
    tasks.forEach(function (t) { var row = view.rows.get(t.id); if (row) { row.update(t); } });
  });
  FO.on("patch", function (patch) {
    var row = view.rows.get(patch.id);
    if (row) { row.update(patch); }
  });
  FO.on("alerts", function () { view.rows.forEach(function (row) { row.update({}); }); });
  FO.on("timezone", function () { view.rows.forEach(function (row) { row.update({}); }); });

  // -- selection and bulk ---------------------------------------------------------------

  function syncSelection() {
    document.querySelectorAll('#fo-browse input[data-select="row"]').forEach(function (box) {
      box.checked = view.allMatching || view.selected.has(box.value);
    });
    var page = document.querySelector('#fo-browse input[data-select="page"]');
    if (page) { page.checked = view.tasks.length > 0 && view.tasks.every(function (t) { return view.selected.has(t.id); }); }
    renderBulkBar();
  }

  function renderBulkBar() {
    var n = view.allMatching ? view.total : view.selected.size;
    var label = document.getElementById("fo-bulk-count");
    label.textContent = view.allMatching ? "All " + view.about + FO.fmtNumber(view.total) + " tasks matching this filter"
      : n ? n + " selected" : "Select tasks to act on several at once";
    document.getElementById("fo-bulk-cancel").disabled = !n;
    document.getElementById("fo-bulk-retry").disabled = !n;
    var more = document.getElementById("fo-bulk-all");
    var pageFull = view.tasks.length && view.tasks.every(function (t) { return view.selected.has(t.id); });
    more.hidden = !(pageFull && !view.allMatching && view.total > view.tasks.length);
    more.textContent = "Select all " + view.about + FO.fmtNumber(view.total) + " matching this filter";
    document.getElementById("fo-bulk-clear").hidden = !n;
  }

  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.closest || !box.closest("#fo-browse")) { return; }
    var kind = box.getAttribute("data-select");
    if (kind === "row") {
      view.allMatching = false;
      if (box.checked) { view.selected.add(box.value); } else { view.selected.delete(box.value); }
    } else if (kind === "page") {
      view.allMatching = false;
      view.tasks.forEach(function (t) { if (box.checked) { view.selected.add(t.id); } else { view.selected.delete(t.id); } });
    }
    syncSelection();
  });

  function bulkBody(dryRun) {
    var body = { dry_run: dryRun };
    if (view.allMatching) {
      var f = {};
      var p = view.params || {};
      // the filters of GET /tasks, spelled as its query parameters
      FILTERS.forEach(function (k) { if (p[k]) { f[k] = p[k]; } });
      body.filters = f;
    } else {
      body.ids = Array.from(view.selected);
    }
    return body;
  }

  var WORDS = { would_cancel: "will be cancelled", would_retry: "will be retried", cancelled: "cancelled",
    retried: "retried", requested: "cancel requested (the worker has not confirmed yet)",
    rejected: "skipped", not_found: "not found", unavailable: "unavailable" };

  function outcomeList(result) {
    var list = el("ul", "fo-outcomes");
    var counts = result.counts || {};
    Object.keys(counts).forEach(function (k) {
      var li = el("li", null, FO.fmtNumber(counts[k]) + " " + (WORDS[k] || k));
      li.setAttribute("data-outcome", k);
      list.appendChild(li);
    });
    var reasons = {};
    (result.results || []).forEach(function (r) {
      if (r.outcome === "rejected" || r.outcome === "not_found") {
        var why = (r.reason || r.outcome) + (r.state ? " (" + r.state + ")" : "");
        reasons[why] = (reasons[why] || 0) + 1;
      }
    });
    Object.keys(reasons).forEach(function (why) {
      list.appendChild(el("li", "text-body-secondary", "skipped because " + why.replace(/_/g, " ") + ": " + reasons[why]));
    });
    if (!Object.keys(counts).length) { list.appendChild(el("li", null, "Nothing to do.")); }
    return list;
  }

  // The run, in small requests so progress shows: ids 25 at a time; a filter
  // 200 at a time, following the answer's cursor to the rest
  function runInChunks(action, expected, onProgress) {
    var total = { counts: {}, results: [] };
    var done = 0;
    function add(part) {
      Object.keys(part.counts || {}).forEach(function (k) { total.counts[k] = (total.counts[k] || 0) + part.counts[k]; });
      (part.results || []).forEach(function (r) {
        total.results.push(r);
        if (r.state) { FO.emit("patch", { id: r.id, state: r.state }); }
      });
      done += part.requested || 0;
      onProgress(Math.min(done, expected));
    }
    var body = bulkBody(false);
    if (body.ids) {
      var ids = body.ids.slice();
      var step = function () {
        if (!ids.length) { return Promise.resolve(total); }
        return FO.api("POST", "/tasks/bulk/" + action, { ids: ids.splice(0, 25), dry_run: false }).then(add).then(step);
      };
      return step();
    }
    var page = function (cursor) {
      var filters = Object.assign({}, body.filters);
      if (cursor) { filters.cursor = cursor; }
      return FO.api("POST", "/tasks/bulk/" + action, { filters: filters, dry_run: false, limit: 200 }).then(function (part) {
        add(part);
        return part.next && part.requested ? page(part.next) : total;
      });
    };
    return page(null);
  }

  function bulk(action) {
    var out = document.getElementById("fo-bulk-result");
    FO.feedback(out, "secondary", "Dry run: checking what " + action + " would do…");
    FO.api("POST", "/tasks/bulk/" + action, bulkBody(true)).then(function (dry) {
      out.querySelector(".fo-feedback").remove();
      var would = (dry.counts || {})[action === "cancel" ? "would_cancel" : "would_retry"] || 0;
      return FO.confirm({
        title: (action === "cancel" ? "Cancel " : "Retry ") + would + " task" + (would === 1 ? "" : "s") + "?",
        lines: ["A dry run of " + FO.fmtNumber(dry.requested) + " task(s) found:", outcomeList(dry),
          dry.next ? "More tasks match beyond these; the run goes on through all of them." : "",
          action === "cancel" ? "Running tasks will have their worker process terminated." : "Each retry sends a new task with the same arguments."],
        confirmLabel: action === "cancel" ? "Cancel " + would : "Retry " + would, danger: action === "cancel"
      }).then(function (yes) {
        if (!yes || !would) { return; }
        var progress = el("div", "progress");
        progress.setAttribute("role", "progressbar");
        progress.setAttribute("aria-label", "Bulk " + action + " progress");
        progress.setAttribute("aria-valuemin", "0");
        progress.setAttribute("aria-valuemax", String(would));
        var bar = el("div", "progress-bar");
        progress.appendChild(bar);
        var label = el("span", "fo-small");
        var box = FO.feedback(out, "secondary", "Working: ", label);
        box.appendChild(progress);
        return runInChunks(action, would, function (done) {
          var pct = Math.min(100, Math.round(100 * done / Math.max(1, would)));
          bar.style.width = pct + "%";
          progress.setAttribute("aria-valuenow", String(done));
          label.textContent = done + " of " + would + " done";
        }).then(function (total) {
          FO.feedback(out, "success", "Bulk " + action + " done:", outcomeList(total));
          view.selected = new Set();
          view.allMatching = false;
          syncSelection();
          setTimeout(function () { loadCounts(view.params || {}); }, 500);
        });
      });
    }).catch(function (error) {
      FO.feedback(out, "danger", "Bulk " + action + " failed: " + error.message);
    });
  }

  FO.initBrowser = function () {
    var f = form();
    var select = f.elements.namedItem("state");
    FO.STATES.forEach(function (s) { var o = el("option", null, s); o.value = s; select.appendChild(o); });
    FO.tableHead(document.getElementById("fo-browse"), true);
    f.addEventListener("submit", function (event) { event.preventDefault(); go(readForm()); });
    f.addEventListener("reset", function (event) { event.preventDefault(); go({}); });
    f.elements.namedItem("order").addEventListener("change", function () { go(readForm()); });
    document.getElementById("fo-bulk-cancel").addEventListener("click", function () { bulk("cancel"); });
    document.getElementById("fo-bulk-retry").addEventListener("click", function () { bulk("retry"); });
    document.getElementById("fo-bulk-all").addEventListener("click", function () { view.allMatching = true; syncSelection(); });
    document.getElementById("fo-bulk-clear").addEventListener("click", function () {
      view.selected = new Set(); view.allMatching = false; syncSelection();
    });
  };
}());

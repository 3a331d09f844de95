/* Flower Ops console: the selected step of a workflow, in a side panel (below
 * the tree on narrow screens): its fields, its links in the tree, its task page.
 */
(function () {
  "use strict";
  var FO = window.FO;
  if (!FO) { return; }
  var el = FO.el;

  var EDGE_WORDS = { chain: "next step", chord: "chord body", callback: "callback", errback: "errback",
    child: "child task", retry: "resumed as" };
  var EDGE_BACK = { chain: "previous step", chord: "chord member", callback: "callback of",
    errback: "errback of", child: "published by", retry: "resumes" };

  function nodeRef(id, prefix) {
    var n = FO.workflowView.byId.get(id);
    var b = FO.button((prefix ? prefix + " " : "") + (n && n.name ? n.name + " · " : "") + FO.shortId(id),
      "btn-link fo-wf-jump", "select-node");
    b.setAttribute("data-node-ref", id);
    b.title = id;
    return b;
  }

  FO.workflowPanel = function (n) {
    var panel = document.getElementById("fo-wf-panel");
    FO.clear(panel);
    if (!n) {
      panel.appendChild(el("p", "text-body-secondary fo-small", "Select a step to see its details."));
      return;
    }
    panel.setAttribute("data-node-id", n.task_id);
    var head = el("div", "fo-wf-panel-head");
    head.appendChild(el("h2", "fo-heading fo-wf-panel-title", n.name || "(unknown task)"));
    var badges = el("div", "fo-task-head");
    badges.appendChild(FO.badge(n.state));
    if (!n.published) { badges.appendChild(el("span", "fo-wf-tag fo-wf-unsent-tag", "not sent")); }
    if ((FO.workflowView.data || {}).failed_at === n.task_id) {
      badges.appendChild(el("span", "fo-wf-tag fo-wf-failed-tag", "failed here"));
    }
    head.appendChild(badges);
    panel.appendChild(head);
    if (n.published) {
      var open = FO.link("/tasks/" + encodeURIComponent(n.task_id), "Open the task page",
        "btn btn-sm btn-outline-secondary");
      open.setAttribute("data-testid", "fo-wf-task-link");
      panel.appendChild(open);
    } else {
      panel.appendChild(el("p", "text-body-secondary fo-small", n.state === "PENDING"
        ? "Celery has not sent this step yet: it has no task page until it is sent."
        : "This step was never sent: a step before it " + (n.state === "REVOKED" ? "was cancelled." : "failed.")));
    }
    var dl = el("dl", "fo-kv fo-wf-fields");
    function row(key, label, value) {
      dl.appendChild(el("dt", null, label));
      var dd = el("dd");
      dd.setAttribute("data-field", key);
      if (value instanceof Node) { dd.appendChild(value); } else { dd.textContent = value === null || value === undefined || value === "" ? "—" : String(value); }
      dl.appendChild(dd);
    }
    var id = el("span", "fo-id fo-wf-full-id", n.task_id);
    row("task_id", "Task id", id);
    row("published", "Published", n.published ? "yes" : "no (not sent)");
    ["sent", "started", "finished"].forEach(function (k) {
      if (!n[k]) { row(k, k.charAt(0).toUpperCase() + k.slice(1), "—"); return; }
      var t = FO.timeEl(n[k]);
      t.setAttribute("data-long", "1");
      t.textContent = FO.fmtDateTime(n[k]);
      row(k, k.charAt(0).toUpperCase() + k.slice(1), t);
    });
    var took = FO.runtimeOf({ runtime: n.runtime, state: n.state, started: n.started, failed: n.finished });
    row("runtime", "Runtime", took ? FO.fmtSeconds(took.seconds) : "—");
    row("retries", "Retries", n.retries);
    row("worker", "Worker", n.worker);
    row("queue", "Queue", n.queue);
    if (n.group_id && n.group_index !== null && n.group_index !== undefined) {
      row("group", "Group member", "#" + n.group_index + " of group " + FO.shortId(n.group_id));
    }
    panel.appendChild(dl);
    if (n.exception) {
      panel.appendChild(el("h3", "fs-6 mt-2", "Exception"));
      panel.appendChild(el("pre", "fo-detail-pre fo-wf-exception", FO.asText(n.exception)));
    }
    panel.appendChild(linksOf(n));
  };

  // The step's edges, both ways, as buttons that select the other end
  function linksOf(n) {
    var wrap = el("div", "fo-wf-links");
    var data = FO.workflowView.data || { edges: [] };
    var items = [];
    data.edges.forEach(function (e) {
      if (e.from === n.task_id) { items.push([EDGE_WORDS[e.kind] || e.kind, e.to]); }
      if (e.to === n.task_id) { items.push([EDGE_BACK[e.kind] || e.kind, e.from]); }
    });
    if (n.parent_id && FO.workflowView.byId.has(n.parent_id) && !items.some(function (i) { return i[1] === n.parent_id; })) {
      items.push(["parent", n.parent_id]);
    }
    if (!items.length) { return wrap; }
    wrap.appendChild(el("h3", "fs-6 mt-2", "In the workflow"));
    var list = el("ul", "fo-wf-linklist");
    // a chord body has a link from every member: say how many, show a few
    var shown = items.slice(0, 12);
    shown.forEach(function (i) {
      var li = el("li");
      li.appendChild(el("span", "text-body-secondary", i[0] + ": "));
      li.appendChild(nodeRef(i[1]));
      list.appendChild(li);
    });
    if (items.length > shown.length) {
      list.appendChild(el("li", "text-body-secondary", "… and " + FO.fmtNumber(items.length - shown.length) + " more"));
    }
    wrap.appendChild(list);
    return wrap;
  }
}());

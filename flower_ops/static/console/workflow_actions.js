/* Flower Ops console: a workflow's actions, Resume and Cancel.
 * Each first asks the monitor for a dry run, shows what it would send or stop,
 * and acts only once confirmed; the outcome (or the monitor's refusal, word
 * for word) shows under the buttons.
 */
(function () {
  "use strict";
  var FO = window.FO;
  if (!FO) { return; }
  var el = FO.el;
  var busy = { resume: false, cancel: false };

  var CANCEL_WORDS = { would_cancel: "will be cancelled", cancelled: "cancelled",
    requested: "cancel requested (the worker has not confirmed yet)", rejected: "skipped",
    not_found: "not found", unavailable: "unavailable" };
  var KIND_WORDS = { chain: "a chain step, with the steps after it", chord: "a chord's failed members, then its body once",
    group: "a group member", task: "a step on its own" };

  function anchor() { return document.getElementById("fo-wf-feedback"); }
  function buttons() { return { resume: document.getElementById("fo-wf-resume"), cancel: document.getElementById("fo-wf-cancel") }; }
  function path(action) { return FO.workflowPath(FO.workflowView.id) + "/" + action; }
  function label(t) { return (t.name ? t.name + " " : "") + FO.shortId(t.task_id || t.id); }

  FO.workflowActions = {
    update: function (data) {
      var b = buttons();
      var failed = data.nodes.some(function (n) { return n.state === "FAILURE" && n.published && !n.retried_as; });
      FO.setEnabled(b.resume, failed ? "" : "Nothing to resume: no failed step that has not been resumed already", busy.resume);
      FO.setEnabled(b.cancel, data.state === "running" ? "" : "Nothing to cancel: the workflow has ended (" + data.state + ")", busy.cancel);
    }
  };

  // The monitor's refusal as it said it: the message, then each step's reason
  function refusal(prefix, error) {
    var detail = (error.data || {}).detail || {};
    var box = FO.feedback(anchor(), "danger", prefix + error.message);
    if (!box) { return; }
    var reasons = detail.reasons || [];
    if (reasons.length) {
      var list = el("ul", "fo-outcomes fo-wf-reasons");
      reasons.forEach(function (r) {
        var n = FO.workflowView.byId.get(r.task_id) || {};
        var li = el("li");
        li.setAttribute("data-task-id", FO.asText(r.task_id));
        li.appendChild(el("span", "fo-id", (n.name ? n.name + " " : "") + FO.asText(r.task_id)));
        li.appendChild(document.createTextNode(": " + FO.asText(r.reason)));
        list.appendChild(li);
      });
      box.appendChild(list);
    } else if (detail.reason) {
      box.appendChild(el("div", "fo-small", "reason: " + FO.asText(detail.reason).replace(/_/g, " ")));
    }
  }

  function start(which, text) {
    busy[which] = true;
    FO.workflowActions.update(FO.workflowView.data);
    FO.feedback(anchor(), "secondary", text);
  }
  function done(which) {
    busy[which] = false;
    if (FO.workflowView.data) { FO.workflowActions.update(FO.workflowView.data); }
  }

  // -- resume ---------------------------------------------------------------------------------

  function planList(resumed) {
    var list = el("ul", "fo-outcomes fo-wf-plan");
    var total = 0;
    resumed.forEach(function (r) {
      (r.tasks || []).forEach(function (t) {
        total += 1;
        var li = el("li", null, "Send again " + label(t) + " (" + (KIND_WORDS[r.kind] || r.kind) + ")");
        li.setAttribute("data-task-id", FO.asText(t.task_id));
        list.appendChild(li);
      });
      var cont = r.continuation || [];
      if (cont.length) {
        total += cont.length;
        list.appendChild(el("li", "text-body-secondary", "then " + cont.length + " step" + (cont.length === 1 ? "" : "s")
          + " after it: " + cont.map(function (t) { return t.name || FO.shortId(t.new_id); }).join(" → ")));
      }
    });
    return { list: list, total: total };
  }

  function resume() {
    start("resume", "Dry run: checking what resuming would send…");
    FO.api("POST", path("retry"), { dry_run: true }).then(function (dry) {
      var plan = planList(dry.resumed || []);
      var sent = (dry.resumed || []).reduce(function (a, r) { return a + (r.tasks || []).length; }, 0);
      anchor().querySelector(".fo-feedback").remove();
      return FO.confirm({
        title: "Resume this workflow?",
        lines: ["A dry run found what resuming would send, each as a new task with the same arguments:", plan.list,
          "The failed run stays in the tree; each new run shows next to the step it replaces."],
        confirmLabel: "Resume: send " + sent + " task" + (sent === 1 ? "" : "s") + " again"
      }).then(function (yes) {
        if (!yes) { return null; }
        FO.feedback(anchor(), "secondary", "Resuming…");
        return FO.api("POST", path("retry"), { dry_run: false }).then(function (result) {
          var made = planList(result.resumed || []);
          var text = "Resumed: sent " + sent + " failed step" + (sent === 1 ? "" : "s") + " again.";
          FO.feedback(anchor(), "success", text, made.list);
          FO.notice("success", text);
          FO.reloadWorkflow(60);
        });
      });
    }).catch(function (error) {
      refusal(error.status === 409 ? "Not resumed: " : "Could not resume: ", error);
    }).then(function () { done("resume"); });
  }

  // -- cancel ---------------------------------------------------------------------------------

  function outcomeList(answer) {
    var list = el("ul", "fo-outcomes fo-wf-plan");
    var counts = answer.counts || {};
    Object.keys(counts).forEach(function (k) {
      var li = el("li", null, FO.fmtNumber(counts[k]) + " step" + (counts[k] === 1 ? "" : "s") + " " + (CANCEL_WORDS[k] || k));
      li.setAttribute("data-outcome", k);
      list.appendChild(li);
    });
    var unsent = (answer.results || []).filter(function (r) { return r.published === false; }).length;
    if (unsent) {
      list.appendChild(el("li", "text-body-secondary", unsent + " of them not sent yet: their ids are revoked, so they never run"));
    }
    (answer.results || []).forEach(function (r) {
      if (r.outcome === "rejected" || r.outcome === "not_found") {
        list.appendChild(el("li", "text-body-secondary", label(r) + ": " + FO.asText(r.reason || r.outcome) + (r.state ? " (" + r.state + ")" : "")));
      }
    });
    return list;
  }

  function cancel() {
    start("cancel", "Dry run: checking what cancelling would stop…");
    FO.api("POST", path("cancel"), { dry_run: true }).then(function (dry) {
      var n = (dry.counts || {}).would_cancel || 0;
      anchor().querySelector(".fo-feedback").remove();
      return FO.confirm({
        title: "Cancel " + n + " step" + (n === 1 ? "" : "s") + " of this workflow?",
        lines: ["A dry run found:", outcomeList(dry),
          "Running steps have their worker process terminated; queued ones are taken off their queue."],
        confirmLabel: "Cancel the workflow", danger: true
      }).then(function (yes) {
        if (!yes) { return null; }
        FO.feedback(anchor(), "secondary", "Cancelling…");
        return FO.api("POST", path("cancel"), { dry_run: false }).then(function (result) {
          FO.feedback(anchor(), "success", "Workflow cancelled:", outcomeList(result));
          FO.notice("success", "Workflow " + FO.shortId(FO.workflowView.id) + " cancelled");
          (result.results || []).forEach(function (r) { if (r.state) { FO.emit("patch", { id: r.id, state: r.state }); } });
          FO.reloadWorkflow(30);
        });
      });
    }).catch(function (error) {
      refusal(error.status === 409 ? "Not cancelled: " : "Could not cancel: ", error);
    }).then(function () { done("cancel"); });
  }

  document.getElementById("fo-wf-resume").addEventListener("click", resume);
  document.getElementById("fo-wf-cancel").addEventListener("click", cancel);
}());

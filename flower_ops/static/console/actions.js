/* Flower Ops console: cancel and retry that say what they will do and what they did.
 * A confirmation names the task and the effect; the outcome is shown next to the
 * button pressed (and in the corner); a disabled button says why on hover.
 */
(function () {
  "use strict";
  var FO = window.FO;
  if (!FO) { return; }
  var el = FO.el;

  // -- the confirmation dialog -------------------------------------------------------

  FO.confirm = function (options) {
    var modalEl = document.getElementById("fo-confirm");
    var body = document.getElementById("fo-confirm-body");
    var ok = document.getElementById("fo-confirm-ok");
    FO.setText("fo-confirm-title", options.title);
    FO.clear(body);
    (options.lines || []).filter(Boolean).forEach(function (line) {
      body.appendChild(typeof line === "string" ? el("p", null, line) : line);
    });
    ok.textContent = options.confirmLabel || "Confirm";
    ok.className = "btn " + (options.danger ? "btn-danger" : "btn-primary");
    var modal = window.bootstrap.Modal.getOrCreateInstance(modalEl);
    return new Promise(function (resolve) {
      var answered = false;
      var isShown = false;
      var closing = false;
      // Bootstrap ignores hide() while the dialog is still fading in: a click
      // that quick (the action or "Keep it") is kept, and the dialog closes
      // once it is shown
      function yes() {
        answered = true;
        closing = true;
        if (isShown) { modal.hide(); }
      }
      function dismissed(event) {
        if (event.target.closest("[data-bs-dismiss]")) { closing = true; }
      }
      function hidden() {
        ok.removeEventListener("click", yes);
        modalEl.removeEventListener("click", dismissed);
        modalEl.removeEventListener("hidden.bs.modal", hidden);
        resolve(answered);
      }
      // keyboard users land on the safe choice: Enter keeps the task, Tab
      // reaches the action, Escape closes
      function shown() {
        modalEl.removeEventListener("shown.bs.modal", shown);
        isShown = true;
        if (closing) { modal.hide(); return; }
        var keep = modalEl.querySelector('[data-bs-dismiss="modal"].btn');
        if (keep) { keep.focus(); }
      }
      ok.addEventListener("click", yes);
      modalEl.addEventListener("click", dismissed);
      modalEl.addEventListener("hidden.bs.modal", hidden);
      modalEl.addEventListener("shown.bs.modal", shown);
      modal.show();
    });
  };

  // -- in-place feedback ------------------------------------------------------------------

  FO.feedback = function (anchor, kind, text, extra) {
    if (!anchor) { return null; }
    var old = anchor.querySelector(":scope > .fo-feedback");
    if (old) { old.remove(); }
    var box = el("div", "fo-feedback alert alert-" + kind, text);
    box.setAttribute("role", kind === "danger" ? "alert" : "status");
    if (extra) { box.appendChild(document.createTextNode(" ")); box.appendChild(extra); }
    anchor.appendChild(box);
    if (box.scrollIntoView) { box.scrollIntoView({ block: "nearest" }); }
    if (kind !== "danger" && !extra) { setTimeout(function () { box.remove(); }, 12000); }
    return box;
  };

  function effectOf(taskState) {
    if (taskState === "STARTED") {
      return "It is running: its worker process will be terminated, and the task marked REVOKED.";
    }
    return "It has not started: it will be taken off its queue and never run (REVOKED).";
  }

  FO.cancelReason = function (taskState) {
    if (FO.CANCELLABLE[taskState]) { return ""; }
    return "Cannot cancel: the task is " + taskState + "; only "
      + FO.LIFECYCLE.cancellable.join(", ") + " tasks can be cancelled";
  };
  FO.retryReason = function (taskState) {
    if (FO.RETRYABLE[taskState]) { return ""; }
    return "Cannot retry: the task is " + taskState + "; only "
      + FO.LIFECYCLE.retryable.join(", ") + " tasks can be retried";
  };

  // Disabled with the reason: on the button (screen readers) and on its wrapper
  // (a disabled button gets no hover of its own)
  FO.setEnabled = function (btn, reason, busy) {
    btn.disabled = !!reason || !!busy;
    var wrap = btn.parentNode && btn.parentNode.classList.contains("fo-btn-wrap") ? btn.parentNode : null;
    if (reason) {
      btn.title = reason;
      btn.setAttribute("aria-description", reason);
      if (wrap) { wrap.title = reason; }
    } else {
      btn.removeAttribute("title");
      btn.removeAttribute("aria-description");
      if (wrap) { wrap.removeAttribute("title"); }
    }
  };
  FO.wrap = function (btn) {
    var w = el("span", "fo-btn-wrap");
    w.appendChild(btn);
    return w;
  };

  // -- cancel ------------------------------------------------------------------------------

  FO.cancelTask = function (opts) {
    var id = opts.id;
    var label = (opts.name ? opts.name + " " : "") + FO.shortId(id);
    return FO.confirm({
      title: "Cancel task " + label + "?",
      lines: ["Task " + id + (opts.name ? " (" + opts.name + ")" : "") + " is " + opts.state + ".",
        effectOf(opts.state)],
      confirmLabel: "Cancel the task", danger: true
    }).then(function (yes) {
      if (!yes) { return null; }
      if (opts.button) { opts.button.setAttribute("data-busy", "1"); opts.button.disabled = true; }
      FO.feedback(opts.anchor, "secondary", "Cancelling " + label + "…");
      return FO.api("POST", "/tasks/" + encodeURIComponent(id) + "/cancel", {}).then(function (result) {
        var text = result.outcome === "requested"
          ? "Cancel requested for " + id + " (waiting for the worker to confirm)"
          : "Cancelled " + id + " (" + FO.asText(result.outcome || result.state) + ")";
        FO.feedback(opts.anchor, "success", text);
        FO.notice("success", text);
        if (result.state) { FO.emit("patch", { id: id, state: result.state }); }
        return result;
      }).catch(function (error) {
        var real = ((error.data || {}).detail || {}).state;
        var text = "Could not cancel " + id + ": " + error.message + (real ? " (it is " + real + ")" : "");
        FO.feedback(opts.anchor, "danger", text);
        FO.notice("danger", text);
        if (real) { FO.emit("patch", { id: id, state: real }); }
        return null;
      }).then(function (result) {
        if (opts.button) { opts.button.removeAttribute("data-busy"); }
        FO.emit("patch", { id: id });   // no longer busy: its buttons follow the task again
        FO.emit("acted", id);
        return result;
      });
    });
  };

  // -- retry --------------------------------------------------------------------------------

  FO.retryTask = function (opts) {
    var id = opts.id;
    var go = function (force) {
      if (opts.button) { opts.button.setAttribute("data-busy", "1"); opts.button.disabled = true; }
      FO.feedback(opts.anchor, "secondary", (force ? "Retrying again " : "Retrying ") + FO.shortId(id) + "…");
      return FO.api("POST", "/tasks/" + encodeURIComponent(id) + "/retry", force ? { force: true } : {})
        .then(function (result) {
          var newId = FO.asText(result.new_id || result.retried_as);
          var text = "Retried " + id + " as " + newId;
          var open = FO.link("/tasks/" + encodeURIComponent(newId), "Open the new task");
          FO.feedback(opts.anchor, "success", text + ".", open).setAttribute("data-new-id", newId);
          FO.notice("success", text);
          FO.emit("patch", { id: id, retried_as: newId });
          return result;
        }).catch(function (error) {
          var detail = (error.data || {}).detail || {};
          if (detail.reason === "already_retried") {
            var again = FO.button("Retry again", "btn-outline-primary ms-2", "retry-again");
            again.addEventListener("click", function () { FO.retryTask(Object.assign({}, opts, { force: true, retriedAs: detail.retried_as })); });
            FO.feedback(opts.anchor, "warning", "Already retried as " + FO.asText(detail.retried_as) + ".", again);
            return null;
          }
          var text = "Could not retry " + id + ": " + error.message;
          FO.feedback(opts.anchor, "danger", text);
          FO.notice("danger", text);
          return null;
        }).then(function (result) {
          if (opts.button) { opts.button.removeAttribute("data-busy"); }
          FO.emit("patch", { id: id });   // no longer busy: its buttons follow the task again
          FO.emit("acted", id);
          return result;
        });
    };
    if (opts.force || opts.retriedAs) {
      return FO.confirm({
        title: "Retry " + FO.shortId(id) + " again?",
        lines: ["This task was already retried as " + FO.asText(opts.retriedAs || "another task") + ".",
          "Retry again sends one more copy with the same arguments."],
        confirmLabel: "Retry again"
      }).then(function (yes) { return yes ? go(true) : null; });
    }
    return go(false);
  };

  // A Cancel button for places that know little about the task (alerts)
  FO.cancelButton = function (id, name, taskState, anchor) {
    var b = FO.button("Cancel task", "btn-danger", "cancel");
    b.addEventListener("click", function () {
      FO.cancelTask({ id: id, name: name, state: taskState, button: b, anchor: anchor });
    });
    return b;
  };

  // Cancel / Retry / Details for a task row or page: {node, update(task)}
  FO.actionGroup = function (getTask, anchor, withDetails) {
    var box = el("span", "fo-actions-group");
    var cancel = FO.button("Cancel", "btn-outline-danger", "cancel");
    var retry = FO.button("Retry", "btn-outline-primary", "retry");
    box.appendChild(FO.wrap(cancel));
    box.appendChild(FO.wrap(retry));
    cancel.addEventListener("click", function () {
      var t = getTask();
      FO.cancelTask({ id: t.id, name: t.name, state: t.state, button: cancel, anchor: anchor() });
    });
    retry.addEventListener("click", function () {
      var t = getTask();
      FO.retryTask({ id: t.id, retriedAs: t.retried_as, button: retry, anchor: anchor() });
    });
    if (withDetails) {
      var details = FO.link("/tasks/" + encodeURIComponent(getTask().id), "Details",
        "btn btn-sm btn-outline-secondary");
      details.setAttribute("data-action", "details");
      box.appendChild(details);
    }
    return {
      node: box, cancel: cancel, retry: retry,
      update: function (t) {
        FO.setEnabled(cancel, FO.cancelReason(t.state), cancel.getAttribute("data-busy") === "1");
        FO.setEnabled(retry, FO.retryReason(t.state), retry.getAttribute("data-busy") === "1");
        retry.textContent = t.retried_as ? "Retry again" : "Retry";
      }
    };
  };
}());

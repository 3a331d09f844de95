/* Flower Ops console: the shared core (window.FO). Loaded first.
 *
 * Every piece of task data is rendered with textContent / setAttribute on
 * elements we create: never innerHTML, so nothing a task carries can become
 * markup or script. The page's Content-Security-Policy forbids inline script
 * as a second line of defence.
 */
(function () {
  "use strict";

  var root = document.getElementById("fo-app");
  if (!root) { return; }

  // Absolute URLs from the page's scheme, host and port only. A page opened
  // as http://user:pass@host/monitoring keeps the credentials in its base URL
  // (location.href drops them), and fetch() refuses any URL that carries
  // credentials, relative ones resolved against that base included.
  var ORIGIN = location.protocol + "//" + location.host;
  var LIFECYCLE = JSON.parse(root.getAttribute("data-lifecycle"));

  var FO = window.FO = {
    root: root,
    ORIGIN: ORIGIN,
    API: ORIGIN + root.getAttribute("data-api-base"),
    WS_URL: (location.protocol === "https:" ? "wss://" : "ws://") + location.host
      + root.getAttribute("data-api-base") + "/ws",
    PAGE: root.getAttribute("data-page-base"),
    FLOWER: root.getAttribute("data-flower-base"),
    LIFECYCLE: LIFECYCLE,
    STATES: LIFECYCLE.states || ["PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED"],
    CANCELLABLE: toSet(LIFECYCLE.cancellable),
    RETRYABLE: toSet(LIFECYCLE.retryable),
    BADGES: {
      SUCCESS: "text-bg-success", FAILURE: "text-bg-danger", STARTED: "fo-state-started",
      RECEIVED: "fo-state-received", RETRY: "fo-state-retry", REVOKED: "text-bg-dark",
      PENDING: "text-bg-secondary"
    },
    listeners: {},
    token: null, tokenExpiresAt: 0, refreshTimer: null
  };

  function toSet(names) {
    var set = {};
    (names || []).forEach(function (name) { set[name] = 1; });
    return set;
  }

  // -- events between the parts -------------------------------------------------

  FO.on = function (name, fn) { (FO.listeners[name] = FO.listeners[name] || []).push(fn); };
  FO.emit = function (name, a, b) {
    (FO.listeners[name] || []).forEach(function (fn) {
      try { fn(a, b); } catch (e) { window.console.error(e); }
    });
  };

  // -- small DOM helpers (text only) -------------------------------------------

  FO.el = function (tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  };
  FO.clear = function (node) { while (node.firstChild) { node.removeChild(node.firstChild); } };
  FO.setText = function (id, text) {
    var node = document.getElementById(id);
    if (node) { node.textContent = text; }
  };
  FO.asText = function (value) {
    if (value === null || value === undefined) { return ""; }
    if (typeof value === "string") { return value; }
    try { return JSON.stringify(value); } catch (e) { return String(value); }
  };
  FO.badge = function (taskState) {
    var b = FO.el("span", "badge " + (FO.BADGES[taskState] || "text-bg-secondary"), taskState || "?");
    b.setAttribute("data-badge-state", taskState || "");
    return b;
  };
  FO.button = function (label, style, action) {
    var b = FO.el("button", "btn btn-sm " + style, label);
    b.type = "button";
    if (action) { b.setAttribute("data-action", action); }
    return b;
  };
  // A link inside the console: followed by the router without a reload
  FO.link = function (path, text, className) {
    var a = FO.el("a", className || null, text);
    a.href = FO.PAGE + path;
    a.setAttribute("data-route", "1");
    return a;
  };
  FO.taskLink = function (id, text) {
    var a = FO.link("/tasks/" + encodeURIComponent(id), text || id, "fo-id");
    a.title = id;
    return a;
  };
  FO.shortId = function (id) { return String(id || "").slice(0, 8); };

  // A short id with a copy button; the full id on hover
  FO.idCell = function (id) {
    var wrap = FO.el("span", "fo-idcell");
    wrap.appendChild(FO.taskLink(id, FO.shortId(id)));
    var copy = FO.el("button", "btn btn-link btn-sm fo-copy", "copy");
    copy.type = "button";
    copy.setAttribute("aria-label", "Copy task id " + id);
    copy.addEventListener("click", function () {
      var done = function () { copy.textContent = "copied"; setTimeout(function () { copy.textContent = "copy"; }, 1500); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(id).then(done, function () { fallbackCopy(id); done(); });
      } else { fallbackCopy(id); done(); }
    });
    wrap.appendChild(copy);
    return wrap;
  };

  function fallbackCopy(text) {
    var area = FO.el("textarea", "visually-hidden");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing more to do */ }
    area.remove();
  }

  // -- numbers and times --------------------------------------------------------

  FO.fmtNumber = function (n) {
    if (n === null || n === undefined) { return "—"; }
    return Number(n).toLocaleString("en-US");
  };
  FO.fmtBytes = function (n) {
    if (!n) { return "—"; }
    var units = ["B", "KiB", "MiB", "GiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + " " + units[i];
  };
  FO.fmtSeconds = function (s) {
    if (s === null || s === undefined || !isFinite(s)) { return "—"; }
    if (s < 1) { return (s * 1000).toFixed(0) + " ms"; }
    if (s < 120) { return s.toFixed(2) + " s"; }
    if (s < 7200) { return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s"; }
    return (s / 3600).toFixed(1) + " h";
  };
  // Instants arrive as ISO 8601 in UTC with milliseconds; ms since the epoch or null
  // A finished task's runtime: Celery's own (task-succeeded carries it), else,
  // for a failure, the span from started to failed, both known (derived: true)
  FO.runtimeOf = function (t) {
    if (t.runtime !== null && t.runtime !== undefined) { return { seconds: t.runtime, derived: false }; }
    var started = FO.instantMs(t.started), failed = FO.instantMs(t.failed);
    if (t.state === "FAILURE" && started !== null && failed !== null && failed >= started) {
      return { seconds: (failed - started) / 1000, derived: true };
    }
    return null;
  };

  FO.instantMs = function (value) {
    if (value === null || value === undefined || value === "") { return null; }
    var ms = typeof value === "number" ? value * 1000 : Date.parse(value);
    return isFinite(ms) ? ms : null;
  };

  // UTC by default, like Flower; the switch to local time persists
  var TZ_KEY = "flower-ops.time-zone";
  FO.utc = function () {
    try { return localStorage.getItem(TZ_KEY) !== "local"; } catch (e) { return true; }
  };
  FO.setUtc = function (utc) {
    try { localStorage.setItem(TZ_KEY, utc ? "utc" : "local"); } catch (e) { /* private mode */ }
    FO.emit("timezone");
  };
  function pad(n, w) { return String(n).padStart(w || 2, "0"); }
  function parts(ms) {
    var d = new Date(ms);
    if (FO.utc()) {
      return [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(),
        d.getUTCMinutes(), d.getUTCSeconds(), d.getUTCMilliseconds()];
    }
    return [d.getFullYear(), d.getMonth() + 1, d.getDate(), d.getHours(), d.getMinutes(),
      d.getSeconds(), d.getMilliseconds()];
  }
  FO.zoneName = function () {
    if (FO.utc()) { return "UTC"; }
    var off = -new Date().getTimezoneOffset();
    return "UTC" + (off >= 0 ? "+" : "−") + pad(Math.floor(Math.abs(off) / 60)) + ":" + pad(Math.abs(off) % 60);
  };
  FO.fmtClock = function (value) {
    var ms = FO.instantMs(value);
    if (ms === null) { return "—"; }
    var p = parts(ms);
    return pad(p[3]) + ":" + pad(p[4]) + ":" + pad(p[5]) + "." + pad(p[6], 3);
  };
  FO.fmtDateTime = function (value) {
    var ms = FO.instantMs(value);
    if (ms === null) { return "—"; }
    var p = parts(ms);
    return p[0] + "-" + pad(p[1]) + "-" + pad(p[2]) + " " + FO.fmtClock(value) + " " + FO.zoneName();
  };
  FO.fmtAgo = function (value) {
    var ms = FO.instantMs(value);
    if (ms === null) { return "—"; }
    var s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 5) { return "just now"; }
    if (s < 60) { return Math.floor(s) + " s ago"; }
    if (s < 3600) { return Math.floor(s / 60) + " min ago"; }
    if (s < 86400) { return Math.floor(s / 3600) + " h ago"; }
    return Math.floor(s / 86400) + " d ago";
  };
  // <time>: the clock (or "3 min ago"), the full ISO time on hover
  FO.timeEl = function (value, relative) {
    var t = FO.el("time", "fo-time", relative ? FO.fmtAgo(value) : FO.fmtClock(value));
    if (FO.instantMs(value) !== null) {
      t.setAttribute("datetime", String(value));
      t.title = String(value) + (FO.utc() ? "" : " (" + FO.fmtDateTime(value) + ")");
      t.setAttribute("data-instant", String(value));
      if (relative) { t.setAttribute("data-relative", "1"); }
    }
    return t;
  };
  // Re-render every time on the page (the zone switch, relative times ageing)
  FO.refreshTimes = function (scope) {
    (scope || document).querySelectorAll("time[data-instant]").forEach(function (t) {
      var v = t.getAttribute("data-instant");
      t.textContent = t.getAttribute("data-relative") ? FO.fmtAgo(v)
        : t.getAttribute("data-long") ? FO.fmtDateTime(v) : FO.fmtClock(v);
    });
  };
  // A running task's elapsed time, ticking each second
  FO.elapsedEl = function (since) {
    var s = FO.el("span", "fo-elapsed");
    s.setAttribute("data-elapsed-since", String(since));
    s.textContent = FO.fmtSeconds((Date.now() - FO.instantMs(since)) / 1000);
    s.title = "running for; started " + since;
    return s;
  };
  setInterval(function () {
    document.querySelectorAll("[data-elapsed-since]").forEach(function (s) {
      var ms = FO.instantMs(s.getAttribute("data-elapsed-since"));
      if (ms !== null) { s.textContent = FO.fmtSeconds(Math.max(0, (Date.now() - ms) / 1000)); }
    });
  }, 1000);
  setInterval(function () {
    document.querySelectorAll("time[data-relative]").forEach(function (t) {
      t.textContent = FO.fmtAgo(t.getAttribute("data-instant"));
    });
  }, 15000);

  FO.taskTime = function (t) { return t.sent || t.received || t.started || t.timestamp || null; };

  // -- token and API ---------------------------------------------------------------

  FO.fetchToken = function () {
    return fetch(FO.API + "/token", {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/json" }, body: "{}"
    }).then(function (response) {
      if (!response.ok) { throw new Error("token request failed: HTTP " + response.status); }
      return response.json();
    }).then(function (body) {
      FO.token = body.access_token;
      FO.tokenExpiresAt = Date.now() + body.expires_in * 1000;
      scheduleRefresh(body.expires_in);
      return FO.token;
    });
  };

  function scheduleRefresh(expiresInSeconds) {
    clearTimeout(FO.refreshTimer);
    var delay = Math.max(5, expiresInSeconds * 0.75) * 1000;
    FO.refreshTimer = setTimeout(function () {
      FO.fetchToken().then(function (token) { FO.emit("token", token); })
        .catch(function () { scheduleRefresh(10); });
    }, delay);
  }

  FO.tokenFresh = function () { return FO.token && FO.tokenExpiresAt - Date.now() > 15000; };
  FO.ready = function () { return FO.tokenFresh() ? Promise.resolve(FO.token) : FO.fetchToken(); };

  // A fresh Idempotency-Key per action request: sent again (a network error,
  // a retransmission through a load balancer), it is done once and answered
  // the same by whichever monitor gets it
  FO.newKey = function () {
    if (window.crypto && crypto.randomUUID) { return crypto.randomUUID(); }
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  };

  FO.api = function (method, path, body) {
    var key = method === "POST" ? FO.newKey() : null;
    function send(token) {
      var headers = { "Authorization": "Bearer " + token, "Content-Type": "application/json" };
      if (key) { headers["Idempotency-Key"] = key; }
      return fetch(FO.API + path, {
        method: method, cache: "no-store", headers: headers,
        body: body === undefined ? undefined : JSON.stringify(body)
      });
    }
    return FO.ready().then(function (token) {
      return send(token).catch(function (error) {
        // no answer at all: an action is sent once more, with the same key
        if (!key) { throw error; }
        return new Promise(function (resolve) { setTimeout(resolve, 500); })
          .then(function () { return send(token); });
      });
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var error = new Error(FO.asText(data.error || ("HTTP " + response.status)));
          error.status = response.status;
          error.data = data;
          throw error;
        }
        return data;
      });
    });
  };
  FO.query = function (params) {
    var q = new URLSearchParams();
    Object.keys(params).forEach(function (k) {
      var v = params[k];
      if (v === null || v === undefined || v === "") { return; }
      (Array.isArray(v) ? v : [v]).forEach(function (x) { q.append(k, x); });
    });
    var s = q.toString();
    return s ? "?" + s : "";
  };

  // -- notices: a fixed corner, always in view -------------------------------------

  FO.notice = function (kind, text) {
    var box = document.getElementById("fo-notices");
    var item = FO.el("div", "alert alert-" + kind + " alert-dismissible shadow-sm", text);
    item.setAttribute("role", kind === "danger" ? "alert" : "status");
    var close = FO.el("button", "btn-close");
    close.type = "button";
    close.setAttribute("aria-label", "Dismiss");
    close.addEventListener("click", function () { item.remove(); });
    item.appendChild(close);
    box.appendChild(item);
    setTimeout(function () { item.remove(); }, 10000);
    return item;
  };

  // A line of text under a view's heading, for "not available yet" and errors
  FO.quiet = function (box, text) {
    FO.clear(box);
    box.appendChild(FO.el("p", "text-body-secondary fo-quiet", text));
  };
}());

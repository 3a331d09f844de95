/* Flower Ops console: the router and start-up. Loaded last, after console/*.js.
 *
 * One page under /monitoring with client-side routes; the server answers
 * each of these paths with the same page:
 *   /monitoring                 overview: figures, alerts, charts, workers, queues, live grid
 *   /monitoring/tasks           the task browser (filters in the query string)
 *   /monitoring/tasks/{id}      a task's page
 *   /monitoring/workers         workers (?name= opens one)
 *   /monitoring/queues          queues (?name= opens one)
 *   /monitoring/names           the task-name table
 *   /monitoring/workflows       workflows (chains, groups, chords), newest first
 *   /monitoring/workflows/{id}  a workflow's tree
 */
(function () {
  "use strict";
  var FO = window.FO;
  if (!FO) { return; }

  var VIEWS = ["overview", "tasks", "task", "workers", "queues", "names", "workflows", "workflow"];
  var TITLES = { overview: "Overview", tasks: "Tasks", task: "Task", workers: "Workers",
    queues: "Queues", names: "Task names", workflows: "Workflows", workflow: "Workflow" };
  var PARENT = { task: "tasks", workflow: "workflows" };
  var current = null;

  function match(path) {
    var rest = path.indexOf(FO.PAGE) === 0 ? path.slice(FO.PAGE.length) : path;
    rest = rest.replace(/\/+$/, "");
    if (rest === "") { return { view: "overview" }; }
    var m = /^\/(tasks|workflows)\/([^/]+)$/.exec(rest);
    if (m) { return { view: m[1] === "tasks" ? "task" : "workflow", id: decodeURIComponent(m[2]) }; }
    m = /^\/(tasks|workers|queues|names|workflows)$/.exec(rest);
    if (m) { return { view: m[1] }; }
    return { view: "overview" };
  }

  FO.route = function (focus) {
    var r = match(location.pathname);
    if (r.view !== "task" && r.view !== "workflow") { FO.watch([]); }  // its view names them
    VIEWS.forEach(function (v) {
      document.getElementById("fo-view-" + v).hidden = v !== r.view;
    });
    document.querySelectorAll("#fo-console-nav a[data-view]").forEach(function (a) {
      var on = a.getAttribute("data-view") === r.view || a.getAttribute("data-view") === PARENT[r.view];
      a.classList.toggle("active", on);
      if (on) { a.setAttribute("aria-current", "page"); } else { a.removeAttribute("aria-current"); }
    });
    document.title = TITLES[r.view] + " · Monitoring · Flower";
    switch (r.view) {
      case "overview": FO.showCharts(); break;
      case "tasks": FO.showBrowser(); break;
      case "task": FO.showTask(r.id); break;
      case "workers": FO.showWorkers(); break;
      case "queues": FO.showQueues(); break;
      case "names": FO.showNames(); break;
      case "workflows": FO.showWorkflows(); break;
      case "workflow": FO.showWorkflow(r.id); break;
      default: break;
    }
    if (focus && current !== null) {
      var heading = document.querySelector("#fo-view-" + r.view + " .fo-view-title");
      if (heading) { heading.focus({ preventScroll: false }); }
    }
    current = r.view;
  };

  FO.navigate = function (href) {
    history.pushState(null, "", href);
    FO.route(true);
    var hash = href.indexOf("#") >= 0 ? document.getElementById(href.split("#")[1]) : null;
    if (hash) { hash.scrollIntoView({ block: "start" }); } else { window.scrollTo(0, 0); }
  };

  // Console links are followed without a reload (a new tab still works)
  document.addEventListener("click", function (event) {
    var a = event.target.closest ? event.target.closest("a[data-route]") : null;
    if (!a || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey
        || event.shiftKey || event.altKey) { return; }
    event.preventDefault();
    var modal = document.querySelector(".modal.show");
    if (modal) { window.bootstrap.Modal.getOrCreateInstance(modal).hide(); }
    FO.navigate(a.getAttribute("href"));
  });
  window.addEventListener("popstate", function () { FO.route(true); });

  // UTC by default, like Flower; the choice persists
  function renderZone() {
    var b = document.getElementById("fo-tz");
    b.textContent = FO.utc() ? "Times: UTC" : "Times: local (" + FO.zoneName() + ")";
    b.setAttribute("aria-pressed", FO.utc() ? "false" : "true");
    b.title = "Show times in " + (FO.utc() ? "this browser's local time" : "UTC");
    document.querySelectorAll(".fo-zone").forEach(function (s) { s.textContent = " (" + FO.zoneName() + ")"; });
    FO.refreshTimes();
  }
  document.getElementById("fo-tz").addEventListener("click", function () { FO.setUtc(!FO.utc()); });
  FO.on("timezone", renderZone);

  // Keyboard: "/" goes to the task filters, Escape leaves a field
  document.addEventListener("keydown", function (event) {
    var tag = (event.target.tagName || "").toLowerCase();
    var typing = tag === "input" || tag === "textarea" || tag === "select";
    if (event.key === "/" && !typing && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      if (current !== "tasks") { FO.navigate(FO.PAGE + "/tasks"); }
      document.getElementById("fo-filter-box").open = true;
      var search = document.getElementById("fo-f-search");
      if (search) { search.focus(); }
    }
  });

  FO.initBrowser();
  FO.initNames();
  FO.initWorkflows();
  renderZone();
  FO.route(false);
  FO.connect();
}());

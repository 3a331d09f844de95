/* Flower Ops console: charts (uPlot, vendored) from GET /series, and the
 * task-name table from GET /task-names. Both are served by the monitor, so
 * they survive a reload.
 */
(function () {
  "use strict";
  var FO = window.FO;
  if (!FO) { return; }
  var el = FO.el;
  var COLORS = ["#0d6efd", "#dc3545", "#198754", "#fd7e14", "#6f42c1", "#20c997", "#d63384", "#6c757d"];
  var charts = { plots: [], data: null, timer: null };
  var names = { rows: [], sort: "runs", desc: true };

  function sinceIso(minutes) { return new Date(Date.now() - minutes * 60000).toISOString(); }

  function axisStyle() {
    var dark = document.documentElement.getAttribute("data-bs-theme") === "dark";
    var ink = dark ? "#adb5bd" : "#495057";
    var grid = dark ? "rgba(255,255,255,.08)" : "rgba(0,0,0,.08)";
    return { stroke: ink, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
  }

  // A uPlot line chart into box; times are UTC or local as the switch says
  FO.lineChart = function (box, title, xs, series, unit) {
    var wrap = el("figure", "fo-chart-card");
    box.appendChild(wrap);
    var width = Math.max(200, wrap.clientWidth - 18);
    var opts = {
      title: title, width: width, height: 180,
      tzDate: function (ts) { return FO.utc() ? window.uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC") : new Date(ts * 1e3); },
      scales: { x: { time: true } },
      axes: [Object.assign(axisStyle(), { values: function (u, vals) {
        return vals.map(function (v) { return FO.fmtClock(v).slice(0, 5); });
      } }), Object.assign(axisStyle(), { size: 64, values: function (u, vals) {
        return vals.map(function (v) { return unit === "s" ? shortSeconds(v) : String(v); });
      } })],
      series: [{}].concat(series.map(function (s, i) {
        // a series with only a few minutes of data (a monitor just started)
        // draws its points too: one value alone would draw no line at all
        var known = s.values.filter(function (v) { return v !== null && v !== undefined; }).length;
        return { label: s.label, stroke: s.color || COLORS[i % COLORS.length], width: 1.5, spanGaps: false,
          points: { show: known <= 5, size: 6 },
          value: function (u, v) { return v === null || v === undefined ? "—" : unit === "s" ? FO.fmtSeconds(v) : String(v); } };
      })),
      legend: { live: true }
    };
    var data = [xs].concat(series.map(function (s) { return s.values; }));
    wrap.setAttribute("data-chart", title);
    wrap.setAttribute("role", "img");
    var total = 0;
    series.forEach(function (s) { s.values.forEach(function (v) { if (v) { total += 1; } }); });
    wrap.setAttribute("aria-label", title + ": " + series.length + " series over " + xs.length + " minutes");
    wrap.setAttribute("data-points", String(total));
    var plot = new window.uPlot(opts, data, wrap);
    charts.plots.push(plot);
    return plot;
  };

  // Axis labels: short enough for the axis' width
  function shortSeconds(v) {
    if (v === 0) { return "0"; }
    if (v < 1) { return Math.round(v * 1000) + "ms"; }
    if (v < 120) { return +v.toFixed(1) + "s"; }
    return +(v / 60).toFixed(1) + "m";
  }

  function destroy() {
    charts.plots.forEach(function (p) { p.destroy(); });
    charts.plots = [];
  }

  FO.fetchSeries = function (params) {
    return FO.api("GET", "/series" + FO.query(params));
  };

  // The overview's charts: the last hour
  FO.showCharts = function () {
    var box = document.getElementById("fo-charts");
    clearTimeout(charts.timer);
    if (!window.uPlot) { FO.quiet(box, "Charts need uPlot, which did not load."); return; }
    FO.fetchSeries({ since: sinceIso(60) }).then(function (s) {
      charts.data = s;
      renderCharts(box, s);
    }).catch(function (error) {
      destroy();
      FO.quiet(box, error.status === 404 ? "Charts are not served by this monitor yet (GET /series)."
        : "Charts: " + error.message);
    }).then(function () {
      charts.timer = setTimeout(function () {
        if (document.getElementById("fo-view-overview").hidden) { return; }
        FO.showCharts();
      }, 30000);
    });
  };

  function renderCharts(box, s) {
    destroy();
    FO.clear(box);
    var xs = (s.minutes || []).map(function (m) { return FO.instantMs(m) / 1000; });
    FO.lineChart(box, "Completed and failed per minute", xs, [
      { label: "completed", values: s.completed || [], color: "#198754" },
      { label: "failed", values: s.failed || [], color: "#dc3545" }]);
    var queues = Object.keys(s.queues || {}).sort();
    if (queues.length) {
      FO.lineChart(box, "Queue depth (messages)", xs, queues.map(function (q) {
        return { label: q, values: s.queues[q] };
      }));
    }
    var runtime = s.runtime || {};
    // the slowest three names (by their highest p95) keep the chart readable
    var peak = function (n) { return Math.max.apply(null, (runtime[n].p95 || []).map(function (v) { return v || 0; }).concat([0])); };
    var top = Object.keys(runtime).sort(function (a, b) { return peak(b) - peak(a); }).slice(0, 3);
    if (top.length) {
      var series = [];
      top.forEach(function (n) {
        series.push({ label: n + " p50", values: runtime[n].p50 || [] });
        series.push({ label: n + " p95", values: runtime[n].p95 || [] });
      });
      FO.lineChart(box, "Runtime p50 / p95, slowest task names", xs, series, "s");
    }
    if (!xs.length) { FO.quiet(box, "No minutes recorded yet."); }
  }

  window.addEventListener("resize", function () {
    var box = document.getElementById("fo-charts");
    if (charts.data && box && !document.getElementById("fo-view-overview").hidden) { renderCharts(box, charts.data); }
  });
  FO.on("timezone", function () {
    var box = document.getElementById("fo-charts");
    if (charts.data && box) { renderCharts(box, charts.data); }
  });

  // -- the task-name table ------------------------------------------------------------

  var NAME_COLUMNS = [
    ["name", "Task name"], ["runs", "Runs"], ["failed", "Failed"], ["failure_rate", "Failure rate"],
    ["p50", "p50"], ["p95", "p95"], ["p99", "p99"], ["last_failure", "Last failure"]
  ];

  FO.showNames = function () {
    var box = document.getElementById("fo-names-body");
    var range = document.getElementById("fo-names-range").value;
    FO.api("GET", "/task-names" + FO.query({ since: sinceIso(Number(range)), limit: 500 })).then(function (answer) {
      names.rows = answer.names || [];
      renderNames();
    }).catch(function (error) {
      FO.quiet(box, error.status === 404 ? "The task-name table is not served by this monitor yet (GET /task-names)."
        : "Task names: " + error.message);
    });
  };

  function sortValue(r, key) {
    if (key === "last_failure") { return r.last_failure ? FO.instantMs(r.last_failure.at) || 0 : -1; }
    if (key === "name") { return String(r.name || ""); }
    var v = r[key];
    return v === null || v === undefined ? -1 : Number(v);
  }

  function renderNames() {
    var box = document.getElementById("fo-names-body");
    FO.clear(box);
    var rows = names.rows.slice().sort(function (a, b) {
      var x = sortValue(a, names.sort), y = sortValue(b, names.sort);
      var c = x < y ? -1 : x > y ? 1 : 0;
      return names.desc ? -c : c;
    });
    var wrap = el("div", "table-responsive");
    var table = el("table", "table table-hover table-sm align-middle fo-table fo-task-table");
    table.id = "fo-names-table";
    var thead = el("thead");
    var htr = el("tr");
    NAME_COLUMNS.forEach(function (c) {
      var th = el("th", c[0] === "name" || c[0] === "last_failure" ? null : "text-end");
      th.setAttribute("scope", "col");
      var b = el("button", "btn btn-link btn-sm fo-sort", c[1]);
      b.type = "button";
      b.setAttribute("data-sort", c[0]);
      if (names.sort === c[0]) {
        th.setAttribute("aria-sort", names.desc ? "descending" : "ascending");
        b.textContent = c[1] + (names.desc ? " ▼" : " ▲");
      }
      b.addEventListener("click", function () {
        if (names.sort === c[0]) { names.desc = !names.desc; } else { names.sort = c[0]; names.desc = c[0] !== "name"; }
        renderNames();
        var again = document.querySelector('#fo-names-table [data-sort="' + c[0] + '"]');
        if (again) { again.focus(); }
      });
      th.appendChild(b);
      htr.appendChild(th);
    });
    thead.appendChild(htr);
    table.appendChild(thead);
    var tbody = el("tbody");
    rows.forEach(function (r) {
      var tr = el("tr");
      tr.setAttribute("data-name", r.name);
      var n = el("td");
      n.appendChild(FO.link("/tasks" + FO.query({ name: r.name }), r.name));
      tr.appendChild(n);
      tr.appendChild(el("td", "text-end fo-num", FO.fmtNumber(r.runs)));
      tr.appendChild(el("td", "text-end fo-num", FO.fmtNumber(r.failed)));
      tr.appendChild(el("td", "text-end fo-num", r.failure_rate === null || r.failure_rate === undefined ? "—"
        : (r.failure_rate * 100).toFixed(1) + "%"));
      ["p50", "p95", "p99"].forEach(function (k) { tr.appendChild(el("td", "text-end fo-num", FO.fmtSeconds(r[k]))); });
      var lf = el("td");
      if (r.last_failure) {
        lf.appendChild(FO.taskLink(r.last_failure.id, FO.shortId(r.last_failure.id)));
        lf.appendChild(document.createTextNode(" "));
        lf.appendChild(FO.timeEl(r.last_failure.at, true));
        if (r.last_failure.exception) {
          var ex = el("div", "fo-args text-body-secondary", r.last_failure.exception);
          ex.title = r.last_failure.exception;
          lf.appendChild(ex);
        }
      } else {
        lf.textContent = "—";
      }
      tr.appendChild(lf);
      Array.prototype.forEach.call(tr.children, function (td, i) {
        if (i) { td.setAttribute("data-col", NAME_COLUMNS[i][1].toLowerCase()); }
      });
      tbody.appendChild(tr);
    });
    table.appendChild(tbody);
    wrap.appendChild(table);
    box.appendChild(wrap);
    if (!rows.length) { box.appendChild(el("p", "text-body-secondary", "No task ran in this time range.")); }
  }

  FO.initNames = function () {
    document.getElementById("fo-names-range").addEventListener("change", FO.showNames);
  };
}());

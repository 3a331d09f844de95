"""The Prometheus rules under ``deploy/prometheus/``, with the real tools:
``promtool check`` and ``promtool test rules`` on the files as shipped, then a
real Prometheus that scrapes a running monitor and sync worker with those
rules loaded, and fires an alert for a real backlog.

Prometheus comes from Debian's ``prometheus`` package (``.ci/run`` installs
it and sets ``FLOWER_OPS_TEST_REQUIRE_PROMETHEUS``, so there a missing tool
fails). On a machine without it these tests are skipped, naming the tool.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from flower_ops.demo.embedded import free_port
from testing.paths import REPO_ROOT
from testing.services import PostgresService, RedisService
from testing.stack import Stack, running_stack
from testing.waiting import wait_for

pytestmark = pytest.mark.timeout(180)

RULES_DIR = REPO_ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "flower-ops-rules.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "flower-ops.json"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = (f"{name} not found (Debian's prometheus package: "
                   "apt-get install prometheus)")
        if os.environ.get("FLOWER_OPS_TEST_REQUIRE_PROMETHEUS"):
            pytest.fail(f"FLOWER_OPS_TEST_REQUIRE_PROMETHEUS is set but {message}",
                        pytrace=False)
        pytest.skip(message)
    return path


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("promtool"), *args], cwd=RULES_DIR, capture_output=True,
                          text=True, timeout=60, check=False)


def test_promtool_accepts_the_rules_and_the_example_configuration() -> None:
    checked = _promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_each_rule_fires_on_its_series_in_promtool_unit_tests() -> None:
    tested = _promtool("test", "rules", "flower-ops-rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # every alert of the rules file has a unit test
    rules = RULES.read_text()
    tests = (RULES_DIR / "flower-ops-rules.test.yml").read_text()
    names = [line.split(":", 1)[1].strip() for line in rules.splitlines()
             if line.strip().startswith("- alert:")]
    assert len(names) >= 10
    for name in names:
        assert f"alertname: {name}" in tests, f"{name} has no promtool unit test"


class Prometheus:
    """A real ``prometheus`` on loopback scraping ``targets`` every second,
    with the shipped rules evaluated every second."""

    def __init__(self, targets: dict[str, str], basic_auth: tuple[str, str] | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fo-prometheus-"))
        self.port = free_port()
        auth = (f"    basic_auth: {{username: '{basic_auth[0]}', password: '{basic_auth[1]}'}}\n"
                if basic_auth else "")
        jobs = "".join(
            f"  - job_name: {job}\n{auth if job == 'flower-ops-monitor' else ''}"
            f"    static_configs:\n      - targets: ['{target}']\n"
            for job, target in targets.items())
        config = ("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                  f"rule_files:\n  - '{RULES}'\nscrape_configs:\n{jobs}")
        (self.dir / "prometheus.yml").write_text(config)
        self.process = subprocess.Popen(
            [_tool("prometheus"), f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=(self.dir / "log").open("w"))

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def get(self, path: str, **params: str) -> Any:
        response = requests.get(f"{self.api}{path}", params=params, timeout=5)
        response.raise_for_status()
        return response.json()["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.get("/query", query=expr)["result"])

    def wait_ready(self) -> Prometheus:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError("prometheus exited:\n" + (self.dir / "log").read_text())
            try:
                return requests.get(f"http://127.0.0.1:{self.port}/-/ready",
                                    timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, timeout_seconds=30, message="prometheus ready")
        return self

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


BACKLOG_QUEUE = "fo-prometheus-stalled"


SYNC_PORT: dict[str, int] = {}


@pytest.fixture(scope="module")
def scraped(redis_service: RedisService, redis_db: int, pg_service: PostgresService
            ) -> Iterator[tuple[Stack, Prometheus]]:
    _tool("prometheus")
    name = pg_service.create_database()
    sync_port = SYNC_PORT["port"] = free_port()
    try:
        with running_stack(
                broker_url=redis_service.url(redis_db), database_url=pg_service.url(name),
                monitor_env={"FLOWER_OPS_QUEUES": f"celery,{BACKLOG_QUEUE}",
                             "FLOWER_OPS_QUEUE_REFRESH_SECONDS": "0.5",
                             "FLOWER_OPS_BACKLOG_MESSAGES": "3",
                             "FLOWER_OPS_BACKLOG_SECONDS": "0"},
                sync_env={"FLOWER_OPS_SYNC_METRICS_PORT": str(sync_port),
                          "FLOWER_OPS_SYNC_METRICS_ADDRESS": "127.0.0.1",
                          "FLOWER_OPS_SYNC_FLUSH_INTERVAL_SECONDS": "0.2"}) as stack:
            prometheus = Prometheus(
                {"flower-ops-monitor": f"127.0.0.1:{stack.monitor.port}",
                 "flower-ops-sync-worker": f"127.0.0.1:{sync_port}"},
                stack.monitor.basic_auth).wait_ready()
            try:
                yield stack, prometheus
            finally:
                prometheus.stop()
    finally:
        pg_service.drop_database(name)


def test_prometheus_scrapes_the_monitor_and_the_sync_worker(
        scraped: tuple[Stack, Prometheus]) -> None:
    _stack, prometheus = scraped
    from testing.apps import automation
    automation.add.delay(2, 3).get(timeout=30)

    def targets_up() -> dict[str, str] | None:
        health = {t["labels"]["job"]: t["health"]
                  for t in prometheus.get("/targets")["activeTargets"]}
        return health if set(health.values()) == {"up"} and len(health) == 2 else None

    wait_for(targets_up, timeout_seconds=30, message="both targets scraped and up")
    wait_for(lambda: prometheus.query('flower_ops_sync_leader == 1'), timeout_seconds=30,
             message="the sync worker's leader gauge")
    wait_for(lambda: prometheus.query(
        'flower_events_total{type="task-succeeded",task="automation.add"}'),
        timeout_seconds=30, message="Flower's task events counter")
    wait_for(lambda: prometheus.query('flower_ops_sync_events_total > 0'),
             timeout_seconds=30, message="the sync worker's events counter")


def test_a_real_backlog_fires_the_rule(scraped: tuple[Stack, Prometheus]) -> None:
    stack, prometheus = scraped
    for i in range(5):     # nobody consumes this queue
        stack.app.send_task("automation.add", args=(i, i), queue=BACKLOG_QUEUE)
    wait_for(lambda: prometheus.query(f'flower_ops_queue_messages{{queue="{BACKLOG_QUEUE}"}} >= 5'),
             timeout_seconds=30, message="the backlog scraped")

    def firing() -> list[dict[str, Any]] | None:
        alerts = [a for a in prometheus.get("/alerts")["alerts"]
                  if a["labels"].get("alertname") == "FlowerOpsAlert"
                  and a["labels"].get("kind") == "queue_backlog" and a["state"] == "firing"]
        return alerts or None

    alerts = wait_for(firing, timeout_seconds=40, message="FlowerOpsAlert{kind=queue_backlog}")
    assert alerts[0]["labels"]["severity"] in ("warning", "critical")
    assert "queue_backlog" in alerts[0]["annotations"]["summary"]
    # the monitor's own answer agrees with what Prometheus fired on
    active = stack.get_json("/alerts", kind="queue_backlog")
    assert any(BACKLOG_QUEUE in str(alert) for alert in active["alerts"]), active


def _panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of the shipped Grafana dashboard,
    with Grafana's variables as Grafana would expand them here."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            expr = (target["expr"].replace("$__rate_interval", "30s")
                    .replace("$queue", ".*"))
            assert "$" not in expr, f"unexpanded variable in {panel['title']!r}: {expr}"
            queries.append((panel["title"], expr))
    return queries


def test_the_grafana_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("queue depth", "oldest", "throughput", "failure", "runtime", "workers",
                  "alerts", "sync lag"):
        assert topic in titles, f"no panel about {topic}"
    provisioning = REPO_ROOT / "deploy" / "grafana" / "provisioning"
    assert (provisioning / "dashboards" / "flower-ops.yml").exists()
    assert (provisioning / "datasources" / "prometheus.yml").exists()


def test_every_grafana_panel_returns_data_from_real_scraped_metrics(
        scraped: tuple[Stack, Prometheus]) -> None:
    stack, prometheus = scraped
    from testing.apps import automation
    stack.app.send_task("automation.add", args=(0, 0), queue=BACKLOG_QUEUE)
    pending = set(_panel_queries())
    answered: dict[str, list[dict[str, Any]]] = {}

    def all_answered() -> bool:
        # keep tasks finishing, and failing, so rates and quantiles have data
        automation.add.delay(1, 1)
        automation.fail.delay("for the failure-rate panel")
        for title, expr in sorted(pending):
            result = prometheus.query(expr)
            values = [float(r["value"][1]) for r in result]
            if result and any(math.isfinite(v) for v in values):
                answered[expr] = result
                pending.discard((title, expr))
        return not pending

    try:
        wait_for(all_answered, timeout_seconds=60, interval_seconds=1,
                 message="every panel's query returning data")
    except AssertionError:
        raise AssertionError(f"panels without data: {sorted(pending)}") from None


def _families(text: str) -> dict[str, str]:
    """``flower_ops_*`` metric families of an exposition: name → type."""
    from prometheus_client.parser import text_string_to_metric_families
    found = {}
    for family in text_string_to_metric_families(text):
        # prometheus_client adds a *_created gauge beside each counter and histogram
        if family.name.startswith("flower_ops_") and not family.name.endswith("_created"):
            suffix = "_total" if family.type == "counter" else ""
            found[family.name + suffix] = family.type
    return found


def test_our_metrics_follow_the_conventions_and_are_documented(
        scraped: tuple[Stack, Prometheus]) -> None:
    stack, _ = scraped
    monitor_text = requests.get(f"{stack.monitor.base_url}/metrics", timeout=10,
                                auth=stack.monitor.basic_auth).text
    sync_text = requests.get(f"http://127.0.0.1:{SYNC_PORT['port']}/metrics", timeout=10).text
    exported = {**_families(monitor_text), **_families(sync_text)}
    for text in (monitor_text, sync_text):
        ours = "".join(line + "\n" for line in text.splitlines()
                       if line.split(" ", 3)[2 if line.startswith("#") else 0]
                       .startswith("flower_ops_"))
        linted = subprocess.run([_tool("promtool"), "check", "metrics"], input=ours,
                                capture_output=True, text=True, timeout=30, check=False)
        assert linted.returncode == 0 and not linted.stdout.strip(), \
            linted.stdout + linted.stderr
    for name, kind in exported.items():
        assert (kind == "counter") == name.endswith("_total"), name
        assert "per_minute" not in name, name
    page = (REPO_ROOT / "docs" / "metrics.md").read_text()
    tables = page[:page.index("## The same thing elsewhere")]   # the two metric tables
    documented = set(re.findall(r"^\| `(flower_ops_[a-z_]+)` \|", tables, re.MULTILINE))
    assert set(exported) == documented

"""The demo Celery app: automation jobs of every shape, driven by beat.

``celery -A flower_ops.demo.app worker|beat|flower-ops``. The broker (and
result backend) is ``REDIS_URL``, which ``flower-ops demo`` points at its
embedded Redis. The jobs are fake but behave like real ones: most succeed,
some fail with real exceptions and tracebacks, some retry with backoff, some
are slow, one kind runs long enough to count as stuck, one spawns children,
and one goes to a queue nobody consumes (a growing backlog). Workflows (a
release chain that sometimes fails at its tests, security-scan chords) are
sent by ``demo/workflows.py``.
"""
from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import Any

from celery import Celery

import flower_ops
from flower_ops.core.env import DEFAULT_REDIS_URL, EnvReader

_env = EnvReader()
REDIS_URL = _env.url("REDIS_URL", schemes=("redis", "rediss", "unix"),
                     default=DEFAULT_REDIS_URL) or DEFAULT_REDIS_URL

# Queues: "celery" (default), "reports", "maintenance" are consumed by the demo
# worker; "archive" has no consumer, so its backlog grows.
TASK_ROUTES = {
    "ops.send_report": {"queue": "reports"},
    "ops.reindex_search": {"queue": "maintenance"},
    "ops.rotate_logs": {"queue": "maintenance"},
    "ops.archive_audit_logs": {"queue": "archive"},
}
WORKER_QUEUES = ("celery", "reports", "maintenance")

app = Celery("flower_ops_demo", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_routes=TASK_ROUTES,
    task_default_queue="celery",
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=True,
    result_expires=3600,
    beat_schedule={
        "send-ops-digest": {
            "task": "ops.send_report", "schedule": timedelta(seconds=4),
            "kwargs": {"report": "ops-digest", "fmt": "html",
                       "recipients": ["oncall@example.com", "sre-team@example.com"]}},
        "sync-inventory-eu": {
            "task": "ops.sync_inventory", "schedule": timedelta(seconds=6),
            "kwargs": {"source": "netbox", "region": "eu-west-1",
                       "filters": {"status": ["active", "staged"],
                                   "tags": {"env": "prod", "team": "platform"}}}},
        "sync-inventory-us": {
            "task": "ops.sync_inventory", "schedule": timedelta(seconds=9),
            "kwargs": {"source": "vsphere", "region": "us-east-1",
                       "filters": {"status": ["active"], "tags": {"env": "staging"}}}},
        "rotate-logs": {
            "task": "ops.rotate_logs", "schedule": timedelta(seconds=10),
            "kwargs": {"hosts": ["web-01", "web-02", "db-01"], "keep_days": 14}},
        "backup-orders-db": {
            "task": "ops.backup_database", "schedule": timedelta(seconds=15),
            "args": ["orders"],
            "kwargs": {"target": {"bucket": "backups-prod", "prefix": "pg/orders/",
                                  "storage_class": "STANDARD_IA"},
                       "options": {"compress": "zstd", "parallel_jobs": 4}}},
        "provision-build-agent": {
            "task": "ops.provision_vm", "schedule": timedelta(seconds=20),
            "kwargs": {"owner": "ci-platform",
                       "spec": {"image": "ubuntu-22.04", "cpu": 4, "memory_gb": 16,
                                "disks": [{"size_gb": 100, "type": "ssd"}],
                                "network": {"vpc": "ci", "subnet": "10.20.0.0/24",
                                            "public_ip": False},
                                "labels": {"purpose": "build-agent", "ttl": "8h"}}}},
        "deploy-playbook": {
            "task": "ops.run_playbook", "schedule": timedelta(seconds=30),
            "kwargs": {"playbook": "patch-openssl.yml", "hosts": ["web-01", "web-02", "web-03"]}},
        "archive-audit-logs": {
            "task": "ops.archive_audit_logs", "schedule": timedelta(seconds=30),
            "kwargs": {"day_offset": 1}},
        "reindex-search": {
            "task": "ops.reindex_search", "schedule": timedelta(minutes=3),
            "kwargs": {"index": "products", "seconds": 150}},
    },
)
flower_ops.instrument(app)


class ProvisioningError(RuntimeError):
    """The (pretend) cloud API refused a VM."""


class InventorySourceUnavailable(ConnectionError):
    """The (pretend) inventory API timed out."""


def _work(low_seconds: float, high_seconds: float) -> float:
    seconds = random.uniform(low_seconds, high_seconds)
    time.sleep(seconds)
    return round(seconds, 3)


@app.task(name="ops.backup_database", bind=True)
def backup_database(self: Any, database: str, target: dict[str, Any],
                    options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Slow: dumps, compresses and uploads; one in eight uploads fails."""
    elapsed = _work(3.0, 8.0)
    if random.random() < 0.125:
        raise OSError(f"upload of {database}.dump.zst to s3://{target['bucket']}/"
                      f"{target['prefix']} failed: connection reset by peer")
    size_mb = random.randint(800, 4200)
    return {"database": database, "object": f"s3://{target['bucket']}/{target['prefix']}"
            f"{database}-{int(time.time())}.dump.zst", "size_mb": size_mb, "seconds": elapsed}


@app.task(name="ops.sync_inventory", bind=True, autoretry_for=(InventorySourceUnavailable,),
          retry_backoff=1, retry_backoff_max=8, retry_jitter=True, max_retries=3)
def sync_inventory(self: Any, source: str, region: str,
                   filters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Flaky upstream: retries with exponential backoff, sometimes gives up."""
    _work(0.2, 1.5)
    if random.random() < 0.35:
        raise InventorySourceUnavailable(
            f"{source} API in {region} timed out after 30s (attempt {self.request.retries + 1})")
    return {"source": source, "region": region, "added": random.randint(0, 12),
            "updated": random.randint(0, 80), "removed": random.randint(0, 3)}


@app.task(name="ops.send_report")
def send_report(report: str, recipients: list[str], fmt: str = "pdf") -> dict[str, Any]:
    """Quick; a rare bad recipient list fails validation."""
    _work(0.05, 0.4)
    if random.random() < 0.05:
        raise ValueError(f"report {report!r}: recipient 'oncall@example' is not a valid address")
    return {"report": report, "format": fmt, "delivered_to": len(recipients)}


@app.task(name="ops.provision_vm", bind=True)
def provision_vm(self: Any, spec: dict[str, Any], owner: str) -> dict[str, Any]:
    """Slow; quota errors fail with a chained exception."""
    _work(4.0, 12.0)
    if random.random() < 0.2:
        try:
            raise KeyError("quota.cpu")
        except KeyError as exc:
            raise ProvisioningError(
                f"cannot provision {spec.get('cpu')} vCPU for {owner}: "
                "regional CPU quota exhausted (used 512/512)") from exc
    return {"vm_id": f"vm-{random.randrange(16 ** 8):08x}", "owner": owner,
            "ip": f"10.20.0.{random.randint(2, 250)}", "image": spec.get("image")}


@app.task(name="ops.rotate_logs")
def rotate_logs(hosts: list[str], keep_days: int = 14) -> dict[str, Any]:
    _work(0.1, 0.8)
    return {"hosts": hosts, "rotated": {host: random.randint(1, 9) for host in hosts},
            "keep_days": keep_days}


@app.task(name="ops.run_playbook", bind=True)
def run_playbook(self: Any, playbook: str, hosts: list[str]) -> dict[str, Any]:
    """Fans out one child task per host (parent/child links in the monitor)."""
    children = [apply_host_step.delay(playbook, host).id for host in hosts]
    return {"playbook": playbook, "children": children}


@app.task(name="ops.apply_host_step")
def apply_host_step(playbook: str, host: str) -> dict[str, Any]:
    _work(0.5, 2.5)
    if random.random() < 0.1:
        raise TimeoutError(f"{playbook}: ssh to {host} timed out during 'apt-get upgrade'")
    return {"host": host, "changed": random.randint(0, 5), "ok": random.randint(5, 20)}


@app.task(name="ops.reindex_search")
def reindex_search(index: str, seconds: float = 150.0) -> dict[str, Any]:
    """Long-running: shows up as stuck once past FLOWER_OPS_STUCK_TASK_SECONDS."""
    time.sleep(seconds)
    return {"index": index, "documents": random.randint(10_000, 90_000)}


@app.task(name="ops.archive_audit_logs")
def archive_audit_logs(day_offset: int = 1) -> dict[str, Any]:
    """Routed to the "archive" queue, which no demo worker consumes."""
    return {"day_offset": day_offset}


# Workflow steps (``demo/workflows.py`` sends them as chains and chords)

@app.task(name="ops.build_release")
def build_release(version: str) -> dict[str, Any]:
    _work(0.3, 1.2)
    return {"version": version, "artifact": f"registry.example.com/shop:{version}"}


@app.task(name="ops.run_test_suite")
def run_test_suite(build: dict[str, Any], suite: str) -> dict[str, Any]:
    """One run in four fails, so the release chain stops here and can be resumed."""
    _work(0.5, 2.0)
    if random.random() < 0.25:
        raise AssertionError(f"suite {suite!r} on {build['version']}: 3 of 412 tests failed "
                             "(test_checkout_timeout, test_refund_rounding, test_cart_merge)")
    return {**build, "tests": {suite: "passed"}}


@app.task(name="ops.deploy_release")
def deploy_release(build: dict[str, Any], environment: str) -> dict[str, Any]:
    _work(0.5, 1.5)
    return {**build, "deployed_to": [*build.get("deployed_to", []), environment]}


@app.task(name="ops.verify_health")
def verify_health(build: dict[str, Any], environment: str) -> dict[str, Any]:
    _work(0.2, 0.8)
    return {**build, "healthy": environment}


@app.task(name="ops.notify_oncall")
def notify_oncall(failed_task_id: str) -> str:
    """A chain's errback: Celery sends it with the failed step's id."""
    return f"paged on-call about {failed_task_id}"


@app.task(name="ops.scan_host")
def scan_host(host: str) -> dict[str, Any]:
    _work(0.1, 1.0)
    return {"host": host, "cves": random.randint(0, 4)}


@app.task(name="ops.summarize_scan")
def summarize_scan(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"hosts": len(results), "cves": sum(r["cves"] for r in results)}


def seed(celery_app: Celery) -> list[str]:
    """One of each job at once, so the monitor has data before beat's first tick."""
    schedule = celery_app.conf.beat_schedule
    ids = []
    for entry in schedule.values():
        if entry["task"] == "ops.reindex_search":
            continue  # beat starts the long one; a second would just hold a slot
        result = celery_app.send_task(entry["task"], args=entry.get("args", ()),
                                      kwargs=entry.get("kwargs", {}))
        ids.append(result.id)
    ids.append(celery_app.send_task("ops.reindex_search",
                                    kwargs={"index": "products", "seconds": 150}).id)
    return ids

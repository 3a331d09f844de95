"""The demo's workflows: Celery canvases sent now and then, as beat sends jobs.

Beat sends one task by name, so a canvas (a chain, a chord) is sent by a
process of its own (``python -m flower_ops.demo.workflows``, one of the demo
runner's children, on ``REDIS_URL``): a release chain of five steps
(one in four stops at its tests, so there is a failed workflow to resume),
a security-scan chord over ten hosts, and, every third round, a nightly
audit chord over forty. Sent from outside any task, each is its own workflow,
as a client's would be.
"""
from __future__ import annotations

import itertools
import logging
import random
import signal
import sys
import threading
from types import FrameType

from celery import Celery, chain, chord

from flower_ops.demo import app as demo_app

logger = logging.getLogger(__name__)

INTERVAL_SECONDS = 20.0
FIRST_ROUND_AFTER_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 60.0
SCAN_HOSTS = tuple(f"web-{n:02d}" for n in range(1, 11))
AUDIT_HOSTS = tuple(f"node-{n:03d}" for n in range(1, 41))


def release_chain(version: str) -> chain:
    """Build, test, stage, check, ship; on-call is told of a failed step."""
    return chain(
        demo_app.build_release.s(version),
        demo_app.run_test_suite.s("integration"),
        demo_app.deploy_release.s("staging"),
        demo_app.verify_health.s("staging"),
        demo_app.deploy_release.s("production"),
    ).on_error(demo_app.notify_oncall.s())


def scan_chord(hosts: tuple[str, ...]) -> chord:
    return chord([demo_app.scan_host.s(host) for host in hosts], demo_app.summarize_scan.s())


def send_round(round_number: int) -> list[str]:
    """One round of workflows; the ids of their last tasks."""
    version = f"v1.{round_number}.{random.randint(0, 9)}"
    sent = [release_chain(version).apply_async().id, scan_chord(SCAN_HOSTS).apply_async().id]
    if round_number % 3 == 0:
        sent.append(scan_chord(AUDIT_HOSTS).apply_async().id)
    return sent


def run_traffic(celery_app: Celery, stopping: threading.Event, *,
                interval_seconds: float = INTERVAL_SECONDS) -> None:
    """Send a round every ``interval_seconds`` until ``stopping`` is set; a
    broker that is down is retried with capped backoff and jitter."""
    failures = 0
    if stopping.wait(FIRST_ROUND_AFTER_SECONDS):   # the monitor starts meanwhile
        return
    for round_number in itertools.count():
        try:
            send_round(round_number)
            failures = 0
            wait = interval_seconds
        except Exception:  # the top of a loop that talks to the broker
            if stopping.is_set():   # the demo is stopping: its Redis may be gone already
                return
            logger.exception("could not send the demo's workflows")
            failures += 1
            wait = min(MAX_BACKOFF_SECONDS, 2.0 ** failures) * random.uniform(0.5, 1.0)
        if stopping.wait(wait):
            return


def main() -> int:
    """Until SIGTERM or SIGINT (the runner stops it before its Redis)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    logger.info("sending the demo's workflows every %.0f s", INTERVAL_SECONDS)
    run_traffic(demo_app.app, stopping)
    return 0


if __name__ == "__main__":
    sys.exit(main())

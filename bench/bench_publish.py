"""What ``flower_ops.instrument(app)`` costs a publisher.

Publishes N tasks to a real Redis with three apps side by side:

* ``plain``       — Celery as configured by the user, no task-sent events;
* ``sent-events`` — plain + ``task_send_sent_event`` (what Celery itself costs
  when the monitor needs PENDING tasks);
* ``instrument``  — ``instrument(app)``: sent events + exact JSON args in
  ``argsrepr``/``kwargsrepr`` + publish timestamp.

for a small call (``add(1, 2)``) and a ~5 KB nested argument. Rounds are
interleaved so machine noise hits every variant alike; the median round is
reported, as µs per publish and as a ratio to ``plain``.

    REDIS_URL=redis://localhost:6379/0 python bench/bench_publish.py [N] [ROUNDS]

Only its own queue key is touched (deleted at the end), never the db.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flower_ops import instrument

QUEUE = "flower-ops-bench-publish"


def make_app(variant: str, redis_url: str) -> Celery:
    app = Celery(f"bench-{variant}", broker=redis_url, set_as_current=False)
    app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True)
    if variant == "sent-events":
        app.conf.task_send_sent_event = True
    elif variant == "instrument":
        instrument(app)
    return app


def big_argument() -> dict[str, Any]:
    rows = [{"id": i, "name": f"Zoë-{i} 日本語 ✓", "ratio": i / 7 + 0.1, "none": None,
             "flag": i % 2 == 0, "nested": {"list": [i, -i, 2**53 + i, [None, "ü"]]}}
            for i in range(40)]
    return {"rows": rows, "emoji": "🚀" * 20}


def publish_round(app: Celery, n: int, args: tuple[Any, ...]) -> float:
    """Seconds per publish over n publishes on one producer (as a web app would)."""
    with app.producer_or_acquire() as producer:
        start = time.perf_counter()
        for _ in range(n):
            app.send_task("bench.noop", args=args, producer=producer)
        return (time.perf_counter() - start) / n


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    redis_url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    # memory:// isolates the publisher's CPU cost from network and Redis noise
    for broker_url in (redis_url, "memory://"):
        run(broker_url, n, rounds)


def run(broker_url: str, n: int, rounds: int) -> None:
    variants = ("plain", "sent-events", "instrument")
    apps = {v: make_app(v, broker_url) for v in variants}
    payloads = {"small add(1, 2)": (1, 2), "5 KB nested arg": (big_argument(),)}
    print(f"\n== publishing {n} tasks x {rounds} rounds per variant to "
          f"{broker_url.split('@')[-1]}")
    try:
        for label, args in payloads.items():
            for app in apps.values():
                publish_round(app, min(n, 200), args)  # warm-up: connections, routes
            samples: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(rounds):
                for variant in variants:
                    samples[variant].append(publish_round(apps[variant], n, args))
            base = statistics.median(samples["plain"])
            print(f"\n{label}")
            for variant in variants:
                median = statistics.median(samples[variant])
                print(f"  {variant:<12} {median * 1e6:8.1f} µs/publish   "
                      f"x{median / base:.2f} vs plain")
            ratio = statistics.median(samples["instrument"]) / statistics.median(
                samples["sent-events"])
            print(f"  exact args alone (instrument vs sent-events): x{ratio:.2f}")
    finally:
        if broker_url.startswith("redis"):
            with apps["plain"].connection_for_write() as conn:
                conn.default_channel.client.delete(QUEUE)


if __name__ == "__main__":
    main()

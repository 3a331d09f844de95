"""``sync-worker`` / ``python -m sync_worker``: run until SIGTERM, flush, exit 0."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from flower_ops.core.env import ConfigError
from sync_worker.config import SyncWorkerConfig
from sync_worker.runner import SyncWorker


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sync-worker",
        description="Keep automation.job_executions in PostgreSQL in step with Celery. "
                    "Configured by environment (DATABASE_URL, REDIS_URL, FLOWER_OPS_SYNC_*).",
        epilog="Every setting with its default: the README's Settings section (sync worker); "
               "how rows move, reconciliation and failover: docs/sync-worker.md.")
    parser.add_argument("-A", "--app", help="reuse this Celery app's broker and result "
                                            "backend (module or module:attribute)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        config = SyncWorkerConfig.from_env(app=args.app)
    except ConfigError as exc:
        # the one line a bad setting gets, before logging exists
        print(f"sync-worker: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    logging.basicConfig(level=config.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.log_level != "DEBUG":
        # psycopg_pool says INFO on every checkout: thousands of lines a minute
        logging.getLogger("psycopg.pool").setLevel(logging.WARNING)
    worker = SyncWorker(config)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("sync_worker").info("signal %d: flushing and stopping", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())

"""The sync worker on a daemon thread of the calling process, for tests that
read its metrics or need it to start quickly (``SyncWorkerProcess`` runs it
as a user does)."""
from __future__ import annotations

import threading

from sync_worker.config import SyncWorkerConfig
from sync_worker.metrics import SyncMetrics
from sync_worker.runner import SyncWorker
from testing.settings import FAST_SYNC_WORKER
from testing.waiting import wait_for


def start_in_process(redis_url: str, database_url: str, *,
                     listen_timeout_seconds: float = 20.0, **env: str) -> SyncWorker:
    """A ``SyncWorker`` configured from ``FAST_SYNC_WORKER`` and ``env`` (later
    wins), running and listening to events; the caller calls ``stop()``."""
    config = SyncWorkerConfig.from_env({"REDIS_URL": redis_url, "DATABASE_URL": database_url,
                                        **FAST_SYNC_WORKER, **env})
    worker = SyncWorker(config, metrics=SyncMetrics())
    threading.Thread(target=worker.run, name="sync-worker", daemon=True).start()
    wait_for(lambda: worker.listening, timeout_seconds=listen_timeout_seconds,
             message="sync worker listening")
    return worker

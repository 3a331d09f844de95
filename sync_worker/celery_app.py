"""The Celery side the sync worker needs: its app (``--app`` or one built from
the settings), and the question to live workers that reconciliation asks."""
from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

from sync_worker.config import SyncWorkerConfig


def build_celery_app(config: SyncWorkerConfig) -> Celery:
    """The app named by ``--app`` (its broker, backend and event settings), or
    a bare one on ``REDIS_URL`` and ``CELERY_RESULT_BACKEND``."""
    if config.app:
        from celery.app.utils import find_app

        app = find_app(config.app)
        if not isinstance(app, Celery):
            raise RuntimeError(f"--app {config.app} is not a Celery app")
        return app
    return Celery("flower-ops-sync", broker=config.redis_url, backend=config.backend_url,
                  set_as_current=False)


def tasks_known_by_workers(app: Celery, hostnames: Sequence[str], task_ids: Sequence[str], *,
                           timeout_seconds: float) -> dict[str, set[str]]:
    """Which of ``task_ids`` each of ``hostnames`` still has (running,
    reserved or scheduled), for the workers that answered in time."""
    with app.connection_for_write() as conn:
        replies = app.control.inspect(destination=list(hostnames), connection=conn,
                                      timeout=timeout_seconds).query_task(*task_ids)
    return {host: set(answer or ()) for host, answer in (replies or {}).items()}

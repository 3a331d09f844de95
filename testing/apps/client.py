"""A client app that sends the automation tasks by name, as another service would."""
from __future__ import annotations

from celery import Celery


def client_app(redis_url: str) -> Celery:
    """Sends ``task-sent`` events and reads extended results from ``redis_url``;
    not the current app, so tests can hold several on different brokers."""
    app = Celery("sync-tests", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(task_send_sent_event=True, result_extended=True,
                    broker_connection_retry_on_startup=True)
    return app

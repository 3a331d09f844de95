"""The Celery apps the harness's workers and monitors run (``-A testing.apps.NAME``),
and the client app tests send tasks with by name."""
from __future__ import annotations

import os

from celery import Celery


def automation_app(broker_url: str) -> Celery:
    """This process's ``testing.apps.automation`` app, on ``broker_url`` as
    broker and result backend.

    ``REDIS_URL`` is set first, before the module's first import reads it,
    and stays set, so child processes started afterwards inherit it.
    """
    os.environ["REDIS_URL"] = broker_url
    from testing.apps import automation

    automation.app.conf.broker_url = broker_url
    automation.app.conf.result_backend = broker_url
    return automation.app

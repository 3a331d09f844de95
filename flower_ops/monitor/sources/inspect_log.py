"""Flower's "Inspect method X failed" while no worker exists yet.

Flower inspects the cluster once as it starts (``stats``, ``active_queues``,
``registered``, ``conf``) and we refresh that on a timer. A broadcast that no
worker answers within ``--inspect_timeout`` comes back empty, and Flower's
inspector then warns "Inspect method X failed", once per method. When the
monitor starts before (or together with) its workers, as in the demo or a
compose stack, that is four warnings about nothing: nobody was there to
answer, and each worker is inspected when it comes online
(``services/worker_arrivals.py``).

``quiet_inspect_before_workers`` turns exactly those into DEBUG lines when
Flower had seen no worker at all (no event, no inspect reply) as the
broadcast went out: the inspect call notes that on its thread, where Flower
logs its outcome. A worker that comes up during the broadcast misses it and is
inspected on arrival. Once a worker is known, an unanswered inspect is a
warning again; one aimed at a named worker always is; an inspect that raised
(a connection error, a bad reply) always is, as it carries the exception.
"""
from __future__ import annotations

import functools
import logging
import threading
from typing import Any

INSPECTOR_LOGGER = "flower.inspector"
NO_REPLY_MESSAGE = "Inspect method %s failed"

logger = logging.getLogger(__name__)
_call = threading.local()  # .expected: did anyone know of a worker as this inspect began


def workers_known(flower_app: Any) -> bool:
    """Has Flower seen any worker, by event or inspect reply? (len() of a dict is
    safe from the inspect thread; entries are only ever added.)"""
    events = getattr(flower_app, "events", None)
    seen = getattr(getattr(events, "state", None), "workers", None) or ()
    inspected = getattr(getattr(flower_app, "inspector", None), "workers", None) or ()
    return bool(len(seen) or len(inspected))


class NoWorkerYetFilter(logging.Filter):
    """Drops Flower's no-reply warning (logging it at DEBUG) for an inspect
    that began while no worker was known."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg != NO_REPLY_MESSAGE or len(args) != 1 or getattr(_call, "expected", True):
            return True
        logger.debug("inspect %s: no worker answered (none has been seen yet)", args[0])
        return False


def quiet_inspect_before_workers(flower_app: Any) -> NoWorkerYetFilter:
    """Note, as each of ``flower_app``'s inspect calls begins, whether a worker
    was known; install the filter on Flower's inspector logger (returned)."""
    inspector = flower_app.inspector
    inspect = inspector._inspect  # Flower 2.2's one call per method, on an executor thread

    @functools.wraps(inspect)
    def noting_who_could_answer(method: str, workername: str | None = None) -> Any:
        _call.expected = workername is not None or workers_known(flower_app)
        try:
            return inspect(method, workername)
        finally:
            _call.expected = True

    inspector._inspect = noting_who_could_answer
    quiet = NoWorkerYetFilter()
    logging.getLogger(INSPECTOR_LOGGER).addFilter(quiet)
    return quiet

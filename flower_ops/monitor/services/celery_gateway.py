"""Step 3's broker side: revoke tasks and publish retries through the app's
connection pool, every broker error turned into ``Unavailable``."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from flower_ops.core.errors import FlowerOpsError, Unavailable
from flower_ops.core.payload import encode_exact
from flower_ops.monitor.services.action_lookup import TaskSnapshot
from flower_ops.revocations import RevocationMarkers

logger = logging.getLogger(__name__)


# remove(queue, task_ids) -> the ids whose waiting message was taken out
QueueRemover = Callable[[str, Sequence[str]], set[str]]


class CeleryGateway:
    """Blocking: call it on the executor.

    ``remove_queued`` takes waiting messages out of their queue where the
    broker allows it (Redis); without it (RabbitMQ) a revoked message stays
    until a worker receives and discards it.
    """

    def __init__(self, *, capp: Any, markers: RevocationMarkers,
                 remove_queued: QueueRemover | None = None,
                 broker_timeout_seconds: float = 5.0) -> None:
        self.capp = capp
        self.markers = markers
        self.remove_queued = remove_queued
        self._broker_timeout = broker_timeout_seconds

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection from the app's pool (never one per request), checked
        within ``broker_timeout_seconds``; broker errors become ``Unavailable``."""
        try:
            pooled = self.capp.pool.acquire(block=True, timeout=self._broker_timeout)
        except Exception as exc:
            raise Unavailable("broker unavailable", {"reason": str(exc)[:300]}) from exc
        with pooled as conn:  # an error inside replaces the connection in the pool
            try:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2,
                                       interval_max=0.2, timeout=self._broker_timeout)
            except Exception as exc:
                raise Unavailable("broker unavailable", {"reason": str(exc)[:300]}) from exc
            try:
                yield conn
            except FlowerOpsError:
                raise
            except Exception as exc:  # the broker dropped us mid-way
                raise Unavailable("broker unavailable", {"reason": str(exc)[:300]}) from exc

    def revoke(self, task_ids: list[str]) -> None:
        """Markers first (a worker that starts later still skips the task),
        then the broadcast. ``terminate`` is harmless for a queued task and
        covers one that started since we looked."""
        try:
            self.markers.add(task_ids)
        except Exception as exc:
            raise Unavailable("broker unavailable", {"reason": str(exc)[:300]}) from exc
        try:
            with self.connection() as conn:
                self.capp.control.revoke(task_ids, terminate=True, signal="SIGTERM",
                                         connection=conn)
        except Unavailable:
            try:
                self.markers.discard(task_ids)
            except Exception:
                logger.warning("could not remove revoke markers", exc_info=True)
            raise

    def take_out_of_queues(self, queued: Sequence[TaskSnapshot]) -> set[str]:
        """After the revoke: the waiting messages of ``queued`` tasks taken out
        of their queues, where the broker allows it. Returns those ids: they
        can no longer run. Best effort: a failure leaves them to the revoke."""
        if self.remove_queued is None:
            return set()
        by_queue: dict[str, list[str]] = {}
        for snap in queued:
            if snap.queue:
                by_queue.setdefault(snap.queue, []).append(snap.id)
        removed: set[str] = set()
        for queue, ids in by_queue.items():
            try:
                removed |= self.remove_queued(queue, ids)
            except Exception:
                logger.warning("could not take %d revoked message(s) out of %s", len(ids),
                               queue, exc_info=True)
        return removed

    def publish(self, conn: Any, snap: TaskSnapshot, new_id: str, args: list[Any],
                 kwargs: dict[str, Any], links: dict[str, Any] | None = None) -> None:
        """Send ``snap``'s task again as ``new_id``; ``links`` are its workflow
        options (chain, link, link_error, chord, group_id, root_id, headers...)
        when a workflow step is resumed."""
        options: dict[str, Any] = dict(links or {})
        if snap.queue:
            options["queue"] = snap.queue
        if snap.exchange:
            options["exchange"] = snap.exchange
        if snap.routing_key:
            options["routing_key"] = snap.routing_key
        # The new run's events carry exact arguments even if this app is not
        # instrumented, so it can be retried exactly in turn.
        argsrepr, kwargsrepr = encode_exact(args), encode_exact(kwargs)
        if argsrepr is not None and kwargsrepr is not None:
            options.update(argsrepr=argsrepr, kwargsrepr=kwargsrepr)
        try:
            self.capp.send_task(snap.name, args=args, kwargs=kwargs, task_id=new_id,
                                connection=conn, add_to_parent=False, retry=True,
                                retry_policy={"max_retries": 2, "interval_start": 0,
                                              "interval_step": 0.2, "interval_max": 0.5},
                                **options)
        except Exception as exc:
            raise Unavailable("broker unavailable", {"reason": str(exc)[:300]}) from exc

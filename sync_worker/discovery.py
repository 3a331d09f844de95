"""Finding tasks that have no row at all (every one of their events was missed).

Reconciliation repairs rows that exist; these read Redis for task ids the
table does not know, in bounded steps, and insert them:

``ResultDiscovery`` walks the result backend's ``celery-task-meta-*`` keys
with ``SCAN`` (the cursor lives in memory between ticks, ``max_keys`` per
tick), asks PostgreSQL which ids it already has (one ``= ANY`` query per
tick), ``MGET``s only the unknown ones and inserts them with the state the
backend holds, through the same guarded merge as events. With
``result_extended`` (which ``flower_ops.instrument`` sets) the meta carries
name, args, kwargs, queue, worker and retries; args are the real values, so
they are stored as exact.

``QueueDiscovery`` reads the broker's queue lists (``LRANGE`` in chunks, at
most ``max_messages_per_queue`` per pass) and inserts ``pending`` rows for
queued tasks never seen (no ``task-sent`` event, or it was dropped): id,
name, args (exact when the body is JSON) and queue from the message.

Both are idempotent: running a pass twice inserts nothing the second time.
"""
from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import states

from flower_ops.core.payload import decode_args
from flower_ops.core.transitions import Transition, fold
from flower_ops.db.batch import PgExecutionStore
from sync_worker.reconcile import transition_from_meta

logger = logging.getLogger(__name__)


@dataclass
class DiscoveryTick:
    scanned: int = 0          # keys or messages looked at
    inserted: int = 0         # rows created
    recent: int = 0           # left for live events this time (finished just now)
    pass_done: bool = False   # the walk wrapped around


def transition_from_extended_meta(task_id: str, meta: dict[str, Any], *,
                                  now: float) -> Transition | None:
    """``transition_from_meta`` plus what ``result_extended`` adds (exact args)."""
    transition = transition_from_meta(task_id, meta, now=now)
    if transition is None:
        return None
    if "args" in meta or "kwargs" in meta:
        args = meta.get("args")
        transition.fields["args"] = list(args) if isinstance(args, (list, tuple)) else args
        transition.fields["kwargs"] = meta.get("kwargs")
        transition.fields["args_exact"] = True
    return transition


class ResultDiscovery:
    """Rows for task ids the Redis result backend knows and the table does not."""

    def __init__(self, *, backend: Any, store: PgExecutionStore, max_keys: int = 2000,
                 scan_count: int = 1000, settle_seconds: float = 2.0,
                 oldest_epoch: float | None = None) -> None:
        self._backend = backend
        self._client = backend.client
        prefix = backend.task_keyprefix
        self._prefix = prefix.encode() if isinstance(prefix, str) else bytes(prefix)
        self._store = store
        self._max_keys = max_keys
        self._scan_count = scan_count
        self._settle = settle_seconds
        self._oldest = oldest_epoch
        self._cursor = 0

    @staticmethod
    def supports(backend: Any) -> bool:
        return (type(backend).__name__ in ("RedisBackend", "SentinelBackend")
                and hasattr(backend, "client") and hasattr(backend, "task_keyprefix"))

    def restart(self) -> None:
        self._cursor = 0

    def tick(self) -> DiscoveryTick:
        """One bounded step of the walk (at most ``max_keys`` keys)."""
        report = DiscoveryTick()
        keys: list[bytes] = []
        pattern = self._prefix.replace(b"[", b"\\[").replace(b"*", b"\\*") + b"*"
        while True:
            self._cursor, batch = self._client.scan(self._cursor, match=pattern,
                                                    count=self._scan_count)
            keys.extend(batch)
            if self._cursor == 0:
                report.pass_done = True
                break
            if len(keys) >= self._max_keys:
                break
        report.scanned = len(keys)
        if not keys:
            return report
        by_id = {key[len(self._prefix):].decode("utf-8", "replace"): key for key in keys}
        known = self._store.known_ids(list(by_id))
        unknown = [task_id for task_id in by_id if task_id not in known]
        if not unknown:
            return report
        now = time.time()
        transitions: list[Transition] = []
        for task_id, raw in zip(unknown, self._client.mget([by_id[i] for i in unknown]),
                                strict=True):
            if not raw:
                continue    # expired between SCAN and MGET
            meta = self._backend.decode_result(raw)
            if not isinstance(meta, dict) or meta.get("status") == states.PENDING:
                continue
            transition = transition_from_extended_meta(task_id, meta, now=now)
            if transition is None:
                continue
            if now - transition.timestamp < self._settle:
                report.recent += 1      # its events are probably on their way
                continue
            if self._oldest is not None and transition.timestamp < self._oldest:
                continue                # older than retention keeps
            transitions.append(transition)
        if transitions:
            self._store.apply(fold(transitions).values(), transitions)
            report.inserted = len(transitions)
        return report


def task_from_message(raw: bytes | str) -> Transition | None:
    """A ``pending`` transition for one queued kombu message (task protocol 1
    or 2); None for anything that is not a Celery task message."""
    try:
        envelope = json.loads(raw)
        headers = envelope.get("headers") or {}
        props = envelope.get("properties") or {}
    except (ValueError, AttributeError):
        return None
    task_id, name = headers.get("id"), headers.get("task")
    args: Any = None
    kwargs: Any = None
    exact = False
    body: Any = None
    if envelope.get("content-type") == "application/json":
        try:
            encoded = envelope.get("body")
            if props.get("body_encoding") == "base64":
                encoded = base64.b64decode(encoded)
            body = json.loads(encoded)
        except (ValueError, TypeError):
            body = None
    if isinstance(body, dict) and not task_id:          # protocol 1
        task_id, name = body.get("id"), body.get("task")
        args, kwargs, exact = body.get("args"), body.get("kwargs"), True
    elif isinstance(body, list) and len(body) >= 2:      # protocol 2: [args, kwargs, embed]
        args, kwargs, exact = body[0], body[1], True
    if not task_id or not name:
        return None
    if not exact:
        args, args_exact = decode_args(headers.get("argsrepr"))
        kwargs, kwargs_exact = decode_args(headers.get("kwargsrepr"))
        exact = args_exact and kwargs_exact
    delivery = props.get("delivery_info") or {}
    fields: dict[str, Any] = {
        "task_name": name, "args": args, "kwargs": kwargs, "args_exact": exact,
        "routing_key": delivery.get("routing_key"), "exchange": delivery.get("exchange") or None,
        "parent_id": headers.get("parent_id"), "root_id": headers.get("root_id"),
        "retries": headers.get("retries") if isinstance(headers.get("retries"), int) else None,
    }
    # no lifecycle timestamp: when it was sent is not in the message
    return Transition(str(task_id), "PENDING", time.time(), None, fields, source="reconcile")


class QueueDiscovery:
    """``pending`` rows for messages waiting in Redis broker queues."""

    def __init__(self, *, client: Any, queue_keys: dict[str, str], store: PgExecutionStore,
                 chunk_size: int = 500, max_messages_per_queue: int = 10_000) -> None:
        self._client = client            # plain redis client on the broker's db
        self._queue_keys = queue_keys    # list key (prefix and priority included) -> queue
        self._store = store
        self._chunk = chunk_size
        self._max = max_messages_per_queue

    def run_pass(self, *, should_stop: Any = lambda: False) -> DiscoveryTick:
        report = DiscoveryTick(pass_done=True)
        for key, queue in self._queue_keys.items():
            start = 0
            while start < self._max and not should_stop():
                raws = self._client.lrange(key, start, start + self._chunk - 1)
                if not raws:
                    break
                report.scanned += len(raws)
                report.inserted += self._insert_unknown(raws, queue)
                start += len(raws)
                if len(raws) < self._chunk:
                    break
        return report

    def _insert_unknown(self, raws: Sequence[bytes], queue: str) -> int:
        found: dict[str, Transition] = {}
        for raw in raws:
            transition = task_from_message(raw)
            if transition is not None:
                transition.fields["queue"] = queue
                found[transition.task_id] = transition
        if not found:
            return 0
        known = self._store.known_ids(list(found))
        transitions = [t for task_id, t in found.items() if task_id not in known]
        if transitions:
            self._store.apply(fold(transitions).values(), transitions)
        return len(transitions)


def queue_discovery_for(app: Any, conn: Any, *, store: PgExecutionStore,
                        max_messages_per_queue: int) -> QueueDiscovery | None:
    """A ``QueueDiscovery`` over the app's queues on a plain Redis broker, or None."""
    import redis

    if getattr(conn.transport, "driver_type", None) != "redis":
        return None
    channel = conn.default_channel
    if type(channel).__module__ != "kombu.transport.redis" or type(channel).__name__ != "Channel":
        return None
    params = dict(channel._connparams())
    params.pop("max_connections", None)
    params.pop("virtual_host", None)
    params["protocol"] = 2
    prefix = getattr(channel, "global_keyprefix", "") or ""
    keys: dict[str, str] = {}
    for queue in app.amqp.queues:
        for pri in channel.priority_steps:
            keys[prefix + channel._q_for_pri(queue, pri)] = queue
    client = redis.Redis(connection_pool=redis.ConnectionPool(**params))
    return QueueDiscovery(client=client, queue_keys=keys, store=store,
                          max_messages_per_queue=max_messages_per_queue)

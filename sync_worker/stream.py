"""Events in, losslessly: the Redis stream ``instrument(app)`` writes
(``flower_ops/capture.py``), read through a consumer group.

Every replica runs a ``StreamConsumer`` (not only the leader): the group
(``flower-ops-sync``, created at id 0 with MKSTREAM if missing) hands each
entry to one consumer; entries become transitions in the buffer together
with their ids, and the writer acknowledges them (``ack``) only after their
batch is committed. No dropping: when the buffer is full the consumer stops
reading (the stream keeps the rest). Every ``claim_idle_seconds`` it claims
(XAUTOCLAIM) entries another consumer was given and did not acknowledge for
that long: a replica killed with -9 loses nothing. On every (re)connection it
first reads its own pending entries again (id 0).

An entry is ``n <count> e <JSON list of event dicts>`` (kombu's JSON, so a
tagged value, e.g. a datetime, comes back as it was sent).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from kombu.utils.json import loads as kombu_json_loads

from flower_ops.core.transitions import Transition
from sync_worker.backoff import Backoff
from sync_worker.buffer import EventBuffer
from sync_worker.config import SyncWorkerConfig
from sync_worker.events import transition_from_event
from sync_worker.metrics import SyncMetrics

logger = logging.getLogger(__name__)

_raw_decode = json.JSONDecoder().raw_decode
_BLOCK_MS = 1000


@dataclass(frozen=True)
class StreamTarget:
    connection_params: dict[str, Any]
    key: str                     # the stream key, global_keyprefix included
    description: str


def stream_target(app: Celery, key: str) -> StreamTarget | None:
    """Where ``app``'s instrumented processes write the stream; None when the
    broker is not a plain Redis (AMQP, sentinel...)."""
    with app.connection_for_read() as conn:
        transport = type(conn.transport)
        if transport.__module__ != "kombu.transport.redis" or transport.__name__ != "Transport":
            return None
        channel = conn.default_channel
        channel.client  # noqa: B018 - builds the pool, which formats {db}
        params = dict(channel._connparams())
        prefix = getattr(channel, "global_keyprefix", "") or ""
    for name in ("max_connections", "virtual_host", "health_check_interval",
                 "retry_on_timeout"):
        params.pop(name, None)
    params["protocol"] = 2
    params["socket_timeout"] = _BLOCK_MS / 1000 + 10
    params["socket_keepalive"] = True
    where = params.get("path") or f"{params.get('host')}:{params.get('port')}"
    return StreamTarget(params, prefix + key, f"redis://{where}/{params.get('db', 0)} "
                                              f"{prefix + key}")


def consumer_name() -> str:
    """Unique per replica: a restarted replica is a new consumer."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def decode_entry(raw: bytes) -> list[dict[str, Any]]:
    tagged = b'"__type__"' in raw
    events = kombu_json_loads(raw) if tagged else _raw_decode(raw.decode("utf-8"))[0]
    return events if isinstance(events, list) else [events]


class StreamConsumer:
    def __init__(self, config: SyncWorkerConfig, *, app: Celery, buffer: EventBuffer,
                 metrics: SyncMetrics, committing: threading.Event | None = None) -> None:
        self._config = config
        # clear while this replica's batches do not commit: new entries are
        # left to the other replicas (and to this one once it commits again)
        self._committing = committing
        self._paused_logged = False
        self._app = app
        self._buffer = buffer
        self._metrics = metrics
        self.name = consumer_name()
        self.group = config.stream_group
        self.target: StreamTarget | None = None
        self.client: Any = None        # redis.Redis, thread-safe (a pool)
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._next_claim = 0.0
        self.undecodable = 0
        # ids in our buffer, not yet acknowledged: a claim (of our own entries,
        # idle while the database is away) must not buffer them twice
        self._inflight: set[Any] = set()
        self._inflight_lock = threading.Lock()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()

    # -- acknowledgement (the writer's thread) -------------------------------
    def ack(self, ids: list[Any]) -> None:
        client, target = self.client, self.target
        if client is None or target is None:
            return
        with self._inflight_lock:
            self._inflight.difference_update(ids)
        try:
            for start in range(0, len(ids), 5000):
                client.xack(target.key, self.group, *ids[start:start + 5000])
        except redis.RedisError as exc:
            # still pending: claimed again later, merged again (idempotent)
            logger.warning("could not acknowledge %d stream entries (%s); they stay "
                           "pending and are merged again when claimed", len(ids), exc)
            return
        self._metrics.stream_acked.inc(len(ids))

    # -- the reading loop ----------------------------------------------------
    def run(self) -> None:
        backoff: Backoff = self._config.backoff()
        while not self._stop.is_set():
            try:
                if self.target is None:
                    self.target = stream_target(self._app, self._config.stream_key)
                    if self.target is None:
                        logger.info("stream consumer: the broker is not a plain Redis; "
                                    "no capture stream to read")
                        return
                    self.client = redis.Redis(connection_pool=redis.ConnectionPool(
                        **self.target.connection_params))
                self._consume(backoff)
            except redis.RedisError as exc:
                self.connected.clear()
                if self._stop.is_set():
                    return
                delay = backoff.next_delay()
                logger.warning("stream consumer: Redis unavailable (%s); reconnecting in "
                               "%.1fs", exc, delay)
                self._metrics.reconnects.labels("stream").inc()
                self._stop.wait(delay)
        self.connected.clear()

    def _ensure_group(self, client: Any, key: str) -> None:
        try:
            client.xgroup_create(key, self.group, id="0", mkstream=True)
            logger.info("stream consumer: created consumer group %s on %s", self.group, key)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _consume(self, backoff: Backoff) -> None:
        client, target = self.client, self.target
        assert client is not None and target is not None
        self._ensure_group(client, target.key)
        # our own pending entries first (a reconnection may have cut a reply)
        last: bytes | str = "0"
        while not self._stop.is_set():
            reply = client.xreadgroup(self.group, self.name, {target.key: last},
                                      count=self._config.stream_read_count)
            entries = reply[0][1] if reply else []
            if not entries:
                break
            self._handle(entries, again=True)
            last = entries[-1][0]
        self.connected.set()
        backoff.reset()
        logger.info("stream consumer %s reading %s (group %s)", self.name,
                    target.description, self.group)
        self._next_claim = time.monotonic() + min(5.0, self._config.claim_idle_seconds)
        count = self._config.stream_read_count
        needed = count * 100        # an entry holds up to 100 events by default
        while not self._stop.is_set():
            if not self._buffer.wait_for_room(min(needed, self._config.max_buffered_events // 2),
                                              self._stop):
                continue            # back-pressure: the stream holds the rest
            if not self._may_read():
                continue
            if time.monotonic() >= self._next_claim:
                self._claim(client, target.key)
            reply = client.xreadgroup(self.group, self.name, {target.key: ">"},
                                      count=count, block=_BLOCK_MS)
            if reply:
                self._handle(reply[0][1])

    def _may_read(self) -> bool:
        """False (after up to a second) while this replica's batches fail to
        commit: entries it read now would wait for it, not for a replica that
        can commit them, until claimed ``claim_idle_seconds`` later."""
        committing = self._committing
        if committing is None or committing.wait(1.0):
            if self._paused_logged:
                logger.info("stream consumer: batches commit again; reading resumes")
                self._paused_logged = False
            return True
        if not self._paused_logged:
            logger.warning("stream consumer: not reading while batches fail to commit "
                           "(new entries stay in the stream for the other replicas)")
            self._paused_logged = True
        return False

    def _claim(self, client: Any, key: str) -> None:
        idle_ms = int(self._config.claim_idle_seconds * 1000)
        cursor: bytes | str = "0-0"
        claimed = 0
        while not self._stop.is_set():
            reply = client.xautoclaim(key, self.group, self.name, idle_ms, cursor,
                                      count=self._config.stream_read_count)
            cursor, entries = reply[0], reply[1]
            if entries:
                claimed += self._handle(entries, again=True)
            if cursor in (b"0-0", "0-0") or not self._buffer.wait_for_room(
                    self._config.stream_read_count * 100, self._stop, timeout=0):
                break
        if claimed:
            self._metrics.stream_claimed.inc(claimed)
            logger.info("stream consumer: claimed %d entries unacknowledged for over %.0fs "
                        "(a replica stopped or stalled)", claimed,
                        self._config.claim_idle_seconds)
        self._next_claim = time.monotonic() + max(1.0, self._config.claim_idle_seconds / 2)

    def _handle(self, entries: list[Any], *, again: bool = False) -> int:
        """Entries to the buffer with their ids; ``again``: claimed or pending
        ones, of which those already in our buffer are skipped."""
        transitions: list[Transition] = []
        ids: list[bytes] = []
        empty: list[bytes] = []
        if again:
            with self._inflight_lock:
                inflight = self._inflight
                entries = [e for e in entries if e[0] not in inflight]
        for entry_id, fields in entries:
            raw = fields.get(b"e") if fields else None
            if raw is None:           # trimmed away before we read it
                if entry_id is not None:
                    empty.append(entry_id)
                continue
            try:
                events = decode_entry(raw)
            except (ValueError, TypeError, UnicodeDecodeError) as exc:
                self.undecodable += 1
                logger.warning("skipping undecodable stream entry %r: %s", entry_id, exc)
                empty.append(entry_id)
                continue
            found = False
            for event in events:
                if isinstance(event, dict):
                    transition = transition_from_event(event)
                    if transition is not None:
                        transitions.append(transition)
                        found = True
            (ids if found else empty).append(entry_id)
        self._metrics.stream_read.inc(len(entries))
        if transitions:
            with self._inflight_lock:
                self._inflight.update(ids)
            self._buffer.put_many(transitions, ids)
        if empty:
            self.ack(empty)
        return len(entries)

"""The fast path for Redis brokers: Celery events straight from pub/sub.

kombu's Redis transport fans an event out with ``PUBLISH`` on the channel
``{global_keyprefix}{keyprefix_fanout}{exchange}/{routing_key}`` (the
``/{db}.`` fanout prefix and the per-routing-key suffix being kombu's
``fanout_prefix`` / ``fanout_patterns`` defaults), and Celery's
``EventReceiver`` listens with ``PSUBSCRIBE`` on ``.../celeryev/*``. Going
through ``EventReceiver`` costs a kombu ``Message``, a virtual-transport
delivery and a generic decode per event; here we subscribe to the same
pattern on our own redis-py connection, read many replies per wake-up and
decode kombu's envelope ourselves (JSON envelope, base64 body, JSON
payload). Anything else (another serializer, another body encoding) goes
through kombu's own decoder, so what comes out is the same event dict.

The subscription is taken from the kombu channel of the app's connection, so
``global_keyprefix``, ``fanout_prefix``, ``fanout_patterns``, the database
number, TLS and credentials are exactly what the workers publish with.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import redis
from kombu.serialization import loads as kombu_loads
from kombu.serialization import prepare_accept_content
from kombu.utils.json import loads as kombu_json_loads

logger = logging.getLogger(__name__)

# Channels that are redis, but not plain redis (sentinel fails over between
# servers, the cluster transport shards): they keep kombu's receiver.
_FAST_CHANNEL_MODULE = "kombu.transport.redis"


class Undecodable(ValueError):
    """A pub/sub payload that is not a kombu message."""


@dataclass(frozen=True)
class RedisEventsTarget:
    """Where the events of one Celery app are published on one Redis."""

    connection_params: dict[str, Any]
    pattern: str                 # what to PSUBSCRIBE to, global prefix included
    description: str             # for logs: no password
    accept: frozenset[str] = frozenset({"application/json"})   # content types


def redis_events_target(conn: Any, *, exchange: str,
                        serializer: str = "json") -> RedisEventsTarget | None:
    """The pub/sub pattern for ``exchange`` on kombu connection ``conn``, or
    None when the broker is not a plain Redis (AMQP, sentinel...)."""
    if getattr(conn.transport, "driver_type", None) != "redis":
        return None
    channel = conn.default_channel
    if type(channel).__module__ != _FAST_CHANNEL_MODULE or type(channel).__name__ != "Channel":
        return None
    channel.client  # noqa: B018 - builds the pool, which formats {db} into the prefix
    params = dict(channel._connparams())
    params.pop("max_connections", None)
    params.pop("virtual_host", None)
    # pub/sub can stay silent for hours: no read timeout, the loop pings instead
    params["socket_timeout"] = None
    params["socket_keepalive"] = True
    # RESP2: pub/sub messages are plain replies (RESP3 would deliver them as
    # push frames, which read_response only returns to redis-py's own loop)
    params["protocol"] = 2
    prefix = getattr(channel, "global_keyprefix", "") or ""
    topic = channel.keyprefix_fanout + exchange
    if channel.fanout_patterns:
        topic += "/*"       # EventReceiver binds '#', kombu maps it to '*'
    where = params.get("path") or f"{params.get('host')}:{params.get('port')}"
    # what EventReceiver accepts: the event serializer and json
    accept = frozenset(prepare_accept_content({serializer, "json"}))
    return RedisEventsTarget(connection_params=params, pattern=prefix + topic,
                             description=f"redis://{where}/{params.get('db', 0)} {prefix + topic}",
                             accept=accept)


def _adjust_timestamp(event: dict[str, Any]) -> None:
    # what EventReceiver.event_from_message does with localize=True
    timestamp, offset = event.get("timestamp"), event.get("utcoffset")
    if timestamp is not None and offset is not None:
        try:
            event["timestamp"] = timestamp - offset * 3600
        except TypeError:
            pass


def decode_events(payload: bytes, *,
                  accept: frozenset[str] = frozenset({"application/json"})
                  ) -> list[dict[str, Any]]:
    """The event dicts carried by one kombu pub/sub payload (Celery may send
    a list of events in one message)."""
    try:
        envelope = json.loads(payload)
        body = envelope["body"]
        props = envelope.get("properties") or {}
        content_type = envelope.get("content-type")
        encoding = envelope.get("content-encoding") or "utf-8"
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Undecodable(f"not a kombu envelope: {exc}") from exc
    try:
        if props.get("body_encoding") == "base64":
            raw: bytes | str = base64.b64decode(body, validate=False)
        else:
            raw = body
        if content_type == "application/json" and encoding == "utf-8":
            # kombu's JSON revives tagged values ({"__type__": ...}); plain
            # json is 3x faster and equal whenever no tag is present
            if (b'"__type__"' if isinstance(raw, bytes) else '"__type__"') in raw:
                event = kombu_json_loads(raw)
            else:
                event = json.loads(raw)
        else:
            event = kombu_loads(raw, content_type, encoding, accept=accept)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise Undecodable(f"undecodable event body: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - kombu raises its own family per codec
        raise Undecodable(f"undecodable event body: {exc!r}") from exc
    events = event if isinstance(event, list) else [event]
    now = time.time()
    for one in events:
        if not isinstance(one, dict) or "type" not in one:
            raise Undecodable("event body is not an event")
        _adjust_timestamp(one)
        one["local_received"] = now
    return events


class RedisEventStream:
    """One PSUBSCRIBE connection; ``run`` hands decoded events to ``handle_many``
    in chunks until ``should_stop`` or a connection error (which it raises)."""

    def __init__(self, target: RedisEventsTarget, *,
                 handle_many: Callable[[list[dict[str, Any]]], None],
                 on_subscribed: Callable[[], None], should_stop: Callable[[], bool],
                 max_chunk: int = 1000, idle_ping_seconds: float = 15.0) -> None:
        self._target = target
        self._handle_many = handle_many
        self._on_subscribed = on_subscribed
        self._should_stop = should_stop
        self._max_chunk = max_chunk
        self._idle_ping = idle_ping_seconds
        self._client: redis.Redis | None = None
        self._pubsub: Any = None
        self.undecodable = 0

    def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        client, self._client = self._client, None
        for thing in (pubsub, client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass

    def run(self) -> None:
        self._client = redis.Redis(connection_pool=redis.ConnectionPool(
            **self._target.connection_params))
        self._pubsub = self._client.pubsub()
        self._pubsub.psubscribe(self._target.pattern)
        conn = self._pubsub.connection
        subscribed = False
        last_read = time.monotonic()
        ping_sent_at: float | None = None
        chunk: list[dict[str, Any]] = []
        accept = self._target.accept
        while not self._should_stop():
            if not conn.can_read(timeout=0.5):
                now = time.monotonic()
                if ping_sent_at is not None and now - ping_sent_at > self._idle_ping:
                    raise ConnectionError("Redis did not answer a PING on the events "
                                          f"connection for {self._idle_ping:.0f}s")
                if ping_sent_at is None and now - last_read > self._idle_ping:
                    self._pubsub.ping()
                    ping_sent_at = now
                continue
            # drain what is buffered or already on the socket, in bounded chunks
            while True:
                reply = conn.read_response()
                kind = reply[0] if isinstance(reply, list) else None
                if kind == b"pmessage":
                    try:
                        chunk.extend(decode_events(reply[3], accept=accept))
                    except Undecodable as exc:
                        self.undecodable += 1
                        if self.undecodable <= 10 or self.undecodable % 1000 == 0:
                            logger.warning("skipping an event on %r: %s (%d so far)",
                                           reply[2], exc, self.undecodable)
                elif kind == b"psubscribe" and not subscribed:
                    subscribed = True
                    self._on_subscribed()
                if len(chunk) >= self._max_chunk or not conn.can_read(timeout=0):
                    break
            if chunk:
                self._handle_many(chunk)
                chunk = []
            last_read = time.monotonic()
            ping_sent_at = None

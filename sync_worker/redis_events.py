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
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from kombu.serialization import loads as kombu_loads
from kombu.serialization import prepare_accept_content
from kombu.utils.json import loads as kombu_json_loads

logger = logging.getLogger(__name__)

# Channels that are redis, but not plain redis (sentinel fails over between
# servers, the cluster transport shards): they keep kombu's receiver.
_FAST_CHANNEL_MODULE = "kombu.transport.redis"


# json.loads() wraps the C scanner in encoding detection and two regex
# matches per call; raw_decode on a str goes straight to it.
_raw_decode = json.JSONDecoder().raw_decode


def _json(text: bytes | str) -> Any:
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    value, end = _raw_decode(text)
    if end != len(text) and text[end:].strip():
        raise ValueError(f"extra data at {end}")
    return value


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


# kombu's Redis transport writes the envelope as json.dumps of a dict in this
# order, so an event published by Celery starts with exactly this.
_ENVELOPE_HEAD = b'{"body": "'
_ENVELOPE_JSON_BASE64 = b'", "content-encoding": "utf-8", "content-type": "application/json", '
_BASE64_MARK = b', "body_encoding": "base64", '


def _fast_body(payload: bytes) -> bytes | None:
    """The JSON body of the common envelope (base64, JSON, UTF-8) without
    parsing the envelope: base64 has no quote, so the body ends at the first
    one. None when the envelope is not exactly that shape."""
    if not payload.startswith(_ENVELOPE_HEAD):
        return None
    end = payload.find(b'"', 10)
    if end < 0 or not payload.startswith(_ENVELOPE_JSON_BASE64, end):
        return None
    properties = payload.rfind(b'"properties": {')
    if properties < 0 or (payload.find(_BASE64_MARK, properties) < 0 and
                          payload.find(b'{"body_encoding": "base64", ', properties) < 0):
        return None
    return base64.b64decode(payload[10:end])


def decode_events(payload: bytes, *,
                  accept: frozenset[str] = frozenset({"application/json"})
                  ) -> list[dict[str, Any]]:
    """The event dicts carried by one kombu pub/sub payload (Celery may send
    a list of events in one message)."""
    try:
        fast = _fast_body(payload) if isinstance(payload, bytes) else None
        if fast is not None and b'"__type__"' not in fast:
            return _finish(_json(fast))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass                # not what it looked like: the full path decides
    try:
        envelope = _json(payload)
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
            tagged = b'"__type__"' in raw if isinstance(raw, bytes) else '"__type__"' in raw
            event = kombu_json_loads(raw) if tagged else _json(raw)
        else:
            event = kombu_loads(raw, content_type, encoding, accept=accept)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise Undecodable(f"undecodable event body: {exc}") from exc
    except Exception as exc:
        raise Undecodable(f"undecodable event body: {exc!r}") from exc
    return _finish(event)


def _finish(event: Any) -> list[dict[str, Any]]:
    events = event if isinstance(event, list) else [event]
    now = time.time()
    for one in events:
        if not isinstance(one, dict) or "type" not in one:
            raise Undecodable("event body is not an event")
        # the sender's timestamp stays as it is: unlike EventReceiver, no
        # "localizing" shift (see flower_ops.core.times.sender_timestamp)
        one["local_received"] = now
    return events


class RespReader:
    """Pub/sub replies (RESP2 arrays of bulk strings and integers) parsed from
    raw socket bytes. redis-py's parser costs a Python call per element; this
    slices whole frames out of a buffer filled by large ``recv``s."""

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0          # parsed up to here; the rest waits for more bytes

    def feed(self, data: bytes) -> None:
        # one copy per recv: what is left of the old buffer plus the new bytes
        rest = self._buf[self._pos:] if self._pos < len(self._buf) else b""
        self._buf = rest + data if rest else data
        self._pos = 0

    def frames(self, limit: int) -> list[list[Any]]:
        """Complete frames buffered (at most ``limit``); partial ones wait."""
        buf = self._buf
        pos = self._pos
        end = len(buf)
        out: list[list[Any]] = []
        find = buf.find
        while len(out) < limit and pos < end:
            if buf[pos] != 42:              # b"*": anything else is a protocol error
                raise ConnectionError(f"unexpected Redis reply {buf[pos:pos + 40]!r}")
            eol = find(b"\r\n", pos)
            if eol < 0:
                break
            count = int(buf[pos + 1:eol])
            cur = eol + 2
            items: list[Any] = []
            complete = True
            for _ in range(count):
                eol = find(b"\r\n", cur)
                if eol < 0:
                    complete = False
                    break
                kind = buf[cur]
                if kind == 36:              # b"$": bulk string
                    size = int(buf[cur + 1:eol])
                    if size < 0:
                        items.append(None)
                        cur = eol + 2
                        continue
                    stop = eol + 2 + size
                    if stop + 2 > end:
                        complete = False
                        break
                    items.append(buf[eol + 2:stop])
                    cur = stop + 2
                elif kind == 58:            # b":": integer
                    items.append(int(buf[cur + 1:eol]))
                    cur = eol + 2
                elif kind == 43:            # b"+": simple string
                    items.append(buf[cur + 1:eol])
                    cur = eol + 2
                else:
                    raise ConnectionError(f"unexpected Redis reply {buf[cur:cur + 40]!r}")
            if not complete:
                break
            out.append(items)
            pos = cur
        self._pos = pos
        return out


class RedisEventStream:
    """One PSUBSCRIBE connection; ``run`` hands decoded events to ``handle_many``
    in chunks until ``should_stop`` or a connection error (which it raises).

    redis-py connects (auth, TLS, db) and sends the commands; replies are read
    straight from its socket by ``RespReader``, many per ``recv``."""

    def __init__(self, target: RedisEventsTarget, *,
                 handle_many: Callable[[list[dict[str, Any]]], None],
                 on_subscribed: Callable[[], None], should_stop: Callable[[], bool],
                 max_chunk: int = 1000, idle_ping_seconds: float = 15.0,
                 recv_bytes: int = 1 << 20,
                 on_received: Callable[[], None] | None = None) -> None:
        self._on_received = on_received
        self._target = target
        self._handle_many = handle_many
        self._on_subscribed = on_subscribed
        self._should_stop = should_stop
        self._max_chunk = max_chunk
        self._idle_ping = idle_ping_seconds
        self._recv_bytes = recv_bytes
        self._conn: Any = None
        self.undecodable = 0

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):   # closing a broken connection
                conn.disconnect()

    def _decode(self, frames: list[list[Any]], accept: frozenset[str]
                ) -> tuple[list[dict[str, Any]], bool]:
        events: list[dict[str, Any]] = []
        subscribed = False
        for frame in frames:
            kind = frame[0]
            if kind == b"pmessage":
                try:
                    events.extend(decode_events(frame[3], accept=accept))
                except Undecodable as exc:
                    self.undecodable += 1
                    if self.undecodable <= 10 or self.undecodable % 1000 == 0:
                        logger.warning("skipping an event on %r: %s (%d so far)",
                                       frame[2], exc, self.undecodable)
            elif kind == b"psubscribe":
                subscribed = True
        return events, subscribed

    def run(self) -> None:
        params = dict(self._target.connection_params)
        connection_class = params.pop("connection_class", redis.Connection)
        for name in ("health_check_interval", "retry_on_timeout"):
            params.pop(name, None)
        conn = connection_class(**params)
        self._conn = conn
        conn.connect()
        conn.send_command("PSUBSCRIBE", self._target.pattern)
        sock = conn._sock
        sock.settimeout(0.5)
        reader = RespReader()
        accept = self._target.accept
        subscribed = False
        last_read = time.monotonic()
        ping_sent_at: float | None = None
        while not self._should_stop():
            try:
                data = sock.recv(self._recv_bytes)
            except TimeoutError:
                now = time.monotonic()
                if ping_sent_at is not None and now - ping_sent_at > self._idle_ping:
                    raise ConnectionError("Redis did not answer a PING on the events "
                                          f"connection for {self._idle_ping:.0f}s") from None
                if ping_sent_at is None and now - last_read > self._idle_ping:
                    conn.send_command("PING")
                    ping_sent_at = now
                continue
            if not data:
                raise ConnectionError("Redis closed the events connection")
            last_read = time.monotonic()
            ping_sent_at = None
            if self._on_received is not None:
                self._on_received()     # before the events: a stall ends before they count
            reader.feed(data)
            while True:
                frames = reader.frames(self._max_chunk)
                if not frames:
                    break
                events, confirmed = self._decode(frames, accept)
                if events:
                    self._handle_many(events)
                if confirmed and not subscribed:
                    subscribed = True
                    self._on_subscribed()

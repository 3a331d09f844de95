"""Queue depths straight from the broker.

``queue_source_for`` picks the adapter for a broker URL: Redis here, RabbitMQ
in ``rabbitmq.py``. Every adapter answers ``fetch(names) -> BrokerSnapshot``
(``queue_depths.py``; blocking: the caller runs it on an executor thread) and
``close()``.

Redis (kombu's layout): a queue is a list; priority sub-queues are lists named
``queue + sep + str(step)`` for every step but the first; unacknowledged
messages live in one hash (``unacked``) whose values are JSON
``[message, exchange, routing_key]``. Everything honours kombu's ``sep``,
``priority_steps`` and ``global_keyprefix`` transport options. One refresh is
one pipelined round trip over a client built once.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from flower_ops.monitor.sources.queue_depths import BrokerSnapshot, QueueDepth, QueueSource
from flower_ops.monitor.sources.rabbitmq import RabbitQueueSource

DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
DEFAULT_SEP = "\x06\x16"
UNACKED_SPLIT_LIMIT = 10000

# Per-routing-key counts of kombu's unacked hash, computed inside Redis so the
# messages never cross the network. Skipped (total only) past a size limit so
# a huge hash cannot stall the server.
_UNACKED_BY_QUEUE = """
local n = redis.call('HLEN', KEYS[1])
if n > tonumber(ARGV[1]) then return {n} end
local counts = {}
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  local ok, decoded = pcall(cjson.decode, v)
  local rk = '?'
  if ok and type(decoded) == 'table' and type(decoded[3]) == 'string' then rk = decoded[3] end
  counts[rk] = (counts[rk] or 0) + 1
end
local out = {n}
for k, c in pairs(counts) do table.insert(out, k); table.insert(out, c) end
return out
"""


# Take the messages of some task ids out of a queue's lists (priority
# sub-queues included), scanning at most ARGV[1] messages per list from the
# tail (the oldest, next to be consumed); returns the ids removed. One script:
# a worker's BRPOP cannot take a message between our look and our LREM.
_REMOVE_MESSAGES = """
local limit = tonumber(ARGV[1])
local wanted, removed, out = {}, {}, {}
for i = 2, #ARGV do wanted[ARGV[i]] = true end
for _, key in ipairs(KEYS) do
  for _, item in ipairs(redis.call('LRANGE', key, -limit, -1)) do
    local ok, message = pcall(cjson.decode, item)
    if ok and type(message) == 'table' and type(message.headers) == 'table' then
      local id = message.headers.id
      if type(id) == 'string' and wanted[id] and not removed[id] then
        if redis.call('LREM', key, 1, item) > 0 then
          removed[id] = true
          table.insert(out, id)
        end
      end
    end
  end
end
return out
"""
REMOVE_SCAN_LIMIT = 100_000


class RedisQueueSource:
    """Reads kombu's Redis queue layout."""

    transport = "redis"

    def __init__(self, *, broker_url: str, transport_options: Mapping[str, Any] | None = None,
                 socket_timeout_seconds: float = 5.0) -> None:
        options = dict(transport_options or {})
        self.sep: str = options.get("sep", DEFAULT_SEP)
        self.priority_steps: tuple[int, ...] = tuple(
            options.get("priority_steps", DEFAULT_PRIORITY_STEPS))
        self.prefix: str = options.get("global_keyprefix", "") or ""
        self.unacked_key: str = self.prefix + options.get("unacked_key", "unacked")
        self.client = redis.Redis.from_url(
            broker_url, socket_timeout=socket_timeout_seconds,
            socket_connect_timeout=socket_timeout_seconds, health_check_interval=30)
        self._script = self.client.register_script(_UNACKED_BY_QUEUE)
        self._remove = self.client.register_script(_REMOVE_MESSAGES)

    def keys_for(self, queue: str) -> list[tuple[str, str]]:
        """(priority label, redis key) for a queue and its priority sub-queues."""
        keys = []
        for index, step in enumerate(self.priority_steps):
            suffix = "" if index == 0 else f"{self.sep}{step}"
            keys.append((str(step), f"{self.prefix}{queue}{suffix}"))
        return keys

    def remove_messages(self, queue: str, task_ids: Iterable[str]) -> set[str]:
        """Take the waiting messages of ``task_ids`` out of ``queue`` (as
        Sidekiq's delete does): those tasks can no longer run. Blocking.
        Returns the ids whose message was removed; the others were not
        waiting there (a worker has them, or they were never in this queue)."""
        ids = sorted(set(task_ids))
        if not ids:
            return set()
        keys = [key for _label, key in self.keys_for(queue)]
        removed = self._remove(keys=keys, args=[REMOVE_SCAN_LIMIT, *ids])
        return {r.decode() if isinstance(r, bytes) else str(r) for r in removed or ()}

    def fetch(self, queues: Iterable[str]) -> BrokerSnapshot:
        names = sorted(set(queues))
        pipe = self.client.pipeline(transaction=False)
        plan: list[tuple[str, str]] = []
        for name in names:
            for label, key in self.keys_for(name):
                pipe.llen(key)
                plan.append((name, label))
            # The oldest message sits at the tail (kombu LPUSHes, BRPOPs)
            pipe.lindex(self.keys_for(name)[0][1], -1)
        self._script(keys=[self.unacked_key], args=[UNACKED_SPLIT_LIMIT], client=pipe)
        replies = pipe.execute()
        now = time.time()

        by_queue: dict[str, dict[str, int]] = {name: {} for name in names}
        oldest: dict[str, float | None] = {}
        position = 0
        for name in names:
            for label, _key in self.keys_for(name):
                by_queue[name][label] = int(replies[position])
                position += 1
            oldest[name] = _message_age(replies[position], now)
            position += 1
        unacked_reply = replies[position]
        unacked_total = int(unacked_reply[0])
        split: dict[str, int] | None = None
        if len(unacked_reply) > 1 or unacked_total == 0:
            split = {}
            pairs = unacked_reply[1:]
            for i in range(0, len(pairs), 2):
                key = pairs[i].decode() if isinstance(pairs[i], bytes) else str(pairs[i])
                split[key] = int(pairs[i + 1])
        depths = {
            name: QueueDepth(
                name=name,
                messages=sum(by_queue[name].values()),
                unacked=(split.get(name, 0) if split is not None else None),
                oldest_message_age_seconds=oldest[name],
                by_priority={k: v for k, v in by_queue[name].items() if v},
            )
            for name in names
        }
        return BrokerSnapshot(transport="redis", queues=depths, unacked_total=unacked_total,
                              taken_at=now, source="redis")

    def close(self) -> None:
        self.client.close()


def _message_age(raw: bytes | None, now: float) -> float | None:
    """Age of a queued message from the publish time ``instrument()`` stamps."""
    if not raw:
        return None
    marker = b'"flower_ops_published_at": '
    at = raw.find(marker)
    if at < 0:
        return None
    start = at + len(marker)
    end = start
    while end < len(raw) and raw[end:end + 1] in b"0123456789.eE+-":
        end += 1
    try:
        return max(0.0, now - float(raw[start:end]))
    except ValueError:
        return None


AMQP_SCHEMES = ("amqp", "amqps", "pyamqp", "librabbitmq")


def queue_source_for(broker_url: str, transport_options: Mapping[str, Any], *,
                     broker_api: str | None = None,
                     use_ssl: Any = None) -> QueueSource | None:
    """The queue adapter for ``broker_url``, or None where depths cannot be read.

    ``broker_api`` is Flower's ``--broker_api`` (RabbitMQ management API URL).
    """
    scheme = broker_url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss"):
        return RedisQueueSource(broker_url=broker_url, transport_options=transport_options)
    if scheme in AMQP_SCHEMES:
        return RabbitQueueSource(broker_url=broker_url, broker_api=broker_api,
                                 use_ssl=use_ssl)
    return None

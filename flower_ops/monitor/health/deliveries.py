"""One delivery of each alert change behind several monitors.

Every monitor of a group (``FLOWER_OPS_MONITOR_GROUP``) sees the same
workers and queues, so each raises and resolves the same alerts, a few
seconds apart. Before the webhook posts a change it claims it in a ledger
shared by the group: PostgreSQL (``automation.alert_deliveries``) when
``DATABASE_URL`` is set, else a key per alert on a Redis broker. The claim
succeeds for the monitor that moves the alert's shared state (to raised, or
to resolved); the others find it moved and skip their copy. With neither,
each monitor delivers what it sees (one monitor needs no ledger).

A ledger that cannot be reached never costs a delivery: the change is
posted, at worst twice.
"""
from __future__ import annotations

from typing import Any, Protocol

import redis

from flower_ops.db.alert_deliveries import PgDeliveryLedger


class DeliveryLedger(Protocol):
    def claim(self, event: str, kind: str, subject: str) -> bool: ...


# compare-and-set: the change is ours when the key did not hold it already
_CLAIM_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
KEEP_SECONDS = 7 * 24 * 3600


class RedisDeliveryLedger:
    PREFIX = "flower-ops:alert-deliveries"

    def __init__(self, url: str, group: str) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3)
        self._group = group
        self._script: Any = self._client.register_script(_CLAIM_LUA)

    def claim(self, event: str, kind: str, subject: str) -> bool:
        key = f"{self.PREFIX}:{self._group}:{kind}:{subject}"
        return bool(self._script(keys=[key], args=[event, KEEP_SECONDS]))


def ledger_for(*, database: Any, broker_url: str, group: str, instance_id: str
               ) -> DeliveryLedger | None:
    """PostgreSQL when there is one, else the broker when it is Redis, else none."""
    if database is not None:
        return PgDeliveryLedger(database, group=group, instance_id=instance_id)
    if broker_url.split("://", 1)[0] in ("redis", "rediss", "unix"):
        return RedisDeliveryLedger(broker_url, group)
    return None

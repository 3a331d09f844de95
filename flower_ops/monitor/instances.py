"""Several monitors as one: who else runs, and whether they share the token key.

Each monitor started by ``celery flower-ops`` has an instance id (also the
live feed's, so a client resuming on another monitor gets a snapshot) and,
while it runs, a registration: in PostgreSQL (``automation.monitors``) when
``DATABASE_URL`` is set, else under a Redis key with a TTL on a Redis broker.
It beats every ``HEARTBEAT_SECONDS``; a registration not renewed for
``GONE_AFTER_SECONDS`` (three beats) is gone; a clean exit deregisters.

At start-up (``join``) a monitor says so when another live monitor of its
group (``FLOWER_OPS_MONITOR_GROUP``) does not sign its tokens with the same
shared key: a token one issues would fail on the other behind a balancer.
The key is compared by fingerprint, never shown. While such a peer runs, the
monitor logs an error every ``WARN_EVERY_SECONDS`` and holds a
``monitor_key_mismatch`` alert (``/alerts``, ``/stats``, the feed, the page,
the webhook, Prometheus) until the peer is gone or agrees. It warns rather
than refuses to start: a killed monitor's registration outlives it by up to
``GONE_AFTER_SECONDS``, so a refusal would make a restart on another port or
host a crash loop.
A registration from the same host and port, or from this host with a process
that no longer runs, is a predecessor killed before it could deregister: it
is removed, not counted.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import redis
from tornado.ioloop import IOLoop, PeriodicCallback

from flower_ops.db.monitors import MonitorEntry
from flower_ops.monitor.auth import RANDOM_KEY
from flower_ops.monitor.health.alerts import CRITICAL, MONITOR_KEY_MISMATCH, AlertBook, Finding

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
GONE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
WARN_EVERY_SECONDS = 60.0
KEY_VARIABLE = "FLOWER_OPS_TOKEN_SECRET"


def new_instance_id() -> str:
    return secrets.token_hex(8)


class Registry(Protocol):
    def beat(self, entry: MonitorEntry) -> None: ...

    def peers(self, entry: MonitorEntry, stale_seconds: float) -> list[MonitorEntry]: ...

    def remove(self, instance_ids: list[str], *, older_than_seconds: float | None = None
               ) -> None: ...


class RedisMonitorRegistry:
    """Registrations as Redis keys that expire unless renewed (no database)."""

    PREFIX = "flower-ops:monitors"

    def __init__(self, url: str, group: str) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3)
        self._group = group

    def _key(self, instance_id: str) -> str:
        return f"{self.PREFIX}:{self._group}:{instance_id}"

    def beat(self, entry: MonitorEntry) -> None:
        value = {**entry.as_json(), "heartbeat_at": time.time()}
        self._client.set(self._key(entry.instance_id), json.dumps(value),
                         px=int(GONE_AFTER_SECONDS * 1000))

    def peers(self, entry: MonitorEntry, stale_seconds: float) -> list[MonitorEntry]:
        keys = [k for k in self._client.scan_iter(match=f"{self.PREFIX}:{self._group}:*",
                                                   count=100)
                if k.decode().rsplit(":", 1)[-1] != entry.instance_id]
        found = []
        for raw in self._client.mget(keys) if keys else []:
            if raw is None:
                continue
            try:
                found.append(MonitorEntry.from_json(json.loads(raw)))
            except (ValueError, KeyError, TypeError):
                continue
        return found

    def remove(self, instance_ids: list[str], *, older_than_seconds: float | None = None
               ) -> None:
        if instance_ids:
            self._client.delete(*(self._key(i) for i in instance_ids))


def registry_for(*, database: Any, broker_url: str, group: str) -> Registry | None:
    """PostgreSQL when there is one, else the broker when it is Redis, else none."""
    if database is not None:
        from flower_ops.db.monitors import PgMonitorRegistry

        return PgMonitorRegistry(database)
    if broker_url.split("://", 1)[0] in ("redis", "rediss", "unix"):
        return RedisMonitorRegistry(broker_url, group)
    return None


def mismatch_message(entry: MonitorEntry, peers: list[MonitorEntry]) -> str:
    peer = peers[0]
    where = f"{peer.host}:{peer.port} (pid {peer.pid}, instance {peer.instance_id})"
    if entry.key_fingerprint == RANDOM_KEY:
        why = ("this monitor signs its tokens with a random per-process secret, so a token "
               "from one monitor would be refused by the other")
    elif peer.key_fingerprint == RANDOM_KEY:
        why = "that monitor signs its tokens with a random per-process secret"
    else:
        why = "it signs its tokens with another key"
    return (f"another monitor of group {entry.group!r} is running at {where} and {why}; set "
            f"the same {KEY_VARIABLE} (at least 32 characters; or the same JWT_SECRET) on "
            "every monitor behind one balancer, or give independent monitors different "
            "FLOWER_OPS_MONITOR_GROUP values (a monitor that is gone stops counting "
            f"{GONE_AFTER_SECONDS:g} s after its last heartbeat)")


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (a peer of this host whose
    process is gone was killed before it could deregister)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


class MonitorInstances:
    """This monitor's registration, heartbeat and view of its peers."""

    def __init__(self, *, instance_id: str, group: str, key_fingerprint: str,
                 registry: Registry | None, run_blocking: Callable[..., Awaitable[Any]],
                 io_loop: IOLoop, version: str, alerts: AlertBook | None = None) -> None:
        self.entry = MonitorEntry(instance_id=instance_id, group=group,
                                  host=socket.gethostname(), pid=os.getpid(), port=None,
                                  version=version, key_fingerprint=key_fingerprint)
        self.registry = registry
        self._run_blocking = run_blocking
        self._io_loop = io_loop
        self._timer: PeriodicCallback | None = None
        self._joined = False
        self._warned_at = 0.0
        self.mismatched: list[MonitorEntry] = []
        self._alerts = alerts
        self._alerted: set[str] = set()

    @property
    def instance_id(self) -> str:
        return self.entry.instance_id

    def join(self, port: int | None) -> None:
        """Blocking, at start-up, once the port is bound: register, say at once
        (an error logged, naming the variable, and the alert) when a live peer
        of the group does not share the token key, and beat from now on.

        It warns rather than refuses: a registration outlives a killed
        monitor by up to ``GONE_AFTER_SECONDS``, so a refusal would turn a
        restart on another port or host into a crash loop."""
        if self.registry is None:
            return
        self.entry = MonitorEntry(**{**self.entry.__dict__, "port": port})
        try:
            peers = self._live_peers()
            self.registry.beat(self.entry)
        except Exception as exc:  # noqa: BLE001 - the heartbeat tries again
            logger.warning("could not register this monitor (%s); other monitors cannot be "
                           "checked for a shared token key until it can", exc)
            peers = []
        self.mismatched = self._mismatched(peers)
        if self.mismatched:
            self._warned_at = time.monotonic()
            logger.error("flower-ops: %s: %s", KEY_VARIABLE,
                         mismatch_message(self.entry, self.mismatched))
            self._alert(self.mismatched)
        elif peers:
            logger.info("monitor %s joins %d other monitor(s) of group %r with the same token "
                        "key", self.instance_id, len(peers), self.entry.group)
        self._joined = True
        self._io_loop.add_callback(self._start_timer)

    def _start_timer(self) -> None:
        if self._joined and self._timer is None:
            self._timer = PeriodicCallback(self.tick, HEARTBEAT_SECONDS * 1000, jitter=0.1)
            self._timer.start()

    def _live_peers(self) -> list[MonitorEntry]:
        assert self.registry is not None
        peers = self.registry.peers(self.entry, GONE_AFTER_SECONDS)
        before = [p for p in peers if p.host == self.entry.host and (
            (p.port == self.entry.port and self.entry.port is not None) or not _alive(p.pid))]
        if before:
            self.registry.remove([p.instance_id for p in before])
        return [p for p in peers if p not in before]

    def _mismatched(self, peers: list[MonitorEntry]) -> list[MonitorEntry]:
        mine = self.entry.key_fingerprint
        return [p for p in peers if mine == RANDOM_KEY or p.key_fingerprint != mine]

    def _beat(self) -> list[MonitorEntry]:
        assert self.registry is not None
        self.registry.beat(self.entry)
        peers = self._mismatched(self._live_peers())
        # registrations long gone (killed, never deregistered) are cleaned up
        self.registry.remove([], older_than_seconds=3600.0)
        return peers

    async def tick(self) -> None:
        if self.registry is None:
            return
        try:
            self.mismatched = await self._run_blocking(self._beat)
        except Exception as exc:  # noqa: BLE001 - an outage: the next beat tries again
            logger.warning("monitor heartbeat failed: %s", exc)
            return
        now = time.monotonic()
        if self.mismatched and now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            logger.error("%s: tokens from one monitor fail on the other", mismatch_message(
                self.entry, self.mismatched))
        self._alert(self.mismatched)

    def _alert(self, peers: list[MonitorEntry]) -> None:
        """One alert per mismatched peer, resolved when it is gone or agrees."""
        if self._alerts is None:
            return
        at = time.time()
        for peer in peers:
            self._alerts.raise_alert(Finding(
                kind=MONITOR_KEY_MISMATCH, subject=peer.instance_id, severity=CRITICAL,
                since=at, message=mismatch_message(self.entry, [peer]),
                details={"instance": peer.instance_id, "host": peer.host, "port": peer.port,
                         "pid": peer.pid, "setting": KEY_VARIABLE}), at)
        current = {peer.instance_id for peer in peers}
        for gone in self._alerted - current:
            self._alerts.resolve((MONITOR_KEY_MISMATCH, gone), at)
        self._alerted = current

    def _leave_now(self) -> None:
        try:
            if self.registry is not None:
                self.registry.remove([self.instance_id])
        except Exception:
            logger.debug("could not deregister the monitor", exc_info=True)

    def leave(self) -> None:
        """Blocking, on a clean exit: stop beating and deregister."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._joined:
            self._joined = False
            self._leave_now()

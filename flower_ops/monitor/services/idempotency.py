"""``Idempotency-Key`` on actions: done once, answered the same every time.

The first request with a key (per token subject) claims it, does the work
and stores its status and body. The same key again — on this monitor or,
with ``DATABASE_URL``, on any monitor sharing the database — is answered with
that stored answer (``Idempotent-Replayed: true``) and does nothing, audits
nothing. The same key with another request (method, path or body) is a 422.
A duplicate that arrives while the first still runs waits for its answer up
to ``wait_seconds``, then gets a 409 (``idempotency_in_progress``).

Answers that did nothing (a 400 for a malformed request, a 413, a 5xx) are
not kept: the key may be sent again. Without a database the answers are
kept in this process's memory only (bounded), so a retransmission that a
balancer sends to another monitor is not recognised.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from flower_ops.core.errors import Conflict, FlowerOpsError
from flower_ops.db.idempotency import KEEP_SECONDS, PgIdempotencyStore, StoredAnswer

POLL_SECONDS = 0.1
# a claim whose request never finished (its monitor died) may be taken over
LEASE_SECONDS = 300.0
MEMORY_KEYS = 10000
PRUNE_EVERY = 500   # claims between two deletions of answers past 24 h (PostgreSQL)


class IdempotencyMismatch(FlowerOpsError):
    """The key was used for another request."""

    status = 422


@dataclass(frozen=True)
class Claim:
    subject: str
    key: str
    owner: str


@dataclass(frozen=True)
class Replay:
    status: int
    body: str


class Store(Protocol):
    def claim(self, subject: str, key: str, fingerprint: str, owner: str,
              lease_seconds: float) -> StoredAnswer | None: ...

    def complete(self, subject: str, key: str, owner: str, status: int, body: str) -> None: ...

    def release(self, subject: str, key: str, owner: str) -> None: ...


class MemoryIdempotencyStore:
    """The same, in this process only (no database)."""

    def __init__(self, max_keys: int = MEMORY_KEYS) -> None:
        self.max_keys = max_keys
        # (subject, key) -> (created, owner, answer)
        self._keys: OrderedDict[tuple[str, str], tuple[float, str, StoredAnswer]] = \
            OrderedDict()

    def claim(self, subject: str, key: str, fingerprint: str, owner: str,
              lease_seconds: float) -> StoredAnswer | None:
        now = time.monotonic()
        held = self._keys.get((subject, key))
        if held is not None:
            created, _, answer = held
            expired = now - created > KEEP_SECONDS or (
                answer.status is None and now - created > lease_seconds)
            if not expired:
                return answer
        self._keys[(subject, key)] = (now, owner, StoredAnswer(fingerprint, None, None))
        self._keys.move_to_end((subject, key))
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        return None

    def complete(self, subject: str, key: str, owner: str, status: int, body: str) -> None:
        held = self._keys.get((subject, key))
        if held is not None and held[1] == owner:
            self._keys[(subject, key)] = (held[0], owner,
                                          StoredAnswer(held[2].fingerprint, status, body))

    def release(self, subject: str, key: str, owner: str) -> None:
        held = self._keys.get((subject, key))
        if held is not None and held[1] == owner and held[2].status is None:
            del self._keys[(subject, key)]


class IdempotencyService:
    """Claims keys, replays answers; runs on the IOLoop (the database store
    through ``run_blocking``)."""

    def __init__(self, *, store: Store, shared: bool, instance_id: str,
                 run_blocking: Callable[..., Awaitable[Any]], wait_seconds: float) -> None:
        self.store = store
        self.shared = shared        # across monitors (PostgreSQL), or this process only
        self.instance_id = instance_id
        self.wait_seconds = wait_seconds
        self._run_blocking = run_blocking
        self._claims = 0

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.shared:
            return await self._run_blocking(fn, *args)
        return fn(*args)

    async def begin(self, subject: str, key: str, fingerprint: str) -> Claim | Replay:
        """The key claimed for this request, or the answer it already has."""
        owner = f"{self.instance_id}:{secrets.token_hex(6)}"
        self._claims += 1
        prune = getattr(self.store, "prune", None)
        if prune is not None and self._claims % PRUNE_EVERY == 1:
            await self._call(prune)
        deadline = time.monotonic() + self.wait_seconds
        while True:
            held: StoredAnswer | None = await self._call(
                self.store.claim, subject, key, fingerprint, owner, LEASE_SECONDS)
            if held is None:
                return Claim(subject, key, owner)
            if held.fingerprint != fingerprint:
                raise IdempotencyMismatch(
                    "this Idempotency-Key was used for another request (method, path or "
                    "body); use a new key for a new request",
                    {"reason": "idempotency_key_reused", "idempotency_key": key[:255]})
            if held.status is not None and held.body is not None:
                return Replay(held.status, held.body)
            if time.monotonic() >= deadline:
                raise Conflict("a request with this Idempotency-Key is still in progress; "
                               "send it again later to get its answer",
                               {"reason": "idempotency_in_progress",
                                "idempotency_key": key[:255]})
            await asyncio.sleep(POLL_SECONDS)

    async def complete(self, claim: Claim, status: int, body: str) -> None:
        await self._call(self.store.complete, claim.subject, claim.key, claim.owner, status,
                         body)

    async def release(self, claim: Claim) -> None:
        await self._call(self.store.release, claim.subject, claim.key, claim.owner)


def idempotency_service(database: Any, instance_id: str,
                        run_blocking: Callable[..., Awaitable[Any]],
                        config: Any) -> IdempotencyService:
    """Keys in PostgreSQL (shared by the monitors) when there is one, else in memory.
    A duplicate waits for the first request about as long as a cancel may take."""
    shared = database is not None
    store: Store = PgIdempotencyStore(database) if shared else MemoryIdempotencyStore()
    return IdempotencyService(store=store, shared=shared, instance_id=instance_id,
                              run_blocking=run_blocking,
                              wait_seconds=5.0 + 2 * float(config.cancel_confirm_seconds))

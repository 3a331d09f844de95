"""The answers of actions sent with an ``Idempotency-Key`` header
(``automation.idempotency_keys``, migrations/0006), shared by every monitor on
the database: the first request with a key claims it and stores its answer;
the same key again, on any monitor, is answered from here.

A claim is a row without a status; it belongs to the request that made it
(``owner``: the monitor's instance id and a random part). Rows live
``KEEP_SECONDS`` (24 h); a claim whose request never finished (its monitor
was killed) can be taken over after ``lease_seconds``. Blocking: call through
the monitor's executor.
"""
from __future__ import annotations

from dataclasses import dataclass

from flower_ops.db.jsonsafe import clean_text
from flower_ops.db.pool import Database
from flower_ops.db.schema import IDEMPOTENCY

KEEP_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class StoredAnswer:
    """What a key holds: the request's fingerprint and, once done, the answer."""

    fingerprint: str
    status: int | None
    body: str | None


_CLAIM_SQL = f"""
INSERT INTO {IDEMPOTENCY} AS k (subject, idempotency_key, fingerprint, instance_id)
VALUES (%(subject)s, %(key)s, %(fingerprint)s, %(owner)s)
ON CONFLICT (subject, idempotency_key) DO UPDATE SET
    fingerprint = EXCLUDED.fingerprint, instance_id = EXCLUDED.instance_id, status = NULL,
    body = NULL, created_at = now(), completed_at = NULL
WHERE k.created_at < now() - make_interval(secs => %(keep)s)
   OR (k.status IS NULL AND k.created_at < now() - make_interval(secs => %(lease)s))
RETURNING true
"""


class PgIdempotencyStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    def claim(self, subject: str, key: str, fingerprint: str, owner: str,
              lease_seconds: float) -> StoredAnswer | None:
        """None: the key is now ``owner``'s; else what the key already holds."""
        # a token's subject may hold a NUL, which text columns cannot
        subject = str(clean_text(subject))
        with self._db.connection() as conn:
            claimed = conn.execute(_CLAIM_SQL, {
                "subject": subject, "key": key, "fingerprint": fingerprint, "owner": owner,
                "keep": KEEP_SECONDS, "lease": float(lease_seconds)}).fetchone()
            if claimed:
                return None
            row = conn.execute(
                f"SELECT fingerprint, status, body FROM {IDEMPOTENCY} "
                "WHERE subject = %s AND idempotency_key = %s", (subject, key)).fetchone()
        if row is None:     # deleted in between (released): try again
            return self.claim(subject, key, fingerprint, owner, lease_seconds)
        return StoredAnswer(fingerprint=row[0], status=row[1], body=row[2])

    def complete(self, subject: str, key: str, owner: str, status: int, body: str) -> None:
        subject, body = str(clean_text(subject)), str(clean_text(body))
        with self._db.connection() as conn:
            conn.execute(f"UPDATE {IDEMPOTENCY} SET status = %s, body = %s, "
                         "completed_at = now() WHERE subject = %s AND idempotency_key = %s "
                         "AND instance_id = %s", (status, body, subject, key, owner))

    def release(self, subject: str, key: str, owner: str) -> None:
        """Give a claim up (nothing was done): the key may be used again."""
        subject = str(clean_text(subject))
        with self._db.connection() as conn:
            conn.execute(f"DELETE FROM {IDEMPOTENCY} WHERE subject = %s AND "
                         "idempotency_key = %s AND instance_id = %s AND status IS NULL",
                         (subject, key, owner))

    def prune(self) -> None:
        """Forget answers older than ``KEEP_SECONDS``."""
        with self._db.connection() as conn:
            conn.execute(f"DELETE FROM {IDEMPOTENCY} WHERE created_at < now() - "
                         "make_interval(secs => %s)", (KEEP_SECONDS,))

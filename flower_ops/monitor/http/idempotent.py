"""The ``Idempotency-Key`` request header on every POST action (see
``services/idempotency.py``): a handler implements ``act()`` (its status and
answer) and this class's ``post()`` does the rest."""
from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

from flower_ops.core.errors import FlowerOpsError, InvalidQuery
from flower_ops.core.jsontext import JsonText, encode_answer
from flower_ops.monitor.http.base import ApiHandler, dumps
from flower_ops.monitor.services.idempotency import IdempotencyService, Replay

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
# answers that did nothing: not kept, the key may be sent again
_NOT_KEPT = frozenset({400, 401, 403, 413})

OPENAPI_PARAMETER = {
    "name": HEADER, "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255,
               "pattern": "^[\\x21-\\x7e]+$"},
    "description": "Makes the action safe to send again (a timeout, a retransmission "
                   "through a load balancer): the first request with a key does the work and "
                   "its answer is kept 24 h; the same key with the same request, on any "
                   "monitor sharing DATABASE_URL (without one: this monitor only), gets that "
                   "answer again, with the header Idempotent-Replayed: true, and does nothing "
                   "more (no second audit record). The same key with another request: 422. "
                   "While the first is still running, a duplicate waits for its answer, then "
                   "gets 409 (detail.reason idempotency_in_progress). Keys are per token "
                   "subject; 1-255 visible ASCII characters (a UUID is a good key). 400, "
                   "413 and 5xx answers are not kept.",
}


def fingerprint(method: str, path: str, body: bytes) -> str:
    """The request a key was first used for: method, path and body (JSON
    compared by value, not by spelling)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
        text = canonical.encode()
    except (ValueError, RecursionError):
        text = body
    digest = hashlib.sha256()
    for part in (method.encode(), path.rstrip("/").encode(), text):
        digest.update(part + b"\0")
    return digest.hexdigest()


class IdempotentPost(ApiHandler):
    """A POST action that honours ``Idempotency-Key``."""

    idempotency: IdempotencyService

    async def act(self, *args: str) -> tuple[int, Any]:
        raise NotImplementedError

    async def post(self, *args: str) -> None:
        key = self.request.headers.get(HEADER)
        if key is None:
            status, value = await self.act(*args)
            self.write_json(value, status)
            return
        if not _KEY.fullmatch(key):
            raise InvalidQuery(f"{HEADER} must be 1-255 visible ASCII characters",
                               {"header": HEADER})
        outcome = await self.idempotency.begin(
            self.principal.subject, key,
            fingerprint(self.request.method or "POST", self.request.path, bytes(self._body)))
        if isinstance(outcome, Replay):
            self.set_header(REPLAYED_HEADER, "true")
            self.set_status(outcome.status)
            self.finish(outcome.body)
            return
        try:
            status, value = await self.act(*args)
        except FlowerOpsError as exc:
            if exc.status >= 500 or exc.status in _NOT_KEPT:
                await self._settle(self.idempotency.release(outcome))
            else:
                await self._settle(self.idempotency.complete(
                    outcome, exc.status, dumps({"error": exc.message, "detail": exc.detail})))
            raise
        except BaseException:
            await self._settle(self.idempotency.release(outcome))
            raise
        body = str(value) if isinstance(value, JsonText) else encode_answer(value)
        await self._settle(self.idempotency.complete(outcome, status, body))
        self.set_status(status)
        self.finish(body)

    @staticmethod
    async def _settle(step: Any) -> None:
        # The action is done (or refused) whatever happens here: its answer
        # goes out; only a later replay of it is lost.
        try:
            await step
        except Exception:
            logger.warning("could not keep the answer of an idempotent request",
                           exc_info=True)

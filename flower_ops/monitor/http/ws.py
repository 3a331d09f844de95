"""``/api/automation/monitoring/ws``: the live feed over a WebSocket.

Authentication: an ``Authorization: Bearer`` header on the upgrade request
(checked before upgrading: 401/403 as JSON), or a first message
``{"type": "auth", "token": ...}`` within ``AUTH_TIMEOUT_SECONDS``. Another
scheme on the upgrade (the Basic credentials a browser resends for Flower's
login) is no token and is ignored: such a socket authenticates by its first
message. A token in the URL is never read. The socket closes (4001) when the
token expires unless the client sends a fresh ``auth`` message first. The
protocol is described in ``docs/live-feed.md``.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import tornado.websocket
from tornado.ioloop import IOLoop

from flower_ops.core.errors import FlowerOpsError, Forbidden, InvalidQuery
from flower_ops.core.times import iso_utc, now_iso
from flower_ops.monitor.auth import Principal, RequestAuth, bearer_token
from flower_ops.monitor.config import READ_SCOPE
from flower_ops.monitor.http import openapi
from flower_ops.monitor.http.base import API_BASE, HttpPart
from flower_ops.monitor.http.ws_frame import SharedFrames
from flower_ops.monitor.live.feed import LiveFeed
from flower_ops.monitor.live.filters import parse_filters, parse_limit
from flower_ops.monitor.live.protocol import CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED
from flower_ops.monitor.live.subscriber import Subscriber
from flower_ops.monitor.live.views import ViewKey, parse_mode, parse_window

logger = logging.getLogger(__name__)

PATH = f"{API_BASE}/ws"
# A seq no replay buffer holds: a resume from another monitor (its seqs are
# that process's) is answered with a snapshot marked resync
ELSEWHERE = -1
AUTH_TIMEOUT_SECONDS = 5.0
MAX_CLIENT_MESSAGE_BYTES = 64 * 1024


def _decode(message: str | bytes) -> tuple[dict[str, Any] | None, str]:
    """A client message as an object with a string ``type``, or why it is not one."""
    try:
        body = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the stack
        return None, "message is not valid JSON"
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        return None, "message must be an object with a type"
    return body, ""


def _subscription(body: dict[str, Any]) -> tuple[Any, int, ViewKey | None]:
    """Filters, limit and window (None: every change) of a subscribe or auth message."""
    filters = parse_filters(body.get("filters"))
    if parse_mode(body.get("mode")) == "window":
        window = parse_window(body, filters)
        return filters, window.limit, window
    if body.get("ids") is not None:
        raise InvalidQuery("ids are for window mode (\"mode\": \"window\")")
    return filters, parse_limit(body.get("limit")), None


def _resume_position(seq: Any, instance: Any, here: str) -> int | None:
    """Where to resume: ``seq``, or ``ELSEWHERE`` when it was another monitor's
    (behind a load balancer, a reconnect may land on any of them)."""
    if instance is not None and not isinstance(instance, str):
        raise InvalidQuery("instance must be a string (the snapshot's instance)")
    if seq is None:
        return None
    if instance is not None and instance != here:
        return ELSEWHERE
    return int(seq)


def _is_bearer(authorization: str | None) -> bool:
    """True when ``authorization`` names the Bearer scheme (valid or not)."""
    if not authorization:
        return False
    return authorization.strip().partition(" ")[0].lower() == "bearer"


class LiveFeedHandler(tornado.websocket.WebSocketHandler):
    def initialize(self, *, auth: RequestAuth, feed: LiveFeed, frames: SharedFrames,
                   allowed_origins: tuple[str, ...]) -> None:
        self.auth = auth
        self.feed = feed
        self.frames = frames
        self.allowed_origins = allowed_origins
        self.io_loop = IOLoop.current()
        self.principal: Principal | None = None
        self.subscriber: Subscriber | None = None
        self._auth_timeout: object | None = None
        self._expiry: object | None = None
        self._authenticating = False

    # -- the upgrade -----------------------------------------------------------------

    async def get(self, *args: Any, **kwargs: Any) -> None:
        header = self.request.headers.get("Authorization")
        upgrade = self.request.headers.get("Upgrade", "").lower() == "websocket"
        origin = self.request.headers.get("Origin")
        if upgrade and origin is not None and not self.check_origin(origin):
            # Refused before the token is looked at, as JSON like every other
            # refusal (Tornado's own check answers in plain text)
            self._refuse(Forbidden("cross-origin WebSocket refused; allow the origin with "
                                   "FLOWER_OPS_WS_ALLOWED_ORIGINS", {"origin": origin[:200]}))
            return
        # Only an upgrade may defer its token to the first message; a plain
        # GET is an API request like the others (401/403 first, then 400).
        # Browsers resend the cached credentials of Flower's login (Basic) on
        # the upgrade: not a token, so such an upgrade authenticates by its
        # first message like one without the header.
        if upgrade and not _is_bearer(header):
            header = None
        if header is not None or not upgrade:
            try:
                self.principal = await self._verify(bearer_token(header))
            except FlowerOpsError as exc:
                self._refuse(exc)
                return
        if not upgrade:
            self._refuse(InvalidQuery("this is a WebSocket endpoint: send an upgrade request "
                                      "(Upgrade: websocket)"))
            return
        await super().get(*args, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Errors before the upgrade (e.g. 405 for another method) are JSON too
        if status_code == 405:
            self.set_header("Allow", "GET")
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"error": message, "detail": None}))

    def _refuse(self, exc: FlowerOpsError) -> None:
        self.set_status(exc.status)
        if exc.status == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="flower-ops"')
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"error": exc.message, "detail": exc.detail}))

    def check_origin(self, origin: str) -> bool:
        allowed = self.allowed_origins
        if "*" in allowed:
            return True
        if origin.rstrip("/").lower() in {o.rstrip("/").lower() for o in allowed}:
            return True
        return urlsplit(origin).netloc.lower() == self.request.host.lower()

    @property
    def max_message_size(self) -> int:
        return MAX_CLIENT_MESSAGE_BYTES

    def check_xsrf_cookie(self) -> None:
        # No cookie authenticates this socket; check_origin guards browsers.
        return None

    # -- the connection ----------------------------------------------------------

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.set_nodelay(True)
        self.subscriber = self.feed.subscriber(write=self._write_frame, close=self.close)
        if self.principal is not None:
            self._start(self.principal, resume_seq=self._query_resume())
            return
        self._auth_timeout = self.io_loop.call_later(
            AUTH_TIMEOUT_SECONDS, self._close, CLOSE_UNAUTHORIZED, "authentication timeout")

    def get_compression_options(self) -> None:
        # Frames are shared between clients (text_frame), so never deflated
        return None

    def _write_frame(self, payload: bytes) -> Any:
        connection = self.ws_connection
        stream = getattr(connection, "stream", None)
        if connection is None or stream is None or connection.is_closing():
            raise tornado.websocket.WebSocketClosedError()
        return stream.write(self.frames.frame(payload))

    def _query_resume(self) -> int | None:
        # Only the resume position is read from the URL; never a token.
        raw = self.get_query_argument("resume", None)
        try:
            seq = int(raw) if raw not in (None, "") else None
        except ValueError:
            return None
        return _resume_position(seq, self.get_query_argument("instance", None),
                                self.feed.snapshots.instance)

    async def on_message(self, message: str | bytes) -> None:
        sub = self.subscriber
        if sub is None or sub.closed:
            return
        body, problem = _decode(message)
        if self.principal is None and (body is None or body["type"] != "auth"):
            # Before authentication nothing is answered: only a well-formed auth
            # message is read, anything else ends the connection.
            self._close(CLOSE_UNAUTHORIZED, "authenticate first")
            return
        if body is None:
            self._error(problem)
            return
        kind = body["type"]
        try:
            if kind == "auth":
                await self._on_auth(body)
            elif kind == "subscribe":
                self.feed.subscribe(sub, *_subscription(body))
            elif kind == "resume":
                self._on_resume(body)
            elif kind == "ping":
                self.feed.send(sub, {"type": "pong", "time": now_iso()})
            else:
                self._error(f"unknown message type {kind[:40]!r}")
        except InvalidQuery as exc:
            if self.principal is None:
                self._close(CLOSE_UNAUTHORIZED, f"invalid auth message: {exc.message}"[:120])
            else:
                self._error(exc.message, exc.detail)

    async def _on_auth(self, body: dict[str, Any]) -> None:
        token = body.get("token")
        if self._authenticating:
            return
        if not isinstance(token, str) or not token:
            if self.principal is None:
                self._close(CLOSE_UNAUTHORIZED, "auth message needs a token")
            else:
                self._error("auth message needs a token")
            return
        first = self.principal is None
        subscription = _subscription(body) if first else None
        resume = body.get("resume", body.get("seq"))
        if resume is not None and (isinstance(resume, bool) or not isinstance(resume, int)):
            raise InvalidQuery("resume must be an integer seq")
        resume = _resume_position(resume, body.get("instance"), self.feed.snapshots.instance)
        self._authenticating = True
        try:
            principal = await self._verify(token)
        except FlowerOpsError as exc:
            code = CLOSE_FORBIDDEN if isinstance(exc, Forbidden) else CLOSE_UNAUTHORIZED
            self._close(code, exc.message)
            return
        finally:
            self._authenticating = False
        if self.subscriber is None or self.subscriber.closed:
            return
        if not first:
            # A fresh token on a live socket extends it (the page refreshes its token)
            self.principal = principal
            self._schedule_expiry(principal)
            self.feed.send(self.subscriber, {"type": "auth_ok", "expires_at":
                                             iso_utc(principal.expires_at)})
            return
        window = None
        if subscription is not None:
            self.subscriber.filters, self.subscriber.limit, window = subscription
        self._start(principal, resume_seq=resume, window=window)

    def _on_resume(self, body: dict[str, Any]) -> None:
        seq = body.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise InvalidQuery("resume needs an integer seq")
        seq = _resume_position(seq, body.get("instance"), self.feed.snapshots.instance)
        assert seq is not None
        if self.subscriber is not None and not self.feed.replay(self.subscriber, seq):
            self.feed.send_snapshot(self.subscriber, resync=True)

    def _start(self, principal: Principal, *, resume_seq: int | None,
               window: ViewKey | None = None) -> None:
        if self._auth_timeout is not None:
            self.io_loop.remove_timeout(self._auth_timeout)
            self._auth_timeout = None
        self.principal = principal
        if not self._schedule_expiry(principal):
            return
        if self.subscriber is not None:
            self.feed.attach(self.subscriber, resume_seq=resume_seq, window=window)

    def _schedule_expiry(self, principal: Principal) -> bool:
        if self._expiry is not None:
            self.io_loop.remove_timeout(self._expiry)
        remaining = principal.expires_at - time.time()
        if remaining <= 0:
            self._close(CLOSE_UNAUTHORIZED, "token expired")
            return False
        self._expiry = self.io_loop.call_later(remaining, self._close, CLOSE_UNAUTHORIZED,
                                                   "token expired")
        return True

    async def _verify(self, token: str) -> Principal:
        principal = await self.auth.verify(token)
        principal.require(READ_SCOPE)
        return principal

    def _error(self, message: str, detail: Any = None) -> None:
        if self.subscriber is not None:
            self.feed.send(self.subscriber, {"type": "error", "error": message,
                                             "detail": detail})

    def _close(self, code: int, reason: str) -> None:
        if self.subscriber is not None:
            self.subscriber.closed = True
            self.feed.detach(self.subscriber)
        self.close(code, reason)

    def on_close(self) -> None:
        for handle in (self._auth_timeout, self._expiry):
            if handle is not None:
                self.io_loop.remove_timeout(handle)
        self._auth_timeout = self._expiry = None
        if self.subscriber is not None:
            self.subscriber.closed = True
            self.feed.detach(self.subscriber)


def part(*, auth: RequestAuth, feed: LiveFeed, allowed_origins: tuple[str, ...]) -> HttpPart:
    kwargs = {"auth": auth, "feed": feed, "frames": SharedFrames(),
              "allowed_origins": allowed_origins}
    return HttpPart(routes=[(f"{PATH}/?", LiveFeedHandler, kwargs)], openapi_paths={"/ws": {
        "get": {
            "summary": "Live feed (WebSocket upgrade); see docs/live-feed.md",
            "operationId": "openLiveFeed",
            "description": "Authenticate with an Authorization: Bearer header or a first "
                           "message {\"type\": \"auth\", \"token\": ...} within 5 s. Needs "
                           "monitoring:read. Never pass the token in the URL. A GET without "
                           "Upgrade: websocket is a 400; a cross-origin upgrade not allowed "
                           "by FLOWER_OPS_WS_ALLOWED_ORIGINS a 403.",
            "parameters": [{"name": "resume", "in": "query", "required": False,
                            "schema": {"type": "integer"},
                            "description": "last seq received, to replay what was missed"},
                           {"name": "instance", "in": "query", "required": False,
                            "schema": {"type": "string"},
                            "description": "the instance of the snapshot that seq came "
                                           "after; another monitor's: a snapshot with "
                                           "resync true"}],
            "responses": {"101": {"description": "Switching protocols"},
                          **openapi.errors(400, 401, 403)},
        }}})


__all__ = ["PATH", "LiveFeedHandler", "part"]

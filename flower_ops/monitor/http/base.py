"""The JSON API's base handler: bearer auth, scopes, and the one place that
maps domain errors to HTTP."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import tornado.web
from tornado.escape import json_decode

from flower_ops.core.errors import FlowerOpsError, InvalidQuery, PayloadTooLarge
from flower_ops.core.jsontext import JsonText, encode, encode_answer
from flower_ops.monitor.auth import Principal, RequestAuth, bearer_token
from flower_ops.monitor.config import READ_SCOPE, WRITE_SCOPE

logger = logging.getLogger(__name__)

API_BASE = "/api/automation/monitoring"
MAX_BODY_BYTES = 1024 * 1024
_REASONS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
            405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
            422: "unprocessable",
            503: "unavailable"}


# (path pattern, handler class, the keyword arguments of its initialize())
Route = tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]


@dataclass(frozen=True)
class HttpPart:
    """What one part of the monitor serves: its routes (paths without the
    ``--url_prefix``) and their OpenAPI paths (relative to ``API_BASE``)."""

    routes: list[Route]
    openapi_paths: dict[str, dict[str, Any]] = field(default_factory=dict)


dumps = encode


@tornado.web.stream_request_body
class JsonHandler(tornado.web.RequestHandler):
    """Writes JSON, and JSON errors for every failure (never HTML, never a trace).

    The body is streamed, not buffered by Tornado before the handler runs:
    ``prepare()`` (authentication, the size check) comes first, and at most
    ``MAX_BODY_BYTES`` of it is kept. Otherwise anyone could make the monitor
    hold Tornado's 100 MB default per connection before being told 401.
    """

    def initialize(self) -> None:
        self._body = bytearray()
        self._body_too_large = False

    # the query parameters a route reads; any other is a 400 naming both
    query_parameters: frozenset[str] = frozenset()

    def prepare(self) -> Any:
        self.check_body_size()
        self.check_query_parameters()
        return None

    def check_query_parameters(self) -> None:
        unknown = sorted(set(self.request.query_arguments) - self.query_parameters)
        if unknown:
            raise InvalidQuery("unknown query parameter(s)",
                               {"unknown": [name[:100] for name in unknown[:20]],
                                "accepted": sorted(self.query_parameters)})

    def check_body_size(self) -> None:
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise PayloadTooLarge("request body too large", {"max_bytes": MAX_BODY_BYTES})

    def data_received(self, chunk: bytes) -> None:
        if self._body_too_large or len(self._body) + len(chunk) > MAX_BODY_BYTES:
            self._body_too_large = True  # a chunked body: read on, keep nothing
            self._body.clear()
            return
        self._body.extend(chunk)

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def check_xsrf_cookie(self) -> None:
        # Bearer tokens are never sent by a browser on its own, so they are not
        # forgeable cross-site; endpoints that take cookies or basic auth
        # (the token endpoint) check the origin themselves.
        return None

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        if isinstance(value, JsonText):
            self.finish(str(value))
            return
        self.finish(encode_answer(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, FlowerOpsError):
            status, message, detail = exc.status, exc.message, exc.detail
        elif isinstance(exc, tornado.web.HTTPError):
            status = exc.status_code
            message = exc.log_message or self._reason or _REASONS.get(status, "error")
            detail = None
        else:
            status, message, detail = 500, "internal error", None
        if status == 401:
            self.set_header("WWW-Authenticate", self.auth_challenge())
        if status == 405:
            self.set_header("Allow", self.allowed_methods())
        self.clear_header("Content-Type")
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_status(status)
        self.finish(dumps({"error": message, "detail": detail}))

    def auth_challenge(self) -> str:
        return 'Bearer realm="flower-ops"'

    def allowed_methods(self) -> str:
        """The methods this route implements, for ``Allow`` (RFC 9110 §15.5.6)."""
        base = tornado.web.RequestHandler
        methods = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
        return ", ".join(m for m in methods
                         if getattr(type(self), m.lower()) is not getattr(base, m.lower()))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (FlowerOpsError, tornado.web.HTTPError)):
            return
        logger.error("Unhandled error in %s %s", self.request.method, self.request.path,
                     exc_info=(typ, value, tb))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, FlowerOpsError):
            if self._finished:
                return
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)

    def query(self, name: str) -> str | None:
        """A query parameter exactly as sent (the last one when repeated).

        Tornado's ``get_query_argument`` turns control characters into spaces
        and strips the result, so a filter would match something else than
        what was asked and length limits would see a shorter value.
        """
        values = self.request.query_arguments.get(name)
        if not values:
            return None
        try:
            return values[-1].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidQuery(f"{name} is not valid UTF-8", {"parameter": name}) from None

    def json_body(self) -> dict[str, Any]:
        body = bytes(self._body)
        if self._body_too_large or len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge("request body too large", {"max_bytes": MAX_BODY_BYTES})
        if not body:   # no body at all; whitespace alone is not JSON (a 400)
            return {}
        try:
            value = json_decode(body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the stack
            raise InvalidQuery("request body is not valid JSON") from None
        if not isinstance(value, dict):
            raise InvalidQuery("request body must be a JSON object")
        return value


class ApiHandler(JsonHandler):
    """An API route: a valid bearer token with the method's scope."""

    principal: Principal
    write_scope_methods = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def initialize(self, *, auth: RequestAuth) -> None:  # type: ignore[override]
        super().initialize()
        self.auth = auth

    async def prepare(self) -> None:
        token = bearer_token(self.request.headers.get("Authorization"))
        self.principal = await self.auth.verify(token)
        method = self.request.method or "GET"
        self.principal.require(WRITE_SCOPE if method in self.write_scope_methods else READ_SCOPE)
        self.check_body_size()
        self.check_query_parameters()

    def options(self, *args: Any) -> None:
        self.set_header("Allow", self.allowed_methods())
        self.set_status(204)
        self.finish()


class ApiNotFound(JsonHandler):
    def prepare(self) -> None:
        raise tornado.web.HTTPError(404, "no such endpoint")

"""Domain errors. Services raise these; ``monitor/http/base.py`` maps them to HTTP."""
from __future__ import annotations

from typing import Any


class FlowerOpsError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidQuery(FlowerOpsError):
    status = 400
    code = "invalid_request"


class Unauthorized(FlowerOpsError):
    status = 401
    code = "unauthorized"


class Forbidden(FlowerOpsError):
    status = 403
    code = "forbidden"


class NotFound(FlowerOpsError):
    status = 404
    code = "not_found"


class Conflict(FlowerOpsError):
    status = 409
    code = "conflict"


class PayloadTooLarge(FlowerOpsError):
    status = 413
    code = "payload_too_large"


class Unavailable(FlowerOpsError):
    """The broker, result backend or database cannot be reached (503)."""

    status = 503
    code = "unavailable"


class NotConfigured(Unavailable):
    """A feature needs a setting that is not set (e.g. DATABASE_URL)."""

    code = "not_configured"

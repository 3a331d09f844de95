"""``POST /token``: Flower credentials in, a short-lived API token out."""
from __future__ import annotations

import hmac
from base64 import b64decode
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from flower.utils.authentication import authenticate

from flower_ops.core.errors import Forbidden, InvalidQuery, Unauthorized
from flower_ops.core.times import iso_utc
from flower_ops.monitor.auth import TokenAuthority
from flower_ops.monitor.http.base import JsonHandler


@dataclass(frozen=True)
class TokenPolicy:
    """Which tokens ``POST /token`` hands out (``FLOWER_OPS_TOKEN_*``)."""

    ttl_seconds: int
    scopes: tuple[str, ...]
    anonymous: bool


class TokenHandler(JsonHandler):
    def initialize(self, *, authority: TokenAuthority,  # type: ignore[override]
                   policy: TokenPolicy, flower_options: Any) -> None:
        super().initialize()
        self.authority = authority
        self.policy = policy
        # Flower's own options: which login (--basic-auth or --auth) it uses
        self.flower_options = flower_options

    def post(self) -> None:
        self._check_same_origin()
        subject = self._flower_user()
        body = self.json_body()
        allowed = set(self.policy.scopes)
        requested = body.get("scopes", body.get("scope"))
        if requested is None:
            scopes = allowed
        else:
            if isinstance(requested, str):
                requested = requested.split()
            if not isinstance(requested, list) or not all(isinstance(s, str) for s in requested):
                raise InvalidQuery("scopes must be a list or a space-separated string")
            if not set(requested) <= allowed:
                raise Forbidden("scope not grantable", {"grantable": sorted(allowed)})
            scopes = set(requested)
        token, expires_at = self.authority.issue(
            subject=subject, scopes=frozenset(scopes),
            ttl_seconds=self.policy.ttl_seconds)
        self.write_json({
            "access_token": token, "token_type": "Bearer",
            "expires_in": self.policy.ttl_seconds, "expires_at": iso_utc(expires_at),
            "scope": " ".join(sorted(scopes)), "subject": subject,
        })

    def auth_challenge(self) -> str:
        # send_error() clears headers, so the Basic challenge is set here: a
        # browser then answers it with the user's Flower credentials.
        if self.flower_options.basic_auth:
            return 'Basic realm="flower"'
        return super().auth_challenge()

    def _check_same_origin(self) -> None:
        # Basic-auth credentials and cookies ride along on cross-site requests;
        # refuse those like Flower's own form posts do.
        site = self.request.headers.get("Sec-Fetch-Site")
        if site and site not in ("same-origin", "none"):
            raise Forbidden("cross-site request refused")
        origin = self.request.headers.get("Origin")
        if origin and urlparse(origin).netloc != self.request.host:
            raise Forbidden("cross-origin request refused")

    def _flower_user(self) -> str:
        options = self.flower_options
        if options.basic_auth:
            header = self.request.headers.get("Authorization", "")
            scheme, _, encoded = header.partition(" ")
            try:
                credentials = b64decode(encoded.strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                credentials = ""
            if scheme == "Basic" and credentials:
                for stored in options.basic_auth:
                    if hmac.compare_digest(stored.encode(), credentials.encode()):
                        return credentials.split(":", 1)[0]
            self.set_header("WWW-Authenticate", 'Basic realm="flower"')
            raise Unauthorized("Flower credentials required")
        if options.auth:
            user = self.get_secure_cookie("user")
            if user:
                email = user.decode() if isinstance(user, bytes) else str(user)
                if authenticate(options.auth, email):
                    return email
            raise Unauthorized("log in to Flower first")
        if self.policy.anonymous:
            return "anonymous"
        raise Forbidden("Flower has no authentication configured; set --basic-auth or --auth "
                        "(or FLOWER_OPS_ANONYMOUS_TOKENS=true to hand out tokens to anyone)")

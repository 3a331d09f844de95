"""JWT verification, scopes, and the signer behind ``POST /token``.

Two kinds of token are accepted:

* **External** tokens from the platform's identity provider, verified with the
  configured key (``JWT_SECRET``, ``JWT_PUBLIC_KEY`` or ``JWT_JWKS_URL``) and
  only with the algorithms in ``JWT_ALGORITHMS``.
* **Local** tokens that ``POST /token`` issues to users who logged in to
  Flower. With ``FLOWER_OPS_TOKEN_SECRET`` they are signed with it; else with
  ``JWT_SECRET`` (so other services that share the secret accept them); else
  with a random per-process secret. Local tokens not signed with
  ``JWT_SECRET`` carry a ``kid`` of their own and are verified only with
  HS256 and that secret. A public key is therefore never usable as an HMAC
  secret. Monitors behind one balancer must share the key their tokens are
  signed with; ``key_fingerprint`` lets them compare it without showing it.

Every token must carry ``exp``; ``aud``/``iss`` are checked when configured.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt

from flower_ops.core.errors import Forbidden, Unauthorized
from flower_ops.monitor.config import HMAC_ALGORITHMS, JwtConfig

logger = logging.getLogger(__name__)

LOCAL_KID = "flower-ops-local"
LOCAL_ISSUER = "flower-ops"
RANDOM_KEY = "random"
_FINGERPRINT_LABEL = b"flower-ops token key fingerprint v1"
MAX_TOKEN_BYTES = 8192


@dataclass(frozen=True)
class Principal:
    subject: str
    scopes: frozenset[str]
    expires_at: float
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"token lacks the {scope} scope", {"required_scope": scope})


def scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    found: set[str] = set()
    scope = claims.get("scope")
    if isinstance(scope, str):
        found.update(scope.split())
    scope_list = claims.get("scopes")
    if isinstance(scope_list, (list, tuple)):
        found.update(s for s in scope_list if isinstance(s, str))
    elif isinstance(scope_list, str):
        found.update(scope_list.split())
    return frozenset(found)


class TokenAuthority:
    """Verifies bearer tokens and signs the monitor's own short-lived ones."""

    def __init__(self, config: JwtConfig, *, local_secret: str | None = None) -> None:
        self.config = config
        self._shared_secret = local_secret or config.token_secret
        self._local_secret = self._shared_secret or secrets.token_urlsafe(48)
        self._jwks: jwt.PyJWKClient | None = None
        if config.jwks_url:
            # An unknown kid refetches the key set (rotation), at most once per
            # cooldown so forged kids cannot turn the monitor into a fetch loop
            self._jwks = jwt.PyJWKClient(config.jwks_url, cache_keys=True, lifespan=300,
                                         timeout=5,
                                         cooldown_duration=config.jwks_refresh_cooldown_seconds)
        if not config.configured and self._shared_secret is None:
            logger.warning(
                "No JWT key configured (JWT_SECRET, JWT_PUBLIC_KEY or JWT_JWKS_URL) and no "
                "FLOWER_OPS_TOKEN_SECRET: API tokens come only from POST "
                "/api/automation/monitoring/token and are signed with a random per-process "
                "secret, so they stop working when the monitor restarts and another monitor "
                "refuses them.")

    @property
    def signing_key(self) -> str | None:
        """The shared key local tokens are signed with; None when per-process."""
        return self._shared_secret or self.config.secret

    @property
    def key_fingerprint(self) -> str:
        """An HMAC of a fixed label under the signing key (never the key):
        equal on two monitors exactly when they accept each other's tokens;
        ``random`` for a per-process key."""
        key = self.signing_key
        if key is None:
            return RANDOM_KEY
        return hmac.new(key.encode(), _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:32]

    @property
    def blocking(self) -> bool:
        """Whether verify() may do network I/O (a JWKS fetch)."""
        return self._jwks is not None

    # -- verification ----------------------------------------------------------

    def verify(self, token: str) -> Principal:
        if not token or len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized("invalid token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise Unauthorized("token algorithm not allowed")
        try:
            if header.get("kid") == LOCAL_KID:
                claims = self._decode(token, self._local_secret, ["HS256"],
                                      audience=None, issuer=LOCAL_ISSUER)
            else:
                claims = self._decode_external(token, alg)
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("token issuer not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"token lacks the {exc.claim} claim") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthorized("token algorithm not allowed") from None
        except jwt.PyJWKClientError:
            raise Unauthorized("token signing key not found") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise Unauthorized("invalid token") from None
        subject = claims.get("sub")
        return Principal(
            subject=str(subject) if subject is not None else "unknown",
            scopes=scopes_of(claims),
            expires_at=float(claims["exp"]),
            claims=claims,
        )

    def _decode_external(self, token: str, alg: str) -> dict[str, Any]:
        config = self.config
        if alg not in config.algorithms:
            raise jwt.InvalidAlgorithmError(alg)
        key: Any
        if config.secret:
            key = config.secret
        elif config.public_key:
            key = config.public_key
        elif self._jwks is not None:
            key = self._jwks.get_signing_key_from_jwt(token).key
        else:
            raise jwt.InvalidSignatureError("no key configured for external tokens")
        return self._decode(token, key, list(config.algorithms), audience=config.audience,
                            issuer=config.issuer)

    def _decode(self, token: str, key: Any, algorithms: list[str], *, audience: str | None,
                issuer: str | None) -> dict[str, Any]:
        required = ["exp"]
        if issuer is not None:
            required.append("iss")
        if audience is not None:
            required.append("aud")
        options: jwt.types.Options = {"require": required, "verify_aud": audience is not None}
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=algorithms, audience=audience, issuer=issuer,
            options=options, leeway=self.config.leeway_seconds)
        if not isinstance(claims.get("exp"), (int, float)):
            raise jwt.InvalidTokenError("exp is not a number")
        return claims

    # -- signing -----------------------------------------------------------------

    def issue(self, *, subject: str, scopes: tuple[str, ...] | frozenset[str],
              ttl_seconds: int) -> tuple[str, float]:
        """A token for a user who authenticated to Flower; returns (token, expires_at)."""
        now = int(time.time())
        expires_at = now + int(ttl_seconds)
        claims: dict[str, Any] = {
            "sub": subject, "iat": now, "nbf": now, "exp": expires_at,
            "scope": " ".join(sorted(scopes)), "jti": secrets.token_hex(8),
        }
        secret = self.config.secret
        if secret and self._shared_secret is None:
            alg = next(a for a in self.config.algorithms if a in HMAC_ALGORITHMS)
            if self.config.issuer:
                claims["iss"] = self.config.issuer
            if self.config.audience:
                claims["aud"] = self.config.audience
            token = jwt.encode(claims, secret, algorithm=alg)
        else:
            claims["iss"] = LOCAL_ISSUER
            token = jwt.encode(claims, self._local_secret, algorithm="HS256",
                               headers={"kid": LOCAL_KID})
        return token, float(expires_at)


class RequestAuth:
    """What a request handler needs to authenticate a bearer token: the
    verification, off the IOLoop when it may block (a JWKS fetch)."""

    def __init__(self, authority: TokenAuthority,
                 run_blocking: Callable[..., Awaitable[Any]]) -> None:
        self.authority = authority
        self._run_blocking = run_blocking

    async def verify(self, token: str) -> Principal:
        if self.authority.blocking:
            principal: Principal = await self._run_blocking(self.authority.verify, token)
            return principal
        return self.authority.verify(token)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing bearer token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("expected 'Authorization: Bearer <token>'")
    return token.strip()

"""JWT verification with real signed tokens, including the usual attacks."""
from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any, Iterator

import jwt
import pytest
import tornado.web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from flower_ops.monitor.auth import LOCAL_KID, TokenAuthority, bearer_token
from flower_ops.core.env import ConfigError, EnvReader
from flower_ops.monitor.config import JwtConfig, jwt_config_from_env
from flower_ops.demo.embedded import free_port
from flower_ops.core.errors import Forbidden, Unauthorized

SECRET = "s3cret-for-tests-0123456789abcdef"
READ = "monitoring:read"
WRITE = "monitoring:write"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "alice", "iat": now, "exp": now + 300, "scope": f"{READ} {WRITE}"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: Any) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(payload: dict[str, Any]) -> str:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(payload).encode())}."


# -- HS256 ---------------------------------------------------------------------

def test_valid_hs256_token_gives_subject_and_scopes() -> None:
    authority = TokenAuthority(JwtConfig(secret=SECRET))
    principal = authority.verify(jwt.encode(claims(), SECRET, algorithm="HS256"))
    assert principal.subject == "alice"
    assert principal.scopes == {READ, WRITE}


def test_scopes_list_claim_is_accepted() -> None:
    authority = TokenAuthority(JwtConfig(secret=SECRET))
    token = jwt.encode(claims(scope=None, scopes=[READ]), SECRET, algorithm="HS256")
    assert authority.verify(token).scopes == {READ}


def test_alg_none_is_rejected() -> None:
    authority = TokenAuthority(JwtConfig(secret=SECRET))
    with pytest.raises(Unauthorized):
        authority.verify(unsigned_token(claims()))


def test_alg_none_with_local_kid_is_rejected() -> None:
    authority = TokenAuthority(JwtConfig())
    header = b64url(json.dumps({"alg": "none", "kid": LOCAL_KID}).encode())
    token = f"{header}.{b64url(json.dumps(claims(iss='flower-ops')).encode())}."
    with pytest.raises(Unauthorized):
        authority.verify(token)


def test_tampered_payload_is_rejected() -> None:
    authority = TokenAuthority(JwtConfig(secret=SECRET))
    token = jwt.encode(claims(scope=READ), SECRET, algorithm="HS256")
    header, _, signature = token.split(".")
    forged = b64url(json.dumps(claims(scope=f"{READ} {WRITE}", sub="mallory")).encode())
    with pytest.raises(Unauthorized):
        authority.verify(f"{header}.{forged}.{signature}")


def test_wrong_secret_is_rejected() -> None:
    authority = TokenAuthority(JwtConfig(secret=SECRET))
    with pytest.raises(Unauthorized):
        authority.verify(jwt.encode(claims(), "another-secret-0123456789", algorithm="HS256"))


def test_expired_token_is_rejected() -> None:
    authority = TokenAuthority(JwtConfig(secret=SECRET))
    token = jwt.encode(claims(exp=int(time.time()) - 5), SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="expired"):
        authority.verify(token)


def test_token_without_exp_is_rejected() -> None:
    authority = TokenAuthority(JwtConfig(secret=SECRET))
    token = jwt.encode(claims(exp=None), SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="exp"):
        authority.verify(token)


def test_algorithm_outside_allow_list_is_rejected() -> None:
    authority = TokenAuthority(JwtConfig(secret=SECRET, algorithms=("HS256",)))
    with pytest.raises(Unauthorized):
        authority.verify(jwt.encode(claims(), SECRET, algorithm="HS512"))


def test_audience_and_issuer_enforced_when_configured() -> None:
    config = JwtConfig(secret=SECRET, audience="ops-api", issuer="https://idp.example")
    authority = TokenAuthority(config)
    good = jwt.encode(claims(aud="ops-api", iss="https://idp.example"), SECRET, algorithm="HS256")
    assert authority.verify(good).subject == "alice"
    for bad in (claims(aud="other", iss="https://idp.example"),
                claims(aud="ops-api", iss="https://evil.example"),
                claims(iss="https://idp.example"),
                claims(aud="ops-api")):
        with pytest.raises(Unauthorized):
            authority.verify(jwt.encode(bad, SECRET, algorithm="HS256"))


def test_missing_scope_is_forbidden() -> None:
    authority = TokenAuthority(JwtConfig(secret=SECRET))
    principal = authority.verify(jwt.encode(claims(scope=READ), SECRET, algorithm="HS256"))
    principal.require(READ)
    with pytest.raises(Forbidden):
        principal.require(WRITE)


def test_garbage_and_oversized_tokens_are_rejected() -> None:
    authority = TokenAuthority(JwtConfig(secret=SECRET))
    for token in ("", "abc", "a.b.c", "x" * 10000, "\u00e9.\u00e9.\u00e9"):
        with pytest.raises(Unauthorized):
            authority.verify(token)


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    for header in (None, "", "Basic abc", "Bearer ", "Token abc"):
        with pytest.raises(Unauthorized):
            bearer_token(header)


# -- asymmetric keys -------------------------------------------------------------

def test_rs256_public_key_verifies(rsa_key: rsa.RSAPrivateKey) -> None:
    authority = TokenAuthority(JwtConfig(public_key=public_pem(rsa_key), algorithms=("RS256",)))
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert authority.verify(token).subject == "alice"


def test_es256_public_key_verifies() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    authority = TokenAuthority(JwtConfig(public_key=public_pem(key), algorithms=("ES256",)))
    assert authority.verify(jwt.encode(claims(), key, algorithm="ES256")).subject == "alice"


def test_hs256_signed_with_public_key_is_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    """Key confusion: the attacker HMAC-signs with the (public) RSA key."""
    pem = public_pem(rsa_key)
    authority = TokenAuthority(JwtConfig(public_key=pem, algorithms=("RS256",)))
    import hashlib
    import hmac as hmac_mod

    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims()).encode())
    signature = hmac_mod.new(pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(Unauthorized):
        authority.verify(f"{header}.{payload}.{b64url(signature)}")


def test_local_kid_hs256_signed_with_public_key_is_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = public_pem(rsa_key)
    authority = TokenAuthority(JwtConfig(public_key=pem, algorithms=("RS256",)))
    import hashlib
    import hmac as hmac_mod

    header = b64url(json.dumps({"alg": "HS256", "kid": LOCAL_KID}).encode())
    payload = b64url(json.dumps(claims(iss="flower-ops")).encode())
    signature = hmac_mod.new(pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(Unauthorized):
        authority.verify(f"{header}.{payload}.{b64url(signature)}")


def test_configuration_refuses_mixed_key_families(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = public_pem(rsa_key)
    cases = [
        ({"JWT_SECRET": SECRET, "JWT_PUBLIC_KEY": pem}, "JWT_SECRET"),
        ({"JWT_PUBLIC_KEY": pem}, "JWT_ALGORITHMS"),
        ({"JWT_PUBLIC_KEY": pem, "JWT_ALGORITHMS": "RS256,HS256"}, "JWT_ALGORITHMS"),
        ({"JWT_SECRET": SECRET, "JWT_ALGORITHMS": "RS256"}, "JWT_ALGORITHMS"),
        ({"JWT_SECRET": SECRET, "JWT_ALGORITHMS": "none"}, "JWT_ALGORITHMS"),
        ({"JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----",
          "JWT_ALGORITHMS": "RS256"}, "JWT_PUBLIC_KEY"),
    ]
    for env, variable in cases:
        with pytest.raises(ConfigError) as info:
            jwt_config_from_env(EnvReader(env))
        assert info.value.variable == variable, env


# -- local tokens ------------------------------------------------------------------

def test_local_tokens_round_trip_and_die_with_the_process() -> None:
    authority = TokenAuthority(JwtConfig())
    token, expires_at = authority.issue(subject="admin", scopes={READ}, ttl_seconds=60)
    assert jwt.get_unverified_header(token)["kid"] == LOCAL_KID
    principal = authority.verify(token)
    assert principal.subject == "admin" and principal.scopes == {READ}
    assert abs(expires_at - time.time() - 60) < 5
    with pytest.raises(Unauthorized):
        TokenAuthority(JwtConfig()).verify(token)  # another process, another secret


def test_issued_tokens_use_configured_secret_audience_and_issuer() -> None:
    config = JwtConfig(secret=SECRET, audience="ops-api", issuer="https://idp.example")
    token, _ = TokenAuthority(config).issue(subject="admin", scopes={READ}, ttl_seconds=60)
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"], audience="ops-api",
                         issuer="https://idp.example")
    assert decoded["sub"] == "admin"


def test_local_secret_never_accepted_for_external_kid() -> None:
    authority = TokenAuthority(JwtConfig(secret=SECRET))
    token, _ = TokenAuthority(JwtConfig()).issue(subject="x", scopes={READ}, ttl_seconds=60)
    with pytest.raises(Unauthorized):
        authority.verify(token)


# -- JWKS with key rotation ----------------------------------------------------------

class _JwksHandler(tornado.web.RequestHandler):
    def initialize(self, keys: dict[str, Any]) -> None:
        self.keys = keys

    def get(self) -> None:
        self.keys["fetches"] = self.keys.get("fetches", 0) + 1
        self.write({"keys": self.keys["jwks"]})


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, Any]]]:
    keys: dict[str, Any] = {"jwks": []}
    port = free_port()
    started = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        import asyncio

        asyncio.set_event_loop(asyncio.new_event_loop())
        loop = IOLoop.current()
        server = HTTPServer(tornado.web.Application([(r"/jwks", _JwksHandler, {"keys": keys})]))
        server.listen(port, "127.0.0.1")
        holder.update(loop=loop, server=server)
        started.set()
        loop.start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(5)
    yield f"http://127.0.0.1:{port}/jwks", keys
    holder["loop"].add_callback(holder["server"].stop)
    holder["loop"].add_callback(holder["loop"].stop)
    thread.join(5)


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=kid, alg="RS256", use="sig")
    return jwk


def test_jwks_verifies_and_follows_key_rotation(jwks_server: tuple[str, dict[str, Any]]) -> None:
    url, keys = jwks_server
    first = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    second = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys["jwks"] = [_jwk(first, "k1")]
    authority = TokenAuthority(JwtConfig(jwks_url=url, algorithms=("RS256",),
                                         jwks_refresh_cooldown_seconds=0.0))
    token1 = jwt.encode(claims(), first, algorithm="RS256", headers={"kid": "k1"})
    assert authority.blocking
    assert authority.verify(token1).subject == "alice"
    # Rotation: a new key appears, the monitor fetches it on first sight of its kid
    keys["jwks"] = [_jwk(first, "k1"), _jwk(second, "k2")]
    token2 = jwt.encode(claims(sub="bob"), second, algorithm="RS256", headers={"kid": "k2"})
    assert authority.verify(token2).subject == "bob"
    unknown = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token3 = jwt.encode(claims(), unknown, algorithm="RS256", headers={"kid": "k9"})
    with pytest.raises(Unauthorized):
        authority.verify(token3)
    forged = jwt.encode(claims(), unknown, algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(Unauthorized):
        authority.verify(forged)

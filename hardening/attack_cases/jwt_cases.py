"""JWT attacks against the REST API of both monitors (RS256 and HS256)."""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from flower_ops.monitor.auth import LOCAL_KID

from .base import (
    API,
    AUDIENCE,
    ISSUER,
    READ,
    SECRET,
    WRITE,
    Check,
    Target,
    all_of,
    assemble,
    b64url,
    b64url_json,
    bearer,
    case,
    claims,
    http,
    json_error,
    json_ok,
    raw_error,
    raw_http,
    request_bytes,
)

G = "jwt"
UNKNOWN_TASK = "00000000-0000-4000-8000-000000000000"


def stats(target: Target, token: str, *, hs: bool = False):  # type: ignore[no-untyped-def]
    monitor = target.hs if hs else target.rsa
    return http("GET", target.api("/stats", monitor=monitor), headers=bearer(token))


def refused(target: Target, token: str, *, hs: bool = False, status: int = 401) -> Check:
    return json_error(stats(target, token, hs=hs), status)


def hmac_signed(header: dict, payload: dict, key: bytes, digest=hashlib.sha256) -> str:  # type: ignore[no-untyped-def,type-arg]
    signing_input = f"{b64url_json(header)}.{b64url_json(payload)}".encode()
    return assemble(header, payload, hmac.new(key, signing_input, digest).digest())


# -- controls: what a valid token gets, so every refusal below means something ---------


@case(G, "control: valid RS256 token (aud, iss, read+write) is accepted")
def valid_rs256(t: Target) -> Check:
    return json_ok(stats(t, t.rs_token()))


@case(G, "control: valid HS256 token is accepted by the HS monitor")
def valid_hs256(t: Target) -> Check:
    return json_ok(stats(t, t.hs_token(), hs=True))


@case(G, "control: token from POST /token (Flower login) is accepted")
def valid_local(t: Target) -> Check:
    return json_ok(stats(t, t.local_token()))


# -- alg none ----------------------------------------------------------------------------


@case(G, "alg none, no signature")
def alg_none(t: Target) -> Check:
    checks = [refused(t, assemble({"alg": alg, "typ": "JWT"}, claims()), hs=hs)
              for alg in ("none", "None", "NONE", "nOnE") for hs in (False, True)]
    return all_of(*checks)


@case(G, "alg none with the monitor's own kid (flower-ops-local)")
def alg_none_local_kid(t: Target) -> Check:
    forged = assemble({"alg": "none", "kid": LOCAL_KID}, claims(iss="flower-ops", aud=None))
    return all_of(refused(t, forged), refused(t, forged, hs=True))


@case(G, "alg none with a valid token's signature kept")
def alg_none_keeping_signature(t: Target) -> Check:
    _header, payload, signature = t.rs_token().split(".")
    forged = f"{b64url_json({'alg': 'none', 'typ': 'JWT'})}.{payload}.{signature}"
    return refused(t, forged)


# -- key confusion -----------------------------------------------------------------------


@case(G, "key confusion: HS256 signed with the RSA public key (PEM)")
def hs256_with_public_key(t: Target) -> Check:
    pem = t.public_pem.encode()
    checks = [refused(t, hmac_signed({"alg": alg, "typ": "JWT"}, claims(), key, digest))
              for key in (pem, pem.strip())
              for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512))]
    return all_of(*checks)


@case(G, "key confusion: HS256 with the public key and the local kid")
def hs256_with_public_key_local_kid(t: Target) -> Check:
    forged = hmac_signed({"alg": "HS256", "kid": LOCAL_KID}, claims(iss="flower-ops", aud=None),
                         t.public_pem.encode())
    return refused(t, forged)


@case(G, "embedded jwk header with the attacker's own key")
def embedded_jwk(t: Target) -> Check:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(t.other_key.public_key()))
    forged = jwt.encode(claims(), t.other_key, algorithm="RS256",
                        headers={"jwk": jwk, "jku": "http://evil.example/jwks.json",
                                 "x5u": "http://evil.example/cert.pem", "kid": "evil"})
    return refused(t, forged)


@case(G, "kid path traversal, HS256 signed with an empty key")
def kid_traversal(t: Target) -> Check:
    header = {"alg": "HS256", "kid": "../../../../dev/null"}
    return all_of(refused(t, hmac_signed(header, claims(), b"")),
                  refused(t, hmac_signed(header, claims(), b""), hs=True))


# -- tampering and wrong keys ----------------------------------------------------------


@case(G, "tampered payload (read-only token rewritten to read+write)")
def tampered_payload(t: Target) -> Check:
    checks = []
    for token, hs in ((t.rs_token(scope=READ), False), (t.hs_token(scope=READ), True)):
        header, _, signature = token.split(".")
        forged = f"{header}.{b64url_json(claims(scope=f'{READ} {WRITE}', sub='root'))}.{signature}"
        checks.append(refused(t, forged, hs=hs))
    return all_of(*checks)


@case(G, "tampered signature (one byte flipped, truncated, stripped)")
def tampered_signature(t: Target) -> Check:
    checks = []
    for token, hs in ((t.rs_token(), False), (t.hs_token(), True)):
        header, payload, signature = token.split(".")
        raw = bytearray(jwt.utils.base64url_decode(signature))
        raw[len(raw) // 2] ^= 0x01
        for forged_sig in (b64url(bytes(raw)), signature[:-8], ""):
            checks.append(refused(t, f"{header}.{payload}.{forged_sig}", hs=hs))
    return all_of(*checks)


@case(G, "RS256 signed with another RSA key")
def wrong_rsa_key(t: Target) -> Check:
    return refused(t, t.rs_token(key=t.other_key))


@case(G, "HS256 signed with the wrong secret")
def wrong_secret(t: Target) -> Check:
    return refused(t, t.hs_token(secret="not-the-secret-" + "0123456789abcdef" * 3), hs=True)


@case(G, "local token of one monitor at the other monitor")
def local_token_other_monitor(t: Target) -> Check:
    return refused(t, t.local_token(monitor=t.rsa), hs=True)


# -- time claims ------------------------------------------------------------------------


@case(G, "expired token (exp 5 s ago, no leeway)")
def expired(t: Target) -> Check:
    past = int(time.time()) - 5
    return all_of(refused(t, t.rs_token(exp=past, iat=past - 60)),
                  refused(t, t.hs_token(exp=past, iat=past - 60), hs=True))


@case(G, "no exp claim")
def no_exp(t: Target) -> Check:
    return all_of(refused(t, t.rs_token(exp=None)), refused(t, t.hs_token(exp=None), hs=True))


@case(G, "exp not a usable number (string, bool, Infinity, NaN, list, object)")
def exp_not_a_number(t: Target) -> Check:
    checks = [refused(t, t.rs_token(exp=str(int(time.time()) + 600)))]
    header = {"alg": "HS256", "typ": "JWT"}
    for raw in ("Infinity", "-Infinity", "NaN", "-1e300", "true", "[1]", "{}"):
        # A broken issuer: signed with the right secret, a claim no JSON encoder writes
        body = json.dumps(claims(exp=0)).replace('"exp": 0', f'"exp": {raw}')
        payload = b64url(body.encode())
        signing_input = f"{b64url_json(header)}.{payload}".encode()
        signature = hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest()
        checks.append(refused(t, f"{b64url_json(header)}.{payload}.{b64url(signature)}",
                              hs=True))
    return all_of(*checks)


@case(G, "nbf in the future")
def nbf_future(t: Target) -> Check:
    return refused(t, t.rs_token(nbf=int(time.time()) + 300))


@case(G, "iat in the future")
def iat_future(t: Target) -> Check:
    return refused(t, t.rs_token(iat=int(time.time()) + 300))


# -- audience and issuer ----------------------------------------------------------------


@case(G, "wrong aud")
def wrong_aud(t: Target) -> Check:
    return all_of(refused(t, t.rs_token(aud="other-api")),
                  refused(t, t.rs_token(aud=["other-api", "third-api"])),
                  refused(t, t.hs_token(aud="other-api"), hs=True))


@case(G, "missing aud")
def missing_aud(t: Target) -> Check:
    return all_of(refused(t, t.rs_token(aud=None)), refused(t, t.hs_token(aud=None), hs=True))


@case(G, "control: aud list containing the configured audience is accepted")
def aud_list(t: Target) -> Check:
    return json_ok(stats(t, t.rs_token(aud=["other-api", AUDIENCE])))


@case(G, "wrong iss")
def wrong_iss(t: Target) -> Check:
    return all_of(refused(t, t.rs_token(iss="https://evil.example")),
                  refused(t, t.rs_token(iss=ISSUER + "/")),
                  refused(t, t.hs_token(iss="https://evil.example"), hs=True))


@case(G, "missing iss")
def missing_iss(t: Target) -> Check:
    return all_of(refused(t, t.rs_token(iss=None)), refused(t, t.hs_token(iss=None), hs=True))


# -- algorithm allow-list -------------------------------------------------------------------


@case(G, "alg outside the allow-list (RS512/PS256 with the right key; HS512 with the secret)")
def alg_not_allowed(t: Target) -> Check:
    return all_of(refused(t, t.rs_token(algorithm="RS512")),
                  refused(t, t.rs_token(algorithm="PS256")),
                  refused(t, t.hs_token(algorithm="HS512"), hs=True),
                  refused(t, t.hs_token(algorithm="HS384"), hs=True))


@case(G, "ES256 token (another family) at both monitors")
def es256(t: Target) -> Check:
    key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(), key, algorithm="ES256")
    return all_of(refused(t, token), refused(t, token, hs=True))


@case(G, "RS256 token at the HS monitor (family switch)")
def rs256_at_hs(t: Target) -> Check:
    return refused(t, t.rs_token(), hs=True)


# -- scopes ---------------------------------------------------------------------------------


def action(t: Target, path: str, token: str, body: object = None):  # type: ignore[no-untyped-def]
    return http("POST", t.api(path), headers=bearer(token),
                json={} if body is None else body)


@case(G, "read-only scope on cancel and retry (and bulk)")
def read_only_actions(t: Target) -> Check:
    token = t.rs_token(scope=READ)
    return all_of(
        json_error(action(t, f"/tasks/{UNKNOWN_TASK}/cancel", token), 403),
        json_error(action(t, f"/tasks/{UNKNOWN_TASK}/retry", token), 403),
        json_error(action(t, "/tasks/bulk/cancel", token, {"ids": [UNKNOWN_TASK]}), 403),
        json_error(action(t, "/tasks/bulk/retry", token, {"ids": [UNKNOWN_TASK]}), 403),
        json_error(action(t, f"/tasks/{UNKNOWN_TASK}/cancel", t.local_token(READ)), 403))


@case(G, "control: write scope reaches the action (404 for an unknown task, not 401/403)")
def write_scope_reaches_action(t: Target) -> Check:
    return json_error(action(t, f"/tasks/{UNKNOWN_TASK}/cancel", t.rs_token()), 404,
                      expected="404 JSON error (authorized)")


@case(G, "no scope claim; empty and look-alike scopes; scope as a list in 'scope'")
def no_scope(t: Target) -> Check:
    return all_of(refused(t, t.rs_token(scope=None), status=403),
                  refused(t, t.rs_token(scope=""), status=403),
                  refused(t, t.rs_token(scope="monitoring:readx monitoring"), status=403),
                  refused(t, t.rs_token(scope="MONITORING:READ"), status=403),
                  refused(t, t.rs_token(scope=[READ, WRITE]), status=403),
                  refused(t, t.rs_token(scope=None, scopes={"monitoring:read": True}),
                          status=403))


@case(G, "write-only scope cannot read")
def write_only_cannot_read(t: Target) -> Check:
    return refused(t, t.rs_token(scope=WRITE), status=403)


@case(G, "POST /token cannot grant scopes beyond the configured ones")
def token_scope_escalation(t: Target) -> Check:
    response = http("POST", t.api("/token"), auth=t.rsa.basic_auth,
                    json={"scopes": [READ, "monitoring:admin"]})
    return json_error(response, 403)


# -- where the token comes from ---------------------------------------------------------------


@case(G, "token in the query string is ignored (?token, ?access_token, ?jwt)")
def token_in_query(t: Target) -> Check:
    token = t.rs_token()
    checks = [json_error(http("GET", t.api(f"/stats?{name}={token}")), 401)
              for name in ("token", "access_token", "jwt", "bearer")]
    return all_of(*checks)


@case(G, "Flower basic-auth credentials do not authenticate the API")
def basic_auth_on_api(t: Target) -> Check:
    return all_of(json_error(http("GET", t.api("/stats"), auth=t.rsa.basic_auth), 401),
                  json_error(http("POST", t.api(f"/tasks/{UNKNOWN_TASK}/cancel"),
                                  auth=t.rsa.basic_auth), 401))


@case(G, "Bearer with garbage (random, a.b.c, non-ASCII, wrong scheme, two tokens)")
def bearer_garbage(t: Target) -> Check:
    headers = ["Bearer abc", "Bearer a.b.c", "Bearer ...", "Bearer e30.e30.e30",
               "Bearer ' OR 1=1 --", "Bearer \u00e9\u00e9.\u00e9.\u00e9", "Bearer",
               "bearer", "Token " + t.rs_token(), "Bearer " + t.rs_token() + " " + t.rs_token(),
               "Bearer " + t.rs_token() + "." + "x"]
    checks = []
    for value in headers:
        response = http("GET", t.api("/stats"), headers={"Authorization": value.encode("utf-8")})
        checks.append(json_error(response, 401))
    return all_of(*checks)


@case(G, "over-long Authorization header (9 KB: 401; 70 KB: refused by HTTP layer)")
def long_authorization(t: Target) -> Check:
    medium = json_error(http("GET", t.api("/stats"), headers=bearer("a" * 9000)), 401)
    huge = raw_http(t.rsa.port, request_bytes("GET", f"{API}/stats", t.rsa.port,
                                              headers=bearer("a" * 70_000)))
    return all_of(medium, raw_error(huge, 400, 431, allow_closed=True,
                                    expected="4xx or connection closed, never 5xx"))

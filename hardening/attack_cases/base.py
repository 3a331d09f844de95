"""What every attack case shares: the registry, the target stack's handle,
real signed tokens, and the checks that turn a response into an outcome.

A case is a small function ``(target) -> Check``; ``@case(group, name)``
registers it. ``Check`` says what was expected, what was observed and whether
they agree; the runner adds the group and name (``Outcome``).
"""
from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    from testing.processes import CeleryWorker, Monitor

READ = "monitoring:read"
WRITE = "monitoring:write"
AUDIENCE = "ops-api"
ISSUER = "https://idp.example"
SECRET = "attack-suite-hs-secret-" + "0123456789abcdef" * 3  # 64 bytes: fine for HS512 too
ALLOWED_ORIGIN = "http://dashboard.example"
EVIL_ORIGIN = "http://evil.example"
BASIC_AUTH = ("admin", "admin123")
API = "/api/automation/monitoring"
HTTP_TIMEOUT_SECONDS = 15.0


# -- registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    expected: str
    observed: str
    ok: bool


@dataclass(frozen=True)
class Outcome:
    group: str
    case: str
    expected: str
    observed: str
    ok: bool
    seconds: float = 0.0
    known: str | None = None  # a weakness found and not fixed here (see the case)

    @property
    def result(self) -> str:
        if self.known:
            return "FIXED?" if self.ok else "KNOWN"
        return "PASS" if self.ok else "FAIL"

    @property
    def failed(self) -> bool:
        return not self.ok and not self.known


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    run_check: Callable[[Target], Check]
    known: str | None = None
    slow: bool = False  # left to the suite; tests/test_attacks.py runs the rest

    @property
    def id(self) -> str:
        return f"{self.group}: {self.name}"

    def run(self, target: Target) -> Outcome:
        started = time.monotonic()
        try:
            check = self.run_check(target)
        except Exception as exc:  # noqa: BLE001 - a broken case is a failed case, reported
            check = Check("(case ran)", f"case raised {type(exc).__name__}: {exc}"[:300],
                          False)
        return Outcome(self.group, self.name, check.expected, check.observed, check.ok,
                       time.monotonic() - started, self.known)


CASES: list[Case] = []
GROUPS = ("jwt", "websocket", "csrf", "injection", "requests", "monitor")


def case(group: str, name: str, *, known: str | None = None, slow: bool = False
         ) -> Callable[[Callable[[Target], Check]], Callable[[Target], Check]]:
    """Register a case. ``known`` marks a weakness this suite found but whose
    fix lies outside the code it may change: reported as KNOWN, not failed.
    ``slow`` cases (or ones the other tests already cover) run only in the suite."""
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}")

    def register(fn: Callable[[Target], Check]) -> Callable[[Target], Check]:
        if any(c.group == group and c.name == name for c in CASES):
            raise ValueError(f"duplicate case {group}: {name}")
        CASES.append(Case(group, name, fn, known, slow))
        return fn
    return register


def all_of(*checks: Check) -> Check:
    """One check from several steps: ok when all are; the first failure is observed."""
    failed = [c for c in checks if not c.ok]
    shown = failed[0] if failed else checks[-1]
    expected = "; ".join(dict.fromkeys(c.expected for c in checks))
    observed = shown.observed if failed or len(checks) == 1 else \
        "; ".join(dict.fromkeys(c.observed for c in checks))
    return Check(expected, observed, not failed)


# -- the stack under attack ---------------------------------------------------------------


@dataclass
class Target:
    """Handles on the running stack; built by ``hardening.attacks.attack_stack``.

    ``rsa`` verifies RS256 tokens with a public key; ``hs`` verifies HS256 with a
    shared secret. Both enforce ``aud`` and ``iss``, use Flower basic auth and
    watch the same broker.
    """

    app: Any
    worker: CeleryWorker
    rsa: Monitor
    hs: Monitor
    private_key: RSAPrivateKey
    other_key: RSAPrivateKey
    evil_worker: CeleryWorker | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def public_pem(self) -> str:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def api(self, path: str = "", *, monitor: Monitor | None = None) -> str:
        return f"{(monitor or self.rsa).api}{path}"

    def ws_url(self, query: str = "", *, monitor: Monitor | None = None) -> str:
        base = (monitor or self.rsa).base_url.replace("http://", "ws://")
        return f"{base}{API}/ws{query}"

    def origin(self, monitor: Monitor | None = None) -> str:
        return f"http://127.0.0.1:{(monitor or self.rsa).port}"

    # -- tokens -----------------------------------------------------------------------

    def rs_token(self, *, key: Any = None, algorithm: str = "RS256",
                 headers: dict[str, Any] | None = None, **overrides: Any) -> str:
        return jwt.encode(claims(**overrides), key or self.private_key, algorithm=algorithm,
                          headers=headers)

    def hs_token(self, *, secret: str = SECRET, algorithm: str = "HS256",
                 headers: dict[str, Any] | None = None, **overrides: Any) -> str:
        return jwt.encode(claims(**overrides), secret, algorithm=algorithm, headers=headers)

    def local_token(self, scopes: str | None = None, *, monitor: Monitor | None = None) -> str:
        """A token from ``POST /token`` (Flower credentials in)."""
        return (monitor or self.rsa).token(scopes)

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for both monitors; an override of None removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {"sub": "attacker", "iat": now, "exp": now + 600,
                            "aud": AUDIENCE, "iss": ISSUER, "scope": f"{READ} {WRITE}"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def assemble(header: dict[str, Any], payload: dict[str, Any] | str, signature: bytes = b"") -> str:
    body = payload if isinstance(payload, str) else b64url_json(payload)
    return f"{b64url_json(header)}.{body}.{b64url(signature)}"


# -- HTTP ---------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def http(method: str, url: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", HTTP_TIMEOUT_SECONDS)
    kwargs.setdefault("allow_redirects", False)
    return requests.request(method, url, **kwargs)


def describe(response: requests.Response) -> str:
    ctype = response.headers.get("Content-Type", "-").split(";")[0]
    text = response.text
    try:
        body = response.json()
    except ValueError:
        detail = repr(text[:60]) if text else "empty body"
    else:
        detail = repr(body.get("error"))[:90] if isinstance(body, dict) and "error" in body \
            else "JSON " + ",".join(sorted(body)[:5] if isinstance(body, dict) else
                                    [type(body).__name__])
    return f"{response.status_code} {ctype} {detail}"


def _leaks(text: str) -> bool:
    return "Traceback" in text or 'File "/' in text or "<html" in text.lower()


def json_error(response: requests.Response, *statuses: int, expected: str | None = None
               ) -> Check:
    """A JSON error with one of ``statuses``: never HTML, never a trace."""
    want = expected or f"{'/'.join(map(str, statuses))} JSON error"
    observed = describe(response)
    ok = response.status_code in statuses and is_json_error(response)
    return Check(want, observed, ok)


def is_json_error(response: requests.Response) -> bool:
    if not response.headers.get("Content-Type", "").startswith("application/json"):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), str) \
        and not _leaks(response.text)


def json_ok(response: requests.Response, *, expected: str = "200 JSON",
            status: int = 200) -> Check:
    ok = response.status_code == status and \
        response.headers.get("Content-Type", "").startswith("application/json")
    return Check(expected, describe(response), ok)


# -- raw sockets, for what requests cannot send --------------------------------------------


@dataclass(frozen=True)
class RawResponse:
    status: int | None
    head: str
    body: bytes

    def describe(self) -> str:
        if self.status is None:
            return "connection closed without a response"
        ctype = next((line.split(":", 1)[1].strip().split(";")[0]
                      for line in self.head.split("\r\n")
                      if line.lower().startswith("content-type:")), "-")
        return f"{self.status} {ctype} {self.body[:60]!r}"

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def leaks(self) -> bool:
        return _leaks(self.body.decode(errors="replace"))


def raw_http(port: int, request: bytes, *, body_chunks: Iterable[bytes] = (),
             timeout_seconds: float = HTTP_TIMEOUT_SECONDS) -> RawResponse:
    """Send bytes as they are; read one response (or see the connection close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_seconds) as sock:
        try:
            sock.sendall(request)
            for chunk in body_chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server may answer and close before taking everything
        data = bytearray()
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                break
            if not chunk:
                break
            data.extend(chunk)
            if _complete(bytes(data)):
                break
    return _parse_raw(bytes(data))


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return False


def _parse_raw(data: bytes) -> RawResponse:
    head, _sep, body = data.partition(b"\r\n\r\n")
    if not data.startswith(b"HTTP/"):
        return RawResponse(None, "", data)
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return RawResponse(None, "", data)
    return RawResponse(status, head.decode("latin-1"), body)


def request_bytes(method: str, path: str, port: int, *, headers: dict[str, str] | None = None,
                  body: bytes = b"", content_length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or content_length is not None:
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def raw_error(response: RawResponse, *statuses: int, allow_closed: bool = False,
              expected: str | None = None) -> Check:
    """A refusal at the socket level: a JSON error (or, where Tornado's HTTP
    layer refuses before any handler runs, a bodyless 4xx or a closed socket).
    Never a 5xx, HTML or a trace."""
    want = expected or (f"{'/'.join(map(str, statuses))} JSON error"
                        + (" or connection closed" if allow_closed else ""))
    if response.status is None:
        return Check(want, response.describe(), allow_closed)
    body = response.json
    is_json = isinstance(body, dict) and isinstance(body.get("error"), str)
    ok = response.status in statuses and not response.leaks and (is_json or allow_closed and
                                                                  not response.body)
    return Check(want, response.describe(), ok)

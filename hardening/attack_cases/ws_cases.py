"""Attacks on the live feed's WebSocket, with a real client (websocket-client)
and hand-built frames for what a well-behaved client would never send."""
from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websocket

from .base import (
    ALLOWED_ORIGIN,
    EVIL_ORIGIN,
    READ,
    WRITE,
    Check,
    Target,
    all_of,
    assemble,
    case,
    claims,
)

G = "websocket"
AUTH_TIMEOUT_SECONDS = 5.0
MAX_MESSAGE_BYTES = 64 * 1024
OPEN_TIMEOUT_SECONDS = 10.0


@dataclass
class Session:
    """What a client saw: messages, then how (and when) the socket ended."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    ended: str = "open"  # open | closed (close frame) | aborted (no close frame)
    seconds: float = 0.0

    def describe(self) -> str:
        kinds = [m.get("type", "?") for m in self.messages]
        end = {"open": "still open", "aborted": "connection dropped",
               "closed": f"closed {self.close_code} {self.close_reason!r}"}[self.ended]
        got = f"got {','.join(kinds[:4])}{'…' if len(kinds) > 4 else ''}" if kinds else \
            "no data"
        return f"{end} after {self.seconds:.1f} s, {got}"


def connect(t: Target, *, token: str | None = None, origin: str | None = None,
            query: str = "", monitor: Any = None) -> websocket.WebSocket:
    header = [f"Authorization: Bearer {token}"] if token is not None else []
    options: dict[str, Any] = {"header": header, "timeout": OPEN_TIMEOUT_SECONDS}
    if origin is None:
        options["suppress_origin"] = True
    else:
        options["origin"] = origin
    return websocket.create_connection(t.ws_url(query, monitor=monitor), **options)


def refused_upgrade(t: Target, status: int, **kwargs: Any) -> Check:
    want = f"HTTP {status} JSON, no upgrade"
    try:
        ws = connect(t, **kwargs)
    except websocket.WebSocketBadStatusException as exc:
        body = exc.resp_body or b""
        try:
            is_json = isinstance(json.loads(body), dict)
        except ValueError:
            is_json = False
        observed = f"HTTP {exc.status_code}{' JSON' if is_json else ''} {body[:60]!r}"
        return Check(want, observed, exc.status_code == status and is_json)
    ws.close()
    return Check(want, "upgraded (101)", False)


def read(ws: websocket.WebSocket, *, seconds: float,
         until: Callable[[dict[str, Any]], bool] | None = None,
         session: Session | None = None) -> Session:
    """Read for up to ``seconds``: until the socket ends, or ``until`` matches."""
    session = session or Session()
    started = time.monotonic()
    deadline = started + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ws.settimeout(remaining)
        try:
            opcode, frame = ws.recv_data_frame(control_frame=True)
        except websocket.WebSocketTimeoutException:
            break
        except (websocket.WebSocketConnectionClosedException, OSError,
                websocket.WebSocketProtocolException):
            session.ended = "aborted"
            break
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data or b""
            session.close_code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
            session.close_reason = data[2:].decode(errors="replace")
            session.ended = "closed"
            break
        if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
            try:
                message = json.loads(frame.data if isinstance(frame.data, (bytes, str))
                                     else frame)
            except ValueError:
                message = {"type": "<non-JSON frame>"}
            session.messages.append(message)
            if until is not None and until(message):
                break
    session.seconds = time.monotonic() - started
    return session


def send(ws: websocket.WebSocket, message: Any, opcode: int = websocket.ABNF.OPCODE_TEXT) -> bool:
    """Send, tolerating a socket the server already closed."""
    data = message if isinstance(message, (str, bytes)) else json.dumps(message)
    try:
        ws.send(data, opcode=opcode)
    except (websocket.WebSocketConnectionClosedException, OSError):
        return False
    return True


def first_of(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("type") == kind


def authed(t: Target, **kwargs: Any) -> websocket.WebSocket:
    """A socket past authentication (its first snapshot consumed)."""
    ws = connect(t, token=t.local_token(READ), **kwargs)
    session = read(ws, seconds=15, until=first_of("snapshot"))
    if not session.messages or session.messages[-1].get("type") != "snapshot":
        ws.close()
        raise AssertionError(f"no snapshot on a valid socket: {session.describe()}")
    return ws


def closed_with(session: Session, code: int, *, no_data: bool = True,
                expected: str | None = None, within: float | None = None) -> Check:
    want = expected or f"closed {code}{', no data' if no_data else ''}"
    ok = session.ended == "closed" and session.close_code == code and \
        (not no_data or not session.messages) and (within is None or session.seconds <= within)
    return Check(want, session.describe(), ok)


def still_answers(ws: websocket.WebSocket) -> Session:
    send(ws, {"type": "ping"})
    return read(ws, seconds=10, until=first_of("pong"))


def stays_open_with_errors(ws: websocket.WebSocket, frames: list[tuple[Any, int]]) -> Check:
    """Each frame answered with an ``error`` message; the socket stays usable."""
    errors = 0
    for payload, opcode in frames:
        send(ws, payload, opcode)
        got = read(ws, seconds=10, until=lambda m: m.get("type") in ("error", "pong"))
        if got.ended != "open":
            return Check("an error message per frame, socket stays open",
                         f"after {errors} frames: {got.describe()}", False)
        if got.messages and got.messages[-1].get("type") == "error":
            errors += 1
    pong = still_answers(ws)
    ok = errors == len(frames) and pong.messages and pong.messages[-1]["type"] == "pong"
    return Check("an error message per frame, socket stays open",
                 f"{errors}/{len(frames)} errors, then {pong.describe()}", bool(ok))


# -- controls ----------------------------------------------------------------------------------


@case(G, "control: Bearer header gets a snapshot")
def bearer_control(t: Target) -> Check:
    ws = connect(t, token=t.rs_token(scope=READ))
    session = read(ws, seconds=15, until=first_of("snapshot"))
    ws.close()
    return Check("snapshot first", session.describe(),
                 bool(session.messages) and session.messages[0].get("type") == "snapshot")


@case(G, "control: auth message gets a snapshot")
def auth_message_control(t: Target) -> Check:
    ws = connect(t)
    send(ws, {"type": "auth", "token": t.local_token(READ)})
    session = read(ws, seconds=15, until=first_of("snapshot"))
    ws.close()
    return Check("snapshot first", session.describe(),
                 bool(session.messages) and session.messages[0].get("type") == "snapshot")


# -- authentication --------------------------------------------------------------------------


@case(G, "no token: closed 4001 at the 5 s auth timeout, no data", slow=True)
def no_token(t: Target) -> Check:
    ws = connect(t)
    session = read(ws, seconds=AUTH_TIMEOUT_SECONDS + 5)
    ws.close()
    ok = session.ended == "closed" and session.close_code == 4001 and not session.messages \
        and AUTH_TIMEOUT_SECONDS - 1 <= session.seconds <= AUTH_TIMEOUT_SECONDS + 3
    return Check("closed 4001 after ~5 s, no data", session.describe(), ok)


@case(G, "valid token in the URL query is ignored (closed 4001, no data)", slow=True)
def token_in_url(t: Target) -> Check:
    token = t.rs_token(scope=READ)
    ws = connect(t, query=f"?token={token}&access_token={token}&jwt={token}&resume=1")
    session = read(ws, seconds=AUTH_TIMEOUT_SECONDS + 5)
    ws.close()
    return closed_with(session, 4001)


@case(G, "auth message with bad tokens (garbage, alg none, expired, wrong aud, confusion)")
def auth_message_bad_tokens(t: Target) -> Check:
    now = int(time.time())
    bad = ["garbage", assemble({"alg": "none"}, claims()), t.rs_token(exp=now - 10),
           t.rs_token(aud="other"), t.rs_token(key=t.other_key), t.hs_token(), "", 42, None,
           "x" * 9000]
    checks = []
    for token in bad:
        ws = connect(t)
        send(ws, {"type": "auth", "token": token})
        session = read(ws, seconds=10)
        ws.close()
        checks.append(closed_with(session, 4001, within=5))
    return all_of(*checks)


@case(G, "bad Bearer header on the upgrade: HTTP 401, no upgrade")
def bad_bearer_header(t: Target) -> Check:
    return all_of(refused_upgrade(t, 401, token="garbage"),
                  refused_upgrade(t, 401, token=t.rs_token(exp=int(time.time()) - 10)),
                  refused_upgrade(t, 401, token=t.rs_token(iss="https://evil.example")))


@case(G, "token without monitoring:read: HTTP 403 (header) / close 4003 (message)")
def no_read_scope(t: Target) -> Check:
    ws = connect(t)
    send(ws, {"type": "auth", "token": t.rs_token(scope=WRITE)})
    session = read(ws, seconds=10)
    ws.close()
    return all_of(refused_upgrade(t, 403, token=t.rs_token(scope=WRITE)),
                  closed_with(session, 4003))


@case(G, "auth message too late (after 5.5 s): already closed 4001, no snapshot")
def auth_too_late(t: Target) -> Check:
    ws = connect(t)
    time.sleep(AUTH_TIMEOUT_SECONDS + 0.5)
    send(ws, {"type": "auth", "token": t.local_token(READ)})
    session = read(ws, seconds=5)
    ws.close()
    return closed_with(session, 4001)


@case(G, "messages other than auth before authenticating: closed 4001, nothing answered")
def messages_before_auth(t: Target) -> Check:
    checks = []
    for payload, opcode in [({"type": "ping"}, 1), ({"type": "subscribe", "filters": {}}, 1),
                            ({"type": "resume", "seq": 1}, 1), ("{not json", 1), ("[]", 1),
                            ({"type": 7}, 1), (b"\xff\xfe\x00", 2),
                            ({"type": "auth", "token": "x", "filters": 5}, 1),
                            ({"type": "auth", "token": "x", "resume": "x"}, 1),
                            ("[" * 20000 + "]" * 20000, 1)]:
        ws = connect(t)
        send(ws, payload, opcode)
        session = read(ws, seconds=10)
        ws.close()
        checks.append(closed_with(session, 4001, within=5))
    return all_of(*checks)


# -- origin ----------------------------------------------------------------------------------


@case(G, "cross-origin upgrade refused (evil, null, look-alike hosts), with or without a token")
def cross_origin(t: Target) -> Check:
    port = t.rsa.port
    token = t.rs_token(scope=READ)
    origins = [EVIL_ORIGIN, "null", f"http://127.0.0.1:{port}.evil.example",
               f"http://127.0.0.1:{port}@evil.example", "http://dashboard.example.evil.example",
               f"http://127.0.0.1:{port + 1}"]
    return all_of(*[refused_upgrade(t, 403, token=token, origin=o) for o in origins],
                  refused_upgrade(t, 403, origin=EVIL_ORIGIN),
                  refused_upgrade(t, 403, token="garbage", origin=EVIL_ORIGIN))


@case(G, "control: same origin and the configured allowed origin are accepted")
def allowed_origins(t: Target) -> Check:
    checks = []
    for origin in (t.origin(), ALLOWED_ORIGIN):
        ws = connect(t, token=t.rs_token(scope=READ), origin=origin)
        session = read(ws, seconds=15, until=first_of("snapshot"))
        ws.close()
        checks.append(Check("snapshot", f"{origin}: {session.describe()}",
                            bool(session.messages) and session.messages[0]["type"] == "snapshot"))
    return all_of(*checks)


# -- expiry ------------------------------------------------------------------------------------


def _expiring_session(ws: websocket.WebSocket, ttl: float) -> Check:
    session = read(ws, seconds=ttl + 8)
    ws.close()
    kinds = {m.get("type") for m in session.messages}
    ok = session.ended == "closed" and session.close_code == 4001 and \
        session.close_reason == "token expired" and "snapshot" in kinds and \
        ttl - 1.5 <= session.seconds <= ttl + 3
    return Check(f"data, then closed 4001 'token expired' at ~{ttl:.0f} s", session.describe(),
                 ok)


@case(G, "token expiring mid-session (Bearer header): socket closed 4001", slow=True)
def expiry_header(t: Target) -> Check:
    ttl = 3
    ws = connect(t, token=t.rs_token(scope=READ, exp=int(time.time()) + ttl))
    return _expiring_session(ws, ttl)


@case(G, "token expiring mid-session (auth message): socket closed 4001")
def expiry_message(t: Target) -> Check:
    ttl = 3
    ws = connect(t)
    send(ws, {"type": "auth", "token": t.rs_token(scope=READ, exp=int(time.time()) + ttl)})
    return _expiring_session(ws, ttl)


@case(G, "refresh on a live socket with a bad or expired token: closed 4001")
def bad_refresh(t: Target) -> Check:
    checks = []
    for token in ("garbage", t.rs_token(exp=int(time.time()) - 5), t.rs_token(aud="x")):
        ws = authed(t)
        send(ws, {"type": "auth", "token": token})
        session = read(ws, seconds=10)
        ws.close()
        checks.append(closed_with(session, 4001, no_data=False,
                                  expected="closed 4001 (old token not extended)"))
    return all_of(*checks)


# -- oversized and malformed frames ------------------------------------------------------------


def dropped_for_size(session: Session) -> Check:
    # Tornado sends 1009 and drops the connection at once; with the rest of the
    # frame still unread the kernel answers with a reset, which may overtake
    # the close frame. Either way the message is never buffered or answered.
    # Feed traffic that was already on its way (a periodic snapshot, a task
    # delta) may arrive before the reset; an answer would be a pong or an error.
    answered = [m for m in session.messages if m.get("type") in ("pong", "error")]
    ok = (session.ended == "closed" and session.close_code == 1009) or \
        (session.ended == "aborted" and not answered)
    return Check("closed 1009 (or reset), nothing answered", session.describe(), ok)


@case(G, "oversized frame (64 KiB + 1) before and after auth: closed 1009")
def oversized_frame(t: Target) -> Check:
    checks = []
    for ws in (connect(t), authed(t)):
        send(ws, json.dumps({"type": "ping", "pad": "x" * MAX_MESSAGE_BYTES}))
        session = read(ws, seconds=10)
        ws.close()
        checks.append(dropped_for_size(session))
    return all_of(*checks)


@case(G, "oversized message in continuation frames (3 x 32 KiB): closed 1009")
def oversized_fragments(t: Target) -> Check:
    ws = authed(t)
    chunk = "x" * (32 * 1024)
    try:
        ws.send_frame(websocket.ABNF.create_frame(chunk, websocket.ABNF.OPCODE_TEXT, fin=0))
        ws.send_frame(websocket.ABNF.create_frame(chunk, websocket.ABNF.OPCODE_CONT, fin=0))
        ws.send_frame(websocket.ABNF.create_frame(chunk, websocket.ABNF.OPCODE_CONT, fin=1))
    except (websocket.WebSocketConnectionClosedException, OSError):
        pass
    session = read(ws, seconds=10)
    ws.close()
    return dropped_for_size(session)


@case(G, "malformed text frames after auth (non-JSON, wrong types, deep nesting)")
def malformed_text(t: Target) -> Check:
    ws = authed(t)
    frames: list[tuple[Any, int]] = [(p, 1) for p in [
        "{not json", "", "null", "[]", '"auth"', "42", '{"type": 5}', "{}",
        '{"type": "nope"}', '{"type": "resume", "seq": "x"}', '{"type": "resume"}',
        '{"type": "subscribe", "limit": "9"}', '{"type": "subscribe", "limit": 1e9}',
        '{"type": "subscribe", "limit": true}', '{"type": ["auth"]}',
        '{"type": "auth", "token": 5}', '{"type": "auth"}',
        "[" * 30000 + "]" * 30000, '{"a":' * 10000 + "1" + "}" * 10000,
    ]]
    result = stays_open_with_errors(ws, frames)
    ws.close()
    return result


@case(G, "binary frames after auth (invalid UTF-8, random bytes)")
def binary_frames(t: Target) -> Check:
    ws = authed(t)
    result = stays_open_with_errors(ws, [(b"\xff\xfe\xfd", 2), (os.urandom(256), 2),
                                         (b"\x00" * 100, 2)])
    ws.close()
    return result


@case(G, "subscribe with bad filters: error, subscription unchanged")
def bad_filters(t: Target) -> Check:
    ws = authed(t)
    send(ws, {"type": "subscribe", "filters": {"name": ["automation.add"]}})
    read(ws, seconds=10, until=lambda m: m.get("type") == "snapshot"
         and m.get("filters", {}).get("name") == ["automation.add"])
    bad = [{"state": ["NOPE"]}, {"colour": "red"}, {"name": 5}, {"name": [1, 2]},
           {"name": [f"n{i}" for i in range(60)]}, {"name": "x" * 300},
           {"name": [f"n{i}" for i in range(10)], "queue": [f"q{i}" for i in range(10)]},
           ["state"], "SUCCESS", {"state": {"$ne": None}}]
    result = stays_open_with_errors(ws, [({"type": "subscribe", "filters": f}, 1) for f in bad])
    snapshot = read(ws, seconds=5, until=first_of("snapshot"))
    ws.close()
    filters = snapshot.messages[-1].get("filters") if snapshot.messages else None
    kept = Check("next snapshot still filtered by name=automation.add",
                 f"next snapshot filters: {filters}",
                 isinstance(filters, dict) and filters.get("name") == ["automation.add"])
    return all_of(result, kept)


def _raw_upgrade(t: Target, token: str) -> tuple[socket.socket, bytes]:
    """An upgraded socket and the frame bytes that came with the 101."""
    sock = socket.create_connection(("127.0.0.1", t.rsa.port), timeout=10)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall((f"GET /api/automation/monitoring/ws HTTP/1.1\r\nHost: 127.0.0.1:{t.rsa.port}"
                  f"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise AssertionError(f"no upgrade: {head[:100]!r}")
    return sock, head.split(b"\r\n\r\n", 1)[1]


def _close_code(data: bytes) -> int | None | bool:
    """The code of the first close frame in server frames; True for a close
    without code, False when there is none (yet)."""
    i = 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            length = struct.unpack("!H", data[i:i + 2])[0] if i + 2 <= len(data) else 0
            i += 2
        elif length == 127:
            length = struct.unpack("!Q", data[i:i + 8])[0] if i + 8 <= len(data) else 0
            i += 8
        if opcode == 0x8:
            return struct.unpack("!H", data[i:i + 2])[0] if length >= 2 and \
                i + 2 <= len(data) else True
        i += length
    return False


def _describe_close(code: int | bool | None) -> str:
    return f"closed {code}" if type(code) is int else "closed"


def _ends(sock: socket.socket, data: bytes, seconds: float = 5) -> str:
    """How the server ended a connection after a protocol violation (``data``:
    server frames already read)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return "reset"
        if not chunk:
            return _describe_close(_close_code(data))
        data += chunk
        code = _close_code(data)
        if code is not False:
            return _describe_close(code)
    return "still open"


@case(G, "protocol violations (bad UTF-8, reserved opcode, RSV bits, long ping): dropped")
def protocol_violations(t: Target) -> Check:
    frames = {"invalid UTF-8 text": _masked(0x81, b"\xc3\x28\xa0\xa1"),
              "reserved opcode 0x3": _masked(0x83, b"abc"),
              "RSV1 without extension": _masked(0xC1, b"{}"),
              "ping over 125 bytes": bytes([0x89, 0xFE, 0, 200]) + MASK + b"\0" * 200}
    observed, ok = [], True
    for name, frame in frames.items():
        sock, data = _raw_upgrade(t, t.local_token(READ))
        sock.sendall(frame)
        end = _ends(sock, data)
        sock.close()
        observed.append(f"{name}: {end}")
        ok = ok and end != "still open"
    return Check("connection closed or reset for each", "; ".join(observed), ok)


@case(G, "unmasked client frame: closed, or read like a masked one (never a hang)")
def unmasked_frame(t: Target) -> Check:
    # RFC 6455 says a server must close on an unmasked client frame; Tornado
    # reads it anyway. Masking protects proxies from browser-made frames, and
    # browsers always mask, so this is recorded rather than patched.
    sock, data = _raw_upgrade(t, t.local_token(READ))
    payload = b'{"type":"ping"}'
    sock.sendall(bytes([0x81, len(payload)]) + payload)
    sock.settimeout(5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and b'"pong"' not in data:
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    sock.close()
    end = "answered pong (Tornado does not enforce masking)" if b'"pong"' in data else \
        ("closed" if _close_code(data) is not False or not data else "no answer")
    return Check("closed, or answered like a masked frame", end, end != "no answer")


MASK = b"\x01\x02\x03\x04"


def _masked(first: int, payload: bytes) -> bytes:
    return bytes([first, 0x80 | len(payload)]) + MASK + bytes(
        b ^ MASK[i % 4] for i, b in enumerate(payload))


@case(G, "resume values (huge, negative, non-numeric) in the URL and in messages")
def bad_resume(t: Target) -> Check:
    checks = []
    for query in ("?resume=" + "9" * 5000, "?resume=-5", "?resume=abc", "?resume=1e9",
                  "?resume=&resume=7"):
        ws = connect(t, token=t.local_token(READ), query=query)
        session = read(ws, seconds=10, until=lambda m: m.get("type") in ("snapshot", "tasks"))
        ws.close()
        checks.append(Check("served (snapshot or replay)", f"{query[:20]}: {session.describe()}",
                            session.ended == "open" and bool(session.messages)))
    ws = authed(t)
    result = stays_open_with_errors(ws, [({"type": "resume", "seq": s}, 1)
                                         for s in ("1", None, 1.5, [1], True)])
    for seq in (10**40, -(10**40), 0):
        send(ws, {"type": "resume", "seq": seq})
    after = still_answers(ws)
    ws.close()
    checks.append(result)
    checks.append(Check("still answers after out-of-range seqs", after.describe(),
                        after.ended == "open" and after.messages[-1:] != [] and
                        after.messages[-1]["type"] == "pong"))
    return all_of(*checks)


@case(G, "a client flooding 3000 messages does not stall another client")
def flood(t: Target) -> Check:
    import threading

    flooder = authed(t)
    observer = authed(t)
    lags: list[float] = []
    stop = threading.Event()

    def observe() -> None:
        while not stop.is_set():
            started = time.monotonic()
            send(observer, {"type": "ping"})
            got = read(observer, seconds=10, until=first_of("pong"))
            lags.append(time.monotonic() - started if got.messages and
                        got.messages[-1]["type"] == "pong" else 10.0)
            time.sleep(0.05)

    watcher = threading.Thread(target=observe)
    watcher.start()
    sent = 0
    try:
        for i in range(3000):
            message = {"type": "subscribe", "filters": {"state": ["SUCCESS"] if i % 2 else []}} \
                if i % 3 else {"type": "ping"}
            if not send(flooder, message):
                break
            sent += 1
    finally:
        time.sleep(1)
        stop.set()
        watcher.join(20)
    end = read(flooder, seconds=2)
    flooder.close()
    observer.close()
    worst = max(lags) if lags else 10.0
    return Check("the other client's ping answered within 2 s throughout",
                 f"flooder sent {sent} ({end.describe().split(',')[0]}); other client: "
                 f"{len(lags)} pings, worst {worst:.2f} s", worst < 2.0 and len(lags) > 3)

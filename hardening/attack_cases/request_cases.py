"""Oversized and malformed HTTP requests: every answer a JSON 4xx (or, where
Tornado's HTTP layer refuses before any handler runs, a bodyless 4xx or a
closed connection) — never a 5xx, HTML or a stack trace."""
from __future__ import annotations

import json
from urllib.parse import quote

from .base import (
    API,
    READ,
    WRITE,
    Check,
    Target,
    all_of,
    bearer,
    case,
    describe,
    http,
    json_error,
    raw_error,
    raw_http,
    request_bytes,
)

G = "requests"
UNKNOWN_TASK = "00000000-0000-4000-8000-000000000000"
MAX_BODY_BYTES = 1024 * 1024


def write_token(t: Target) -> str:
    return t.once("write-token", lambda: t.local_token(f"{READ} {WRITE}"))  # type: ignore[no-any-return]


def post(t: Target, path: str, body: bytes | str, content_type: str = "application/json",
         *, token: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"Content-Type": content_type, **bearer(token or write_token(t))}
    return http("POST", t.api(path), data=body, headers=headers)


def get(t: Target, path: str):  # type: ignore[no-untyped-def]
    return http("GET", t.api(path), headers=bearer(t.local_token(READ)))


@case(G, "JSON body over 1 MiB to retry, bulk and /token: 413 JSON")
def huge_body(t: Target) -> Check:
    big = json.dumps({"force": False, "pad": "x" * (MAX_BODY_BYTES + 10)})
    ids = json.dumps({"ids": [f"{i:036d}" for i in range(40_000)]})
    return all_of(json_error(post(t, f"/tasks/{UNKNOWN_TASK}/retry", big), 413),
                  json_error(post(t, "/tasks/bulk/cancel", ids), 413),
                  json_error(http("POST", t.api("/token"), data=big, auth=t.rsa.basic_auth,
                                  headers={"Content-Type": "application/json"}), 413))


@case(G, "200 MB Content-Length (unauthenticated): refused before the body is read")
def enormous_content_length(t: Target) -> Check:
    request = request_bytes("POST", f"{API}/tasks/{UNKNOWN_TASK}/cancel", t.rsa.port,
                            headers={"Content-Type": "application/json"},
                            content_length=200 * 1024 * 1024)
    response = raw_http(t.rsa.port, request, body_chunks=[b"{" + b" " * 65536] * 4,
                        timeout_seconds=20)
    return raw_error(response, 400, 401, 413, allow_closed=True,
                     expected="4xx or connection closed, never 5xx")


@case(G, "2 MiB chunked body (no Content-Length): 413 JSON")
def chunked_body(t: Target) -> Check:
    chunk = b"x" * 65536
    chunks = [b"%x\r\n" % len(chunk) + chunk + b"\r\n"] * 32 + [b"0\r\n\r\n"]
    head = request_bytes("POST", f"{API}/tasks/{UNKNOWN_TASK}/retry", t.rsa.port, headers={
        "Content-Type": "application/json", "Transfer-Encoding": "chunked",
        **bearer(write_token(t))})
    return raw_error(raw_http(t.rsa.port, head, body_chunks=chunks), 413)


@case(G, "invalid JSON bodies (syntax, trailing data, NaN-free, BOM, invalid UTF-8): 400 JSON")
def invalid_json(t: Target) -> Check:
    bodies = [b"{", b"{'force': true}", b'{"force": true}}', b'{"force": tru}',
              b"\xef\xbb\xbf{}x", b'{"force": "\xff\xfe"}', b"\x00\x01\x02",
              b'{"a": 1e999999}garbage']
    checks = [json_error(post(t, f"/tasks/{UNKNOWN_TASK}/retry", b), 400) for b in bodies]
    checks.append(json_error(http("POST", t.api("/token"), data=b"{", auth=t.rsa.basic_auth),
                             400))
    return all_of(*checks)


@case(G, "JSON that is not an object (array, string, number, null): 400 JSON")
def not_an_object(t: Target) -> Check:
    return all_of(*[json_error(post(t, f"/tasks/{UNKNOWN_TASK}/retry", b), 400)
                    for b in ("[]", '"force"', "1", "null", "true")])


@case(G, "deeply nested JSON (100 000 levels) to retry, bulk and /token: 400 JSON")
def deep_nesting(t: Target) -> Check:
    arrays = "[" * 100_000 + "]" * 100_000
    objects = '{"a":' * 100_000 + "1" + "}" * 100_000
    return all_of(json_error(post(t, f"/tasks/{UNKNOWN_TASK}/retry", arrays), 400),
                  json_error(post(t, f"/tasks/{UNKNOWN_TASK}/retry", objects), 400),
                  json_error(post(t, "/tasks/bulk/cancel", '{"ids": ' + arrays + "}"), 400),
                  json_error(http("POST", t.api("/token"), data=objects,
                                  auth=t.rsa.basic_auth), 400))


@case(G, "wrong content types (form, multipart, text/plain, XML): 400 JSON or ignored body")
def wrong_content_types(t: Target) -> Check:
    path = f"/tasks/{UNKNOWN_TASK}/retry"
    checks = [
        json_error(post(t, path, "force=true", "application/x-www-form-urlencoded"), 400),
        json_error(post(t, path, "--b\r\nContent-Disposition: form-data; name=force\r\n\r\n"
                        "true\r\n--b--\r\n", "multipart/form-data; boundary=b"), 400),
        json_error(post(t, path, "<force>true</force>", "application/xml"), 400),
        # A JSON body is read as JSON whatever the label says: still our own checks
        json_error(post(t, path, '{"force": true}', "text/plain"), 404,
                   expected="404 JSON (body parsed, unknown task)"),
    ]
    return all_of(*checks)


@case(G, "unknown fields and wrong types in action bodies: 400 JSON")
def wrong_fields(t: Target) -> Check:
    path = f"/tasks/{UNKNOWN_TASK}/retry"
    checks = [json_error(post(t, path, json.dumps(b)), 400) for b in (
        {"force": "yes"}, {"force": 1}, {"forse": True}, {"force": None})]
    bulk: tuple[object, ...] = (
        {}, {"ids": "x"}, {"ids": []}, {"ids": [1, 2]}, {"ids": [None]},
        {"ids": [UNKNOWN_TASK], "filters": {}}, {"filters": []},
        {"filters": {"state": {"a": 1}}}, {"filters": {"evil": 1}}, {"filter": {}},
        {"ids": [UNKNOWN_TASK], "limit": 10**20},
        {"ids": [UNKNOWN_TASK], "limit": -1}, {"ids": [UNKNOWN_TASK], "dry_run": "no"},
        {"ids": ["x" * 300]}, {"ids": ["a\x00b"]})
    checks += [json_error(post(t, "/tasks/bulk/cancel", json.dumps(b)), 400) for b in bulk]
    return all_of(*checks)


@case(G, "bulk action lists too long (1001 ids; 50 000 ids): 400 JSON")
def bulk_too_long(t: Target) -> Check:
    return all_of(
        json_error(post(t, "/tasks/bulk/cancel", json.dumps(
            {"ids": [f"id-{i}" for i in range(1001)]})), 400),
        json_error(post(t, "/tasks/bulk/retry", json.dumps(
            {"ids": [f"{i}" for i in range(50_000)], "dry_run": True})), 400))


@case(G, "out-of-range and malformed query values (limit, since, state, order): 400 JSON")
def bad_query_values(t: Target) -> Check:
    queries = ["limit=100000000000000000000000", "limit=-1", "limit=0", "limit=abc",
               "limit=1e3", "limit=%00", "since=nan", "since=inf", "since=-1",
               "since=9999-99-99", "since=2024-01-01&until=2023-01-01", "state=NOPE",
               "state=%3Cscript%3E", "order=sideways", "source=evil", "name=" + "n" * 300,
               "search=a%00b", "cursor=" + "c" * 300]
    return all_of(*[json_error(get(t, f"/tasks?{q}"), 400) for q in queries])


@case(G, "invalid UTF-8 and bad percent-encoding in query and path: 400/404 JSON")
def bad_encoding(t: Target) -> Check:
    return all_of(json_error(get(t, "/tasks?name=%ff%fe"), 400),
                  json_error(get(t, "/tasks?search=%c3%28"), 400),
                  json_error(get(t, "/tasks/%ff%fe"), 400, 404),
                  json_error(get(t, "/tasks/%zz"), 400, 404),
                  json_error(get(t, "/tasks/" + "%2e%2e%2f" * 3 + "etc%2fpasswd"), 400, 404),
                  json_error(get(t, "/tasks/" + quote("a\x00b", safe="")), 400))


@case(G, "huge query strings (3 000 repeated params; 40 KB value; 70 KB URL)")
def huge_query(t: Target) -> Check:
    many = "&".join(["state=SUCCESS"] * 3_000)
    long_value = get(t, "/tasks?search=" + "s" * 40_000)
    huge = raw_http(t.rsa.port, request_bytes("GET", f"{API}/tasks?search={'s' * 70_000}",
                                              t.rsa.port, headers=bearer(t.local_token(READ))))
    repeated = get(t, f"/tasks?{many}&limit=1")
    # Tornado's HTTP layer caps the number of query fields: a bodyless 400
    ok = repeated.status_code in (200, 400) and (not repeated.content or repeated.headers.get(
        "Content-Type", "").startswith("application/json"))
    return all_of(Check("200/400 JSON, or a bodyless 400 from the HTTP layer",
                        f"3 000 params: {describe(repeated)}", ok),
                  json_error(long_value, 400),
                  raw_error(huge, 400, 414, 431, allow_closed=True,
                            expected="4xx or connection closed, never 5xx"))


@case(G, "task ids too long, with NUL, or with only dots: 400/404 JSON")
def bad_task_ids(t: Target) -> Check:
    checks = [json_error(get(t, f"/tasks/{'a' * 300}"), 400),
              json_error(post(t, f"/tasks/{'a' * 300}/cancel", "{}"), 400),
              json_error(post(t, "/tasks/%00/retry", "{}"), 400),
              json_error(get(t, "/tasks/..%2f..%2f"), 400, 404),
              json_error(get(t, "/tasks/%20"), 400, 404)]
    return all_of(*checks)


@case(G, "unsupported methods (PUT, DELETE, PATCH, TRACE, PROPFIND): 405 JSON")
def bad_methods(t: Target) -> Check:
    checks = []
    for method in ("PUT", "DELETE", "PATCH", "TRACE", "PROPFIND"):
        response = raw_http(t.rsa.port, request_bytes(
            method, f"{API}/tasks/{UNKNOWN_TASK}/cancel", t.rsa.port,
            headers=bearer(write_token(t))))
        checks.append(raw_error(response, 405, 401))
    checks.append(json_error(http("PUT", t.api("/stats"), headers=bearer(t.local_token(READ))),
                             405, 403))
    return all_of(*checks)


@case(G, "malformed HTTP (bad request line, header without colon, bad Content-Length)")
def malformed_http(t: Target) -> Check:
    port = t.rsa.port
    raw = [
        b"GARBAGE\r\n\r\n",
        f"GET {API}/stats HTTP/1.1\r\nHost: x\r\nBroken header line\r\n\r\n".encode(),
        f"POST {API}/token HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".encode(),
        f"POST {API}/token HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".encode(),
        f"POST {API}/token HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        f"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode(),
        f"GET {API}/stats HTTP/9.9\r\nHost: x\r\n\r\n".encode(),
    ]
    return all_of(*[raw_error(raw_http(port, r), 400, 401, 405, allow_closed=True,
                              expected="4xx or connection closed, never 5xx")
                    for r in raw])


BIG_BODY_BYTES = 95 * 1024 * 1024
BUFFER_ALLOWANCE_KB = 40 * 1024


def _peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def _big_posts(t: Target, paths: dict[str, str], headers: dict[str, str] | None = None
               ) -> tuple[list[str], int]:
    """POST a 95 MB body to each path at once; (what came back, peak RSS growth in KB)."""
    from concurrent.futures import ThreadPoolExecutor

    chunk = b" " * (1 << 20)
    chunks = BIG_BODY_BYTES // len(chunk)

    def one(label: str) -> str:
        path = paths[label]
        request = request_bytes("POST", path, t.rsa.port, content_length=BIG_BODY_BYTES,
                                headers={"Content-Type": "application/json", **(headers or {})})
        response = raw_http(t.rsa.port, request, body_chunks=[chunk] * chunks,
                            timeout_seconds=60)
        return f"{label} {response.status or 'reset'}"

    before = _peak_rss_kb(t.rsa.pid)
    with ThreadPoolExecutor(len(paths)) as pool:
        seen = list(pool.map(one, list(paths)))
    return seen, _peak_rss_kb(t.rsa.pid) - before


@case(G, "three unauthenticated 95 MB bodies to the API at once: refused, not buffered")
def big_unauthenticated_api(t: Target) -> Check:
    seen, growth_kb = _big_posts(t, {"cancel": f"{API}/tasks/{UNKNOWN_TASK}/cancel",
                                     "bulk": f"{API}/tasks/bulk/retry", "token": f"{API}/token"})
    ok = growth_kb < BUFFER_ALLOWANCE_KB and all(s.endswith(("401", "413", "reset"))
                                                 for s in seen)
    return Check(f"401/413 at once, peak RSS + < {BUFFER_ALLOWANCE_KB // 1024} MB",
                 f"{', '.join(seen)}; peak RSS +{growth_kb // 1024} MB", ok)


@case(G, "three unauthenticated 95 MB bodies to Flower's routes and unknown paths: "
         "refused at FLOWER_OPS_MAX_REQUEST_BYTES, not buffered", slow=True)
def big_unauthenticated_flower(t: Target) -> Check:
    seen, growth_kb = _big_posts(t, {"Flower API": "/api/task/async-apply/automation.add",
                                     "unknown path": "/nope", "/monitoring": "/monitoring"})
    # install() caps every body the server reads (10 MiB by default): Tornado
    # answers a bare 400 and closes before buffering it, whoever's route it is.
    ok = growth_kb < BUFFER_ALLOWANCE_KB and all(s.endswith(("400", "reset")) for s in seen)
    return Check(f"400 or reset at once, peak RSS + < {BUFFER_ALLOWANCE_KB // 1024} MB",
                 f"{', '.join(seen)}; peak RSS +{growth_kb // 1024} MB", ok)


@case(G, "a task id that is another task's id percent-encoded: GET/cancel act on it, "
         "not on the other")
def percent_encoded_id(t: Target) -> Check:
    # Path arguments are decoded once by Tornado; decoding them again made
    # "Cancel" on such a task (a row in the dashboard) cancel the task whose
    # id it spells: a confused deputy.
    import time
    import uuid

    from testing.apps import automation

    token = write_token(t)
    victim = automation.sleep.apply_async(args=[30], task_id=f"victim-{uuid.uuid4().hex[:12]}")
    decoy_id = "".join(f"%{ord(c):02X}" for c in victim.id)
    decoy = automation.echo.apply_async(args=["decoy"], task_id=decoy_id)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = {key: get(t, f"/tasks/{quote(task_id, safe='')}").json().get("state")
                      for key, task_id in (("victim", victim.id), ("decoy", decoy.id))}
            if states == {"victim": "STARTED", "decoy": "SUCCESS"}:
                break
            time.sleep(0.3)
        shown = get(t, f"/tasks/{quote(decoy_id, safe='')}").json().get("id")
        cancel = post(t, f"/tasks/{quote(decoy_id, safe='')}/cancel", "{}", token=token)
        victim_state = get(t, f"/tasks/{quote(victim.id, safe='')}").json().get("state")
    finally:
        post(t, f"/tasks/{quote(victim.id, safe='')}/cancel", "{}", token=token)
    ok = shown == decoy_id and cancel.status_code == 409 and victim_state == "STARTED"
    return Check("GET shows the decoy; cancel 409 (decoy finished); victim still STARTED",
                 f"GET id={'decoy' if shown == decoy_id else shown}; cancel {describe(cancel)}; "
                 f"victim {victim_state}", ok)


@case(G, "path traversal out of the dashboard's static directory: 403/404, no file")
def static_traversal(t: Target) -> Check:
    checks = []
    for path in ("/monitoring/static/..%2fdashboard.py", "/monitoring/static/%2e%2e/config.py",
                 "/monitoring/static/../../flower_ops/config.py",
                 "/monitoring/static/....//....//etc/passwd",
                 "/monitoring/static/%2fetc%2fpasswd", "/monitoring/static//etc/passwd"):
        response = raw_http(t.rsa.port, request_bytes("GET", path, t.rsa.port))
        body = response.body.decode(errors="replace")
        leaked = "import " in body or "root:" in body
        checks.append(Check("403/404 (or 400), no file content", f"{path}: {response.status}",
                            response.status in (400, 403, 404) and not leaked))
    served = http("GET", f"{t.rsa.base_url}/monitoring/static/monitoring.js")
    checks.append(Check("control: monitoring.js served as JavaScript with nosniff",
                        f"{served.status_code} {served.headers.get('Content-Type')} "
                        f"nosniff={served.headers.get('X-Content-Type-Options')}",
                        served.status_code == 200 and "javascript" in served.headers.get(
                            "Content-Type", "") and served.headers.get(
                            "X-Content-Type-Options") == "nosniff"))
    return all_of(*checks)

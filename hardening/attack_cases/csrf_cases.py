"""Cross-site request forgery: what a page on another site can make a logged-in
browser send. Browsers attach cached basic-auth credentials and cookies to
such requests, and mark them with ``Origin`` and ``Sec-Fetch-Site``."""
from __future__ import annotations

from .base import EVIL_ORIGIN, READ, Check, Target, all_of, bearer, case, http, json_error, json_ok

G = "csrf"
UNKNOWN_TASK = "00000000-0000-4000-8000-000000000000"
FORM = "application/x-www-form-urlencoded"


def token_request(t: Target, headers: dict[str, str], *, data: object = None,
                  auth: bool = True):  # type: ignore[no-untyped-def]
    kwargs: dict[str, object] = {"headers": headers}
    if data is None:
        kwargs["json"] = {}
    else:
        kwargs["data"] = data
    if auth:
        kwargs["auth"] = t.rsa.basic_auth
    return http("POST", t.api("/token"), **kwargs)


@case(G, "control: POST /token same-origin / non-browser with credentials: 200")
def token_same_origin(t: Target) -> Check:
    return all_of(
        json_ok(token_request(t, {"Origin": t.origin(), "Sec-Fetch-Site": "same-origin"})),
        json_ok(token_request(t, {})))


@case(G, "POST /token cross-site (Origin of another site) with valid credentials: 403")
def token_cross_origin(t: Target) -> Check:
    checks = [json_error(token_request(t, {"Origin": origin}), 403)
              for origin in (EVIL_ORIGIN, "null", f"http://127.0.0.1:{t.rsa.port}.evil.example",
                             f"http://127.0.0.1:{t.rsa.port + 1}")]
    return all_of(*checks)


@case(G, "POST /token with Sec-Fetch-Site cross-site / same-site: 403")
def token_fetch_site(t: Target) -> Check:
    return all_of(json_error(token_request(t, {"Sec-Fetch-Site": "cross-site"}), 403),
                  json_error(token_request(t, {"Sec-Fetch-Site": "same-site"}), 403),
                  json_error(token_request(t, {"Sec-Fetch-Site": "cross-site",
                                               "Origin": t.origin()}), 403))


@case(G, "cross-site HTML form POST to /token (form-encoded, text/plain): refused")
def token_form_post(t: Target) -> Check:
    headers = {"Origin": EVIL_ORIGIN, "Sec-Fetch-Site": "cross-site", "Content-Type": FORM}
    plain = {"Origin": EVIL_ORIGIN, "Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"}
    return all_of(json_error(token_request(t, headers, data="scopes=monitoring%3Awrite"), 403),
                  json_error(token_request(t, plain, data='{"scopes":"monitoring:write"}'), 403))


@case(G, "POST /token without or with wrong credentials: 401 with a Basic challenge")
def token_credentials(t: Target) -> Check:
    checks = []
    for response in (token_request(t, {}, auth=False),
                     http("POST", t.api("/token"), json={}, auth=("admin", "wrong")),
                     http("POST", t.api("/token"), json={}, auth=("admin", "admin123x")),
                     http("POST", t.api("/token"), json={},
                          headers={"Authorization": "Basic !!!notbase64"}),
                     http("POST", t.api("/token"), json={},
                          headers={"Authorization": "Basic " + "QUFB" * 10000})):
        check = json_error(response, 401)
        challenge = response.headers.get("WWW-Authenticate", "")
        checks.append(Check(check.expected + " + Basic challenge",
                            f"{check.observed} challenge={challenge!r}",
                            check.ok and challenge.startswith("Basic")))
    return all_of(*checks)


@case(G, "GET /token (no side effect via a link or image): 405 JSON")
def token_get(t: Target) -> Check:
    return json_error(http("GET", t.api("/token"), auth=t.rsa.basic_auth), 405)


@case(G, "cross-site form POST to cancel/retry/bulk with basic-auth creds, no bearer: 401")
def actions_form_post(t: Target) -> Check:
    headers = {"Origin": EVIL_ORIGIN, "Sec-Fetch-Site": "cross-site", "Content-Type": FORM}
    checks = [json_error(http("POST", t.api(path), headers=headers, data=body,
                              auth=t.rsa.basic_auth), 401)
              for path, body in ((f"/tasks/{UNKNOWN_TASK}/cancel", ""),
                                 (f"/tasks/{UNKNOWN_TASK}/retry", "force=true"),
                                 ("/tasks/bulk/cancel", f"ids={UNKNOWN_TASK}"))]
    return all_of(*checks)


@case(G, "cookies alone never authenticate the API (token/access_token/user cookies)")
def cookies_alone(t: Target) -> Check:
    token = t.local_token()
    cookies = {"token": token, "access_token": token, "jwt": token, "Authorization": token,
               "user": "admin", "_xsrf": "x"}
    return all_of(json_error(http("GET", t.api("/stats"), cookies=cookies), 401),
                  json_error(http("POST", t.api(f"/tasks/{UNKNOWN_TASK}/cancel"),
                                  cookies=cookies, headers={"Origin": EVIL_ORIGIN}), 401))


@case(G, "the token endpoint sets no cookie (nothing for a forged request to ride on)")
def token_sets_no_cookie(t: Target) -> Check:
    response = token_request(t, {})
    cookie = response.headers.get("Set-Cookie")
    return Check("200, no Set-Cookie", f"{response.status_code}, Set-Cookie={cookie!r}",
                 response.status_code == 200 and cookie is None)


@case(G, "CORS: a foreign origin gets no Access-Control-Allow-* on API, token or preflight")
def no_cors(t: Target) -> Check:
    token = t.local_token(READ)
    responses = {
        "GET /stats": http("GET", t.api("/stats"), headers={**bearer(token),
                                                           "Origin": EVIL_ORIGIN}),
        "POST /token": token_request(t, {"Origin": EVIL_ORIGIN}),
        "OPTIONS cancel": http("OPTIONS", t.api(f"/tasks/{UNKNOWN_TASK}/cancel"), headers={
            "Origin": EVIL_ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"}),
        "OPTIONS /token": http("OPTIONS", t.api("/token"), headers={
            "Origin": EVIL_ORIGIN, "Access-Control-Request-Method": "POST"}),
    }
    leaks = {name: {k: v for k, v in r.headers.items() if k.lower().startswith("access-control")}
             for name, r in responses.items()}
    leaks = {k: v for k, v in leaks.items() if v}
    statuses = ", ".join(f"{name} {r.status_code}" for name, r in responses.items())
    return Check("no Access-Control-Allow-* header", f"{statuses}; CORS headers: {leaks or 'none'}",
                 not leaks)


@case(G, "bearer-authenticated action with a forged Origin still needs the bearer (control)")
def bearer_needed(t: Target) -> Check:
    response = http("POST", t.api(f"/tasks/{UNKNOWN_TASK}/cancel"), json={},
                    headers={**bearer(t.local_token()), "Origin": EVIL_ORIGIN})
    return json_error(response, 404, expected="404 JSON (authorized by the bearer only)")

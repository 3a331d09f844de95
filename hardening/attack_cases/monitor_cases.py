"""After the attacks: both monitors alive, answering, and with nothing
unhandled in their logs (an exception a client never saw still counts)."""
from __future__ import annotations

import re

from .base import READ, Check, Target, all_of, bearer, case, http

G = "monitor"
# Tornado's "Uncaught exception", our handlers' "Unhandled error", any traceback
UNHANDLED = re.compile(r"Traceback \(most recent call last\)|Uncaught exception|Unhandled error"
                       r"|Exception in callback|Task exception was never retrieved")


@case(G, "both monitors still alive and answering")
def alive(t: Target) -> Check:
    checks = []
    for name, monitor, token in (("rsa", t.rsa, t.local_token(READ)),
                                 ("hs", t.hs, t.hs_token(scope=READ))):
        response = http("GET", f"{monitor.api}/stats", headers=bearer(token))
        checks.append(Check("alive, 200", f"{name}: alive={monitor.alive()} "
                            f"{response.status_code}",
                            monitor.alive() and response.status_code == 200))
    return all_of(*checks)


@case(G, "no unhandled exception or traceback in the monitors' logs")
def clean_logs(t: Target) -> Check:
    found = []
    for name, monitor in (("rsa", t.rsa), ("hs", t.hs)):
        lines = monitor.output().splitlines()
        for n, line in enumerate(lines):
            if UNHANDLED.search(line):
                context = " | ".join(lines[n:n + 12])[-300:]
                found.append(f"{name}: {context}")
    return Check("none", found[0] if found else "none", not found)


# A JWT: base64url of '{"' starts with eyJ
TOKEN_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
# The cases that put a token in the URL on purpose (it must be ignored; what a
# client puts in a URL lands in access logs, which is why it is refused there)
DELIBERATE = re.compile(r"[?&](token|access_token|jwt|bearer)=")


@case(G, "no token in the monitors' logs (except ones the attacks put in URLs)")
def no_tokens_logged(t: Target) -> Check:
    found = []
    for name, monitor in (("rsa", t.rsa), ("hs", t.hs)):
        for line in monitor.output().splitlines():
            if TOKEN_RE.search(line) and not DELIBERATE.search(line):
                found.append(f"{name}: {line[:160]}")
    return Check("none", found[0] if found else "none", not found)

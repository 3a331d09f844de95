"""The attack suite: ``./dev suite attacks [--markdown] [--group G] [-k TEXT]``.

Starts a real stack — a Celery worker, a second worker whose hostname is a
script payload, and two ``celery -A testing.apps.automation flower-ops``
monitors with Flower basic auth: one verifying RS256 tokens with a public key,
one HS256 with a shared secret, both enforcing ``JWT_AUDIENCE`` and
``JWT_ISSUER`` — and runs every case in ``hardening/attack_cases`` against it:
JWT, WebSocket, CSRF, script injection (in headless Chromium) and oversized or
malformed requests and frames. Prints one line per case (expected, observed,
and PASS, FAIL, or KNOWN for a weakness found whose fix lies outside the code
this suite may change) and a total; exits 1 on any FAIL. ``--markdown``
prints the table for docs. Each case is described in its module.

``tests/test_attacks.py`` runs the same cases under pytest.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TextIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hardening.attack_cases import CASES, GROUPS, Case, Outcome, Target
from hardening.attack_cases.base import ALLOWED_ORIGIN, AUDIENCE, BASIC_AUTH, ISSUER, SECRET
from hardening.attack_cases.injection import EVIL_HOSTNAME, EVIL_QUEUE

MONITOR_ENV = {
    "FLOWER_OPS_INSPECT_INTERVAL_SECONDS": "2",
    "FLOWER_OPS_QUEUE_REFRESH_SECONDS": "0.5",
    "FLOWER_OPS_WS_SNAPSHOT_SECONDS": "1",
    "FLOWER_OPS_TOKEN_TTL_SECONDS": "300",
    "JWT_AUDIENCE": AUDIENCE,
    "JWT_ISSUER": ISSUER,
    "FLOWER_OPS_WS_ALLOWED_ORIGINS": ALLOWED_ORIGIN,
    "FLOWER_OPS_STUCK_TASK_SECONDS": "1",
}


@contextlib.contextmanager
def attack_stack(broker_url: str) -> Iterator[Target]:
    """Workers and both monitors on ``broker_url`` (a Redis db this run owns)."""
    from testing.apps import automation_app
    from testing.processes import CeleryWorker, Monitor

    app = automation_app(broker_url)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    basic = ":".join(BASIC_AUTH)
    worker = CeleryWorker(broker_url, concurrency=2)
    evil = CeleryWorker(broker_url, concurrency=1, queues=(EVIL_QUEUE,),
                        hostname=EVIL_HOSTNAME)
    # two independent monitors on one broker (their tokens must not cross):
    # each its own group, so neither refuses to start beside the other
    rsa_monitor = Monitor(broker_url, basic_auth=basic, env={
        **MONITOR_ENV, "JWT_PUBLIC_KEY": pem, "JWT_ALGORITHMS": "RS256",
        "FLOWER_OPS_MONITOR_GROUP": "attacks-rsa"})
    hs_monitor = Monitor(broker_url, basic_auth=basic, env={
        **MONITOR_ENV, "JWT_SECRET": SECRET, "JWT_ALGORITHMS": "HS256",
        "FLOWER_OPS_MONITOR_GROUP": "attacks-hs"})
    processes = [worker, evil, rsa_monitor, hs_monitor]
    target = Target(app=app, worker=worker, rsa=rsa_monitor, hs=hs_monitor,
                    private_key=key, other_key=other, evil_worker=evil)
    try:
        for process in processes:
            process.start()
        rsa_monitor.wait_ready(timeout_seconds=60)
        hs_monitor.wait_ready(timeout_seconds=60)
        worker.wait_ready(app, timeout_seconds=60)
        evil.wait_ready(app, timeout_seconds=60)
        yield target
    finally:
        for cleanup in reversed(target.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        for process in processes:
            process.stop()


def select(cases: Iterable[Case], *, groups: Sequence[str] = (),
           keyword: str | None = None) -> list[Case]:
    chosen = [c for c in cases if not groups or c.group in groups]
    if keyword:
        chosen = [c for c in chosen if keyword.lower() in c.id.lower()]
    # In the issue's order; "monitor" (the log check) reads what every other
    # case left behind, so it goes last
    return sorted(chosen, key=lambda c: GROUPS.index(c.group))


def run(target: Target, cases: Sequence[Case], *, out: TextIO | None = None) -> list[Outcome]:
    outcomes = []
    for index, attack in enumerate(cases, 1):
        outcome = attack.run(target)
        outcomes.append(outcome)
        if out is not None:
            out.write(f"[{index:3d}/{len(cases)}] {outcome.result} {attack.id} "
                      f"({outcome.seconds:.1f} s)\n")
            out.flush()
    return outcomes


def table(outcomes: Sequence[Outcome]) -> str:
    rows = [("group", "case", "expected", "observed", "result")]
    rows += [(o.group, o.case, o.expected, o.observed, o.result) for o in outcomes]
    widths = [min(max(len(r[i]) for r in rows), cap) for i, cap in
              enumerate((10, 70, 48, 70, 6))]
    lines = []
    for n, row in enumerate(rows):
        cells = [_clip(cell, widths[i]).ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n" + total_line(outcomes)


def markdown(outcomes: Sequence[Outcome]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| group | case | expected | observed | result |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {o.group} | {cell(o.case)} | {cell(o.expected)} | {cell(o.observed)} | "
              f"{'**FAIL**' if o.failed else o.result} |" for o in outcomes]
    return "\n".join(lines) + "\n\n" + total_line(outcomes)


def total_line(outcomes: Sequence[Outcome]) -> str:
    failed = sum(o.failed for o in outcomes)
    known = [o for o in outcomes if o.known and not o.ok]
    passed = sum(o.ok for o in outcomes)
    total = (f"TOTAL {len(outcomes)} cases: {passed} passed, {failed} failed, "
             f"{len(known)} known issue(s) ({sum(o.seconds for o in outcomes):.0f} s in cases)")
    lines = [total]
    lines += [f"KNOWN {o.group}: {o.case}: {o.known}" for o in known]
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev suite attacks", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--group", action="append", choices=GROUPS, default=[],
                        help="run only this group (repeatable)")
    parser.add_argument("-k", dest="keyword", help="run only cases whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    cases = select(CASES, groups=args.group, keyword=args.keyword)
    if args.list:
        for attack in cases:
            print(attack.id)
        return 0
    if not cases:
        print("no case selected", file=sys.stderr)
        return 2

    from testing.services import start_redis

    service = start_redis()
    db = service.claim_db()
    started = time.monotonic()
    try:
        service.client(db).flushdb()
        print(f"==> starting the stack (Redis {service.kind} db {db})", file=sys.stderr)
        with attack_stack(service.url(db)) as target:
            print(f"==> {len(cases)} cases", file=sys.stderr)
            outcomes = run(target, cases, out=sys.stderr)
            if any(o.failed for o in outcomes):
                for process in (target.rsa, target.hs, target.worker, target.evil_worker):
                    if process is not None:
                        print(f"log: {process.log}", file=sys.stderr)
    finally:
        service.client(db).flushdb()
        service.release_db(db)
        if service.embedded is not None:
            service.embedded.cleanup()
    print(markdown(outcomes) if args.markdown else table(outcomes))
    print(f"(wall time {time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 1 if any(o.failed for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())

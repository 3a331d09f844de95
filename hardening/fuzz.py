"""API fuzzing: schemathesis against the OpenAPI document of a real stack.

``./dev suite fuzz [--max-examples N] [--seed S] [--operation TEXT]`` starts a
real stack (a Celery worker, ``celery -A testing.apps.automation flower-ops``
with ``DATABASE_URL`` and ``JWT_SECRET``, the sync worker), seeds tasks in
every state (some only PostgreSQL still knows: the monitor is restarted after
they are written), loads ``/api/automation/monitoring/openapi.json`` and
fuzzes every operation in it three ways:

* **read+write token** — schemathesis' coverage phase (boundary values,
  missing and malformed parameters, undocumented methods) and its fuzzing
  phase (positive and negative data); half the positive cases use the id of
  a real task, so the 200/409 paths of detail, cancel and retry run too.
  Never 401/403.
* **read-only token** — GETs never 401/403; every write operation 403.
* **invalid credentials** — none, garbage, another scheme, expired, wrong
  key, ``alg: none``, tampered, no ``exp``, wrong ``aud``/``iss``, an algorithm
  outside the allow-list: 401 on every protected route, whatever else the
  request carries. (This replaces schemathesis' ``ignored_auth`` check, which
  only tries "no token" and one invalid token.)

Every response goes through schemathesis' checks: ``not_a_server_error``,
``status_code_conformance``, ``content_type_conformance``,
``response_schema_conformance``, ``response_headers_conformance``,
``negative_data_rejection``, ``unsupported_method``, ``allow_header_conformance``
and ``missing_required_header``. (``positive_data_acceptance`` is left out:
schema-valid requests can rightly be refused here — an opaque ``cursor`` that
no listing returned, ``since`` after ``until``, a time string that is not
ISO 8601.) After the last operation the stack must still work: every process
alive, and a new task reaching SUCCESS in the API and in PostgreSQL. It prints
a table per operation (cases run, statuses seen, failures), a total line, and
exits 1 on any failure.

``tests/test_fuzz.py`` runs the same code with a small example count.
Schemathesis' Python API is used directly (``from_url``, ``as_strategy``,
``Case.call``, ``Case.validate_response``); the coverage phase comes from its
``CoverageGenerator``, the class its own runner uses.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import hypothesis
import jwt
import psycopg
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.drivers import CoverageGenerator
from schemathesis.generation.feedback import FeedbackSources
from schemathesis.generation.meta import CoveragePhaseData, CoverageScenario
from schemathesis.generation.overrides import Override
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from flower_ops.core.lifecycle import CANCELLABLE, RETRYABLE
from testing.settings import FAST_MONITOR_REFRESH, FAST_SYNC_WORKER
from testing.stack import Stack
from testing.stack import running_stack as running_harness_stack
from testing.waiting import wait_for

DEFAULT_MAX_EXAMPLES = 1000
JWT_ISSUER = "fuzz-issuer"
JWT_AUDIENCE = "flower-ops-fuzz"
READ = "monitoring:read"
WRITE = "monitoring:write"
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance, negative_data_rejection,
          unsupported_method, allow_header_conformance, missing_required_header)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PUBLIC_BASIC = "/token"   # takes Flower's credentials, not a bearer token
PUBLIC = "/"              # the index: no credentials, any credentials, never a 401/403
REQUEST_TIMEOUT_SECONDS = 30.0


# -- the stack ---------------------------------------------------------------------


def jwt_secret(stack: Stack) -> str:
    """The key the stack's monitor verifies tokens with."""
    return stack.monitor_env["JWT_SECRET"]


@contextlib.contextmanager
def running_stack(*, broker_url: str, database_url: str) -> Iterator[Stack]:
    """A worker, the sync worker and a monitor (with PostgreSQL and a JWT key)
    on ``broker_url`` (a Redis db of its own, flushed here) and ``database_url``."""
    secret = secrets.token_urlsafe(48)   # 64 characters: enough for HS512 too
    monitor_env = {
        **FAST_MONITOR_REFRESH,
        "DATABASE_URL": database_url, "JWT_SECRET": secret, "JWT_ISSUER": JWT_ISSUER,
        "JWT_AUDIENCE": JWT_AUDIENCE, "FLOWER_OPS_QUEUES": "parked",
        # small bulk batches: a fuzzed bulk retry must not flood the worker
        "FLOWER_OPS_BULK_MAX_TASKS": "10",
        # real alerts in /stats and /alerts: sleeping tasks are stuck, "parked" backs up
        "FLOWER_OPS_STUCK_TASK_SECONDS": "3", "FLOWER_OPS_BACKLOG_MESSAGES": "2",
    }
    with running_harness_stack(broker_url=broker_url, database_url=database_url,
                               monitor_env=monitor_env, sync_env=FAST_SYNC_WORKER,
                               concurrency=3) as stack:
        yield stack


# -- tasks in every state ------------------------------------------------------------


class TaskSeeder:
    """Sends tasks that end up in every state, and remembers their ids."""

    RECENT = 40

    def __init__(self, stack: Stack, token: str) -> None:
        self.stack = stack
        self.token = token
        self.ids: list[str] = []
        self.db_only: list[str] = []
        self.front: list[str] = []      # what the current operation can act on

    def pool(self) -> list[str]:
        """Ids the fuzzer puts into requests, taken in turn: the newest first
        (in Flower's memory, still cancellable or retryable), interleaved with
        those only PostgreSQL knows."""
        recent = self.ids[::-1][:self.RECENT]
        mixed = [i for pair in zip(recent, self.db_only) for i in pair]
        shorter = min(len(recent), len(self.db_only))
        rest = mixed + recent[shorter:] + self.db_only[shorter:]
        front = set(self.front)
        return self.front + [i for i in rest if i not in front]

    def focus(self, operation: Any) -> None:
        """Before an action's operation: the tasks it can act on go first in
        ``pool()`` (a cancel's: not finished; a retry's: failed or revoked), so
        its success path is reached whatever the order of earlier cases."""
        path = operation.path
        states = (CANCELLABLE if path.endswith("/cancel") else
                  RETRYABLE if path.endswith("/retry") else frozenset())
        self.front = []
        if not states:
            return
        for task_id in self.ids[::-1][:self.RECENT]:
            response = requests.get(f"{self.stack.api}/tasks/{task_id}", timeout=10,
                                    headers={"Authorization": f"Bearer {self.token}"})
            if response.status_code == 200 and response.json().get("state") in states:
                self.front.append(task_id)

    def seed(self) -> list[str]:
        from testing.apps import automation

        sent = [
            automation.add.delay(2, 3),                                     # SUCCESS
            automation.echo.delay({"zoë": "日本語", "n": [1, 2.5, None]}, k="</script>"),
            automation.fail.delay("fuzz failure"),                           # FAILURE
            automation.flaky.delay(2),                                       # RETRY, then SUCCESS
            automation.sleep.delay(8.0),                                     # STARTED
            # NUL survives JSON but not PostgreSQL's jsonb or text
            automation.fail.delay("nul\x00failure"),
        ]
        ids = [r.id for r in sent] + self.seed_cancellable()
        revoked = self.ids[-1]                                              # REVOKED
        # the retryable ones failed before a retry names them
        for result in (sent[2], sent[5]):
            self._wait_known(result.id, states=("FAILURE",))
        requests.post(f"{self.stack.api}/tasks/{revoked}/cancel", timeout=30,
                      headers={"Authorization": f"Bearer {self.token}"})
        self.ids.extend(r.id for r in sent)
        return ids

    def seed_cancellable(self) -> list[str]:
        """Tasks that stay PENDING or RECEIVED until someone cancels them."""
        from testing.apps import automation

        sent = [
            automation.sleep.apply_async((0.1,), queue="parked"),            # PENDING
            automation.echo.apply_async(("nul\x00here",), {"k\x00": "\x00"}, queue="parked"),
            automation.add.apply_async((1, 1), countdown=3600),              # RECEIVED (eta)
            automation.sleep.apply_async((0.1,), queue="parked"),            # to be REVOKED
        ]
        # Known to the monitor before the fuzzer names them: the newest ids go
        # first, and an id its events have not reached yet is only ever a 404
        for result in sent:
            self._wait_known(result.id)
        self.ids.extend(r.id for r in sent)
        return [r.id for r in sent]

    def seed_db_only(self) -> None:
        """Tasks in PostgreSQL that the (restarted) monitor's memory never saw."""
        ids = self.seed()
        wait_for(lambda: self._rows(ids) >= len(ids), timeout_seconds=60,
                 interval_seconds=0.3, message="seeded rows in PostgreSQL")
        self.stack.restart_monitor()
        self.db_only.extend(ids)
        self.ids = [i for i in self.ids if i not in set(ids)]

    def _rows(self, ids: list[str]) -> int:
        with psycopg.connect(self.stack.require_database_url()) as conn:
            row = conn.execute("SELECT count(*) FROM automation.job_executions "
                               "WHERE execution_id = ANY(%s)", (ids,)).fetchone()
        return int(row[0]) if row else 0

    def _wait_known(self, task_id: str, *, states: tuple[str, ...] = ()) -> None:
        """Until the monitor knows the task (in one of ``states``, if given)."""
        def known() -> bool:
            response = requests.get(f"{self.stack.api}/tasks/{task_id}", timeout=10,
                                    headers={"Authorization": f"Bearer {self.token}"})
            return response.status_code == 200 and (
                not states or response.json().get("state") in states)
        wait_for(known, timeout_seconds=30, interval_seconds=0.2,
                 message=f"task {task_id} {' or '.join(states) or 'known'}")


# -- credentials ---------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """One way of authenticating a request: an ``Authorization`` value or none."""

    name: str
    authorization: str | None
    valid: bool = False
    scopes: frozenset[str] = frozenset()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# Identity providers put what they like in "sub": it lands in the audit table
SUBJECT = "fuzzer \x00 zoë 日本語 '\"</script>"


def _claims(scopes: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": SUBJECT, "scope": scopes, "iat": now, "exp": now + 3600,
            "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, **extra}


def bearer_credentials(secret: str) -> tuple[Credential, Credential, list[Credential]]:
    """(read+write, read-only, invalid ones) for a monitor with ``JWT_SECRET=secret``."""
    both = f"{READ} {WRITE}"

    def signed(claims: dict[str, Any], key: str = secret, alg: str = "HS256") -> str:
        return "Bearer " + jwt.encode(claims, key, algorithm=alg)

    good = jwt.encode(_claims(both), secret, algorithm="HS256")
    head, _, signature = good.split(".")
    forged = dict(_claims(both), sub="admin", scope=f"{both} admin")
    tampered = ".".join([head, _b64(json.dumps(forged).encode()), signature])
    no_exp = _claims(both)
    del no_exp["exp"]
    alg_none = ".".join([_b64(b'{"alg":"none","typ":"JWT"}'),
                         _b64(json.dumps(_claims(both)).encode()), ""])
    invalid = [
        Credential("no token", None),
        Credential("garbage", "Bearer not-a-jwt"),
        Credential("other scheme", _basic("admin", "admin123")),
        Credential("empty bearer", "Bearer "),
        Credential("expired", signed(_claims(both, iat=int(time.time()) - 7200,
                                             exp=int(time.time()) - 3600))),
        Credential("wrong key", signed(_claims(both), key=secrets.token_urlsafe(32))),
        Credential("alg none", f"Bearer {alg_none}"),
        Credential("tampered", f"Bearer {tampered}"),
        Credential("no exp", signed(no_exp)),
        Credential("wrong audience", signed(_claims(both, aud="someone-else"))),
        Credential("wrong issuer", signed(_claims(both, iss="someone-else"))),
        Credential("HS512 not allowed", signed(_claims(both), alg="HS512")),
    ]
    return (Credential("read+write", signed(_claims(both)), True, frozenset({READ, WRITE})),
            Credential("read-only", signed(_claims(READ)), True, frozenset({READ})),
            invalid)


def basic_credentials(user: str, password: str) -> tuple[Credential, list[Credential]]:
    """For ``POST /token``, which takes Flower's own credentials."""
    good = Credential("flower login", _basic(user, password), True, frozenset({READ, WRITE}))
    invalid = [
        Credential("no credentials", None),
        Credential("wrong password", _basic(user, "wrong")),
        Credential("unknown user", _basic("mallory", password)),
        Credential("malformed basic", "Basic !!!not-base64!!!"),
        Credential("bearer instead", "Bearer not-a-jwt"),
    ]
    return good, invalid


# -- the fuzzing ---------------------------------------------------------------------


@dataclass
class Finding:
    operation: str
    credential: str
    kind: str          # schemathesis' failure class, or "AuthorizationExpectation"
    check: str         # its title
    status: int | None
    message: str
    reproduce: str
    count: int = 1


@dataclass
class OperationResult:
    label: str
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_credential: Counter[str] = field(default_factory=Counter)
    findings: dict[tuple[str, str, int | None, str], Finding] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        return sum(f.count for f in self.findings.values())

    def fail(self, *, credential: str, kind: str, check: str, status: int | None,
             message: str, reproduce: str) -> None:
        first_line = message.strip().splitlines()[0] if message.strip() else check
        key = (credential, check, status, first_line)
        found = self.findings.get(key)
        if found is not None:
            found.count += 1
        else:
            self.findings[key] = Finding(self.label, credential, kind, check, status,
                                         message.strip(), reproduce)


@dataclass
class FuzzReport:
    operations: list[OperationResult]
    seconds: float
    documented: list[str]
    # the stack after fuzzing: processes alive, a new task still flows through
    stack_problems: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """Documented operations that were not fuzzed."""
        return sorted(set(self.documented) - {o.label for o in self.operations})

    @property
    def cases(self) -> int:
        return sum(o.cases for o in self.operations)

    @property
    def failures(self) -> int:
        return sum(o.failures for o in self.operations) + len(self.stack_problems)

    @property
    def findings(self) -> list[Finding]:
        return [f for o in self.operations for f in o.findings.values()]


@dataclass(frozen=True)
class Plan:
    """How one operation is fuzzed with one credential, and what it must answer."""

    credential: Credential
    max_examples: int
    coverage: bool
    modes: tuple[GenerationMode, ...]

    def expectation(self, method: str, protected: bool, public: bool = False
                    ) -> Callable[[int], str | None]:
        """A function of the status: None when allowed, else why not."""
        cred = self.credential
        if public:
            return lambda status: f"{status} from a public operation" \
                if status in (401, 403) else None
        if not cred.valid:
            return lambda status: None if status == 401 else f"expected 401 for {cred.name}"
        if protected and method.upper() in WRITE_METHODS and WRITE not in cred.scopes:
            return lambda status: None if status == 403 else "expected 403 without write scope"
        if not protected:   # /token: a scope it cannot grant is a 403, never a 401
            return lambda status: f"{status} for valid Flower credentials" if status == 401 \
                else None
        return lambda status: f"{status} for a valid token with the scope" \
            if status in (401, 403) else None


class Fuzzer:
    """Runs schemathesis cases against a live API and collects the results."""

    def __init__(self, *, schema: Any, base_url: str, bearer: tuple[Credential, Credential,
                 list[Credential]], basic: tuple[Credential, list[Credential]],
                 task_ids: Callable[[], Sequence[str]], max_examples: int, seed: int,
                 refresh: Callable[[Any], None] | None = None, refresh_every: int = 150,
                 progress: TextIO | None = None) -> None:
        self.schema = schema
        self.base_url = base_url
        self.bearer = bearer
        self.basic = basic
        self.task_ids = task_ids
        self.refresh = refresh
        self.refresh_every = refresh_every
        self.max_examples = max_examples
        self.seed = seed
        self.progress = progress
        self.session = requests.Session()
        self._turn = 0

    def operations(self) -> list[Any]:
        found = []
        for result in self.schema.get_all_operations():
            found.append(result.ok())
        return found

    def plans(self, operation: Any) -> list[Plan]:
        n = self.max_examples
        both = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        positive = (GenerationMode.POSITIVE,)
        if operation.path == PUBLIC_BASIC:
            good, invalid = self.basic
            plans = [Plan(good, n, True, both)]
        else:
            full, read_only, invalid = self.bearer
            plans = [Plan(full, n, True, both), Plan(read_only, max(2, n // 4), False, both)]
        per_invalid = max(1, n // (2 * len(invalid)))
        plans.extend(Plan(cred, per_invalid, False, positive) for cred in invalid)
        return plans

    def run(self, operations: Sequence[Any] | None = None,
            before_operation: Callable[[Any], None] | None = None) -> FuzzReport:
        started = time.monotonic()
        documented = [op.label for op in self.operations()]
        results = []
        for operation in operations if operations is not None else self.operations():
            if before_operation is not None:
                before_operation(operation)
            # each operation names real tasks from the newest on (the ones just
            # seeded for it), not from wherever the previous one stopped
            self._turn = 0
            result = OperationResult(operation.label)
            for plan in self.plans(operation):
                self.fuzz(operation, plan, result)
            results.append(result)
            if self.progress is not None:
                print(f"  {operation.label}: {result.cases} cases, {result.failures} failures "
                      f"({time.monotonic() - started:.0f} s)", file=self.progress, flush=True)
        return FuzzReport(results, time.monotonic() - started, documented)

    # -- one operation, one credential ---------------------------------------------

    def fuzz(self, operation: Any, plan: Plan, result: OperationResult) -> None:
        auth = plan.credential.authorization
        override_headers = {"Authorization": auth} if auth is not None else {}
        expect = plan.expectation(operation.method, operation.path != PUBLIC_BASIC,
                                  public=operation.path == PUBLIC)

        def execute(case: Any) -> None:
            self._execute(operation, case, plan, override_headers, expect, result)

        if plan.coverage:
            generator = CoverageGenerator(
                operation=operation, generation_modes=list(plan.modes),
                generation_config=self.schema.config.generation_for(operation=operation,
                                                                    phase="coverage"),
                auth_storage=None, override=Override(headers=dict(override_headers)),
                feedback=FeedbackSources())
            for case in generator:
                execute(case)

        strategy = st.one_of([operation.as_strategy(generation_mode=mode,
                                                    headers=dict(override_headers) or None)
                              for mode in plan.modes])

        @hypothesis.seed(self.seed)
        @hypothesis.settings(max_examples=plan.max_examples, deadline=None, database=None,
                             phases=[Phase.explicit, Phase.generate],
                             suppress_health_check=list(HealthCheck), print_blob=False,
                             verbosity=hypothesis.Verbosity.quiet)
        @hypothesis.given(case=strategy)
        def fuzzed(case: Any) -> None:
            execute(case)

        fuzzed()

    def _execute(self, operation: Any, case: Any, plan: Plan, headers: dict[str, str],
                 expect: Callable[[int], str | None], result: OperationResult) -> None:
        cred = plan.credential
        # The credential goes into the case itself, so schemathesis' own view
        # of the request (its negative/positive bookkeeping) matches what is sent
        case.headers = {k: v for k, v in (case.headers or {}).items()
                        if k.lower() != "authorization"}
        if _drops_authorization(case):
            # schemathesis' coverage case "Authorization missing": sent without it
            cred = Credential(f"{cred.name}, header removed", None)
            expect = Plan(cred, 0, False, ()).expectation(operation.method, True)
        elif cred.authorization is not None:
            case.headers["Authorization"] = cred.authorization
        if cred.valid:
            self._use_real_ids(case)
        try:
            response = case.call(base_url=self.base_url, session=self.session,
                                 timeout=REQUEST_TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            result.cases += 1
            result.fail(credential=cred.name, kind=type(exc).__name__, check="request failed",
                        status=None,
                        message=f"{type(exc).__name__}: {exc}", reproduce=_curl(case))
            return
        result.cases += 1
        if self.refresh is not None and result.cases % self.refresh_every == 0:
            self.refresh(operation)
        result.by_credential[cred.name] += 1
        result.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=list(CHECKS), headers=headers or None,
                                   transport_kwargs={"base_url": self.base_url,
                                                     "session": self.session,
                                                     "timeout": REQUEST_TIMEOUT_SECONDS})
        except FailureGroup as group:
            for failure in group.exceptions:
                result.fail(credential=cred.name, kind=type(failure).__name__,
                            check=failure.title, status=response.status_code,
                            message=failure.message,
                            reproduce=_curl(case))
        problem = expect(response.status_code)
        negative_path = case.meta is not None and case.meta.is_negative_at(ParameterLocation.PATH)
        if problem is not None and not (negative_path and response.status_code == 404):
            result.fail(credential=cred.name, kind="AuthorizationExpectation",
                        check="Wrong status for the credential", status=response.status_code,
                        message=f"{problem}, got {response.status_code}: "
                                f"{response.text[:300]}", reproduce=_curl(case))

    def _use_real_ids(self, case: Any) -> None:
        """Every other positive case that names tasks names real ones, taken
        in turn from ``task_ids()`` (newest first)."""
        meta = case.meta
        if meta is None:
            return
        slots = []
        if case.path_parameters and "task_id" in case.path_parameters \
                and not meta.is_negative_at(ParameterLocation.PATH):
            slots.append("path")
        if case.query and "task_id" in case.query \
                and not meta.is_negative_at(ParameterLocation.QUERY):
            slots.append("query")
        body = case.body
        if isinstance(body, dict) and isinstance(body.get("ids"), list) and body["ids"] \
                and not meta.is_negative_at(ParameterLocation.BODY):
            slots.append("body")
        if not slots:
            return
        self._turn += 1
        ids = list(self.task_ids())
        if not ids or self._turn % 2:
            return
        start = (self._turn // 2 - 1) % len(ids)
        if "path" in slots:
            case.path_parameters["task_id"] = ids[start]
        if "query" in slots:
            case.query["task_id"] = ids[start]
        if "body" in slots:
            body["ids"] = (ids[start:] + ids[:start])[:len(body["ids"])]


def load_schema(api: str) -> Any:
    """The document the monitor serves, as schemathesis reads it."""
    return schemathesis.openapi.from_url(f"{api}/openapi.json", timeout=30)


def _drops_authorization(case: Any) -> bool:
    data = case.meta.phase.data if case.meta is not None else None
    return (isinstance(data, CoveragePhaseData)
            and data.scenario == CoverageScenario.MISSING_PARAMETER
            and data.parameter_location == ParameterLocation.HEADER
            and (data.parameter or "").lower() == "authorization")


def _curl(case: Any) -> str:
    try:
        return str(case.as_curl_command())
    except Exception:  # noqa: BLE001 - a reproduction hint must never hide the finding
        return repr(case)


# -- reporting -----------------------------------------------------------------------


def format_report(report: FuzzReport) -> str:
    rows = [("operation", "cases", "statuses seen", "failures")]
    for op in report.operations:
        statuses = " ".join(f"{s}×{n}" for s, n in sorted(op.statuses.items()))
        rows.append((op.label, str(op.cases), statuses, str(op.failures)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join([row[0].ljust(widths[0]), row[1].rjust(widths[1]),
                                row[2].ljust(widths[2]), row[3].rjust(widths[3])]).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(f"{report.cases} cases, {len(report.operations)} operations, "
                 f"{report.failures} failures ({report.seconds:.0f} s)")
    for problem in report.stack_problems:
        lines.append(f"FAILURE stack after fuzzing: {problem}")
    for finding in report.findings:
        lines.append("")
        lines.append(f"FAILURE {finding.operation} [{finding.credential}] {finding.check} "
                     f"(status {finding.status}, {finding.count}×)")
        lines.append("  " + finding.message.replace("\n", "\n  ")[:2000])
        lines.append(f"  reproduce: {finding.reproduce[:1500]}")
    return "\n".join(lines)


class FuzzSession:
    """A seeded stack, its credentials, and fuzzers over it."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.bearer = bearer_credentials(jwt_secret(stack))
        user, password = stack.monitor.basic_auth or ("admin", "admin123")
        self.basic = basic_credentials(user, password)
        full = self.bearer[0].authorization
        assert full is not None
        self.authorization = full
        self.seeder = TaskSeeder(stack, full.split(" ", 1)[1])
        self.seeder.seed_db_only()
        self.seeder.seed()

    def fuzzer(self, *, max_examples: int, seed: int, schema: Any = None,
               progress: TextIO | None = None) -> Fuzzer:
        """A fuzzer of ``schema`` (default: the document the monitor serves)."""
        seeder = self.seeder

        def refresh(operation: Any) -> None:
            if operation.method.upper() == "POST":
                seeder.seed_cancellable()

        return Fuzzer(schema=schema if schema is not None else load_schema(self.stack.api),
                      base_url=self.stack.api, bearer=self.bearer, basic=self.basic,
                      task_ids=seeder.pool, max_examples=max_examples, seed=seed,
                      refresh=refresh, progress=progress)

    def run(self, *, max_examples: int, seed: int, operation_filter: str | None = None,
            progress: TextIO | None = None) -> FuzzReport:
        """Fuzz every operation (or those whose label contains ``operation_filter``),
        then check that the stack survived."""
        fuzzer = self.fuzzer(max_examples=max_examples, seed=seed, progress=progress)
        operations = [op for op in fuzzer.operations()
                      if operation_filter is None or operation_filter in op.label]

        def top_up(operation: Any) -> None:
            # actions consume tasks (cancel, retry): fresh ones in every state
            # before each operation that names tasks, so the 200 paths stay reachable
            if "{task_id}" in operation.path or operation.path.startswith("/tasks/bulk/"):
                self.seeder.seed()
            self.seeder.focus(operation)

        report = fuzzer.run(operations, before_operation=top_up)
        report.stack_problems = stack_problems(self.stack, self.authorization)
        return report


def fuzz_stack(stack: Stack, *, max_examples: int, seed: int,
               operation_filter: str | None = None, progress: TextIO | None = None) -> FuzzReport:
    """Seed ``stack`` with tasks in every state and fuzz every operation."""
    return FuzzSession(stack).run(max_examples=max_examples, seed=seed,
                                  operation_filter=operation_filter, progress=progress)


def stack_problems(stack: Stack, authorization: str) -> list[str]:
    """What fuzzing broke: a process that died, or a task that no longer
    reaches the API and PostgreSQL (e.g. a sync worker whose writer died)."""
    from testing.apps import automation

    sync, database_url = stack.require_sync(), stack.require_database_url()
    problems = [f"{name} exited:\n{process.output()[-2000:]}"
                for name, process in (("monitor", stack.monitor), ("worker", stack.worker),
                                      ("sync worker", sync)) if not process.alive()]
    if problems:
        return problems
    probe = automation.add.delay(20, 22)
    headers = {"Authorization": authorization}

    def done() -> bool:
        response = requests.get(f"{stack.api}/tasks/{probe.id}", headers=headers, timeout=10)
        if response.status_code != 200 or response.json().get("state") != "SUCCESS":
            return False
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT status FROM automation.job_executions "
                               "WHERE execution_id = %s", (probe.id,)).fetchone()
        return row is not None and row[0] == "success"

    try:
        wait_for(done, timeout_seconds=60, interval_seconds=0.5,
                 message="a new task as SUCCESS in the API and in PostgreSQL")
    except AssertionError as exc:
        problems.append(f"{exc}\nsync worker log:\n{sync.output()[-2000:]}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev suite fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=DEFAULT_MAX_EXAMPLES,
                        help="fuzzing examples per operation with the read+write token "
                             f"(the other credentials get fewer; default {DEFAULT_MAX_EXAMPLES})")
    parser.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: random)")
    parser.add_argument("--operation", default=None,
                        help="only operations whose label contains this text, e.g. 'POST /tasks'")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)

    from testing.services import start_postgres, start_redis

    redis_service = start_redis()
    pg_service = start_postgres()
    db = redis_service.claim_db()
    db_name = pg_service.create_database()
    print(f"fuzz: seed {seed}, max examples {args.max_examples}, redis db {db} "
          f"({redis_service.kind}), database {db_name} ({pg_service.kind})", flush=True)
    try:
        with running_stack(broker_url=redis_service.url(db),
                           database_url=pg_service.url(db_name)) as stack:
            report = fuzz_stack(stack, max_examples=args.max_examples, seed=seed,
                                operation_filter=args.operation, progress=sys.stdout)
    finally:
        pg_service.drop_database(db_name)
        redis_service.release_db(db)
        for service in (redis_service, pg_service):
            if service.embedded is not None:
                service.embedded.cleanup()
    print()
    print(format_report(report))
    if report.missing and args.operation is None:
        print(f"operations not exercised: {', '.join(report.missing)}")
        return 1
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())

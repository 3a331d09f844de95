"""API fuzzing, the fast part: ``hardening/fuzz.py`` (``./dev suite fuzz``)
with a small example count, against a real stack (worker, monitor with
PostgreSQL and a JWT key, sync worker), plus checks that the fuzzer does
report what it must."""
from __future__ import annotations

import copy
import os
import secrets
from collections.abc import Iterator

import pytest
import requests
import schemathesis

from hardening.fuzz import (
    READ,
    Credential,
    FuzzSession,
    OperationResult,
    format_report,
    running_stack,
)
from testing.services import PostgresService, RedisService

pytestmark = pytest.mark.timeout(300)

MAX_EXAMPLES = 25
DEFAULT_SEED = 314566143
INVALID = ("no token", "garbage", "other scheme", "empty bearer", "expired", "wrong key",
           "alg none", "tampered", "no exp", "wrong audience", "wrong issuer",
           "HS512 not allowed")


@pytest.fixture(scope="module")
def session(redis_service: RedisService, redis_db: int,
            pg_service: PostgresService) -> Iterator[FuzzSession]:
    db_name = pg_service.create_database()
    try:
        with running_stack(broker_url=redis_service.url(redis_db),
                           database_url=pg_service.url(db_name)) as stack:
            yield FuzzSession(stack)
    finally:
        pg_service.drop_database(db_name)


def _seed() -> int:
    """A fixed seed, so the test command is repeatable (a red run can be rerun
    as it was); ``FLOWER_OPS_FUZZ_SEED=random`` explores, and so does the long
    suite (``./dev suite fuzz``), which draws a new seed each run."""
    chosen = os.environ.get("FLOWER_OPS_FUZZ_SEED", str(DEFAULT_SEED))
    return secrets.randbelow(2**32) if chosen == "random" else int(chosen)


def test_every_documented_operation_fuzzed_without_a_failure(session: FuzzSession) -> None:
    seed = _seed()
    report = session.run(max_examples=MAX_EXAMPLES, seed=seed)
    table = format_report(report)
    print(f"seed {seed}\n{table}")
    rerun = f"./dev suite fuzz --seed {seed} --max-examples {MAX_EXAMPLES}"

    assert report.failures == 0, f"{table}\n\nreproduce: {rerun}"
    assert report.missing == [], report.missing
    labels = {op.label for op in report.operations}
    assert {"GET /tasks", "GET /tasks/{task_id}", "POST /tasks/{task_id}/cancel",
            "POST /tasks/{task_id}/retry", "POST /tasks/bulk/cancel", "GET /ws",
            "POST /token"} <= labels, labels
    for op in report.operations:
        assert op.cases > 0, op.label
        if op.label == "POST /token":
            credentials = {"flower login", "no credentials", "wrong password"}
        elif op.label == "GET /":   # the public index: every credential, no 401
            credentials = {"read+write", "read-only", *INVALID}
            assert op.statuses[401] == 0 and op.statuses[403] == 0, op.statuses
        else:
            credentials = {"read+write", "read-only", *INVALID}
            assert op.statuses[401] >= len(INVALID), (op.label, op.statuses)
        assert credentials <= set(op.by_credential), (op.label, op.by_credential)
        if op.label != "GET /ws":  # a plain GET of the feed is a 400: no upgrade
            assert any(200 <= s < 300 for s in op.statuses), (op.label, op.statuses)
    # the actions reached a task they could act on, not only 404/409
    actions = {op.label: op for op in report.operations if op.label.startswith("POST /tasks/")}
    assert all(op.statuses[200] for op in actions.values()), \
        {label: dict(op.statuses) for label, op in actions.items()}


def _operation(fuzzer: object, label: str) -> object:
    return next(op for op in fuzzer.operations() if op.label == label)  # type: ignore[attr-defined]


def test_fuzzer_reports_responses_the_document_does_not_describe(session: FuzzSession) -> None:
    document = requests.get(f"{session.stack.api}/openapi.json", timeout=10).json()
    wrong = copy.deepcopy(document)
    stats = wrong["paths"]["/stats"]["get"]["responses"]
    del stats["401"]
    assert stats["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Stats"}
    wrong["components"]["schemas"]["Stats"]["required"].append("no_such_field")
    fuzzer = session.fuzzer(max_examples=3, seed=1,
                            schema=schemathesis.openapi.from_dict(wrong))
    result = OperationResult("GET /stats")

    fuzzer.fuzz(_operation(fuzzer, "GET /stats"), fuzzer.plans(_operation(fuzzer, "GET /stats"))[0],
                result)
    invalid = [p for p in fuzzer.plans(_operation(fuzzer, "GET /stats"))
               if p.credential.name == "expired"]
    fuzzer.fuzz(_operation(fuzzer, "GET /stats"), invalid[0], result)

    kinds = {(f.kind, f.status) for f in result.findings.values()}
    assert ("JsonSchemaError", 200) in kinds, kinds
    assert ("UndefinedStatusCode", 401) in kinds, kinds


def test_fuzzer_reports_a_status_that_does_not_match_the_credential(
        session: FuzzSession) -> None:
    full, _, _ = session.bearer
    # the read+write token, passed off as invalid, then as read-only
    fuzzer = session.fuzzer(max_examples=3, seed=1)
    fuzzer.bearer = (full, Credential("claims read-only", full.authorization, True,
                                      frozenset({READ})),
                     [Credential("claims invalid", full.authorization)])
    stats, cancel = OperationResult("GET /stats"), OperationResult("POST /tasks/{task_id}/cancel")
    for result in (stats, cancel):
        operation = _operation(fuzzer, result.label)
        for plan in fuzzer.plans(operation)[1:]:
            fuzzer.fuzz(operation, plan, result)

    def expectation_failures(result: OperationResult) -> set[tuple[str, str]]:
        return {(f.credential, f.message.split(",")[0]) for f in result.findings.values()
                if f.kind == "AuthorizationExpectation"}

    assert ("claims invalid", "expected 401 for claims invalid") in expectation_failures(stats)
    assert ("claims read-only", "expected 403 without write scope") in \
        expectation_failures(cancel)

"""The attack suite's fast part (``./dev suite attacks`` runs every case).

One test per case of ``hardening/attack_cases``, against the same real stack
the suite starts: a Celery worker, a worker whose hostname is a script
payload, and two ``celery -A testing.apps.automation flower-ops`` monitors
(RS256 public key / HS256 secret, both enforcing aud and iss). The cases
marked slow there (the 5 s auth timeouts and expiry that tests/test_live.py
already covers, Flower's own pages, 95 MB bodies to Flower's routes) run only
in the suite.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from hardening.attack_cases import CASES, Case, Target
from hardening.attacks import attack_stack, select
from testing.services import RedisService


def _param(case: Case) -> object:
    marks = []
    if case.group == "injection":
        marks.append(pytest.mark.browser)
    if case.known:
        # strict: once the weakness is fixed the case passes and this must go
        marks.append(pytest.mark.xfail(reason=case.known, strict=True))
    return pytest.param(case, id=f"{case.group}: {case.name}", marks=marks)


FAST = [c for c in select(CASES) if not c.slow]


@pytest.fixture(scope="module")
def target(redis_service: RedisService, redis_db: int) -> Iterator[Target]:
    client = redis_service.client(redis_db)
    client.flushdb()
    try:
        with attack_stack(redis_service.url(redis_db)) as stack:
            yield stack
    finally:
        client.flushdb()


@pytest.fixture
def browser_ready(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("browser") is not None:
        request.getfixturevalue("chromium_path")  # installs Chromium when missing


@pytest.mark.parametrize("attack", [_param(c) for c in FAST])
def test_attack(target: Target, attack: Case, browser_ready: None) -> None:
    outcome = attack.run(target)
    assert outcome.ok, (f"{attack.id}\n  expected: {outcome.expected}\n"
                        f"  observed: {outcome.observed}")


def test_every_group_has_a_case_and_a_control() -> None:
    """The suite covers what the Hardening issue lists; the controls show the
    refusals are not just a monitor that refuses everything."""
    groups = {c.group for c in CASES}
    assert groups == {"jwt", "websocket", "csrf", "injection", "requests", "monitor"}
    for group in ("jwt", "websocket", "csrf", "injection"):
        assert any(c.name.startswith("control:") for c in CASES if c.group == group), group

"""Fault injection, the fast part: the scenarios of ``hardening/faults.py``
(``./dev suite faults`` runs all seven with a few hundred tasks each) with
small bursts, for the faults tests/test_sync_worker.py does not cover
(it has the sync worker's kill -9, a Redis restart and a PostgreSQL cut).

Each scenario runs real processes against a private Redis and PostgreSQL,
injects the fault mid-burst, and checks that every process recovers by itself
(or after a supervisor-style restart for the kill -9 faults) and that every
task's row equals what the result backend says.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from hardening.fault_stack import PrivateServices
from hardening.faults import FAULTS, SUITE_SYNC_ENV, FaultSettings, report, run_fault

SMALL = FaultSettings(
    tasks=40, burst_seconds=3.0, slow_max_seconds=1.5, outage_seconds=2.0, quiet_seconds=3.0,
    recover_timeout_seconds=60.0, settle_timeout_seconds=90.0, converge_timeout_seconds=45.0,
    sync_env={**SUITE_SYNC_ENV,
              "FLOWER_OPS_SYNC_RECONCILE_INTERVAL_SECONDS": "2",
              "FLOWER_OPS_SYNC_RECONCILE_SETTLE_SECONDS": "0.5",
              "FLOWER_OPS_SYNC_WORKER_LOST_SECONDS": "5",
              "FLOWER_OPS_SYNC_BACKOFF_INITIAL_SECONDS": "0.2",
              "FLOWER_OPS_SYNC_BACKOFF_MAX_SECONDS": "2"})

FAST_FAULTS = ("monitor-kill", "worker-kill", "postgres-restart", "redis-cut")


@pytest.fixture(scope="module")
def private_services() -> Iterator[PrivateServices]:
    """Our own Redis and PostgreSQL: the scenarios kill and restart them."""
    services = PrivateServices().start()
    yield services
    services.close()


@pytest.mark.parametrize("name", FAST_FAULTS)
def test_fault_mid_burst_recovers_and_every_row_equals_the_result_backend(
        name: str, private_services: PrivateServices) -> None:
    result = run_fault(FAULTS[name], private_services, SMALL,
                       redis_db=1 + FAST_FAULTS.index(name))
    report([result], out=sys.stderr)
    assert result.tasks == SMALL.tasks
    # the fault hit the burst while tasks were queued and running
    assert result.in_flight > 0 and result.running > 0, result
    assert result.problems == [], (result.problems, result.samples)
    assert result.recover_seconds is not None
    assert result.converge_seconds is not None
    assert result.rows_wrong == 0 and result.missing == 0
    if name == "worker-kill":
        # it was running something: those rows must now say failure / worker lost,
        # although the worker came back under the same hostname
        assert result.lost >= 1, result
    if name == "monitor-kill":
        # the restarted monitor found every task that had finished before the
        # kill, with its true state, from PostgreSQL (else result.problems says so)
        assert result.monitor_from_db > 0

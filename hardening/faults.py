"""Fault injection with real processes: ``./dev suite faults [--tasks N] [--only NAME,...]``.

For each fault: a private Redis and PostgreSQL (``fault_stack.PrivateServices``,
so they can be killed and restarted), real Celery workers, the real monitor
(``celery -A testing.apps.automation flower-ops``) and the real sync worker
(``python -m sync_worker``); a burst of tasks (successes, failures, retries
ending either way, slow ones); the fault injected when half the burst is
published and something is running; then:

* **recovery** — from the moment the fault is lifted (server back, network
  restored, killed process restarted) until every process works again: each
  worker answers a ping; the sync worker is subscribed again; a probe task
  published after the lift has its row ``success`` in PostgreSQL; the monitor
  answers its API, sees the probe through its own event stream and reads
  PostgreSQL (``GET /tasks?source=db``);
* **convergence** — once the result backend has settled (every task final, or
  nothing runs, the queue is empty and nothing changed for a while), every
  task's row is compared with the backend (``fault_stack.expectation``):
  rows wrong and missing rows must be 0.

Only the two ``*-kill`` faults of our own processes, and the killed Celery
worker, get a restart — the way a supervisor (docker ``restart:``, systemd,
Kubernetes) would, after ``--outage-seconds``, with the same port or hostname.
For every other fault nothing is restarted: the processes recover by
themselves.

The Celery worker killed mid-run: its running tasks will never record an
outcome (the backend keeps saying STARTED), so their true final state is
``failure`` with ``worker_lost = true`` and a ``WorkerLostError`` — what the
sync worker writes once it knows the worker is gone. It comes back under the
same hostname (a container restart keeps it), so "gone" cannot mean "this
hostname is silent". Messages it had prefetched but not started wait in Redis'
unacked set for the visibility timeout (1 h): their rows must stay open
(``pending``/``received``), never final; they are reported as stranded.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hardening.fault_stack import (
    FINAL,
    PROBE_QUEUE,
    Burst,
    Expectation,
    FaultStack,
    MonitorClient,
    PrivateServices,
    Truth,
    declared_lost,
    done_epoch,
    expectation,
    plan_burst,
    read_rows,
    row_problem,
    state_of,
)

logger = logging.getLogger("hardening.faults")

SUITE_SYNC_ENV = {
    "FLOWER_OPS_SYNC_METRICS_PORT": "0",
    "FLOWER_OPS_SYNC_RECONCILE_INTERVAL_SECONDS": "5",
    "FLOWER_OPS_SYNC_RECONCILE_SETTLE_SECONDS": "1",
    "FLOWER_OPS_SYNC_WORKER_LOST_SECONDS": "10",
    "FLOWER_OPS_SYNC_LEADER_POLL_SECONDS": "0.5",
}


@dataclass(frozen=True)
class FaultSettings:
    tasks: int = 300
    burst_seconds: float = 8.0
    slow_max_seconds: float = 2.0
    outage_seconds: float = 3.0
    stall_seconds: float = 20.0         # longer than the sync worker's idle PING (15 s)
    workers: int = 2
    concurrency: int = 2
    quiet_seconds: float = 6.0          # no backend change this long (and nothing runs): settled
    recover_timeout_seconds: float = 120.0
    settle_timeout_seconds: float = 240.0
    converge_timeout_seconds: float = 120.0
    sync_env: Mapping[str, str] = field(default_factory=lambda: dict(SUITE_SYNC_ENV))


@dataclass
class FaultResult:
    name: str
    tasks: int = 0
    in_flight: int = 0
    running: int = 0
    rows_wrong: int = 0
    missing: int = 0
    stranded: int = 0
    lost: int = 0
    recover_seconds: float | None = None
    converge_seconds: float | None = None
    after_last_result_seconds: float | None = None
    components: dict[str, float | None] = field(default_factory=dict)
    monitor_checked: int = 0
    monitor_stale: int = 0
    monitor_from_db: int = 0            # finished before the fault, found in PostgreSQL only
    monitor_samples: list[str] = field(default_factory=list)
    audit_after_lift: str = "-"         # first GET /audit once everything is back
    publish_retries: int = 0
    monitor_db_errors: int = 0          # GET /tasks?source=db answered with an error after the lift
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # reported, not failed: not ours to fix
    samples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class Injection:
    """What the fault did; ``lifted_at`` is when the fault ended (monotonic)."""

    lifted_at: float
    note: str
    victim: str | None = None


# -- the faults ----------------------------------------------------------------------
def _kill_sync(stack: FaultStack, s: FaultSettings) -> Injection:
    stack.sync.kill()
    stack.retired.append(stack.sync)
    time.sleep(s.outage_seconds)
    sync = stack.new_sync()
    sync.start()
    stack.sync = sync
    return Injection(time.monotonic(), f"sync worker SIGKILLed, restarted like a supervisor "
                                       f"after {s.outage_seconds:g}s")


def _kill_monitor(stack: FaultStack, s: FaultSettings) -> Injection:
    port = stack.monitor.port
    stack.monitor.kill()
    stack.retired.append(stack.monitor)
    time.sleep(s.outage_seconds)
    monitor = stack.new_monitor(port=port)
    monitor.start()
    stack.monitor = monitor
    return Injection(time.monotonic(), f"monitor SIGKILLed, restarted on the same port "
                                       f"after {s.outage_seconds:g}s")


def _kill_worker(stack: FaultStack, s: FaultSettings) -> Injection:
    victim = stack.workers[0]
    victim.kill()            # the whole process group: main process and pool children
    stack.retired.append(victim)
    time.sleep(s.outage_seconds)
    worker = stack.new_worker(hostname=victim.hostname)
    worker.start()
    stack.workers[0] = worker
    return Injection(time.monotonic(), f"worker {victim.hostname} SIGKILLed (with its pool), "
                                       f"restarted with the same hostname after "
                                       f"{s.outage_seconds:g}s", victim=victim.hostname)


def _restart_redis(stack: FaultStack, s: FaultSettings) -> Injection:
    redis = stack.services.redis
    redis.kill()
    time.sleep(s.outage_seconds)
    redis.start()
    return Injection(time.monotonic(), f"Redis SIGKILLed, started again after "
                                       f"{s.outage_seconds:g}s (append-only file on)")


def _restart_postgres(stack: FaultStack, s: FaultSettings) -> Injection:
    postgres = stack.services.postgres
    postgres.stop()          # fast shutdown: every session is terminated
    time.sleep(s.outage_seconds)
    postgres.start(timeout_seconds=60)
    return Injection(time.monotonic(), f"PostgreSQL stopped (fast shutdown), started again "
                                       f"after {s.outage_seconds:g}s")


def _cut(proxy_of: Callable[[FaultStack], Any], what: str
         ) -> Callable[[FaultStack, FaultSettings], Injection]:
    def inject(stack: FaultStack, s: FaultSettings) -> Injection:
        proxy = proxy_of(stack)
        proxy.refuse(True)
        cut = proxy.cut()
        time.sleep(s.outage_seconds)
        proxy.refuse(False)
        return Injection(time.monotonic(), f"every connection to {what} reset ({cut} sockets), "
                                           f"new ones refused for {s.outage_seconds:g}s")
    return inject


def _stall(proxy_of: Callable[[FaultStack], Any], what: str
           ) -> Callable[[FaultStack, FaultSettings], Injection]:
    def inject(stack: FaultStack, s: FaultSettings) -> Injection:
        proxy = proxy_of(stack)
        proxy.stall(True)
        time.sleep(s.stall_seconds)
        proxy.stall(False)
        return Injection(time.monotonic(), f"no byte to or from {what} for {s.stall_seconds:g}s, "
                                           f"no connection closed (a partition that heals)")
    return inject


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[FaultStack, FaultSettings], Injection]
    redis_via_proxy: bool = False
    pg_via_proxy: bool = False
    resubscribes: bool = False         # the sync worker must subscribe to events again


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("sync-kill", _kill_sync, resubscribes=True),
    Fault("monitor-kill", _kill_monitor),
    Fault("worker-kill", _kill_worker),
    Fault("redis-restart", _restart_redis, resubscribes=True),
    Fault("postgres-restart", _restart_postgres),
    Fault("redis-cut", _cut(lambda st: st.redis_proxy, "Redis"), redis_via_proxy=True,
          resubscribes=True),
    Fault("postgres-cut", _cut(lambda st: st.pg_proxy, "PostgreSQL"), pg_via_proxy=True),
    Fault("redis-stall", _stall(lambda st: st.redis_proxy, "Redis"), redis_via_proxy=True),
    Fault("postgres-stall", _stall(lambda st: st.pg_proxy, "PostgreSQL"), pg_via_proxy=True),
)}


# -- one scenario ------------------------------------------------------------------------
class Recovery:
    """Polls every process after the lift until each works again."""

    def __init__(self, stack: FaultStack, fault: Fault, lifted_at: float,
                 listening_before: int) -> None:
        self.stack = stack
        self.lifted_at = lifted_at
        self.listening_before = listening_before
        names = ["workers", "pipeline", "monitor api", "monitor events", "monitor db"]
        if fault.resubscribes:
            names.insert(1, "sync listening")
        self.times: dict[str, float | None] = {name: None for name in names}
        self.probes: list[str] = []
        self.monitor_db_errors = 0      # answers other than 200 from a running monitor
        self._next_probe = 0.0
        self._monitor: MonitorClient | None = None

    @property
    def done(self) -> bool:
        return all(v is not None for v in self.times.values())

    def _mark(self, name: str) -> None:
        if self.times[name] is None:
            self.times[name] = time.monotonic() - self.lifted_at

    def poll(self) -> None:
        stack = self.stack
        now = time.monotonic()
        if now >= self._next_probe:
            self._next_probe = now + 1.0
            try:
                self.probes.append(stack.app.send_task(
                    "automation.add", args=(0, len(self.probes)), queue=PROBE_QUEUE,
                    retry=False).id)
            except Exception as exc:  # noqa: BLE001 - the broker may still be away
                logger.debug("probe not sent: %s", exc)
        if self.times["workers"] is None:
            names = [w.hostname for w in stack.workers]
            if set(names) <= stack.ping(names):
                self._mark("workers")
        if "sync listening" in self.times and self.times["sync listening"] is None \
                and stack.sync.alive() and stack.sync.times_listening() > self.listening_before:
            self._mark("sync listening")
        if self.times["pipeline"] is None and self.probes:
            try:
                rows = read_rows(stack.direct_db_url, self.probes)
            except Exception:  # noqa: BLE001 - PostgreSQL may still be away
                rows = {}
            if any(r.status == "success" for r in rows.values()):
                self._mark("pipeline")
        if self._monitor is None or self._monitor.monitor is not stack.monitor:
            self._monitor = MonitorClient(stack.monitor)
        monitor = self._monitor
        if self.times["monitor api"] is None:
            response = monitor.try_get("/stats")
            if response is not None and response.status_code == 200:
                self._mark("monitor api")
        if self.times["monitor db"] is None:
            response = monitor.try_get("/tasks", source="db", limit=1)
            if response is not None and response.status_code == 200:
                self._mark("monitor db")
            elif response is not None:
                self.monitor_db_errors += 1
        if self.times["monitor events"] is None:
            for probe in self.probes[-3:]:
                response = monitor.try_get(f"/tasks/{probe}")
                if response is not None and response.status_code == 200:
                    body = response.json()
                    if body.get("state") == "SUCCESS" and body.get("source") != "db":
                        self._mark("monitor events")
                        break


def _in_flight(truth: Truth, ids: list[str], victim: str | None = None
               ) -> tuple[int, int, int, list[str]]:
    """(not final, running, running on ``victim``, final ids) right now, from
    one read of the backend."""
    metas = truth.metas(ids)
    states = {task_id: state_of(m) for task_id, m in metas.items()}
    on_victim = sum(1 for m in metas.values() if m and victim and state_of(m) == "STARTED"
                    and victim in (m.get("worker"), (m.get("result") or {}).get("hostname")))
    final = [task_id for task_id, state in states.items() if state in FINAL]
    running = sum(1 for state in states.values() if state == "STARTED")
    return len(states) - len(final), running, on_victim, final


def _wait_running(truth: Truth, burst: Burst, *, hostname: str | None,
                  timeout_seconds: float) -> None:
    """Give the fault something to hit: a task running (on ``hostname``: one
    of the slow ones, which run 0.3 s or more, so that it is still running
    when the fault follows a few milliseconds later)."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        sent = list(burst.sent)
        ids = [t.task_id for t in sent if not hostname or t.kind == "slow"]
        _, running, on_victim, _ = _in_flight(truth, ids, hostname)
        if (on_victim if hostname else running):
            return
        time.sleep(0.05)


def run_fault(fault: Fault, services: PrivateServices, settings: FaultSettings, *,
              redis_db: int, log: Callable[[str], None] = lambda _: None,
              keep_logs: bool = False) -> FaultResult:
    result = FaultResult(fault.name)
    database = f"faults_{fault.name.replace('-', '_')}_{os.getpid()}"
    services.create_database(database)
    services.redis.start()          # a previous scenario may have left it stopped
    stack = FaultStack(services, redis_db=redis_db, database=database,
                  redis_via_proxy=fault.redis_via_proxy, pg_via_proxy=fault.pg_via_proxy,
                  sync_env=settings.sync_env, workers=settings.workers,
                  concurrency=settings.concurrency)
    stack.app.backend.client.flushdb()
    try:
        log(f"{fault.name}: starting the stack")
        stack.start()
        _run(fault, stack, settings, result, log)
    except Exception as exc:
        logger.exception("%s: scenario crashed", fault.name)
        result.problems.append(f"scenario crashed: {exc!r}")
    finally:
        result.logs = stack.logs()
        stack.close()
        if not services.redis.running:
            services.redis.start()
        if not services.postgres.running:
            services.postgres.start(timeout_seconds=60)
        services.drop_database(database)
        if result.passed and not keep_logs:
            for path in result.logs.values():
                Path(path).unlink(missing_ok=True)
            result.logs = {}
        try:
            stack.app.backend.client.flushdb()
        except Exception as exc:  # noqa: BLE001 - cleanup only
            logger.warning("could not flush the scenario's Redis db: %s", exc)
    return result


def _run(fault: Fault, stack: FaultStack, s: FaultSettings, result: FaultResult,
         log: Callable[[str], None]) -> None:
    truth = Truth(stack.app)
    burst = Burst(stack.app, plan_burst(s.tasks, slow_max_seconds=s.slow_max_seconds),
                  seconds=s.burst_seconds)
    burst.start()
    if not burst.halfway.wait(s.burst_seconds * 4 + 30):
        raise RuntimeError("the burst did not get halfway")
    victim = stack.workers[0].hostname if fault.name == "worker-kill" else None
    # What the recovery is compared with is read first: between seeing a
    # task run and the fault there is only one read of the backend, so the
    # task seen running is still running when the fault hits (CI once saw a
    # 0.5 s task end during a slow GET /audit in between).
    listening_before = 0 if fault.name == "sync-kill" else stack.sync.times_listening()
    audit_before = MonitorClient(stack.monitor).try_get("/audit", limit=1)
    warmed = audit_before is not None and audit_before.status_code == 200
    _wait_running(truth, burst, hostname=victim, timeout_seconds=10)
    sent_at_fault = [t.task_id for t in burst.sent]
    result.in_flight, result.running, on_victim, final_before = _in_flight(
        truth, sent_at_fault, victim)
    log(f"{fault.name}: injecting with {result.in_flight} tasks in flight "
        f"({result.running} running)")
    injection = fault.inject(stack, s)
    result.notes.append(injection.note)
    if victim:
        result.notes.append(f"{on_victim} tasks were running on the killed worker")
    recovery = Recovery(stack, fault, injection.lifted_at, listening_before)
    burst.join(s.burst_seconds * 4 + 120)
    ids = [t.task_id for t in burst.sent]
    kinds = {t.task_id: t.kind for t in burst.sent}
    result.tasks = len(ids)
    result.publish_retries = burst.publish_errors
    log(f"{fault.name}: fault lifted; waiting for recovery and convergence")
    _settle_and_compare(stack, truth, recovery, ids, kinds, s, result)
    result.components = dict(recovery.times)
    result.monitor_db_errors = recovery.monitor_db_errors
    if recovery.monitor_db_errors:
        result.problems.append(f"the monitor answered {recovery.monitor_db_errors} reads of "
                               "PostgreSQL with an error after the fault was lifted")
    if warmed:
        # the monitor's action store (cancel, retry, audit) keeps its own connections
        audit_after = MonitorClient(stack.monitor).try_get("/audit", limit=1)
        code = audit_after.status_code if audit_after is not None else "no answer"
        result.audit_after_lift = f"{code}"
        if code != 200:
            result.problems.append(
                f"the monitor's first GET /audit after recovery answered {code}: its action "
                "store (cancel, retry, audit) handed out a connection the outage killed")
    if recovery.done:
        result.recover_seconds = max(v for v in recovery.times.values() if v is not None)
    else:
        missing = [k for k, v in recovery.times.items() if v is None]
        result.problems.append(f"not recovered after {s.recover_timeout_seconds:g}s: "
                               f"{', '.join(missing)}")
    _check_monitor(stack, truth, ids, final_before, fault, result)


def _problems(expected: dict[str, Expectation], rows: dict[str, Any]) -> dict[str, str]:
    out = {}
    for task_id, expect in expected.items():
        problem = row_problem(expect, rows.get(task_id))
        if problem:
            out[task_id] = problem
    return out


def _settle_and_compare(stack: FaultStack, truth: Truth, recovery: Recovery, ids: list[str],
                        kinds: dict[str, str], s: FaultSettings, result: FaultResult) -> None:
    """Poll the backend and the rows until the backend has settled and the
    rows match it (or time runs out), probing recovery meanwhile.

    Convergence is dated by the row snapshots taken on the way: the first
    one from which every later snapshot matches the settled truth, so the
    quiet period needed to call the backend settled is not counted."""
    lifted = recovery.lifted_at
    last_states: dict[str, str] | None = None
    stable_since = time.monotonic()
    settled_at: float | None = None
    last_done: float | None = None
    expected: dict[str, Expectation] = {}
    problems: dict[str, str] = {}
    snapshots: list[tuple[float, float, dict[str, Any]]] = []    # monotonic, epoch, rows
    last_active_check = 0.0
    while True:
        now = time.monotonic()
        if not recovery.done and now - lifted < s.recover_timeout_seconds:
            recovery.poll()
        try:
            metas = truth.metas(ids)
        except Exception:  # noqa: BLE001 - Redis may still be away
            time.sleep(0.5)
            continue
        try:
            snapshots.append((time.monotonic(), time.time(), read_rows(stack.direct_db_url, ids)))
        except Exception as exc:  # noqa: BLE001 - PostgreSQL may still be away
            logger.debug("rows not read: %s", exc)
        states = {i: state_of(m) for i, m in metas.items()}
        if states != last_states:
            last_states, stable_since, settled_at = states, now, None
        if settled_at is None:
            if all(v in FINAL for v in states.values()):
                settled_at = now
            elif now - stable_since >= s.quiet_seconds and now - last_active_check > 2:
                last_active_check = now
                if stack.queue_length() == 0 and stack.active_anywhere() is False:
                    settled_at = now
            if settled_at is not None:
                expected = {i: expectation(m) for i, m in metas.items()}
                last_done = max((d for d in map(done_epoch, metas.values()) if d), default=None)
        if settled_at is not None and snapshots:
            problems = _problems(expected, snapshots[-1][2])
            if not problems and (recovery.done or now - lifted >= s.recover_timeout_seconds):
                break
            if now - settled_at > s.converge_timeout_seconds:
                break
        elif settled_at is None and now - lifted > s.settle_timeout_seconds:
            result.problems.append(f"the result backend did not settle in "
                                   f"{s.settle_timeout_seconds:g}s")
            break
        time.sleep(0.5)
    if settled_at is not None and snapshots and not problems:
        first = len(snapshots) - 1
        while first > 0 and not _problems(expected, snapshots[first - 1][2]):
            first -= 1
        at_mono, at_epoch, _ = snapshots[first]
        result.converge_seconds = max(0.0, at_mono - lifted)
        if last_done is not None:
            result.after_last_result_seconds = max(0.0, at_epoch - last_done)
    result.stranded = sum(1 for e in expected.values() if e.label == "stranded")
    if result.stranded and last_states:
        by_state: dict[str, int] = {}
        rows_now = snapshots[-1][2] if snapshots else {}
        for task_id, expect in expected.items():
            if expect.label == "stranded":
                row = rows_now.get(task_id)
                key = f"{last_states[task_id]}/{row.status if row else 'no row'}"
                by_state[key] = by_state.get(key, 0) + 1
        result.notes.append("stranded (backend/row): " + ", ".join(
            f"{n} {k}" for k, n in sorted(by_state.items())))
    result.lost = sum(1 for e in expected.values() if e.label == "lost")
    result.missing = sum(1 for p in problems.values() if p == "missing")
    result.rows_wrong = len(problems) - result.missing
    if expected:
        wrongly = sorted(declared_lost(stack.direct_db_url, ids) -
                         {i for i, e in expected.items() if e.label == "lost"})
        if wrongly:
            result.problems.append(f"{len(wrongly)} tasks were declared lost with their worker "
                                   f"but were not (e.g. {wrongly[0]})")
    if problems:
        result.problems.append(f"{result.rows_wrong} rows wrong, {result.missing} missing "
                               f"{s.converge_timeout_seconds:g}s after the backend settled")
        for task_id, problem in list(problems.items())[:8]:
            result.samples.append(f"{task_id} ({kinds[task_id]}, backend "
                                  f"{last_states.get(task_id) if last_states else '?'}): "
                                  f"{problem}")


def _check_monitor(stack: FaultStack, truth: Truth, ids: list[str], final_before: list[str],
                   fault: Fault, result: FaultResult) -> None:
    """The monitor's view of every task after recovery. Tasks that were final
    before the fault must be found with their true state (from PostgreSQL
    when the monitor was restarted); the rest is reported."""
    monitor = MonitorClient(stack.monitor)
    metas = truth.metas(ids)
    before = set(final_before)
    for task_id in ids:
        meta = metas[task_id]
        if state_of(meta) not in FINAL:
            continue
        response = monitor.try_get(f"/tasks/{task_id}")
        result.monitor_checked += 1
        body = response.json() if response is not None and response.status_code == 200 \
            else {}
        state = body.get("state")
        if task_id in before and body.get("source") == "db" and state == state_of(meta):
            result.monitor_from_db += 1
        if state != state_of(meta):
            if not result.monitor_stale:
                result.problems.append(
                    "GET /tasks/{id} shows final tasks in a state other than the true one "
                    "(PostgreSQL's final state must win over what the monitor's memory "
                    "last heard)")
            result.monitor_stale += 1
            if len(result.monitor_samples) < 3:
                source = body.get("source")
                outcome = meta.get("result") if isinstance(meta, dict) else None
                if isinstance(outcome, dict) and "exc_type" in outcome:
                    outcome = f"{outcome['exc_type']}: {str(outcome.get('exc_message'))[:60]}"
                result.monitor_samples.append(f"{task_id} ({state_of(meta)} {outcome!r}): "
                                              f"monitor says {state} from {source}")
            if task_id in before and fault.name == "monitor-kill":
                result.problems.append(f"restarted monitor: GET /tasks/{task_id} gave "
                                       f"{response.status_code if response else 'no answer'} "
                                       f"state {state}, truth {state_of(meta)}")


# -- the command ---------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def report(results: list[FaultResult], out: Any = sys.stdout) -> None:
    head = (f"{'fault':<17} {'tasks':>5} {'in flight':>17} {'rows wrong':>10} {'missing':>7} "
            f"{'recover (s)':>11} {'converge (s)':>12}  result")
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in results:
        flight = f"{r.in_flight} ({r.running} running)"
        print(f"{r.name:<17} {r.tasks:>5} {flight:>17} {r.rows_wrong:>10} {r.missing:>7} "
              f"{_fmt(r.recover_seconds):>11} {_fmt(r.converge_seconds):>12}  "
              f"{'PASS' if r.passed else 'FAIL'}", file=out)
    print(file=out)
    for r in results:
        parts = ", ".join(f"{k} {_fmt(v)}" for k, v in r.components.items())
        print(f"{r.name}: {'; '.join(r.notes)}", file=out)
        print(f"  recovered (s after the lift): {parts}; monitor answered "
              f"{r.monitor_db_errors} PostgreSQL reads with an error after the lift; "
              f"first GET /audit after recovery: {r.audit_after_lift}", file=out)
        print(f"  converged {_fmt(r.converge_seconds)}s after the lift, "
              f"{_fmt(r.after_last_result_seconds)}s after the last result; "
              f"{r.lost} lost with their worker, {r.stranded} stranded awaiting redelivery; "
              f"publish retries {r.publish_retries}; monitor: {r.monitor_stale} of "
              f"{r.monitor_checked} final tasks shown with another state, "
              f"{r.monitor_from_db} answered from PostgreSQL", file=out)
        for sample in r.monitor_samples:
            print(f"    monitor: {sample}", file=out)
        for warning in r.warnings:
            print(f"  WARN: {warning}", file=out)
        for problem in r.problems:
            print(f"  FAIL: {problem}", file=out)
        for sample in r.samples:
            print(f"    {sample}", file=out)
        if r.logs:
            for name, path in r.logs.items():
                print(f"    log {name}: {path}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev suite faults", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=FaultSettings.tasks,
                        help="tasks per fault (default %(default)s)")
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(FAULTS)}")
    parser.add_argument("--burst-seconds", type=float, default=FaultSettings.burst_seconds)
    parser.add_argument("--outage-seconds", type=float, default=FaultSettings.outage_seconds)
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the processes' logs of passing faults too (printed)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(FAULTS)
    unknown = [n for n in names if n not in FAULTS]
    if unknown or args.tasks < 2:
        parser.error(f"unknown fault {', '.join(unknown)}" if unknown else "--tasks >= 2")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = FaultSettings(tasks=args.tasks, burst_seconds=args.burst_seconds,
                             outage_seconds=args.outage_seconds)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    log(f"sync worker settings: {dict(settings.sync_env)}")
    services = PrivateServices().start()
    log(f"private Redis on {services.redis.port}, PostgreSQL on {services.postgres.port}")
    results = []
    try:
        for index, name in enumerate(names):
            results.append(run_fault(FAULTS[name], services, settings, redis_db=index + 1,
                                     log=log, keep_logs=args.keep_logs))
            log(f"{name}: {'PASS' if results[-1].passed else 'FAIL'}")
    finally:
        services.close()
    print()
    report(results)
    print(f"\n{len(results)} faults in {time.monotonic() - started:.0f}s")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

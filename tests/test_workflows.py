"""Workflows: Celery's canvas as one tree, resumed from the step that failed.

A real stack (a worker, the sync worker, a monitor with PostgreSQL) and real
canvas: a five-step chain failing at step 3 (a flag file) resumed to the
result an unbroken run gives; a chord of ten with two members failing,
resumed so the body runs once with all ten results; a group with a failed
member; an errback; a workflow cancelled mid-way whose later steps never
run; the tree after a monitor restart, from PostgreSQL; a 409 where Celery
cannot resume safely (nothing sent).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import chain, chord, group

from testing.services import PostgresService, RedisService
from testing.settings import FAST_SYNC_WORKER
from testing.stack import Stack, running_stack
from testing.waiting import wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int,
          pg_service: PostgresService) -> Iterator[Stack]:
    db_name = pg_service.create_database()
    try:
        with running_stack(broker_url=redis_service.url(redis_db),
                           database_url=pg_service.url(db_name),
                           sync_env=FAST_SYNC_WORKER, concurrency=3) as stack:
            yield stack
    finally:
        pg_service.drop_database(db_name)


def tree(stack: Stack, root_id: str, **params: Any) -> dict[str, Any]:
    return dict(stack.get_json(f"/workflows/{root_id}", **params))


def wait_tree(stack: Stack, root_id: str, state: str, *, total: int | None = None,
              timeout_seconds: float = 60, **params: Any) -> dict[str, Any]:
    last: list[Any] = [None]

    def reached() -> dict[str, Any] | None:
        response = stack.get(f"/workflows/{root_id}", **params)
        last[0] = response.json()
        if response.status_code != 200:
            return None
        body = dict(response.json())
        if body["state"] != state or (total is not None and body["counts"]["total"] != total):
            return None
        return body

    try:
        return wait_for(reached, timeout_seconds=timeout_seconds, interval_seconds=0.3,
                        message=f"workflow {root_id} {state}")
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}; last answer: {last[0]}") from None


def by_name_and_args(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["task_id"]: n for n in body["nodes"]}


def test_a_chain_failing_at_step_3_resumes_to_the_unbroken_result(stack: Stack,
                                                                   tmp_path: Path) -> None:
    from testing.apps.automation import step

    flag = tmp_path / "fail-step-3"
    flag.touch()
    steps = [step.s(0, 1), step.s(2), step.s(3, fail_flag=str(flag)), step.s(4), step.s(5)]
    unbroken = chain(step.s(0, 1), step.s(2), step.s(3), step.s(4), step.s(5)).apply_async()
    result = chain(*steps).apply_async()
    root = result.parent.parent.parent.parent.id
    assert unbroken.get(timeout=30) == 15

    failed = wait_tree(stack, root, "failed", total=5)
    nodes = failed["nodes"]
    assert failed["kind"] == "chain"
    assert [n["name"] for n in nodes] == ["automation.step"] * 5
    assert nodes[0]["task_id"] == root
    assert [n["state"] for n in nodes] == ["SUCCESS", "SUCCESS", "FAILURE", "FAILURE", "FAILURE"]
    assert [n["published"] for n in nodes] == [True, True, True, False, False]
    assert failed["failed_at"] == nodes[2]["task_id"]
    assert nodes[4]["task_id"] == result.id
    chain_edges = [(e["from"], e["to"]) for e in failed["edges"] if e["kind"] == "chain"]
    assert chain_edges == [(nodes[i]["task_id"], nodes[i + 1]["task_id"]) for i in range(4)]
    # any member's id answers its workflow; the task detail names it
    assert tree(stack, nodes[3]["task_id"])["root_id"] == root
    assert stack.task(nodes[2]["task_id"])["workflow_id"] == root

    dry = stack.post(f"/workflows/{root}/retry", {"dry_run": True})
    assert dry.status_code == 200, dry.text
    [plan] = dry.json()["resumed"]
    assert plan["kind"] == "chain" and plan["outcome"] == "would_retry"
    assert [c["task_id"] for c in plan["continuation"]] == [n["task_id"] for n in nodes[3:]]
    assert tree(stack, root)["state"] == "failed"     # a dry run sends nothing

    flag.unlink()
    answer = stack.post(f"/workflows/{root}/retry", {})
    assert answer.status_code == 200, answer.text
    [resumed] = answer.json()["resumed"]
    assert resumed["outcome"] == "retried"
    last_new = resumed["continuation"][-1]["new_id"]
    assert stack.app.AsyncResult(last_new).get(timeout=30) == 15   # what the unbroken run gave

    done = wait_tree(stack, root, "succeeded", total=8)
    retried = {e["from"]: e["to"] for e in done["edges"] if e["kind"] == "retry"}
    assert set(retried) == {n["task_id"] for n in nodes[2:]}
    assert retried[nodes[2]["task_id"]] == resumed["tasks"][0]["new_id"]
    assert stack.audit(nodes[2]["task_id"])[-1][1:] == ("retry", "retried")
    # PostgreSQL tells the same story once the sync worker has written it
    stored = wait_tree(stack, root, "succeeded", total=8, source="db")
    assert {n["task_id"]: n["state"] for n in stored["nodes"]} == {
        n["task_id"]: n["state"] for n in done["nodes"]}


def test_a_chord_with_two_failed_members_runs_its_body_once_with_all_ten(
        stack: Stack, tmp_path: Path) -> None:
    from testing.apps.automation import collect, step

    flags = [tmp_path / "member-3", tmp_path / "member-7"]
    for flag in flags:
        flag.touch()
    marker = tmp_path / "body-ran"
    members = [step.s(i, 100, fail_flag=str(tmp_path / f"member-{i}")) for i in range(10)]
    body = chord(members, collect.s(marker=str(marker))).apply_async()
    group_id = body.parent.id

    failed = wait_tree(stack, group_id, "failed", total=11)
    assert failed["kind"] == "chord"
    [header] = failed["groups"]
    assert header["chord"] == body.id and len(header["members"]) == 10
    states = {n["task_id"]: n["state"] for n in failed["nodes"]}
    assert sorted(states[m] for m in header["members"]).count("FAILURE") == 2
    assert states[body.id] == "FAILURE" and not marker.exists()

    for flag in flags:
        flag.unlink()
    answer = stack.post(f"/workflows/{group_id}/retry", {})
    assert answer.status_code == 200, answer.text
    [plan] = answer.json()["resumed"]
    assert plan["kind"] == "chord" and len(plan["tasks"]) == 2
    new_body = plan["continuation"][0]["new_id"]
    assert stack.app.AsyncResult(new_body).get(timeout=30) == [i + 100 for i in range(10)]
    wait_tree(stack, group_id, "succeeded")
    assert marker.read_text().splitlines() == ["ran"]     # exactly once


def test_a_group_member_retried_and_an_errback_in_the_tree(stack: Stack,
                                                           tmp_path: Path) -> None:
    from testing.apps.automation import note_failure, step

    flag = tmp_path / "member-1"
    flag.touch()
    result = group(step.s(0, 1), step.s(0, 2, fail_flag=str(flag)), step.s(0, 3)).apply_async()
    failed = wait_tree(stack, result.id, "failed", total=3)
    assert failed["kind"] == "group"
    flag.unlink()
    answer = stack.post(f"/workflows/{result.id}/retry", {})
    assert answer.status_code == 200, answer.text
    assert answer.json()["resumed"][0]["kind"] == "group"
    done = wait_tree(stack, result.id, "succeeded", total=4)
    assert len(done["groups"][0]["members"]) == 4       # the retried member joined its group

    marker = tmp_path / "errback"
    flag.touch()
    broken = step.apply_async((0, 1), {"fail_flag": str(flag)},
                              link_error=note_failure.si("broke", marker=str(marker)))
    with_errback = wait_tree(stack, broken.id, "failed", total=2)
    errbacks = [e for e in with_errback["edges"] if e["kind"] == "errback"]
    assert [e["from"] for e in errbacks] == [broken.id]
    wait_for(marker.exists, timeout_seconds=20, message="the errback ran")


def test_a_cancelled_workflow_never_runs_its_later_steps(stack: Stack, tmp_path: Path) -> None:
    from testing.apps.automation import sleep, step

    marker = tmp_path / "slept"
    result = chain(sleep.si(30, str(marker)), step.si(0, 1), step.s(2)).apply_async()
    root = result.parent.parent.id
    stack.wait_state(root, "STARTED")
    answer = stack.post(f"/workflows/{root}/cancel", {})
    assert answer.status_code == 200, answer.text
    outcomes = {r["id"]: r["outcome"] for r in answer.json()["results"]}
    assert outcomes[root] == "cancelled"
    assert [outcomes[i] for i in (result.parent.id, result.id)] == ["cancelled"] * 2
    cancelled = wait_tree(stack, root, "cancelled", total=3)
    assert [n["state"] for n in cancelled["nodes"]] == ["REVOKED"] * 3
    assert [n["published"] for n in cancelled["nodes"]] == [True, False, False]
    assert stack.post(f"/workflows/{root}/cancel", {}).status_code == 409
    assert stack.app.AsyncResult(result.id).state != "SUCCESS"
    assert not marker.exists()


def test_celery_cannot_resume_a_chain_into_a_group_safely(stack: Stack,
                                                          tmp_path: Path) -> None:
    from testing.apps.automation import collect, step

    flag = tmp_path / "first"
    flag.touch()
    result = chain(step.s(0, 1, fail_flag=str(flag)), group(step.s(1), step.s(2)),
                   collect.s()).apply_async()
    root = wait_for(lambda: next((w["root_id"] for w in stack.get_json(
        "/workflows", state="failed", limit=20)["workflows"]
        if w["root_task_id"] and stack.task(w["root_task_id"])["args"] == [0, 1]
        and "first" in str(stack.task(w["root_task_id"])["kwargs"])), None),
        timeout_seconds=30, message="the broken chain listed as failed")
    before = tree(stack, root)
    answer = stack.post(f"/workflows/{root}/retry", {})
    assert answer.status_code == 409, answer.text
    [reason] = answer.json()["detail"]["reasons"]
    assert "group or chord" in reason["reason"]
    assert tree(stack, root)["counts"] == before["counts"]   # nothing sent
    assert result.id


def test_the_tree_after_a_monitor_restart_comes_from_postgresql(stack: Stack) -> None:
    from testing.apps.automation import step

    result = chain(step.s(0, 1), step.s(2), step.s(3)).apply_async()
    root = result.parent.parent.id
    before = wait_tree(stack, root, "succeeded", total=3)
    wait_tree(stack, root, "succeeded", total=3, source="db")
    listed = stack.get_json("/workflows", state="succeeded", name="automation.step")
    assert root in [w["root_id"] for w in listed["workflows"]]
    stack.restart_monitor()
    after = tree(stack, root)
    assert after["source"] == "db"
    assert after["nodes"] == before["nodes"] or [
        (n["task_id"], n["state"]) for n in after["nodes"]] == [
        (n["task_id"], n["state"]) for n in before["nodes"]]
    assert after["edges"] == before["edges"]
    assert stack.get(f"/workflows/{'0' * 36}").status_code == 404


def test_a_task_retry_of_a_failed_chain_step_resumes_the_chain(stack: Stack,
                                                               tmp_path: Path) -> None:
    from testing.apps.automation import add, step

    flag = tmp_path / "fail-step-2"
    flag.touch()
    result = chain(step.s(0, 1), step.s(2, fail_flag=str(flag)), step.s(3)).apply_async()
    root, broken = result.parent.parent.id, result.parent.id
    wait_tree(stack, root, "failed", total=3)
    flag.unlink()
    answer = stack.post(f"/tasks/{broken}/retry", {})
    assert answer.status_code == 200, answer.text
    resume = answer.json()["resume"]
    assert (resume["outcome"], resume["workflow_id"], resume["kind"]) == (
        "resumed", root, "chain")
    [after] = resume["continuation"]
    assert after["task_id"] == result.id
    assert stack.app.AsyncResult(after["new_id"]).get(timeout=30) == 6
    assert stack.post(f"/tasks/{broken}/retry", {}).status_code == 409   # already retried

    alone = add.delay(1, "x")          # a TypeError, outside any workflow
    stack.wait_state(alone.id, "FAILURE")
    plain = stack.post(f"/tasks/{alone.id}/retry", {})
    assert plain.status_code == 200, plain.text
    assert plain.json()["resume"] == {"outcome": "alone", "workflow_id": None, "kind": None,
                                      "continuation": [], "reason": None}

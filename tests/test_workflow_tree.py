"""The workflow tree builder (``core/workflow.py``) on records as memory and
PostgreSQL give them: the rules the API's answers follow, case by case."""
from __future__ import annotations

from typing import Any

import pytest

from flower_ops.core.canvas import canvas_of, decode_canvas, encode_canvas, workflow_of
from flower_ops.core.workflow import build_tree

pytestmark = pytest.mark.no_services


def sig(task_id: str | None, name: str = "jobs.step") -> dict[str, Any]:
    return {"task": name, "args": [], "kwargs": {}, "options":
            {"task_id": task_id} if task_id else {}, "subtask_type": None, "immutable": False}


def record(task_id: str, state: str, at: float, canvas: dict[str, Any] | None = None,
           **fields: Any) -> dict[str, Any]:
    times = {"sent": at, "started": at + 0.1}
    if state == "SUCCESS":
        times["succeeded"] = at + 0.2
    elif state == "FAILURE":
        times["failed"] = at + 0.2
    return {"id": task_id, "name": fields.pop("name", "jobs.step"), "state": state,
            "canvas": canvas, **times, **fields}


def test_a_chain_broken_at_step_2_marks_the_rest_failed_and_not_sent() -> None:
    records = [record("a", "SUCCESS", 1, {"chain": [sig("b"), sig("c"), sig("d")]}),
               record("b", "FAILURE", 2, {"chain": [sig("c"), sig("d")]}, parent_id="a")]
    tree = build_tree("a", records)
    assert [(n["task_id"], n["state"], n["published"]) for n in tree["nodes"]] == [
        ("a", "SUCCESS", True), ("b", "FAILURE", True), ("c", "FAILURE", False),
        ("d", "FAILURE", False)]
    assert (tree["state"], tree["failed_at"], tree["kind"]) == ("failed", "b", "chain")
    assert [(e["from"], e["to"]) for e in tree["edges"]] == [("a", "b"), ("b", "c"),
                                                             ("c", "d")]
    assert tree["counts"] == {"total": 4, "by_state": {"SUCCESS": 1, "FAILURE": 3},
                              "not_sent": 2}


def test_a_running_chain_counts_its_unsent_steps_as_running() -> None:
    tree = build_tree("a", [record("a", "STARTED", 1, {"chain": [sig("b")]})])
    assert tree["state"] == "running" and tree["finished"] is None
    assert tree["nodes"][1]["state"] == "PENDING" and not tree["nodes"][1]["published"]


def test_a_resumed_step_and_its_continuation_supersede_the_old_ones() -> None:
    records = [
        record("a", "FAILURE", 1, {"chain": [sig("b")]}, retried_as="a2"),
        record("a2", "SUCCESS", 5, {"chain": [sig("b2")], "resumes": {"a2": "a", "b2": "b"}},
               retry_of="a"),
        record("b2", "SUCCESS", 6, None, parent_id="a2"),
    ]
    tree = build_tree("a", records)
    retries = sorted((e["from"], e["to"]) for e in tree["edges"] if e["kind"] == "retry")
    assert retries == [("a", "a2"), ("b", "b2")]
    assert tree["state"] == "succeeded" and tree["failed_at"] is None


def test_a_chord_whose_member_failed_has_its_body_failed_unsent() -> None:
    body = sig("body", "jobs.collect")
    members = [record(f"m{i}", "FAILURE" if i == 1 else "SUCCESS", 1 + i,
                      {"group": "g", "group_index": i, "chord": body}) for i in range(3)]
    tree = build_tree("g", members)
    assert tree["kind"] == "chord"
    assert tree["groups"] == [{"group_id": "g", "chord": "body", "members": ["m0", "m1", "m2"]}]
    by_id = {n["task_id"]: n for n in tree["nodes"]}
    assert (by_id["body"]["state"], by_id["body"]["published"]) == ("FAILURE", False)
    assert {e["kind"] for e in tree["edges"]} == {"chord"}
    assert tree["state"] == "failed" and tree["failed_at"] == "m1"


def test_links_sent_by_a_worker_are_told_by_name() -> None:
    parent = record("p", "FAILURE", 1, {"callbacks": [sig(None, "jobs.report")],
                                        "errbacks": [sig(None, "jobs.alarm")]})
    alarm = record("x", "SUCCESS", 2, None, name="jobs.alarm", parent_id="p")
    other = record("y", "SUCCESS", 3, None, name="jobs.other", parent_id="p")
    tree = build_tree("p", [parent, alarm, other])
    assert {(e["to"], e["kind"]) for e in tree["edges"]} == {("x", "errback"), ("y", "child")}


def test_a_cancelled_step_cancels_the_unsent_ones_after_it() -> None:
    tree = build_tree("a", [record("a", "REVOKED", 1, {"chain": [sig("b"), sig("c")]},
                                   revoked=1.5)])
    assert [n["state"] for n in tree["nodes"]] == ["REVOKED"] * 3
    assert tree["state"] == "cancelled"


def test_capture_keeps_links_as_sent_and_names_the_workflow() -> None:
    embed = {"chain": [sig("c"), sig("b")], "callbacks": [sig(None, "jobs.report")],
             "errbacks": None, "chord": None}
    canvas = canvas_of(embed, {"group": "g", "group_index": 2})
    assert [s["options"]["task_id"] for s in canvas["chain"]] == ["b", "c"]   # running order
    decoded = decode_canvas(encode_canvas(canvas))
    assert decoded is not None and decoded["exact"] is True
    unencodable = canvas_of({"chain": [{**sig("b"), "args": [object()]}]}, {})
    skeleton = decode_canvas(encode_canvas(unencodable))
    assert skeleton == {"chain": [{"task": "jobs.step", "options": {"task_id": "b"},
                                   "subtask_type": None}], "exact": False}
    assert workflow_of("t", "w", "r", None) == "w"
    assert workflow_of("t", None, "r", None) == "r"
    assert workflow_of("t", None, "t", None) is None
    assert workflow_of("t", None, "t", {"group": "g"}) == "g"


def test_a_sent_chord_body_is_not_a_member_of_its_header() -> None:
    body = sig("body", "jobs.collect")
    members = [record(f"m{i}", "SUCCESS", 1 + i, {"group": "g", "group_index": i,
                                                   "chord": body}) for i in range(2)]
    sent_body = record("body", "SUCCESS", 5, {"group": "g"}, name="jobs.collect")
    tree = build_tree("g", [*members, sent_body])
    assert tree["groups"] == [{"group_id": "g", "chord": "body", "members": ["m0", "m1"]}]
    assert {n["task_id"]: n["group_id"] for n in tree["nodes"]}["body"] is None


def test_a_chain_with_an_errback_is_still_a_chain() -> None:
    first = record("a", "FAILURE", 1, {"chain": [sig("b")], "errbacks": [sig(None, "jobs.alarm")]})
    alarm = record("x", "SUCCESS", 2, {"group": "g1", "group_index": 0}, name="jobs.alarm",
                   parent_id="a")
    tree = build_tree("a", [first, alarm])
    assert tree["kind"] == "chain"
    assert ("a", "x", "errback") in {(e["from"], e["to"], e["kind"]) for e in tree["edges"]}

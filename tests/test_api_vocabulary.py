"""One API vocabulary (SPEC §11): unknown query parameters are a 400 that
names them and the accepted ones; the API's root answers an index of every
operation and the OpenAPI document. Against a real worker and monitor."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from testing.services import RedisService
from testing.stack import Stack, running_stack

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int) -> Iterator[Stack]:
    with running_stack(broker_url=redis_service.url(redis_db)) as stack:
        yield stack


@pytest.mark.parametrize(("path", "params", "accepted"), [
    ("/tasks", {"stat": "FAILURE"}, "state"),
    ("/tasks", {"state": "FAILURE", "limit": "5", "colour": "red"}, "limit"),
    ("/stats", {"verbose": "1"}, None),
    ("/workers", {"x": "1"}, None),
    ("/queues", {"x": "1"}, None),
    ("/alerts", {"kinds": "stuck_task"}, "kind"),
])
def test_unknown_query_parameters_are_a_400_naming_them(
        stack: Stack, path: str, params: dict[str, str], accepted: str | None) -> None:
    response = stack.get(path, **params)
    assert response.status_code == 400, response.text
    body = response.json()
    known = {"state", "limit"}
    assert body["detail"]["unknown"] == sorted(set(params) - known)
    if accepted is not None:
        assert accepted in body["detail"]["accepted"]
    else:
        assert body["detail"]["accepted"] == []


def test_known_query_parameters_still_work(stack: Stack) -> None:
    assert stack.get("/tasks", state="FAILURE", limit="5", order="asc").status_code == 200
    assert stack.get("/alerts", limit="10", kind="stuck_task").status_code == 200


def test_unknown_parameters_are_checked_after_authentication(stack: Stack) -> None:
    response = requests.get(f"{stack.api}/tasks", params={"stat": "x"}, timeout=10)
    assert response.status_code == 401


def test_the_api_root_is_an_index_of_every_operation(stack: Stack) -> None:
    for url in (stack.api, stack.api + "/"):
        response = requests.get(url, timeout=10)   # public, like the OpenAPI document
        assert response.status_code == 200, response.text
        index = response.json()
        assert index["version"] and index["openapi"].endswith("/openapi.json")
        # links are paths on this server (with its --url_prefix)
        document = requests.get(stack.monitor.base_url + index["openapi"], timeout=10).json()
        operations = {(method.upper(), path) for path, ops in document["paths"].items()
                      for method in ops}
        linked = {(link["method"], link["href"].split("/api/automation/monitoring", 1)[1])
                  for link in index["links"].values()}
        assert linked == operations
        assert index["links"]["getStats"]["href"].endswith("/api/automation/monitoring/stats")

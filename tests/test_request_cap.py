"""FLOWER_OPS_MAX_REQUEST_BYTES: every body the monitor reads is capped,
Flower's own routes included, before it is buffered."""
from __future__ import annotations

import socket

import pytest
import requests

from flower_ops.core.env import ConfigError
from flower_ops.monitor.config import MonitorConfig
from testing.processes import Monitor
from testing.services import RedisService

CAP = 2 * 1024 * 1024


def test_bodies_over_the_cap_are_refused_on_flowers_routes_too(
        redis_service: RedisService, redis_db: int) -> None:
    monitor = Monitor(redis_service.url(redis_db),
                      env={"FLOWER_OPS_MAX_REQUEST_BYTES": str(CAP)}).start()
    try:
        monitor.wait_ready()
        auth = monitor.basic_auth
        flower_api = f"{monitor.base_url}/api/task/async-apply/automation.add"
        # Only the headers are sent: the refusal must come before any body is read.
        with socket.create_connection(("127.0.0.1", monitor.port), timeout=10) as conn:
            conn.sendall(b"POST /api/task/async-apply/automation.add HTTP/1.1\r\n"
                         b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % (CAP + 1))
            assert conn.recv(100).startswith(b"HTTP/1.1 400 ")
        # Under the cap the body reaches Flower, which answers as it always does.
        under = requests.post(flower_api, data=b"{}", auth=auth, timeout=30,
                              headers={"Content-Type": "application/json"})
        assert under.status_code not in (400, 413), under.text
        # Our API keeps its own, smaller limit with a JSON 413.
        ours = requests.post(f"{monitor.api}/token", data=b" " * (1024 * 1024 + 1),
                             auth=auth, timeout=30, headers={"Content-Type": "application/json"})
        assert ours.status_code == 413 and ours.json()["error"]
        assert monitor.alive()
    finally:
        monitor.stop()


@pytest.mark.parametrize("value", ["lots", "1000", str(2 << 30)])
def test_bad_max_request_bytes_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as error:
        MonitorConfig.from_env({"FLOWER_OPS_MAX_REQUEST_BYTES": value})
    assert error.value.variable == "FLOWER_OPS_MAX_REQUEST_BYTES"

"""``flower-ops demo`` as a user runs it: up, traffic flowing, Ctrl-C, nothing left behind."""
from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import requests

from flower_ops.demo.embedded import free_port
from testing.demo import DemoProcess
from testing.process_tree import cmdline, still_running
from testing.waiting import wait_for

CREDENTIALS = ("ops", "demo-pass-123")


@pytest.fixture
def demo() -> Iterator[DemoProcess]:
    process = DemoProcess(free_port(), basic_auth=CREDENTIALS).start()
    try:
        yield process
    finally:
        process.kill_everything()
        process.log.unlink(missing_ok=True)


def test_demo_runs_traffic_through_the_monitor_and_stops_cleanly_on_ctrl_c(
        demo: DemoProcess) -> None:
    def healthy() -> bool:
        demo.check_alive()
        demo.track()
        try:
            return requests.get(f"{demo.url}/healthcheck", auth=CREDENTIALS,
                                timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_for(healthy, timeout_seconds=45, message="the demo's monitor /healthcheck")
    assert requests.get(f"{demo.url}/api/tasks", timeout=5).status_code == 401

    def finished_tasks() -> int:
        demo.check_alive()
        demo.track()
        tasks = requests.get(f"{demo.url}/api/tasks", auth=CREDENTIALS, timeout=5).json()
        return sum(1 for task in tasks.values() if task["state"] in {"SUCCESS", "FAILURE"})

    wait_for(finished_tasks, timeout_seconds=30, message="demo tasks finishing in Flower")

    response = requests.post(f"{demo.url}/api/automation/monitoring/token", auth=CREDENTIALS,
                             timeout=5)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    stats = requests.get(f"{demo.url}/api/automation/monitoring/stats", timeout=5,
                         headers={"Authorization": f"Bearer {token}"}).json()
    assert stats["tasks"]["total"] > 0
    assert stats["workers"]["online"] >= 1

    wait_for(lambda: "Press Ctrl-C to stop." in demo.output(), timeout_seconds=10,
             message="the demo's banner")
    banner = demo.output()
    assert f"{demo.url}/" in banner and "login ops / demo-pass-123" in banner

    demo.track()
    joined = b"\n".join(cmdline(pid) for pid in still_running(demo.seen))
    for part in (b"redis-server", b" worker ", b" beat ", b" flower-ops "):
        assert part in joined, f"no {part!r} among the demo's processes:\n{joined!r}"

    demo.popen.send_signal(signal.SIGINT)
    assert demo.popen.wait(30) == 0, demo.output()[-4000:]
    leftovers = still_running(demo.seen)
    assert not leftovers, f"processes left behind: {sorted(leftovers)}"
    assert "stopped" in demo.output()

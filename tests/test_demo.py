"""``flower-ops demo`` as a user runs it: up, traffic flowing, Ctrl-C, nothing left behind;
every port it opens printed and on loopback, no warnings at start, a taken port one line."""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from flower_ops.demo.embedded import free_port
from testing.demo import DemoProcess
from testing.paths import REPO_ROOT
from testing.process_tree import cmdline, listening_sockets, still_running
from testing.waiting import wait_for

CREDENTIALS = ("ops", "demo-pass-123")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "demo-data"


@pytest.fixture
def demo(data_dir: Path) -> Iterator[DemoProcess]:
    process = DemoProcess(free_port(), basic_auth=CREDENTIALS,
                          extra_args=["--data-dir", str(data_dir)]).start()
    try:
        yield process
    finally:
        process.kill_everything()
        process.log.unlink(missing_ok=True)


def test_demo_runs_traffic_through_the_monitor_and_stops_cleanly_on_ctrl_c(
        demo: DemoProcess, data_dir: Path) -> None:
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
    for part in (b"redis-server", b" worker ", b" beat ", b" flower-ops ", b"sync_worker"):
        assert part in joined, f"no {part!r} among the demo's processes:\n{joined!r}"
    check_ports_printed_and_on_loopback(demo, banner)
    check_no_warnings_at_start(data_dir / "logs")

    demo.popen.send_signal(signal.SIGINT)
    assert demo.popen.wait(30) == 0, demo.output()[-4000:]
    leftovers = still_running(demo.seen)
    assert not leftovers, f"processes left behind: {sorted(leftovers)}"
    assert "stopped" in demo.output()


def check_ports_printed_and_on_loopback(demo: DemoProcess, banner: str) -> None:
    """Every port the demo's processes listen on is on 127.0.0.1 and printed,
    in its "Listening:" line (monitor, Redis, PostgreSQL, sync worker metrics)."""
    listed = re.search(r"^  Listening:  (.*)$", banner, re.MULTILINE)
    assert listed is not None, banner
    printed = {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", listed.group(1))}

    def sockets() -> set[tuple[str, int]]:
        demo.track()
        return listening_sockets(still_running(demo.seen))

    # the sync worker may still be opening its metrics port as the banner shows
    wait_for(lambda: {port for _, port in sockets()} >= printed, timeout_seconds=15,
             message=f"the demo listening on every port it printed: {listed.group(0)}")
    opened = sockets()
    assert {address for address, _ in opened} == {"127.0.0.1"}, opened
    assert {port for _, port in opened} == printed, (opened, listed.group(0))
    for what in ("monitor", "Redis", "PostgreSQL", "sync worker metrics"):
        assert what in listed.group(1), listed.group(0)
    assert len(printed) == 4, listed.group(0)


def check_no_warnings_at_start(logs: Path) -> None:
    """A normal start logs no warning: not Flower's "Inspect method ... failed"
    before any worker exists, nor the monitor's "No JWT key configured"."""
    monitor = (logs / "monitor.log").read_text(errors="replace")
    assert not re.findall(r"^\[[WE] .*$", monitor, re.MULTILINE), monitor[-4000:]
    assert "Inspect method" not in monitor
    sync = (logs / "sync-worker.log").read_text(errors="replace")
    assert not re.findall(r"^\S+ \S+ (WARNING|ERROR) .*$", sync, re.MULTILINE), sync[-4000:]


def test_a_taken_port_is_one_line_that_suggests_port_0() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "flower_ops.command", "demo", "--port",
                               str(port)], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=60, check=False)
    assert done.returncode != 0
    assert done.stdout == "", done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert str(port) in lines[0] and "--port 0" in lines[0] and "in use" in lines[0]
    assert "Traceback" not in done.stderr

"""``flower-ops demo`` as a user runs it: up, traffic flowing, Ctrl-C, nothing left behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import requests

from flower_ops.demo.embedded import free_port
from tests.support.processes import ROOT, wait_for

CREDENTIALS = ("ops", "demo-pass-123")


def _proc_stat(pid: int) -> tuple[int, str, str] | None:
    """(ppid, state, start time) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may contain spaces
    return int(fields[1]), fields[0], fields[19]


def descendants(root_pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every live process below ``root_pid``."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[1] != "Z":
                children.setdefault(stat[0], []).append(int(entry))
                starts[int(entry)] = stat[2]
    found: set[tuple[int, str]] = set()
    stack = [root_pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add((child, starts[child]))
            stack.append(child)
    return found


def still_running(processes: set[tuple[int, str]]) -> set[int]:
    alive = set()
    for pid, start in processes:
        stat = _proc_stat(pid)
        if stat is not None and stat[2] == start and stat[1] != "Z":
            alive.add(pid)
    return alive


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


class DemoProcess:
    def __init__(self, port: int) -> None:
        self.port = port
        self.log = Path(tempfile.mkstemp(prefix="flower-ops-demo-test-", suffix=".log")[1])
        self.seen: set[tuple[int, str]] = set()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flower_ops.command", "demo", "--port", str(port),
                 "--basic-auth", ":".join(CREDENTIALS)],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def track(self) -> None:
        self.seen |= descendants(self.proc.pid)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"demo exited with {self.proc.returncode}:\n"
                                 f"{self.output()[-4000:]}")

    def kill_everything(self) -> None:
        """Teardown after a failure: nothing may outlive the test either way."""
        self.track()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in still_running(self.seen):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def demo() -> Iterator[DemoProcess]:
    process = DemoProcess(free_port())
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

    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(30) == 0, demo.output()[-4000:]
    leftovers = still_running(demo.seen)
    assert not leftovers, f"processes left behind: {sorted(leftovers)}"
    assert "stopped" in demo.output()

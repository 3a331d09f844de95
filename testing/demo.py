"""``flower-ops demo`` as a user runs it, with every process it ever started
tracked, so a test can show that Ctrl-C leaves nothing behind."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from testing.process_tree import TrackedProcess, descendants, still_running
from testing.processes import Process


class DemoProcess(Process):
    """``python -m flower_ops.command demo`` on ``port`` with Flower's
    ``basic_auth`` (user, password), and ``extra_args`` (``--data-dir``...)."""

    def __init__(self, port: int, *, basic_auth: tuple[str, str],
                 extra_args: Sequence[str] = ()) -> None:
        self.port = port
        self.seen: set[TrackedProcess] = set()
        super().__init__([sys.executable, "-m", "flower_ops.command", "demo", "--port", str(port),
                          "--basic-auth", ":".join(basic_auth), *extra_args], {}, "demo-test")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise RuntimeError("the demo was never started")
        return self.proc

    def track(self) -> None:
        """Remember every process below the demo right now."""
        self.seen |= descendants(self.popen.pid)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(f"demo exited with {self.popen.returncode}:\n"
                                 f"{self.output()[-4000:]}")

    def kill_everything(self) -> None:
        """Teardown after a failure: nothing may outlive the test either way.

        Ctrl-C (SIGINT) first, as a user stops it; then SIGKILL for the demo
        and for every process it was ever seen with that still runs."""
        self.track()
        proc = self.popen
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for pid in still_running(self.seen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

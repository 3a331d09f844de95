"""Help that answers: ``./dev`` and its commands, ``celery -A APP flower-ops --help``
(Flower's options, every setting the monitor reads with its default, where the
docs are), and a quiet monitor start (Flower's "Inspect method ... failed"
only when a worker could have answered)."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from flower_ops.monitor.config import MonitorConfig
from flower_ops.monitor.settings_help import MONITOR_SETTINGS
from flower_ops.monitor.sources.inspect_log import INSPECTOR_LOGGER, quiet_inspect_before_workers
from testing.paths import REPO_ROOT

pytestmark = pytest.mark.no_services   # nothing here touches Redis or PostgreSQL

DEV = str(REPO_ROOT / "dev")
SETTING_NAMES = [setting.name for setting in MONITOR_SETTINGS]


def dev(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DEV, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args", [(), ("help",), ("-h",), ("--help",)])
def test_dev_help_describes_every_command_and_exits_0(args: tuple[str, ...]) -> None:
    done = dev(*args)
    assert done.returncode == 0, done.stderr
    for word in ("demo", "test", "suite NAME", "./dev test -k workers", "--port", "--port 0",
                 '.[embedded]', ".[test]"):
        assert word in done.stdout, (word, done.stdout)


def test_dev_help_lists_every_demo_option() -> None:
    demo_help = subprocess.run([sys.executable, "-m", "flower_ops.command", "demo", "--help"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                               check=True).stdout
    options = set(re.findall(r"(--[a-z][a-z-]+)", demo_help)) - {"--help"}
    assert {"--port", "--address", "--basic-auth", "--no-seed"} <= options
    help_text = dev("--help").stdout
    assert sorted(option for option in options if option not in help_text) == []


def test_an_unknown_command_exits_2_with_the_usage() -> None:
    done = dev("nope")
    assert done.returncode == 2
    assert "usage: ./dev demo" in done.stderr and "nope" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_dev_test_help_is_ours_not_pytests(flag: str) -> None:
    done = dev("test", flag)
    assert done.returncode == 0, done.stderr
    assert "./dev test -k workers" in done.stdout and "go to pytest" in done.stdout
    assert len(done.stdout.splitlines()) < 30, done.stdout


def test_dev_suite_help() -> None:
    done = dev("suite", "--help")
    assert done.returncode == 0
    for name in ("fuzz", "faults", "attacks", "load"):
        assert name in done.stdout
    assert dev("suite").returncode == 2


@pytest.fixture
def shim_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A virtualenv whose python and flower-ops only write down how they were called."""
    venv, calls = tmp_path / "venv", tmp_path / "calls.log"
    (venv / "bin").mkdir(parents=True)
    for program in ("python", "flower-ops"):
        shim = venv / "bin" / program
        shim.write_text(f'#!/bin/sh\necho "{program} $*" >> "{calls}"\n')
        shim.chmod(0o755)
    return venv, calls


def _calls(calls: Path) -> list[str]:
    lines = calls.read_text().splitlines() if calls.exists() else []
    calls.unlink(missing_ok=True)
    return lines


def test_dev_installs_the_extra_each_command_needs_once(shim_venv: tuple[Path, Path]) -> None:
    venv, calls = shim_venv
    env = {"FLOWER_OPS_VENV": str(venv)}
    install_pip = "python -m pip install -q --upgrade pip"

    assert dev("demo", "--port", "0", env=env).returncode == 0
    assert _calls(calls) == [install_pip, "python -m pip install -q -e .[embedded]",
                             "flower-ops demo --port 0"]
    assert dev("demo", env=env).returncode == 0
    assert _calls(calls) == ["flower-ops demo"]

    # the test tools only for the tests; arguments reach pytest untouched
    assert dev("test", "-k", "workers", "-x", env=env).returncode == 0
    assert _calls(calls) == [install_pip, "python -m pip install -q -e .[test]",
                             "python -m tests.run -k workers -x"]
    assert dev("test", "tests/test_demo.py", "-q", env=env).returncode == 0
    assert _calls(calls) == ["python -m tests.run tests/test_demo.py -q"]

    # .[test] holds everything .[embedded] has: its stamp serves the demo too
    (venv / ".flower-ops-installed-embedded").unlink()
    assert dev("demo", env=env).returncode == 0
    assert _calls(calls) == ["flower-ops demo"]

    # a stamp older than setup.cfg installs again
    os.utime(venv / ".flower-ops-installed-test", (0, 0))
    assert dev("test", "-k", "x", env=env).returncode == 0
    assert _calls(calls) == [install_pip, "python -m pip install -q -e .[test]",
                             "python -m tests.run -k x"]


def test_tests_run_passes_arguments_to_pytest() -> None:
    done = subprocess.run([sys.executable, "-m", "tests.run", "--collect-only", "-q",
                           "tests/test_help.py", "-k", "unknown_command"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_an_unknown_command_exits_2_with_the_usage" in done.stdout
    assert "test_dev_suite_help" not in done.stdout


def test_flower_ops_help_lists_flowers_options_our_settings_and_the_docs() -> None:
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "flower_ops.demo.app",
                           "flower-ops", "--help"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for flower_option in ("--port=INT", "--address=TEXT", "--basic-auth=", "--url-prefix=",
                          "--inspect-timeout=", "--persistent", "--conf=", "--logging="):
        assert flower_option in text, flower_option
    assert "(default: 5555)" in text
    for name in SETTING_NAMES:
        assert re.search(rf"^  {name}\b", text, re.MULTILINE), name
    assert "(default: 600)" in text  # FLOWER_OPS_STUCK_TASK_SECONDS
    assert "Documentation" in text and "README.md" in text and "openapi.json" in text


class RecordingEnv(dict[str, str]):
    """An empty environment that writes down every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.append(key)
        return super().get(key, default)


def test_the_help_lists_every_variable_the_monitor_reads() -> None:
    env = RecordingEnv()
    MonitorConfig.from_env(env)
    assert sorted(set(env.asked) - set(SETTING_NAMES)) == []
    assert sorted(set(SETTING_NAMES) - set(env.asked)) == []


def test_the_help_and_the_readme_agree_on_names_and_defaults() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("### Monitor (`celery -A APP flower-ops`)", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \| .* \| (.*) \|$", section, re.MULTILINE)
    documented = {name: default.replace("`", "").strip() for name, default in rows}
    documented.pop("FLOWER_BASIC_AUTH")  # Flower's own, listed with Flower's options
    assert sorted(documented) == sorted(SETTING_NAMES)
    for setting in MONITOR_SETTINGS:
        assert documented[setting.name].startswith(setting.default), (setting, documented)


class FakeInspector:
    """Flower 2.2's inspector as far as the filter goes: ``_inspect`` logs
    "Inspect method X failed" when no worker replied."""

    def __init__(self) -> None:
        self.workers: dict[str, Any] = {}

    def _inspect(self, method: str, workername: str | None = None) -> None:
        logging.getLogger(INSPECTOR_LOGGER).warning("Inspect method %s failed", method)


def test_no_inspect_warning_before_any_worker_exists_but_after(
        caplog: pytest.LogCaptureFixture) -> None:
    inspector = FakeInspector()
    flower_app = SimpleNamespace(inspector=inspector,
                                 events=SimpleNamespace(state=SimpleNamespace(workers={})))
    quiet = quiet_inspect_before_workers(flower_app)
    try:
        with caplog.at_level(logging.DEBUG):
            inspector._inspect("stats")                    # nobody could have answered
            inspector._inspect("active", "w1@host")        # asked a named worker: a failure
            flower_app.events.state.workers["w2@host"] = object()
            inspector._inspect("conf")                     # a known worker did not answer
        warned = [r.getMessage() for r in caplog.records
                  if r.name == INSPECTOR_LOGGER and r.levelno == logging.WARNING]
        assert warned == ["Inspect method active failed", "Inspect method conf failed"]
        assert any("no worker answered" in r.getMessage() for r in caplog.records)
    finally:
        logging.getLogger(INSPECTOR_LOGGER).removeFilter(quiet)

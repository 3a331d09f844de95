"""Flower's own unit tests, run with ``flower_ops.install()`` applied to every app they build.

This is how we know the plugin breaks nothing in Flower. ``tests/run.py`` runs
it after our suite; run it alone with ``.venv/bin/python tests/flower_compat.py``.

1. Fetch the ``flower==2.2.0`` sdist from PyPI (``pip download``), cached under
   ``.cache/flower-sdist`` and checked against a pinned SHA-256.
2. Extract its ``tests/`` (and ``docs/config.rst``, which a test checks every
   option against) into ``.cache/flower-compat/``. Only those: the tests import
   the ``flower`` installed in this environment, which must be 2.2.0.
3. Run them with pytest, loading this module as a plugin. The plugin wraps
   ``flower.app.Flower.__init__`` so every app constructed by any test gets
   ``flower_ops.install(app)`` right after construction -- the same order as
   ``celery flower-ops`` (build Flower, install, start). It counts apps and
   installs, records which tests ran against an installed app, and checks on
   every app that our routes resolve to our handlers (even under
   ``--url_prefix``).
4. Fail if any test fails, if no install happened, if an app escaped install,
   or if our routes are missing from an installed app.

Options: ``--baseline`` runs the same suite without install (to show what
fails in Flower itself); extra arguments after ``--`` go to pytest.

Tests excluded from the run are listed in ``EXCLUDED`` with the reason; each
one is proven to fail without install too (it is run in baseline mode and must
fail there), otherwise the exclusion itself is an error.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FLOWER_VERSION = "2.2.0"
SDIST_NAME = f"flower-{FLOWER_VERSION}.tar.gz"
SDIST_SHA256 = "c4f4751942ff8b5069e6604a136e073b860971b7658859bdc61da1dc17a4bb32"
CACHE = ROOT / ".cache"
SDIST_DIR = CACHE / "flower-sdist"
SUITE_DIR = CACHE / "flower-compat" / f"flower-{FLOWER_VERSION}"

# nodeid (relative to the extracted sdist root) -> why it is excluded.
# Empty: all of Flower 2.2.0's unit tests pass in this environment without
# install (checked with --baseline), so none may fail with it.
EXCLUDED: dict[str, str] = {}

# Environment variables shared by the driver and the plugin (same file).
REPORT_ENV = "FLOWER_OPS_COMPAT_REPORT"
MODE_ENV = "FLOWER_OPS_COMPAT_MODE"  # "install" or "baseline"
# test_command.py::test_all_options_documented reads the sdist's docs/config.rst
EXTRA_FILES = {f"flower-{FLOWER_VERSION}/docs/config.rst"}
OUR_ROUTE = "/api/automation/monitoring/stats"

PYTEST_INI = """\
[pytest]
# Written by flower-ops tests/flower_compat.py; keeps pytest from adopting the
# flower-ops setup.cfg above this directory as its configuration.
testpaths = tests/unit
python_files = test_*.py
timeout = 120
"""


# --------------------------------------------------------------------------
# The pytest plugin (loaded with -p flower_compat in the child pytest)
# --------------------------------------------------------------------------

class _Recorder:
    def __init__(self) -> None:
        self.mode = os.environ.get(MODE_ENV, "install")
        self.apps_built = 0
        self.installs = 0
        self.install_errors: list[str] = []
        self.route_missing: list[str] = []
        self.current_test: str | None = None
        self.tests_with_app: set[str] = set()
        self.outcomes: dict[str, str] = {}

    def report(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        return {
            "mode": self.mode,
            "apps_built": self.apps_built,
            "installs": self.installs,
            "install_errors": self.install_errors,
            "route_missing": self.route_missing,
            "tests": len(self.outcomes),
            "tests_with_app": len(self.tests_with_app),
            "tests_with_app_not_failed": sum(
                1 for t in self.tests_with_app if self.outcomes.get(t) == "passed"),
            "outcomes": counts,
            "failed": sorted(t for t, o in self.outcomes.items() if o == "failed"),
        }


_recorder: _Recorder | None = None


def _resolve_install():  # type: ignore[no-untyped-def]
    from flower_ops import install  # the public entry point (SPEC section 1)

    return install


def _route_handler_module(app: Any, path: str) -> str:
    """The module of the handler ``app`` routes ``path`` to (no request is served)."""
    from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

    request = HTTPServerRequest(start_line=RequestStartLine("GET", path, "HTTP/1.1"),
                                headers=HTTPHeaders({"Host": "localhost"}))
    delegate = app.find_handler(request)
    handler_class = getattr(delegate, "handler_class", None)
    return getattr(handler_class, "__module__", "") or ""


def pytest_configure(config: Any) -> None:
    global _recorder
    _recorder = recorder = _Recorder()
    if recorder.mode == "baseline":
        return

    from flower.app import Flower

    install = _resolve_install()
    original_init = Flower.__init__

    def init_then_install(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        recorder.apps_built += 1
        if recorder.current_test:
            recorder.tests_with_app.add(recorder.current_test)
        try:
            install(self)
        except Exception as exc:
            recorder.install_errors.append(f"{recorder.current_test}: {exc!r}")
            raise
        recorder.installs += 1
        prefix = getattr(self.options, "url_prefix", "") or ""
        path = (f"/{prefix.strip('/')}" if prefix.strip("/") else "") + OUR_ROUTE
        module = _route_handler_module(self, path)
        if not module.startswith("flower_ops"):
            recorder.route_missing.append(f"{recorder.current_test}: {path} -> {module or '?'}")

    init_then_install.__wrapped__ = original_init  # type: ignore[attr-defined]
    Flower.__init__ = init_then_install  # type: ignore[method-assign]


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    if _recorder is not None:
        _recorder.current_test = nodeid


def pytest_runtest_logreport(report: Any) -> None:
    if _recorder is None:
        return
    previous = _recorder.outcomes.get(report.nodeid)
    if report.when == "call" or report.outcome != "passed":
        if previous != "failed":
            _recorder.outcomes[report.nodeid] = report.outcome
    elif previous is None:
        _recorder.outcomes[report.nodeid] = "passed"


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    path = os.environ.get(REPORT_ENV)
    if _recorder is not None and path:
        Path(path).write_text(json.dumps(_recorder.report(), indent=2))


# --------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_sdist() -> Path:
    sdist = SDIST_DIR / SDIST_NAME
    if not sdist.exists():
        SDIST_DIR.mkdir(parents=True, exist_ok=True)
        print(f"==> downloading flower=={FLOWER_VERSION} sdist from PyPI", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary",
                        ":all:", "--no-deps", f"flower=={FLOWER_VERSION}", "-d", str(SDIST_DIR)],
                       check=True)
    actual = _sha256(sdist)
    if actual != SDIST_SHA256:
        raise SystemExit(f"{sdist}: SHA-256 {actual} does not match the pinned {SDIST_SHA256}; "
                         "delete it to download again")
    return sdist


def extract_tests(sdist: Path) -> Path:
    marker = SUITE_DIR / ".extracted-from"
    stamp = f"{SDIST_SHA256} {sorted(EXTRA_FILES)}"
    if marker.exists() and marker.read_text() == stamp:
        return SUITE_DIR
    shutil.rmtree(SUITE_DIR, ignore_errors=True)
    SUITE_DIR.mkdir(parents=True)
    top = f"flower-{FLOWER_VERSION}/"
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers()
                   if (m.name.startswith(top + "tests/") or m.name in EXTRA_FILES)
                   and (m.isfile() or m.isdir())]
        for member in members:
            member.name = member.name[len(top):]
        archive.extractall(SUITE_DIR, members=members, filter="data")
    (SUITE_DIR / "pytest.ini").write_text(PYTEST_INI)
    marker.write_text(stamp)
    return SUITE_DIR


def check_installed_flower() -> None:
    from importlib.metadata import version

    installed = version("flower")
    if installed != FLOWER_VERSION:
        raise SystemExit(f"flower {installed} is installed; this check runs the tests of "
                         f"flower {FLOWER_VERSION} (the version flower-ops pins)")


def run_suite(suite: Path, *, mode: str, pytest_args: list[str]) -> tuple[int, dict[str, Any]]:
    fd, report_path = tempfile.mkstemp(prefix="flower-compat-", suffix=".json")
    os.close(fd)
    env = {
        **os.environ,
        # tests/ of flower-ops is not a package root here: Flower's "tests" must win
        "PYTHONPATH": os.pathsep.join([str(suite), str(Path(__file__).resolve().parent)]),
        REPORT_ENV: report_path,
        MODE_ENV: mode,
    }
    deselect: list[str] = []
    if mode == "install":
        for nodeid in EXCLUDED:
            deselect += ["--deselect", nodeid]
    args = [sys.executable, "-m", "pytest", "-c", str(suite / "pytest.ini"),
            "--rootdir", str(suite), "-p", "flower_compat", "-p", "no:cacheprovider", "-p", "no:tornado",
            "-q", *deselect, *pytest_args]
    try:
        code = subprocess.call(args, cwd=suite, env=env)
        text = Path(report_path).read_text()
        report = json.loads(text) if text else {}
    finally:
        os.unlink(report_path)
    return code, report


def main(argv: list[str]) -> int:
    baseline = "--baseline" in argv
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    check_installed_flower()
    suite = extract_tests(fetch_sdist())

    if baseline:
        code, report = run_suite(suite, mode="baseline", pytest_args=pytest_args)
        print(f"flower compat (baseline, no install): {report.get('outcomes')}")
        return code

    problems: list[str] = []
    if EXCLUDED:
        # an exclusion is only legitimate for a test that fails without us too
        code, report = run_suite(suite, mode="baseline", pytest_args=list(EXCLUDED))
        for nodeid in EXCLUDED:
            if nodeid not in report.get("failed", []):
                problems.append(f"excluded test {nodeid} passes without install: "
                                "remove it from EXCLUDED")

    code, report = run_suite(suite, mode="install", pytest_args=pytest_args)
    outcomes = report.get("outcomes", {})
    print(f"flower compat: flower {FLOWER_VERSION} unit tests with flower_ops.install() applied: "
          f"{report.get('tests', 0)} run, {outcomes.get('passed', 0)} passed, "
          f"{outcomes.get('failed', 0)} failed, {outcomes.get('skipped', 0)} skipped, "
          f"{len(EXCLUDED)} excluded; {report.get('apps_built', 0)} Flower apps built, "
          f"{report.get('installs', 0)} installs, "
          f"{report.get('tests_with_app', 0)} tests used an installed app")
    if code != 0:
        problems.append(f"pytest exited with {code}")
    if not report:
        problems.append("the compat plugin wrote no report (was it loaded?)")
    elif report.get("installs", 0) == 0:
        problems.append("install() was never applied: the Flower.__init__ wrapper did not run")
    elif report["installs"] != report["apps_built"]:
        problems.append(f"{report['apps_built'] - report['installs']} Flower app(s) escaped "
                        "install()")
    problems += [f"install() raised in {e}" for e in report.get("install_errors", [])]
    problems += [f"our route is not registered in {r}" for r in report.get("route_missing", [])]
    for problem in problems:
        print(f"flower compat: FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

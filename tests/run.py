"""The test command: our suite, then Flower's own unit tests with install() applied.

``./dev test [pytest args]`` runs this. Extra arguments go to our pytest run
only (and skip Flower's suite, so ``./dev test -k name`` stays quick).
Exit status is non-zero if any part fails.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    # the slowest tests are listed at the end, to keep CI's time in view
    code = subprocess.call([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                            "--durations=15", *argv], cwd=ROOT)
    if code != 0 or argv:
        return code
    compat = ROOT / "tests" / "flower_compat.py"
    if compat.exists():
        code = subprocess.call([sys.executable, str(compat)], cwd=ROOT)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Where the repository is, for child processes' ``cwd`` and ``PYTHONPATH``."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

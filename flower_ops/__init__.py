"""Flower Ops: job monitoring and management for Celery, as a Flower plugin."""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def install(flower_app: Any, config: Any = None) -> Any:
    """Register every Flower Ops route into a built ``flower.app.Flower``."""
    from .plugin import install as _install

    return _install(flower_app, config)


def instrument(celery_app: Any, **options: Any) -> Any:
    """Turn on everything the monitor needs in a Celery app (see instrument.py)."""
    from .instrument import instrument as _instrument

    return _instrument(celery_app, **options)


__all__ = ["install", "instrument", "__version__"]

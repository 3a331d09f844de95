"""Flower Ops: job monitoring and management for Celery, as a Flower plugin."""
from __future__ import annotations

from typing import Any

from flower_ops.core.version import __version__

# Bound eagerly: importing the ``flower_ops.instrument`` submodule later would
# otherwise replace a lazily defined ``instrument`` function with the module.
from flower_ops.instrument import instrument


def install(flower_app: Any, config: Any = None) -> Any:
    """Register every Flower Ops route into a built ``flower.app.Flower``."""
    from flower_ops.monitor.app import install as _install

    return _install(flower_app, config)


__all__ = ["__version__", "install", "instrument"]

"""Blocking calls (broker, inspect, PostgreSQL, a JWKS fetch) off the IOLoop.

Flower's event state may be touched only on the IOLoop thread; anything that
waits on the network runs on this executor instead, and its result comes
back as a future of the IOLoop.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from tornado.ioloop import IOLoop


class BlockingRunner:
    """``runner(fn, *args)``: run ``fn(*args)`` on a worker thread; returns
    an asyncio future (await it, or add a done callback: it runs on the loop)."""

    def __init__(self, io_loop: IOLoop, *, max_workers: int = 4) -> None:
        self._io_loop = io_loop
        self._executor = ThreadPoolExecutor(max_workers=max_workers,
                                            thread_name_prefix="flower-ops")

    def __call__(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return self._io_loop.run_in_executor(self._executor, partial(fn, *args))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False)

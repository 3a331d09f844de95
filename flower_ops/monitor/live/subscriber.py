"""One client of the live feed, with a bounded queue of unflushed messages."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from flower_ops.monitor.live.filters import ALL, SNAPSHOT_TASKS, Filters
from flower_ops.monitor.live.protocol import CLOSE_TOO_SLOW

logger = logging.getLogger(__name__)


class Subscriber:
    """One client of the feed, with a bounded queue of unflushed messages.

    ``write`` hands a message to the transport and returns an awaitable that
    completes when it left our buffers (Tornado's ``write_message``);
    ``close`` closes the transport with a code and reason.
    """

    def __init__(self, *, write: Callable[[bytes], Awaitable[None] | None],
                 close: Callable[[int, str], None], max_messages: int,
                 max_bytes: int) -> None:
        self._write = write
        self._close = close
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.filters: Filters = ALL
        self.limit = SNAPSHOT_TASKS
        # The window it shows (live/views.py ViewKey), or None: every change
        self.view: Any = None
        self.pending_messages = 0
        self.pending_bytes = 0
        self.last_seq: int | None = None
        self.closed = False
        self.dropped = False
        self.on_drop: Callable[[Subscriber], None] | None = None

    def send(self, message: bytes, seq: int) -> bool:
        """Queue one message; drops the subscriber instead of queueing past its bound."""
        if self.closed:
            return False
        size = len(message)
        # Bounded by what is still unflushed; one large message on its way to a
        # reader that keeps up is not a reason to drop it.
        if self.pending_messages >= self.max_messages or self.pending_bytes > self.max_bytes:
            self.drop()
            return False
        try:
            result = self._write(message)
        except Exception:  # noqa: BLE001 - a closed transport; the handler detaches it
            self.closed = True
            return False
        self.last_seq = seq
        if result is None:
            return True
        self.pending_messages += 1
        self.pending_bytes += size
        add_done = getattr(result, "add_done_callback", None)
        if add_done is None:  # pragma: no cover - every Tornado write returns a future
            self.pending_messages -= 1
            self.pending_bytes -= size
            return True
        add_done(lambda fut: self._written(fut, size))
        return True

    def _written(self, future: Any, size: int) -> None:
        self.pending_messages -= 1
        self.pending_bytes -= size
        if not future.cancelled() and future.exception() is not None:
            self.closed = True

    def drop(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.dropped = True
        if self.on_drop is not None:
            self.on_drop(self)
        try:
            self._close(CLOSE_TOO_SLOW, "client too slow, reconnect")
        except Exception:
            logger.debug("closing a slow feed client failed", exc_info=True)

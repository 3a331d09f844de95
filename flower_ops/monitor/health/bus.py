"""The alert bus: alert changes, fanned out to whoever subscribed.

Created first by the composition root, so subscribers (the live feed, the
webhook) and the publisher (the ``AlertBook``) can be built in any order.
IOLoop thread only. A failing subscriber is logged and never stops the others.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

# listener(event, alert): event is "raised", "updated" or "resolved"; the
# alert is JSON-ready (``Alert.as_dict``)
AlertListener = Callable[[str, dict[str, Any]], None]


class AlertBus:
    def __init__(self) -> None:
        self._listeners: list[AlertListener] = []

    def subscribe(self, listener: AlertListener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: AlertListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    @property
    def idle(self) -> bool:
        """No subscriber: the publisher may skip building the message."""
        return not self._listeners

    def publish(self, event: str, alert: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, alert)
            except Exception:
                logger.exception("alert listener %r failed", listener)

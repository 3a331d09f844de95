"""An alert webhook receiver for the tests."""
from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import tornado.httpserver
import tornado.web

from flower_ops.demo.embedded import free_port


class WebhookReceiver:
    """A tiny Tornado server on its own thread, keeping what is POSTed to
    ``url``; the first ``fail_first`` POSTs get a 500 (the sender's retry)."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.port = free_port()
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _run(self) -> None:
        receiver = self

        class Hook(tornado.web.RequestHandler):
            def post(self) -> None:
                receiver.attempts += 1
                if receiver.attempts <= receiver.fail_first:
                    self.set_status(500)
                    return
                receiver.received.append(json.loads(self.request.body))
                self.set_status(204)

        async def serve() -> None:
            app = tornado.web.Application([(r"/hook", Hook)])
            server = tornado.httpserver.HTTPServer(app)
            server.listen(self.port, address="127.0.0.1")
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()
            server.stop()

        asyncio.run(serve())

    def start(self) -> WebhookReceiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def events_for(self, alert_id: str) -> list[str]:
        return [e["event"] for e in list(self.received) if e["alert"]["id"] == alert_id]

"""``install(flower_app)``: build our services once and register our routes."""
from __future__ import annotations

import asyncio
import importlib
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable, Mapping

from tornado.ioloop import PeriodicCallback

from flower_ops.monitor.http import openapi
from flower_ops.monitor.auth import Principal, TokenAuthority
from flower_ops.core.env import ConfigError
from flower_ops.monitor.config import MonitorConfig
from flower_ops.monitor.http import api
from flower_ops.monitor.http.base import ApiNotFound
from flower_ops.monitor.http.token import TokenHandler
from flower_ops.monitor.services.queues import QueueService
from flower_ops.monitor.services.stats import StatsService, ThroughputTracker
from flower_ops.monitor.services.tasks import TaskQueryService
from flower_ops.monitor.services.workers import WorkerService
from flower_ops.monitor.sources.broker import queue_source_for
from flower_ops.monitor.sources.flower_state import TaskIndex, task_queue

logger = logging.getLogger(__name__)

API_BASE = "/api/automation/monitoring"
INDEX_SYNC_MS = 100


class FlowerOps:
    """Everything the plugin adds to one Flower application."""

    def __init__(self, flower_app: Any, config: MonitorConfig) -> None:
        self.flower = flower_app
        self.config = config
        self.io_loop = flower_app.io_loop
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="flower-ops")
        self.authority = TokenAuthority(config.jwt)
        state = flower_app.events.state
        self.index = TaskIndex(state)
        self.throughput = ThroughputTracker()
        self.capabilities: dict[str, Any] = {"sent_events": False, "exact_args": False,
                                             "instrumented_workers": False}
        self.index.observers.extend([self.throughput.observe, self._observe_transition])
        self.history = self._build_history()
        self.workers = WorkerService(state=state, inspected=flower_app.inspector.workers)
        capp = flower_app.capp
        broker_url = _broker_url(capp)
        self.queues = QueueService(
            source=queue_source_for(broker_url, capp.conf.broker_transport_options or {}),
            transport=broker_url.split("://", 1)[0],
            queue_names=self._queue_names,
            consumers=self.workers.consumers_by_queue,
        )
        self.tasks = TaskQueryService(index=self.index, history=self.history,
                                      run_blocking=self.run_blocking)
        self.alert_provider: Callable[[], list[dict[str, Any]] | Mapping[str, Any]] = \
            lambda: []
        self.stats = StatsService(
            index=self.index, throughput=self.throughput, workers=self.workers.counts,
            queues=self._queue_totals, alerts=lambda: self.alert_provider(),
            capabilities=self._capabilities)
        self._timers: list[PeriodicCallback] = []
        self._queue_refresh_running = False
        # Routes and start/stop hooks that extensions (actions, live feed,
        # dashboard, alerts) add before the routes are registered
        self.extra_routes: list[tuple[str, Any]] = []
        self.on_start: list[Callable[[], None]] = []
        self.on_stop: list[Callable[[], None]] = []

    # -- wiring ------------------------------------------------------------------

    def _build_history(self) -> Any:
        if not self.config.database_url:
            return None
        try:
            from flower_ops.db.history import PgHistory
        except ImportError:
            logger.warning("DATABASE_URL is set but the history reader is not available")
            return None
        history = PgHistory(database_url=self.config.database_url,
                            pool_max_size=self.config.db_pool_max_size)
        return history

    def routes(self) -> list[tuple[str, Any, dict[str, Any]]]:
        kwargs = {"ops": self}
        table: list[tuple[str, Any]] = [
            (f"{API_BASE}/stats/?", api.StatsHandler),
            (f"{API_BASE}/tasks/?", api.TasksHandler),
            (f"{API_BASE}/tasks/([^/]+)/?", api.TaskHandler),
            (f"{API_BASE}/workers/?", api.WorkersHandler),
            (f"{API_BASE}/queues/?", api.QueuesHandler),
            (f"{API_BASE}/token/?", TokenHandler),
            (f"{API_BASE}/openapi.json", api.OpenApiHandler),
        ]
        table.extend(self.extra_routes)
        table.append((f"{API_BASE}(?:/.*)?", ApiNotFound))
        return [(self.prefixed(path), handler, kwargs) for path, handler in table]

    def prefixed(self, path: str) -> str:
        prefix = (self.flower.options.url_prefix or "").strip("/")
        return f"/{prefix}{path}" if prefix else path

    def start(self) -> None:
        """Start the background timers; runs on the IOLoop thread."""
        if self.history is not None:
            self.io_loop.run_in_executor(self.executor, self._open_history)
        timers = [
            (self.index.sync, INDEX_SYNC_MS),
            (self._refresh_queues, self.config.queue_refresh_seconds * 1000),
            (self._refresh_workers, self.config.inspect_interval_seconds * 1000),
        ]
        for callback, interval_ms in timers:
            timer = PeriodicCallback(callback, interval_ms, jitter=0.1)
            timer.start()
            self._timers.append(timer)
        self._refresh_queues()
        for hook in self.on_start:
            hook()

    def stop(self) -> None:
        for hook in self.on_stop:
            hook()
        for timer in self._timers:
            timer.stop()
        self._timers.clear()
        if self.history is not None:
            self.history.close()
        self.executor.shutdown(wait=False)

    def _open_history(self) -> None:
        try:
            self.history.open()
        except Exception:  # noqa: BLE001 - the API reports 503 until it works
            logger.exception("could not open the PostgreSQL history (DATABASE_URL)")

    # -- helpers used by services and handlers --------------------------------------

    def run_blocking(self, fn: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
        return self.io_loop.run_in_executor(self.executor, partial(fn, *args))

    async def verify_token(self, token: str) -> Principal:
        if self.authority.blocking:
            return await self.run_blocking(self.authority.verify, token)  # type: ignore[no-any-return]
        return self.authority.verify(token)

    def openapi_document(self) -> dict[str, Any]:
        return openapi.document(self.prefixed(API_BASE))

    def _observe_transition(self, uuid: str, old_state: str | None, task: Any) -> None:
        caps = self.capabilities
        if old_state is None:
            if not caps["sent_events"] and getattr(task, "sent", None):
                caps["sent_events"] = True
            if not caps["exact_args"] and str(getattr(task, "args", "")).startswith("json:"):
                caps["exact_args"] = True
        if task.state == "RECEIVED" and old_state in (None, "PENDING"):
            self.queues.note_dequeued(task_queue(task), getattr(task, "received", 0.0) or 0.0)

    def _capabilities(self) -> dict[str, Any]:
        caps = dict(self.capabilities)
        missing = []
        if not caps["sent_events"]:
            missing.append("task-sent events (task_send_sent_event): PENDING tasks and queue "
                           "names are unknown until a worker receives them")
        if not caps["exact_args"]:
            missing.append("exact arguments (flower_ops.instrument(app) in the publisher): "
                           "args are Celery's truncated repr, retry needs the result backend")
        caps["history"] = self.history is not None
        caps["missing"] = missing
        return caps

    def _queue_names(self) -> set[str]:
        capp = self.flower.capp
        names = {capp.conf.task_default_queue or "celery"}
        names.update(q.name for q in (capp.conf.task_queues or ()) if getattr(q, "name", None))
        names.update(self.config.extra_queues)
        names.update(self.workers.queue_names())
        names.update(self.index.values("queue"))
        return {n for n in names if n}

    def _queue_totals(self) -> dict[str, Any]:
        snapshot = self.queues.snapshot
        if snapshot is None:
            return {"messages": None, "unacked": None, "queues": 0}
        return {"messages": sum(q.messages for q in snapshot.queues.values()),
                "unacked": snapshot.unacked_total, "queues": len(snapshot.queues)}

    def _refresh_queues(self) -> None:
        if self.queues.source is None or self._queue_refresh_running:
            return
        self._queue_refresh_running = True
        future = self.io_loop.run_in_executor(self.executor, self.queues.refresh)

        def done(fut: "asyncio.Future[Any]") -> None:
            self._queue_refresh_running = False
            if not fut.cancelled() and fut.exception() is None:
                self.queues.apply(fut.result())

        future.add_done_callback(lambda fut: self.io_loop.add_callback(done, fut))

    def _refresh_workers(self) -> None:
        try:
            self.flower.update_workers()
        except Exception:  # noqa: BLE001 - next tick retries; the API serves the cache
            logger.exception("worker inspect refresh failed")


def _broker_url(capp: Any) -> str:
    try:
        with capp.connection() as conn:
            return str(conn.as_uri(include_password=True))
    except Exception:  # noqa: BLE001 - an unparsable URL is Flower's to report
        return str(capp.conf.broker_url or "")


def install(flower_app: Any, config: MonitorConfig | None = None) -> FlowerOps:
    """Register Flower Ops into a built ``flower.app.Flower``; returns the plugin.

    ``config`` defaults to ``MonitorConfig.from_env()``. Safe to call before or
    after the IOLoop starts; timers begin once it runs.
    """
    existing = getattr(flower_app, "flower_ops", None)
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    if config is None:
        config = MonitorConfig.from_env()
    ops = FlowerOps(flower_app, config)
    for module_name in EXTENSION_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        extend = getattr(module, "extend", None)
        if extend is not None:
            extend(ops)
    flower_app.add_handlers(r".*$", ops.routes())
    _cap_request_bodies(flower_app, config.max_request_bytes)
    flower_app.flower_ops = ops
    ops.io_loop.add_callback(ops.start)
    return ops


def _cap_request_bodies(flower_app: Any, max_bytes: int) -> None:
    """Cap every request body the server reads, Flower's routes included.

    Tornado buffers a whole body (up to 100 MB by default) before a
    non-streaming handler such as Flower's runs, so without a cap anyone who
    can reach the port, credentials or not, can make the monitor hold
    hundreds of MB. Our own API handlers stream and stop at 1 MiB anyway.
    """
    start_request = flower_app.start_request

    def capped_start_request(server_conn: Any, request_conn: Any) -> Any:
        set_max = getattr(request_conn, "set_max_body_size", None)
        if set_max is not None:
            set_max(max_bytes)
        return start_request(server_conn, request_conn)

    flower_app.start_request = capped_start_request


# Each capability beyond the read API lives in its own module with an
# ``extend(ops)`` that adds routes, services and hooks; install() stays the
# one entry point.
EXTENSION_MODULES = (
    "flower_ops.actions",
    "flower_ops.live",
    "flower_ops.dashboard",
    "flower_ops.health",
)


__all__ = ["ConfigError", "FlowerOps", "install"]

"""The composition root: ``install(flower_app)`` builds every monitor service,
in one fixed and visible order, into one typed container (``FlowerOps``),
and registers the route table.

Nothing else wires services together: each service gets its collaborators
here, through its constructor; each handler gets only what it uses, through
``initialize()`` (the kwargs of its route); each part of the HTTP surface
returns its routes and OpenAPI paths (``HttpPart``). No service patches
another, and nothing is registered in a module-global list.

Threading: everything below runs on the IOLoop thread, except what goes
through ``blocking`` (broker, inspect, PostgreSQL).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from tornado.ioloop import IOLoop, PeriodicCallback

from flower_ops.core.version import __version__
from flower_ops.db.actions import ActionStore
from flower_ops.db.history import PgHistory
from flower_ops.db.insights import PgInsights
from flower_ops.db.pool import Database
from flower_ops.db.workflows import PgWorkflows
from flower_ops.monitor.auth import RequestAuth, TokenAuthority
from flower_ops.monitor.blocking import BlockingRunner
from flower_ops.monitor.config import MonitorConfig
from flower_ops.monitor.health.bus import AlertBus
from flower_ops.monitor.health.deliveries import ledger_for
from flower_ops.monitor.health.metrics import install_collector
from flower_ops.monitor.health.monitor import HealthMonitor
from flower_ops.monitor.health.probe import WorkerProbe
from flower_ops.monitor.health.webhook import WebhookNotifier
from flower_ops.monitor.heap import HeapKeeper
from flower_ops.monitor.http import actions as actions_http
from flower_ops.monitor.http import alerts as alerts_http
from flower_ops.monitor.http import api as api_http
from flower_ops.monitor.http import dashboard as dashboard_http
from flower_ops.monitor.http import insights as insights_http
from flower_ops.monitor.http import openapi
from flower_ops.monitor.http import workflows as workflows_http
from flower_ops.monitor.http import ws as ws_http
from flower_ops.monitor.http.base import API_BASE, ApiNotFound, HttpPart, Route
from flower_ops.monitor.http.body_cap import cap_request_bodies
from flower_ops.monitor.http.token import TokenPolicy
from flower_ops.monitor.instances import MonitorInstances, new_instance_id, registry_for
from flower_ops.monitor.live.feed import FeedSettings, LiveFeed
from flower_ops.monitor.live.snapshots import Snapshots
from flower_ops.monitor.services.action_lookup import TaskLookup
from flower_ops.monitor.services.actions import TaskActionService
from flower_ops.monitor.services.audit import AuditTrail
from flower_ops.monitor.services.cancellation import Cancellation
from flower_ops.monitor.services.capabilities import Capabilities
from flower_ops.monitor.services.celery_gateway import CeleryGateway
from flower_ops.monitor.services.idempotency import IdempotencyService, idempotency_service
from flower_ops.monitor.services.insights import InsightsService
from flower_ops.monitor.services.queues import QueueService, WatchedQueues
from flower_ops.monitor.services.series import SeriesRecorder
from flower_ops.monitor.services.stats import StatsService, ThroughputTracker
from flower_ops.monitor.services.tasks import TaskQueryService
from flower_ops.monitor.services.worker_arrivals import CHECK_INTERVAL_SECONDS, WorkerArrivals
from flower_ops.monitor.services.workers import RunningTasks, WorkerService
from flower_ops.monitor.services.workflow_actions import WorkflowActions
from flower_ops.monitor.services.workflows import WorkflowIndex, WorkflowService
from flower_ops.monitor.sources.broker import queue_source_for
from flower_ops.monitor.sources.flower_tasks import FlowerTasks
from flower_ops.monitor.sources.task_index import TaskIndex
from flower_ops.revocations import RevocationMarkers

logger = logging.getLogger(__name__)

INDEX_SYNC_MS = 100


@dataclass(frozen=True, eq=False)
class FlowerOps:
    """Everything the plugin adds to one Flower application, built once."""

    flower: Any
    config: MonitorConfig
    io_loop: IOLoop
    blocking: BlockingRunner
    authority: TokenAuthority
    database: Database | None
    index: TaskIndex
    throughput: ThroughputTracker
    capabilities: Capabilities
    history: PgHistory | None
    probe: WorkerProbe
    workers: WorkerService
    arrivals: WorkerArrivals
    queues: QueueService
    tasks: TaskQueryService
    alerts: AlertBus
    health: HealthMonitor
    stats: StatsService
    insights: InsightsService
    workflows: WorkflowService
    workflow_actions: WorkflowActions
    actions: TaskActionService
    feed: LiveFeed
    instances: MonitorInstances
    idempotency: IdempotencyService
    routes: list[Route] = field(default_factory=list)
    heap: HeapKeeper = field(default_factory=HeapKeeper)
    _timers: list[PeriodicCallback] = field(default_factory=list)

    def prefixed(self, path: str) -> str:
        return prefixed(self.flower, path)

    def start(self) -> None:
        """Start the background work; runs on the IOLoop thread."""
        if self.database is not None:
            self.blocking(_open_database, self.database)
        timers = [
            (self.index.tick, INDEX_SYNC_MS),
            (lambda: self.queues.refresh_in_background(self.blocking),
             self.config.queue_refresh_seconds * 1000),
            (lambda: _refresh_inspect(self.flower), self.config.inspect_interval_seconds * 1000),
            (self.arrivals.tick, CHECK_INTERVAL_SECONDS * 1000),
        ]
        for callback, interval_ms in timers:
            timer = PeriodicCallback(callback, interval_ms, jitter=0.1)
            timer.start()
            self._timers.append(timer)
        self.queues.refresh_in_background(self.blocking)
        self.feed.start()
        self.health.start()
        self.heap.start()

    def stop(self) -> None:
        self.heap.stop()
        self.health.stop()
        self.feed.stop()
        for timer in self._timers:
            timer.stop()
        self._timers.clear()
        self.instances.leave()
        if self.database is not None:
            self.database.close()
        self.blocking.shutdown()


def build(flower_app: Any, config: MonitorConfig) -> FlowerOps:
    """Every service, in dependency order. Read top to bottom."""
    io_loop: IOLoop = flower_app.io_loop
    capp = flower_app.capp
    options = flower_app.options
    blocking = BlockingRunner(io_loop)
    authority = TokenAuthority(config.jwt)
    instance_id = new_instance_id()   # this monitor's, in the feed and the registry

    # Sources: Flower's event state (indexed), PostgreSQL, the broker
    index = TaskIndex(flower_app.events.state)
    flower_tasks = FlowerTasks(index)
    database = (Database(url=config.database_url, application_name="flower-ops-monitor",
                         max_size=config.db_pool_max_size, statement_timeout_seconds=30.0)
                if config.database_url else None)
    history = PgHistory(database) if database is not None else None
    broker_url = _broker_url(capp)
    queue_source = queue_source_for(broker_url, capp.conf.broker_transport_options or {},
                                    broker_api=getattr(options, "broker_api", None),
                                    use_ssl=capp.conf.broker_use_ssl)

    # Services over them
    throughput = ThroughputTracker()
    inspect_timeout_ms = getattr(options, "inspect_timeout", None) or 1000.0
    probe = WorkerProbe(
        capp=capp, run_blocking=blocking,
        timeout_seconds=max(0.5, float(inspect_timeout_ms) / 1000.0),
        has_live_workers=lambda: any(w.alive for w in list(index.state.workers.values())))
    capabilities = Capabilities(history_configured=history is not None, probed=probe.replies)
    running = RunningTasks(indexed=index.sort_key)
    arrivals = WorkerArrivals(capp=capp, workers=index.state.workers,
                              inspected=flower_app.inspector.workers, probed=probe.replies,
                              run_blocking=blocking,
                              timeout_seconds=max(0.5, float(inspect_timeout_ms) / 1000.0))
    workers = WorkerService(state=index.state, inspected=flower_app.inspector.workers,
                            probed=probe.replies, running=running, arrivals=arrivals)
    configured_queues = [capp.conf.task_default_queue or "celery", *config.extra_queues,
                         *(getattr(q, "name", None) for q in (capp.conf.task_queues or ()))]
    queues = QueueService(
        source=queue_source, transport=broker_url.split("://", 1)[0],
        queue_names=WatchedQueues(configured=configured_queues, consumed=workers.queue_names,
                                  seen=lambda: index.values("queue")),
        consumers=workers.consumers_by_queue,
        # revoked messages stay queued where they cannot be taken out (RabbitMQ)
        revoked_waiting=(None if hasattr(queue_source, "remove_messages")
                         else flower_tasks.revoked_waiting))
    tasks = TaskQueryService(index=index, history=history, run_blocking=blocking,
                             trace_url=config.trace_url)

    # Health: the alert bus first, so its subscribers and publisher can come in any order
    alerts = AlertBus()
    webhook = None
    if config.alert_webhook_url:
        # several monitors of a group: each alert change is posted by one of them
        ledger = ledger_for(database=database, broker_url=broker_url,
                            group=config.monitor_group, instance_id=instance_id)
        webhook = WebhookNotifier(url=config.alert_webhook_url, claim=None if ledger is None
                                  else functools.partial(blocking, ledger.claim))
    purge = getattr(options, "purge_offline_workers", None)
    health = HealthMonitor(
        thresholds=config.alerts, bus=alerts, index=index, queues=queues, workers=workers,
        throughput=throughput, probe=probe, webhook=webhook, io_loop=io_loop,
        probe_interval_seconds=config.inspect_interval_seconds,
        purge_offline_seconds=float(purge) if purge else None)
    stats = StatsService(index=index, throughput=throughput, workers=workers.counts,
                         queues=queues.totals, alerts=health.stats_alerts,
                         capabilities=capabilities.summary)
    recorder = SeriesRecorder()
    queues.depth_listeners.append(recorder.sample_queues)
    insights = InsightsService(recorder=recorder, index=index,
                               insights=PgInsights(database) if database is not None else None,
                               run_blocking=blocking)

    # Actions and the live feed
    action_store = ActionStore(database) if database is not None else None
    audit = AuditTrail(action_store)
    gateway = CeleryGateway(capp=capp, markers=RevocationMarkers(capp),
                            remove_queued=getattr(queue_source, "remove_messages", None))
    actions = TaskActionService(
        lookup=TaskLookup(capp=capp, memory_lookup=index.lookup, store=action_store,
                          run_blocking=blocking),
        gateway=gateway, store=action_store, audit=audit,
        cancellation=Cancellation(
            gateway=gateway, store=action_store, audit=audit,
            memory_states=flower_tasks.states, record_revoked=flower_tasks.record_revoked,
            run_blocking=blocking, confirm_seconds=config.cancel_confirm_seconds),
        run_blocking=blocking, max_tasks=config.bulk_max_tasks)
    workflow_index = WorkflowIndex(index)
    workflows = WorkflowService(index=index, workflows=workflow_index,
                                stored=PgWorkflows(database) if database is not None else None,
                                run_blocking=blocking)
    workflow_actions = WorkflowActions(workflows=workflows, actions=actions, capp=capp)
    feed = LiveFeed(
        settings=FeedSettings(
            flush_seconds=config.ws_flush_seconds, snapshot_seconds=config.ws_snapshot_seconds,
            replay_buffer_size=config.ws_replay_buffer_size,
            client_queue_size=config.ws_client_queue_size,
            client_buffer_bytes=config.ws_client_buffer_bytes),
        index=index, tasks=tasks, io_loop=io_loop,
        snapshots=Snapshots(tasks=tasks, stats=stats, workers=workers, queues=queues,
                            io_loop=io_loop, instance=instance_id))
    instances = MonitorInstances(
        instance_id=instance_id, group=config.monitor_group, io_loop=io_loop,
        key_fingerprint=authority.key_fingerprint, run_blocking=blocking, version=__version__,
        alerts=health.book,
        registry=registry_for(database=database, broker_url=broker_url,
                              group=config.monitor_group))

    # Who hears what: index changes and alerts, in this order (the running
    # tasks first: whoever hears next may read the workers' counts)
    index.observers.append(running.observe)
    index.change_listeners.append(running.forget_missing)
    for observer in (throughput.observe, recorder.observe, capabilities.observe, queues.observe,
                     health.observe, feed.on_transition):
        index.observers.append(observer)
    index.change_listeners.append(health.forget_missing)
    index.change_listeners.append(workflow_index.changed)
    index.change_listeners.append(feed.on_changes)
    if webhook is not None:
        alerts.subscribe(webhook.notify)
    alerts.subscribe(feed.on_alert)
    install_collector(health)

    ops = FlowerOps(
        flower=flower_app, config=config, io_loop=io_loop, blocking=blocking,
        authority=authority, database=database, index=index, throughput=throughput,
        capabilities=capabilities, history=history, probe=probe, workers=workers,
        arrivals=arrivals,
        queues=queues, tasks=tasks, alerts=alerts, health=health, stats=stats,
        insights=insights, actions=actions, workflows=workflows,
        workflow_actions=workflow_actions, feed=feed, instances=instances,
        idempotency=idempotency_service(database, instance_id, blocking, config))
    ops.routes.extend(route_table(ops))
    return ops


def route_table(ops: FlowerOps) -> list[Route]:
    """Every route, prefixed with ``--url_prefix``; the API's 404 last."""
    config = ops.config
    auth = RequestAuth(ops.authority, ops.blocking)
    parts: list[HttpPart] = [
        api_http.part(auth=auth, authority=ops.authority,
                      policy=TokenPolicy(ttl_seconds=config.token_ttl_seconds,
                                         scopes=config.token_scopes,
                                         anonymous=config.anonymous_tokens),
                      flower_options=ops.flower.options, stats=ops.stats, tasks=ops.tasks,
                      workers=ops.workers, queues=ops.queues),
        actions_http.part(auth=auth, actions=ops.actions, tasks=ops.tasks,
                          workflows=ops.workflow_actions, idempotency=ops.idempotency),
        alerts_http.part(auth=auth, health=ops.health),
        insights_http.part(auth=auth, insights=ops.insights),
        workflows_http.part(auth=auth, workflows=ops.workflows, actions=ops.workflow_actions,
                            idempotency=ops.idempotency),
        ws_http.part(auth=auth, feed=ops.feed, allowed_origins=config.ws_allowed_origins),
        dashboard_http.part(settings=ops.flower.settings, prefixed=ops.prefixed,
                            snapshot_seconds=config.ws_snapshot_seconds),
    ]
    paths = {path: ops_ for part in parts for path, ops_ in part.openapi_paths.items()}
    document = openapi.document(ops.prefixed(API_BASE), paths)
    table: list[Route] = [route for part in parts for route in part.routes]
    table.append((f"{API_BASE}/?", api_http.IndexHandler,
                  {"index": api_http.api_index(document, version=__version__)}))
    table.append((f"{API_BASE}/openapi.json", api_http.OpenApiHandler, {"document": document}))
    table.append((f"{API_BASE}(?:/.*)?", ApiNotFound, {}))
    return [(ops.prefixed(path), handler, kwargs) for path, handler, kwargs in table]


def prefixed(flower_app: Any, path: str) -> str:
    prefix = (flower_app.options.url_prefix or "").strip("/")
    return f"/{prefix}{path}" if prefix else path


def _open_database(database: Database) -> None:
    try:
        database.open()
    except Exception:
        logger.exception("could not open the PostgreSQL history (DATABASE_URL)")


def _refresh_inspect(flower_app: Any) -> None:
    try:
        flower_app.update_workers()
    except Exception:
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
    after the IOLoop starts; timers begin once it runs. A second call returns
    the first one's plugin.
    """
    existing = getattr(flower_app, "flower_ops", None)
    if isinstance(existing, FlowerOps):
        return existing
    ops = build(flower_app, config if config is not None else MonitorConfig.from_env())
    flower_app.add_handlers(r".*$", ops.routes)
    cap_request_bodies(flower_app, ops.config.max_request_bytes)
    flower_app.flower_ops = ops
    ops.io_loop.add_callback(ops.start)
    return ops


__all__ = ["FlowerOps", "build", "install", "route_table"]

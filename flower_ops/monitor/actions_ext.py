"""Task management: cancel and retry, one task or many, audited (SPEC §4).

``extend(ops)`` is called by ``install()`` before routes are registered: it
builds the ``TaskActionService`` (``ops.actions``) and adds the routes and
their OpenAPI description.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flower_ops.monitor.app import FlowerOps


def extend(ops: FlowerOps) -> None:
    from flower_ops.monitor.app import API_BASE
    from flower_ops.revocations import RevocationMarkers
    from flower_ops.monitor.http import actions_openapi as openapi_paths
    from flower_ops.monitor.http.actions import AuditHandler, BulkActionHandler, CancelHandler, RetryHandler
    from flower_ops.monitor.services.actions import TaskActionService
    from flower_ops.db.actions import ActionStore

    store = None
    if ops.config.database_url:
        store = ActionStore(database_url=ops.config.database_url,
                            pool_max_size=ops.config.db_pool_max_size)

    def memory_lookup(ids: Sequence[str]) -> Mapping[str, Any]:
        # IOLoop thread only (Flower's threading rule); the service calls it
        # before its first await
        ops.index.sync()
        data = ops.index.state.tasks.data
        return {task_id: data[task_id] for task_id in ids if task_id in data}

    capp = ops.flower.capp
    ops.actions = TaskActionService(  # type: ignore[attr-defined]
        capp=capp, memory_lookup=memory_lookup, store=store,
        markers=RevocationMarkers(capp), run_blocking=ops.run_blocking,
        max_tasks=ops.config.bulk_max_tasks)
    # The bulk route first: "bulk" would otherwise match the task id group.
    ops.extra_routes.extend([
        (f"{API_BASE}/tasks/bulk/(cancel|retry)/?", BulkActionHandler),
        (f"{API_BASE}/tasks/([^/]+)/cancel/?", CancelHandler),
        (f"{API_BASE}/tasks/([^/]+)/retry/?", RetryHandler),
        (f"{API_BASE}/audit/?", AuditHandler),
    ])
    if store is not None:
        ops.on_stop.append(store.close)
    openapi_paths.register(max_tasks=ops.config.bulk_max_tasks)

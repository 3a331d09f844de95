"""``instrument(app)``: what runs inside the user's Celery app.

One call turns on what the monitor needs:

* task events, sent events and the STARTED state;
* extended results, so the result backend also knows name, args and queue;
* exact arguments: when a task message is built, the real args/kwargs are
  encoded as JSON into two fields of the ``task-sent`` event (see
  ``payload.py``). ``argsrepr``/``kwargsrepr`` stay Celery's own reprs, so
  Flower, ``celery inspect`` and worker logs show what they show without us;
  the monitor (through Flower's memory), the sync worker (its rows) and, with
  ``result_extended``, the result backend keep the exact values a retry
  needs. The cost is one JSON encoding per publish of data Celery serializes
  anyway;
* the message's workflow links (group, chain continuation, callbacks,
  chord body) and the workflow it belongs to, in two fields of the
  ``task-sent`` event (see ``core/canvas.py``);
* the trace id of the message's W3C trace context (``traceparent``, when a
  tracing setup propagates one), in a field of the ``task-sent`` event;
* a publish timestamp header (and the AMQP ``timestamp`` property), so the age
  of the oldest queued message can be read from the broker;
* a ``flower_ops_stats`` inspect command in workers that reports the current
  RSS of the worker and its pool processes (see ``health/worker_command.py``);
* revokes that survive restarts: at start-up a worker loads the task ids the
  monitor cancelled recently (see ``revocations.py``);
* lossless capture: on a Redis broker every task event the process sends is
  also appended to a Redis stream (``flower_ops:events``) that the sync
  workers read through a consumer group and acknowledge after the commit
  (see ``capture.py``; ``FLOWER_OPS_CAPTURE=off`` or ``capture=False``
  turns it off).
"""
from __future__ import annotations

import time
from typing import Any

from celery import Celery, signals
from celery.app.amqp import AMQP

from flower_ops.core.canvas import (
    CANVAS_FIELD,
    RESUMES_HEADER,
    WORKFLOW_FIELD,
    canvas_of,
    encode_canvas,
)
from flower_ops.core.payload import exact_fields, is_exact_text
from flower_ops.core.trace import TRACE_ID_FIELD, TRACEPARENT_HEADER, trace_id_of

PUBLISHED_AT_HEADER = "flower_ops_published_at"
_INSTRUMENTED_ATTR = "_flower_ops_instrumented"


class ExactArgsAMQP(AMQP):
    """Celery's AMQP helper with exact arguments in ``task-sent`` and a publish stamp."""

    def as_task_v2(self, task_id: str, name: str, args: Any = None, kwargs: Any = None,
                   *rest: Any, **options: Any) -> Any:
        argsrepr, kwargsrepr = options.get("argsrepr"), options.get("kwargsrepr")
        # An exact encoding passed as a repr (the monitor's retry asks for
        # exact arguments that way, for apps we did not instrument) is asked
        # for here in the stock form; a repr of the caller's own (one that
        # hides a secret, say) is theirs, and no exact copy travels.
        asked = is_exact_text(argsrepr) or is_exact_text(kwargsrepr)
        wanted = asked or (argsrepr is None and kwargsrepr is None)
        if asked:
            for field in ("argsrepr", "kwargsrepr"):
                if is_exact_text(options.get(field)):
                    options[field] = None   # Celery makes its own
        message = super().as_task_v2(task_id, name, args, kwargs, *rest, **options)
        if wanted and message.sent_event is not None:
            message.sent_event.update(exact_fields(args, kwargs) or {})
        headers = message.headers
        body = message.body
        canvas = canvas_of(body[2] if isinstance(body, tuple) and len(body) == 3 else None,
                           headers)
        headers[WORKFLOW_FIELD] = self._workflow(task_id, headers, canvas)
        if message.sent_event is not None:
            message = message._replace(
                sent_event=_SentEvent(message.sent_event, headers, task_id, canvas))
        now = time.time()
        message.headers[PUBLISHED_AT_HEADER] = now
        # RabbitMQ's management API reports the head message's timestamp
        message.properties.setdefault("timestamp", int(now))
        return message


    def _workflow(self, task_id: str, headers: dict[str, Any], canvas: dict[str, Any]) -> str:
        """The publishing task's workflow, else the group's, else Celery's root."""
        parent = self.app.current_worker_task
        inherited = getattr(parent.request, WORKFLOW_FIELD, None) if parent else None
        if isinstance(inherited, str) and inherited:
            return inherited
        if canvas.get("group") and not headers.get("parent_id"):
            return str(canvas["group"])
        return str(headers.get("root_id") or task_id)


class _SentEvent(dict[str, Any]):
    """The fields of a ``task-sent`` event, with the message's trace id.

    Tracing (e.g. ``opentelemetry-instrumentation-celery``) injects the W3C
    ``traceparent`` into the message headers in ``before_task_publish``,
    after this message was built; Celery completes the event's fields with
    ``update()`` just before it sends the event, after that signal. So that
    is where the trace id is read. The event sent is a plain dict copy.
    """

    __slots__ = ("_canvas", "_headers", "_task_id")

    def __init__(self, fields: dict[str, Any], headers: dict[str, Any], task_id: str,
                 canvas: dict[str, Any]) -> None:
        super().__init__(fields)
        self._headers = headers
        self._task_id = task_id
        self._canvas = canvas

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        trace_id = trace_id_of(self._headers.get(TRACEPARENT_HEADER))
        if trace_id is not None:
            self[TRACE_ID_FIELD] = trace_id
        # the workflow as finally sent (a resume names it in its headers)
        workflow = self._headers.get(WORKFLOW_FIELD)
        canvas = self._canvas
        resumes = self._headers.get(RESUMES_HEADER)
        if isinstance(resumes, dict) and resumes:
            canvas = {**canvas, "resumes": resumes}
        if canvas:
            self[CANVAS_FIELD] = encode_canvas(canvas)
        if canvas or (workflow and workflow != self._task_id):
            self[WORKFLOW_FIELD] = workflow


def instrument(app: Celery, *, exact_args: bool = True, capture: bool | None = None,
               capture_stream: str | None = None, capture_maxlen: int | None = None) -> Celery:
    """Configure ``app`` for Flower Ops. Idempotent; returns the app.

    ``capture`` (default: ``FLOWER_OPS_CAPTURE``, auto) writes every task event
    to the Redis stream ``capture_stream`` (``FLOWER_OPS_CAPTURE_STREAM``)
    capped at ``capture_maxlen`` entries (``FLOWER_OPS_CAPTURE_MAXLEN``)."""
    if getattr(app, _INSTRUMENTED_ATTR, False):
        return app
    app.conf.update(
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        result_extended=True,
    )
    if exact_args:
        _use_exact_amqp(app)
    _load_revocations_at_worker_start(app)
    _register_worker_command()
    if capture is not False:
        from flower_ops.capture import CaptureSettings, enable_capture

        enable_capture(app, CaptureSettings.from_env(
            mode="auto" if capture else None, stream_key=capture_stream,
            maxlen=capture_maxlen))
    setattr(app, _INSTRUMENTED_ATTR, True)
    return app


def _load_revocations_at_worker_start(app: Celery) -> None:
    def on_worker_init(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is app:
            from flower_ops.revocations import load_into_worker

            load_into_worker(app)

    # weak=False: the closure has no other owner
    signals.worker_init.connect(on_worker_init, weak=False)


def _register_worker_command() -> None:
    from flower_ops.worker_stats import register

    register()


def _use_exact_amqp(app: Celery) -> None:
    if "amqp" not in app.__dict__:
        app.amqp_cls = ExactArgsAMQP  # instantiated lazily, like Celery's own
        return
    amqp = app.amqp
    if isinstance(amqp, ExactArgsAMQP) or type(amqp) is not AMQP:
        return  # a custom AMQP class is the user's; leave it alone
    amqp.__class__ = ExactArgsAMQP
    amqp.task_protocols[2] = amqp.as_task_v2
    amqp.__dict__.pop("create_task_message", None)

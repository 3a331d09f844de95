"""The names both ends of lossless capture agree on: ``instrument(app)``'s
writer (``flower_ops/capture.py``) and the sync worker's readers
(``sync_worker/stream.py``, ``amqp_queue.py``, ``receiver.py``)."""
from __future__ import annotations

# Marks the pub/sub copy of an event that the capture stream also carries: the
# sync worker's pub/sub listener leaves such events to the stream
CAPTURED_FIELD = "fo_captured"
# The Redis stream (the transport's global_keyprefix is added) and the sync
# workers' consumer group
DEFAULT_STREAM_KEY = "flower_ops:events"
DEFAULT_STREAM_GROUP = "flower-ops-sync"
# On RabbitMQ: the durable queue bound to the event exchange with ``task.#``
DEFAULT_QUEUE = "flower_ops.events"

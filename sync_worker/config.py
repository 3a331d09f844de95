"""Configuration of the sync worker: one frozen object, built from the environment.

With ``monitor``'s config module, the only reader of ``os.environ``. A bad
value raises ``flower_ops.core.env.ConfigError`` naming the variable.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flower_ops.core.capture_names import DEFAULT_QUEUE, DEFAULT_STREAM_GROUP, DEFAULT_STREAM_KEY
from flower_ops.core.env import DEFAULT_REDIS_URL, ConfigError, EnvReader
from sync_worker.backoff import Backoff

BROKER_SCHEMES = ("redis", "rediss", "unix", "amqp", "amqps", "pyamqp", "memory")


@dataclass(frozen=True)
class SyncWorkerConfig:
    database_url: str
    redis_url: str = DEFAULT_REDIS_URL
    result_backend: str | None = None
    app: str | None = None                     # --app: reuse a Celery app's config
    batch_size: int = 2000                     # flush when this many events wait
    flush_interval_seconds: float = 0.2        # ... or when the oldest waited this long
    max_buffered_events: int = 500_000         # beyond this, back-pressure on the receiver
    reconcile_interval_seconds: float = 30.0
    reconcile_batch_size: int = 500
    reconcile_settle_seconds: float = 2.0      # leave rows touched this recently to events
    worker_lost_seconds: float = 60.0          # no heartbeat this long: the worker is gone
    worker_query_timeout_seconds: float = 2.0  # wait for workers to say which tasks they have
    retention_days: float = 30.0               # 0 keeps everything
    retention_mode: str = "delete"             # delete | archive
    retention_batch_size: int = 5000           # rows per transaction of the partition migration
    retention_interval_seconds: float = 600.0
    partition_days: int = 1                    # days per history partition
    partitions_ahead_days: int = 7             # partitions created this many days ahead
    metrics_port: int = 9808                   # 0 disables the metrics endpoint
    metrics_address: str = "0.0.0.0"
    leader_lock_key: int = 0x466C6F7753796E63  # "FlowSync"
    leader_poll_seconds: float = 1.0
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    log_level: str = "INFO"
    fast_redis_events: bool = True             # own PSUBSCRIBE + decoder on Redis brokers
    discovery_interval_seconds: float = 300.0  # periodic pass; 0 disables discovery
    discovery_batch_size: int = 2000           # result-backend keys per SCAN tick
    discovery_pause_seconds: float = 0.02      # between ticks: room for the writer
    discover_queued_max: int = 10_000          # messages read per queue per pass; 0: off
    capture_mode: str = "auto"                 # auto | stream | events (see README)
    stream_key: str = DEFAULT_STREAM_KEY       # instrument(app)'s capture stream
    stream_group: str = DEFAULT_STREAM_GROUP   # the replicas' consumer group
    stream_read_count: int = 20                # entries per XREADGROUP (each <= 100 events)
    claim_idle_seconds: float = 30.0           # claim entries unacknowledged this long
    stream_trim_interval_seconds: float = 10.0  # leader: XTRIM MINID, gone consumers
    queue_name: str = DEFAULT_QUEUE            # RabbitMQ: the durable event queue
    queue_prefetch: int = 2000                 # RabbitMQ: unacknowledged messages per replica

    @property
    def backend_url(self) -> str:
        return self.result_backend or self.redis_url

    def backoff(self) -> Backoff:
        """A fresh reconnect backoff (each network loop keeps its own)."""
        return Backoff(initial_seconds=self.backoff_initial_seconds,
                       max_seconds=self.backoff_max_seconds)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 app: str | None = None) -> SyncWorkerConfig:
        env = EnvReader(environ)
        database_url = env.url("DATABASE_URL", schemes=("postgres", "postgresql"))
        if database_url is None:
            raise ConfigError("DATABASE_URL", "required: the PostgreSQL the sync worker writes "
                                              "to (postgresql://user:pass@host:5432/db)")
        mode = (env.text("FLOWER_OPS_SYNC_RETENTION_MODE", "delete") or "delete").lower()
        if mode not in {"delete", "archive"}:
            raise ConfigError("FLOWER_OPS_SYNC_RETENTION_MODE",
                              f"expected delete or archive, got {mode!r}")
        level = (env.text("FLOWER_OPS_SYNC_LOG_LEVEL", "INFO") or "INFO").upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError("FLOWER_OPS_SYNC_LOG_LEVEL",
                              f"expected DEBUG, INFO, WARNING or ERROR, got {level!r}")
        capture_mode = (env.text("FLOWER_OPS_SYNC_CAPTURE", "auto") or "auto").lower()
        if capture_mode not in {"auto", "stream", "events"}:
            raise ConfigError("FLOWER_OPS_SYNC_CAPTURE",
                              f"expected auto, stream or events, got {capture_mode!r}")
        backoff_initial = env.number("FLOWER_OPS_SYNC_BACKOFF_INITIAL_SECONDS", 0.5,
                                     minimum=0.01, maximum=60.0)
        backoff_max = env.number("FLOWER_OPS_SYNC_BACKOFF_MAX_SECONDS", 30.0, minimum=0.1,
                                 maximum=3600.0)
        if backoff_max < backoff_initial:
            raise ConfigError("FLOWER_OPS_SYNC_BACKOFF_MAX_SECONDS",
                              "must be at least FLOWER_OPS_SYNC_BACKOFF_INITIAL_SECONDS")
        return cls(
            database_url=database_url,
            redis_url=env.url("REDIS_URL", schemes=BROKER_SCHEMES,
                              default=DEFAULT_REDIS_URL) or DEFAULT_REDIS_URL,
            result_backend=env.text("CELERY_RESULT_BACKEND"),
            app=app or env.text("FLOWER_OPS_SYNC_APP"),
            batch_size=env.integer("FLOWER_OPS_SYNC_BATCH_SIZE", 2000, minimum=1, maximum=100_000),
            flush_interval_seconds=env.number("FLOWER_OPS_SYNC_FLUSH_INTERVAL_SECONDS", 0.2,
                                              minimum=0.01, maximum=60.0),
            max_buffered_events=env.integer("FLOWER_OPS_SYNC_MAX_BUFFERED_EVENTS", 500_000,
                                            minimum=1000),
            reconcile_interval_seconds=env.number("FLOWER_OPS_SYNC_RECONCILE_INTERVAL_SECONDS",
                                                  30.0, minimum=1.0, maximum=86400.0),
            reconcile_batch_size=env.integer("FLOWER_OPS_SYNC_RECONCILE_BATCH_SIZE", 500,
                                             minimum=1, maximum=10_000),
            reconcile_settle_seconds=env.number("FLOWER_OPS_SYNC_RECONCILE_SETTLE_SECONDS", 2.0,
                                                minimum=0.0, maximum=3600.0),
            worker_lost_seconds=env.number("FLOWER_OPS_SYNC_WORKER_LOST_SECONDS", 60.0,
                                           minimum=1.0, maximum=86400.0),
            worker_query_timeout_seconds=env.number(
                "FLOWER_OPS_SYNC_WORKER_QUERY_TIMEOUT_SECONDS", 2.0, minimum=0.1, maximum=60.0),
            retention_days=env.number("FLOWER_OPS_SYNC_RETENTION_DAYS", 30.0, minimum=0.0),
            retention_mode=mode,
            retention_batch_size=env.integer("FLOWER_OPS_SYNC_RETENTION_BATCH_SIZE", 5000,
                                             minimum=1, maximum=100_000),
            partition_days=env.integer("FLOWER_OPS_SYNC_PARTITION_DAYS", 1, minimum=1,
                                       maximum=366),
            partitions_ahead_days=env.integer("FLOWER_OPS_SYNC_PARTITIONS_AHEAD_DAYS", 7,
                                              minimum=1, maximum=366),
            retention_interval_seconds=env.number("FLOWER_OPS_SYNC_RETENTION_INTERVAL_SECONDS",
                                                  600.0, minimum=1.0),
            metrics_port=env.integer("FLOWER_OPS_SYNC_METRICS_PORT", 9808, minimum=0,
                                     maximum=65535),
            metrics_address=env.text("FLOWER_OPS_SYNC_METRICS_ADDRESS", "0.0.0.0") or "0.0.0.0",
            leader_lock_key=env.integer("FLOWER_OPS_SYNC_LEADER_LOCK_KEY", 0x466C6F7753796E63,
                                        minimum=-(2 ** 63), maximum=2 ** 63 - 1),
            leader_poll_seconds=env.number("FLOWER_OPS_SYNC_LEADER_POLL_SECONDS", 1.0,
                                           minimum=0.05, maximum=60.0),
            backoff_initial_seconds=backoff_initial,
            backoff_max_seconds=backoff_max,
            log_level=level,
            fast_redis_events=env.flag("FLOWER_OPS_SYNC_FAST_REDIS_EVENTS", True),
            discovery_interval_seconds=env.number("FLOWER_OPS_SYNC_DISCOVERY_INTERVAL_SECONDS",
                                                  300.0, minimum=0.0, maximum=86400.0),
            discovery_batch_size=env.integer("FLOWER_OPS_SYNC_DISCOVERY_BATCH_SIZE", 2000,
                                             minimum=10, maximum=100_000),
            discovery_pause_seconds=env.number("FLOWER_OPS_SYNC_DISCOVERY_PAUSE_SECONDS", 0.02,
                                               minimum=0.0, maximum=60.0),
            discover_queued_max=env.integer("FLOWER_OPS_SYNC_DISCOVER_QUEUED_MAX", 10_000,
                                            minimum=0, maximum=10_000_000),
            capture_mode=capture_mode,
            stream_key=env.text("FLOWER_OPS_SYNC_STREAM", DEFAULT_STREAM_KEY)
            or DEFAULT_STREAM_KEY,
            stream_group=env.text("FLOWER_OPS_SYNC_STREAM_GROUP", DEFAULT_STREAM_GROUP)
            or DEFAULT_STREAM_GROUP,
            stream_read_count=env.integer("FLOWER_OPS_SYNC_STREAM_READ_COUNT", 20, minimum=1,
                                          maximum=10_000),
            claim_idle_seconds=env.number("FLOWER_OPS_SYNC_CLAIM_IDLE_SECONDS", 30.0,
                                          minimum=0.5, maximum=86400.0),
            stream_trim_interval_seconds=env.number(
                "FLOWER_OPS_SYNC_STREAM_TRIM_INTERVAL_SECONDS", 10.0, minimum=0.1,
                maximum=3600.0),
            queue_name=env.text("FLOWER_OPS_SYNC_QUEUE", DEFAULT_QUEUE)
            or DEFAULT_QUEUE,
            queue_prefetch=env.integer("FLOWER_OPS_SYNC_QUEUE_PREFETCH", 2000, minimum=1,
                                       maximum=65535),
        )

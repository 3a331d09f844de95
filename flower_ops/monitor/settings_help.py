"""Every environment variable the monitor reads, with its default: what
``celery -A APP flower-ops --help`` lists after Flower's own options.

``config.MonitorConfig.from_env`` is where they are read and validated;
``tests/test_help.py`` holds this list to it (every variable it reads is
here) and to the README's settings table (same names, same defaults).
"""
from __future__ import annotations

from typing import NamedTuple


class Setting(NamedTuple):
    name: str
    default: str
    meaning: str


MONITOR_SETTINGS: tuple[Setting, ...] = (
    Setting("REDIS_URL", "redis://localhost:6379/0",
            "broker URL (redis, rediss, unix, amqp, amqps, pyamqp, memory); also the result "
            "backend unless CELERY_RESULT_BACKEND is set"),
    Setting("CELERY_RESULT_BACKEND", "REDIS_URL", "result backend URL"),
    Setting("DATABASE_URL", "unset", "PostgreSQL holding the execution history (unset: history "
                                     "features report \"not configured\")"),
    Setting("JWT_SECRET", "unset", "HMAC key for HS* tokens, at least 16 characters"),
    Setting("JWT_PUBLIC_KEY", "unset", "PEM public key (or a path to one) for RS*/PS*/ES*/EdDSA"),
    Setting("JWT_JWKS_URL", "unset", "JWKS endpoint (http/https), keys rotated by kid"),
    Setting("JWT_ALGORITHMS", "HS256", "comma-separated allow-list, matching the key type"),
    Setting("JWT_AUDIENCE", "unset", "required aud claim, enforced when set"),
    Setting("JWT_ISSUER", "unset", "required iss claim, enforced when set"),
    Setting("FLOWER_OPS_JWT_LEEWAY_SECONDS", "0", "clock skew allowed on exp/nbf (0-300)"),
    Setting("FLOWER_OPS_JWKS_REFRESH_COOLDOWN_SECONDS", "30",
            "least time between two JWKS fetches for an unknown kid (0-3600)"),
    Setting("FLOWER_OPS_MAX_REQUEST_BYTES", "10485760",
            "largest request body the monitor reads on any route (1 MiB-1 GiB)"),
    Setting("FLOWER_OPS_TOKEN_SECRET", "unset",
            "shared secret (32+ characters) signing tokens from POST /token (unset: "
            "JWT_SECRET, else random per process); needed by "
            "several monitors behind one balancer unless they share JWT_SECRET"),
    Setting("FLOWER_OPS_MONITOR_GROUP", "default",
            "monitors that serve as one; one with another token key says so at start-up "
            "and raises the alert monitor_key_mismatch"),
    Setting("FLOWER_OPS_TOKEN_TTL_SECONDS", "900", "lifetime of tokens from POST /token"),
    Setting("FLOWER_OPS_TOKEN_SCOPES", "monitoring:read monitoring:write",
            "space-separated scopes put in issued tokens"),
    Setting("FLOWER_OPS_ANONYMOUS_TOKENS", "false",
            "let POST /token issue tokens when Flower has no auth configured"),
    Setting("FLOWER_OPS_INSPECT_INTERVAL_SECONDS", "10",
            "how often worker inspect data is refreshed (1-3600)"),
    Setting("FLOWER_OPS_QUEUE_REFRESH_SECONDS", "2",
            "how often queue lengths are read from the broker (0.2-3600)"),
    Setting("FLOWER_OPS_QUEUES", "unset",
            "comma-separated queues to report besides those workers consume"),
    Setting("FLOWER_OPS_WS_ALLOWED_ORIGINS", "unset (same origin only)",
            "comma-separated origins allowed to open the live feed"),
    Setting("FLOWER_OPS_WS_SNAPSHOT_SECONDS", "2", "interval of the feed's snapshot (0.1-2)"),
    Setting("FLOWER_OPS_WS_CLIENT_QUEUE_SIZE", "1000",
            "messages buffered per feed client before it is dropped"),
    Setting("FLOWER_OPS_WS_REPLAY_BUFFER_SIZE", "10000",
            "task changes kept for reconnecting clients (0: always a snapshot)"),
    Setting("FLOWER_OPS_WS_CLIENT_BUFFER_BYTES", "8388608",
            "bytes buffered per feed client before it is dropped"),
    Setting("FLOWER_OPS_WS_FLUSH_SECONDS", "0.2",
            "how long task changes are coalesced before they are pushed (0.01-1)"),
    Setting("FLOWER_OPS_BULK_MAX_TASKS", "1000", "most tasks one bulk action may touch"),
    Setting("FLOWER_OPS_CANCEL_CONFIRM_SECONDS", "3",
            "how long a cancel waits for the worker to confirm (0.1-60)"),
    Setting("FLOWER_OPS_DB_POOL_MAX_SIZE", "4", "PostgreSQL connections the monitor may open"),
    Setting("FLOWER_OPS_STUCK_TASK_SECONDS", "600", "a STARTED task older than this is stuck"),
    Setting("FLOWER_OPS_STUCK_RUNTIME_FACTOR", "10",
            "... or running this many times longer than usual for its name"),
    Setting("FLOWER_OPS_STUCK_MIN_SAMPLES", "20", "runtimes needed before \"usual\" is trusted"),
    Setting("FLOWER_OPS_STUCK_MIN_SECONDS", "30",
            "... and never stuck by that rule before this many seconds"),
    Setting("FLOWER_OPS_BACKLOG_MESSAGES", "100", "queue length that raises a backlog alert"),
    Setting("FLOWER_OPS_BACKLOG_SECONDS", "60",
            "... or a queue growing with no consumer for this long"),
    Setting("FLOWER_OPS_SATURATED_SECONDS", "120",
            "a worker busy at full concurrency this long is overloaded"),
    Setting("FLOWER_OPS_WORKER_OFFLINE_SECONDS", "0",
            "grace period before an offline worker raises an alert"),
    Setting("FLOWER_OPS_ALERT_WEBHOOK_URL", "unset", "http/https URL that receives alerts as JSON"),
    Setting("FLOWER_OPS_TRACE_URL", "unset",
            "link to a task's trace, with {trace_id} (e.g. https://tracing.example/trace/{trace_id})"),
)

DOCS = (
    ("README.md", "start-up, the API, settings, deployment (in the repository and the sdist, "
                  "and the package's description on its index page)"),
    ("docs/", "actions.md, live-feed.md, health.md, sync-worker.md, architecture.md"),
    ("<monitor>/api/automation/monitoring/openapi.json", "the API's OpenAPI 3 document"),
    ("<monitor>/monitoring", "the dashboard"),
)

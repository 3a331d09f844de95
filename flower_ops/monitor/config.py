"""Configuration of the monitor: one frozen object, built from the environment.

Read through ``core.env.EnvReader``, the one reader of ``os.environ`` (the
sync worker has its own frozen config built the same way). Every setting is
validated here; a bad value raises ``ConfigError`` naming the variable, and
the commands turn that into one line on stderr and a non-zero exit.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from flower_ops.core.env import DEFAULT_REDIS_URL, ConfigError, EnvReader

READ_SCOPE = "monitoring:read"
WRITE_SCOPE = "monitoring:write"

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA",
})


@dataclass(frozen=True)
class JwtConfig:
    secret: str | None = None
    public_key: str | None = None
    jwks_url: str | None = None
    algorithms: tuple[str, ...] = ("HS256",)
    audience: str | None = None
    issuer: str | None = None
    leeway_seconds: float = 0.0
    jwks_refresh_cooldown_seconds: float = 30.0
    # FLOWER_OPS_TOKEN_SECRET: signs the monitor's own tokens (POST /token), so
    # every monitor sharing it accepts the others' tokens
    token_secret: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.secret or self.public_key or self.jwks_url)


@dataclass(frozen=True)
class AlertThresholds:
    stuck_task_seconds: float = 600.0
    stuck_runtime_factor: float = 10.0
    stuck_min_samples: int = 20
    # floor for the "far beyond its usual runtime" rule, so a task that
    # usually takes 5 ms is not stuck at 50 ms
    stuck_min_seconds: float = 30.0
    backlog_messages: int = 100
    backlog_seconds: float = 60.0
    saturated_seconds: float = 120.0
    worker_offline_seconds: float = 0.0


@dataclass(frozen=True)
class MonitorConfig:
    """Everything the Flower plugin needs, validated once at start-up."""

    redis_url: str = DEFAULT_REDIS_URL
    result_backend: str | None = None
    database_url: str | None = None
    jwt: JwtConfig = field(default_factory=JwtConfig)
    token_ttl_seconds: int = 900
    token_scopes: tuple[str, ...] = (READ_SCOPE, WRITE_SCOPE)
    anonymous_tokens: bool = False
    inspect_interval_seconds: float = 10.0
    queue_refresh_seconds: float = 2.0
    extra_queues: tuple[str, ...] = ()
    ws_allowed_origins: tuple[str, ...] = ()
    ws_snapshot_seconds: float = 2.0
    ws_client_queue_size: int = 1000
    ws_replay_buffer_size: int = 10000
    ws_client_buffer_bytes: int = 8 * 1024 * 1024
    ws_flush_seconds: float = 0.2
    bulk_max_tasks: int = 1000
    cancel_confirm_seconds: float = 3.0
    db_pool_max_size: int = 4
    max_request_bytes: int = 10 * 1024 * 1024
    alerts: AlertThresholds = field(default_factory=AlertThresholds)
    alert_webhook_url: str | None = None
    trace_url: str | None = None        # a link template with {trace_id}
    # monitors that serve as one (behind one balancer) register in one group
    monitor_group: str = "default"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MonitorConfig:
        env = EnvReader(environ)
        return cls(
            redis_url=env.url("REDIS_URL", schemes=("redis", "rediss", "unix", "amqp", "amqps",
                                                    "pyamqp", "memory"),
                              default=DEFAULT_REDIS_URL) or DEFAULT_REDIS_URL,
            result_backend=env.text("CELERY_RESULT_BACKEND"),
            database_url=env.url("DATABASE_URL", schemes=("postgres", "postgresql")),
            jwt=jwt_config_from_env(env),
            token_ttl_seconds=env.integer("FLOWER_OPS_TOKEN_TTL_SECONDS", 900, minimum=10,
                                      maximum=86400),
            token_scopes=_scopes(env, "FLOWER_OPS_TOKEN_SCOPES", (READ_SCOPE, WRITE_SCOPE)),
            anonymous_tokens=env.flag("FLOWER_OPS_ANONYMOUS_TOKENS", False),
            inspect_interval_seconds=env.number("FLOWER_OPS_INSPECT_INTERVAL_SECONDS", 10.0,
                                               minimum=1.0, maximum=3600.0),
            queue_refresh_seconds=env.number("FLOWER_OPS_QUEUE_REFRESH_SECONDS", 2.0,
                                            minimum=0.2, maximum=3600.0),
            extra_queues=env.items("FLOWER_OPS_QUEUES"),
            ws_allowed_origins=env.items("FLOWER_OPS_WS_ALLOWED_ORIGINS"),
            ws_snapshot_seconds=env.number("FLOWER_OPS_WS_SNAPSHOT_SECONDS", 2.0,
                                          minimum=0.1, maximum=2.0),
            ws_client_queue_size=env.integer("FLOWER_OPS_WS_CLIENT_QUEUE_SIZE", 1000,
                                         minimum=10, maximum=1_000_000),
            ws_replay_buffer_size=env.integer("FLOWER_OPS_WS_REPLAY_BUFFER_SIZE", 10000,
                                          minimum=0, maximum=1_000_000),
            ws_client_buffer_bytes=env.integer("FLOWER_OPS_WS_CLIENT_BUFFER_BYTES", 8 * 1024 * 1024,
                                           minimum=4096, maximum=1 << 30),
            ws_flush_seconds=env.number("FLOWER_OPS_WS_FLUSH_SECONDS", 0.2, minimum=0.01,
                                       maximum=1.0),
            bulk_max_tasks=env.integer("FLOWER_OPS_BULK_MAX_TASKS", 1000, minimum=1,
                                       maximum=100_000),
            cancel_confirm_seconds=env.number("FLOWER_OPS_CANCEL_CONFIRM_SECONDS", 3.0,
                                              minimum=0.1, maximum=60.0),
            db_pool_max_size=env.integer("FLOWER_OPS_DB_POOL_MAX_SIZE", 4, minimum=1, maximum=100),
            max_request_bytes=env.integer("FLOWER_OPS_MAX_REQUEST_BYTES", 10 * 1024 * 1024,
                                      minimum=1024 * 1024, maximum=1 << 30),
            alerts=AlertThresholds(
                stuck_task_seconds=env.number("FLOWER_OPS_STUCK_TASK_SECONDS", 600.0,
                                             minimum=1.0),
                stuck_runtime_factor=env.number("FLOWER_OPS_STUCK_RUNTIME_FACTOR", 10.0,
                                               minimum=1.0),
                stuck_min_samples=env.integer("FLOWER_OPS_STUCK_MIN_SAMPLES", 20, minimum=1),
                stuck_min_seconds=env.number("FLOWER_OPS_STUCK_MIN_SECONDS", 30.0, minimum=0.0),
                backlog_messages=env.integer("FLOWER_OPS_BACKLOG_MESSAGES", 100, minimum=1),
                backlog_seconds=env.number("FLOWER_OPS_BACKLOG_SECONDS", 60.0, minimum=0.0),
                saturated_seconds=env.number("FLOWER_OPS_SATURATED_SECONDS", 120.0,
                                            minimum=1.0),
                worker_offline_seconds=env.number("FLOWER_OPS_WORKER_OFFLINE_SECONDS", 0.0,
                                                 minimum=0.0),
            ),
            alert_webhook_url=env.url("FLOWER_OPS_ALERT_WEBHOOK_URL", schemes=("http", "https")),
            trace_url=_trace_url(env),
            monitor_group=_monitor_group(env),
        )


def _scopes(env: EnvReader, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    scopes = env.items(name, default, sep=" ")
    known = {READ_SCOPE, WRITE_SCOPE}
    unknown = [s for s in scopes if s not in known]
    if unknown:
        raise ConfigError(name, f"unknown scope(s) {', '.join(unknown)}; "
                                f"known: {READ_SCOPE}, {WRITE_SCOPE}")
    return scopes


def jwt_config_from_env(env: EnvReader) -> JwtConfig:
    secret = env.text("JWT_SECRET")
    public_key = _pem_or_file(env, "JWT_PUBLIC_KEY")
    jwks_url = env.url("JWT_JWKS_URL", schemes=("http", "https"))
    algorithms = env.items("JWT_ALGORITHMS", ("HS256",))
    if not algorithms:
        raise ConfigError("JWT_ALGORITHMS", "must name at least one algorithm")
    bad = [a for a in algorithms if a not in HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS]
    if bad:
        raise ConfigError("JWT_ALGORITHMS", f"unsupported algorithm(s) {', '.join(bad)} "
                                            "(none is never allowed)")
    hmac_algs = [a for a in algorithms if a in HMAC_ALGORITHMS]
    asym_algs = [a for a in algorithms if a in ASYMMETRIC_ALGORITHMS]
    # Key confusion starts with a configuration that lets one key serve both
    # families; refuse it here so the verifier never has to guess.
    if secret and (public_key or jwks_url):
        raise ConfigError("JWT_SECRET", "set either JWT_SECRET or JWT_PUBLIC_KEY/JWT_JWKS_URL, "
                                        "not both")
    if public_key and jwks_url:
        raise ConfigError("JWT_PUBLIC_KEY", "set either JWT_PUBLIC_KEY or JWT_JWKS_URL, not both")
    if secret and asym_algs:
        raise ConfigError("JWT_ALGORITHMS", f"{', '.join(asym_algs)} need JWT_PUBLIC_KEY or "
                                            "JWT_JWKS_URL, not JWT_SECRET")
    if (public_key or jwks_url) and hmac_algs:
        if env.raw("JWT_ALGORITHMS") is None:
            raise ConfigError("JWT_ALGORITHMS", "a public key is configured: set JWT_ALGORITHMS "
                                                "to its algorithm (e.g. RS256 or ES256)")
        raise ConfigError("JWT_ALGORITHMS", f"{', '.join(hmac_algs)} cannot be verified with a "
                                            "public key")
    if secret is not None and len(secret) < 16:
        raise ConfigError("JWT_SECRET", "must be at least 16 characters")
    if public_key is not None:
        _check_public_key("JWT_PUBLIC_KEY", public_key)
    token_secret = env.text("FLOWER_OPS_TOKEN_SECRET")
    if token_secret is not None and len(token_secret) < 32:
        raise ConfigError("FLOWER_OPS_TOKEN_SECRET", "must be at least 32 characters "
                                                     "(e.g. python -c 'import secrets; "
                                                     "print(secrets.token_urlsafe(48))')")
    return JwtConfig(
        secret=secret,
        public_key=public_key,
        jwks_url=jwks_url,
        algorithms=algorithms,
        audience=env.text("JWT_AUDIENCE"),
        issuer=env.text("JWT_ISSUER"),
        leeway_seconds=env.number("FLOWER_OPS_JWT_LEEWAY_SECONDS", 0.0, minimum=0.0,
                                 maximum=300.0),
        jwks_refresh_cooldown_seconds=env.number("FLOWER_OPS_JWKS_REFRESH_COOLDOWN_SECONDS", 30.0,
                                                minimum=0.0, maximum=3600.0),
        token_secret=token_secret,
    )


def _pem_or_file(env: EnvReader, name: str) -> str | None:
    value = env.text(name)
    if value is None:
        return None
    if "-----BEGIN" in value:
        return value.replace("\\n", "\n")
    try:
        with open(value, encoding="ascii") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(name, f"neither a PEM key nor a readable file: {exc.strerror}") from None


def _check_public_key(name: str, pem: str) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ConfigError(name, f"not a valid PEM public key ({exc})") from None


def _trace_url(env: EnvReader) -> str | None:
    """``FLOWER_OPS_TRACE_URL``: where a task's trace is shown, with ``{trace_id}``."""
    url = env.url("FLOWER_OPS_TRACE_URL", schemes=("http", "https"))
    if url is not None and "{trace_id}" not in url:
        raise ConfigError("FLOWER_OPS_TRACE_URL", "expected a URL template containing "
                          "{trace_id}, e.g. https://tracing.example/trace/{trace_id}")
    return url


def _monitor_group(env: EnvReader) -> str:
    """``FLOWER_OPS_MONITOR_GROUP``: which monitors are one (must share their token key)."""
    group = env.text("FLOWER_OPS_MONITOR_GROUP", "default") or "default"
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", group):
        raise ConfigError("FLOWER_OPS_MONITOR_GROUP", "expected 1-64 letters, digits, '.', '_' "
                                                      f"or '-', got {group[:80]!r}")
    return group

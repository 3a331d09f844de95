-- Several monitors as one (issue #14): each running monitor registers itself
-- (flower_ops/db/monitors.py) so that the others can tell it is there and
-- whether it signs its tokens with the same key (a fingerprint: an HMAC of a
-- fixed label under the key, never the key); and the answers of actions sent
-- with an Idempotency-Key header, so a retransmission through a balancer to
-- another monitor is answered the same and done once (flower_ops/db/idempotency.py).
CREATE TABLE IF NOT EXISTS automation.monitors (
    instance_id     text PRIMARY KEY,
    monitor_group   text NOT NULL DEFAULT 'default',
    host            text NOT NULL,
    pid             integer NOT NULL,
    port            integer,
    version         text,
    key_fingerprint text NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS monitors_group_heartbeat_idx
    ON automation.monitors (monitor_group, heartbeat_at);

CREATE TABLE IF NOT EXISTS automation.idempotency_keys (
    subject         text NOT NULL,
    idempotency_key text NOT NULL,
    fingerprint     text NOT NULL,        -- sha256 of method, path and body
    instance_id     text NOT NULL,        -- the monitor that did (or does) the work
    status          integer,              -- NULL while the work runs
    body            text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    PRIMARY KEY (subject, idempotency_key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_idx
    ON automation.idempotency_keys (created_at);

-- The alert webhook behind several monitors (issue #14): every monitor of a
-- group sees the same workers and queues and raises the same alerts, but the
-- webhook should hear each change of an alert once. A monitor delivers a
-- "raised" or "resolved" only when it moves the alert's shared state here
-- (flower_ops/db/alert_deliveries.py); the others, seeing the same change,
-- find it already made.
CREATE TABLE IF NOT EXISTS automation.alert_deliveries (
    monitor_group   text NOT NULL,
    kind            text NOT NULL,
    subject         text NOT NULL,
    last_event      text NOT NULL,        -- raised | resolved
    instance_id     text NOT NULL,        -- the monitor that delivers it
    changed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (monitor_group, kind, subject)
);
CREATE INDEX IF NOT EXISTS alert_deliveries_changed_idx
    ON automation.alert_deliveries (changed_at);

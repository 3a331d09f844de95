"""The ledger that makes several monitors tell the alert webhook each change
once: PostgreSQL's (with a database) and the Redis broker's (without)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from flower_ops.db.pool import Database
from flower_ops.monitor.health.deliveries import DeliveryLedger, ledger_for


@pytest.fixture(params=["postgresql", "redis"])
def ledgers(request: pytest.FixtureRequest, redis_url: str, database_url: str
            ) -> Iterator[tuple[DeliveryLedger, DeliveryLedger, DeliveryLedger]]:
    """Two monitors of group g1 and one of g2, on one database or broker."""
    database = None
    if request.param == "postgresql":
        database = Database(url=database_url, application_name="test-alert-deliveries")
        database.open()
    try:
        yield (ledger_for(database=database, broker_url=redis_url, group="g1", instance_id="a"),
               ledger_for(database=database, broker_url=redis_url, group="g1", instance_id="b"),
               ledger_for(database=database, broker_url=redis_url, group="g2", instance_id="c")
               )  # type: ignore[misc]
    finally:
        if database is not None:
            database.close()


def test_each_change_is_claimed_by_one_monitor_of_the_group(
        ledgers: tuple[DeliveryLedger, DeliveryLedger, DeliveryLedger]) -> None:
    a, b, other_group = ledgers
    kind, subject = "worker_offline", "w1@host"
    assert a.claim("raised", kind, subject) is True
    assert b.claim("raised", kind, subject) is False       # the same change, seen later
    assert other_group.claim("raised", kind, subject) is True
    assert b.claim("resolved", kind, subject) is True      # whoever sees it first
    assert a.claim("resolved", kind, subject) is False
    assert a.claim("raised", kind, subject) is True        # raised again: a new change
    assert b.claim("raised", kind, subject) is False
    # another subject, another kind: their own state
    assert b.claim("raised", kind, "w2@host") is True
    assert a.claim("raised", "queue_backlog", subject) is True


def test_without_a_database_or_a_redis_broker_there_is_no_ledger() -> None:
    assert ledger_for(database=None, broker_url="amqp://guest@localhost//", group="g",
                      instance_id="a") is None

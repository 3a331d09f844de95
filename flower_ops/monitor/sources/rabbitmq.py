"""Queue depths from RabbitMQ.

Two ways, best first:

* the **management API** (``GET /api/queues/{vhost}``, one request for every
  queue): ready, unacknowledged, consumers, publish/deliver rates and the age
  of the head message (from the AMQP ``timestamp`` property, which
  ``instrument()`` sets). Its URL is Flower's ``--broker_api`` when given,
  else ``http(s)://host:15672/api/`` with the broker's credentials;
* **AMQP itself**: a passive ``queue.declare`` per queue answers ready
  messages and consumers, nothing more.

When the management API fails we fall back to AMQP for that refresh and try
the API again after a capped, jittered backoff; each snapshot says which
source answered (``source``) and why the better one was not used
(``detail``).
"""
from __future__ import annotations

import base64
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from kombu import Connection

from flower_ops.monitor.sources.queue_depths import BrokerSnapshot, QueueDepth

logger = logging.getLogger(__name__)

MANAGEMENT_PORT = 15672
SOURCE_MANAGEMENT = "rabbitmq-management"
SOURCE_AMQP = "amqp-passive-declare"
_COLUMNS = ("name,messages_ready,messages_unacknowledged,consumers,message_stats,"
            "head_message_timestamp")


class ManagementUnavailable(Exception):
    """The management API did not answer usefully."""


class RabbitQueueSource:
    transport = "amqp"

    def __init__(self, *, broker_url: str, broker_api: str | None = None, use_ssl: Any = None,
                 http_timeout_seconds: float = 3.0,
                 management_retry_initial_seconds: float = 5.0,
                 management_retry_max_seconds: float = 300.0) -> None:
        self.broker_url = broker_url
        self._use_ssl = use_ssl
        probe = Connection(broker_url, ssl=use_ssl or False)
        self.vhost: str = probe.virtual_host or "/"
        user = probe.userid or "guest"
        password = probe.password or "guest"
        if broker_api:
            self.api, self._auth = _split_credentials(broker_api, user, password)
        else:
            scheme = "https" if probe.ssl else "http"
            host = probe.hostname or "localhost"
            self.api, self._auth = f"{scheme}://{host}:{MANAGEMENT_PORT}/api/", (user, password)
        if not self.api.endswith("/"):
            self.api += "/"
        self.http_timeout_seconds = http_timeout_seconds
        self._retry_initial = management_retry_initial_seconds
        self._retry_max = management_retry_max_seconds
        self._management_failures = 0
        self._management_retry_at = 0.0
        self.management_error: str | None = None
        self._connection: Connection | None = None

    # -- management API -------------------------------------------------------------

    def _management_get(self, path: str) -> Any:
        request = urllib.request.Request(urljoin(self.api, path))
        user, password = self._auth
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Accept", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.http_timeout_seconds) as response:
                return json.loads(response.read().decode())
        except urllib.error.HTTPError as exc:
            raise ManagementUnavailable(f"HTTP {exc.code} from {_redacted(self.api)}") from None
        except (OSError, ValueError) as exc:
            raise ManagementUnavailable(f"{type(exc).__name__}: {exc} "
                                        f"({_redacted(self.api)})") from None

    def fetch_management(self, names: list[str]) -> BrokerSnapshot:
        listing = self._management_get(f"queues/{quote(self.vhost, safe='')}?columns={_COLUMNS}")
        if not isinstance(listing, list):
            raise ManagementUnavailable("unexpected reply to GET /api/queues")
        now = time.time()
        known = {q.get("name"): q for q in listing if isinstance(q, dict)}
        depths: dict[str, QueueDepth] = {}
        unacked_total = 0
        for name in names:
            info = known.get(name) or {}
            unacked = int(info.get("messages_unacknowledged") or 0)
            unacked_total += unacked
            stats = info.get("message_stats") or {}
            head = info.get("head_message_timestamp")
            depths[name] = QueueDepth(
                name=name,
                messages=int(info.get("messages_ready") or 0),
                unacked=unacked,
                oldest_message_age_seconds=(max(0.0, now - float(head))
                                            if isinstance(head, (int, float)) else None),
                consumers=int(info.get("consumers") or 0),
                rate_in=_rate(stats, "publish_details"),
                rate_out=_rate(stats, "deliver_get_details"),
            )
        return BrokerSnapshot(transport="amqp", queues=depths, unacked_total=unacked_total,
                              taken_at=now, source=SOURCE_MANAGEMENT)

    # -- AMQP -------------------------------------------------------------------------

    def fetch_amqp(self, names: list[str]) -> BrokerSnapshot:
        connection = self._amqp_connection()
        depths: dict[str, QueueDepth] = {}
        channel = connection.channel()
        try:
            for name in names:
                try:
                    _, ready, consumers = channel.queue_declare(queue=name, passive=True)
                except connection.channel_errors:
                    # 404: the queue does not exist (yet); the broker closed
                    # the channel, so the next queue needs a fresh one.
                    ready, consumers = 0, 0
                    channel = connection.channel()
                depths[name] = QueueDepth(name=name, messages=int(ready), unacked=None,
                                          consumers=int(consumers))
        except connection.connection_errors:
            self._drop_connection()
            raise
        finally:
            try:
                channel.close()
            except Exception as exc:  # noqa: BLE001 - closing a dead channel is no news
                logger.debug("closing the declare channel: %s", exc)
        return BrokerSnapshot(transport="amqp", queues=depths, unacked_total=None,
                              taken_at=time.time(), source=SOURCE_AMQP,
                              detail=self._amqp_detail())

    def _amqp_connection(self) -> Connection:
        if self._connection is None:
            connection = Connection(self.broker_url, ssl=self._use_ssl or False,
                                    connect_timeout=5, heartbeat=0)
            connection.ensure_connection(max_retries=1)
            self._connection = connection
        return self._connection

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception as exc:  # noqa: BLE001 - it is already broken
                logger.debug("releasing the AMQP connection: %s", exc)
            self._connection = None

    def _amqp_detail(self) -> str:
        reason = self.management_error or "not tried"
        return (f"management API unavailable ({reason}); AMQP passive declare reports ready "
                f"messages and consumers only")

    # -- the choice ---------------------------------------------------------------------

    def fetch(self, queues: Iterable[str]) -> BrokerSnapshot:
        names = sorted(set(queues))
        now = time.monotonic()
        if now >= self._management_retry_at:
            try:
                snapshot = self.fetch_management(names)
            except ManagementUnavailable as exc:
                self._management_failures += 1
                self.management_error = str(exc)
                delay = min(self._retry_max,
                            self._retry_initial * 2 ** min(self._management_failures - 1, 16))
                self._management_retry_at = now + delay * random.uniform(0.5, 1.0)
                if self._management_failures == 1:
                    logger.warning("RabbitMQ management API unavailable, using AMQP passive "
                                   "declare: %s", exc)
            else:
                self._management_failures = 0
                self.management_error = None
                return snapshot
        return self.fetch_amqp(names)

    def close(self) -> None:
        self._drop_connection()


def _rate(stats: dict[str, Any], key: str) -> float | None:
    details = stats.get(key)
    if isinstance(details, dict) and isinstance(details.get("rate"), (int, float)):
        return float(details["rate"])
    return 0.0 if stats else None


def _split_credentials(url: str, user: str, password: str) -> tuple[str, tuple[str, str]]:
    """Move ``user:pass@`` out of the URL (urllib does not send it)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, (user, password)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, (unquote(parts.username), unquote(parts.password or ""))


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.hostname}:{parts.port}" if parts.port else (parts.hostname or "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

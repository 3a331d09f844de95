"""A cap on every request body the server reads (see ``cap_request_bodies``)."""
from __future__ import annotations

from typing import Any


def cap_request_bodies(flower_app: Any, max_bytes: int) -> None:
    """Cap every request body the server reads, Flower's routes included.

    Tornado buffers a whole body (up to 100 MB by default) before a
    non-streaming handler such as Flower's runs, so without a cap anyone who
    can reach the port, credentials or not, can make the monitor hold
    hundreds of MB. Our own API handlers stream and stop at 1 MiB anyway.
    """
    start_request = flower_app.start_request

    def capped_start_request(server_conn: Any, request_conn: Any) -> Any:
        set_max = getattr(request_conn, "set_max_body_size", None)
        if set_max is not None:
            set_max(max_bytes)
        return start_request(server_conn, request_conn)

    flower_app.start_request = capped_start_request

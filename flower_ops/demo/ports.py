"""The demo's ports: all on loopback, and one clear line when the monitor's is taken."""
from __future__ import annotations

import errno
import socket

LOOPBACK = "127.0.0.1"


def bind_error(host: str, port: int) -> OSError | None:
    """Why nothing could listen on ``host:port`` now (None: it could), tried
    the way Tornado binds (``SO_REUSEADDR``, so a port in TIME_WAIT is free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


def port_problem(address: str, port: int, error: OSError | None) -> str | None:
    """The one line a monitor port nothing can listen on gets (None: it is free)."""
    if error is None:
        return None
    where = f"{address or '0.0.0.0'}:{port}"
    if error.errno == errno.EADDRINUSE:
        return (f"port {port} is already in use ({where}); choose another with --port PORT, "
                f"or --port 0 for any free port")
    return (f"cannot listen on {where}: {error.strerror or error}; try --address {LOOPBACK} "
            f"or --port 0 for any free port")

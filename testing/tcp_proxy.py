"""A loopback TCP proxy that really cuts connections (fault injection)."""
from __future__ import annotations

import contextlib
import socket
import struct
import threading

from flower_ops.demo.embedded import free_port

LINGER_ZERO = struct.pack("ii", 1, 0)   # l_onoff=1, l_linger=0: close() sends RST


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``. ``cut()`` resets every open
    connection at once; ``refuse(True)`` drops new ones as they arrive;
    ``stall(True)`` stops forwarding without closing anything (a partition:
    both ends' TCP stacks stay happy, bytes just stop arriving) until
    ``stall(False)`` delivers what was held."""

    def __init__(self, *, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._refusing = False
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.cuts = 0

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            if self._refusing:
                self._reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        # SO_LINGER 0: close with RST, the way a dead network path looks
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        with contextlib.suppress(OSError):
            sock.close()

    def stall(self, stalled: bool) -> None:
        if stalled:
            self._flowing.clear()
        else:
            self._flowing.set()

    def refuse(self, refusing: bool) -> None:
        self._refusing = refusing

    def cut(self) -> int:
        """Reset every open connection; returns how many sockets were cut."""
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            self._reset(sock)
        self.cuts += 1
        return len(conns)

    def url(self, database_url: str) -> str:
        """``database_url`` with host:port replaced by this proxy."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(database_url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth + '@' if auth else ''}127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        self.cut()
        self._server.close()

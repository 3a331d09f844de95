"""Helpers shared by the benchmarks: latency summaries, verdicts, report lines.

Benchmarks print figures and ratios against a baseline measured side by side
in the same run; nothing here asserts on time.
"""
from __future__ import annotations

import base64
import os
import platform
import statistics
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LatencySummary:
    """Latencies of one endpoint, in seconds."""

    count: int
    median_s: float
    p99_s: float
    mean_s: float
    min_s: float
    max_s: float

    @classmethod
    def of(cls, samples_s: Sequence[float]) -> LatencySummary:
        return cls(count=len(samples_s), median_s=statistics.median(samples_s),
                   p99_s=percentile(samples_s, 99.0), mean_s=statistics.fmean(samples_s),
                   min_s=min(samples_s), max_s=max(samples_s))

    def line(self, label: str, *, width: int = 44) -> str:
        return (f"  {label:<{width}} n={self.count:<5d} median {ms(self.median_s):>9}"
                f"  p99 {ms(self.p99_s):>9}  mean {ms(self.mean_s):>9}"
                f"  min {ms(self.min_s):>9}  max {ms(self.max_s):>9}")


def ms(seconds: float) -> str:
    return f"{seconds * 1000.0:.3f} ms"


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("inf")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def check_line(label: str, value: str, target: str, ok: bool, *, width: int = 52) -> str:
    return f"  [{verdict(ok)}] {label:<{width}} {value:>14}   (target {target})"


def heading(title: str) -> str:
    return f"\n== {title} " + "=" * max(0, 76 - len(title))


def environment_line() -> str:
    try:
        load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return (f"python {platform.python_version()} ({platform.python_implementation()}), "
            f"{os.cpu_count()} CPUs, load average {load}")


def best_and_median(values: Iterable[float]) -> tuple[float, float]:
    """Largest and median of per-round rates (higher is better)."""
    ordered = sorted(values)
    return ordered[-1], statistics.median(ordered)


def ws_frame(buf: bytes | bytearray, offset: int) -> tuple[int, int, int] | None:
    """(opcode, payload start, payload length) of the unmasked server frame at
    ``offset`` in ``buf``, or None while it is incomplete. The benchmarks'
    feed clients read raw frames: a WebSocket library per message would cost
    more CPU than the monitor they measure."""
    available = len(buf) - offset
    if available < 2:
        return None
    opcode = buf[offset] & 0x0F
    length = buf[offset + 1] & 0x7F
    head = 2
    if length == 126:
        if available < 4:
            return None
        length = struct.unpack_from(">H", buf, offset + 2)[0]
        head = 4
    elif length == 127:
        if available < 10:
            return None
        length = struct.unpack_from(">Q", buf, offset + 2)[0]
        head = 10
    if available < head + length:
        return None
    return opcode, offset + head, length


def ws_client_text(text: str) -> bytes:
    """One masked text frame, as a client sends it (RFC 6455 5.3)."""
    payload = text.encode()
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes([0x81, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([0x81, 0x80 | 126]) + struct.pack(">H", size)
    else:
        head = bytes([0x81, 0x80 | 127]) + struct.pack(">Q", size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_upgrade_request(path: str, host: str, port: int, token: str) -> bytes:
    """The raw HTTP upgrade a benchmark's feed client opens with (token in
    the Authorization header, never in the URL)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n").encode()

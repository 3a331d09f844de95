"""Processes below a root, read from ``/proc``: to show that a command left
nothing behind, every descendant it ever had is tracked by (pid, start time),
so a recycled pid is never mistaken for one of them."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

TrackedProcess = tuple[int, str]
"""(pid, start time in clock ticks since boot)."""


def _proc_stat(pid: int) -> tuple[int, str, str] | None:
    """(ppid, state, start time) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may contain spaces
    return int(fields[1]), fields[0], fields[19]


def descendants(root_pid: int) -> set[TrackedProcess]:
    """Every live (not zombie) process below ``root_pid``."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[1] != "Z":
                children.setdefault(stat[0], []).append(int(entry))
                starts[int(entry)] = stat[2]
    found: set[TrackedProcess] = set()
    pending = [root_pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.add((child, starts[child]))
            pending.append(child)
    return found


def still_running(processes: set[TrackedProcess]) -> set[int]:
    """The pids of ``processes`` that are the same processes and still alive."""
    alive = set()
    for pid, start in processes:
        stat = _proc_stat(pid)
        if stat is not None and stat[2] == start and stat[1] != "Z":
            alive.add(pid)
    return alive


def cmdline(pid: int) -> bytes:
    """The command line of ``pid``, arguments joined by spaces (empty when gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def listening_sockets(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of ``pids``
    holds open, from ``/proc/net/tcp{,6}`` and the processes' descriptors."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:  # gone, or not ours to read
            continue
    found: set[tuple[str, int]] = set()
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            found.add((_address(bytes.fromhex(address), size), int(port, 16)))
    return found


def _address(raw: bytes, size: int) -> str:
    """/proc/net/tcp's address: 32-bit words in host (little-endian) order."""
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
    return str(ipaddress.ip_address(words))

"""WebSocket framing for the live feed: one frame per message, shared.

Server frames are never masked (RFC 6455 §5.1), so a message's frame is the
same bytes for every client: the feed frames it once and writes those bytes
to each socket, instead of Tornado framing (and copying) it per client.
"""
from __future__ import annotations

import struct


def text_frame(payload: bytes) -> bytes:
    """One unmasked, uncompressed WebSocket text frame (RFC 6455 §5.2)."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size <= 0xFFFF:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


class SharedFrames:
    """The frame of the message being fanned out, built once.

    The feed sends one message to many clients in a row, so remembering the
    last payload (by identity) and its frame serves the whole fan-out. One
    per feed; IOLoop thread only.
    """

    def __init__(self) -> None:
        self._last: tuple[bytes, bytes] | None = None

    def frame(self, payload: bytes) -> bytes:
        last = self._last
        if last is not None and last[0] is payload:
            return last[1]
        frame = text_frame(payload)
        self._last = (payload, frame)
        return frame

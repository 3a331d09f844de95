"""Free-text ``search=`` over the tasks in memory.

A substring search has no index to lean on, so it scans; the point is to
scan ready strings at C speed. Each task's searchable fields are lowercased
once into a text, texts are kept in chunks of ``CHUNK_TASKS`` joined into one
string, and a search is one ``str.find`` pass per chunk. Built on the first
search (a monitor nobody searches pays nothing), then kept current from the
index's change batches: a change rebuilds its task's text and marks its chunk
for re-joining, and changes cluster in the newest chunk (new tasks) and the
oldest (evicted ones). A rare needle takes ~9 ms at 100,000 tasks, against
~20 ms for a substring test per task and ~250 ms for stringifying every
task's fields per search (measured by bench/bench_load.py's workload).
"""
from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable, Mapping
from itertools import accumulate
from typing import Any

from flower_ops.core.payload import (
    EXACT_ARGS_FIELD,
    EXACT_KWARGS_FIELD,
    EXACT_PREFIX,
    is_exact_text,
)

# The argument reprs (what Flower and the workers show) and, for instrumented
# publishers, the exact text too: a repr stops at 1024 characters
SEARCH_FIELDS = ("uuid", "name", "args", "kwargs", EXACT_ARGS_FIELD, EXACT_KWARGS_FIELD,
                 "result", "exception")
CHUNK_TASKS = 1024
MANY_HITS = 32
# Between fields and between texts: a search never contains NUL (the query
# parameters refuse it), so no match spans two fields or two tasks
SEPARATOR = "\x00"
_EXACT_SKIP = len(EXACT_PREFIX)


def search_text(task: Any) -> str:
    return SEPARATOR.join(_searchable(value).lower() for value in
                          (getattr(task, name, None) for name in SEARCH_FIELDS)
                          if value is not None)


def _searchable(value: Any) -> str:
    # the exact text's "json:" is our marker, not the task's
    return value[_EXACT_SKIP:] if is_exact_text(value) else str(value)


class _Chunk:
    """Up to ``CHUNK_TASKS`` texts. Once joined, a chunk that is not being
    changed keeps only the joined string (``compact``): each text held once,
    not twice (~25 MB less at 100,000 tasks); ``texts`` cuts them out again
    when one changes."""

    __slots__ = ("_texts", "joined", "live", "starts", "uuids")

    def __init__(self) -> None:
        self.uuids: list[str | None] = []  # None: the task left memory
        self._texts: list[str] | None = []  # None: only in ``joined``
        self.live = 0
        self.joined: str | None = None  # None: to be joined again
        self.starts: array[int] = array("l")

    @property
    def texts(self) -> list[str]:
        if self._texts is None:
            joined, starts = self.joined, self.starts
            assert joined is not None
            ends = [start - 1 for start in starts[1:]]
            ends.append(len(joined))
            self._texts = [joined[a:b] for a, b in zip(starts, ends, strict=True)]
        return self._texts

    def join(self) -> str:
        joined = self.joined
        if joined is None:
            texts = self.texts
            joined = self.joined = SEPARATOR.join(texts)
            self.starts = array("l", accumulate((len(t) + 1 for t in texts[:-1]), initial=0))
        return joined

    def compact(self) -> None:
        if self.joined is not None:
            self._texts = None


class SearchTexts:
    """Lowercased searchable text of every task in memory, in joined chunks."""

    def __init__(self, tasks: Callable[[], Mapping[str, Any]]) -> None:
        self._tasks = tasks
        self._chunks: list[_Chunk] | None = None
        self._where: dict[str, tuple[_Chunk, int]] = {}
        self._stale: set[str] = set()

    def invalidate(self, changed: set[str]) -> None:
        """An index change batch (``TaskIndex.change_listeners``)."""
        if self._chunks is not None:
            self._stale |= changed

    def matching(self, needle: str) -> set[str]:
        """Ids of the tasks in memory whose text contains ``needle`` (any case)."""
        tasks = self._tasks()
        if self._chunks is None:
            self._rebuild(tasks)
        else:
            for uuid in self._stale:
                task = tasks.get(uuid)
                if task is None:
                    self._drop(uuid)
                else:
                    self._put(uuid, search_text(task))
            if len(self._where) != len(tasks):  # the state was replaced or cleared
                self._rebuild(tasks)
        self._stale = set()
        assert self._chunks is not None
        found = self._find(needle.lower())
        # The newest chunk takes the new tasks; the others keep one copy
        for chunk in self._chunks[:-1]:
            chunk.compact()
        return found

    def _find(self, needle: str) -> set[str]:
        assert self._chunks is not None
        found: set[str] = set()
        for chunk in self._chunks:
            joined = chunk.join()
            at = joined.find(needle)
            if at < 0:
                continue
            starts, uuids = chunk.starts, chunk.uuids
            hits = 0
            while at >= 0:
                index = bisect_right(starts, at) - 1
                hit = uuids[index]
                if hit is not None:
                    found.add(hit)
                hits += 1
                if hits == MANY_HITS:
                    # Matches everywhere: testing each remaining text beats a
                    # find and a bisect per match
                    rest = index + 1
                    found.update(u for u, text in zip(uuids[rest:], chunk.texts[rest:], strict=True)
                                 if u is not None and needle in text)
                    break
                if index + 1 == len(starts):
                    break
                at = joined.find(needle, starts[index + 1])  # the next task's text
        return found

    def _rebuild(self, tasks: Mapping[str, Any]) -> None:
        self._chunks = []
        self._where = {}
        for uuid, task in tasks.items():
            self._put(uuid, search_text(task))

    def _put(self, uuid: str, text: str) -> None:
        place = self._where.get(uuid)
        if place is not None:
            chunk, index = place
            texts = chunk.texts
            if texts[index] != text:
                texts[index] = text
                chunk.joined = None
            return
        chunks = self._chunks
        assert chunks is not None
        if not chunks or len(chunks[-1].uuids) >= CHUNK_TASKS:
            chunks.append(_Chunk())
        chunk = chunks[-1]
        self._where[uuid] = (chunk, len(chunk.uuids))
        chunk.uuids.append(uuid)
        chunk.texts.append(text)
        chunk.live += 1
        chunk.joined = None

    def _drop(self, uuid: str) -> None:
        place = self._where.pop(uuid, None)
        if place is None:
            return
        chunk, index = place
        chunk.uuids[index] = None
        chunk.texts[index] = ""
        chunk.live -= 1
        chunk.joined = None
        if chunk.live == 0 and self._chunks is not None:
            # Eviction takes the oldest tasks first, so whole chunks empty out
            self._chunks = [c for c in self._chunks if c is not chunk]

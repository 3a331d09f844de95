"""What an operator action did, in one vocabulary: the answer of a cancel or
a retry, each item of a bulk report, and the audit record all say it with
these words (SPEC §11)."""
from __future__ import annotations

CANCELLED = "cancelled"        # the task will not run (confirmed, or certain)
RETRIED = "retried"            # a new task with the exact payload was published
REQUESTED = "requested"        # a running task was signalled; its end is not known yet
WOULD_CANCEL = "would_cancel"  # dry run
WOULD_RETRY = "would_retry"    # dry run
REJECTED = "rejected"          # not allowed (state, already retried, payload unknown,
                               # or the task ended first): see ``reason``
NOT_FOUND = "not_found"        # no such task anywhere
UNAVAILABLE = "unavailable"    # the broker or the database could not be reached

OUTCOMES = (CANCELLED, RETRIED, REQUESTED, WOULD_CANCEL, WOULD_RETRY, REJECTED, NOT_FOUND,
            UNAVAILABLE)
# what an audit record can say (a dry run is not audited)
AUDITED = (CANCELLED, RETRIED, REQUESTED, REJECTED, NOT_FOUND, UNAVAILABLE)

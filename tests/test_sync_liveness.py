"""WorkerLiveness: a worker's silence counts only while the sync worker could
hear it (found by the redis-stall fault: a 20 s partition between the sync
worker and Redis failed the running tasks of healthy workers)."""
from __future__ import annotations

from sync_worker.receiver import WorkerLiveness

LOST_AFTER = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def listening_liveness(clock: Clock) -> WorkerLiveness:
    liveness = WorkerLiveness(clock=clock)
    liveness.expect_hearing_every(3.0)
    liveness.listening()
    return liveness


def hear_for(liveness: WorkerLiveness, clock: Clock, seconds: float) -> None:
    """Other workers' events arrive every second."""
    end = clock.now + seconds
    while clock.now < end:
        clock.now = min(end, clock.now + 1.0)
        liveness.heard()


def lost(liveness: WorkerLiveness, hostname: str = "w1") -> bool:
    return liveness.is_lost(hostname, lost_after_seconds=LOST_AFTER)


def test_worker_silent_while_the_stream_is_heard_is_lost() -> None:
    clock = Clock()
    liveness = listening_liveness(clock)
    liveness.seen("w1")
    hear_for(liveness, clock, 9.5)
    assert not lost(liveness)
    hear_for(liveness, clock, 0.5)
    assert lost(liveness)


def test_quiet_stream_answering_pings_still_proves_a_dead_worker_dead() -> None:
    clock = Clock()
    liveness = listening_liveness(clock)
    liveness.seen("w1")
    for _ in range(4):              # nothing but the replies to our idle pings
        clock.now += 2.5
        liveness.heard()
    assert lost(liveness)


def test_stalled_stream_declares_nobody_lost_and_its_duration_does_not_count() -> None:
    clock = Clock()
    liveness = listening_liveness(clock)
    liveness.seen("w1")
    clock.now += 20                 # nothing received: our stream is stalled
    assert not lost(liveness)
    liveness.heard()                # the stall ends: 20 s of deafness
    assert not lost(liveness)
    hear_for(liveness, clock, 9.9)
    assert not lost(liveness)       # 9.9 s of real silence only
    hear_for(liveness, clock, 0.2)
    assert lost(liveness)           # 10.1 s heard without w1


def test_disconnection_does_not_count_as_silence() -> None:
    clock = Clock()
    liveness = listening_liveness(clock)
    liveness.seen("w1")
    clock.now += 1
    liveness.heard()
    liveness.connection_lost()
    clock.now += 60
    assert not lost(liveness)       # deaf while disconnected
    liveness.listening()            # resubscribed: the 60 s are moved out
    assert not lost(liveness)
    hear_for(liveness, clock, 8.9)  # 1 s before the loss + 8.9 s after it
    assert not lost(liveness)
    hear_for(liveness, clock, 0.2)
    assert lost(liveness)


def test_goodbye_is_believed_after_the_grace_period() -> None:
    clock = Clock()
    liveness = listening_liveness(clock)
    liveness.seen("w1")
    liveness.went_offline("w1")
    clock.now += 2
    liveness.heard()
    assert lost(liveness)
    liveness.seen("w1")             # it came back
    assert not lost(liveness)


def test_without_pings_quiet_is_not_taken_for_a_stall() -> None:
    clock = Clock()
    liveness = WorkerLiveness(clock=clock)     # kombu's receiver: no pings, no stall logic
    liveness.listening()
    liveness.seen("w1")
    clock.now += LOST_AFTER
    assert lost(liveness)

"""Real-time pacing: deadlines on a monotonic clock, for the threads that
push or pull audio at its own pace (a host streaming a file, a listener
recording, an injected stream)."""

import time

#: The live frame, seconds.
FRAME_S = 0.01
#: Behind the schedule by more than this (a stalled process): start a new
#: schedule from now rather than sending or pulling the backlog in a burst.
MAX_LAG_S = 0.2


class Pacer:
    """Deadlines every ``period_s`` seconds on a monotonic clock, without drift.

    ``start()`` sets tick 0 to now; each ``wait()`` sleeps until the next
    tick's deadline ``t0 + k * period_s`` (returning at once when it has
    passed), so sleeping too long once does not delay the ticks after it.
    Behind by more than ``max_lag_s`` (the process stalled), the schedule
    restarts from now and ``slips`` counts it.  ``clock`` and ``sleep`` are
    ``time.monotonic`` and ``time.sleep`` unless given (for tests).
    """

    def __init__(self, period_s=FRAME_S, *, max_lag_s=MAX_LAG_S, clock=time.monotonic,
                 sleep=time.sleep):
        if not period_s > 0:
            raise ValueError(f"period_s must be positive, got {period_s!r}")
        self.period_s = period_s
        self.max_lag_s = max_lag_s
        self.clock = clock
        self.sleep = sleep
        self.t0 = None
        self.ticks = 0
        self.slips = 0

    def start(self):
        """Make now tick 0; returns the start time."""
        self.t0 = self.clock()
        self.ticks = 0
        return self.t0

    def wait(self):
        """Sleep until the next tick's deadline; returns the tick number (1, 2, ...)."""
        if self.t0 is None:
            self.start()
        self.ticks += 1
        deadline = self.t0 + self.ticks * self.period_s
        now = self.clock()
        if now < deadline:
            self.sleep(deadline - now)
        elif now - deadline > self.max_lag_s:
            self.t0 += now - deadline
            self.slips += 1
        return self.ticks

"""Loss measurement on a received stream, and the redundancy it calls for.

Receivers (the server for each host's uplink, a client for each stream it
plays) count the packets that arrive by sequence number with ``LossMeter``
and report, every few hundred milliseconds, the fraction lost on the path and
how long the loss bursts are.  The sender of that path turns the report into
a RED depth with ``redundancy_depth``: each frame then travels in ``depth +
1`` packets, so it is lost only when all of them are.
"""

import collections
import math

import numpy as np

#: Deepest redundancy sent: 16 earlier frames (320 ms of 20 ms frames), inside
#: RED's 14-bit timestamp offset (341 ms at 48 kHz).  At 32 kb/s that is a
#: packet of about 1.4 kB; ``MAX_RED_PAYLOAD`` may cut the oldest blocks.
MAX_DEPTH = 16
#: Largest RED payload sent, bytes (an Ethernet MTU less IP, UDP and RTP).
MAX_RED_PAYLOAD = 1400
#: Residual frame loss the depth is chosen for.
TARGET_RESIDUAL = 0.002


def redundancy_depth(fraction_lost, burst=0.0, *, max_depth=MAX_DEPTH):
    """How many earlier frames to repeat in each packet.

    ``fraction_lost``: packet loss on the path, 0-1; ``burst``: a high
    percentile of the loss-run length, in packets.  Independent losses call
    for the smallest ``d`` with ``fraction_lost ** (d + 1) <= TARGET_RESIDUAL``;
    bursts call for at least one frame more than the burst.  No loss, no
    redundancy (the stream then costs only the codec's bitrate).
    """
    if not 0.0 <= fraction_lost <= 1.0:
        raise ValueError(f"fraction_lost must be in [0, 1], got {fraction_lost}")
    if fraction_lost <= 0.0:
        return 0
    if fraction_lost >= 1.0:
        return max_depth
    independent = math.ceil(math.log(TARGET_RESIDUAL) / math.log(fraction_lost)) - 1
    bursty = math.ceil(burst) + 1 if burst >= 1.0 else 0
    return int(min(max_depth, max(independent, bursty)))


class LossMeter:
    """Counts a stream's packets by extended sequence number between reports."""

    def __init__(self):
        self._seen = set()
        self._first = None          # first sequence number of this report interval
        self.highest = None         # highest extended sequence number seen
        self._last = None           # highest at the last report (it arrived)

    def add(self, ext_seq):
        """Record the arrival of the packet with extended sequence ``ext_seq``."""
        if self._first is None:
            self._first = ext_seq
        if self._first <= ext_seq:
            self._seen.add(ext_seq)
        if self.highest is None or ext_seq > self.highest:
            self.highest = ext_seq

    def report(self):
        """Loss since the last report: ``(fraction_lost, burst_p95)``; resets the interval.

        ``None`` when no packet arrived at all.  Packets counted are those from
        the interval's first to the highest seen; a loss run is a stretch of
        missing sequence numbers between two that arrived.
        """
        if self.highest is None or self._first is None:
            return None
        expected = self.highest - self._first + 1
        got = sorted(self._seen)
        anchored = ([self._last] if self._last is not None else []) + got
        runs = np.diff(anchored) - 1 if len(anchored) > 1 else np.zeros(0)
        self._last = self.highest
        runs = runs[runs > 0]
        self._first = self.highest + 1
        self._seen = set()
        fraction = max(0, expected - len(got)) / expected if expected > 0 else 0.0
        burst = float(np.percentile(runs, 95)) if len(runs) else 0.0
        return fraction, burst


class RedundancyControl:
    """The RED depth for one path, from the receiver reports about it.

    Reports come every 0.1-0.5 s and each holds a handful of packets, and some
    are lost on the very path they describe, so the loss is averaged over the
    reports of the last ``window_s`` seconds, weighted by the packets each
    covers (the report's ``highest_seq`` minus the previous one's); the burst
    length is the largest reported in that window.
    """

    def __init__(self, window_s=2.0):
        self.window_s = window_s
        self._reports = collections.deque()     # (time, lost packets, packets, burst)
        self._highest = None
        self.depth = 0
        self.fraction_lost = 0.0

    def add(self, now, fraction_lost, burst=0.0, highest_seq=None):
        """Take one report received at ``now`` (seconds); returns the new depth.

        ``highest_seq``: the report's extended highest sequence number (any
        integer that grows by one a packet), used to weigh it.
        """
        packets = 1.0
        if highest_seq is not None:
            if self._highest is not None and 0 < highest_seq - self._highest < 2**15:
                packets = float(highest_seq - self._highest)
            self._highest = highest_seq
        fraction = min(1.0, max(0.0, fraction_lost))
        self._reports.append((now, fraction * packets, packets, burst))
        while self._reports[0][0] < now - self.window_s:
            self._reports.popleft()
        lost = sum(r[1] for r in self._reports)
        total = sum(r[2] for r in self._reports)
        self.fraction_lost = lost / total
        burst = max(r[3] for r in self._reports)
        self.depth = redundancy_depth(self.fraction_lost, burst)
        return self.depth

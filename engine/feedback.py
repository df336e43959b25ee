"""Loss measurement on a received stream, and the redundancy it calls for.

Receivers (the server for each host's uplink, a client for each stream it
plays) count the packets that arrive by sequence number with ``LossMeter``
and report, every few hundred milliseconds, the fraction lost on the path,
how long the loss bursts are and how many packets were lost in all.  The
sender of that path measures the loss over its last few seconds from the
running totals of the reports it gets (those lost on the way cost nothing
but time) and turns it into a RED depth with ``redundancy_depth``: each
frame then travels in ``depth + 1`` packets, so it is lost only when all of
them are.
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
        self._origin = None         # first sequence number of the stream
        self._counted = 0           # packets counted in the intervals so far

    def add(self, ext_seq):
        """Record the arrival of the packet with extended sequence ``ext_seq``."""
        if self._first is None:
            self._first = ext_seq
            self._origin = ext_seq
        if self._first <= ext_seq and ext_seq not in self._seen:
            self._seen.add(ext_seq)
            self._counted += 1
        if self.highest is None or ext_seq > self.highest:
            self.highest = ext_seq

    @property
    def cumulative_lost(self):
        """Packets lost since the stream's first: those up to the highest seen
        that were not counted in their report interval (0 before any packet)."""
        if self.highest is None:
            return 0
        return max(0, self.highest - self._origin + 1 - self._counted)

    def report(self):
        """Loss since the last report: ``(fraction_lost, burst_p95)``; resets the interval.

        ``None`` when no packet arrived since the last report (nothing is
        known of the interval: the path may be down or the sender silent).
        Packets counted are those from the interval's first to the highest
        seen; a loss run is a stretch of missing sequence numbers between two
        that arrived.
        """
        if self.highest is None or self._first is None or self._first > self.highest:
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

    Reports come every 0.1-0.5 s, and on a lossy path many are lost on the
    very path they describe.  The loss is measured from the running totals
    the reports carry (highest sequence number, packets lost in all): over
    the span from the newest report older than ``window_s`` seconds (or the
    first report) to the newest one, so a report that got through speaks for
    the lost ones before it, and an interval with few packets cannot swing
    the depth.  The burst length is the largest reported in the window.
    """

    def __init__(self, window_s=2.0):
        self.window_s = window_s
        self._reports = collections.deque()     # (time, highest, cumulative lost, fraction, burst)
        self.depth = 0
        self.fraction_lost = 0.0

    def add(self, now, fraction_lost, burst=0.0, highest_seq=None, cumulative_lost=None):
        """Take one report received at ``now`` (seconds); returns the new depth.

        ``highest_seq``: the report's extended highest sequence number (any
        integer that grows by one a packet); ``cumulative_lost``: packets lost
        since the stream began.  Without them (or with no earlier report to
        measure from) the report's own ``fraction_lost`` is taken.
        """
        fraction = min(1.0, max(0.0, fraction_lost))
        reports = self._reports
        reports.append((now, highest_seq, cumulative_lost, fraction, burst))
        edge = now - self.window_s
        while len(reports) > 1 and reports[1][0] < edge:
            reports.popleft()
        base, last = reports[0], reports[-1]
        span = None
        if base is not last and None not in (base[1], base[2], last[1], last[2]):
            span = last[1] - base[1]
        if span is not None and 0 < span < 2**15:
            self.fraction_lost = min(1.0, max(0.0, (last[2] - base[2]) / span))
        else:
            self.fraction_lost = fraction
        burst = max(r[4] for r in reports if r[0] >= edge)
        self.depth = redundancy_depth(self.fraction_lost, burst)
        return self.depth


class ReceiverRedundancy:
    """The RED depth one receiver needs: the deepest its reports about each
    source call for (one ``RedundancyControl`` per source, as each source's
    sequence numbers and totals are its own).  A source not reported on for
    ``forget_s`` seconds (gone) no longer counts."""

    def __init__(self, window_s=2.0, forget_s=10.0):
        self.window_s = window_s
        self.forget_s = forget_s
        self._sources = {}          # source -> [RedundancyControl, last report time]
        self.depth = 0
        self.fraction_lost = 0.0

    def add(self, now, source, fraction_lost, burst=0.0, highest_seq=None, cumulative_lost=None):
        """Take one report block about ``source`` received at ``now``; returns the new depth."""
        entry = self._sources.setdefault(source, [RedundancyControl(self.window_s), now])
        entry[0].add(now, fraction_lost, burst, highest_seq, cumulative_lost)
        entry[1] = now
        for gone in [s for s, e in self._sources.items() if e[1] < now - self.forget_s]:
            del self._sources[gone]
        self.depth = max(e[0].depth for e in self._sources.values())
        self.fraction_lost = max(e[0].fraction_lost for e in self._sources.values())
        return self.depth

"""Real-time fundamental-frequency tracking (YIN)."""

import math

import numpy as np

from .lazykernels import kernels
from .processor import Float, Processor

kern = kernels("yin")

#: Estimates are made every HOP_MS (256 samples at 48 kHz).
HOP_MS = 256 / 48.0
#: YIN's integration window (1000 samples at 48 kHz).
WINDOW_MS = 1000 / 48.0
#: Estimates kept in ``history`` (about 44 s at the 5.3 ms hop).
HISTORY_SIZE = 8192


def yin_layout(sample_rate, fmin_hz, fmax_hz):
    """``(hop, width, tau_min, tau_max)`` in samples for a tracker at ``sample_rate``."""
    hop = max(1, int(round(HOP_MS * 1e-3 * sample_rate)))
    width = max(2, int(round(WINDOW_MS * 1e-3 * sample_rate)))
    tau_max = int(math.ceil(sample_rate / fmin_hz))
    tau_min = max(2, int(math.floor(sample_rate / fmax_hz)))
    return hop, width, tau_min, tau_max


class PitchTracker(Processor):
    """Track the fundamental frequency of the input; the audio passes unchanged.

    Every 5.33 ms (256 samples at 48 kHz) YIN (``kernels.yin``) runs on the
    last ``20.8 ms + 1 / fmin_hz`` of the mean of the channels.  A frame is
    voiced when its cumulative mean normalised difference has a dip under
    ``threshold`` (the first such dip is taken), or, failing that, when its
    deepest dip is under twice ``threshold``.

    Results: ``f0_hz`` (latest estimate, NaN when unvoiced), ``voiced``,
    ``aperiodicity`` (d' at the chosen dip, 0 perfectly periodic, about 1 for
    noise) and ``history`` (times, f0 and voicing of the last 8192
    estimates).  A frame's time is the centre of the samples it analysed,
    in seconds from the first sample processed since the last reset.

    Latency 0: the output is a copy of the input.
    """

    fmin_hz = Float(60.0, 30.0, 300.0, unit="Hz", doc="lowest f0 searched")
    fmax_hz = Float(1000.0, 400.0, 2000.0, unit="Hz", doc="highest f0 searched")
    threshold = Float(0.25, 0.05, 0.5, doc="YIN threshold on d' (lower: stricter voicing)")

    def _prepare(self):
        sr = self.sample_rate
        self._hop, self._width, self._tau_min, self._tau_max = yin_layout(
            sr, self.fmin_hz, self.fmax_hz)
        span = self._width + self._tau_max + 1
        size = 1
        while size < span + self._hop:
            size *= 2
        self._ring = np.zeros(size)
        self._counter = np.zeros(1, dtype=np.int64)
        self._scratch = np.zeros((1, 3))
        self._times = np.zeros(HISTORY_SIZE)
        self._f0 = np.full(HISTORY_SIZE, np.nan)
        self._aperiodicity = np.ones(HISTORY_SIZE)
        self._count = 0

    def _param_changed(self, name):
        # The threshold applies from the next frame on; a new search range
        # changes the analysis layout, so tracking starts afresh.
        if name != "threshold":
            self._prepare()

    def _process(self, block):
        n = block.shape[1]
        rows = n // self._hop + 1
        if self._scratch.shape[0] < rows:
            self._scratch = np.zeros((rows, 3))
        k = kern.yin_track(block, self._hop, self._width, self._tau_min, self._tau_max,
                           self.threshold, min(1.0, 2.0 * self.threshold), self._ring,
                           self._counter, self._scratch)
        if k:
            est = self._scratch[:k]
            span = self._width + self._tau_max + 1
            slots = (self._count + np.arange(k)) % HISTORY_SIZE
            self._times[slots] = (est[:, 0] - 0.5 * span) / self.sample_rate
            period = est[:, 1]
            with np.errstate(divide="ignore"):
                self._f0[slots] = np.where(period > 0.0, self.sample_rate / period, np.nan)
            self._aperiodicity[slots] = est[:, 2]
            self._count += k
        return block.copy()

    # -- results --------------------------------------------------------------
    def _latest(self, name, empty):
        if self.sample_rate is None or self._count == 0:
            return empty
        return getattr(self, name)[(self._count - 1) % HISTORY_SIZE]

    @property
    def f0_hz(self):
        """Latest f0 estimate in Hz; NaN when unvoiced or before the first one."""
        return float(self._latest("_f0", math.nan))

    @property
    def voiced(self):
        """Whether the latest frame was voiced."""
        return not math.isnan(self.f0_hz)

    @property
    def aperiodicity(self):
        """d' of the latest frame (0 periodic .. about 1 noise)."""
        return float(self._latest("_aperiodicity", 1.0))

    @property
    def history(self):
        """``(times_s, f0_hz, voiced)`` arrays of the kept estimates, oldest first.

        ``f0_hz`` is NaN where unvoiced.  At most 8192 estimates are kept.
        """
        if self.sample_rate is None or self._count == 0:
            return np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
        k = min(self._count, HISTORY_SIZE)
        slots = (self._count - k + np.arange(k)) % HISTORY_SIZE
        f0 = self._f0[slots].copy()
        return self._times[slots].copy(), f0, ~np.isnan(f0)

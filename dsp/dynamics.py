"""Dynamics processors: compressor, look-ahead limiter, noise gate.

Each detects on the loudest channel (stereo-linked), so these are not
channel-independent: a stereo pair is gained as one.
"""

import math

import numpy as np

from .audio import db_to_gain, float32_below, raise_non_finite
from .lazykernels import kernels
from .processor import Float, Processor, make_ramp, ramp_to

kern = kernels("dynamics")


def one_pole(time_ms, sample_rate):
    """Coefficient of a one-pole smoother with time constant ``time_ms``."""
    return math.exp(-1000.0 / (time_ms * sample_rate))


class Compressor(Processor):
    """Feed-forward compressor with a soft knee and make-up gain."""

    threshold_db = Float(-18.0, -60.0, 0.0, unit="dBFS", doc="level where compression starts")
    ratio = Float(4.0, 1.0, 50.0, doc="input dB per output dB above the threshold")
    knee_db = Float(6.0, 0.0, 24.0, unit="dB", doc="width of the soft knee")
    attack_ms = Float(5.0, 0.05, 500.0, unit="ms", doc="time constant of gain reduction")
    release_ms = Float(100.0, 1.0, 5000.0, unit="ms", doc="time constant of recovery")
    makeup_db = Float(0.0, -24.0, 24.0, unit="dB", doc="gain after compression")
    channel_independent = False
    checks_finite = True  # the kernel scans its input first

    def _prepare(self):
        self._state = np.zeros(1)
        self._makeup = make_ramp(db_to_gain(self.makeup_db))
        self._settings()

    def _settings(self):
        """Kernel arguments that follow from the parameters (computed on change)."""
        # A zero-width knee is a hard knee; keep the kernel's division finite.
        self._args = (self.threshold_db, self.ratio, max(self.knee_db, 1e-6),
                      one_pole(self.attack_ms, self.sample_rate),
                      one_pole(self.release_ms, self.sample_rate))

    def _param_changed(self, name):
        if name == "makeup_db":
            ramp_to(self._makeup, db_to_gain(self.makeup_db), self.ramp_samples())
        self._settings()

    def _process(self, block):
        out = np.empty_like(block)
        threshold, ratio, knee, attack, release = self._args
        bad = kern.compressor(block, out, threshold, ratio, knee, attack, release, self._state,
                              self._makeup)
        if bad >= 0:
            raise_non_finite(block, bad)
        return out


class Limiter(Processor):
    """Look-ahead brick-wall limiter: no output sample exceeds ``ceiling_db``.

    The output is delayed by ``latency`` samples (``lookahead_ms``), during
    which the gain ramps down ahead of a peak.  Changing ``lookahead_ms``
    while streaming restarts the limiter.
    """

    ceiling_db = Float(-1.0, -30.0, 0.0, unit="dBFS", doc="highest output level")
    release_ms = Float(60.0, 1.0, 2000.0, unit="ms", doc="time constant of recovery")
    lookahead_ms = Float(5.0, 0.1, 50.0, unit="ms", doc="look-ahead (and latency)")
    channel_independent = False

    def latency_at(self, sample_rate):
        return max(1, int(round(self.lookahead_ms * 1e-3 * sample_rate)))

    def _prepare(self):
        d = self.latency_at(self.sample_rate)
        self._delay = np.zeros((self.num_channels, d))
        self._needs = np.ones(d + 1)
        self._suffix = np.ones(d + 1)
        self._fstate = np.ones(d + 4)  # held, box sum, prefix minimum, box ring
        self._fstate[1] = d + 1.0
        self._istate = np.zeros(2, dtype=np.int64)
        self._settings()

    def _settings(self):
        self._ceiling = float32_below(db_to_gain(self.ceiling_db))
        self._release = one_pole(self.release_ms, self.sample_rate)

    def _param_changed(self, name):
        if name == "lookahead_ms" and self._delay.shape[1] != self.latency_at(self.sample_rate):
            self._prepare()
        self._settings()

    def _process(self, block):
        out = np.empty_like(block)
        kern.limiter(block, out, self._ceiling, self._release, self._delay,
                     self._needs, self._suffix, self._fstate, self._istate)
        return out


class NoiseGate(Processor):
    """Noise gate: attenuates by ``range_db`` while the input stays below
    ``threshold_db``; opens at the threshold, closes ``hysteresis_db`` lower
    after ``hold_ms``."""

    threshold_db = Float(-50.0, -100.0, 0.0, unit="dBFS", doc="opening level")
    hysteresis_db = Float(6.0, 0.0, 30.0, unit="dB", doc="closing level below the threshold")
    range_db = Float(-60.0, -120.0, 0.0, off=True, unit="dB",
                     doc="gain while closed (-inf = silence)")
    attack_ms = Float(1.0, 0.05, 100.0, unit="ms", doc="opening time constant")
    hold_ms = Float(50.0, 0.0, 2000.0, unit="ms", doc="time held open after the signal drops")
    release_ms = Float(80.0, 1.0, 5000.0, unit="ms", doc="closing time constant")
    channel_independent = False

    #: Fall time of the peak detector.
    detector_ms = 10.0

    def _prepare(self):
        self._state = np.array([0.0, db_to_gain(self.range_db), 0.0])
        self._counter = np.zeros(1, dtype=np.int64)

    def _param_changed(self, name):
        pass  # the gain is smoothed by the attack and release themselves

    def _process(self, block):
        out = np.empty_like(block)
        sr = self.sample_rate
        kern.noise_gate(block, out, db_to_gain(self.threshold_db),
                        db_to_gain(self.threshold_db - self.hysteresis_db),
                        db_to_gain(self.range_db), int(round(self.hold_ms * 1e-3 * sr)),
                        one_pole(self.detector_ms, sr), one_pole(self.attack_ms, sr),
                        one_pole(self.release_ms, sr), self._state, self._counter)
        return out

"""Filter processors built from RBJ biquads: peak, shelves, passes, notch.

Frequencies at or above 0.49 x the sample rate are clamped there.  Parameter
changes while streaming glide over ``smoothing_ms`` (coefficients are
interpolated; see ``kernels.biquad``).
"""

import math

from . import biquad
from .processor import Choice, Float, Processor

Q_BUTTERWORTH = 1.0 / math.sqrt(2.0)


class BiquadFilter(Processor, register=False):
    """Base of the filters: subclasses return their sections from ``design``."""

    checks_finite = True  # the cascade kernel scans its input first

    def design(self, sample_rate):
        """Coefficient rows ``[b0, b1, b2, a1, a2]`` for ``sample_rate`` (Hz).

        One row per second-order section, ``a0`` normalised to 1.
        """
        raise NotImplementedError

    def _prepare(self):
        self._cascade = biquad.BiquadCascade(self.design(self.sample_rate), self.num_channels)

    def _reset(self):
        self._cascade.reset()

    def _param_changed(self, name):
        coefs = self.design(self.sample_rate)
        if len(coefs) != self._cascade.sections:  # order changed: start afresh
            self._prepare()
        else:
            self._cascade.set(coefs, self.ramp_samples())

    def _process(self, block):
        return self._cascade.process(block)


class PeakFilter(BiquadFilter):
    """Peaking (bell) filter: ``gain_db`` at ``frequency_hz``."""

    frequency_hz = Float(1000.0, 10.0, 24000.0, unit="Hz", doc="centre frequency")
    gain_db = Float(0.0, -30.0, 30.0, unit="dB", doc="gain at the centre")
    q = Float(1.0, 0.1, 40.0, doc="quality factor (centre / bandwidth)")

    def design(self, sample_rate):
        return [biquad.peak(self.frequency_hz, self.gain_db, self.q, sample_rate)]


class LowShelf(BiquadFilter):
    """Low shelf: ``gain_db`` below ``frequency_hz``."""

    frequency_hz = Float(200.0, 10.0, 24000.0, unit="Hz", doc="shelf mid-point")
    gain_db = Float(0.0, -30.0, 30.0, unit="dB", doc="gain of the shelf")
    q = Float(Q_BUTTERWORTH, 0.1, 10.0, doc="slope (0.707 = steepest without overshoot)")

    def design(self, sample_rate):
        return [biquad.low_shelf(self.frequency_hz, self.gain_db, self.q, sample_rate)]


class HighShelf(BiquadFilter):
    """High shelf: ``gain_db`` above ``frequency_hz``."""

    frequency_hz = Float(4000.0, 10.0, 24000.0, unit="Hz", doc="shelf mid-point")
    gain_db = Float(0.0, -30.0, 30.0, unit="dB", doc="gain of the shelf")
    q = Float(Q_BUTTERWORTH, 0.1, 10.0, doc="slope (0.707 = steepest without overshoot)")

    def design(self, sample_rate):
        return [biquad.high_shelf(self.frequency_hz, self.gain_db, self.q, sample_rate)]


class _PassFilter(BiquadFilter, register=False):
    order = Choice(2, (2, 4, 6, 8), doc="filter order (12 dB/octave per 2)")
    q = Float(Q_BUTTERWORTH, 0.1, 20.0, doc="resonance of a 2nd-order filter; "
              "higher orders are Butterworth")

    _section = None

    def design(self, sample_rate):
        qs = [self.q] if self.order == 2 else biquad.butterworth_qs(self.order)
        return [type(self)._section(self.cutoff_hz, q, sample_rate) for q in qs]


class HighPass(_PassFilter):
    """High pass, -3 dB at ``cutoff_hz`` (Butterworth)."""

    cutoff_hz = Float(100.0, 10.0, 24000.0, unit="Hz", doc="-3 dB point")
    _section = staticmethod(biquad.high_pass)


class LowPass(_PassFilter):
    """Low pass, -3 dB at ``cutoff_hz`` (Butterworth)."""

    cutoff_hz = Float(8000.0, 10.0, 24000.0, unit="Hz", doc="-3 dB point")
    _section = staticmethod(biquad.low_pass)


class BandPass(BiquadFilter):
    """Band pass, 0 dB at ``frequency_hz``."""

    frequency_hz = Float(1000.0, 10.0, 24000.0, unit="Hz", doc="centre frequency")
    q = Float(Q_BUTTERWORTH, 0.1, 40.0, doc="quality factor (centre / bandwidth)")

    def design(self, sample_rate):
        return [biquad.band_pass(self.frequency_hz, self.q, sample_rate)]


class Notch(BiquadFilter):
    """Notch: removes ``frequency_hz``."""

    frequency_hz = Float(1000.0, 10.0, 24000.0, unit="Hz", doc="frequency removed")
    q = Float(10.0, 0.1, 100.0, doc="quality factor (centre / bandwidth)")

    def design(self, sample_rate):
        return [biquad.notch(self.frequency_hz, self.q, sample_rate)]

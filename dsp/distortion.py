"""Colour effects: Distortion (waveshaping), Bitcrush and Exciter.

The waveshapers use first-order antiderivative anti-aliasing (see
``kernels.distortion``), which keeps the latency at 0 and the dry and wet
paths aligned (to half a sample) for ``mix``.  Measured aliasing (tests,
48 kHz, a 997 Hz tone at 0.5 full scale): at 24 dB of drive the folded
components total -53 dB (soft) and -45 dB (hard) relative to the
fundamental, against -48 dB and -36 dB without it.
"""

import numpy as np

from . import biquad
from .audio import db_to_gain
from .filters import Q_BUTTERWORTH
from .lazykernels import kernels
from .processor import Choice, Float
from .ramped import RampedProcessor

kern = kernels("distortion")
kmixer = kernels("mixer")

#: Distortion modes, by the name of the kernel's mode number.
MODES = {"soft": "SOFT", "hard": "HARD", "tube": "TUBE"}
#: Corner of the high-pass that removes the tube shape's DC offset.
DC_BLOCK_HZ = 10.0
#: Order of the Exciter's high-passes (before and after the shaper).
EXCITER_ORDER = 4

# Rows of the shapers' ramps: drive gain, the weight of each mode, then the
# mix (Distortion) or amount (Exciter).
DRIVE, WEIGHTS, LEVEL = 0, slice(1, 4), 4


def mode_weights(mode):
    """One-hot weights of the kernel's modes for ``mode`` ("soft", "hard", "tube")."""
    w = [0.0, 0.0, 0.0]
    w[getattr(kern, MODES[mode])] = 1.0
    return w


def high_pass_sections(frequency_hz, order, sample_rate):
    """Butterworth high-pass of even ``order`` as biquad rows."""
    return [biquad.high_pass(frequency_hz, q, sample_rate) for q in biquad.butterworth_qs(order)]


class _Shaper(RampedProcessor, register=False):
    """Shared machinery: ``kernels.distortion.waveshape`` driven by ramps
    DRIVE (linear gain) and WEIGHTS (one per mode), and a LEVEL ramp."""

    def _shaper_targets(self, drive_db, mode, level):
        return [db_to_gain(drive_db)] + mode_weights(mode) + [level]

    def _prepare(self):
        super()._prepare()
        self._last = np.zeros(self.num_channels)

    def _shape(self, block, normalize):
        out = np.empty_like(block)
        kern.waveshape(block, out, self._ramps[DRIVE], self._ramps[WEIGHTS], self._last, normalize)
        return out


class Distortion(_Shaper):
    """Distortion: drive into a saturating curve, then a tone low-pass.

    ``drive_db`` is the gain before the curve; ``mode`` "soft" (tanh),
    "hard" (clipping at full scale) or "tube" (asymmetric tanh: even
    harmonics; its DC offset is removed by a 10 Hz high-pass); ``tone_hz``
    the corner of a second-order Butterworth low-pass after it; ``mix``
    cross-fades from the dry input (0) to the distorted signal (1).  The
    curves saturate at full scale, so the distorted signal is no louder than
    0 dBFS (the tone filter may overshoot slightly).  A ``tone_hz`` above
    0.49 times the sample rate is taken as that.  Changes of drive, mix,
    tone and mode are smoothed (modes cross-fade).  Channels are
    independent; latency 0.
    """

    drive_db = Float(12.0, 0.0, 48.0, unit="dB", doc="gain into the curve")
    tone_hz = Float(8000.0, 200.0, 20000.0, unit="Hz", doc="corner of the low-pass after it")
    mix = Float(1.0, 0.0, 1.0, doc="0 dry only, 1 distorted only")
    mode = Choice("soft", tuple(MODES), doc="curve: soft (tanh), hard (clip), tube (asymmetric)")

    def design(self, sample_rate):
        """The tone filter: DC blocker and low-pass, as biquad rows for
        ``sample_rate`` (Hz)."""
        return [biquad.high_pass(DC_BLOCK_HZ, Q_BUTTERWORTH, sample_rate),
                biquad.low_pass(self.tone_hz, Q_BUTTERWORTH, sample_rate)]

    def _targets(self):
        return self._shaper_targets(self.drive_db, self.mode, self.mix)

    def _prepare(self):
        super()._prepare()
        self._tone = biquad.BiquadCascade(self.design(self.sample_rate), self.num_channels)

    def _param_changed(self, name):
        super()._param_changed(name)
        if name == "tone_hz":
            self._tone.set(self.design(self.sample_rate), self.ramp_samples())

    def _process(self, block):
        wet = self._tone.process(self._shape(block, False))
        out = block.copy()
        wet -= block
        kmixer.accumulate(out, wet, self._ramps[LEVEL])  # out = dry + mix (wet - dry)
        return out


class Exciter(_Shaper):
    """Exciter: adds harmonics of the content above ``frequency_hz``.

    The band above ``frequency_hz`` (fourth-order Butterworth high-pass) is
    driven by ``drive_db`` into the tube curve, scaled back by the drive, and
    high-passed again at ``frequency_hz``, so that what is added (``amount``
    times it) lies above ``frequency_hz``: the band itself, brighter, and its
    harmonics, more of them with more drive.  Below ``frequency_hz`` the
    input passes unchanged.  Filter frequencies above 0.49 times the sample
    rate are taken as that.  Channels are independent; latency 0.
    """

    frequency_hz = Float(3000.0, 1000.0, 12000.0, unit="Hz", doc="lowest frequency excited")
    amount = Float(0.3, 0.0, 1.0, doc="level of the excited band added to the input")
    drive_db = Float(12.0, 0.0, 36.0, unit="dB", doc="saturation of the band (more harmonics)")

    def design(self, sample_rate):
        """The high-pass before (and the same after) the curve, as biquad rows
        for ``sample_rate`` (Hz)."""
        return high_pass_sections(self.frequency_hz, EXCITER_ORDER, sample_rate)

    def _targets(self):
        return self._shaper_targets(self.drive_db, "tube", self.amount)

    def _prepare(self):
        super()._prepare()
        coefs = self.design(self.sample_rate)
        self._before = biquad.BiquadCascade(coefs, self.num_channels)
        self._after = biquad.BiquadCascade(coefs, self.num_channels)

    def _param_changed(self, name):
        super()._param_changed(name)
        if name == "frequency_hz":
            coefs = self.design(self.sample_rate)
            self._before.set(coefs, self.ramp_samples())
            self._after.set(coefs, self.ramp_samples())

    def _process(self, block):
        band = self._after.process(self._shape(self._before.process(block), True))
        out = block.copy()
        kmixer.accumulate(out, band, self._ramps[LEVEL])
        return out


class Bitcrush(RampedProcessor):
    """Bit crusher: sample-and-hold by ``downsample``, quantization to ``bits``.

    Every ``downsample`` samples (a fractional factor holds for the whole
    numbers of samples either side of it in turn, ``downsample`` on
    average) a new sample is
    taken and rounded (halves up) to a step of ``2 ** (1 - bits)`` full scale (``bits``
    may be fractional, so it glides; 0 stays 0, so the levels from -1 to 1
    are ``2 ** bits + 1``); ``mix`` cross-fades from the dry input (0) to
    the crushed signal (1).  All channels are held at the same instants.
    Latency 0.
    """

    bits = Float(8.0, 1.0, 24.0, unit="bits", doc="resolution (step 2**(1 - bits))")
    downsample = Float(1.0, 1.0, 64.0, doc="sample-and-hold factor")
    mix = Float(1.0, 0.0, 1.0, doc="0 dry only, 1 crushed only")

    def _targets(self):
        t = np.zeros(3)
        t[kern.B_BITS] = self.bits
        t[kern.B_FACTOR] = self.downsample
        t[kern.B_MIX] = self.mix
        return t

    def _prepare(self):
        super()._prepare()
        self._state = np.zeros(1 + self.num_channels)
        self._state[0] = 1.0  # take the first sample

    def _process(self, block):
        out = np.empty_like(block)
        kern.bitcrush(block, out, self._ramps, self._state)
        return out

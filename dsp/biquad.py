"""Biquad design (RBJ Audio EQ Cookbook) and the cascade that runs them.

The formulas are those of R. Bristow-Johnson, "Cookbook formulae for audio EQ
biquad filter coefficients".  Each design returns ``[b0, b1, b2, a1, a2]``
normalised by ``a0``.
"""

import math

import numpy as np

from .audio import raise_non_finite
from .lazykernels import kernels

kern = kernels("biquad")

IDENTITY = np.array([1.0, 0.0, 0.0, 0.0, 0.0])

#: Designs are clamped below this fraction of the sample rate.
MAX_FREQUENCY_RATIO = 0.49


def _w0(frequency_hz, sample_rate):
    f = min(frequency_hz, MAX_FREQUENCY_RATIO * sample_rate)
    w0 = 2.0 * math.pi * f / sample_rate
    return math.cos(w0), math.sin(w0)


def _norm(b0, b1, b2, a0, a1, a2):
    return np.array([b0 / a0, b1 / a0, b2 / a0, a1 / a0, a2 / a0])


def peak(frequency_hz, gain_db, q, sample_rate):
    """Peaking EQ: ``gain_db`` at ``frequency_hz``, bandwidth set by ``q``."""
    a = 10.0 ** (gain_db / 40.0)
    cw, sw = _w0(frequency_hz, sample_rate)
    alpha = sw / (2.0 * q)
    return _norm(1 + alpha * a, -2 * cw, 1 - alpha * a, 1 + alpha / a, -2 * cw, 1 - alpha / a)


def low_shelf(frequency_hz, gain_db, q, sample_rate):
    """Low shelf: ``gain_db`` below ``frequency_hz`` (half the gain there)."""
    a = 10.0 ** (gain_db / 40.0)
    cw, sw = _w0(frequency_hz, sample_rate)
    k = 2.0 * math.sqrt(a) * sw / (2.0 * q)
    return _norm(a * ((a + 1) - (a - 1) * cw + k), 2 * a * ((a - 1) - (a + 1) * cw),
                 a * ((a + 1) - (a - 1) * cw - k), (a + 1) + (a - 1) * cw + k,
                 -2 * ((a - 1) + (a + 1) * cw), (a + 1) + (a - 1) * cw - k)


def high_shelf(frequency_hz, gain_db, q, sample_rate):
    """High shelf: ``gain_db`` above ``frequency_hz`` (half the gain there)."""
    a = 10.0 ** (gain_db / 40.0)
    cw, sw = _w0(frequency_hz, sample_rate)
    k = 2.0 * math.sqrt(a) * sw / (2.0 * q)
    return _norm(a * ((a + 1) + (a - 1) * cw + k), -2 * a * ((a - 1) + (a + 1) * cw),
                 a * ((a + 1) + (a - 1) * cw - k), (a + 1) - (a - 1) * cw + k,
                 2 * ((a - 1) - (a + 1) * cw), (a + 1) - (a - 1) * cw - k)


def low_pass(frequency_hz, q, sample_rate):
    """Second-order low pass; -3 dB at ``frequency_hz`` when ``q = 1/sqrt(2)``."""
    cw, sw = _w0(frequency_hz, sample_rate)
    alpha = sw / (2.0 * q)
    return _norm((1 - cw) / 2, 1 - cw, (1 - cw) / 2, 1 + alpha, -2 * cw, 1 - alpha)


def high_pass(frequency_hz, q, sample_rate):
    """Second-order high pass; -3 dB at ``frequency_hz`` when ``q = 1/sqrt(2)``."""
    cw, sw = _w0(frequency_hz, sample_rate)
    alpha = sw / (2.0 * q)
    return _norm((1 + cw) / 2, -(1 + cw), (1 + cw) / 2, 1 + alpha, -2 * cw, 1 - alpha)


def band_pass(frequency_hz, q, sample_rate):
    """Band pass with 0 dB at ``frequency_hz``."""
    cw, sw = _w0(frequency_hz, sample_rate)
    alpha = sw / (2.0 * q)
    return _norm(alpha, 0.0, -alpha, 1 + alpha, -2 * cw, 1 - alpha)


def notch(frequency_hz, q, sample_rate):
    """Notch: zero gain at ``frequency_hz``."""
    cw, sw = _w0(frequency_hz, sample_rate)
    alpha = sw / (2.0 * q)
    return _norm(1.0, -2 * cw, 1.0, 1 + alpha, -2 * cw, 1 - alpha)


def butterworth_qs(order):
    """Q of each second-order section of an even-order Butterworth filter."""
    return [1.0 / (2.0 * math.cos((2 * k - 1) * math.pi / (2 * order)))
            for k in range(1, order // 2 + 1)]


def to_sos(coefs):
    """``[b0, b1, b2, a1, a2]`` rows to SciPy's ``sos`` layout (for tests and plots)."""
    coefs = np.atleast_2d(coefs)
    return np.column_stack([coefs[:, :3], np.ones(len(coefs)), coefs[:, 3:]])


class BiquadCascade:
    """State and coefficients of a cascade, with smooth coefficient changes.

    Not a processor itself: filter processors own one.  ``set(coefs, ramp)``
    sets new coefficients, reached linearly over ``ramp`` samples (0 = now).
    """

    def __init__(self, coefs, num_channels):
        coefs = np.array(coefs, dtype=np.float64).reshape(-1, 5)
        self._params = np.zeros((3,) + coefs.shape)
        # In use, target, step per sample: views of the one array the kernel takes.
        self.coef, self.target, self.step = self._params
        self.coef[:] = coefs
        self.target[:] = coefs
        self.ramp = np.zeros(1, dtype=np.int64)
        self.state = np.zeros((num_channels, len(coefs) + 1, 2))

    @property
    def sections(self):
        return self.coef.shape[0]

    def set(self, coefs, ramp_samples):
        coefs = np.array(coefs, dtype=np.float64).reshape(-1, 5)
        if coefs.shape != self.coef.shape:
            raise ValueError("the number of sections cannot change while streaming")
        self.target[:] = coefs
        if ramp_samples <= 0 or np.array_equal(coefs, self.coef):
            self.coef[:] = coefs
            self.step[:] = 0.0
            self.ramp[0] = 0
        else:
            self.step[:] = (coefs - self.coef) / ramp_samples
            self.ramp[0] = ramp_samples

    def reset(self):
        self.state[:] = 0.0
        self.coef[:] = self.target
        self.step[:] = 0.0
        self.ramp[0] = 0

    def process(self, block):
        """Filter ``block``; ``ValueError`` (state untouched) if it holds NaN/Inf."""
        out = np.empty_like(block)
        bad = kern.biquad_cascade(block, out, self._params, self.ramp, self.state)
        if bad >= 0:
            raise_non_finite(block, bad)
        return out

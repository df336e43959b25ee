"""De-esser kernel: gain reduction of one band, driven by that band's level."""

import math

import numpy as np

from . import kernel
from .common import ramp_next
from .dynamics import DB_TO_NEPER

#: Detector state below this is set to exactly zero.
TINY = 1e-20

# Rows of ``de_esser``'s ``ramps``.
THRESHOLD, RANGE = range(2)
# ``state``: mean square of the band, smoothed gain reduction in dB.
MEAN_SQUARE, REDUCTION = range(2)


@kernel("void(float32[:, ::1], float32[:, ::1], float32[:, ::1], float64[:, ::1], float64,"
        " float64, float64, float64[::1])")
def de_esser(x, band, y, ramps, detector, attack, release, state):
    """``y = x + (g - 1) band``: the band ``band`` (a filtered copy of ``x``)
    turned down by the gain ``g``, the rest of ``x`` untouched.

    Detector: the mean square of the band (loudest channel each sample)
    through a one-pole smoother (coefficient ``detector``); its level in dB
    is ``10 log10(2 ms)``, so a steady sine reads its peak level.  Target
    reduction: the level's excess over the THRESHOLD ramp (dB), at most the
    RANGE ramp (dB), smoothed in dB with one-pole coefficients ``attack``
    (rising) and ``release`` (falling); ``g = 10 ** (-reduction / 20)``.
    ``state``: ``[mean square, reduction]``; stereo channels share ``g``.
    """
    n = x.shape[1]
    n_ch = x.shape[0]
    ms = state[MEAN_SQUARE]
    reduction = state[REDUCTION]
    for i in range(n):
        threshold = ramp_next(ramps[THRESHOLD])
        most = ramp_next(ramps[RANGE])
        power = 0.0
        for c in range(n_ch):
            b = float(band[c, i])
            power = max(power, b * b)
        ms = detector * ms + (1.0 - detector) * power
        if ms < TINY:
            ms = 0.0
        target = 0.0
        if ms > 0.0:
            over = 10.0 * math.log10(2.0 * ms) - threshold
            if over > 0.0:
                target = min(over, most)
        if target > reduction:
            reduction = attack * reduction + (1.0 - attack) * target
        else:
            reduction = release * reduction + (1.0 - release) * target
            if reduction < TINY:
                reduction = 0.0
        if reduction == 0.0:
            for c in range(n_ch):
                y[c, i] = x[c, i]
        else:
            g1 = math.exp(-reduction * DB_TO_NEPER) - 1.0
            for c in range(n_ch):
                y[c, i] = np.float32(x[c, i] + g1 * band[c, i])
    state[MEAN_SQUARE] = ms
    state[REDUCTION] = reduction

"""Kernels for summing inputs and keeping the sum below a ceiling."""

import math

import numpy as np

from . import kernel
from .common import ramp_next


@kernel("void(float32[:, ::1], float32[:, ::1], float64[::1])")
def accumulate(acc, x, ramp):
    """``acc += x * g`` with ``g`` following ``ramp``; a mono ``x`` feeds every channel."""
    n = acc.shape[1]
    n_ch = acc.shape[0]
    mono = x.shape[0] == 1
    for i in range(n):
        g = ramp_next(ramp)
        for c in range(n_ch):
            acc[c, i] += np.float32(x[0 if mono else c, i] * g)


@kernel("void(float32[:, ::1], float64, float64)")
def soft_clip(y, threshold, ceiling):
    """Soft clipper in place: identity below ``threshold``, a tanh knee above it
    that approaches ``ceiling`` (slope 1 at the joint); never above ``ceiling``."""
    span = ceiling - threshold
    for c in range(y.shape[0]):
        for i in range(y.shape[1]):
            v = y[c, i]
            a = abs(v)
            if a > threshold:
                s = threshold + span * math.tanh((a - threshold) / span)
                y[c, i] = np.float32(s if v > 0 else -s)

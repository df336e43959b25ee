"""Kernels shared by many processors: input checks and parameter ramps.

A *ramp* is a float64 array ``[value, target, step, remaining]`` that moves
``value`` linearly to ``target`` in ``remaining`` samples.  It advances one
sample at a time, so a parameter change sounds the same however the audio is
cut into blocks.
"""

import numba
import numpy as np

from . import JIT_OPTIONS, kernel

_EXPONENT_BITS = np.uint32(0x7F800000)     # of a float32


@kernel("int64(float32[:, ::1])")
def first_non_finite(x):
    """Flat index of the first NaN or Inf in ``x``, or -1 if all are finite."""
    flat = x.ravel()
    # Fast pass on the bits: NaN and Inf are the floats whose exponent bits
    # are all set; the largest exponent field is a reduction that vectorises,
    # where an early-exit search does not (6x faster on a 10 ms frame).
    bits = flat.view(np.uint32)
    top = np.uint32(0)
    for i in range(bits.size):
        e = bits[i] & _EXPONENT_BITS
        if e > top:
            top = e
    if top != _EXPONENT_BITS:
        return -1
    for i in range(flat.size):
        v = flat[i]
        if not np.isfinite(v):
            return i
    return -1


@numba.njit(inline="always", **JIT_OPTIONS)
def ramp_next(ramp):
    """Advance ``ramp`` by one sample and return its new value."""
    if ramp[3] > 0.0:
        ramp[3] -= 1.0
        if ramp[3] <= 0.0:
            ramp[0] = ramp[1]
            ramp[3] = 0.0
        else:
            ramp[0] += ramp[2]
    return ramp[0]


@kernel("void(float32[:, ::1], float32[:, ::1], int64[::1], float64[:, ::1])")
def apply_gains(x, y, source, ramps):
    """``y[c] = x[source[c]] * g_c`` where ``g_c`` follows ``ramps[c]``.

    Covers gain (``source = 0, 1, ...``), mono-to-stereo panning
    (``source = [0, 0]``) and balance.  ``ramps`` is ``(out_channels, 4)``.
    """
    n_out = y.shape[0]
    n = x.shape[1]
    for c in range(n_out):
        r = ramps[c]
        src = x[source[c]]
        dst = y[c]
        i = 0
        while i < n and r[3] > 0.0:
            dst[i] = src[i] * ramp_next(r)
            i += 1
        g = np.float32(r[0])
        for j in range(i, n):
            dst[j] = src[j] * g


@kernel("void(float32[:, ::1], float32[:, ::1], float32[:, ::1], int64[::1])")
def delay_line(x, y, buffer, position):
    """Delay ``x`` by ``buffer.shape[1]`` samples into ``y``.

    ``buffer`` is a ``(channels, delay)`` ring and ``position[0]`` its read/write
    index; the delay must be at least 1.
    """
    d = buffer.shape[1]
    for c in range(x.shape[0]):
        p = position[0]
        ring = buffer[c]
        for i in range(x.shape[1]):
            y[c, i] = ring[p]
            ring[p] = x[c, i]
            p += 1
            if p == d:
                p = 0
    position[0] = (position[0] + x.shape[1]) % d

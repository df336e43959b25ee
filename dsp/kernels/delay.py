"""Delay lines read at fractional positions, and the echo kernel.

A *ring* is a float32 array whose length is a power of two; ``pos`` counts
the samples written since the start of the stream, and sample ``pos`` is
stored at ``pos & (len - 1)``.  Counting from the start of the stream (not
from block boundaries) keeps every read the same however the audio is cut
into blocks.

Reads between samples use third-order Lagrange interpolation on the four
samples around the wanted position.  A delay is read *before* the current
sample is written, so it must be at least MIN_DELAY samples (the four
samples are then all in the past); kernels clamp it there.

A *glide* moves a delay time smoothly: a float64 array ``[value, start,
target, elapsed, length]`` whose value follows the raised cosine
``start + (target - start) (1 - cos(pi elapsed / length)) / 2``, so the
playback speed (one minus the delay's slope) changes without a corner at
either end.  It advances one sample at a time; ``length = 0`` means at rest.
"""

import math

import numba
import numpy as np

from . import JIT_OPTIONS, kernel
from .common import ramp_next

#: Shortest delay (samples) a ring is read at before the current sample is written.
MIN_DELAY = 2.0

#: Filter memories below this magnitude are set to exactly zero.
TINY = 1e-20

# Rows of the echo kernel's ``ramps``.
FEEDBACK, POLE, DRY, WET = range(4)
N_ECHO_RAMPS = 4

# Fields of a glide.
G_VALUE, G_START, G_TARGET, G_ELAPSED, G_LENGTH = range(5)


@numba.njit(inline="always", **JIT_OPTIONS)
def glide_next(glide):
    """Advance ``glide`` by one sample and return its new value."""
    if glide[G_LENGTH] > 0.0:
        glide[G_ELAPSED] += 1.0
        if glide[G_ELAPSED] >= glide[G_LENGTH]:
            glide[G_VALUE] = glide[G_TARGET]
            glide[G_LENGTH] = 0.0
        else:
            w = 0.5 - 0.5 * math.cos(math.pi * glide[G_ELAPSED] / glide[G_LENGTH])
            glide[G_VALUE] = glide[G_START] + (glide[G_TARGET] - glide[G_START]) * w
    return glide[G_VALUE]


@numba.njit(inline="always", **JIT_OPTIONS)
def read_fractional(ring, mask, pos, delay):
    """The signal of ``ring`` ``delay`` samples before sample ``pos``.

    ``delay >= MIN_DELAY`` (fractional); samples up to ``pos - 1`` must be
    written.  Third-order Lagrange interpolation on the samples ``whole - 1``
    to ``whole + 2`` back (``whole = floor(delay)``), evaluated at the
    position ``delay - whole + 1`` among them; exact at whole delays.
    """
    whole = int(delay)
    d = delay - whole + 1.0
    at = pos - whole
    s0 = ring[(at + 1) & mask]
    s1 = ring[at & mask]
    s2 = ring[(at - 1) & mask]
    s3 = ring[(at - 2) & mask]
    d1 = d - 1.0
    d2 = d - 2.0
    d3 = d - 3.0
    return (-(d1 * d2 * d3) * s0 + 3.0 * d * d2 * d3 * s1 - 3.0 * d * d1 * d3 * s2
            + d * d1 * d2 * s3) * (1.0 / 6.0)


@kernel("void(float32[:, ::1], float32[:, ::1], float32[:, ::1], int64[::1], float64[::1],"
        " float64[:, ::1], float64[::1])")
def echo(x, y, ring, position, delay, ramps, memory):
    """Feedback echo with a low-pass in the loop, ``x`` into ``y`` (same shape).

    Per channel and sample ``n``, with ``D`` the delay in samples::

        e[n] = (1 - a) w[n - D] + a e[n - 1]     (one-pole low-pass, pole a)
        w[n] = x[n] + feedback e[n]              (written to the ring)
        y[n] = dry x[n] + wet e[n]

    so the echoes come at ``D, 2D, ...`` with gains ``1, feedback, ...``,
    the k-th one low-passed k times.  ``delay``: a glide of ``D`` (samples,
    clamped at MIN_DELAY); ``ramps`` rows FEEDBACK, POLE, DRY, WET follow
    ``kernels.common`` ramps, one step a sample.  ``ring``: ``(channels, R)``, ``R`` a power of
    two at least 3 more than the longest delay; ``position[0]``: samples
    written so far; ``memory``: each channel's ``e[n - 1]``.
    """
    n = x.shape[1]
    mask = ring.shape[1] - 1
    pos = position[0]
    for i in range(n):
        d = max(glide_next(delay), MIN_DELAY)
        fb = ramp_next(ramps[FEEDBACK])
        a = ramp_next(ramps[POLE])
        dry = ramp_next(ramps[DRY])
        wet = ramp_next(ramps[WET])
        w = pos & mask
        for c in range(x.shape[0]):
            v = read_fractional(ring[c], mask, pos, d)
            e = (1.0 - a) * v + a * memory[c]
            if abs(e) < TINY:
                e = 0.0
            memory[c] = e
            s = float(x[c, i])
            ring[c, w] = np.float32(s + fb * e)
            y[c, i] = np.float32(dry * s + wet * e)
        pos += 1
    position[0] = pos

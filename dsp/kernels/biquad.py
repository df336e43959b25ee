"""Cascaded second-order IIR sections (biquads) in direct form I.

Direct form I keeps the input and output history of every section, so
coefficients may change from one sample to the next without the internal
state blowing up; and since the output of section k is the input of section
k+1 the cascade needs only ``sections + 1`` histories per channel.

Coefficients are ``(sections, 5)`` float64 rows ``[b0, b1, b2, a1, a2]``
normalised by ``a0``.  While ``ramp[0] > 0`` every coefficient moves by
``step`` each sample and snaps to ``target`` when the ramp ends.  The stable
region of ``(a1, a2)`` is a triangle, hence convex: a straight line between two
stable filters passes only through stable ones.

A section whose last two outputs are both below ``TINY`` is cleared to exactly
zero, so the decay of a filter into silence never runs into denormal numbers.
"""

import numba
import numpy as np

from . import JIT_OPTIONS, kernel
from .common import first_non_finite

TINY = 1e-20

#: Sections are normalised to b0 = 1 when every |b0| is at least this.
MIN_B0 = 1e-9


#: Samples between checks for a cascade that has died away (see ``_flush``).
FLUSH_EVERY = 4096


@numba.njit(inline="always", **JIT_OPTIONS)
def _sample(coef, state, c, v):
    """Run one sample ``v`` of channel ``c`` through every section."""
    x1 = state[c, 0, 0]
    x2 = state[c, 0, 1]
    state[c, 0, 1] = x1
    state[c, 0, 0] = v
    for s in range(coef.shape[0]):
        y1 = state[c, s + 1, 0]
        y2 = state[c, s + 1, 1]
        # The input term last: it alone waits for the previous section, so
        # the history terms are computed while that section is still busy.
        out = (coef[s, 1] * x1 + coef[s, 2] * x2 - coef[s, 3] * y1 - coef[s, 4] * y2
               + coef[s, 0] * v)
        state[c, s + 1, 1] = y1
        state[c, s + 1, 0] = out
        x1 = y1
        x2 = y2
        v = out
    return v


@numba.njit(inline="always", **JIT_OPTIONS)
def _flush(state):
    """Zero the history of every node whose last two values are below TINY.

    A decaying filter would otherwise reach subnormal numbers, which are very
    slow.  Only whole histories are cleared: flushing single samples would
    perturb a slow resonance at its zero crossings and keep it ringing.
    """
    for c in range(state.shape[0]):
        for k in range(state.shape[1]):
            if -TINY < state[c, k, 0] < TINY and -TINY < state[c, k, 1] < TINY:
                state[c, k, 0] = 0.0
                state[c, k, 1] = 0.0


@numba.njit(inline="always", **JIT_OPTIONS)
def _section(coef, s, w, n, state, c, x1, x2, unit):
    """Section ``s`` over the block ``w`` in place; ``x1, x2`` its input history.
    ``unit``: a compile-time flag, true when ``b0`` is 1 (not multiplied)."""
    b0, b1, b2, a1, a2 = coef[s, 0], coef[s, 1], coef[s, 2], coef[s, 3], coef[s, 4]
    y1 = state[c, s + 1, 0]
    y2 = state[c, s + 1, 1]
    for j in range(n):
        v = w[j] if unit else b0 * w[j]
        # The feedback term last: only it waits for the previous output.
        out = v + b1 * x1 + b2 * x2 - a2 * y2 - a1 * y1
        x2 = x1
        x1 = v
        y2 = y1
        y1 = out
        w[j] = out
    state[c, s, 0] = x1
    state[c, s, 1] = x2
    state[c, s + 1, 0] = y1
    state[c, s + 1, 1] = y2


@numba.njit(inline="always", **JIT_OPTIONS)
def _section_pair(coef, s, w, n, state, c, x1, x2, unit):
    """Sections ``s`` and ``s + 1`` over ``w`` in place, the second one sample
    behind the first, so that their two feedback loops run side by side.
    ``unit`` as in ``_section``."""
    p0, p1, p2, q1, q2 = coef[s, 0], coef[s, 1], coef[s, 2], coef[s, 3], coef[s, 4]
    r0, r1, r2, t1, t2 = coef[s + 1, 0], coef[s + 1, 1], coef[s + 1, 2], coef[s + 1, 3], \
        coef[s + 1, 4]
    m1 = state[c, s + 1, 0]  # outputs of the first = inputs of the second
    m2 = state[c, s + 1, 1]
    y1 = state[c, s + 2, 0]  # outputs of the second
    y2 = state[c, s + 2, 1]
    v = w[0]
    mid = (v if unit else p0 * v) + p1 * x1 + p2 * x2 - q2 * m2 - q1 * m1
    x2 = x1
    x1 = v
    m3 = m2
    m2 = m1
    m1 = mid
    for j in range(1, n):
        v = w[j]
        mid = (v if unit else p0 * v) + p1 * x1 + p2 * x2 - q2 * m2 - q1 * m1
        out = (m1 if unit else r0 * m1) + r1 * m2 + r2 * m3 - t2 * y2 - t1 * y1
        w[j - 1] = out
        x2 = x1
        x1 = v
        m3 = m2
        m2 = m1
        m1 = mid
        y2 = y1
        y1 = out
    out = (m1 if unit else r0 * m1) + r1 * m2 + r2 * m3 - t2 * y2 - t1 * y1
    w[n - 1] = out
    state[c, s, 0] = x1
    state[c, s, 1] = x2
    state[c, s + 1, 0] = m1
    state[c, s + 1, 1] = m2
    state[c, s + 2, 0] = out
    state[c, s + 2, 1] = y1


@numba.njit(inline="always", **JIT_OPTIONS)
def _sections(coef, work, m, state, c, unit):
    """Every section over ``work`` (``m`` samples of channel ``c``) in place."""
    sections = coef.shape[0]
    # Each section's input history is the previous section's output
    # history as it was before this block.
    h1 = state[c, 0, 0]
    h2 = state[c, 0, 1]
    s = 0
    while s + 1 < sections:
        n1 = state[c, s + 2, 0]
        n2 = state[c, s + 2, 1]
        _section_pair(coef, s, work, m, state, c, h1, h2, unit)
        h1 = n1
        h2 = n2
        s += 2
    if s < sections:
        _section(coef, s, work, m, state, c, h1, h2, unit)
    elif sections == 0:
        if m > 1:
            state[c, 0, 1] = work[m - 2]
            state[c, 0, 0] = work[m - 1]
        else:
            state[c, 0, 1] = state[c, 0, 0]
            state[c, 0, 0] = work[0]


@kernel("int64(float32[:, ::1], float32[:, ::1], float64[:, :, ::1], int64[::1],"
        " float64[:, :, ::1])")
def biquad_cascade(x, y, params, ramp, state):
    """Filter ``x`` into ``y`` through the cascade; state carries over calls.

    x, y: ``(channels, samples)`` float32.  params: ``(3, sections, 5)``, the
    coefficients in use, their target and their step per sample (one array,
    as every argument costs time in each call from Python).  ramp:
    ``[remaining samples]``.  state: ``(channels, sections + 1, 2)``, the last
    two values of the input and of each section's output.

    Returns -1, or the flat index of the first NaN/Inf in ``x``, in which case
    nothing was filtered and no state changed.
    """
    coef = params[0]
    target = params[1]
    step = params[2]
    n_ch = x.shape[0]
    n = x.shape[1]
    bad = first_non_finite(x)
    if bad >= 0:
        return bad
    sections = coef.shape[0]
    i = 0
    # Ramp phase: coefficients move every sample, all channels in step.
    while i < n and ramp[0] > 0:
        ramp[0] -= 1
        if ramp[0] == 0:
            coef[:, :] = target
        else:
            for s in range(sections):
                for k in range(5):
                    coef[s, k] += step[s, k]
        for c in range(n_ch):
            y[c, i] = _sample(coef, state, c, float(x[c, i]))
        i += 1
    if i == n:
        _flush(state)
        return -1
    # Fixed coefficients: section by section over a float64 copy of the
    # block, two sections at a time, in chunks with a flush after each.
    # Each section is divided by its b0 (when none is near zero), which saves
    # one multiply per section and sample; node k of the cascade then runs
    # scaled by 1 / (b0 of the sections before it), and the history is
    # rescaled on the way in and out.
    unit = True
    for s in range(sections):
        if not abs(coef[s, 0]) >= MIN_B0:
            unit = False
    norm = np.empty((sections, 5))
    scale = np.ones(sections + 1)
    if unit:
        for s in range(sections):
            b0 = coef[s, 0]
            norm[s, 0] = 1.0
            norm[s, 1] = coef[s, 1] / b0
            norm[s, 2] = coef[s, 2] / b0
            norm[s, 3] = coef[s, 3]
            norm[s, 4] = coef[s, 4]
            scale[s + 1] = scale[s] * b0
    work = np.empty(min(n - i, FLUSH_EVERY))
    while i < n:
        m = min(n - i, FLUSH_EVERY)
        for c in range(n_ch):
            for j in range(m):
                work[j] = x[c, i + j]
            if unit:
                for k in range(1, sections + 1):
                    state[c, k, 0] /= scale[k]
                    state[c, k, 1] /= scale[k]
                _sections(norm, work, m, state, c, True)
                for k in range(1, sections + 1):
                    state[c, k, 0] *= scale[k]
                    state[c, k, 1] *= scale[k]
            else:
                _sections(coef, work, m, state, c, False)
            g = scale[sections]
            for j in range(m):
                y[c, i + j] = work[j] * g
        _flush(state)
        i += m
    return -1


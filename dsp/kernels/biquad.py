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

from . import JIT_OPTIONS, kernel

TINY = 1e-20


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
        out = (coef[s, 0] * v + coef[s, 1] * x1 + coef[s, 2] * x2
               - coef[s, 3] * y1 - coef[s, 4] * y2)
        if -TINY < out < TINY and -TINY < y1 < TINY:
            # The section has died away: clear its history.  (Flushing single
            # samples would perturb a slow resonance at its zero crossings and
            # keep it ringing near TINY.)
            out = 0.0
            y1 = 0.0
        state[c, s + 1, 1] = y1
        state[c, s + 1, 0] = out
        x1 = y1
        x2 = y2
        v = out
    return v


@kernel("void(float32[:, ::1], float32[:, ::1], float64[:, ::1], float64[:, ::1],"
        " float64[:, ::1], int64[::1], float64[:, :, ::1])")
def biquad_cascade(x, y, coef, target, step, ramp, state):
    """Filter ``x`` into ``y`` through the cascade; state carries over calls.

    x, y: ``(channels, samples)`` float32.  coef/target/step: ``(sections, 5)``.
    ramp: ``[remaining samples]``.  state: ``(channels, sections + 1, 2)``,
    the last two values of the input and of each section's output.
    """
    n_ch = x.shape[0]
    n = x.shape[1]
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
        return
    # Fixed coefficients: one channel at a time, history kept in registers.
    for c in range(n_ch):
        for j in range(i, n):
            y[c, j] = _sample(coef, state, c, float(x[c, j]))

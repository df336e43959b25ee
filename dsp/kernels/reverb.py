"""Feedback delay network (FDN) reverberator kernel.

The network has 16 delay lines in two groups of 8.  The first group (lines
0-7) reverberates the mid signal ``M``, the second (lines 8-15) the side
signal ``S``; each group mixes its lines with an orthonormal 8x8 Hadamard
matrix (a fast Walsh-Hadamard transform, 24 additions).  The left output is
``M' + S'`` and the right ``M' - S'``, so a stereo input whose two channels
are equal gives two equal outputs, while a mono input, fed to both groups,
gives two decorrelated ones.

Signal path per sample::

    input -> send gain -> M/S -> pre-delay -> 4 all-pass diffusers per path
          -> lines (gain and high-shelf damping per line, Hadamard feedback)
          -> M', S' -> width, wet and dry gains -> output

Every loop gain is a first-order filter ``y[n] = b0 v[n] + b1 v[n-1] +
p y[n-1]`` (a high shelf: see ``dsp.reverb.loop_coefficients``); the
processor sets ``b0`` and ``b1`` from the decay time (Jot's method) and
ramps them.

Delay-length changes (room size, pre-delay) cross-fade between the old and
the new read position; a change asked for during a fade waits for it to end.

All values written into the delay lines, the diffusers and the filter states
are flushed to exactly zero below ``TINY``, so a network decaying into
silence never reaches subnormal numbers.

State layout (all updated in place):

* ``lines``  float32 ``(16, L)``, ``L`` a power of two (every ring is at least
  MAX_CHUNK longer than its longest delay);
* ``pre``    float32 ``(2, P)`` pre-delay rings of M and S;
* ``diff``   float32 ``(2, 4, D)`` all-pass rings of the two paths;
* ``filt``   float64 ``(16, 2)``: last input and last output of each loop filter;
* ``coef``   float64 ``(6, 16)``: rows ``b0, b1`` (current), their targets
  and their per-sample steps;
* ``delays`` int64 ``(3, 16)``: current, next (during a fade), pending;
* ``pre_delay`` int64 ``[current, next, pending]``;
* ``counters`` int64 ``[position, coef ramp left, line fade left,
  pre-delay fade left, fade length, line change wanted, pre change wanted]``;
* ``ramps``  float64 ``(5, 4)`` ramps of send, dry, wet, mid and side gains.
"""

import math

import numba
import numpy as np

from . import JIT_OPTIONS, kernel
from .common import first_non_finite, ramp_next

#: State values below this magnitude are set to exactly zero.
TINY = 1e-20
_TINY32 = np.float32(TINY)
_ZERO32 = np.float32(0.0)

#: Longest chunk of samples worked through at once.
MAX_CHUNK = 128

#: Number of delay lines, and lines per group.
LINES = 16
GROUP = 8

#: Input and output signs of the lines within a group (orthogonal patterns,
#: neither of them a row of the Hadamard matrix).
IN_SIGNS = np.array([1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0, -1.0])
OUT_SIGNS = np.array([1.0, 1.0, -1.0, 1.0, -1.0, -1.0, -1.0, 1.0])

#: Layouts: mono in and out; mono in, stereo out; stereo in and out.
MONO, MONO_TO_STEREO, STEREO = 0, 1, 2

# counters
POS, COEF_LEFT, LINE_FADE, PRE_FADE, FADE_LEN, LINE_WANT, PRE_WANT = range(7)

_INV_SQRT8 = 1.0 / math.sqrt(8.0)  # Hadamard and tap scaling
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


@numba.njit(inline="always", **JIT_OPTIONS)
def flush(v):
    """``v`` (float64), or exactly 0.0 when ``|v| < TINY``."""
    return v if abs(v) >= TINY else 0.0


@numba.njit(inline="always", **JIT_OPTIONS)
def flush32(v):
    """``v`` (float32), or exactly 0 when ``|v| < TINY``."""
    return v if abs(v) >= _TINY32 else _ZERO32


@numba.njit(inline="always", **JIT_OPTIONS)
def _start_fades(delays, pre_delay, counters):
    """Begin the cross-fades that are wanted and not already running."""
    if counters[LINE_WANT] != 0 and counters[LINE_FADE] == 0:
        counters[LINE_WANT] = 0
        for j in range(LINES):
            delays[1, j] = delays[2, j]
        counters[LINE_FADE] = counters[FADE_LEN]
    if counters[PRE_WANT] != 0 and counters[PRE_FADE] == 0:
        counters[PRE_WANT] = 0
        pre_delay[1] = pre_delay[2]
        counters[PRE_FADE] = counters[FADE_LEN]


@numba.njit(inline="always", **JIT_OPTIONS)
def _ramp_fill(ramp, out, m):
    """``out[:m]`` = the next ``m`` values of ``ramp``."""
    if ramp[3] > 0.0:
        for t in range(m):
            out[t] = ramp_next(ramp)
    else:
        g = ramp[0]
        for t in range(m):
            out[t] = g


@numba.njit(inline="always", **JIT_OPTIONS)
def _to_wrap(size, index):
    """Samples from ring index ``index`` (any integer) to the end of a ring of
    power-of-two ``size``."""
    return size - (index & (size - 1))


@numba.njit(inline="always", **JIT_OPTIONS)
def _chunk(limit, pos, lines, pre, diff, delays, diff_delays, pre_delay, counters):
    """Length of the next chunk, at most ``limit``.

    It is no longer than the shortest line or all-pass delay, so every read
    in it comes from samples written before it; it ends where a ramp or a
    cross-fade ends; and no ring read or written in it wraps around, so each
    ring access is one contiguous slice.
    """
    m = limit
    line_size = lines.shape[1]
    diff_size = diff.shape[2]
    pre_size = pre.shape[1]
    for c in range(2):
        for a in range(4):
            m = min(m, diff_delays[c, a], _to_wrap(diff_size, pos - diff_delays[c, a]))
    for j in range(LINES):
        m = min(m, delays[0, j], delays[1, j], _to_wrap(line_size, pos - delays[0, j]))
        if counters[LINE_FADE] > 0:
            m = min(m, _to_wrap(line_size, pos - delays[1, j]))
    m = min(m, _to_wrap(line_size, pos), _to_wrap(diff_size, pos), _to_wrap(pre_size, pos),
            _to_wrap(pre_size, pos - pre_delay[0]))
    if counters[PRE_FADE] > 0:
        m = min(m, _to_wrap(pre_size, pos - pre_delay[1]))
    for c in (LINE_FADE, PRE_FADE, COEF_LEFT):
        if counters[c] > 0:
            m = min(m, counters[c])
    return m


@numba.njit(inline="always", **JIT_OPTIONS)
def _fade(a, b, m, left, fade_len, out):
    """``out[:m]`` = ``a`` cross-faded to ``b``; ``left`` samples of the fade remain."""
    for t in range(m):
        w = 1.0 - (left - 1 - t) / fade_len
        out[t] = (1.0 - w) * a[t] + w * b[t]


@numba.njit(inline="always", **JIT_OPTIONS)
def _allpass2(ring0, ring1, delay0, delay1, g, pos, m, sig0, sig1):
    """Two Schroeder all-pass filters (gain ``g``) side by side, over
    ``sig0[:m]`` and ``sig1[:m]`` in place.

    Needs both delays ``>= m`` and no wrap-around in the chunk (``_chunk``).
    """
    mask = ring0.shape[0] - 1
    r0 = (pos - delay0) & mask
    r1 = (pos - delay1) & mask
    k = pos & mask
    for t in range(m):
        old0 = ring0[r0 + t]
        old1 = ring1[r1 + t]
        w0 = flush32(sig0[t] + g * old0)
        w1 = flush32(sig1[t] + g * old1)
        ring0[k + t] = w0
        ring1[k + t] = w1
        sig0[t] = old0 - g * w0
        sig1[t] = old1 - g * w1


@numba.njit(inline="always", **JIT_OPTIONS)
def _damp4(src, v, j, m, filt, coef, ramping, p):
    """Loop filters of lines ``j .. j+3``: ``src`` rows in, ``v`` rows out.

    Each line's filter is ``y[n] = b0 v[n] + b1 v[n-1] + p y[n-1]`` with
    ``b0, b1`` its rows 0 and 1 of ``coef``, stepped by rows 4 and 5 every
    sample while ``ramping``.  Four lines at a time, so that four recursions
    are in flight.
    """
    ia, ib, ic, id_ = src[0], src[1], src[2], src[3]
    ra, rb, rc, rd = v[j], v[j + 1], v[j + 2], v[j + 3]
    xa, xb, xc, xd = filt[j, 0], filt[j + 1, 0], filt[j + 2, 0], filt[j + 3, 0]
    ya, yb, yc, yd = filt[j, 1], filt[j + 1, 1], filt[j + 2, 1], filt[j + 3, 1]
    ga, gb, gc, gd = coef[0, j], coef[0, j + 1], coef[0, j + 2], coef[0, j + 3]
    ha, hb, hc, hd = coef[1, j], coef[1, j + 1], coef[1, j + 2], coef[1, j + 3]
    sa, sb, sc, sd = coef[4, j], coef[4, j + 1], coef[4, j + 2], coef[4, j + 3]
    ta, tb, tc, td = coef[5, j], coef[5, j + 1], coef[5, j + 2], coef[5, j + 3]
    for t in range(m):
        if ramping:
            ga += sa
            gb += sb
            gc += sc
            gd += sd
            ha += ta
            hb += tb
            hc += tc
            hd += td
        va, vb, vc, vd = float(ia[t]), float(ib[t]), float(ic[t]), float(id_[t])
        ya = p * ya + (ga * va + ha * xa)
        yb = p * yb + (gb * vb + hb * xb)
        yc = p * yc + (gc * vc + hc * xc)
        yd = p * yd + (gd * vd + hd * xd)
        ra[t] = ya
        rb[t] = yb
        rc[t] = yc
        rd[t] = yd
        xa, xb, xc, xd = va, vb, vc, vd
    if ramping:
        coef[0, j], coef[0, j + 1], coef[0, j + 2], coef[0, j + 3] = ga, gb, gc, gd
        coef[1, j], coef[1, j + 1], coef[1, j + 2], coef[1, j + 3] = ha, hb, hc, hd
    filt[j, 0], filt[j + 1, 0], filt[j + 2, 0], filt[j + 3, 0] = xa, xb, xc, xd
    filt[j, 1], filt[j + 1, 1] = flush(ya), flush(yb)
    filt[j + 2, 1], filt[j + 3, 1] = flush(yc), flush(yd)


@numba.njit(inline="always", **JIT_OPTIONS)
def _mix8(v, o, m, src, dst, out):
    """One group: tap its output, mix with the Hadamard matrix, add the input.

    ``v`` rows ``o .. o+7``: the damped line outputs.  ``out[:m]``: the
    group's output; ``dst``: the eight ring slices written with the feedback
    plus ``src`` (the diffused input) times the input signs.
    """
    q = _INV_SQRT8
    d0, d1, d2, d3, d4, d5, d6, d7 = dst
    r0, r1, r2, r3 = v[o], v[o + 1], v[o + 2], v[o + 3]
    r4, r5, r6, r7 = v[o + 4], v[o + 5], v[o + 6], v[o + 7]
    for t in range(m):
        a, b, c, d = r0[t], r1[t], r2[t], r3[t]
        e, f, g, h = r4[t], r5[t], r6[t], r7[t]
        # output taps: signs OUT_SIGNS
        out[t] = q * (a + b - c + d - e - f - g + h)
        # fast Walsh-Hadamard transform
        a, b, c, d, e, f, g, h = a + b, a - b, c + d, c - d, e + f, e - f, g + h, g - h
        a, b, c, d, e, f, g, h = a + c, b + d, a - c, b - d, e + g, f + h, e - g, f - h
        a, b, c, d, e, f, g, h = a + e, b + f, c + g, d + h, a - e, b - f, c - g, d - h
        u = q * src[t]
        # input: signs IN_SIGNS
        d0[t] = flush32(q * a + u)
        d1[t] = flush32(q * b - u)
        d2[t] = flush32(q * c + u)
        d3[t] = flush32(q * d + u)
        d4[t] = flush32(q * e - u)
        d5[t] = flush32(q * f + u)
        d6[t] = flush32(q * g - u)
        d7[t] = flush32(q * h - u)


@kernel("int64(float32[:, ::1], float32[:, ::1], int64, float32[:, ::1], float32[:, ::1],"
        " float32[:, :, ::1], int64[:, ::1], float64, float64[:, ::1], float64[:, ::1],"
        " float64, int64[:, ::1], int64[::1], int64[::1], float64[:, ::1])")
def fdn_reverb(x, y, layout, lines, pre, diff, diff_delays, diff_gain, filt, coef, p,
               delays, pre_delay, counters, ramps):
    """Reverberate ``x`` into ``y`` (see the module docstring for the state).

    x: ``(1, n)`` for the mono layouts, ``(2, n)`` for STEREO; y: ``(1, n)``
    for MONO, ``(2, n)`` otherwise.  ``diff_delays``: ``(2, 4)`` all-pass
    delays; ``diff_gain``: their gain.  ``p``: the pole of the loop filters.
    Every ring must be at least MAX_CHUNK longer than its longest delay.

    Returns -1, or the flat index of the first NaN or Inf in ``x``, in
    which case nothing is written and no state changes.

    The block is worked through in chunks (see ``_chunk``) within which every
    stage is one loop over the chunk.  Chunks end where a ramp or a
    cross-fade ends, so the result does not depend on how the input is cut
    into blocks.
    """
    bad = first_non_finite(x)
    if bad >= 0:
        return bad
    n = x.shape[1]
    f4 = np.float32
    cmax = max(1, min(n, MAX_CHUNK))
    gains = np.empty((5, cmax))
    path = np.empty((2, cmax), f4)
    v = np.empty((LINES, cmax), f4)
    outs = np.empty((2, cmax), f4)
    fgd = f4(diff_gain)
    fade_len = float(counters[FADE_LEN])
    line_mask = lines.shape[1] - 1
    pre_mask = pre.shape[1] - 1
    pos = counters[POS]
    i = 0
    while i < n:
        _start_fades(delays, pre_delay, counters)
        m = _chunk(min(n - i, cmax), pos, lines, pre, diff, delays, diff_delays, pre_delay,
                   counters)
        for r in range(5):
            _ramp_fill(ramps[r], gains[r], m)
        # --- input to mid and side, through the pre-delay
        if layout == STEREO:
            for t in range(m):
                left = float(x[0, i + t])
                right = float(x[1, i + t])
                path[0, t] = 0.5 * (left + right) * gains[0, t]
                path[1, t] = 0.5 * (left - right) * gains[0, t]
            paths = 2
        else:
            for t in range(m):
                path[0, t] = float(x[0, i + t]) * gains[0, t] * _INV_SQRT2
            paths = 1
        k = pos & pre_mask
        r0 = (pos - pre_delay[0]) & pre_mask
        r1 = (pos - pre_delay[1]) & pre_mask
        for c in range(paths):
            ring = pre[c]
            sig = path[c]
            for t in range(m):
                ring[k + t] = flush32(sig[t])
            if counters[PRE_FADE] > 0:
                _fade(ring[r0:], ring[r1:], m, counters[PRE_FADE], fade_len, sig)
            else:
                for t in range(m):
                    sig[t] = ring[r0 + t]
        if paths == 1:  # mono: the mid and side paths start from the same signal
            for t in range(m):
                path[1, t] = path[0, t]
        if counters[PRE_FADE] > 0:
            counters[PRE_FADE] -= m
            if counters[PRE_FADE] == 0:
                pre_delay[0] = pre_delay[1]
        # --- diffusion
        for a in range(4):
            _allpass2(diff[0, a], diff[1, a], diff_delays[0, a], diff_delays[1, a], fgd, pos, m,
                      path[0], path[1])
        # --- read the lines, loop gain and damping
        fading = counters[LINE_FADE] > 0
        if fading:
            for j in range(LINES):
                s0 = (pos - delays[0, j]) & line_mask
                s1 = (pos - delays[1, j]) & line_mask
                _fade(lines[j, s0:], lines[j, s1:], m, counters[LINE_FADE], fade_len, v[j])
            counters[LINE_FADE] -= m
            if counters[LINE_FADE] == 0:
                for j in range(LINES):
                    delays[0, j] = delays[1, j]
        ramping = counters[COEF_LEFT] > 0
        for j in range(0, LINES, 4):
            if fading:
                src = (v[j], v[j + 1], v[j + 2], v[j + 3])
            else:
                src = (lines[j, (pos - delays[0, j]) & line_mask:],
                       lines[j + 1, (pos - delays[0, j + 1]) & line_mask:],
                       lines[j + 2, (pos - delays[0, j + 2]) & line_mask:],
                       lines[j + 3, (pos - delays[0, j + 3]) & line_mask:])
            _damp4(src, v, j, m, filt, coef, ramping, p)
        if ramping:
            counters[COEF_LEFT] -= m
            if counters[COEF_LEFT] == 0:
                for j in range(LINES):
                    coef[0, j] = coef[2, j]
                    coef[1, j] = coef[3, j]
        # --- group outputs, feedback matrix, input, write back
        w = pos & line_mask
        for c in range(2):
            o = GROUP * c
            dst = (lines[o, w:], lines[o + 1, w:], lines[o + 2, w:], lines[o + 3, w:],
                   lines[o + 4, w:], lines[o + 5, w:], lines[o + 6, w:], lines[o + 7, w:])
            _mix8(v, o, m, path[c], dst, outs[c])
        # --- output
        if layout == MONO:
            for t in range(m):
                y[0, i + t] = f4(gains[1, t] * x[0, i + t] + gains[2, t] * gains[3, t] * outs[0, t])
        else:
            right_ch = 1 if layout == STEREO else 0
            for t in range(m):
                mid = gains[3, t] * outs[0, t]
                side = gains[4, t] * outs[1, t]
                y[0, i + t] = f4(gains[1, t] * x[0, i + t] + gains[2, t] * (mid + side))
                y[1, i + t] = f4(gains[1, t] * x[right_ch, i + t] + gains[2, t] * (mid - side))
        pos += m
        i += m
    counters[POS] = pos
    return -1

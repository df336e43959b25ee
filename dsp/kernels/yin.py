"""YIN fundamental-frequency estimation (de Cheveigné and Kawahara, "YIN, a
fundamental frequency estimator for speech and music", JASA 111(4), 2002).

For a segment ``s`` of ``W + tau_max + 1`` samples the difference function is
``d(tau) = sum_{j < W} (s[j] - s[j + tau])**2``, computed as
``e(0) + e(tau) - 2 r(tau)`` with ``e`` sliding energies (prefix sums of
squares) and ``r`` the cross-correlation of the first ``W`` samples with the
whole segment (one FFT product; the FFT is long enough that no lag wraps).
The cumulative mean normalised difference ``d'(tau) = d(tau) tau /
sum_{1..tau} d`` is searched from ``tau_min`` for the first value under the
threshold, then down to the bottom of that dip; without one, the deepest dip is taken
if it is under a second, looser threshold (else the frame is unvoiced).
The dip is refined by a parabola through its three points.
"""

import numba
import numpy as np
from rocket_fft import c2r, r2c

from . import JIT_OPTIONS, kernel

#: A segment whose mean square is below this is silence (unvoiced).
SILENCE = 1e-10



@numba.njit(inline="always", **JIT_OPTIONS)
def parabolic_offset(cmnd, best):
    """Offset in [-1, 1] of the minimum of the parabola through
    ``cmnd[best - 1 : best + 2]`` (0 when that parabola has no minimum)."""
    x0 = cmnd[best - 1]
    x1 = cmnd[best]
    x2 = cmnd[best + 1]
    den = x0 - 2.0 * x1 + x2
    if den > 0.0:
        return min(max(0.5 * (x0 - x2) / den, -1.0), 1.0)
    return 0.0

@numba.njit(**JIT_OPTIONS)
def yin_period(seg, width, tau_min, tau_max, threshold, fallback, a, b, spec_a, spec_b, corr, cmnd,
               axes, result):
    """Estimate the period of ``seg`` in samples.

    threshold: d' under which the first dip is taken; fallback: without such a
    dip, the deepest dip is taken if its d' is under this (else unvoiced).

    seg: (width + tau_max + 1,) float64, oldest sample first.  a, b: (F,)
    float64 scratch with F >= width + tau_max + 1; spec_a, spec_b: (F // 2 +
    1,) complex128; corr: (F,); cmnd: (tau_max + 2,).  result: (2,) output
    ``[period, aperiodicity]``; period is 0 when unvoiced (aperiodicity is
    then the lowest d' seen, or 1 for silence).
    """
    f = a.shape[0]
    span = width + tau_max + 1
    e0 = 0.0
    for j in range(width):
        v = seg[j]
        a[j] = v
        e0 += v * v
    for j in range(width, f):
        a[j] = 0.0
    for j in range(span):
        b[j] = seg[j]
    for j in range(span, f):
        b[j] = 0.0
    result[0] = 0.0
    result[1] = 1.0
    if e0 < SILENCE * width:
        return
    r2c(a, spec_a, axes, True, 1.0, 1)
    r2c(b, spec_b, axes, True, 1.0, 1)
    for k in range(spec_a.shape[0]):
        spec_a[k] = spec_a[k].conjugate() * spec_b[k]
    c2r(spec_a, corr, axes, False, 1.0 / f, 1)
    # e(tau) slides: e(tau + 1) = e(tau) - s[tau]^2 + s[tau + W]^2.
    e = e0
    total = 0.0
    cmnd[0] = 1.0
    for tau in range(1, tau_max + 2):
        e += seg[tau + width - 1] * seg[tau + width - 1] - seg[tau - 1] * seg[tau - 1]
        d = max(e0 + e - 2.0 * corr[tau], 0.0)
        total += d
        cmnd[tau] = d * tau / total if total > 0.0 else 1.0
    best = -1
    lowest = 1e300
    at = -1
    tau = max(tau_min, 2)
    while tau <= tau_max:
        v = cmnd[tau]
        if v < lowest:
            lowest = v
            at = tau
        if v < threshold and best < 0:
            while tau + 1 <= tau_max and cmnd[tau + 1] < cmnd[tau]:
                tau += 1
            best = tau
            break
        tau += 1
    if best < 0:
        # No dip under the threshold: the deepest one, if under ``fallback``.
        if at < 0 or lowest >= fallback:
            result[1] = lowest
            return
        best = at
    if best >= tau_max:
        result[1] = cmnd[best]
        return
    result[0] = best + parabolic_offset(cmnd, best)
    result[1] = cmnd[best]


@numba.njit(**JIT_OPTIONS)
def ring_segment(ring, end, seg):
    """Copy the ``seg.size`` samples of circular ``ring`` before time ``end``."""
    r = ring.shape[0]
    pos = (end - seg.shape[0]) % r
    for j in range(seg.shape[0]):
        seg[j] = ring[pos]
        pos += 1
        if pos == r:
            pos = 0


@numba.njit("int64(int64, int64)", **JIT_OPTIONS)
def fft_size(width, tau_max):
    """FFT length for a window of ``width`` and lags up to ``tau_max``: the
    next power of two of ``width + tau_max + 1`` (no lag wraps around)."""
    n = width + tau_max + 1
    size = 1
    while size < n:
        size *= 2
    return size


@numba.njit(**JIT_OPTIONS)
def yin_scratch(width, tau_max):
    """The work arrays ``yin_period`` needs, allocated once per block:
    ``(segment, a, b, corr, spec_a, spec_b, cmnd, axes, result)``."""
    f = fft_size(width, tau_max)
    return (np.empty(width + tau_max + 1), np.empty(f), np.empty(f), np.empty(f),
            np.empty(f // 2 + 1, dtype=np.complex128), np.empty(f // 2 + 1, dtype=np.complex128),
            np.empty(tau_max + 2), np.zeros(1, dtype=np.int64), np.empty(2))


@kernel("int64(float32[:, ::1], int64, int64, int64, int64, float64, float64, float64[::1],"
        " int64[::1], float64[:, ::1])")
def yin_track(x, hop, width, tau_min, tau_max, threshold, fallback, ring, counter, estimates):
    """Run YIN every ``hop`` samples on the mean of the channels of ``x``.

    ring: (R,) float64 circular history of the channel mean, R >= width +
    tau_max + 1, indexed by absolute time % R.  counter: [samples seen].
    estimates: (>= x.shape[1] // hop + 1, 3) output rows ``[end time, period,
    aperiodicity]``, one per frame completed in this block (end time: the
    absolute time just after the frame's last sample; period 0: unvoiced).
    Returns the number of rows written.
    """
    n = x.shape[1]
    n_ch = x.shape[0]
    r = ring.shape[0]
    seg, a, b, corr, spec_a, spec_b, cmnd, axes, result = yin_scratch(width, tau_max)
    scale = 1.0 / n_ch
    t = counter[0]
    count = 0
    i = 0
    while i < n:
        m = min(n - i, hop - t % hop)
        pos = t % r
        for j in range(m):
            v = 0.0
            for c in range(n_ch):
                v += x[c, i + j]
            ring[pos] = v * scale
            pos += 1
            if pos == r:
                pos = 0
        t += m
        i += m
        if t % hop == 0:
            ring_segment(ring, t, seg)
            yin_period(seg, width, tau_min, tau_max, threshold, fallback, a, b, spec_a, spec_b,
                       corr, cmnd, axes, result)
            estimates[count, 0] = t
            estimates[count, 1] = result[0]
            estimates[count, 2] = result[1]
            count += 1
    counter[0] = t
    return count

"""Dynamics kernels: compressor, look-ahead limiter, noise gate.

All three detect on the loudest channel, so a stereo image does not wander.
State that decays towards zero is flushed to exactly zero below 1e-20, so
silence never runs into denormal numbers.
"""

import math

import numpy as np

import numba

from . import JIT_OPTIONS, kernel
from .common import first_non_finite, ramp_next

TINY = 1e-20

#: ``10 ** (-db / 20) == exp(-db * DB_TO_NEPER)``.
DB_TO_NEPER = math.log(10.0) / 20.0

#: A limiter gain above this has recovered: it is set to exactly 1.
RELEASED = 1.0 - 1e-12

#: dB per doubling of amplitude, 20 log10(2).
DB_PER_OCTAVE = 20.0 * math.log10(2.0)
SQRT2 = math.sqrt(2.0)
LOG2_E = 1.0 / math.log(2.0)
#: float32 fields: all but the sign, the mantissa, and the exponent of 1.0.
ABS_BITS = np.uint32(0x7FFFFFFF)
MANTISSA_BITS = np.uint32(0x007FFFFF)
ONE_BITS = np.uint32(0x3F800000)

#: Beyond this argument ``exp_neg`` returns exp(-EXP_NEG_MAX) (4e-18).
EXP_NEG_MAX = 40.0


@numba.njit(inline="always", **JIT_OPTIONS)
def exp_neg(x):
    """``exp(-x)`` for ``0 <= x <= 12`` within 2e-8 relative; ``x`` is capped at 40.

    ``exp(-x) = exp(-x / 32) ** 32``: a degree-8 Taylor polynomial on
    ``[-0.375, 0]`` then five squarings.  Unlike a libm call it has no branch
    and no table, so a loop of them vectorizes.
    """
    r = -min(x, EXP_NEG_MAX) * (1.0 / 32.0)
    p = 1.0 + r * (1.0 + r * (1.0 / 2.0 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (
        1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0 + r * (1.0 / 40320.0))))))))
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    return p * p


@numba.njit(inline="always", **JIT_OPTIONS)
def frame_peak(x, i):
    """Largest magnitude over the channels of sample ``i`` (mono fast path)."""
    if x.shape[0] == 1:
        return abs(x[0, i])
    peak = 0.0
    for c in range(x.shape[0]):
        a = abs(x[c, i])
        if a > peak:
            peak = a
    return peak


@numba.njit(inline="always", **JIT_OPTIONS)
def scale_frame(x, y, i, gain):
    """``y[:, i] = x[:, i] * gain`` (mono fast path)."""
    if x.shape[0] == 1:
        y[0, i] = x[0, i] * gain
    else:
        for c in range(x.shape[0]):
            y[c, i] = x[c, i] * gain


@numba.njit(inline="always", **JIT_OPTIONS)
def log2_mantissa(m):
    """``log2(m)`` for ``1 <= m < 2`` within 1e-10, without a branch or a libm
    call (so a loop of them vectorizes): the mantissa is moved to
    [sqrt(1/2), sqrt(2)) and ``ln m = 2 atanh((m - 1) / (m + 1))`` is summed
    to its t**11 term (|t| <= 0.172)."""
    e = 0.0
    if m > SQRT2:
        m *= 0.5
        e = 1.0
    t = (m - 1.0) / (m + 1.0)
    t2 = t * t
    series = 1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (
        1.0 / 9.0 + t2 * (1.0 / 11.0)))))
    return e + 2.0 * t * series * LOG2_E


@kernel("int64(float32[:, ::1], float32[:, ::1], float64, float64, float64, float64,"
        " float64, float64[::1], float64[::1])")
def compressor(x, y, threshold_db, ratio, knee_db, attack_coef, release_coef, state, makeup):
    """Feed-forward compressor with a soft knee, smoothing in the dB domain.

    Gain computer and branching peak detector after Giannoulis, Massberg and
    Reiss, "Digital dynamic range compressor design", JAES 60(6), 2012.
    ``state = [smoothed gain reduction in dB]``; ``makeup`` is a ramp of the
    linear make-up gain.  ``*_coef`` are one-pole coefficients exp(-1/(tau fs)).

    Returns -1, or the flat index of the first NaN/Inf in ``x``, in which case
    nothing was processed and no state changed.

    Passes over the block: the peak of the channels and its level in dB, read
    from the float32 exponent and mantissa bits (no libm log, so it
    vectorizes); the static curve; the smoothing (the only recursive part);
    then the gain.  Only the smoothing has branches.
    """
    bad = first_non_finite(x)
    if bad >= 0:
        return bad
    n_ch = x.shape[0]
    n = x.shape[1]
    slope = 1.0 / ratio - 1.0
    bits = x.view(np.uint32)
    mantissa = np.empty(n, np.uint32)
    exponent = np.empty(n)
    for i in range(n):
        # Magnitude bits order like the magnitudes: the loudest channel is the
        # largest integer.
        b = bits[0, i] & ABS_BITS
        for c in range(1, n_ch):
            b = max(b, bits[c, i] & ABS_BITS)
        mantissa[i] = (b & MANTISSA_BITS) | ONE_BITS
        exponent[i] = float(b >> 23) - 127.0
    mant = mantissa.view(np.float32)
    work = np.empty(n)
    for i in range(n):
        # over = 20 log10(peak) - threshold.  Below the knee (d <= 0) there is
        # no reduction; zero and denormal peaks, whose bits read as about
        # -765 dB, are far below it.
        over = DB_PER_OCTAVE * (exponent[i] + log2_mantissa(float(mant[i]))) - threshold_db
        d = over + knee_db / 2.0
        target = -slope * over if 2.0 * over > knee_db else -slope * d * d / (2.0 * knee_db)
        work[i] = target if d > 0.0 else 0.0
    reduction = state[0]
    for i in range(n):
        target = work[i]
        if target > reduction:
            reduction = attack_coef * reduction + (1.0 - attack_coef) * target
        else:
            reduction = release_coef * reduction + (1.0 - release_coef) * target
            if reduction < TINY:
                reduction = 0.0
        work[i] = reduction
    state[0] = reduction
    for i in range(n):
        work[i] = exp_neg(work[i] * DB_TO_NEPER)
    if makeup[3] > 0.0:
        for i in range(n):
            work[i] *= ramp_next(makeup)
    else:
        for i in range(n):
            work[i] *= makeup[0]
    for c in range(n_ch):
        for i in range(n):
            y[c, i] = x[c, i] * np.float32(work[i])
    return -1


@numba.njit(inline="always", **JIT_OPTIONS)
def _wrap(i, w):
    """``i % w`` for ``0 <= i < 2 w``, without a division."""
    return i - w if i >= w else i


@kernel("void(float32[:, ::1], float32[:, ::1], float64, float64, float64[:, ::1],"
        " float64[::1], float64[::1], float64[::1], int64[::1])")
def limiter(x, y, ceiling, release_coef, delay, needs, suffix, fstate, istate):
    """Look-ahead peak limiter: no output sample exceeds ``ceiling``.

    With a delay of D samples (``delay`` is ``(channels, D)``) the gain that
    each sample needs, ``min(1, ceiling / peak)``, is known D samples before
    that sample is output.  The gain applied is: the minimum of the needs over
    the last w = D+1 samples, which may rise only at the release rate, then
    averaged over w samples (a linear attack that has fully arrived when the
    peak is output).  Every value averaged is at most the peak's need, so the
    peak is held under the ceiling; a final clamp absorbs rounding.

    The running minimum is van Herk's and Gil and Werman's: time is cut into
    blocks of w samples; the window's minimum is that of the current block so
    far (a running prefix) and of the tail of the previous block (suffix
    minima, computed once per block).  ``needs``: this block's needs (w);
    ``suffix``: suffix minima of the previous block (w); ``fstate`` = ``[held
    gain, box sum, prefix minimum, box ring ...(w)]``; ``istate`` = ``[sample
    counter, delay write index]``.
    """
    n = x.shape[1]
    d = delay.shape[1]
    w = d + 1
    count = istate[0]
    write = istate[1]
    held = fstate[0]
    total = fstate[1]
    prefix = fstate[2]
    pos = count % w  # position in the block, and slot of the moving-average ring
    inv_w = 1.0 / w
    gains = np.empty(n)
    # Idle: nothing is being limited and nothing in this block needs it.  The
    # per-sample loop below would then only write ones over ones, so skip it.
    idle = held == 1.0 and total == w and prefix == 1.0 and suffix[0] == 1.0
    if idle:
        for i in range(n):
            if frame_peak(x, i) > ceiling:
                idle = False
                break
    if idle and n > 0:
        gains[:] = total * inv_w
        for i in range(n):
            needs[pos] = 1.0
            pos = _wrap(pos + 1, w)
        count += n
    if not idle:
        # The gain each sample needs, min(1, ceiling / peak), in a loop of its
        # own: without branches it vectorizes, divisions included (a peak of
        # 0 gives inf, hence 1).
        for i in range(n):
            gains[i] = min(1.0, ceiling / frame_peak(x, i))
    for i in range(0 if not idle else n, n):
        need = gains[i]
        prefix = need if pos == 0 else min(prefix, need)
        needs[pos] = need
        if pos == w - 1:
            lowest = prefix
            m = 1.0
            for k in range(w - 1, -1, -1):
                m = min(m, needs[k])
                suffix[k] = m
        else:
            lowest = min(prefix, suffix[pos + 1])
        if lowest < held:
            held = lowest
        else:
            held = lowest + release_coef * (held - lowest)
            if lowest == 1.0 and held > RELEASED:  # would stall one ulp short of 1
                held = 1.0
        # Moving average of the held gain over w samples.
        total += held - fstate[3 + pos]
        fstate[3 + pos] = held
        if pos == w - 1:  # re-sum once per lap so rounding cannot drift
            total = 0.0
            for k in range(w):
                total += fstate[3 + k]
        pos = _wrap(pos + 1, w)
        gains[i] = total * inv_w
        count += 1
    # The output is the input delayed by d samples: first what the ring
    # holds (oldest first, from ``write``), then this block's own samples.
    # Every loop below runs over contiguous ranges without a branch or a
    # modulo per sample, so that it vectorizes.
    from_ring = min(n, d)
    wrap_at = min(from_ring, d - write)      # ring slots write .. d-1, then 0 ..
    for c in range(x.shape[0]):
        for i in range(wrap_at):
            y[c, i] = np.float32(min(max(delay[c, write + i] * gains[i], -ceiling), ceiling))
        for i in range(wrap_at, from_ring):
            y[c, i] = np.float32(min(max(delay[c, write + i - d] * gains[i], -ceiling),
                                     ceiling))
        for i in range(d, n):
            y[c, i] = np.float32(min(max(x[c, i - d] * gains[i], -ceiling), ceiling))
        # Sample m of ring + block belongs in slot (write + m) % d; the last d
        # of them stay.  Ring samples that stay are in their slots already.
        start = max(n - d, 0)
        slot = (write + start) % d
        first = min(n - start, d - slot)     # up to the ring's end, then from 0
        for i in range(first):
            delay[c, slot + i] = x[c, start + i]
        for i in range(first, n - start):
            delay[c, slot + i - d] = x[c, start + i]
    istate[0] = count
    istate[1] = (write + n) % d
    fstate[0] = held
    fstate[1] = total
    fstate[2] = prefix


@kernel("void(float32[:, ::1], float32[:, ::1], float64, float64, float64, int64,"
        " float64, float64, float64, float64[::1], int64[::1])")
def noise_gate(x, y, open_level, close_level, floor, hold, detect_coef, attack_coef,
               release_coef, state, counter):
    """Noise gate with hysteresis and hold.

    The detector is a peak follower (instant rise, ``detect_coef`` fall).  The
    gate opens when it rises above ``open_level``, and closes after it has been
    below ``close_level`` for ``hold`` samples.  The gain moves between 1 and
    ``floor`` with one-pole ``attack_coef`` (opening) and ``release_coef``.
    ``state = [detector, gain, open flag]``; ``counter = [samples below]``.
    """
    n = x.shape[1]
    env = state[0]
    gain = state[1]
    is_open = state[2] > 0.5
    below = counter[0]
    for i in range(n):
        peak = frame_peak(x, i)
        env = peak if peak > env else env * detect_coef
        if env < TINY:
            env = 0.0
        if env >= open_level:
            is_open = True
            below = 0
        elif env < close_level and is_open:
            below += 1
            if below > hold:
                is_open = False
        if is_open:
            gain = attack_coef * gain + (1.0 - attack_coef)
        else:
            gain = release_coef * gain + (1.0 - release_coef) * floor
            if gain - floor < TINY:
                gain = floor
        scale_frame(x, y, i, np.float32(gain))
    state[0] = env
    state[1] = gain
    state[2] = 1.0 if is_open else 0.0
    counter[0] = below

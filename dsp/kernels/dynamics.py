"""Dynamics kernels: compressor, look-ahead limiter, noise gate.

All three detect on the loudest channel, so a stereo image does not wander.
State that decays towards zero is flushed to exactly zero below 1e-20, so
silence never runs into denormal numbers.
"""

import math

import numpy as np

import numba

from . import JIT_OPTIONS, kernel
from .common import ramp_next

TINY = 1e-20

#: ``10 ** (-db / 20) == exp(-db * DB_TO_NEPER)``; exp is the cheaper call.
DB_TO_NEPER = math.log(10.0) / 20.0


@kernel("void(float32[:, ::1], float32[:, ::1], float64, float64, float64, float64,"
        " float64, float64[::1], float64[::1])")
def compressor(x, y, threshold_db, ratio, knee_db, attack_coef, release_coef, state, makeup):
    """Feed-forward compressor with a soft knee, smoothing in the dB domain.

    Gain computer and branching peak detector after Giannoulis, Massberg and
    Reiss, "Digital dynamic range compressor design", JAES 60(6), 2012.
    ``state = [smoothed gain reduction in dB]``; ``makeup`` is a ramp of the
    linear make-up gain.  ``*_coef`` are one-pole coefficients exp(-1/(tau fs)).
    """
    n_ch = x.shape[0]
    n = x.shape[1]
    slope = 1.0 / ratio - 1.0
    # Below this linear level the gain computer gives no reduction.
    quiet = 10.0 ** ((threshold_db - knee_db / 2.0) / 20.0)
    reduction = state[0]
    for i in range(n):
        peak = 0.0
        for c in range(n_ch):
            a = abs(x[c, i])
            if a > peak:
                peak = a
        target = 0.0
        if peak > quiet:
            level = 20.0 * math.log10(peak)
            over = level - threshold_db
            if 2.0 * over > knee_db:
                target = -slope * over
            else:
                d = over + knee_db / 2.0
                target = -slope * d * d / (2.0 * knee_db)
        if target > reduction:
            reduction = attack_coef * reduction + (1.0 - attack_coef) * target
        else:
            reduction = release_coef * reduction + (1.0 - release_coef) * target
            if reduction < TINY:
                reduction = 0.0
        g = ramp_next(makeup)
        if reduction > 0.0:
            g *= math.exp(-reduction * DB_TO_NEPER)
        gf = np.float32(g)
        for c in range(n_ch):
            y[c, i] = x[c, i] * gf
    state[0] = reduction


@numba.njit(inline="always", **JIT_OPTIONS)
def _wrap(i, w):
    """``i % w`` for ``0 <= i < 2 w``, without a division."""
    return i - w if i >= w else i


@kernel("void(float32[:, ::1], float32[:, ::1], float64, float64, float64[:, ::1],"
        " float64[::1], int64[::1], float64[::1], int64[::1])")
def limiter(x, y, ceiling, release_coef, delay, window, positions, fstate, istate):
    """Look-ahead peak limiter: no output sample exceeds ``ceiling``.

    With a delay of D samples (``delay`` is ``(channels, D)``) the gain that
    each sample needs, ``min(1, ceiling / peak)``, is known D samples before
    that sample is output.  The gain applied is: the minimum of the needs over
    the last D+1 samples (monotonic deque in ``window``/``positions``), which
    may rise only at the release rate, then averaged over D+1 samples (a
    linear attack that has fully arrived when the peak is output).  Every
    value averaged is at most the peak's need, so the peak is held under the
    ceiling; a final clamp absorbs rounding.

    ``window``/``positions``: deque of size D+1, and ``fstate`` = ``[release
    state, box sum, box ring ...(D+1)]``; ``istate`` = ``[sample counter,
    delay write index, deque head, deque count]``.
    """
    n_ch = x.shape[0]
    n = x.shape[1]
    d = delay.shape[1]
    w = d + 1
    count = istate[0]
    write = istate[1]
    head = istate[2]
    size = istate[3]
    held = fstate[0]
    total = fstate[1]
    ring = count % w  # slot of the moving-average ring; wrapped by hand below
    for i in range(n):
        peak = 0.0
        for c in range(n_ch):
            a = abs(x[c, i])
            if a > peak:
                peak = a
        need = 1.0 if peak <= ceiling else ceiling / peak
        # Sliding minimum over the last w needs.  Drop the expired front
        # first, so the deque never holds more than its w slots.
        if size > 0 and positions[head] <= count - w:
            head = _wrap(head + 1, w)
            size -= 1
        while size > 0 and window[_wrap(head + size - 1, w)] >= need:
            size -= 1
        slot = _wrap(head + size, w)
        window[slot] = need
        positions[slot] = count
        size += 1
        lowest = window[head]
        if lowest < held:
            held = lowest
        else:
            held = lowest + release_coef * (held - lowest)
        # Moving average of the held gain over w samples.
        total += held - fstate[2 + ring]
        fstate[2 + ring] = held
        if ring == w - 1:  # re-sum once per lap so rounding cannot drift
            total = 0.0
            for k in range(w):
                total += fstate[2 + k]
        ring = _wrap(ring + 1, w)
        gain = total / w
        for c in range(n_ch):
            out = delay[c, write] * gain
            delay[c, write] = x[c, i]
            if out > ceiling:
                out = ceiling
            elif out < -ceiling:
                out = -ceiling
            y[c, i] = np.float32(out)
        write += 1
        if write == d:
            write = 0
        count += 1
    istate[0] = count
    istate[1] = write
    istate[2] = head
    istate[3] = size
    fstate[0] = held
    fstate[1] = total


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
    n_ch = x.shape[0]
    n = x.shape[1]
    env = state[0]
    gain = state[1]
    is_open = state[2] > 0.5
    below = counter[0]
    for i in range(n):
        peak = 0.0
        for c in range(n_ch):
            a = abs(x[c, i])
            if a > peak:
                peak = a
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
        gf = np.float32(gain)
        for c in range(n_ch):
            y[c, i] = x[c, i] * gf
    state[0] = env
    state[1] = gain
    state[2] = 1.0 if is_open else 0.0
    counter[0] = below

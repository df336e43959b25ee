"""Binaural rendering: fractional delay lines, short FIR filters, HRTF lookup.

One *source* is a mono signal placed at a direction.  For each ear it goes
through a delay line read with third-order Lagrange interpolation (the onset
delay of the head-related response, so the interaural time difference is
exact to a fraction of a sample) and then a short minimum-phase FIR filter
(the rest of the response), times a gain, optionally through a one-pole
low-pass (air absorption), and is added to the stereo output.

Changes happen on a fixed schedule: every ``tick`` samples, counted from the
start of the stream and not from block boundaries, each source takes its
new direction, gain and delay.  During the following ``tick`` samples

* the filter cross-fades linearly from the old direction's to the new one's
  (both are run, the outputs mixed), so no step ever reaches the output;
* the delays, gains and the air coefficient move linearly to their new
  values.

Because the schedule depends only on the sample count, the output does not
depend on how the input is cut into blocks.

Two kernels render: ``render`` (the Spatializer's: each source delayed,
filtered directly, times its gain, then air absorption) and ``render_mix``
(a scene's: air absorption on the delayed input, before the filter; whole
ticks filtered by FFT with the spectra of all sources summed before the
inverse FFTs, see its docstring).  Both give the same output where the air
coefficient stays put, and differ by about 1e-5 of the peak where it moves.

HRTF lookup: the measured directions (unit vectors) are triangulated by
their convex hull.  A direction ``v`` leaves the hull through the face whose
plane ``n . x = c`` it reaches first, the face with the largest
``(n / c) . v``; its barycentric weights are ``inverse(V) v`` (``V`` the
face's three vertices as columns), normalised to sum to one.  Weights are
continuous across faces, so the interpolated delays move continuously.

Layouts (``S`` sources, ``L`` filter taps, ``M`` measured directions, ``F``
hull faces, ``R`` a power of two):

* ``targets`` ``(S, N_TARGETS)`` float64, columns ``T_*``: what each source
  should become at the next tick (written by the caller);
* ``state`` ``(S, N_STATE)`` float64, columns ``S_*``;
* ``filt`` ``(S, 2, 2, L)`` float32: ``[source, old/new, ear, tap]``;
* ``ring`` ``(S, 2 R)`` float32: each source's recent input, each sample
  stored twice, ``R`` apart (see ``_write``); ``R`` holds a tick plus the
  longest delay;
* ``dhist`` ``(S, 2, L - 1)`` float32: each ear's last delayed samples;
* ``clock`` int64 ``[samples to the next tick, tick, write position,
  instant, sample rate]``; ``instant = 1`` switches at once, without
  cross-fades or ramps (only for demonstrating what the cross-fade
  prevents);
* ``spec_re``, ``spec_im`` ``(S, 2, 2, K)`` float32 (``render_mix`` only):
  the spectra of ``filt`` (old and new, in the order ``S_SPEC`` says),
  ``K = n_fft // 2 + 1``;
* ``planes`` ``(F, 3)``, ``faces`` ``(F, 6)`` int64 (the three corners,
  then the neighbouring face opposite each corner), ``inverses``
  ``(F, 3, 3)``: the hull; ``hrtf_filters`` ``(M, 2, L)`` float32,
  ``hrtf_delays`` ``(M, 2)`` float64 (samples).
"""

import math

import numba
import numpy as np
from rocket_fft import c2r, r2c

from . import JIT_OPTIONS, kernel

# targets columns
T_ACTIVE = 0      # 1: the source is rendered
T_X = 1           # direction (unit vector, head frame: x ahead, y left, z up)
T_Y = 2
T_Z = 3
T_RATE = 4        # rotation about the vertical axis, radians per sample (+ turns left)
T_GAIN = 5        # broadband gain
T_DISTANCE = 6    # metres, for the near-field model
T_NEAR = 7        # near-field model: the HRTF's measurement distance in metres; 0 = off
T_AIR = 8         # air absorption over this many metres (0 = none)
T_DELAY = 9       # extra delay in samples (propagation time)
N_TARGETS = 10

# state columns
S_STARTED = 0     # 0 until the first tick
S_X = 1           # direction in use (after rotation)
S_Y = 2
S_Z = 3
S_PHASE = 4       # rotation angle applied at the next tick, radians
S_HRTF_DELAY = 5  # 5, 6: interpolated onset delays of the direction in use
S_DELAY = 7       # 7, 8: delay at the tick; 9, 10: step; 11, 12: target
S_GAIN = 13       # 13, 14: gain at the tick; 15, 16: step; 17, 18: target
S_AIR = 19        # air coefficient at the tick, 20: step, 21: target
S_MEMORY = 22     # 22, 23: air filter memories
S_FADE = 24       # 1 while the filters cross-fade
S_FACE = 25       # 1 + the hull face of the direction in use (0: none yet)
S_SPEC = 26       # render_mix: which of the two spectra buffers holds the new filter's
N_STATE = 27

# clock entries
C_COUNTDOWN = 0
C_TICK = 1
C_WRITE = 2
C_INSTANT = 3
C_RATE = 4        # sample rate, Hz

# scene_targets settings
G_UNIT = 0         # metres per world unit
G_DIRECTIVITY = 1  # dB quieter facing away
G_REFERENCE = 2    # metres without attenuation
G_RANGE = 3        # hear speakers within this many units (inf: all)
G_MAX_COUNT = 4    # hear at most this many, the nearest (-1: all)
G_NEAR = 5         # T_NEAR of every speaker
G_AIR = 6          # air absorption by default (1) or not (0)
G_DOPPLER = 7      # Doppler by default (1) or not (0)
G_SPEED = 8        # speed of sound, m/s
G_MAX_DELAY = 9    # longest propagation delay kept, s
G_RATE = 10        # sample rate, Hz
N_SETTINGS = 11

#: Delay added to every onset delay: the Lagrange interpolator reads the
#: four samples around the delay and needs one of them at or before "now".
BASE_DELAY = 1.0

#: Radius of the head (m) for the near-field model; KEMAR's is about 8.75 cm.
HEAD_RADIUS_M = 0.0875
#: The near-field model treats closer sources as at this distance (m).
NEAR_FIELD_MIN_M = 0.2

#: Air absorption: the one-pole low-pass cut-off is AIR_CUTOFF_HZ / sqrt(d)
#: for d metres of air, which matches the f**2 law of ISO 9613-1 absorption
#: (20 C, 50 % relative humidity: about 0.1 dB/m at 8 kHz) below the cut-off.
AIR_CUTOFF_HZ = 52000.0

#: Air filter memories below this are set to zero (no denormal numbers).
TINY = 1e-30


@numba.njit(inline="always", **JIT_OPTIONS)
def _real(j):
    """The loop index ``j`` (0 <= j < 2**31) as a float64, exactly: through
    int32, which AVX2 converts four at a time where it converts int64 one
    by one (loops that use their index in float arithmetic vectorize)."""
    return np.float64(np.int32(j))


# ----------------------------------------------------------------- building blocks

@numba.njit(inline="always", **JIT_OPTIONS)
def _write(ring, x, m, write):
    """Append ``x[:m]`` to the mirrored ring (each sample stored twice, ``R``
    apart, so that any ``R`` consecutive samples are contiguous)."""
    size = ring.shape[0] // 2
    start = write & (size - 1)
    j = 0
    while j < m:  # in runs that do not wrap around, so the copies vectorize
        p = (start + j) & (size - 1)
        r = min(m - j, size - p)
        low = ring[p:p + r]
        high = ring[p + size:p + size + r]
        src = x[j:j + r]
        for q in range(r):
            low[q] = src[q]
            high[q] = src[q]
        j += r


@numba.njit(inline="always", **JIT_OPTIONS)
def _read_delayed(ring, write, d0, step, pos, m, dst, offset):
    """``dst[offset + j]`` = the input ``D_j`` samples before sample
    ``write + j`` (already in the mirrored ring), for ``j < m``, where
    ``D_j = d0 + (pos + j + 1) * step`` (>= 1) and ``pos`` counts the samples
    since the last tick.

    Third-order Lagrange interpolation on the four samples around the
    delay: with ``I = floor(D_j)``, the samples ``I - 1 .. I + 2`` back,
    weighted for the position ``D_j - I + 1`` among them.  Samples are
    taken in runs over which ``I`` stays the same (found exactly, from the
    same expression), so the inner loop reads contiguous memory and the
    result is the same however blocks are cut.
    """
    size = ring.shape[0] // 2
    mask = size - 1
    j = 0
    while j < m:
        t = pos + j + 1.0
        whole = int(d0 + t * step)
        r = m - j
        if step != 0.0:
            # the first sample whose delay leaves [whole, whole + 1)
            edge = whole + 1.0 if step > 0.0 else float(whole)
            r = min(r, max(1, int(math.ceil((edge - d0) / step - t))))
            while r > 1 and int(d0 + (t + r - 1.0) * step) != whole:
                r -= 1
            while r < m - j and int(d0 + (t + r) * step) == whole:
                r += 1
        base = (write + j - whole - 2) & mask
        seg = ring[base:base + r + 3]
        out = dst[offset + j:offset + j + r]
        wf = whole - 1.0
        for q in range(r):
            # the position in float64 (exact to the sample count), the weights
            # in float32: twice the lanes, and errors of 1e-7 of the signal
            d = np.float32((d0 + (t + _real(q)) * step) - wf)
            d1 = d - np.float32(1.0)
            d2 = d - np.float32(2.0)
            d3 = d - np.float32(3.0)
            out[q] = (-(d1 * d2 * d3) * seg[q + 3] + np.float32(3.0) * d * d2 * d3 * seg[q + 2]
                      - np.float32(3.0) * d * d1 * d3 * seg[q + 1]
                      + d * d1 * d2 * seg[q]) * np.float32(1.0 / 6.0)
        j += r


@numba.njit(inline="always", **JIT_OPTIONS)
def _fir(buf, start, h, y, m):
    """``y[j] = sum_k h[k] buf[start + j - k]`` for ``j < m`` (``buf`` holds
    ``len(h) - 1`` samples of history before ``start``).

    Taps are taken eight at a time along the whole block, so the inner loop
    runs over independent outputs and vectorizes.
    """
    taps = h.shape[0]
    for j in range(m):
        y[j] = 0.0
    k = 0
    while k + 8 <= taps:
        seg = buf[start - k - 7:start - k + m]
        h0, h1, h2, h3 = h[k], h[k + 1], h[k + 2], h[k + 3]
        h4, h5, h6, h7 = h[k + 4], h[k + 5], h[k + 6], h[k + 7]
        for j in range(m):
            y[j] += (h0 * seg[j + 7] + h1 * seg[j + 6] + h2 * seg[j + 5] + h3 * seg[j + 4]
                     + h4 * seg[j + 3] + h5 * seg[j + 2] + h6 * seg[j + 1] + h7 * seg[j])
        k += 8
    while k < taps:
        seg = buf[start - k:start - k + m]
        hk = h[k]
        for j in range(m):
            y[j] += hk * seg[j]
        k += 1


@numba.njit(inline="always", **JIT_OPTIONS)
def _fir_pair(buf, start, ha, hb, ya, yb, m):
    """``_fir`` with two filters of equal length over the same input at once
    (each input sample is loaded once for both)."""
    taps = ha.shape[0]
    for j in range(m):
        ya[j] = 0.0
        yb[j] = 0.0
    k = 0
    while k + 8 <= taps:
        seg = buf[start - k - 7:start - k + m]
        a0, a1, a2, a3 = ha[k], ha[k + 1], ha[k + 2], ha[k + 3]
        a4, a5, a6, a7 = ha[k + 4], ha[k + 5], ha[k + 6], ha[k + 7]
        b0, b1, b2, b3 = hb[k], hb[k + 1], hb[k + 2], hb[k + 3]
        b4, b5, b6, b7 = hb[k + 4], hb[k + 5], hb[k + 6], hb[k + 7]
        for j in range(m):
            x0 = seg[j + 7]
            x1 = seg[j + 6]
            x2 = seg[j + 5]
            x3 = seg[j + 4]
            x4 = seg[j + 3]
            x5 = seg[j + 2]
            x6 = seg[j + 1]
            x7 = seg[j]
            ya[j] += ((a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3)
                      + (a4 * x4 + a5 * x5 + a6 * x6 + a7 * x7))
            yb[j] += ((b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3)
                      + (b4 * x4 + b5 * x5 + b6 * x6 + b7 * x7))
        k += 8
    while k < taps:
        seg = buf[start - k:start - k + m]
        a = ha[k]
        b = hb[k]
        for j in range(m):
            ya[j] += a * seg[j]
            yb[j] += b * seg[j]
        k += 1


@numba.njit(inline="always", **JIT_OPTIONS)
def _barycentric(inverses, face, vx, vy, vz):
    """Weights of ``v`` on the corners of ``face`` (not normalised)."""
    inv = inverses[face]
    return (inv[0, 0] * vx + inv[0, 1] * vy + inv[0, 2] * vz,
            inv[1, 0] * vx + inv[1, 1] * vy + inv[1, 2] * vz,
            inv[2, 0] * vx + inv[2, 1] * vy + inv[2, 2] * vz)


@numba.njit(inline="always", **JIT_OPTIONS)
def _lookup(planes, faces, inverses, vx, vy, vz, hint):
    """``(face, i0, i1, i2, w0, w1, w2)``: the hull face around the unit
    vector ``v``, its three measured directions and their barycentric
    weights (>= 0, sum 1).

    ``hint`` is a face to try first, then its neighbours (a moving source
    usually stays in the same face from one tick to the next, or moves to
    the next one): ``v`` is in a face's cone exactly when its weights there
    are all >= 0.  Otherwise every face is scored.
    """
    face = -1
    if 0 <= hint < planes.shape[0]:
        for c in range(4):  # the hint, then its three neighbours
            f = hint if c == 0 else faces[hint, 2 + c]
            w0, w1, w2 = _barycentric(inverses, f, vx, vy, vz)
            if w0 >= 0.0 and w1 >= 0.0 and w2 >= 0.0:
                face = f
                break
    if face < 0:
        best = -np.inf
        face = 0
        for f in range(planes.shape[0]):
            score = planes[f, 0] * vx + planes[f, 1] * vy + planes[f, 2] * vz
            if score > best:
                best = score
                face = f
        # Faces in one plane (a measuring grid has planar quadrilaterals, cut
        # in two) score alike; take the one that holds v, all weights >= 0.
        w0, w1, w2 = _barycentric(inverses, face, vx, vy, vz)
        low = min(w0, min(w1, w2))
        if low < 0.0:
            for f in range(planes.shape[0]):
                score = planes[f, 0] * vx + planes[f, 1] * vy + planes[f, 2] * vz
                if score >= best - 1e-9 * abs(best):
                    w0, w1, w2 = _barycentric(inverses, f, vx, vy, vz)
                    if min(w0, min(w1, w2)) > low:
                        low = min(w0, min(w1, w2))
                        face = f
    w0, w1, w2 = _barycentric(inverses, face, vx, vy, vz)
    w0 = max(0.0, w0)
    w1 = max(0.0, w1)
    w2 = max(0.0, w2)
    total = w0 + w1 + w2
    return (face, faces[face, 0], faces[face, 1], faces[face, 2],
            w0 / total, w1 / total, w2 / total)


@numba.njit(inline="always", **JIT_OPTIONS)
def _air_coefficient(metres, sample_rate):
    """One-pole coefficient ``a`` (``y += (1 - a) (x - y)``) of air
    absorption over ``metres`` (> 0); it tends to 0 (no filtering) for short
    paths."""
    return math.exp(-2.0 * math.pi * AIR_CUTOFF_HZ / math.sqrt(metres) / sample_rate)


@numba.njit(inline="always", **JIT_OPTIONS)
def _near_field(vy, distance, reference):
    """Gains ``(left, right)`` that widen the level difference of a close source.

    Each ear hears the source by the inverse of its own distance to it (ears
    at +-HEAD_RADIUS_M on the y axis), relative to the same ratio at the
    HRTF's measurement distance ``reference``, which the measured filters
    already hold.  The pair is scaled to keep its geometric mean, so the
    ears move apart by equal amounts in dB: only the difference between the
    ears grows.  No effect at or beyond ``reference``.
    """
    r = HEAD_RADIUS_M
    d = max(min(distance, reference), NEAR_FIELD_MIN_M)
    near_l = d / math.sqrt(d * d + r * r - 2.0 * d * r * vy)
    near_r = d / math.sqrt(d * d + r * r + 2.0 * d * r * vy)
    far_l = reference / math.sqrt(reference * reference + r * r - 2.0 * reference * r * vy)
    far_r = reference / math.sqrt(reference * reference + r * r + 2.0 * reference * r * vy)
    gl = near_l / far_l
    gr = near_r / far_r
    norm = 1.0 / math.sqrt(gl * gr)
    return gl * norm, gr * norm


@numba.njit(inline="always", **JIT_OPTIONS)
def _ramp(state, s, col, target, tick, jump):
    """Start moving ``state[s, col]`` (value at the tick, then step, then
    target, two ears apart) to ``target``: at once if ``jump``."""
    start = target if jump else state[s, col + 4]
    state[s, col] = start
    state[s, col + 2] = (target - start) / tick
    state[s, col + 4] = target


# ----------------------------------------------------------------- one source, one tick

@numba.njit(inline="always", **JIT_OPTIONS)
def _tick(s, targets, state, filt, clock, max_delay, planes, faces, inverses,
          hrtf_filters, hrtf_delays):
    """Take source ``s``'s targets: new direction (filters), delays, gains.

    Returns ``(changed, jump, i0, i1, i2, w0, w1, w2)``: whether the
    direction changed, whether it switched at once, and (if it changed) the
    measured directions and weights of the new filters.
    """
    tick = float(clock[C_TICK])
    started = state[s, S_STARTED] != 0.0
    jump = (not started) or clock[C_INSTANT] != 0
    phase = state[s, S_PHASE]
    cos = math.cos(phase)
    sin = math.sin(phase)
    bx = targets[s, T_X]
    by = targets[s, T_Y]
    vx = bx * cos - by * sin
    vy = bx * sin + by * cos
    vz = targets[s, T_Z]
    state[s, S_PHASE] = (phase + targets[s, T_RATE] * tick) % (2.0 * math.pi)
    changed = (not started) or vx != state[s, S_X] or vy != state[s, S_Y] \
        or vz != state[s, S_Z]
    i0 = i1 = i2 = 0
    w0 = w1 = w2 = 0.0
    if changed:
        face, i0, i1, i2, w0, w1, w2 = _lookup(planes, faces, inverses, vx, vy, vz,
                                               int(state[s, S_FACE]) - 1)
        state[s, S_FACE] = face + 1.0
        f0 = np.float32(w0)
        f1 = np.float32(w1)
        f2 = np.float32(w2)
        for e in range(2):
            old = filt[s, 0, e]
            new = filt[s, 1, e]
            h0 = hrtf_filters[i0, e]
            h1 = hrtf_filters[i1, e]
            h2 = hrtf_filters[i2, e]
            for k in range(new.shape[0]):
                old[k] = new[k]
            for k in range(new.shape[0]):
                new[k] = f0 * h0[k] + f1 * h1[k] + f2 * h2[k]
            state[s, S_HRTF_DELAY + e] = (w0 * hrtf_delays[i0, e] + w1 * hrtf_delays[i1, e]
                                          + w2 * hrtf_delays[i2, e])
        state[s, S_X] = vx
        state[s, S_Y] = vy
        state[s, S_Z] = vz
    state[s, S_FADE] = 1.0 if (changed and not jump) else 0.0

    gain_l = targets[s, T_GAIN]
    gain_r = gain_l
    if targets[s, T_NEAR] > 0.0:
        nl, nr = _near_field(vy, targets[s, T_DISTANCE], targets[s, T_NEAR])
        gain_l *= nl
        gain_r *= nr
    for e in range(2):
        delay = state[s, S_HRTF_DELAY + e] + BASE_DELAY + targets[s, T_DELAY]
        _ramp(state, s, S_DELAY + e, min(max(delay, BASE_DELAY), max_delay), tick, jump)
    _ramp(state, s, S_GAIN, gain_l, tick, jump)
    _ramp(state, s, S_GAIN + 1, gain_r, tick, jump)
    # the air coefficient has one value for both ears: its step and target
    # sit one and two columns after it
    air = 0.0
    if targets[s, T_AIR] > 0.0:
        air = _air_coefficient(targets[s, T_AIR], float(clock[C_RATE]))
    start = air if jump else state[s, S_AIR + 2]
    state[s, S_AIR] = start
    state[s, S_AIR + 1] = (air - start) / tick
    state[s, S_AIR + 2] = air
    state[s, S_STARTED] = 1.0
    return changed, jump, i0, i1, i2, w0, w1, w2


# ----------------------------------------------------------------- one source, one segment

@numba.njit(**JIT_OPTIONS)  # not inlined: the kernels compile in half the time
def _delayed(s, x, i, m, pos, write, state, ring, dhist, dl):
    """Samples ``i .. i + m`` of source ``s`` into its ring, and both ears'
    delayed input into ``dl[e, hist:hist + m]`` after the ``hist`` samples
    kept from before; ``pos`` samples have passed since the last tick."""
    hist = dhist.shape[2]
    for e in range(2):
        for k in range(hist):
            dl[e, k] = dhist[s, e, k]
    _write(ring[s], x[s, i:i + m], m, write)
    for e in range(2):
        _read_delayed(ring[s], write, state[s, S_DELAY + e], state[s, S_DELAY + 2 + e], pos,
                      m, dl[e], hist)


@numba.njit(inline="always", **JIT_OPTIONS)
def _keep_history(s, dl, m, dhist):
    """The last ``hist`` samples of ``dl`` become source ``s``'s history."""
    hist = dhist.shape[2]
    for e in range(2):
        for k in range(hist):
            dhist[s, e, k] = dl[e, m + k]


@numba.njit(inline="always", **JIT_OPTIONS)
def _silent(state, s):
    """Whether source ``s``'s gains are zero until the next tick."""
    return (state[s, S_GAIN] == 0.0 and state[s, S_GAIN + 1] == 0.0
            and state[s, S_GAIN + 2] == 0.0 and state[s, S_GAIN + 3] == 0.0)


@numba.njit(**JIT_OPTIONS)  # not inlined: the kernels compile in half the time
def _filter_gain(s, dl, hist, m, pos, state, filt, tick, ya, yb):
    """``yb[e, :m]``: each ear of ``dl`` through source ``s``'s filter
    (cross-faded from the old one while it fades), times its gain ramp."""
    fading = state[s, S_FADE] != 0.0
    inv_tick = 1.0 / tick
    for e in range(2):
        y = yb[e]
        g0 = state[s, S_GAIN + e]
        g_step = state[s, S_GAIN + 2 + e]
        if fading:
            _fir_pair(dl[e], hist, filt[s, 0, e], filt[s, 1, e], ya[e], y, m)
            old = ya[e]
            for j in range(m):
                t = (pos + 1.0) + _real(j)
                y[j] = (old[j] + (t * inv_tick) * (y[j] - old[j])) * (g0 + t * g_step)
        else:
            _fir(dl[e], hist, filt[s, 1, e], y, m)
            for j in range(m):
                y[j] = y[j] * (g0 + ((pos + 1.0) + _real(j)) * g_step)


@numba.njit(inline="always", **JIT_OPTIONS)
def _segment(s, x, i, m, pos, write, out, state, filt, ring, dhist, tick, dl, ya, yb):
    """Render samples ``i .. i + m`` of source ``s`` into ``out``; ``pos``
    samples have passed since the last tick."""
    hist = dhist.shape[2]
    _delayed(s, x, i, m, pos, write, state, ring, dhist, dl)
    if not (_silent(state, s) and state[s, S_MEMORY] == 0.0
            and state[s, S_MEMORY + 1] == 0.0):
        _filter_gain(s, dl, hist, m, pos, state, filt, tick, ya, yb)
        a0 = state[s, S_AIR]
        a_step = state[s, S_AIR + 1]
        zl = state[s, S_MEMORY]
        zr = state[s, S_MEMORY + 1]
        if a0 != 0.0 or a_step != 0.0 or zl != 0.0 or zr != 0.0:
            # both ears in one loop: two independent recursions side by side
            for j in range(m):
                a = a0 + ((pos + 1.0) + _real(j)) * a_step
                zl = yb[0, j] + a * (zl - yb[0, j])
                zr = yb[1, j] + a * (zr - yb[1, j])
                out[0, i + j] += zl
                out[1, i + j] += zr
            state[s, S_MEMORY] = 0.0 if -TINY < zl < TINY else zl
            state[s, S_MEMORY + 1] = 0.0 if -TINY < zr < TINY else zr
        else:
            for e in range(2):
                for j in range(m):
                    out[e, i + j] += yb[e, j]
    _keep_history(s, dl, m, dhist)


# ----------------------------------------------------------------- public kernels

@kernel("void(float32[:, ::1], float32[:, ::1], float64[:, ::1], float64[:, ::1], "
        "float32[:, :, :, ::1], float32[:, ::1], float32[:, :, ::1], int64[::1], "
        "float64[:, ::1], int64[:, ::1], float64[:, :, ::1], float32[:, :, ::1], "
        "float64[:, ::1])")
def render(x, out, targets, state, filt, ring, dhist, clock, planes, faces, inverses,
           hrtf_filters, hrtf_delays):
    """Render the active sources of ``x`` ``(S, n)`` binaurally into ``out`` ``(2, n)``.

    ``out`` is overwritten with the sum of all active sources (row 0 the
    left ear).  See the module docstring for the other arrays; all state is
    updated in place.
    """
    n = x.shape[1]
    sources = x.shape[0]
    tick = clock[C_TICK]
    hist = dhist.shape[2]
    max_delay = ring.shape[1] // 2 - tick - 4.0
    for e in range(2):
        for j in range(n):
            out[e, j] = 0.0
    dl = np.empty((2, hist + tick), dtype=np.float32)
    ya = np.empty((2, tick), dtype=np.float32)
    yb = np.empty((2, tick), dtype=np.float32)
    i = 0
    while i < n:
        if clock[C_COUNTDOWN] <= 0:
            for s in range(sources):
                if targets[s, T_ACTIVE] != 0.0:
                    _tick(s, targets, state, filt, clock, max_delay, planes, faces, inverses,
                          hrtf_filters, hrtf_delays)
            clock[C_COUNTDOWN] = tick
        m = min(n - i, clock[C_COUNTDOWN])
        pos = tick - clock[C_COUNTDOWN]
        for s in range(sources):
            if targets[s, T_ACTIVE] != 0.0:
                _segment(s, x, i, m, pos, clock[C_WRITE], out, state, filt, ring, dhist,
                         tick, dl, ya, yb)
        clock[C_WRITE] += m
        clock[C_COUNTDOWN] -= m
        i += m


# ----------------------------------------------------------------- many sources, one FFT

@numba.njit(**JIT_OPTIONS)  # not inlined: the kernels compile in half the time
def _air_in_place(s, dl, hist, m, pos, state):
    """Source ``s``'s air absorption on ``dl[:, hist:hist + m]`` (both ears)."""
    a0 = state[s, S_AIR]
    a_step = state[s, S_AIR + 1]
    zl = state[s, S_MEMORY]
    zr = state[s, S_MEMORY + 1]
    if a0 != 0.0 or a_step != 0.0 or zl != 0.0 or zr != 0.0:
        left = dl[0, hist:hist + m]
        right = dl[1, hist:hist + m]
        # z[j] = c[j] + a[j] z[j - 1] with c = (1 - a) x, two samples a step:
        # z[j + 1] = (c[j + 1] + a[j + 1] c[j]) + a[j + 1] a[j] z[j - 1], so
        # the recursive path has one multiply-add per two samples
        j = 0
        while j + 1 < m:
            a = a0 + ((pos + 1.0) + _real(j)) * a_step
            b = a + a_step
            cl = left[j] - a * left[j]
            cr = right[j] - a * right[j]
            dl2 = (left[j + 1] - b * left[j + 1]) + b * cl
            dr2 = (right[j + 1] - b * right[j + 1]) + b * cr
            ab = a * b
            left[j] = cl + a * zl
            right[j] = cr + a * zr
            zl = dl2 + ab * zl
            zr = dr2 + ab * zr
            left[j + 1] = zl
            right[j + 1] = zr
            j += 2
        if j < m:
            a = a0 + ((pos + 1.0) + _real(j)) * a_step
            zl = (left[j] - a * left[j]) + a * zl
            zr = (right[j] - a * right[j]) + a * zr
            left[j] = zl
            right[j] = zr
        state[s, S_MEMORY] = 0.0 if -TINY < zl < TINY else zl
        state[s, S_MEMORY + 1] = 0.0 if -TINY < zr < TINY else zr


@numba.njit(**JIT_OPTIONS)  # not inlined: the kernels compile in half the time
def _tick_spectra(s, state, spec_re, spec_im, i0, i1, i2, w0, w1, w2, hrtf_re, hrtf_im):
    """Source ``s``'s direction changed: its new filter spectra, interpolated
    as the filters are (the FFT is linear, so the spectrum of the weighted
    filters is the weighted spectra), overwrite the older of its two
    buffers, which becomes the new one (``S_SPEC``); the other now holds
    the old spectra, without a copy."""
    new = 1 - int(state[s, S_SPEC])
    state[s, S_SPEC] = new
    f0 = np.float32(w0)  # as the filters are interpolated (_tick)
    f1 = np.float32(w1)
    f2 = np.float32(w2)
    for e in range(2):
        new_re = spec_re[s, new, e]
        new_im = spec_im[s, new, e]
        a_re = hrtf_re[i0, e]
        b_re = hrtf_re[i1, e]
        c_re = hrtf_re[i2, e]
        a_im = hrtf_im[i0, e]
        b_im = hrtf_im[i1, e]
        c_im = hrtf_im[i2, e]
        for k in range(new_re.shape[0]):
            new_re[k] = f0 * a_re[k] + f1 * b_re[k] + f2 * c_re[k]
            new_im[k] = f0 * a_im[k] + f1 * b_im[k] + f2 * c_im[k]


@numba.njit(inline="always", **JIT_OPTIONS)
def _zero_pad(rows, start):
    """Zeros from column ``start`` on, in both rows of ``rows``."""
    for e in range(2):
        row = rows[e]
        for j in range(start, row.shape[0]):
            row[j] = 0.0


@numba.njit(**JIT_OPTIONS)  # not inlined: the kernels compile in half the time
def _accumulate(s, z, state, spec_re, spec_im, tick, acc_re, acc_im):
    """Add source ``s``, whose ear spectra are ``z`` ``(2, K)``, to the
    scene's sums.

    With ``o`` and ``n`` an ear's delayed block filtered by the old and the
    new filter and ``g0 + t g_step`` its gain at ``t`` samples after the tick,
    the ear's output is ``(g0 + t g_step) (o + (t / tick) (n - o))``
    ``= c0 + t c1 + t**2 c2``; ``acc_re[p, ear]``, ``acc_im[p, ear]`` sum the
    spectra of ``c_p``.
    """
    fading = state[s, S_FADE] != 0.0
    new = int(state[s, S_SPEC])
    inv_tick = 1.0 / tick
    bins = z.shape[1]
    for e in range(2):
        ze = z[e]
        g0 = np.float32(state[s, S_GAIN + e])
        g_step = np.float32(state[s, S_GAIN + 2 + e])
        c0r = acc_re[0, e]
        c0i = acc_im[0, e]
        c1r = acc_re[1, e]
        c1i = acc_im[1, e]
        nr = spec_re[s, new, e]
        ni = spec_im[s, new, e]
        if fading:
            o_r = spec_re[s, 1 - new, e]
            o_i = spec_im[s, 1 - new, e]
            c2r_ = acc_re[2, e]
            c2i = acc_im[2, e]
            a = np.float32(state[s, S_GAIN + e] * inv_tick)
            b = np.float32(state[s, S_GAIN + 2 + e] * inv_tick)
            for k in range(bins):
                zr = ze[k].real
                zi = ze[k].imag
                ur = o_r[k] * zr - o_i[k] * zi
                ui = o_r[k] * zi + o_i[k] * zr
                qr = (nr[k] * zr - ni[k] * zi) - ur
                qi = (nr[k] * zi + ni[k] * zr) - ui
                c0r[k] += g0 * ur
                c0i[k] += g0 * ui
                c1r[k] += g_step * ur + a * qr
                c1i[k] += g_step * ui + a * qi
                c2r_[k] += b * qr
                c2i[k] += b * qi
        else:
            for k in range(bins):
                zr = ze[k].real
                zi = ze[k].imag
                ur = nr[k] * zr - ni[k] * zi
                ui = nr[k] * zi + ni[k] * zr
                c0r[k] += g0 * ur
                c0i[k] += g0 * ui
                c1r[k] += g_step * ur
                c1i[k] += g_step * ui


@kernel("void(float32[:, ::1], float32[:, ::1], float64[:, ::1], float64[:, ::1], "
        "float32[:, :, :, ::1], float32[:, :, :, ::1], float32[:, :, :, ::1], "
        "float32[:, ::1], float32[:, :, ::1], int64[::1], float64[:, ::1], int64[:, ::1], "
        "float64[:, :, ::1], float32[:, :, ::1], float64[:, ::1], float32[:, :, ::1], "
        "float32[:, :, ::1], float32[:, ::1], complex64[:, ::1], int64)")
def render_mix(x, out, targets, state, filt, spec_re, spec_im, ring, dhist, clock, planes,
               faces, inverses, hrtf_filters, hrtf_delays, hrtf_re, hrtf_im, fft_in, fft_out,
               fft_min):
    """Render the active sources of ``x`` ``(S, n)`` binaurally into ``out``
    ``(2, n)``, summed in the frequency domain.

    The same rendering as ``render`` with one difference: each source's air
    absorption comes before its filter instead of after it (the two commute
    while the air coefficient is constant).  Between two ticks the filters
    are fixed, so each segment of at least ``fft_min`` samples is filtered
    by overlap-save: each ear's history and segment go through one batch of
    real FFTs for all sources (``n_fft`` points, at least ``hist + tick``),
    are multiplied by the old and new filter spectra and summed over all
    sources as ``_accumulate`` says; then one batch of at most six inverse
    FFTs for the whole scene.  The valid part of the circular convolution
    is exactly the direct FIR's output, so nothing is delayed.  Shorter
    segments use the direct FIR.

    The FFTs, products and sums are float32, as the samples are (twice the
    SIMD lanes of float64): the output differs from the direct FIR's by
    about 3e-7 of the peak (-130 dB), far below anything audible
    (``tests/test_spatial_scene.py`` fails above 1e-6).

    ``spec_re``, ``spec_im`` ``(S, 2, 2, K)`` float32 (as precise as the
    float32 filters): each source's two buffers of filter spectra per ear
    (``K = n_fft // 2 + 1``; ``state[s, S_SPEC]`` says which is the new
    one); ``hrtf_re``, ``hrtf_im`` ``(M, 2, K)`` float32: those of
    ``hrtf_filters``.  ``fft_in`` ``(2 S, n_fft)`` float32 and ``fft_out``
    ``(2 S, K)`` complex64: the FFTs' input and output, two rows (the ears)
    per source heard.  A state is used by ``render_mix`` or by ``render``,
    not both.
    """
    n = x.shape[1]
    sources = x.shape[0]
    tick = clock[C_TICK]
    hist = dhist.shape[2]
    bins = hrtf_re.shape[2]
    max_delay = ring.shape[1] // 2 - tick - 4.0
    for e in range(2):
        for j in range(n):
            out[e, j] = 0.0
    n_fft = fft_in.shape[1]
    dl = np.empty((2, n_fft), dtype=np.float32)[0:2]  # the type of fft_in[a:b]
    ya = np.empty((2, tick), dtype=np.float32)
    yb = np.empty((2, tick), dtype=np.float32)
    rows = np.empty(sources, dtype=np.int64)
    acc_re = np.empty((3, 2, bins), dtype=np.float32)
    acc_im = np.empty((3, 2, bins), dtype=np.float32)
    sums = np.empty((6, bins), dtype=np.complex64)   # row 2 p + ear: c_p
    signal = np.empty((6, n_fft), dtype=np.float32)
    along_rows = np.ones(1, dtype=np.int64)
    i = 0
    while i < n:
        if clock[C_COUNTDOWN] <= 0:
            for s in range(sources):
                if targets[s, T_ACTIVE] != 0.0:
                    changed, jump, i0, i1, i2, w0, w1, w2 = _tick(
                        s, targets, state, filt, clock, max_delay, planes, faces, inverses,
                        hrtf_filters, hrtf_delays)
                    if changed:
                        _tick_spectra(s, state, spec_re, spec_im, i0, i1, i2, w0, w1, w2,
                                      hrtf_re, hrtf_im)
            clock[C_COUNTDOWN] = tick
        m = min(n - i, clock[C_COUNTDOWN])
        pos = tick - clock[C_COUNTDOWN]
        fft = m >= fft_min
        heard = 0  # sources in the FFTs' input
        for s in range(sources):
            if targets[s, T_ACTIVE] != 0.0:
                silent = _silent(state, s)
                # the delayed input of a source heard goes straight into the FFTs'
                buf = fft_in[2 * heard:2 * heard + 2] if fft and not silent else dl
                _delayed(s, x, i, m, pos, clock[C_WRITE], state, ring, dhist, buf)
                _air_in_place(s, buf, hist, m, pos, state)
                if not silent:
                    if fft:
                        _zero_pad(buf, hist + m)
                        rows[heard] = s
                        heard += 1
                    else:
                        _filter_gain(s, buf, hist, m, pos, state, filt, tick, ya, yb)
                        for e in range(2):
                            for j in range(m):
                                out[e, i + j] += yb[e, j]
                _keep_history(s, buf, m, dhist)
        if heard:
            r2c(fft_in[:2 * heard], fft_out[:2 * heard], along_rows, True, 1.0, 1)
            acc_re[:] = 0.0
            acc_im[:] = 0.0
            fading = False
            for r in range(heard):
                _accumulate(rows[r], fft_out[2 * r:2 * r + 2], state, spec_re, spec_im, tick, acc_re, acc_im)
                fading = fading or state[rows[r], S_FADE] != 0.0
            terms = 3 if fading else 2
            for p in range(terms):
                for e in range(2):
                    row = sums[2 * p + e]
                    for k in range(bins):
                        row[k] = complex(acc_re[p, e, k], acc_im[p, e, k])
            c2r(sums[:2 * terms], signal[:2 * terms], along_rows, False, 1.0 / n_fft, 1)
            for e in range(2):
                y = out[e, i:i + m]
                c0 = signal[e, hist:hist + m]
                c1 = signal[2 + e, hist:hist + m]
                c2 = signal[4 + e, hist:hist + m]
                for j in range(m):
                    t = (pos + 1.0) + _real(j)
                    v = c0[j] + t * c1[j]
                    if fading:
                        v += (t * t) * c2[j]
                    y[j] = v
        clock[C_WRITE] += m
        clock[C_COUNTDOWN] -= m
        i += m


@kernel("void(float32[::1], float32[::1], float32[::1])")
def fir(x, h, y):
    """``y[j] = sum_k h[k] x[len(h) - 1 + j - k]``: ``x`` holds ``len(h) - 1``
    samples of history, then the ``len(y)`` input samples."""
    _fir(x, h.shape[0] - 1, h, y, y.shape[0])


@kernel("void(float32[::1], float32[::1], float64, float64, float32[::1], int64[::1])")
def fractional_delay(x, y, d0, step, ring, write):
    """``y[j]`` = ``x`` delayed by ``d0 + (j + 1) * step`` samples (>= 1),
    third-order Lagrange interpolation, as the renderer does between two
    ticks (one tick = this call).

    ``ring``: the mirrored ring (length ``2 R``, ``R`` a power of two, at
    least ``len(x)`` plus the longest delay plus 4); ``write[0]``: the count
    of samples written so far.  Both carry over calls.
    """
    n = x.shape[0]
    _write(ring, x, n, write[0])
    _read_delayed(ring, write[0], d0, step, 0, n, y, 0)
    write[0] += n


@kernel("void(float64[:, ::1], int64[:, ::1], float64[:, :, ::1], float64[::1], "
        "int64[::1], float64[::1])")
def hrtf_weights(planes, faces, inverses, v, indices, weights):
    """The three measured directions around the unit vector ``v`` into
    ``indices`` and their barycentric weights into ``weights``."""
    _, i0, i1, i2, w0, w1, w2 = _lookup(planes, faces, inverses, v[0], v[1], v[2], -1)
    indices[0] = i0
    indices[1] = i1
    indices[2] = i2
    weights[0] = w0
    weights[1] = w1
    weights[2] = w2


@kernel("void(float64[:, ::1], float64[::1], float64[:, ::1], float64[:, ::1], boolean[::1], "
        "boolean[::1], boolean[::1], int64[::1], float64[::1], int8[::1], int8[::1], "
        "float64[::1], float64[:, ::1])")
def scene_targets(positions, listener, axes, facing, has_facing, used, muted, leaving, atten,
                  air, doppler, settings, targets):
    """Every speaker's targets for the renderer, seen from the listener's head.

    ``positions`` ``(S, 3)`` and ``listener`` ``(3,)`` in world units;
    ``axes`` rows: the listener's forward, right and up unit vectors;
    ``facing[s]`` (used where ``has_facing[s]``): the way speaker ``s``
    faces (any length > 0).  Per speaker: ``used`` (has a position),
    ``muted``, ``leaving`` (>= 0 while a removed speaker fades), ``atten``
    (its attenuation, 0 to 1, zones applied), ``air`` and ``doppler`` (1 on,
    0 off, -1 the scene's default).  ``settings``: the ``G_*`` entries.

    Writes all columns of ``targets``: direction (head frame: x ahead, y
    left, z up; straight ahead for a speaker at the listener's position),
    distance in metres, and the gain: ``ref / (ref + 2 atten (max(d, ref)
    - ref))`` for ``d`` metres, times the directivity (a speaker facing away
    at angle ``a`` is ``directivity_db * (1 - cos a) / 2`` dB quieter), for
    the speakers heard (used, not muted or leaving, within the range, and
    among the ``max_count`` nearest of those), 0 for the others.
    """
    unit = settings[G_UNIT]
    directivity_db = settings[G_DIRECTIVITY]
    ref = settings[G_REFERENCE]
    limit = settings[G_RANGE] * unit
    sources = positions.shape[0]
    heard = np.zeros(sources, dtype=np.bool_)
    count = 0
    for s in range(sources):
        t = targets[s]
        rx = (positions[s, 0] - listener[0]) * unit
        ry = (positions[s, 1] - listener[1]) * unit
        rz = (positions[s, 2] - listener[2]) * unit
        ahead = rx * axes[0, 0] + ry * axes[0, 1] + rz * axes[0, 2]
        right = rx * axes[1, 0] + ry * axes[1, 1] + rz * axes[1, 2]
        up = rx * axes[2, 0] + ry * axes[2, 1] + rz * axes[2, 2]
        d = math.sqrt(ahead * ahead + right * right + up * up)
        g = 1.0
        if d > 1e-9:
            t[T_X] = ahead / d
            t[T_Y] = -right / d
            t[T_Z] = up / d
            if has_facing[s] and directivity_db > 0.0:
                fx, fy, fz = facing[s, 0], facing[s, 1], facing[s, 2]
                cos = -(fx * rx + fy * ry + fz * rz) / (d * math.sqrt(fx * fx + fy * fy + fz * fz))
                g = 10.0 ** (-directivity_db * (1.0 - cos) / 40.0)
        else:
            t[T_X] = 1.0
            t[T_Y] = 0.0
            t[T_Z] = 0.0
        t[T_DISTANCE] = d
        rolloff = 2.0 * atten[s]
        t[T_GAIN] = g * ref / (ref + rolloff * (max(d, ref) - ref))
        t[T_ACTIVE] = 1.0 if used[s] else 0.0
        t[T_RATE] = 0.0
        t[T_NEAR] = settings[G_NEAR]
        on = air[s] > 0 or (air[s] < 0 and settings[G_AIR] != 0.0)
        t[T_AIR] = d * rolloff if on else 0.0
        on = doppler[s] > 0 or (doppler[s] < 0 and settings[G_DOPPLER] != 0.0)
        t[T_DELAY] = (min(d / settings[G_SPEED], settings[G_MAX_DELAY]) * settings[G_RATE]
                      if on else 0.0)
        heard[s] = used[s] and leaving[s] < 0 and not muted[s] and d <= limit
        if heard[s]:
            count += 1
    keep = int(settings[G_MAX_COUNT])
    if 0 <= keep < count:
        # the heard speakers by distance, the lower slot first on ties (an
        # insertion sort: scenes are small, and it compiles in no time)
        which = np.empty(count, dtype=np.int64)
        c = 0
        for s in range(sources):
            if heard[s]:
                d = targets[s, T_DISTANCE]
                j = c
                while j > 0 and targets[which[j - 1], T_DISTANCE] > d:
                    which[j] = which[j - 1]
                    j -= 1
                which[j] = s
                c += 1
        for c in range(keep, count):
            heard[which[c]] = False
    for s in range(sources):
        if not heard[s]:
            targets[s, T_GAIN] = 0.0

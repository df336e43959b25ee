"""Pitch-synchronous overlap-add (PSOLA) pitch shifting, streaming.

The output is a sum of grains: Hann-windowed pieces of the input centred on
pitch marks, laid out at the new period.  With grains read at the input's
speed the spectral envelope (the formants) stays where it was and only the
pitch moves; read at ``ratio`` times the speed (``preserve`` false) the
grains are resampled and the formants move with the pitch.  Read at
``factor`` times the speed and laid out at the original period, they move
the formants alone.

Time bases: absolute sample time ``t`` counts input samples; the output
sample written while input sample ``t`` arrives is output time ``t``.  The
output is the input delayed by ``latency`` samples on average: a grain whose
centre is at output time ``T`` is taken from around input time ``T -
latency``.  All histories are circular buffers of ``R`` (a power of two)
samples indexed by ``t & (R - 1)``.

Per channel, every sample:

1. the sample enters the history, and a low-passed copy (the *salience*,
   whose peaks mark the glottal pulses) enters its own history;
2. every ``hop`` samples YIN (``kernels.yin``) estimates the period of the
   input decimated by ``decim`` (to about 16 kHz; averages of ``decim``
   samples), over ``width + tau_max + 1`` such samples; the estimates are
   kept by hop index;
3. pitch marks are extended up to the present: in voiced parts one mark per
   period, where the salience around the previous mark best matches itself
   (the same point of the next cycle; the first one at the salience peak of
   the next period); in unvoiced parts one every
   ``unvoiced_period`` samples;
4. grains are added to the output accumulator as soon as their first output
   sample is due.  A voiced grain is centred on the mark nearest to its ideal
   source time ``T - latency``, is ``2 h`` long with ``h`` the period (less
   where the latency budget would be exceeded), and the next grain follows
   after the period divided by the pitch ratio; unvoiced grains are taken at
   exactly ``T - latency`` every ``unvoiced_period`` samples, which is the
   identity when the grains are not resampled;
5. the output is the accumulated grains divided by the accumulated window
   weight where that exceeds 1 (pitch raised: grains overlap more), then
   cross-faded with the input delayed by ``latency``: a ratio and formant
   factor of exactly 1 are an exact bypass.

Pitch correction (``correct``): the ratio of each grain is computed from the
f0 at its source and the nearest note of a scale, moved towards its target
with a one-pole of time constant ``speed`` samples, and scaled by
``strength``.
"""

import math

import numba
import numpy as np

from . import JIT_OPTIONS, kernel
from .common import ramp_next
from .yin import yin_period, yin_scratch

#: Slots of the per-channel state row ``fstate``.
T_NEXT = 0       # output time of the next grain's centre
SHIFT = 1        # pitch-correction shift in cents (smoothed)
WET = 2          # cross-fade position: 0 bypass .. 1 grains
LOCKED = 3       # 1 while marks follow a voiced period
LATEST = 4       # hop index of the latest YIN estimate
N_MARKS = 5      # pitch marks made so far
LP = 6           # 6..9: low-pass history x1, x2, y1, y2
DELAY = 10       # output time - source time of the latest grain
FSTATE_SIZE = 11

#: Pitch estimates kept (by hop index) and pitch marks kept.
EST_SLOTS = 128
MARK_SLOTS = 128


@numba.njit(inline="always", **JIT_OPTIONS)
def _cubic(ring, mask, pos):
    """Catmull-Rom interpolation of circular ``ring`` at absolute time ``pos``."""
    i = math.floor(pos)
    f = pos - i
    k = int(i)
    xm1 = ring[(k - 1) & mask]
    x0 = ring[k & mask]
    x1 = ring[(k + 1) & mask]
    x2 = ring[(k + 2) & mask]
    return x0 + 0.5 * f * (x1 - xm1 + f * (2.0 * xm1 - 5.0 * x0 + 4.0 * x1 - x2
                                             + f * (3.0 * (x0 - x1) + x2 - xm1)))


@numba.njit(inline="always", **JIT_OPTIONS)
def _period_at(est, latest, time, half_span, hop):
    """The YIN period (0: unvoiced) of the analysis centred nearest ``time``."""
    k = int(math.floor((time + half_span) / hop + 0.5))
    if k > latest:
        k = latest
    if k < latest - EST_SLOTS + 1:
        k = latest - EST_SLOTS + 1
    if k < 1:
        return 0.0
    return est[k % EST_SLOTS]


@numba.njit(inline="always", **JIT_OPTIONS)
def _nearest_note(cents, scale):
    """Cents (from the tonic) of the scale note nearest to ``cents``."""
    octave = math.floor(cents / 1200.0)
    within = cents - 1200.0 * octave
    best = 0.0
    dist = 1e300
    for j in range(scale.shape[0]):
        for o in range(-1, 2):
            note = scale[j] + 1200.0 * o
            d = abs(note - within)
            if d < dist:
                dist = d
                best = note
    return best + 1200.0 * octave


@numba.njit(**JIT_OPTIONS)
def _refine_mark(sal, mask, m, period):
    """The next mark after ``m``: the lag in [0.85, 1.15] periods at which the
    salience around ``m`` (one period) best matches itself, i.e. the same
    point of the next cycle.  Coarse search on every 4th lag and sample, then
    each lag within 3 of the best on every sample."""
    lo = int(math.ceil(0.85 * period))
    hi = int(math.floor(1.15 * period))
    half = int(0.5 * period)
    best = lo
    top = -1e300
    for lag in range(lo, hi + 1, 4):
        acc = 0.0
        for j in range(-half, half + 1, 4):
            acc += sal[(m + j) & mask] * sal[(m + lag + j) & mask]
        if acc > top:
            top = acc
            best = lag
    centre = best
    top = -1e300
    for lag in range(max(lo, centre - 3), min(hi, centre + 3) + 1):
        acc = 0.0
        for j in range(-half, half + 1):
            acc += sal[(m + j) & mask] * sal[(m + lag + j) & mask]
        if acc > top:
            top = acc
            best = lag
    return m + best


@numba.njit(**JIT_OPTIONS)
def _add_grain(ring, acc, accw, mask, t, centre, h, source, rho):
    """Add a Hann grain of half-length ``h`` centred at output time ``centre``,
    read around input time ``source`` at speed ``rho``, from output time
    ``t`` on (earlier output samples are gone)."""
    first = int(math.floor(centre - h)) + 1
    last = int(math.ceil(centre + h)) - 1
    if first < t:
        first = t
    if last < first:
        return
    # The window by rotation: w = 0.5 + 0.5 cos(theta), theta = pi u.
    step = math.pi / h
    theta = (first - centre) * step
    cw = math.cos(theta)
    sw = math.sin(theta)
    cs = math.cos(step)
    ss = math.sin(step)
    offset = source - centre  # input time = output time + offset (rho = 1)
    whole = offset == math.floor(offset)
    if rho == 1.0 and whole:
        shift = int(offset)
        for tt in range(first, last + 1):
            w = 0.5 + 0.5 * cw
            acc[tt & mask] += w * ring[(tt + shift) & mask]
            accw[tt & mask] += w
            cw, sw = cw * cs - sw * ss, sw * cs + cw * ss
    else:
        for tt in range(first, last + 1):
            w = 0.5 + 0.5 * cw
            pos = source + (tt - centre) * rho
            acc[tt & mask] += w * _cubic(ring, mask, pos)
            accw[tt & mask] += w
            cw, sw = cw * cs - sw * ss, sw * cs + cw * ss


@kernel("void(float32[:, ::1], float32[:, ::1], float64[::1], float64[::1], boolean, boolean,"
        " int64, int64, int64, int64, int64, int64, int64, float64, float64, float64[::1],"
        " float64[::1], float64, float64, float64, float64[:, :, ::1], float64[:, ::1],"
        " int64[:, ::1], float64[:, ::1], int64[::1])")
def psola(x, y, semitones, formant, preserve, correct, latency, hop, decim, width, tau_min,
          tau_max, unvoiced_period, threshold, fallback, lowpass, scale, tonic, strength, speed,
          bufs, est, marks, fstate, counter):
    """Shift the pitch of ``x`` into ``y`` (same shape); see the module docstring.

    semitones: ramp (``kernels.common``) of the shift, advanced every sample
    (ignored when ``correct``).  formant: ramp of the factor by which the
    formants move (1: none), advanced every sample.  preserve: the formants
    do not follow the pitch (else they move by the pitch ratio too).
    correct: pitch correction to ``scale`` (cents of the allowed notes above the tonic,
    0..1200) of the tonic ``tonic`` (its frequency over the sample rate),
    ``strength`` 0..1, ``speed`` time constant in
    samples (0: instant).  latency, hop: samples.  decim: YIN runs on the input
    decimated by ``decim`` (means of ``decim`` samples); width, tau_min, tau_max: YIN's window
    and lag range in those (decimated) samples.  threshold, fallback: YIN
    thresholds.  unvoiced_period: grain spacing where unvoiced.
    lowpass: [b0, b1, b2, a1, a2] of the salience filter.  bufs: (channels, 4,
    R) input, salience, accumulated output, accumulated weight; est:
    (channels, EST_SLOTS) periods by hop index; marks: (channels,
    MARK_SLOTS); fstate: (channels, FSTATE_SIZE); counter: [samples seen].
    """
    n = x.shape[1]
    n_ch = x.shape[0]
    size = bufs.shape[2]
    mask = size - 1
    span = width + tau_max + 1
    half_span = 0.5 * span * decim
    inv_decim = 1.0 / decim
    seg, a, b, corr, spec_a, spec_b, cmnd, axes, result = yin_scratch(width, tau_max)
    b0, b1, b2, a1, a2 = lowpass[0], lowpass[1], lowpass[2], lowpass[3], lowpass[4]
    fade_step = 1.0 / max(1, latency // 3)
    ramp_out = semitones.copy()
    formant_out = formant.copy()
    for c in range(n_ch):
        ramp = semitones.copy()
        framp = formant.copy()
        ring = bufs[c, 0]
        sal = bufs[c, 1]
        acc = bufs[c, 2]
        accw = bufs[c, 3]
        st = fstate[c]
        ch_est = est[c]
        ch_marks = marks[c]
        t_next = st[T_NEXT]
        shift = st[SHIFT]
        wet = st[WET]
        locked = st[LOCKED] > 0.5
        latest = int(st[LATEST])
        n_marks = int(st[N_MARKS])
        x1, x2, y1, y2 = st[LP], st[LP + 1], st[LP + 2], st[LP + 3]
        delay = st[DELAY] if st[DELAY] > 0.0 else float(latency)
        t = counter[0]
        for i in range(n):
            v = float(x[c, i])
            ring[t & mask] = v
            s = b0 * v + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
            if abs(s) < 1e-30:
                s = 0.0
            x2 = x1
            x1 = v
            y2 = y1
            y1 = s
            sal[t & mask] = s
            # 2. pitch
            if (t + 1) % hop == 0:
                # every decim-th sample, averaged over decim samples (anti-aliasing)
                for j in range(span):
                    k = t - (span - 1 - j) * decim
                    v = 0.0
                    for q in range(decim):
                        v += ring[(k - q) & mask]
                    seg[j] = v * inv_decim
                yin_period(seg, width, tau_min, tau_max, threshold, fallback, a, b, spec_a,
                           spec_b, corr, cmnd, axes, result)
                latest = (t + 1) // hop
                ch_est[latest % EST_SLOTS] = result[0] * decim
            semi = ramp_next(ramp)
            factor = ramp_next(framp)
            # 3. marks up to the present
            while True:
                m = ch_marks[(n_marks - 1) % MARK_SLOTS] if n_marks > 0 else -unvoiced_period
                period = _period_at(ch_est, latest, m, half_span, hop)
                if period > 0.0:
                    if locked:
                        # the same point one cycle on: needs input to m + 1.65 periods
                        if m + int(math.floor(1.15 * period)) + int(0.5 * period) > t:
                            break
                        mark = _refine_mark(sal, mask, m, period)
                    else:
                        # the first voiced mark: the salience peak in the next period
                        lo = m + 1
                        hi = int(math.floor(m + period))
                        if hi > t:
                            break
                        mark = lo
                        top = sal[lo & mask]
                        for k in range(lo + 1, hi + 1):
                            if sal[k & mask] > top:
                                top = sal[k & mask]
                                mark = k
                    locked = True
                else:
                    mark = m + unvoiced_period
                    if mark > t:
                        break
                    locked = False
                ch_marks[n_marks % MARK_SLOTS] = mark
                n_marks += 1
            # 4. grains
            ratio = 2.0 ** (semi / 12.0)
            target = 0.0 if (not correct and semi == 0.0 and factor == 1.0) else 1.0
            if target == 0.0 and wet == 0.0:
                t_next = float(t)
                delay = float(latency)
            else:
                while True:
                    ideal = t_next - latency
                    period = _period_at(ch_est, latest, ideal, half_span, hop)
                    if correct:
                        desired = 0.0
                        if period > 0.0:
                            cents = 1200.0 * math.log2(1.0 / (period * tonic))
                            desired = strength * (_nearest_note(cents, scale) - cents)
                        ratio = 2.0 ** (shift / 1200.0)
                    rho = factor if preserve else factor * ratio
                    if period > 0.0:
                        h = min(period, (latency - 0.5 * period - 3.0) / (1.0 + rho))
                        spacing = period / ratio
                    else:
                        h = min(float(unvoiced_period), (latency - 3.0) / (1.0 + rho))
                        spacing = float(unvoiced_period)
                    if math.floor(t_next - h) + 1 > t:
                        break
                    # unvoiced: the delay returns to ``latency`` by at most a
                    # quarter grain per grain, so a voiced stretch ends smoothly
                    step = 0.25 * unvoiced_period
                    source = t_next - (delay + min(max(latency - delay, -step), step))
                    if period > 0.0:
                        # the mark nearest to the ideal source time
                        best = -1.0
                        dist = period
                        k = n_marks - 1
                        while k >= 0 and k > n_marks - MARK_SLOTS:
                            mk = ch_marks[k % MARK_SLOTS]
                            d = abs(mk - ideal)
                            if d < dist:
                                dist = d
                                best = mk
                            if mk < ideal - period:
                                break
                            k -= 1
                        if best >= 0.0:
                            # keep input reads on whole samples when not resampling
                            source = best + (t_next - math.floor(t_next))
                    limit = t - rho * h - 2.0
                    if source > limit:
                        source = limit
                    _add_grain(ring, acc, accw, mask, t, t_next, h, source, rho)
                    delay = t_next - source
                    if correct:
                        if speed > 0.0:
                            shift += (desired - shift) * (1.0 - math.exp(-spacing / speed))
                        else:
                            shift = desired
                    t_next += spacing
            # 5. output
            slot = t & mask
            weight = accw[slot]
            grains = acc[slot] / weight if weight > 1.0 else acc[slot]
            acc[slot] = 0.0
            accw[slot] = 0.0
            dry = ring[(t - latency) & mask]
            y[c, i] = np.float32(dry + wet * (grains - dry))
            if target > wet:
                wet = min(1.0, wet + fade_step)
            elif target < wet:
                wet = max(0.0, wet - fade_step)
            t += 1
        st[T_NEXT] = t_next
        st[SHIFT] = shift
        st[WET] = wet
        st[LOCKED] = 1.0 if locked else 0.0
        st[LATEST] = latest
        st[N_MARKS] = n_marks
        st[DELAY] = delay
        st[LP], st[LP + 1], st[LP + 2], st[LP + 3] = x1, x2, y1, y2
        ramp_out = ramp
        formant_out = framp
    semitones[:] = ramp_out
    formant[:] = formant_out
    counter[0] += n

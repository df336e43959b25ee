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
output is the input delayed by ``latency`` samples: exactly in bypass and
where the input is unvoiced (nothing comes out earlier), within half a
period (plus ``h |rho - 1|`` for grains read at speed ``rho``, see 4.)
where it is voiced.  A grain whose centre is at output time ``T`` is
taken from around input time ``T - latency``.  All histories are circular
buffers of ``R`` (a power of two) samples indexed by ``t & (R - 1)``.

Per channel, every sample:

1. the sample enters the history, and a low-passed copy of its magnitude
   (the *salience*, one bump per cycle around the glottal pulse) enters its
   own history;
2. every ``hop`` samples YIN (``kernels.yin``) estimates the period of the
   input decimated by ``decim`` (to about 16 kHz; averages of ``decim``
   samples), over ``width + tau_max + 1`` such samples, and
   ``follow_period`` keeps a voiced track through YIN's octave slips and
   short dropouts; the estimates are kept by hop index.  The period at a
   time is that of the analysis centred nearest it or, if that one is
   unvoiced, of a neighbour (``_period_at``), so that a voiced stretch
   begins and ends at nearly the same places in a voice and in a shifted
   copy of it (the two passes of a round trip shift the same stretches);
3. pitch marks are extended: in voiced parts one mark per period, where the
   salience around the previous mark best matches itself (the same point of
   the next cycle; the first one at the largest input magnitude of the next
   period); in unvoiced parts one every ``unvoiced_period`` samples, but
   only up to the centre of the latest analysis, so that the first mark of
   a voiced stretch is not placed late.  Each mark keeps its period: the
   distance from the previous mark if both are voiced, YIN's period for the
   first voiced one, 0 if unvoiced;
4. grains are added to the output accumulator as soon as their first output
   sample is due.  A grain is voiced if the period at its ideal source time
   ``T - latency`` is and the mark nearest that time (within a period) is
   voiced: it is centred on that mark, is ``2 h`` long with ``h`` the period
   (less where the latency budget would be exceeded), and the next grain
   follows after the next mark's period divided by the pitch ratio.  So the
   output keeps the input's timing cycle by cycle: with a ratio of 1 the
   delay does not drift at all, otherwise it slides by ``period (1 - 1 /
   ratio)`` per grain and jumps back by a period, staying within half a
   period of ``latency``; and the first grain of a voiced stretch is moved
   to its mark plus ``latency`` (by at most a quarter grain earlier, any
   amount later), so that every stretch starts on time.  Voiced grains
   overlap ``h / spacing`` times on average and are scaled by ``sqrt(spacing
   / h)``, which keeps the energy of a raised or lowered voice.  Unvoiced
   grains are taken at ``T - latency`` every ``unvoiced_period`` samples
   (after a voiced stretch the delay returns there by at most a quarter
   grain per grain, from above: it never goes below ``latency``), which is
   the identity when they are not resampled; read at speed ``rho`` they
   are taken ``h |rho - 1|`` (and two samples for the interpolation)
   earlier, so that no input after ``T - latency`` reaches output ``T``;
5. the output is the accumulated grains, cross-faded with the input delayed
   by ``latency``: a ratio and formant factor of exactly 1 are an exact
   bypass.

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
from .yin import SILENCE, parabolic_offset, yin_period, yin_scratch

#: Slots of the per-channel state row ``fstate``.
T_NEXT = 0       # output time of the next grain's centre
SHIFT = 1        # pitch-correction shift in cents (smoothed)
WET = 2          # cross-fade position: 0 bypass .. 1 grains
LOCKED = 3       # 1 while marks follow a voiced period
LATEST = 4       # hop index of the latest YIN estimate
N_MARKS = 5      # pitch marks made so far
LP = 6           # 6..9: low-pass history x1, x2, y1, y2
DELAY = 10       # output time - source time of the latest grain
VOICED = 11      # 1 if the latest grain was voiced
FSTATE_SIZE = 12

#: Pitch estimates kept (by hop index) and pitch marks kept.
EST_SLOTS = 128
MARK_SLOTS = 128

#: A voiced track goes on through an analysis whose d' (YIN's normalised
#: difference) has a dip under FOLLOW_HOLD within -20 % .. +25 % of the
#: previous period, unless YIN found a shorter period whose d' is at most
#: FOLLOW_SHORTER above that dip's, or a longer one FOLLOW_LONGER below it.
FOLLOW_HOLD = 0.6
FOLLOW_SHORTER = 0.05
FOLLOW_LONGER = 0.15


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
    """The YIN period (0: unvoiced) at ``time``: that of the analysis centred
    nearest it or, if that one is unvoiced, of the next one or else of the
    previous one.  Analyses are 2 ``half_span`` long, so at the edges of a
    voiced stretch the centred one often just misses the voicing, and the
    more so the less periodic the signal is; taking a neighbour (one hop
    away) makes the edges agree better between a voice and a pitch-shifted
    copy of it (in a +7/-7 semitone round trip of the bundled speech, the
    time that one pass treats as voiced and the other not drops from 0.8 s
    to 0.6 s of 19 s)."""
    k = int(math.floor((time + half_span) / hop + 0.5))
    if k > latest:
        k = latest
    if k < latest - EST_SLOTS + 1:
        k = latest - EST_SLOTS + 1
    if k < 1:
        return 0.0
    p = est[k % EST_SLOTS]
    if p == 0.0 and k + 1 <= latest:
        p = est[(k + 1) % EST_SLOTS]
    if p == 0.0 and k - 1 >= 1 and k - 1 > latest - EST_SLOTS:
        p = est[(k - 1) % EST_SLOTS]
    return p


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
def _dip_near(cmnd, previous, tau_min, tau_max, found):
    """The lowest point of ``cmnd`` (YIN's d' by lag) within -20 % .. +25 % of
    lag ``previous``, refined by a parabola: ``found = [lag, d']`` (lag 0 if
    the range is empty)."""
    lo = max(int(math.ceil(0.8 * previous)), max(tau_min, 2))
    hi = min(int(math.floor(1.25 * previous)), tau_max - 1)
    found[0] = 0.0
    found[1] = 1e300
    best = -1
    for tau in range(lo, hi + 1):
        if cmnd[tau] < found[1]:
            found[1] = cmnd[tau]
            best = tau
    if best < 0:
        return
    found[0] = best + parabolic_offset(cmnd, best)


@numba.njit(**JIT_OPTIONS)
def follow_period(result, cmnd, previous, tau_min, tau_max, found):
    """Keep a voiced track through YIN's slips.

    result: ``[period, d']`` from ``yin_period`` (period 0: unvoiced), updated
    in place; cmnd: its d' by lag; previous: the previous analysis's period
    (0: unvoiced), all in the same (decimated) samples.  YIN takes the first
    dip of d' under its threshold, so a strong harmonic makes it slip to half
    or a third of the period, a weak cycle makes it double the period or
    give up.  When the track was voiced and the new period is not within
    -20 % .. +25 % of the previous one, the dip near the previous period is
    taken instead if its d' is under FOLLOW_HOLD, unless YIN's period is
    shorter and its d' at most FOLLOW_SHORTER worse (then the previous
    analysis was probably the slip, to a multiple) or longer and
    FOLLOW_LONGER better.  found: (2,) scratch."""
    if previous <= 0.0:
        return
    p = result[0]
    if p > 0.0 and 0.8 * previous <= p <= 1.25 * previous:
        return
    _dip_near(cmnd, previous, tau_min, tau_max, found)
    if found[0] <= 0.0 or found[1] >= FOLLOW_HOLD:
        return
    if p > 0.0:
        if p < previous and result[1] <= found[1] + FOLLOW_SHORTER:
            return
        if p > previous and result[1] < found[1] - FOLLOW_LONGER:
            return
    result[0] = found[0]
    result[1] = found[1]


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
def _add_grain(ring, acc, mask, t, centre, h, source, rho, gain):
    """Add a Hann grain of half-length ``h`` and peak ``gain`` centred at output
    time ``centre``, read around input time ``source`` at speed ``rho``, from
    output time ``t`` on (earlier output samples are gone)."""
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
            acc[tt & mask] += (0.5 * gain) * (1.0 + cw) * ring[(tt + shift) & mask]
            cw, sw = cw * cs - sw * ss, sw * cs + cw * ss
    else:
        for tt in range(first, last + 1):
            pos = source + (tt - centre) * rho
            acc[tt & mask] += (0.5 * gain) * (1.0 + cw) * _cubic(ring, mask, pos)
            cw, sw = cw * cs - sw * ss, sw * cs + cw * ss


@kernel("void(float32[:, ::1], float32[:, ::1], float64[::1], float64[::1], boolean, boolean,"
        " int64, int64, int64, int64, int64, int64, int64, float64, float64, float64[::1],"
        " float64[::1], float64, float64, float64, float64[:, :, ::1], float64[:, ::1],"
        " float64[:, :, ::1], float64[:, ::1], int64[::1])")
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
    lowpass: [b0, b1, b2, a1, a2] of the salience filter.  bufs: (channels, 3,
    R) input, salience, accumulated output; est: (channels, EST_SLOTS)
    periods by hop index; marks: (channels, 2, MARK_SLOTS) mark times and
    their periods (0: unvoiced); fstate: (channels, FSTATE_SIZE);
    counter: [samples seen].
    """
    n = x.shape[1]
    n_ch = x.shape[0]
    size = bufs.shape[2]
    mask = size - 1
    span = width + tau_max + 1
    half_span = 0.5 * span * decim
    inv_decim = 1.0 / decim
    seg, a, b, corr, spec_a, spec_b, cmnd, axes, result = yin_scratch(width, tau_max)
    found = np.empty(2)
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
        st = fstate[c]
        ch_est = est[c]
        ch_marks = marks[c, 0]
        ch_mp = marks[c, 1]
        t_next = st[T_NEXT]
        shift = st[SHIFT]
        wet = st[WET]
        locked = st[LOCKED] > 0.5
        latest = int(st[LATEST])
        n_marks = int(st[N_MARKS])
        x1, x2, y1, y2 = st[LP], st[LP + 1], st[LP + 2], st[LP + 3]
        delay = st[DELAY] if st[DELAY] > 0.0 else float(latency)
        was_voiced = st[VOICED] > 0.5
        t = counter[0]
        # Work skipped until something can change (not state: each block
        # starts by checking, so the result does not depend on block sizes):
        # the time at which the next mark or grain can be due, and the
        # ratio of the latest shift.
        mark_due = t
        grain_due = t
        last_semi = math.nan
        ratio = 1.0
        for i in range(n):
            v = float(x[c, i])
            ring[t & mask] = v
            # 1. salience: the magnitude, low-passed
            va = abs(v)
            s = b0 * va + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
            if abs(s) < 1e-30:
                s = 0.0
            x2 = x1
            x1 = va
            y2 = y1
            y1 = s
            sal[t & mask] = s
            # 2. pitch
            estimated = (t + 1) % hop == 0
            if estimated:
                # every decim-th sample, averaged over decim samples (anti-aliasing)
                energy = 0.0
                for j in range(span):
                    k = t - (span - 1 - j) * decim
                    v = 0.0
                    for q in range(decim):
                        v += ring[(k - q) & mask]
                    seg[j] = v * inv_decim
                    if j < width:
                        energy += seg[j] * seg[j]
                yin_period(seg, width, tau_min, tau_max, threshold, fallback, a, b, spec_a,
                           spec_b, corr, cmnd, axes, result)
                if energy >= SILENCE * width:  # else yin_period left cmnd as it was
                    follow_period(result, cmnd, ch_est[latest % EST_SLOTS] * inv_decim,
                                  tau_min, tau_max, found)
                latest = (t + 1) // hop
                ch_est[latest % EST_SLOTS] = result[0] * decim
            gliding = ramp[3] > 0.0 or framp[3] > 0.0
            semi = ramp_next(ramp)
            factor = ramp_next(framp)
            if semi != last_semi:
                ratio = 2.0 ** (semi / 12.0)
                last_semi = semi
            # 3. marks
            while estimated or t >= mark_due:
                m = ch_marks[(n_marks - 1) % MARK_SLOTS] if n_marks > 0 else -unvoiced_period
                period = _period_at(ch_est, latest, m, half_span, hop)
                if period > 0.0:
                    if locked:
                        # the same point one cycle on: needs input to m + 1.65 periods
                        mark_due = m + int(math.floor(1.15 * period)) + int(0.5 * period)
                        if mark_due > t:
                            break
                        mark = _refine_mark(sal, mask, int(m), period)
                        mark_period = mark - m
                    else:
                        # the first voiced mark: the largest magnitude in the next period
                        lo = int(m) + 1
                        hi = int(math.floor(m + period))
                        mark_due = hi
                        if hi > t:
                            break
                        mark = lo
                        top = abs(ring[lo & mask])
                        for k in range(lo + 1, hi + 1):
                            if abs(ring[k & mask]) > top:
                                top = abs(ring[k & mask])
                                mark = k
                        mark_period = period
                    locked = True
                else:
                    # unvoiced: up to the centre of the latest analysis only
                    mark = m + unvoiced_period
                    mark_due = math.ceil(mark + half_span)
                    if mark_due > t:
                        break
                    locked = False
                    mark_period = 0.0
                ch_marks[n_marks % MARK_SLOTS] = mark
                ch_mp[n_marks % MARK_SLOTS] = mark_period
                n_marks += 1
            # 4. grains
            target = 0.0 if (not correct and semi == 0.0 and factor == 1.0) else 1.0
            if target == 0.0 and wet == 0.0:
                t_next = float(t)
                delay = float(latency)
                was_voiced = False
                grain_due = t
            elif estimated or gliding or t >= grain_due:
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
                    else:
                        h = min(float(unvoiced_period), (latency - 3.0) / (1.0 + rho))
                    grain_due = int(math.floor(t_next - h)) + 1
                    if grain_due > t:
                        break
                    spacing = float(unvoiced_period)
                    gain = 1.0
                    voiced = False
                    if period > 0.0:
                        # the mark nearest to the ideal source time
                        best = -1.0
                        at = -1
                        dist = period
                        k = n_marks - 1
                        while k >= 0 and k > n_marks - MARK_SLOTS:
                            mk = ch_marks[k % MARK_SLOTS]
                            d = abs(mk - ideal)
                            if d < dist:
                                dist = d
                                best = mk
                                at = k
                            if mk < ideal - period:
                                break
                            k -= 1
                        if at >= 0 and ch_mp[at % MARK_SLOTS] > 0.0:
                            voiced = True
                            # the next grain after this mark's cycle (or, if
                            # the next mark is not there yet, the one before)
                            cycle = ch_mp[at % MARK_SLOTS]
                            if at + 1 < n_marks and ch_mp[(at + 1) % MARK_SLOTS] > 0.0:
                                cycle = ch_mp[(at + 1) % MARK_SLOTS]
                            if not 0.7 * period < cycle < 1.4 * period:
                                cycle = period
                            spacing = cycle / ratio
                            if not was_voiced:
                                # a voiced stretch starts exactly ``latency`` late
                                moved = best + latency
                                if moved >= t_next - 0.25 * h:
                                    t_next = moved
                            # keep input reads on whole samples when not resampling
                            source = best + (t_next - math.floor(t_next))
                            limit = t - rho * h - 2.0
                            if source > limit:
                                source = limit
                            gain = math.sqrt(spacing / h)
                        else:
                            # no voiced mark near: an unvoiced grain
                            h = min(float(unvoiced_period), (latency - 3.0) / (1.0 + rho))
                    if not voiced:
                        # the delay returns to ``latency`` by at most a
                        # quarter grain per grain, so a voiced stretch ends smoothly
                        step = 0.25 * unvoiced_period
                        source = t_next - (delay + min(max(latency - delay, -step), step))
                        # no input after T - latency in output T: grains read
                        # at speed rho reach h |rho - 1| beyond their centre,
                        # and the interpolation two samples more
                        offset = source - t_next
                        ahead = 0.0
                        if rho != 1.0 or offset != math.floor(offset):
                            ahead = h * abs(rho - 1.0) + 2.0
                        if source > ideal - ahead:
                            source = ideal - ahead
                    _add_grain(ring, acc, mask, t, t_next, h, source, rho, gain)
                    delay = t_next - source
                    was_voiced = voiced
                    if correct:
                        if speed > 0.0:
                            shift += (desired - shift) * (1.0 - math.exp(-spacing / speed))
                        else:
                            shift = desired
                    t_next += spacing
            # 5. output
            slot = t & mask
            grains = acc[slot]
            acc[slot] = 0.0
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
        st[VOICED] = 1.0 if was_voiced else 0.0
        st[LP], st[LP + 1], st[LP + 2], st[LP + 3] = x1, x2, y1, y2
        ramp_out = ramp
        formant_out = framp
    semitones[:] = ramp_out
    formant[:] = formant_out
    counter[0] += n

"""Biquad cascade kernel and the RBJ filter designs (dsp.biquad, dsp.filters).

References: ``scipy.signal.sosfilt`` for the kernel, a slow pure-Python direct
form I for the coefficient ramp, and for the designs both their specification
(gain at the centre, shelf plateaus, -3 dB points, Butterworth slope) and an
independent design of the same filter (SciPy's ``butter``, ``iirpeak``,
``iirnotch``, or the cookbook's analog prototype through ``scipy.signal.bilinear``).
Every design is measured twice: on its sections with ``sosfreqz`` and by
filtering a signal through the processor.
"""

import math

import numpy as np
import pytest
from scipy import signal

from stagevox.dsp import (BandPass, Equalizer, HighPass, HighShelf, LowPass, LowShelf, Notch,
                          PeakFilter, biquad)
from stagevox.dsp.biquad import BiquadCascade, to_sos
from signals import tone, tone_amplitude

RATES = (16000, 44100, 48000)

#: Kernel vs sosfilt: the kernel computes in float64 and rounds its output to
#: float32 (relative error 6e-8); 1e-5 of the signal's peak leaves a wide margin
#: yet catches any wrong coefficient or state handling.
KERNEL_RTOL = 1e-5
#: Gain at a point the design fixes exactly (peak centre, shelf mid-point).
SPEC_DB = 0.05
#: Two independent designs of the same filter: they agree to rounding, 0.01 dB
#: is the acceptance bound asked for.
SAME_DESIGN_DB = 0.01
#: -3 dB point of high/low pass filters.
CUTOFF_DB = 0.1
#: Shelf plateau far from the shelf frequency.
PLATEAU_DB = 0.2
#: Processor response (impulse response, float32) vs its designed sections:
#: absolute error of the complex response, relative to 0 dB.  The impulse
#: response is rounded to float32 sample by sample (6e-8 each).
PROCESSOR_ABS = 1e-5


# --------------------------------------------------------------------------- helpers

def db(x):
    with np.errstate(divide="ignore"):  # an exact zero is -inf dB
        return 20.0 * np.log10(np.abs(x))


def design_response(coefs, freqs, fs):
    """Complex response of designed rows at ``freqs`` (Hz) with sosfreqz."""
    _, h = signal.sosfreqz(to_sos(np.asarray(coefs)), worN=np.asarray(freqs, float), fs=fs)
    return h




def measured_gain_db(proc, freq, fs, seconds=1.0, settle=0.6):
    """Gain of ``proc`` at ``freq``: a sine through the processor, after its transient."""
    x = tone(freq, fs, seconds)
    y = proc.process(x, fs)
    k = int(settle * fs)
    return db(tone_amplitude(y[k:], freq, fs) / tone_amplitude(x[k:], freq, fs))


def processor_response(proc, freqs, fs, length=None):
    """Complex response of ``proc`` at ``freqs``: DTFT of its measured impulse response."""
    length = length or fs
    impulse = np.zeros(length, np.float32)
    impulse[0] = 1.0
    h = proc.process(impulse, fs).astype(np.float64)
    # The response must have died out, or the DTFT below would be truncated.
    assert np.abs(h[-200:]).max() < 1e-9
    n = np.arange(length)
    return np.array([np.sum(h * np.exp(-2j * np.pi * f * n / fs)) for f in freqs])


def random_stable_sections(rng, count):
    """``count`` random biquads with complex poles inside radius 0.97."""
    rows = []
    for _ in range(count):
        r = rng.uniform(0.2, 0.97)
        theta = rng.uniform(0.01, np.pi - 0.01)
        b = rng.normal(size=3) * 0.5
        rows.append([b[0], b[1], b[2], -2 * r * np.cos(theta), r * r])
    return np.array(rows)


def random_cuts(rng, n, extra=()):
    """Sorted block boundaries in [0, n], including 0, n and ``extra``."""
    cuts = set(rng.integers(0, n, size=max(1, n // 300)).tolist()) | {0, n} | set(extra)
    return sorted(cuts)


def analog_bilinear(num, den, f0, fs):
    """Digital filter from a normalised analog prototype (s = 1 at ``f0``) by the
    bilinear transform prewarped at ``f0`` (the cookbook's construction)."""
    omega = 2 * fs * math.tan(math.pi * f0 / fs)
    scale = np.array([1 / omega ** 2, 1 / omega, 1.0])
    return signal.bilinear(np.asarray(num) * scale, np.asarray(den) * scale, fs=fs)


def ba_response(b, a, freqs, fs):
    _, h = signal.freqz(b, a, worN=np.asarray(freqs, float), fs=fs)
    return h


# ----------------------------------------------------------------------- the kernel

@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("sections", [1, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cascade_matches_sosfilt(channels, sections, seed):
    """Fixed coefficients: the kernel equals scipy.signal.sosfilt, block cut at random."""
    rng = np.random.default_rng(seed)
    coefs = random_stable_sections(rng, sections)
    x = rng.standard_normal((channels, 6000)).astype(np.float32)
    cascade = BiquadCascade(coefs, channels)
    cuts = random_cuts(rng, x.shape[1])
    # BiquadCascade is the processors' internal engine: it takes C-contiguous blocks.
    y = np.concatenate([cascade.process(np.ascontiguousarray(x[:, a:b]))
                        for a, b in zip(cuts[:-1], cuts[1:])], axis=1)
    assert y.dtype == np.float32 and y.shape == x.shape
    ref = signal.sosfilt(to_sos(coefs), x.astype(np.float64), axis=-1)
    np.testing.assert_allclose(y, ref, rtol=0, atol=KERNEL_RTOL * np.abs(ref).max())


def reference_ramped_cascade(x, coef_per_sample):
    """Slow direct form I cascade with its own coefficients for every sample."""
    channels, n = x.shape
    sections = coef_per_sample.shape[1]
    y = np.zeros((channels, n))
    for c in range(channels):
        xh = [0.0, 0.0]                       # input history of the first section
        yh = [[0.0, 0.0] for _ in range(sections)]  # output history of each section
        for i in range(n):
            v = float(x[c, i])
            hist = xh
            for s in range(sections):
                b0, b1, b2, a1, a2 = coef_per_sample[i, s]
                out = b0 * v + b1 * hist[0] + b2 * hist[1] - a1 * yh[s][0] - a2 * yh[s][1]
                if s == 0:
                    xh = [v, xh[0]]
                hist = list(yh[s])
                yh[s] = [out, yh[s][0]]
                v = out
            y[c, i] = v
    return y


def coefficient_schedule(n, initial, events):
    """Coefficients used at every sample when ``events`` = [(sample, target, ramp)]
    are applied: linear interpolation from the coefficients in use just before
    the event, ``(k + 1) / ramp`` of the way at the k-th sample after it, and
    exactly the target from the ramp's last sample on."""
    sched = np.empty((n,) + initial.shape)
    current = initial
    start, target, length, at = initial, initial, 0, 0
    events = dict((m, (t, r)) for m, t, r in events)
    for i in range(n):
        if i in events:
            start = current
            target, length = events[i]
            at = i
        k = i - at
        if length > 0 and k < length - 1:
            current = start + (k + 1) / length * (target - start)
        else:
            current = target
        sched[i] = current
    return sched


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("seed", [3, 4])
def test_cascade_coefficient_ramp_matches_reference(channels, seed):
    """set(coefs, ramp) mid-stream: coefficients glide linearly, sample by sample,
    and snap to the target at the end; a second set() during the ramp starts
    from where the glide is.  Compared with a slow reference, blocks cut at random."""
    rng = np.random.default_rng(seed)
    a, b, c = (random_stable_sections(rng, 2) for _ in range(3))
    n = 3000
    x = rng.standard_normal((channels, n)).astype(np.float32)
    events = [(700, b, 37), (1200, c, 400), (1400, a, 300), (2500, b, 0)]
    cascade = BiquadCascade(a, channels)
    cuts = random_cuts(rng, n, extra=[m for m, _, _ in events])
    outs = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        for m, target, ramp in events:
            if m == lo:
                cascade.set(target, ramp)
        outs.append(cascade.process(np.ascontiguousarray(x[:, lo:hi])))
    y = np.concatenate(outs, axis=1)
    ref = reference_ramped_cascade(x, coefficient_schedule(n, a, events))
    np.testing.assert_allclose(y, ref, rtol=0, atol=KERNEL_RTOL * np.abs(ref).max())
    np.testing.assert_array_equal(cascade.coef, b)  # snapped exactly to the last target


def test_cascade_rejects_a_change_of_section_count():
    cascade = BiquadCascade(np.tile(biquad.IDENTITY, (2, 1)), 1)
    with pytest.raises(ValueError, match="number of sections"):
        cascade.set(np.tile(biquad.IDENTITY, (3, 1)), 10)


# ----------------------------------------------------------------------- designs

PEAK_CASES = [(100.0, 12.0, 0.7), (1000.0, -12.0, 2.0), (3000.0, 6.0, 8.0),
              (5000.0, -24.0, 0.5), (440.0, 30.0, 1.0)]


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("freq,gain,q", PEAK_CASES)
def test_peak_gain_at_centre(fs, freq, gain, q):
    """PeakFilter: exactly gain_db at the centre, in the design and through the processor."""
    f = PeakFilter(frequency_hz=freq, gain_db=gain, q=q)
    assert db(design_response(f.design(fs), [freq], fs)[0]) == pytest.approx(gain, abs=SPEC_DB)
    assert measured_gain_db(f, freq, fs) == pytest.approx(gain, abs=SPEC_DB)
    # Far from the centre the bell is flat (0 dB) again.
    far = design_response(f.design(fs), [freq / 64], fs)[0]
    assert abs(db(far)) < 0.1


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("freq,gain,q", PEAK_CASES)
def test_peak_matches_analog_prototype(fs, freq, gain, q):
    """PeakFilter == bilinear transform (prewarped at the centre) of the analog bell
    H(s) = (s^2 + s A/Q + 1) / (s^2 + s/(A Q) + 1), A = 10^(gain/40)."""
    a = 10 ** (gain / 40)
    b_ref, a_ref = analog_bilinear([1, a / q, 1], [1, 1 / (a * q), 1], freq, fs)
    freqs = np.geomspace(10, 0.48 * fs, 200)
    got = db(design_response(PeakFilter(frequency_hz=freq, gain_db=gain, q=q).design(fs),
                             freqs, fs))
    np.testing.assert_allclose(got, db(ba_response(b_ref, a_ref, freqs, fs)), atol=SAME_DESIGN_DB)


SHELF_GAINS = [-12.0, -6.0, 6.0, 12.0, 24.0]


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("gain", SHELF_GAINS)
@pytest.mark.parametrize("q", [0.5, 0.7071])
def test_low_shelf_spec(fs, gain, q):
    """LowShelf: the full gain far below (DC, and 1/16 of the shelf frequency), half
    the gain in dB at the shelf frequency, 0 dB far above."""
    f0 = 300.0
    f = LowShelf(frequency_hz=f0, gain_db=gain, q=q)
    h = design_response(f.design(fs), [0.0, f0 / 16, f0, 16 * f0], fs)
    assert db(h[0]) == pytest.approx(gain, abs=PLATEAU_DB)
    assert db(h[1]) == pytest.approx(gain, abs=PLATEAU_DB)
    assert db(h[2]) == pytest.approx(gain / 2, abs=SPEC_DB)
    assert db(h[3]) == pytest.approx(0.0, abs=PLATEAU_DB)
    assert measured_gain_db(f, f0 / 16, fs, seconds=2.0, settle=1.0) == pytest.approx(
        gain, abs=PLATEAU_DB)
    assert measured_gain_db(f, f0, fs) == pytest.approx(gain / 2, abs=SPEC_DB)


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("gain", SHELF_GAINS)
@pytest.mark.parametrize("q", [0.5, 0.7071])
def test_high_shelf_spec(fs, gain, q):
    """HighShelf: 0 dB far below, half the gain at the shelf frequency, the full
    gain far above (0.45 fs and Nyquist)."""
    f0 = fs / 16
    f = HighShelf(frequency_hz=f0, gain_db=gain, q=q)
    h = design_response(f.design(fs), [f0 / 16, f0, 0.45 * fs, 0.5 * fs], fs)
    assert db(h[0]) == pytest.approx(0.0, abs=PLATEAU_DB)
    assert db(h[1]) == pytest.approx(gain / 2, abs=SPEC_DB)
    assert db(h[2]) == pytest.approx(gain, abs=PLATEAU_DB)
    assert db(h[3]) == pytest.approx(gain, abs=PLATEAU_DB)
    assert measured_gain_db(f, 0.45 * fs, fs) == pytest.approx(gain, abs=PLATEAU_DB)
    assert measured_gain_db(f, f0, fs) == pytest.approx(gain / 2, abs=SPEC_DB)


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("gain", SHELF_GAINS)
@pytest.mark.parametrize("kind", ["low", "high"])
def test_shelves_match_analog_prototype(fs, gain, kind):
    """Shelves == bilinear transform of the cookbook's analog shelves."""
    a, q, f0 = 10 ** (gain / 40), 0.7071, 1000.0
    k = math.sqrt(a) / q
    if kind == "low":
        num, den = [a, a * k, a * a], [a, k, 1]
        f = LowShelf(frequency_hz=f0, gain_db=gain, q=q)
    else:
        num, den = [a * a, a * k, a], [1, k, a]
        f = HighShelf(frequency_hz=f0, gain_db=gain, q=q)
    b_ref, a_ref = analog_bilinear(num, den, f0, fs)
    freqs = np.geomspace(10, 0.48 * fs, 200)
    np.testing.assert_allclose(db(design_response(f.design(fs), freqs, fs)),
                               db(ba_response(b_ref, a_ref, freqs, fs)), atol=SAME_DESIGN_DB)


PASS_KINDS = {"high": HighPass, "low": LowPass}


def pass_cutoffs(kind, fs):
    return [fs / 480, fs / 24, fs / 6]


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("order", [2, 4, 6, 8])
@pytest.mark.parametrize("kind", ["high", "low"])
def test_pass_filters_are_butterworth(fs, order, kind):
    """High/LowPass: -3 dB at the cutoff (design and processor), and the same
    magnitude response as scipy.signal.butter(order, cutoff) everywhere."""
    for cutoff in pass_cutoffs(kind, fs):
        f = PASS_KINDS[kind](cutoff_hz=cutoff, order=order)
        coefs = f.design(fs)
        assert len(coefs) == order // 2
        assert db(design_response(coefs, [cutoff], fs)[0]) == pytest.approx(
            -3.0103, abs=CUTOFF_DB)
        assert measured_gain_db(f, cutoff, fs, seconds=1.5, settle=1.0) == pytest.approx(
            -3.0103, abs=CUTOFF_DB)
        ref = signal.butter(order, cutoff, btype=kind, fs=fs, output="sos")
        freqs = np.geomspace(10, 0.48 * fs, 300)
        _, h_ref = signal.sosfreqz(ref, worN=freqs, fs=fs)
        np.testing.assert_allclose(db(design_response(coefs, freqs, fs)), db(h_ref),
                                   atol=SAME_DESIGN_DB)


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("order", [2, 4, 6, 8])
@pytest.mark.parametrize("kind", ["high", "low"])
def test_pass_filter_slope(fs, order, kind):
    """Deep in the stop band a Butterworth filter falls 6.02 dB per octave per
    order: measured between 3 and 4 octaves from the cutoff, within 1 dB.  The
    cutoffs keep both points far below Nyquist, where the bilinear transform's
    frequency warping would steepen a low pass."""
    if kind == "high":
        cutoff = fs / 24
        f3, f4 = cutoff / 8, cutoff / 16
        f = HighPass(cutoff_hz=cutoff, order=order)
    else:
        cutoff = fs / 480
        f3, f4 = cutoff * 8, cutoff * 16
        f = LowPass(cutoff_hz=cutoff, order=order)
    h3, h4 = db(design_response(f.design(fs), [f3, f4], fs))
    assert h3 < -20 * order * math.log10(8) + 1.0  # well in the stop band
    assert h3 - h4 == pytest.approx(6.0206 * order, abs=1.0)


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("q", [0.5, 0.7071, 2.0, 10.0])
@pytest.mark.parametrize("kind", ["high", "low"])
def test_second_order_pass_gain_at_cutoff_is_q(fs, q, kind):
    """An RBJ 2nd-order high/low pass has |H| = Q exactly at the cutoff
    (so -3.01 dB for the Butterworth Q = 0.7071)."""
    f = PASS_KINDS[kind](cutoff_hz=1000.0, order=2, q=q)
    assert db(design_response(f.design(fs), [1000.0], fs)[0]) == pytest.approx(
        db(q), abs=SPEC_DB)


def scipy_q(freq, q, fs):
    """The Q scipy's iirpeak/iirnotch need for the same filter as an RBJ design.

    SciPy sets the -3 dB bandwidth to w0/Q_scipy (rad/sample) with
    tan(bw/2) = beta; RBJ's band pass and notch have beta = alpha = sin(w0)/(2 Q).
    So Q_scipy = w0 / (2 atan(sin(w0) / (2 Q))).
    """
    w0 = 2 * math.pi * freq / fs
    return w0 / (2 * math.atan(math.sin(w0) / (2 * q)))


BAND_CASES = [(200.0, 0.7071), (1000.0, 2.0), (4000.0, 10.0), (6000.0, 30.0)]


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("freq,q", BAND_CASES)
def test_band_pass(fs, freq, q):
    """BandPass: 0 dB at the centre (design and processor); same as scipy.signal.iirpeak."""
    f = BandPass(frequency_hz=freq, q=q)
    coefs = f.design(fs)
    assert db(design_response(coefs, [freq], fs)[0]) == pytest.approx(0.0, abs=SPEC_DB)
    assert measured_gain_db(f, freq, fs) == pytest.approx(0.0, abs=SPEC_DB)
    b_ref, a_ref = signal.iirpeak(freq, scipy_q(freq, q, fs), fs=fs)
    freqs = np.geomspace(10, 0.48 * fs, 200)
    np.testing.assert_allclose(db(design_response(coefs, freqs, fs)),
                               db(ba_response(b_ref, a_ref, freqs, fs)), atol=SAME_DESIGN_DB)


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("freq,q", BAND_CASES)
def test_notch(fs, freq, q):
    """Notch: deeper than -40 dB at the centre (design and processor), 0 dB far
    away; same as scipy.signal.iirnotch."""
    f = Notch(frequency_hz=freq, q=q)
    coefs = f.design(fs)
    assert db(design_response(coefs, [freq], fs)[0]) < -40
    assert measured_gain_db(f, freq, fs) < -40
    assert abs(db(design_response(coefs, [freq / 16], fs)[0])) < 0.1
    b_ref, a_ref = signal.iirnotch(freq, scipy_q(freq, q, fs), fs=fs)
    freqs = np.geomspace(10, 0.48 * fs, 200)
    freqs = freqs[np.abs(freqs - freq) > freq / (4 * q)]  # avoid the -inf at the centre
    np.testing.assert_allclose(db(design_response(coefs, freqs, fs)),
                               db(ba_response(b_ref, a_ref, freqs, fs)), atol=SAME_DESIGN_DB)


ALL_FILTERS = [
    PeakFilter(frequency_hz=150, gain_db=12, q=3),
    LowShelf(frequency_hz=120, gain_db=-9),
    HighShelf(frequency_hz=3000, gain_db=9),
    HighPass(cutoff_hz=80, order=8),
    LowPass(cutoff_hz=3000, order=6),
    BandPass(frequency_hz=700, q=4),
    Notch(frequency_hz=1000, q=10),
]


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("proc", ALL_FILTERS, ids=lambda p: type(p).__name__)
def test_processor_runs_its_design(fs, proc):
    """The processor's measured response (DTFT of its impulse response) equals
    its designed sections' response at every frequency."""
    proc.reset()
    freqs = np.geomspace(20, 0.48 * fs, 60)
    got = processor_response(proc, freqs, fs)
    np.testing.assert_allclose(got, design_response(proc.design(fs), freqs, fs), rtol=0,
                               atol=PROCESSOR_ABS)


def test_frequency_above_nyquist_is_clamped():
    """Frequencies at or above 0.49 fs are designed at 0.49 fs: stable, finite."""
    fs = 16000
    for f in (PeakFilter(frequency_hz=20000, gain_db=12), LowPass(cutoff_hz=24000, order=8),
              HighShelf(frequency_hz=12000, gain_db=6)):
        coefs = np.asarray(f.design(fs))
        same = type(f)(**{**f.params(), next(k for k in ("frequency_hz", "cutoff_hz")
                                             if k in f.parameters): 0.49 * fs})
        np.testing.assert_array_equal(coefs, np.asarray(same.design(fs)))
        poles = np.concatenate([np.roots([1, a1, a2]) for a1, a2 in coefs[:, 3:]])
        assert np.abs(poles).max() < 1
        y = f.process(tone(1000, fs, 0.2), fs)
        assert np.isfinite(y).all()


# ----------------------------------------------------------------------- smoothing

FS = 48000
RAMP = int(0.020 * FS)  #: smoothing_ms = 20 ms at 48 kHz


def change_mid_stream(proc, x, at, **change):
    """Process ``x`` with ``change`` applied (as parameter sets) at sample ``at``."""
    first = proc.process(x[:at], FS)
    for k, v in change.items():
        setattr(proc, k, v)
    return np.concatenate([first, proc.process(x[at:], FS)])


def worst_jump_ratio(y, at, steady=0.1):
    """Largest sample-to-sample step around the change, over the larger of the
    largest steps in the steady state before and after it."""
    s = int(steady * FS)
    jumps = np.abs(np.diff(y.astype(np.float64)))
    steady_max = max(jumps[at - s:at - RAMP].max(), jumps[-s:].max())
    return jumps[at - RAMP:at + 3 * RAMP].max() / steady_max


#: A smooth change may overshoot its end points' steepest step a little while
#: the IIR settles (measured <= 2 % here); 1.1x keeps a margin and still fails
#: for an unsmoothed change (see the control below: 1.3x to 1.5x).
JUMP_RATIO = 1.1

#: (signal Hz, initial gain, final gain) for a 1 kHz, Q 1 bell.
PEAK_CHANGES = [(250.0, 0.0, 24.0), (250.0, -12.0, 12.0), (250.0, 24.0, -30.0),
                (1000.0, 0.0, 12.0), (1000.0, 12.0, -12.0)]


def peak_change_output(sig_hz, g0, g1, smoothing_ms=None):
    x = tone(sig_hz, FS, 0.5, amplitude=0.5)
    at = int(0.2 * FS) + int(FS / sig_hz / 4)  # at a crest of the input
    f = PeakFilter(frequency_hz=1000, q=1.0, gain_db=g0)
    if smoothing_ms is not None:
        f.smoothing_ms = smoothing_ms
    return x, at, f, change_mid_stream(f, x, at, gain_db=g1)


@pytest.mark.parametrize("sig_hz,g0,g1", PEAK_CHANGES)
def test_peak_gain_change_is_smooth(sig_hz, g0, g1):
    """Moving PeakFilter.gain_db on a steady sine never steps further than the
    steady signal does (no click), and completes within smoothing_ms: the
    coefficients reach the new design after exactly 20 ms, and once the
    filter's own ring has died (10 ms) the output is that of the new filter."""
    x, at, f, y = peak_change_output(sig_hz, g0, g1)
    assert worst_jump_ratio(y, at) <= JUMP_RATIO
    np.testing.assert_array_equal(f._cascade.coef, np.asarray(f.design(FS)))
    steady = PeakFilter(frequency_hz=1000, q=1.0, gain_db=g1).process(x, FS)
    settled = at + RAMP + int(0.010 * FS)
    scale = np.abs(steady).max()
    np.testing.assert_allclose(y[settled:], steady[settled:], rtol=0, atol=1e-3 * scale)
    # ... and the change really is spread over the ramp: halfway through, the
    # output is neither the old nor the new filter's.
    old = PeakFilter(frequency_hz=1000, q=1.0, gain_db=g0).process(x, FS)
    mid = slice(at + RAMP // 2 - 20, at + RAMP // 2 + 20)
    assert np.abs(y[mid] - steady[mid]).max() > 0.05 * scale
    assert np.abs(y[mid] - old[mid]).max() > 0.05 * scale


def test_peak_coefficients_glide_for_exactly_the_smoothing_time():
    """The ramp lasts round(20 ms * fs) samples: one sample before its end the
    coefficients are not yet the target, at its end they are."""
    f = PeakFilter(frequency_hz=1000, gain_db=0.0)
    x = tone(1000, FS, 0.1)
    f.process(x[:100], FS)
    f.gain_db = 12.0
    f.process(x[100:100 + RAMP - 1], FS)
    target = np.asarray(f.design(FS))
    assert not np.array_equal(f._cascade.coef, target)
    f.process(x[100 + RAMP - 1:100 + RAMP], FS)
    np.testing.assert_array_equal(f._cascade.coef, target)


def test_unsmoothed_change_would_be_detected():
    """Control for the click criterion: the same change done in one sample
    (smoothing_ms = 0) does exceed JUMP_RATIO, so the criterion can fail."""
    _, at, _, y = peak_change_output(250.0, 0.0, 24.0, smoothing_ms=0.0)
    assert worst_jump_ratio(y, at) > JUMP_RATIO


# ----------------------------------------------------------------------- denormals

#: States below this (but not zero) are on their way into subnormal numbers.
SMALLEST_STATE = 1e-30


@pytest.mark.parametrize("proc", [
    PeakFilter(frequency_hz=31, gain_db=15, q=1.41),
    HighPass(cutoff_hz=20, order=8),
    LowPass(cutoff_hz=100, order=4),
    LowShelf(frequency_hz=60, gain_db=12),
], ids=lambda p: type(p).__name__)
def test_biquad_state_never_subnormal_in_silence(proc, rng):
    """After loud input then 30 s of silence the cascade's float64 state holds
    only exact zeros or values >= 1e-30 (never tiny or subnormal numbers, which
    are very slow on most CPUs), checked after every second."""
    fs = 48000
    proc.reset()
    proc.process((0.9 * rng.standard_normal((2, fs // 2))).astype(np.float32), fs)
    silence = np.zeros((2, fs), np.float32)
    for second in range(30):
        proc.process(silence, fs)
        s = np.abs(proc._cascade.state)
        tiny = s[(s > 0) & (s < SMALLEST_STATE)]
        assert tiny.size == 0, f"after {second + 1} s of silence: state values down to {tiny.min():g}"


#: Where the exact (float64, sosfilt) response of the silent tail has fallen
#: below this, the processor's output must be exactly zero: five decades under
#: the kernels' flush level (1e-20), room for the gains between sections.
DEAD_BELOW = 1e-25


@pytest.mark.parametrize("proc", [
    PeakFilter(frequency_hz=31, gain_db=15, q=1.41),
    Equalizer(gains_db=[6.0, -4.0, 3.0, 0.0, -6.0, 4.0, 5.0, -3.0, 2.0, 6.0]),
    HighPass(cutoff_hz=20, order=8),
    LowShelf(frequency_hz=60, gain_db=12),
], ids=lambda p: type(p).__name__)
def test_biquad_tail_dies_like_the_exact_filter(proc, rng):
    """A loud burst, then silence: the output follows the exact float64 response
    (sosfilt) and is exactly 0.0 once that response is negligible; flushing
    tiny states must not keep a slow resonance ringing near the flush level."""
    fs = 48000
    proc.reset()
    x = np.zeros(4 * fs, np.float32)
    x[:fs // 5] = np.clip(0.9 * rng.standard_normal(fs // 5), -1, 1)
    y = np.concatenate([proc.process(x[i:i + 480], fs) for i in range(0, len(x), 480)])
    ref = signal.sosfilt(to_sos(np.asarray(proc.design(fs))), x.astype(np.float64))
    np.testing.assert_allclose(y, ref, rtol=0, atol=KERNEL_RTOL * np.abs(ref).max())
    dead = np.flatnonzero(np.abs(ref) >= DEAD_BELOW)[-1] + 1
    assert dead < len(x) - fs // 2, "the test signal is too short for the filter's decay"
    assert np.all(y[dead:] == 0.0), (
        f"still {np.abs(y[dead:]).max():g} after the exact response fell below {DEAD_BELOW:g}")

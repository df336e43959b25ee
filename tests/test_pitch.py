"""PitchShift, FormantShift and PitchCorrection against independent judges.

Judges: ``librosa.pyin`` for f0 (run at 16 kHz with a 0.05-semitone grid, so
a reading is within 2.5 cents of the frequency pyin found), ``pystoi`` for
intelligibility after a round trip and for the timing of a small shift, and
an LPC fit (``librosa.lpc``) for the formants of a synthetic source-filter
vowel; the tracker's continuity rule against a plain-Python statement of it.

Tolerances: pitch 10 cents (the issue's); formants 8 % of the frequency
where they must stay or move (LPC on a 140 Hz vowel reads the input's
formants within 3 %); STOI see ``test_round_trip_intelligibility`` and
``test_small_shift_keeps_the_timing``.
"""

import math

import librosa
import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st
from pystoi import stoi
from scipy.signal import lfilter

from stagevox.dsp.kernels.psola import (FOLLOW_HOLD, FOLLOW_LONGER, FOLLOW_SHORTER,
                                        follow_period)
from stagevox.dsp.pitch import (C4_HZ, FormantShift, PitchCorrection, PitchShift,
                                psola_latency)

SR = 48000
SHIFTS = [-12, -7, -5, 4, 7, 12]


# ------------------------------------------------------------------ helpers

def harmonic(f0, seconds=1.2, sr=SR, top_hz=8000.0):
    """A sawtooth-like sum of harmonics of ``f0`` (1/k amplitudes, scattered phases)."""
    t = np.arange(int(seconds * sr)) / sr
    y = np.zeros_like(t)
    k = 1
    while k * f0 < top_hz:
        y += np.sin(2 * np.pi * k * f0 * t + 0.3 * k * k) / k
        k += 1
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def vowel(f0=140.0, formants=((700, 80), (1220, 90), (2600, 120)), seconds=1.0, sr=SR):
    """A source-filter /a/: a pulse train through a glottal low-pass and formant resonators."""
    n = int(seconds * sr)
    x = np.zeros(n)
    period = sr / f0
    x[np.round(np.arange(int(n / period)) * period).astype(int)] = 1.0
    x = lfilter([1.0], [1.0, -0.95], x)
    for f, bw in formants:
        r = math.exp(-math.pi * bw / sr)
        x = lfilter([1.0 - r], [1.0, -2.0 * r * math.cos(2 * math.pi * f / sr), r * r], x)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def pyin_f0(y, fmin, fmax, sr=SR):
    """pyin's f0 track and voicing flags at 16 kHz, 10 ms hop."""
    y16 = soxr.resample(np.asarray(y, np.float32), sr, 16000)
    f0, voiced, _ = librosa.pyin(y16, fmin=max(fmin, 32.0), fmax=fmax, sr=16000, frame_length=1024,
                                 hop_length=160, resolution=0.05)
    return f0, voiced


def median_f0(y, fmin, fmax, sr=SR):
    f0, voiced = pyin_f0(y, fmin, fmax, sr)
    assert voiced.mean() > 0.3, f"pyin found too little voicing ({voiced.mean():.2f})"
    return float(np.nanmedian(f0[voiced]))


def cents(a, b):
    return 1200.0 * math.log2(a / b)


def lpc_formants(y, sr=SR, order=12):
    """The first two formant frequencies (Hz) of an LPC fit at 16 kHz."""
    y16 = soxr.resample(np.asarray(y, np.float32), sr, 16000).astype(np.float64)
    y16 = np.append(y16[0], y16[1:] - 0.7 * y16[:-1])  # pre-emphasis
    a = librosa.lpc(y16 * np.hanning(len(y16)), order=order)
    poles = [(math.atan2(r.imag, r.real) * 16000 / (2 * math.pi),
              -math.log(abs(r)) * 16000 / math.pi) for r in np.roots(a) if r.imag > 0]
    found = sorted(f for f, bw in poles if f > 150 and bw < 600)
    assert len(found) >= 2, found
    return np.array(found[:2])


def run(fx, x, sizes, rate=SR):
    """Process ``x`` in blocks of ``sizes`` (cycled)."""
    out, pos, i = [], 0, 0
    while pos < x.shape[-1]:
        s = sizes[i % len(sizes)]
        out.append(fx.process(x[..., pos:pos + s], rate))
        pos += s
        i += 1
    return np.concatenate(out, axis=-1)


@pytest.fixture(scope="module")
def speech_excerpt(speech):
    """4 s of the speech fixture (a male voice, f0 about 80-140 Hz)."""
    return speech[2 * SR:6 * SR].copy()


@pytest.fixture(scope="module")
def speech_f0(speech_excerpt):
    return median_f0(speech_excerpt, 60.0, 250.0)


# ------------------------------------------------------------------ PitchShift: basics

def test_latency_is_at_most_30_ms_and_scales_with_the_rate():
    assert PitchShift().latency == psola_latency(48000) == 1344
    assert PitchShift().latency_at(48000) <= 0.030 * 48000
    for rate in (8000, 16000, 44100, 48000):
        assert PitchShift().latency_at(rate) == round(0.028 * rate)
        assert PitchCorrection().latency_at(rate) == round(0.028 * rate)
        assert FormantShift().latency_at(rate) == round(0.028 * rate)


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
@pytest.mark.parametrize("cls", [PitchShift, FormantShift])
def test_zero_shift_is_the_input_delayed_by_latency(cls, rate, speech):
    x = soxr.resample(speech[:3 * SR], SR, rate).astype(np.float32)
    stereo = np.stack([x, np.roll(x, 333)])
    fx = cls()
    y = run(fx, stereo, [480, 1, 7, 3000], rate)
    lat = fx.latency
    assert lat == cls().latency_at(rate)
    np.testing.assert_allclose(y[:, lat:], stereo[:, :-lat], rtol=0, atol=1e-4)
    assert np.max(np.abs(y[:, :lat])) == 0.0


def test_shift_back_to_zero_returns_to_the_exact_delay(speech):
    x = speech[:2 * SR]
    fx = PitchShift(semitones=5.0)
    first = fx.process(x[:SR // 2], SR)
    fx.semitones = 0.0
    rest = fx.process(x[SR // 2:], SR)
    y = np.concatenate([first, rest])
    lat = fx.latency
    # after the 20 ms glide and the cross-fade, exactly the delayed input
    settle = SR // 2 + SR // 10
    np.testing.assert_allclose(y[settle:], x[settle - lat:-lat], rtol=0, atol=1e-4)
    assert np.max(np.abs(y[lat:SR // 2] - x[:SR // 2 - lat])) > 0.05  # it did shift


# ------------------------------------------------------------------ PitchShift: accuracy

@pytest.mark.parametrize("f0", [150.0, 250.0])
def test_pitch_of_harmonic_tones(f0):
    x = harmonic(f0)
    errors = {}
    for s in SHIFTS:
        fx = PitchShift(semitones=s)
        y = fx.process(x, SR)[fx.latency + SR // 10:]
        target = f0 * 2.0 ** (s / 12.0)
        errors[s] = cents(median_f0(y, target / 1.3, target * 1.3), target)
    assert all(abs(e) <= 10.0 for e in errors.values()), errors


def test_pitch_of_speech(speech_excerpt, speech_f0):
    """Median f0 of the output's voiced frames vs the input's, for every shift."""
    errors = {}
    for s in SHIFTS:
        r = 2.0 ** (s / 12.0)
        fx = PitchShift(semitones=s)
        y = fx.process(speech_excerpt, SR)[fx.latency:]
        errors[s] = cents(median_f0(y, 60.0 * r, 250.0 * r), speech_f0 * r)
    assert all(abs(e) <= 10.0 for e in errors.values()), errors


def test_fractional_shift_and_glide_while_streaming():
    """A change of 2.5 semitones mid-stream arrives, and causes no click."""
    x = harmonic(200.0, seconds=2.0)
    fx = PitchShift(semitones=0.0)
    y = []
    for start in range(0, x.size, 480):
        if start == SR:
            fx.semitones = 2.5
        y.append(fx.process(x[start:start + 480], SR))
    y = np.concatenate(y)
    lat = fx.latency
    after = y[SR + lat + SR // 5:]
    assert abs(cents(median_f0(after, 180.0, 300.0), 200.0 * 2 ** (2.5 / 12))) <= 10.0
    # no click: the largest step between samples around the change is no
    # larger than in the steady parts before and after it
    d = np.abs(np.diff(y))
    change = d[SR + lat - SR // 20:SR + lat + SR // 10].max()
    steady = max(d[lat + SR // 10:SR].max(), d[SR + lat + SR // 5:].max())
    assert change <= 1.2 * steady


def test_round_trip_intelligibility(speech):
    """+k then -k semitones of the whole speech fixture, aligned by the two latencies.

    The issue asks for STOI >= 0.9.  Measured here: 0.916 (k = 4) and 0.909
    (k = 7), and 0.980 for k = 0.3 (before the timing and tracking work of
    issue 3: 0.891, 0.866 and 0.935); the same speech after 101, 2999 or
    7777 samples of silence scores 0.915-0.921 and 0.902-0.913.  Rubber Band's
    real-time engine scores 0.79 and 0.78 on the same round trip (see
    ``bench/bench_pitch.py``).
    """
    scores = {}
    for k in (4, 7):
        up = PitchShift(semitones=k)
        down = PitchShift(semitones=-k)
        y = down.process(up.process(speech, SR), SR)
        lat = up.latency + down.latency
        ref = soxr.resample(speech[:-lat], SR, 16000)
        out = soxr.resample(y[lat:], SR, 16000)
        scores[k] = stoi(ref, out, 16000)
    assert scores[4] >= 0.9 and scores[7] >= 0.9, scores


def test_small_shift_keeps_the_timing(speech):
    """+0.05 semitones barely changes the speech, so it must stay in time with it.

    STOI against the input delayed by ``latency`` falls fast with timing
    errors (the input itself, 2 ms late, scores 0.989 and 4 ms late 0.962).
    Measured: 0.993; when grains followed YIN's period and each voiced
    stretch began wherever its first mark fell, the output drifted by up to
    +-5 ms and scored 0.968.
    """
    fx = PitchShift(semitones=0.05)
    y = fx.process(speech, SR)
    lat = fx.latency
    score = stoi(soxr.resample(speech[:-lat], SR, 16000), soxr.resample(y[lat:], SR, 16000), 16000)
    assert score >= 0.985, score


@pytest.mark.parametrize("rate", [16000, 48000])
def test_resampled_grains_come_no_earlier_than_latency(rate):
    """An impulse read faster or slower (formants moved) still arrives after the latency.

    The protocol tests check one setting each; grains read at speed rho
    reach h |rho - 1| beyond their centre, in both directions of rho.
    """
    shifters = [FormantShift(amount=a) for a in (-1.0, -0.5, 0.5, 1.0)]
    shifters += [PitchShift(semitones=s, preserve_formants=False) for s in (-12.0, -5.0, 5.0, 12.0)]
    at = 300
    x = np.zeros(8000, np.float32)
    x[at] = 0.5
    for fx in shifters:
        y = fx.process(x, rate)
        lat = fx.latency
        assert np.max(np.abs(y[:at + lat])) == 0.0, fx
        assert np.max(np.abs(y[at + lat:])) > 0.05, fx


# ------------------------------------------------------------------ the tracker's continuity

def follow_reference(period, value, cmnd, previous, tau_min, tau_max):
    """``follow_period`` as its docstring states it, by plain Python."""
    if previous <= 0.0 or (period > 0.0 and 0.8 * previous <= period <= 1.25 * previous):
        return period, value
    lo = max(math.ceil(0.8 * previous), tau_min, 2)
    hi = min(math.floor(1.25 * previous), tau_max - 1)
    if lo > hi:
        return period, value
    tau = lo + int(np.argmin(cmnd[lo:hi + 1]))
    dip = cmnd[tau]
    if dip >= FOLLOW_HOLD:
        return period, value
    if period > 0.0 and period < previous and value <= dip + FOLLOW_SHORTER:
        return period, value
    if period > 0.0 and period > previous and value < dip - FOLLOW_LONGER:
        return period, value
    a, b, c = cmnd[tau - 1], cmnd[tau], cmnd[tau + 1]
    shift = float(np.clip(0.5 * (a - c) / (a - 2 * b + c), -1, 1)) if a - 2 * b + c > 0 else 0.0
    return tau + shift, dip


@settings(max_examples=300, deadline=None)
@given(data=st.data(), tau_max=st.integers(20, 300), previous=st.floats(0.0, 320.0),
       voiced=st.booleans())
def test_follow_period_matches_its_statement(data, tau_max, previous, voiced):
    tau_min = data.draw(st.integers(2, tau_max // 2))
    cmnd = np.array(data.draw(st.lists(st.floats(0.0, 1.5), min_size=tau_max + 2,
                                       max_size=tau_max + 2)))
    if voiced:
        tau = data.draw(st.integers(tau_min, tau_max - 1))
        period, value = tau + data.draw(st.floats(-0.5, 0.5)), float(cmnd[tau])
    else:
        period, value = 0.0, float(cmnd[tau_min:tau_max + 1].min())
    result = np.array([period, value])
    follow_period(result, cmnd, previous, tau_min, tau_max, np.empty(2))
    expected = follow_reference(period, value, cmnd, previous, tau_min, tau_max)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-12)


def test_follow_period_keeps_the_track_through_an_octave_slip():
    """A dip at half the period under YIN's threshold, a deeper one at the period."""
    cmnd = np.ones(202)
    cmnd[49:52] = [0.3, 0.2, 0.3]     # YIN's first dip under 0.25: lag 50
    cmnd[99:102] = [0.2, 0.05, 0.2]   # the track's period: lag 100
    result = np.array([50.0, 0.2])
    follow_period(result, cmnd, 100.0, 10, 200, np.empty(2))
    np.testing.assert_allclose(result, [100.0, 0.05])
    result = np.array([0.0, 0.9])     # YIN gave up: the track goes on while its dip is clear
    follow_period(result, cmnd, 101.0, 10, 200, np.empty(2))
    np.testing.assert_allclose(result, [100.0, 0.05])
    result = np.array([50.0, 0.2])    # no track before: YIN's reading stands
    follow_period(result, cmnd, 0.0, 10, 200, np.empty(2))
    np.testing.assert_allclose(result, [50.0, 0.2])


# ------------------------------------------------------------------ formants

@pytest.mark.parametrize("s", [-12, -5, 5])
def test_formants_stay_with_preserve_and_move_without(s):
    x = vowel()
    ref = lpc_formants(x[SR // 10:SR * 8 // 10])
    r = 2.0 ** (s / 12.0)
    for preserve, expected in ((True, ref), (False, ref * r)):
        fx = PitchShift(semitones=s, preserve_formants=preserve)
        y = fx.process(x, SR)[fx.latency:]
        got = lpc_formants(y[SR // 10:SR * 8 // 10])
        np.testing.assert_allclose(got, expected, rtol=0.08,
                                   err_msg=f"preserve={preserve}, {s} semitones")


@pytest.mark.parametrize("amount", [-1.0, -0.5, 0.5, 1.0])
def test_formant_shift_moves_the_envelope_not_the_pitch(amount):
    x = vowel()
    ref = lpc_formants(x[SR // 10:SR * 8 // 10])
    fx = FormantShift(amount=amount)
    y = fx.process(x, SR)[fx.latency:]
    got = lpc_formants(y[SR // 10:SR * 8 // 10])
    np.testing.assert_allclose(got, ref * 2.0 ** (0.5 * amount), rtol=0.08)
    assert abs(cents(median_f0(y[SR // 10:], 100.0, 200.0), 140.0)) <= 10.0


def test_formant_shift_keeps_the_pitch_of_speech(speech_excerpt, speech_f0):
    for amount in (-0.8, 0.8):
        fx = FormantShift(amount=amount)
        y = fx.process(speech_excerpt, SR)[fx.latency:]
        assert abs(cents(median_f0(y, 60.0, 250.0), speech_f0)) <= 10.0, amount


# ------------------------------------------------------------------ pitch correction

def note_hz(name_semitones, octave_shift=0):
    return C4_HZ * 2.0 ** (name_semitones / 12.0 + octave_shift)


@pytest.mark.parametrize("detune", [40.0, -35.0])
def test_correction_pulls_a_detuned_tone_to_the_note(detune):
    a3 = note_hz(9, -1)  # A3, in C major
    x = harmonic(a3 * 2.0 ** (detune / 1200.0), seconds=1.2)
    fx = PitchCorrection(scale="major", tonic="C", strength=1.0, speed_ms=20.0)
    y = fx.process(x, SR)[fx.latency + SR // 5:]
    assert abs(cents(median_f0(y, a3 / 1.2, a3 * 1.2), a3)) <= 10.0


def test_correction_leaves_a_tone_on_a_note_unchanged():
    e3 = note_hz(4, -1)
    x = harmonic(e3, seconds=1.2)
    fx = PitchCorrection(scale="major", tonic="C")
    y = fx.process(x, SR)[fx.latency + SR // 5:]
    assert abs(cents(median_f0(y, e3 / 1.2, e3 * 1.2), e3)) <= 5.0


def test_correction_follows_the_scale_and_the_strength():
    """A tone 370 cents above C3 goes to the scale's nearest note."""
    x = harmonic(note_hz(3.7, -1), seconds=1.2)
    lo, hi = note_hz(1, -1), note_hz(7, -1)

    def corrected(**params):
        fx = PitchCorrection(speed_ms=10.0, **params)
        return median_f0(fx.process(x, SR)[fx.latency + SR // 5:], lo, hi)

    expected = {("major", "C"): 4.0,     # E (30 cents up)
                ("minor", "C"): 3.0,     # Eb (70 down; F is 130 up)
                ("japanese", "C"): 5.0,  # F (C Db F G Ab: 130 up; Db is 270 down)
                ("major", "E"): 4.0}     # E, the tonic
    for (scale, tonic), note in expected.items():
        got = corrected(scale=scale, tonic=tonic)
        assert abs(cents(got, note_hz(note, -1))) <= 10.0, (scale, tonic, got)
    half = corrected(scale="major", tonic="C", strength=0.5)
    assert abs(cents(half, note_hz(3.85, -1))) <= 10.0


def test_correction_of_a_glide_lands_on_notes():
    """A slow glide from D3 to F3 comes out as steps on D, E, F (C major)."""
    sr = SR
    t = np.arange(int(1.5 * sr)) / sr
    f = note_hz(2, -1) * 2.0 ** (3.0 / 12.0 * t / t[-1])
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 30)).astype(np.float32) * 0.1
    fx = PitchCorrection(scale="major", tonic="C", speed_ms=5.0)
    y = fx.process(x, sr)[fx.latency:]
    f0, voiced = pyin_f0(y, 130.0, 200.0)
    got = f0[voiced]
    notes = np.array([note_hz(k, -1) for k in (2, 4, 5)])
    off = np.min(np.abs(1200.0 * np.log2(got[:, None] / notes[None, :])), axis=1)
    # most frames sit on a note; without correction a glide would be evenly spread
    assert np.mean(off <= 15.0) >= 0.75, np.percentile(off, [50, 75, 90])

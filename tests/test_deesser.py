"""DeEsser (dsp.deesser): band reduction, what it leaves alone, timing.

References and tolerances:
* a slow per-sample Python version of the documented detector and gain,
  on the band computed by ``scipy.signal.lfilter`` with the same RBJ
  band-pass: 1e-6 (float32 output);
* steady tones: the 7 kHz burst's reduction against ``range_db`` (0.1 dB
  when centred on it) and against the bell's formula
  ``|1 + (g - 1) H(f)|`` off centre (0.1 dB); a 500 Hz tone within 0.5 dB.
"""

import math

import numpy as np
import pytest
from scipy import signal

from effects_helpers import assert_block_invariant_through_change
from signals import tone, tone_amplitude
from stagevox.dsp import DeEsser, biquad
from stagevox.dsp.deesser import ATTACK_MS, BAND_Q, DETECTOR_MS, RELEASE_MS

FS = 48000


def coef(ms, fs):
    return math.exp(-1.0 / (ms * 1e-3 * fs))


def reference_de_esser(x, fs, frequency_hz, threshold_db, range_db):
    """The documented algorithm, one sample at a time (float64)."""
    x = np.atleast_2d(np.asarray(x, np.float64))
    bp = biquad.band_pass(frequency_hz, BAND_Q, fs)
    band = signal.lfilter(bp[:3], [1.0, bp[3], bp[4]], x, axis=1)
    det, att, rel = coef(DETECTOR_MS, fs), coef(ATTACK_MS, fs), coef(RELEASE_MS, fs)
    ms, red = 0.0, 0.0
    y = np.empty_like(x)
    gains = np.empty(x.shape[1])
    for n in range(x.shape[1]):
        ms = det * ms + (1 - det) * np.max(band[:, n] ** 2)
        level = 10 * math.log10(2 * ms) if ms > 1e-20 else -math.inf
        target = min(max(level - threshold_db, 0.0), range_db)
        a = att if target > red else rel
        red = a * red + (1 - a) * target
        gains[n] = 10 ** (-red / 20)
        y[:, n] = x[:, n] + (gains[n] - 1) * band[:, n]
    return y, gains


def burst_signal(fs, level_7k=0.3, level_500=0.3, seconds=1.5):
    """500 Hz throughout; a 7 kHz burst from 0.5 s to 1.0 s (5 ms fades)."""
    x = tone(500.0, fs, seconds, level_500).astype(np.float64)
    b = tone(7000.0, fs, seconds, level_7k).astype(np.float64)
    env = np.zeros(x.size)
    a, e, f = int(0.5 * fs), int(1.0 * fs), int(0.005 * fs)
    env[a:e] = 1.0
    env[a:a + f] = np.linspace(0, 1, f)
    env[e - f:e] = np.linspace(1, 0, f)
    return (x + env * b).astype(np.float32)


@pytest.mark.parametrize("fs", [48000, 16000])
def test_matches_reference(fs):
    x = burst_signal(fs)
    p = dict(frequency_hz=5000.0, threshold_db=-35.0, range_db=9.0)
    y = DeEsser(**p).process(x, fs)
    ref, _ = reference_de_esser(x, fs, **p)
    np.testing.assert_allclose(y, ref[0], rtol=0, atol=1e-6)


def test_stereo_channels_share_the_gain_of_the_louder(speech):
    x = burst_signal(FS)
    quiet = (0.05 * tone(7000.0, FS, 1.5, 1.0) + 0.1 * tone(300.0, FS, 1.5, 1.0)).astype(np.float32)
    stereo = np.stack([x, quiet])
    p = dict(frequency_hz=7000.0, threshold_db=-30.0, range_db=12.0)
    y = DeEsser(**p).process(stereo, FS)
    ref, gains = reference_de_esser(stereo, FS, **p)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6)
    steady = slice(int(0.7 * FS), int(0.95 * FS))
    # the quiet channel's 7 kHz comes down with the loud channel's
    assert 20 * np.log10(tone_amplitude(y[1, steady], 7000.0, FS) / 0.05) == pytest.approx(
        -12.0, abs=0.1)
    assert gains[steady].max() == pytest.approx(10 ** (-12 / 20), rel=1e-3)


def test_burst_at_the_centre_comes_down_by_range_db():
    """7 kHz burst at -10.5 dBFS, band centred on it, threshold -30 dB: the
    excess (19.5 dB) exceeds the range, so the burst comes down by
    ``range_db``; the 500 Hz tone stays within 0.5 dB (in fact 0.01 dB)."""
    x = burst_signal(FS)
    y = DeEsser(frequency_hz=7000.0, threshold_db=-30.0, range_db=12.0).process(x, FS)
    steady = slice(int(0.7 * FS), int(0.95 * FS))
    ratio = tone_amplitude(y[steady], 7000.0, FS) / tone_amplitude(x[steady], 7000.0, FS)
    assert 20 * np.log10(ratio) == pytest.approx(-12.0, abs=0.1)
    for part in (steady, slice(0, int(0.45 * FS)), slice(int(1.2 * FS), None)):
        kept = tone_amplitude(y[part], 500.0, FS) / tone_amplitude(x[part], 500.0, FS)
        assert abs(20 * np.log10(kept)) < 0.5
        assert abs(20 * np.log10(kept)) < 0.02


@pytest.mark.parametrize("range_db", [3.0, 6.0, 20.0])
def test_burst_off_centre_follows_the_bell(range_db):
    """Default band (6 kHz), a 7 kHz burst at -10.5 dBFS, threshold -30 dB:
    the 7 kHz tone changes by ``|1 + (g - 1) H(7 kHz)|``, ``g`` the gain of
    the reduction (the excess of the burst's level in the band, ``0.3
    |H(7 kHz)|``, over the threshold, at most ``range_db``)."""
    x = burst_signal(FS)
    y = DeEsser(threshold_db=-30.0, range_db=range_db).process(x, FS)
    steady = slice(int(0.7 * FS), int(0.95 * FS))
    bp = biquad.band_pass(6000.0, BAND_Q, FS)
    _, h = signal.freqz(bp[:3], [1.0, bp[3], bp[4]], worN=[7000.0], fs=FS)
    level = 20 * np.log10(0.3 * abs(h[0]))
    reduction = min(level + 30.0, range_db)
    g = 10 ** (-reduction / 20)
    expected = 20 * np.log10(abs(1 + (g - 1) * h[0]))
    ratio = tone_amplitude(y[steady], 7000.0, FS) / tone_amplitude(x[steady], 7000.0, FS)
    assert 20 * np.log10(ratio) == pytest.approx(expected, abs=0.1)
    # off centre the bell cannot cut deeper than |1 - H(7 kHz)| (-10.7 dB)
    assert 20 * np.log10(ratio) < -0.5 * min(range_db, 10.7)


def test_reduction_is_the_excess_over_the_threshold_up_to_the_range():
    """Steady 7 kHz tones at several levels, band centred: reduction =
    min(level - threshold, range), 0 below the threshold."""
    for level_db in (-40.0, -25.0, -18.0, -6.0):
        x = tone(7000.0, FS, 0.6, 10 ** (level_db / 20))
        y = DeEsser(frequency_hz=7000.0, threshold_db=-30.0, range_db=15.0).process(x, FS)
        steady = slice(int(0.3 * FS), None)
        got = 20 * np.log10(tone_amplitude(y[steady], 7000.0, FS) /
                            tone_amplitude(x[steady], 7000.0, FS))
        assert got == pytest.approx(-min(max(level_db + 30.0, 0.0), 15.0), abs=0.1)


def test_below_the_threshold_the_output_is_the_input_exactly(speech):
    x = np.ascontiguousarray(speech[FS:3 * FS] * 0.01, dtype=np.float32)   # about -50 dBFS
    np.testing.assert_array_equal(DeEsser(threshold_db=-20.0).process(x, FS), x)
    y = tone(500.0, FS, 1.0, 0.5)
    np.testing.assert_array_equal(DeEsser(threshold_db=-20.0).process(y, FS), y)


def test_reduces_sibilance_in_speech(speech):
    """On the bundled speech the de-esser lowers the 5-9 kHz energy and
    leaves the band below 2 kHz within 0.5 dB."""
    x = np.ascontiguousarray(speech[:8 * FS] / np.abs(speech).max() * 0.9, dtype=np.float32)
    y = DeEsser(threshold_db=-40.0, range_db=12.0).process(x, FS)

    def band_db(s, lo, hi):
        sos = signal.butter(6, [lo, hi], "bandpass", fs=FS, output="sos")
        return 10 * np.log10(np.mean(signal.sosfilt(sos, s.astype(np.float64)) ** 2))

    assert band_db(y, 5000, 9000) < band_db(x, 5000, 9000) - 2.0
    assert abs(band_db(y, 100, 2000) - band_db(x, 100, 2000)) < 0.5


@pytest.mark.parametrize("layout", ["mono", "stereo"])
def test_block_size_invariance_through_parameter_changes(layout):
    fs = 16000
    x = np.stack([burst_signal(fs), burst_signal(fs, 0.1, 0.5)])
    if layout == "mono":
        x = x[0].copy()
    make = lambda: DeEsser(frequency_hz=5000.0, threshold_db=-40.0)  # noqa: E731
    change = dict(frequency_hz=3000.0, threshold_db=-25.0, range_db=20.0)
    at = int(0.6 * fs)
    assert_block_invariant_through_change(make, x, fs, at, change)

"""Spatializer and Panner: physical cues, clicks, streaming, kernels against references.

The quality criteria of the spatial audio issue, measured on the bundled
KEMAR set at 48 kHz:

* ITD by full-band cross-correlation of white noise: 0.55 to 0.80 ms at
  +-90 degrees (the near ear leads), under 0.05 ms at 0 degrees;
* ILD: at +90 the left ear at least 6 dB louder in every third-octave band
  from 2 to 8 kHz; at 0 under 1.5 dB (broadband and 2-8 kHz);
* front/back: 30 and 150 degrees have similar interaural cues but spectra
  that differ;
* distance: -6 dB (+-0.5) per doubling beyond the reference distance;
* clicks: a 1 kHz tone whose azimuth moves 10 degrees every 10 ms frame has
  at least 60 dB less energy above 4 kHz than below; switching filters at
  once instead fails that.
"""

import math

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from stagevox import cli, dsp, presets
from stagevox.dsp import Hrtf, Panner, Spatializer
from stagevox.dsp.kernels import spatial as kernels

from spatial_helpers import (band_levels_db, high_band_re_tone_db, itd_ms, lagrange3, rms_db,
                             white_noise)

FS = 48000
FRAME = 480


@pytest.fixture(scope="module")
def noise():
    return white_noise(1.0, FS)


def spatialize(x, rate=FS, **params):
    return Spatializer(**params).process(x, rate)


# ----------------------------------------------------------------- interaural cues

@pytest.mark.parametrize("azimuth,low,high", [(90.0, 0.55, 0.80), (-90.0, -0.80, -0.55),
                                              (0.0, -0.05, 0.05)])
def test_itd_by_cross_correlation(noise, azimuth, low, high):
    itd = itd_ms(spatialize(noise, azimuth_deg=azimuth), FS)
    assert low <= itd <= high, itd


def test_itd_is_mirrored(noise):
    left = itd_ms(spatialize(noise, azimuth_deg=90.0), FS)
    right = itd_ms(spatialize(noise, azimuth_deg=-90.0), FS)
    assert left == pytest.approx(-right, abs=0.005)


def test_ild_left_ear_louder_at_plus_90_and_balanced_ahead(noise):
    centres = [2000.0 * 2 ** (k / 3) for k in range(7)]  # 2 to 8 kHz
    side = band_levels_db(spatialize(noise, azimuth_deg=90.0), FS, centres)
    assert np.all(side[0] - side[1] >= 6.0), side[0] - side[1]
    front = spatialize(noise, azimuth_deg=0.0)
    assert abs(np.diff(rms_db(front))[0]) < 1.5
    bands = band_levels_db(front, FS, centres)
    assert np.all(np.abs(bands[0] - bands[1]) < 1.5)
    # and the same at -90, mirrored
    other = band_levels_db(spatialize(noise, azimuth_deg=-90.0), FS, centres)
    assert np.all(other[1] - other[0] >= 6.0)


def test_front_and_back_differ_in_spectrum_not_in_interaural_cues(noise):
    """30 and 150 degrees lie on one cone of confusion: their ITDs are close,
    their spectra are not (pinna cues), so they are not simply mirrored."""
    front = spatialize(noise, azimuth_deg=30.0)
    back = spatialize(noise, azimuth_deg=150.0)
    assert abs(itd_ms(front, FS) - itd_ms(back, FS)) < 0.1
    centres = [1000.0 * 2 ** (k / 3) for k in range(13)]  # 1 to 16 kHz
    diff = band_levels_db(front, FS, centres) - band_levels_db(back, FS, centres)
    assert np.max(np.abs(diff[0])) > 6.0 and np.max(np.abs(diff[1])) > 3.0
    # the overall level difference is not what tells them apart
    spread = diff[0] - np.median(diff[0])
    assert np.max(np.abs(spread)) > 6.0


def test_elevation_changes_the_spectrum(noise):
    centres = [4000.0 * 2 ** (k / 3) for k in range(10)]
    up = band_levels_db(spatialize(noise, elevation_deg=60.0), FS, centres)
    level = band_levels_db(spatialize(noise, elevation_deg=0.0), FS, centres)
    assert np.max(np.abs(up[0] - level[0])) > 4.0


# ----------------------------------------------------------------- distance

def test_six_db_per_doubling_of_distance_beyond_the_reference(noise):
    levels = {d: rms_db(spatialize(noise, azimuth_deg=40.0, distance_m=d,
                                   reference_distance_m=1.0)).mean()
              for d in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)}
    for d in (1.0, 2.0, 4.0, 8.0):
        assert levels[d] - levels[2 * d] == pytest.approx(6.0, abs=0.5)
    assert levels[0.5] == pytest.approx(levels[1.0], abs=0.01)  # no boost inside
    far = rms_db(spatialize(noise, distance_m=8.0, rolloff=0.0)).mean()
    near = rms_db(spatialize(noise, distance_m=1.0, rolloff=0.0)).mean()
    assert far == pytest.approx(near, abs=0.01)


def test_air_absorption_darkens_distant_sources(noise):
    centres = [500.0, 8000.0, 12500.0]
    near = band_levels_db(spatialize(noise, distance_m=1.0, air_absorption=True), FS, centres)
    dry = band_levels_db(spatialize(noise, distance_m=1.0), FS, centres)
    assert np.all(np.abs(near - dry) < 0.1)  # 1 m of air changes nothing audible
    far = band_levels_db(spatialize(noise, distance_m=100.0, air_absorption=True), FS, centres)
    far_dry = band_levels_db(spatialize(noise, distance_m=100.0), FS, centres)
    loss = far_dry - far  # dB lost to the air, per band
    assert np.all(loss[:, 0] < 0.5) and np.all(loss[:, 1] > 3.0) and np.all(loss[:, 2] > loss[:, 1])


def test_near_field_widens_the_level_difference(noise):
    def ild(**p):
        return float(np.diff(rms_db(spatialize(noise, azimuth_deg=90.0, **p)))[0]) * -1

    far = ild(distance_m=1.4, near_field=True)
    assert far == pytest.approx(ild(distance_m=1.4), abs=0.01)  # the HRTF's own distance
    close = ild(distance_m=0.25, near_field=True)
    assert close > far + 4.0
    assert ild(distance_m=0.25) == pytest.approx(far, abs=0.01)  # off: no change
    # the ears move apart by equal amounts in dB
    on = rms_db(spatialize(noise, azimuth_deg=90.0, distance_m=0.25, near_field=True))
    off = rms_db(spatialize(noise, azimuth_deg=90.0, distance_m=0.25))
    assert on[0] - off[0] == pytest.approx(off[1] - on[1], abs=0.05)
    assert on[0] - off[0] == pytest.approx((close - far) / 2, abs=0.05)


# ----------------------------------------------------------------- clicks

def _stepping_tone(instant, step_deg=10.0, seconds=1.0, rate=FS):
    """A 1 kHz tone whose azimuth moves ``step_deg`` every 10 ms frame."""
    frame = rate // 100
    n = int(seconds * rate)
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(n) / rate)).astype(np.float32)
    fx = Spatializer()
    fx.instant_switch = instant
    out = []
    for i, start in enumerate(range(0, n, frame)):
        fx.azimuth_deg = (i * step_deg + 180.0) % 360.0 - 180.0
        out.append(fx.process(x[start:start + frame], rate))
    return np.concatenate(out, axis=1)[:, rate // 10:]  # from 0.1 s on


@pytest.mark.parametrize("rate", [48000, 16000])
def test_moving_tone_is_click_free(rate):
    hf = high_band_re_tone_db(_stepping_tone(False, rate=rate), rate)
    assert np.all(hf <= -60.0), hf


def test_switching_filters_without_cross_fade_clicks():
    """The same test with the filters and delays switched at once fails it."""
    hf = high_band_re_tone_db(_stepping_tone(True), FS)
    assert np.all(hf > -60.0), hf


def test_rotation_is_click_free_and_keeps_its_period():
    fx = Spatializer(rotation="left", rotation_period_s=1.0)  # the fastest turn
    n = 2 * FS
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(n) / FS)).astype(np.float32)
    y = fx.process(x[: FS // 4], FS)
    az, el = fx.current_direction_deg
    # ticks every 10 ms: the last tick of the first quarter turn is at 0.24 s
    assert az == pytest.approx(86.4, abs=0.01) and el == pytest.approx(0.0, abs=1e-9)
    y = np.concatenate([y, fx.process(x[FS // 4:], FS)], axis=1)
    assert np.all(high_band_re_tone_db(y[:, FS // 10:], FS) <= -60.0)
    # left louder in the first half turn, right louder in the second
    q = FS // 4
    assert rms_db(y[:, q - 2400:q + 2400]) @ [1, -1] > 6.0
    assert rms_db(y[:, 3 * q - 2400:3 * q + 2400]) @ [1, -1] < -6.0
    # the filter in use is the interpolation at the current direction (the
    # renderer's face search starts from the last face: same result)
    filters, _ = Hrtf.default().interpolate(*fx.current_direction_deg)
    np.testing.assert_allclose(fx._spatial.filt[0, 1], filters, rtol=0, atol=1e-6)
    fx.rotation = "off"
    fx.process(x[:FRAME], FS)
    assert fx.current_direction_deg[0] == pytest.approx(0.0, abs=1e-9)  # back to azimuth_deg


# ----------------------------------------------------------------- streaming

def _moving(rate):
    return Spatializer(azimuth_deg=-70.0, elevation_deg=20.0, distance_m=0.4,
                       rotation="right", rotation_period_s=1.5, near_field=True,
                       air_absorption=True, rolloff=2.0)


@settings(max_examples=8, deadline=None, derandomize=True)
@given(sizes=st.lists(st.one_of(st.sampled_from([0, 1, 2, 479, 480, 481]),
                                st.integers(0, 5000)), min_size=1, max_size=25),
       rate=st.sampled_from([48000, 16000]))
def test_block_size_invariance_while_moving(sizes, rate):
    """A rotating, close, air-filtered source: the same output (within 1e-5)
    for the whole signal at once and cut into random blocks."""
    x = white_noise(1.0, rate, seed=9, amplitude=0.3)
    whole = _moving(rate).process(x, rate)
    fx, outs, pos = _moving(rate), [], 0
    for s in sizes:
        outs.append(fx.process(x[pos:pos + s], rate))
        pos = min(x.size, pos + s)
    outs.append(fx.process(x[pos:], rate))
    np.testing.assert_allclose(np.concatenate(outs, axis=1), whole, rtol=0, atol=1e-5)


def test_parameter_changes_take_effect_at_the_next_tick(noise):
    """A change made anywhere between two ticks gives the same output."""
    def run(split):
        fx = Spatializer(azimuth_deg=10.0)
        a = fx.process(noise[:split], FS)
        fx.azimuth_deg = 75.0
        fx.distance_m = 2.0
        return np.concatenate([a, fx.process(noise[split:], FS)], axis=1)

    first, second = run(FRAME * 3 + 17), run(FRAME * 4)  # both before the tick at 4 frames
    np.testing.assert_array_equal(first, second)
    later = run(FRAME * 4 + 1)
    assert np.max(np.abs(later - first)) > 1e-3


def test_shapes_and_channels(noise):
    x = noise[:4800]
    y = spatialize(x)
    assert y.shape == (2, 4800) and y.dtype == np.float32
    np.testing.assert_array_equal(spatialize(x[None, :]), y)
    stereo = np.stack([x, 0.5 * x])
    np.testing.assert_allclose(spatialize(stereo), spatialize(0.75 * x), rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="mono"):
        spatialize(np.zeros((3, 100), np.float32))
    with pytest.raises(TypeError, match="Hrtf"):
        Spatializer(hrtf="kemar")
    assert Spatializer().latency == 0 and 128 < Spatializer().tail < 200


# ----------------------------------------------------------------- against references

def test_still_source_matches_delay_and_filter_reference(noise):
    """Static direction: each ear is the input delayed by the interpolated
    onset (Lagrange reference) and filtered by the interpolated filter
    (scipy.signal.lfilter), times the distance gain.  Tolerance 1e-5 of the
    peak (float32 arithmetic)."""
    x = noise[:6000]
    az, el, dist = 37.0, 12.0, 2.5
    y = spatialize(x, azimuth_deg=az, elevation_deg=el, distance_m=dist)
    filters, delays = Hrtf.default().interpolate(az, el)
    for ear in range(2):
        delayed = lagrange3(x, np.full(x.size, delays[ear] + kernels.BASE_DELAY))
        ref = signal.lfilter(filters[ear].astype(np.float64), [1.0], delayed) / dist
        np.testing.assert_allclose(y[ear], ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def _toy_hrtf(delay=3.0, seed=2):
    """Directions every 30 degrees with random filters and one onset delay."""
    az, el = [], []
    for e in (-90, -60, -30, 0, 30, 60, 90):
        for a in ([0] if abs(e) == 90 else range(-180, 180, 30)):
            az.append(a)
            el.append(e)
    r = np.random.default_rng(seed)
    filters = r.standard_normal((len(az), 2, 32)) * np.exp(-np.arange(32) / 6.0)
    return Hrtf(az, el, filters, np.full((len(az), 2), delay), 48000)


def test_cross_fade_matches_reference():
    """One direction change: before the tick the old filter, during the next
    10 ms (1 - w) old + w new with w rising linearly to 1, then the new one.
    With equal onset delays nothing else moves.  Tolerance 1e-5."""
    hrtf = _toy_hrtf()
    x = white_noise(0.1, FS, seed=4)
    fx = Spatializer(azimuth_deg=-30.0, elevation_deg=30.0, hrtf=hrtf)
    first = fx.process(x[:1000], FS)
    fx.azimuth_deg = 60.0
    y = np.concatenate([first, fx.process(x[1000:], FS)], axis=1)
    tick = 1440  # the first tick after sample 1000
    delayed = np.concatenate([np.zeros(4), x[:-4].astype(np.float64)])  # 3 + BASE_DELAY 1
    h_old, _ = hrtf.interpolate(-30.0, 30.0)
    h_new, _ = hrtf.interpolate(60.0, 30.0)
    assert np.max(np.abs(h_new - h_old)) > 0.1
    w = np.clip((np.arange(x.size) - tick + 1) / FRAME, 0.0, 1.0)
    for ear in range(2):
        a = signal.lfilter(h_old[ear].astype(np.float64), [1.0], delayed)
        b = signal.lfilter(h_new[ear].astype(np.float64), [1.0], delayed)
        ref = (1 - w) * a + w * b
        np.testing.assert_allclose(y[ear], ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("delay,step", [(1.0, 0.0), (2.37, 0.0), (17.81, 0.0),
                                        (3.2, 0.013), (40.0, -0.061), (5.5, 0.7)])
def test_fractional_delay_kernel_matches_the_lagrange_formula(delay, step):
    """The delay line (kernel) against the textbook formula: 1e-6."""
    x = white_noise(0.01, FS, seed=11, amplitude=0.5)
    y = np.zeros_like(x)
    ring = np.zeros(2 * 1024, np.float32)
    kernels.fractional_delay(x, y, delay, step, ring, np.zeros(1, np.int64))
    delays = delay + step * np.arange(1, x.size + 1)
    np.testing.assert_allclose(y, lagrange3(x, delays), rtol=0, atol=1e-6)


def test_fractional_delay_of_a_low_tone_is_exact():
    """A 1 kHz sine delayed by 6.37 samples is the sine 6.37 samples later,
    within 1e-4 (third-order Lagrange at 1/48 of the rate); in two calls."""
    n = np.arange(4800)
    x = np.sin(2 * np.pi * 1000 * n / FS).astype(np.float32)
    ring = np.zeros(2 * 8192, np.float32)
    write = np.zeros(1, np.int64)
    y = np.zeros_like(x)
    kernels.fractional_delay(x[:1000], y[:1000], 6.37, 0.0, ring, write)
    kernels.fractional_delay(x[1000:], y[1000:], 6.37, 0.0, ring, write)
    exact = np.sin(2 * np.pi * 1000 * (n - 6.37) / FS)
    np.testing.assert_allclose(y[10:], exact[10:], rtol=0, atol=1e-4)


@pytest.mark.parametrize("taps,n", [(1, 10), (7, 1), (8, 480), (128, 480), (131, 37),
                                    (300, 1000)])
def test_fir_kernel_matches_scipy(taps, n):
    """Direct FIR (kernel) against scipy.signal.lfilter in float64: 1e-5 of
    the peak; and against oaconvolve."""
    r = np.random.default_rng(taps * 1000 + n)
    x = r.standard_normal(taps - 1 + n).astype(np.float32)
    h = r.standard_normal(taps).astype(np.float32)
    y = np.zeros(n, np.float32)
    kernels.fir(x, h, y)
    ref = signal.lfilter(h.astype(np.float64), [1.0], x.astype(np.float64))[taps - 1:]
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    ref2 = signal.oaconvolve(x.astype(np.float64), h.astype(np.float64))[taps - 1:taps - 1 + n]
    np.testing.assert_allclose(y, ref2, rtol=0, atol=1e-5 * np.abs(ref).max())


# ----------------------------------------------------------------- end to end

def test_cli_places_a_voice_at_60_degrees(tmp_path, speech, capsys):
    src, dst = tmp_path / "voice.wav", tmp_path / "out.wav"
    sf.write(str(src), speech[: 3 * FS], FS, subtype="PCM_16")
    status = cli.main(["process", str(src), str(dst), "--effect", "spatializer:azimuth_deg=60"])
    assert status == 0, capsys.readouterr().err
    y, rate = sf.read(str(dst), dtype="float32", always_2d=True)
    assert rate == FS and y.shape[1] == 2
    assert 3 * FS <= y.shape[0] <= 3 * FS + Spatializer().tail
    y = y.T
    assert rms_db(y) @ [1, -1] > 3.0      # left ear louder
    assert 0.3 < itd_ms(y, FS) < 0.7      # and earlier
    status = cli.main(["process", str(src), str(tmp_path / "bad.wav"),
                       "--effect", "spatializer:azimuth_deg=270"])
    assert status == 1 and "azimuth_deg" in capsys.readouterr().err


def test_3d_voice_preset_circles_the_listener(speech):
    graph = presets.load("3d_voice")
    node = next(p for p in graph.nodes.values() if isinstance(p, Spatializer))
    assert node.rotation != "off" and 1.0 <= node.rotation_period_s <= 60.0
    period = node.rotation_period_s
    x = speech[: int(period * FS)]
    y = graph.process(x, FS)
    assert y.shape == (2, x.size) and np.abs(y).max() < 1.0
    # over one turn the louder ear changes sides
    ild = [rms_db(y[:, a:a + FS // 2]) @ [1, -1] for a in range(0, x.size - FS // 2, FS // 4)]
    assert max(ild) > 6.0 and min(ild) < -6.0
    node.rotation_period_s = 3.0  # the period is a parameter, 1 to 60 s
    with pytest.raises(ValueError, match="from 1 to 60"):
        node.rotation_period_s = 0.5


# ----------------------------------------------------------------- Panner

@pytest.mark.parametrize("pan,gain", [(-1.0, 100.0), (-0.3, 50.0), (0.0, 100.0), (0.7, 25.0),
                                      (1.0, 0.0)])
def test_panner_constant_power_law_and_gain_percent(noise, pan, gain):
    x = noise[:4800]
    y = Panner(pan=pan, gain=gain).process(x, FS)
    theta = (pan + 1) * math.pi / 4
    g = gain / 100
    np.testing.assert_allclose(y[0], g * math.cos(theta) * x, rtol=0, atol=1e-6)
    np.testing.assert_allclose(y[1], g * math.sin(theta) * x, rtol=0, atol=1e-6)


def test_panner_stereo_balance_smoothing_and_errors(noise):
    x = np.stack([noise[:4800], noise[:4800]])
    np.testing.assert_allclose(Panner(gain=50.0).process(x, FS), 0.5 * x, rtol=0, atol=1e-7)
    hard = Panner(pan=1.0).process(x, FS)
    assert np.abs(hard[0]).max() < 1e-7
    np.testing.assert_allclose(hard[1], x[1], rtol=0, atol=1e-7)
    fx = Panner(pan=-1.0)
    ones = np.ones(4800, np.float32)
    a = fx.process(ones[:480], FS)
    fx.pan = 1.0
    b = fx.process(ones[480:], FS)
    y = np.concatenate([a, b], axis=1)
    assert np.max(np.abs(np.diff(y[1]))) < 2.0 / (0.02 * FS)  # glides over 20 ms
    assert y[1, -1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="mono or stereo"):
        Panner().process(np.zeros((3, 10), np.float32), FS)
    with pytest.raises(ValueError, match="from 0 to 100"):
        Panner(gain=150.0)
    assert dsp.registry["panner"] is Panner and dsp.registry["pan"] is not Panner

"""Gain, Pan (dsp.gain) and Mixer (dsp.mixer)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagevox.dsp import Gain, Mixer, Pan

FS = 48000
RAMP = int(0.020 * FS)  #: smoothing_ms = 20 ms at 48 kHz

#: A gain applied in float32: the factor is rounded to float32 and so is the
#: product, each within half an ulp (2**-24), so the result is within 2**-23
#: of the exact product, relative.
GAIN_RTOL = 2.0 ** -23
#: The mixer sums float32 products of float32 inputs: a few float32 roundings
#: of the sum (relative 6e-8 each) for three inputs.
MIX_RTOL = 4e-7
#: Pan law in float32 output: the gains are rounded to float32 (6e-8).
PAN_ABS = 1e-6


def tone(freq, seconds, amplitude=0.25, fs=FS):
    t = np.arange(int(round(seconds * fs))) / fs
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def db_to_gain(v):
    return 0.0 if v == -math.inf else 10 ** (v / 20)


# ----------------------------------------------------------------------------- gain

@pytest.mark.parametrize("gain_db", [-80.0, -12.5, -6.0, 0.0, 3.0, 6.0, 40.0])
def test_gain_is_the_exact_linear_factor(gain_db, speech):
    """Gain(gain_db) multiplies by 10**(gain_db/20) (to float32 rounding), stereo too."""
    x = np.ascontiguousarray(np.stack([speech[:FS], -speech[FS:2 * FS]]) * 0.02)
    y = Gain(gain_db=gain_db).process(x, FS)
    expected = x.astype(np.float64) * 10 ** (gain_db / 20)
    np.testing.assert_allclose(y, expected, rtol=GAIN_RTOL, atol=0)


@pytest.mark.parametrize("g0,g1", [(0.0, 6.0), (6.0, -20.0), (-80.0, 0.0), (0.0, -math.inf),
                                   (-math.inf, -3.0)])
def test_gain_change_ramps_linearly_then_is_exact(g0, g1, rng):
    """A change while streaming moves the linear factor in a straight line over
    round(smoothing_ms * fs) samples; from then on the factor is exactly the new one."""
    g = Gain(gain_db=g0)
    x = rng.uniform(0.1, 1.0, FS).astype(np.float32)  # never 0, so y/x is the gain
    at = 1000
    y = np.concatenate([g.process(x[:at], FS), (setattr(g, "gain_db", g1), g.process(x[at:], FS))[1]])
    a, b = db_to_gain(g0), db_to_gain(g1)
    k = np.arange(1, RAMP + 1)
    ramp = a + (b - a) * k / RAMP  # the k-th sample after the change has moved k/RAMP of the way
    applied = y[at:at + RAMP].astype(np.float64) / x[at:at + RAMP]
    np.testing.assert_allclose(applied, ramp, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(y[:at], x[:at] * a, rtol=GAIN_RTOL, atol=0)
    np.testing.assert_allclose(y[at + RAMP:], x[at + RAMP:].astype(np.float64) * b,
                               rtol=GAIN_RTOL, atol=0)


def test_minus_inf_mutes_to_exact_zeros(speech):
    """gain_db = -inf: every output sample is exactly 0.0, from the start or after a ramp."""
    x = speech[:FS]
    np.testing.assert_array_equal(Gain(gain_db=-math.inf).process(x, FS), 0.0)
    g = Gain()
    g.process(x[:100], FS)
    g.gain_db = -math.inf
    y = g.process(x[100:], FS)
    np.testing.assert_array_equal(y[RAMP:], 0.0)
    assert np.any(y[:RAMP // 2] != 0)


@pytest.mark.parametrize("gain_db", [-80.5, 40.5, float("nan"), math.inf, "6"])
def test_gain_range_is_checked(gain_db):
    with pytest.raises(ValueError, match=r"Gain.gain_db .* from -80 to 40 dB"):
        Gain(gain_db=gain_db)


def worst_jump_ratio(y, at, steady=0.1):
    """Largest step around the change over the largest step of the steady signal."""
    s = int(steady * FS)
    jumps = np.abs(np.diff(y.astype(np.float64)))
    steady_max = max(jumps[at - s:at - RAMP].max(), jumps[-s:].max())
    return jumps[at - RAMP:at + 3 * RAMP].max() / steady_max


#: See test_filters.JUMP_RATIO: a smoothed change never steps further than the
#: louder steady state (plus a small margin); an instant one steps 5-7x further.
JUMP_RATIO = 1.1


@pytest.mark.parametrize("smoothing_ms", [20.0, 0.0], ids=["smoothed", "control-instant"])
@pytest.mark.parametrize("g0,g1", [(0.0, 12.0), (12.0, -12.0), (-12.0, 0.0), (0.0, -math.inf)])
def test_gain_change_on_a_sine_does_not_click(g0, g1, smoothing_ms):
    """Changing gain_db on a crest of a steady 1 kHz sine: no output step larger
    than the louder steady state's largest step.  Control: the same change made
    instantly (smoothing_ms = 0) is caught by the same criterion."""
    x = tone(1000.0, 0.5)
    at = int(0.2 * FS) + 12  # a crest (48 samples a cycle)
    g = Gain(gain_db=g0)
    g.smoothing_ms = smoothing_ms
    y = np.concatenate([g.process(x[:at], FS), (setattr(g, "gain_db", g1), g.process(x[at:], FS))[1]])
    if smoothing_ms:
        assert worst_jump_ratio(y, at) <= JUMP_RATIO
        # Complete within the smoothing time: exactly the new gain after 20 ms.
        np.testing.assert_allclose(y[at + RAMP:], x[at + RAMP:] * db_to_gain(g1),
                                   rtol=GAIN_RTOL, atol=0)
    else:
        assert worst_jump_ratio(y, at) > JUMP_RATIO


# ------------------------------------------------------------------------------ pan

def pan_gains(pan, channels=1):
    """(left, right) gains of Pan measured on a block of ones."""
    p = Pan(pan=pan)
    y = p.process(np.ones((channels, 64), np.float32), FS).astype(np.float64)
    assert y.shape == (2, 64)
    assert np.all(y == y[:, :1])  # constant: no ramp when set before the audio
    return y[0, 0], y[1, 0]


@pytest.mark.parametrize("pan", np.linspace(-1, 1, 41))
def test_pan_mono_is_constant_power(pan):
    """Mono in: L^2 + R^2 == 1 for every position, and left falls as pan rises."""
    left, right = pan_gains(pan)
    assert left ** 2 + right ** 2 == pytest.approx(1.0, abs=PAN_ABS)
    assert left >= 0 and right >= 0


@settings(max_examples=50, deadline=None)
@given(pan=st.floats(-1.0, 1.0), amplitude=st.floats(0.01, 1.0))
def test_pan_mono_keeps_the_power_of_any_signal(pan, amplitude):
    """Mono noise panned anywhere: the stereo power equals the mono power."""
    x = (amplitude * np.random.default_rng(7).uniform(-1, 1, 512)).astype(np.float32)
    y = Pan(pan=pan).process(x, FS).astype(np.float64)
    assert np.sum(y ** 2) == pytest.approx(np.sum(x.astype(np.float64) ** 2), rel=2 * PAN_ABS)


@pytest.mark.parametrize("pan,left,right", [(-1.0, 1.0, 0.0), (0.0, math.sqrt(0.5), math.sqrt(0.5)),
                                            (1.0, 0.0, 1.0)])
def test_pan_mono_positions(pan, left, right):
    """Full left, centre (-3 dB each side) and full right."""
    got = pan_gains(pan)
    assert got == pytest.approx((left, right), abs=PAN_ABS)


@pytest.mark.parametrize("pan,left,right", [(-1.0, 1.0, 0.0), (0.0, 1.0, 1.0), (1.0, 0.0, 1.0),
                                            (-0.5, 1.0, math.sqrt(2) * math.sin(math.pi / 8)),
                                            (0.5, math.sqrt(2) * math.sin(math.pi / 8), 1.0)])
def test_pan_stereo_is_a_balance(pan, left, right):
    """Stereo in: centre is unity on both sides, neither side is ever boosted, and
    the far side follows the same law scaled to unity at centre."""
    assert pan_gains(pan, channels=2) == pytest.approx((left, right), abs=PAN_ABS)


def test_pan_stereo_centre_is_transparent(speech):
    x = np.ascontiguousarray(np.stack([speech[:FS], speech[FS:2 * FS]]))
    np.testing.assert_array_equal(Pan(pan=0.0).process(x, FS), x)


@settings(max_examples=40, deadline=None)
@given(pan=st.floats(-1.0, 1.0))
def test_pan_stereo_never_boosts(pan):
    left, right = pan_gains(pan, channels=2)
    assert 0.0 <= left <= 1.0 and 0.0 <= right <= 1.0
    assert max(left, right) == 1.0


@pytest.mark.parametrize("channels", [3, 6])
def test_pan_rejects_more_than_two_channels(channels):
    with pytest.raises(ValueError, match=f"mono or stereo.*{channels} channels"):
        Pan(pan=0.3).process(np.zeros((channels, 10), np.float32), FS)


def test_pan_change_is_smooth():
    """Moving the pan on a sine: each side glides over smoothing_ms, no step."""
    x = tone(1000.0, 0.5)
    at = int(0.2 * FS) + 12
    p = Pan(pan=-1.0)
    y = np.concatenate([p.process(x[:at], FS), (setattr(p, "pan", 1.0), p.process(x[at:], FS))[1]],
                       axis=1)
    for side in y:
        assert worst_jump_ratio(side, at) <= JUMP_RATIO
    np.testing.assert_allclose(y[1, at + RAMP:], x[at + RAMP:], rtol=GAIN_RTOL)
    assert np.abs(y[0, at + RAMP:]).max() < 1e-7


# ---------------------------------------------------------------------------- mixer

def test_mixer_sums_with_per_input_gains(rng):
    """Three stereo inputs with gains [-6, 0, +3.5] dB == the NumPy weighted sum."""
    xs = [(0.2 * rng.standard_normal((2, 5000))).astype(np.float32) for _ in range(3)]
    gains = [-6.0, 0.0, 3.5]
    y = Mixer(gains_db=gains, soft_clip=False).process(xs, FS)
    expected = sum(x.astype(np.float64) * 10 ** (g / 20) for x, g in zip(xs, gains))
    np.testing.assert_allclose(y, expected, rtol=0, atol=MIX_RTOL * np.abs(expected).max())


def test_mixer_inputs_beyond_the_gain_list_are_at_unity(rng):
    xs = [(0.2 * rng.standard_normal(3000)).astype(np.float32) for _ in range(3)]
    y = Mixer(gains_db=[-math.inf], soft_clip=False).process(xs, FS)
    assert y.ndim == 1  # all mono 1-D in: 1-D out
    expected = xs[1].astype(np.float64) + xs[2]
    np.testing.assert_allclose(y, expected, rtol=0, atol=MIX_RTOL * np.abs(expected).max())


def test_mixer_spreads_mono_to_stereo(rng):
    """A mono input is added to both channels of a stereo mix."""
    mono = (0.2 * rng.standard_normal(4000)).astype(np.float32)
    stereo = (0.2 * rng.standard_normal((2, 4000))).astype(np.float32)
    y = Mixer(gains_db=[-6.0, 0.0], soft_clip=False).process([mono, stereo], FS)
    assert y.shape == (2, 4000)
    expected = stereo.astype(np.float64) + db_to_gain(-6.0) * mono.astype(np.float64)
    np.testing.assert_allclose(y, expected, rtol=0, atol=MIX_RTOL * np.abs(expected).max())


def test_mixer_single_block_is_one_input(rng):
    x = (0.2 * rng.standard_normal((2, 100))).astype(np.float32)
    np.testing.assert_array_equal(Mixer(soft_clip=False).process(x, FS), x)


def test_mixer_gain_change_is_smooth_and_exact_after_the_ramp(rng):
    """Moving an input's gain while streaming glides over smoothing_ms."""
    a = rng.uniform(0.1, 0.2, FS).astype(np.float32)
    b = np.zeros(FS, np.float32)
    m = Mixer(gains_db=[0.0, 0.0], soft_clip=False)
    at = 500
    first = m.process([a[:at], b[:at]], FS)
    m.gains_db = [-12.0, 0.0]
    y = np.concatenate([first, m.process([a[at:], b[at:]], FS)])
    k = np.arange(1, RAMP + 1)
    ramp = 1 + (db_to_gain(-12) - 1) * k / RAMP
    np.testing.assert_allclose(y[at:at + RAMP] / a[at:at + RAMP], ramp, rtol=1e-6)
    np.testing.assert_allclose(y[at + RAMP:], a[at + RAMP:] * db_to_gain(-12), rtol=GAIN_RTOL)


@pytest.mark.parametrize("lengths", [(100, 101), (0, 5), (480, 480, 479)])
def test_mixer_rejects_inputs_of_unequal_length(lengths):
    with pytest.raises(ValueError, match="differ in length"):
        Mixer().process([np.zeros(n, np.float32) for n in lengths], FS)


def test_mixer_rejects_mismatched_channels_and_no_input():
    with pytest.raises(ValueError, match="channels"):
        Mixer().process([np.zeros((2, 10), np.float32), np.zeros((3, 10), np.float32)], FS)
    with pytest.raises(ValueError, match="at least one input"):
        Mixer().process([], FS)


# ------------------------------------------------------------------------ soft clip

F32_MAX = float(np.finfo(np.float32).max)


def soft_clip(values, ceiling_db, knee_db):
    """The mixer's soft clipper on ``values`` (one mono input at unity gain)."""
    m = Mixer(ceiling_db=ceiling_db, knee_db=knee_db)
    return m.process(np.asarray(values, np.float32), FS).astype(np.float64)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(-F32_MAX, F32_MAX, width=32), min_size=1, max_size=200),
       ceiling_db=st.floats(-24.0, 0.0), knee_db=st.floats(0.5, 24.0))
def test_soft_clip_never_exceeds_the_ceiling(values, ceiling_db, knee_db):
    """Any input, however large: |output| <= ceiling.  The output is float32, so
    the ceiling is compared at float32 precision (np.float32 of the linear value)."""
    y = soft_clip(values, ceiling_db, knee_db)
    assert np.abs(y).max() <= np.float32(db_to_gain(ceiling_db))


@settings(max_examples=100, deadline=None)
@given(fraction=st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=100),
       ceiling_db=st.floats(-24.0, 0.0), knee_db=st.floats(0.5, 24.0))
def test_soft_clip_is_identity_below_the_knee(fraction, ceiling_db, knee_db):
    """Samples up to knee_db below the ceiling pass unchanged (within 1e-7)."""
    threshold = db_to_gain(ceiling_db - knee_db)
    x = (np.asarray(fraction) * threshold).astype(np.float32)
    x = x[np.abs(x) <= threshold]
    np.testing.assert_allclose(soft_clip(x, ceiling_db, knee_db), x, rtol=0, atol=1e-7)


@pytest.mark.parametrize("ceiling_db,knee_db", [(-0.3, 6.0), (0.0, 0.5), (-12.0, 24.0)])
def test_soft_clip_is_continuous_and_monotonic(ceiling_db, knee_db):
    """On a fine ramp of inputs through and beyond the knee the curve is odd,
    never decreasing, and never steeper than 1 (so continuous, no jump at the
    knee), with slope 1 just above the knee and the ceiling approached far above."""
    ceiling = db_to_gain(ceiling_db)
    threshold = ceiling * db_to_gain(-knee_db)
    x = np.linspace(0, 4 * ceiling, 200001).astype(np.float32)
    y = soft_clip(x, ceiling_db, knee_db)
    np.testing.assert_array_equal(soft_clip(-x, ceiling_db, knee_db), -y)
    dx, dy = np.diff(x.astype(np.float64)), np.diff(y)
    assert np.all(dy >= 0)
    assert np.all(dy <= dx + 1.2e-7)  # slope <= 1, plus float32 rounding of y
    just_above = (x > threshold) & (x < threshold + 1e-3 * ceiling)
    assert np.all(np.abs(y[just_above] - x[just_above]) < 1e-6)  # joins with slope 1
    big = soft_clip([1e3, 1e6], ceiling_db, knee_db)
    np.testing.assert_allclose(big, np.float32(ceiling), rtol=1e-6)


def test_soft_clip_off_passes_the_sum_unchanged():
    x = np.array([0.5, 2.0, -7.0, 100.0], np.float32)
    np.testing.assert_array_equal(Mixer(soft_clip=False).process(x, FS), x)

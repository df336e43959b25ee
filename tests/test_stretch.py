"""Pitch-synchronous shortening and lengthening of one frame (engine.stretch)."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from stagevox.engine.stretch import (
    MAX_PERIOD_S,
    MIN_PERIOD_S,
    best_period,
    lengthen,
    shorten,
)

FS = 48000


def sawtooth(freq, n, phase=0.0, channels=1, amplitude=0.5):
    """A naive sawtooth (rich in harmonics), float32 (channels, n); the same
    wave on every channel.  Its period is FS / freq samples."""
    t = (np.arange(n) * freq / FS + phase) % 1.0
    return np.tile((amplitude * (2.0 * t - 1.0)).astype(np.float32), (channels, 1))


# ----------------------------------------------------------------------------- pitch

@pytest.mark.parametrize("freq", [150.0, 100.0, 120.0, 147.0, 180.0])
@pytest.mark.parametrize("phase", [0.0, 0.37])
def test_period_is_the_true_period(freq, phase):
    """The period found in a 20 ms frame equals FS / freq within one sample
    (320 for 150 Hz; 326.5 for 147 Hz, not a whole number of samples)."""
    x = sawtooth(freq, 960, phase)
    assert abs(best_period(x, FS) - FS / freq) <= 1.0


@pytest.mark.parametrize("freq", [211.0, 256.0, 301.0])
def test_high_voices_get_one_period_not_two(freq):
    """Higher voices (a period that is not a whole number of samples, and
    short enough for two or three to fit in the search range): the frame is
    still shortened by one pitch period, within one sample, not by two or
    three (the multiple lines up with the sample grid a little better and
    must not win)."""
    x = sawtooth(freq, 960, 0.0)
    assert abs(best_period(x, FS) - FS / freq) <= 1.0
    _, removed = shorten(x, FS)
    assert abs(removed - FS / freq) <= 1.0


@pytest.mark.parametrize("fn", [shorten, lengthen])
@pytest.mark.parametrize("channels", [1, 2])
def test_a_periodic_frame_stays_the_same_wave(fn, channels):
    """A 150 Hz sawtooth (320 samples a period) shortened or lengthened by one
    period is the same sawtooth, one period shorter or longer: the pitch and
    the waveform are kept and the joins are invisible (to 1e-6)."""
    n = 960
    x = sawtooth(150.0, n, 0.2, channels)
    y, p = fn(x, FS)
    assert p == 320
    assert y.dtype == np.float32 and y.shape == (channels, n - p if fn is shorten else n + p)
    np.testing.assert_allclose(y, sawtooth(150.0, y.shape[1], 0.2, channels), atol=1e-6)


# ----------------------------------------------------------------------------- lengths and ends

frames = st.integers(1, 2).flatmap(lambda c: st.integers(0, 1500).flatmap(
    lambda n: arrays(np.float32, (c, n), elements=st.floats(-1, 1, width=32))))


@settings(max_examples=150, deadline=None)
@given(x=frames)
def test_length_changes_by_exactly_the_period_returned(x):
    """For any frame, mono or stereo, the length changes by exactly the
    period returned (0: the frame comes back unchanged); a period is 2.5-15
    ms and at most half the frame; outside the one period that is
    cross-faded, the input is all there, unchanged."""
    c, n = x.shape
    for fn, sign in ((shorten, -1), (lengthen, 1)):
        y, p = fn(x, FS)
        assert y.shape == (c, n + sign * p)
        assert y.dtype == np.float32 and np.all(np.isfinite(y))
        if p == 0:
            np.testing.assert_array_equal(y, x)
            continue
        assert int(MIN_PERIOD_S * FS) <= p <= min(int(MAX_PERIOD_S * FS), n // 2)
        if fn is lengthen:
            # x[:P] | P cross-faded samples | x[P:]
            np.testing.assert_array_equal(y[:, :p], x[:, :p])
            np.testing.assert_array_equal(y[:, 2 * p:], x[:, p:])
        else:
            # P cross-faded samples | x[2P:]
            np.testing.assert_array_equal(y[:, p:], x[:, 2 * p:])


def two_period_frame():
    """240 samples of noise: the only period possible is 120, half the frame,
    so shortening leaves nothing but the cross-fade."""
    return np.random.default_rng(1).uniform(-1, 1, (2, 240)).astype(np.float32)


@settings(max_examples=150, deadline=None)
@given(x=frames.filter(lambda a: a.shape[1] >= 240))
@example(x=two_period_frame())
def test_both_ends_are_kept(x):
    """The first and last samples are the input's (within float32 rounding),
    so the joins with the previous and the next frame are untouched, also
    when the frame is exactly two periods long."""
    for fn in (shorten, lengthen):
        y, p = fn(x, FS)
        assert p > 0
        np.testing.assert_allclose(y[:, 0], x[:, 0], atol=1e-6, err_msg=fn.__name__)
        np.testing.assert_allclose(y[:, -1], x[:, -1], atol=1e-6, err_msg=fn.__name__)


def test_cross_fades_stay_within_the_input_range():
    """A cross-fade of two pieces of the input never leaves their range:
    nothing overshoots (noise input, mono and stereo)."""
    rng = np.random.default_rng(0)
    for channels in (1, 2):
        x = rng.uniform(-0.8, 0.8, (channels, 960)).astype(np.float32)
        for fn in (shorten, lengthen):
            y, p = fn(x, FS)
            assert p > 0
            assert np.max(np.abs(y)) <= np.max(np.abs(x)) + 1e-6


@pytest.mark.parametrize("n", [0, 1, 100, 200, 239])
def test_frames_too_short_are_left_alone(n):
    """Fewer than two of the shortest periods (2 x 120 samples): no period,
    and both functions return the frame unchanged."""
    x = sawtooth(400.0, n, channels=2)
    assert best_period(x, FS) == 0
    for fn in (shorten, lengthen):
        y, p = fn(x, FS)
        assert p == 0
        np.testing.assert_array_equal(y, x)


def test_shortest_frame_that_can_change():
    """240 samples hold two 120-sample periods: a 400 Hz sawtooth (period 120)
    is shortened to one period and lengthened to three."""
    x = sawtooth(400.0, 240)
    y, p = shorten(x, FS)
    assert p == 120 and y.shape == (1, 120)
    np.testing.assert_allclose(y, x[:, :120], atol=1e-6)
    y, p = lengthen(x, FS)
    assert p == 120 and y.shape == (1, 360)
    np.testing.assert_allclose(y, sawtooth(400.0, 360), atol=1e-6)

"""Compressor, look-ahead limiter and noise gate (dsp.dynamics).

The compressor and the limiter are compared with slow pure-Python versions of
their documented algorithms; all three are also checked against physical
expectations (static curve, ceiling, latency, release time, gate levels, hold).
"""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from stagevox.dsp import Compressor, Limiter, NoiseGate

FS = 48000

#: Kernel vs the slow reference: both compute in float64; the kernel rounds its
#: gain and its output to float32 (relative 6e-8 each).
REFERENCE_RTOL = 1e-5


def db(x):
    return 20 * math.log10(x)


def db_to_gain(v):
    return 0.0 if v == -math.inf else 10 ** (v / 20)


def one_pole(time_ms, fs):
    """exp(-1 / (tau fs)): the coefficient of a one-pole smoother with time constant tau."""
    return math.exp(-1.0 / (time_ms * 1e-3 * fs))


def tone(freq, fs, seconds, amplitude):
    t = np.arange(int(round(seconds * fs))) / fs
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def in_blocks(proc, x, fs, rng, max_block=700):
    """Process ``x`` cut into random-sized blocks (0 samples included)."""
    x2 = x if x.ndim == 2 else x[None]
    out, i = [], 0
    while i < x2.shape[1]:
        n = int(rng.integers(0, max_block))
        out.append(proc.process(np.ascontiguousarray(x2[:, i:i + n]), fs))
        i += n
    y = np.concatenate(out, axis=1)
    return y if x.ndim == 2 else y[0]


# ------------------------------------------------------------------------- compressor

def reference_compressor(x, fs, threshold_db, ratio, knee_db, attack_ms, release_ms,
                         makeup_db=0.0):
    """Giannoulis, Massberg & Reiss (JAES 2012): gain computer with a soft knee on
    the level of the loudest channel's sample, then the branching one-pole
    smoother on the gain reduction in dB, then the make-up gain."""
    x = np.atleast_2d(np.asarray(x, np.float64))
    a_att, a_rel = one_pole(attack_ms, fs), one_pole(release_ms, fs)
    t, w = threshold_db, knee_db
    y = np.empty_like(x)
    y_l = 0.0
    for i in range(x.shape[1]):
        peak = np.abs(x[:, i]).max()
        x_g = 20 * math.log10(peak) if peak > 0 else -math.inf
        if w == 0:
            y_g = x_g if x_g <= t else t + (x_g - t) / ratio
        elif 2 * (x_g - t) < -w:
            y_g = x_g
        elif 2 * abs(x_g - t) <= w:
            y_g = x_g + (1 / ratio - 1) * (x_g - t + w / 2) ** 2 / (2 * w)
        else:
            y_g = t + (x_g - t) / ratio
        x_l = x_g - y_g if peak > 0 else 0.0
        if x_l > y_l:
            y_l = a_att * y_l + (1 - a_att) * x_l
        else:
            y_l = a_rel * y_l + (1 - a_rel) * x_l
        y[:, i] = x[:, i] * 10 ** ((makeup_db - y_l) / 20)
    return y


COMPRESSOR_CASES = [
    dict(threshold_db=-18, ratio=4, knee_db=6, attack_ms=5, release_ms=100),
    dict(threshold_db=-30, ratio=10, knee_db=0, attack_ms=0.5, release_ms=50),
    dict(threshold_db=-12, ratio=2, knee_db=12, attack_ms=20, release_ms=300, makeup_db=6),
    dict(threshold_db=-40, ratio=50, knee_db=3, attack_ms=0.05, release_ms=1),
]


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("params", COMPRESSOR_CASES, ids=lambda p: f"T{p['threshold_db']}R{p['ratio']}")
def test_compressor_matches_reference(params, channels, speech, rng):
    """Speech (stereo: two different excerpts, linked detection) through the
    compressor cut into random blocks == the slow reference."""
    x = speech[FS:FS + FS // 2] / np.abs(speech[FS:FS + FS // 2]).max() * 0.9
    if channels == 2:
        x = np.stack([x, 0.5 * speech[3 * FS:3 * FS + FS // 2]])
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = in_blocks(Compressor(**params), x, FS, rng)
    ref = reference_compressor(x, FS, **params)
    np.testing.assert_allclose(y, ref.reshape(y.shape), rtol=0,
                               atol=REFERENCE_RTOL * np.abs(ref).max())
    # It did compress: somewhere the gain came down by more than 1 dB.
    loud = np.abs(x) > 0.1
    applied = np.abs(y[loud]) / np.abs(x[loud]) / db_to_gain(params.get("makeup_db", 0))
    assert applied.min() < db_to_gain(-1)


#: Static curve of the sample-peak detector: the smoothed reduction ripples
#: over each cycle of a sine (it falls between crests at the release rate), so
#: the crest is held to the static curve when release >> period and attack is
#: short.  Measured: 0.06 dB over with attack 1 ms / release 1 s.
STATIC_DB = 0.3


@pytest.mark.parametrize("threshold_db", [-30.0, -18.0, -6.0])
@pytest.mark.parametrize("ratio", [2.0, 4.0, 10.0])
@pytest.mark.parametrize("knee_db", [0.0, 6.0, 12.0])
def test_compressor_static_curve(threshold_db, ratio, knee_db):
    """A steady sine whose peak is 10 dB over the threshold (and outside the knee)
    comes out with its peak at threshold + 10 / ratio dB."""
    c = Compressor(threshold_db=threshold_db, ratio=ratio, knee_db=knee_db,
                   attack_ms=1.0, release_ms=1000.0)
    x = tone(1000.0, FS, 2.0, db_to_gain(threshold_db + 10))  # 48 samples a cycle: hits the crest
    y = c.process(x, FS)
    out_peak = db(np.abs(y[-FS // 2:]).max())
    assert out_peak == pytest.approx(threshold_db + 10 / ratio, abs=STATIC_DB)


@pytest.mark.parametrize("threshold_db", [-40.0, -18.0, -3.0])
@pytest.mark.parametrize("knee_db", [0.0, 6.0, 24.0])
def test_compressor_leaves_quiet_signals_alone(threshold_db, knee_db, rng):
    """Peaks below the threshold and its knee (0.5 dB under threshold - knee/2):
    every sample comes out exactly unchanged."""
    level = db_to_gain(threshold_db - knee_db / 2 - 0.5)
    x = np.concatenate([tone(440.0, FS, 0.5, level),
                        (rng.uniform(-level, level, FS // 2)).astype(np.float32)])
    c = Compressor(threshold_db=threshold_db, knee_db=knee_db, ratio=20)
    np.testing.assert_array_equal(c.process(x, FS), x)
    assert c._state[0] == 0.0


# ------------------------------------------------------------------------------ limiter

def reference_limiter(x, fs, ceiling_db, release_ms, lookahead_ms):
    """The documented algorithm, written plainly: need = min(1, ceiling / peak) of
    the loudest channel; the lowest need of the last D + 1 samples, allowed to
    rise only at the release rate; averaged over D + 1 samples; applied to the
    input delayed by D = round(lookahead * fs) samples.  Returns the output and
    the unclamped products (to check no clamping is ever needed)."""
    x = np.atleast_2d(np.asarray(x, np.float64))
    ceiling = db_to_gain(ceiling_db)
    d = max(1, round(lookahead_ms * fs / 1000))
    n = x.shape[1]
    peak = np.abs(x).max(axis=0)
    need = np.where(peak <= ceiling, 1.0, ceiling / np.maximum(peak, 1e-300))
    lowest = sliding_window_view(np.concatenate([np.ones(d), need]), d + 1).min(axis=1)
    rc = one_pole(release_ms, fs)
    held = np.empty(n)
    h = 1.0
    for i in range(n):
        h = lowest[i] if lowest[i] < h else lowest[i] + rc * (h - lowest[i])
        held[i] = h
    gain = sliding_window_view(np.concatenate([np.ones(d), held]), d + 1).mean(axis=1)
    delayed = np.concatenate([np.zeros((x.shape[0], d)), x], axis=1)[:, :n]
    raw = delayed * gain
    return np.clip(raw, -ceiling, ceiling), raw


def bursty_signal(rng, n, channels=1):
    """Noise with a wandering envelope, decaying bursts and isolated spikes."""
    env = np.exp(np.cumsum(rng.standard_normal(n)) * 0.05)
    x = rng.standard_normal((channels, n)) * env / env.max()
    for start in rng.integers(0, n, 4):  # bursts that decay (needs rise for many samples)
        k = np.arange(n - start)
        x[:, start:] += rng.uniform(1, 8) * np.exp(-k / rng.uniform(20, 2000)) * np.sign(
            rng.standard_normal((channels, 1)))
    spikes = rng.integers(0, n, 6)
    x[:, spikes] = rng.uniform(-20, 20, (channels, 6))
    return np.ascontiguousarray(x, dtype=np.float32)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("lookahead_ms,release_ms", [(0.1, 5.0), (1.0, 30.0), (5.0, 60.0),
                                                      (0.5, 1.0), (20.0, 500.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_limiter_matches_reference(lookahead_ms, release_ms, channels, seed):
    """Bursts, decays and spikes through the limiter, cut at random == the slow
    reference; and the reference itself never needs its final clamp (the gain
    alone holds every peak under the ceiling: no hard clipping)."""
    rng = np.random.default_rng(seed)
    x = bursty_signal(rng, 6000, channels)
    params = dict(ceiling_db=-6.0, release_ms=release_ms, lookahead_ms=lookahead_ms)
    y = in_blocks(Limiter(**params), x, FS, rng)
    ref, raw = reference_limiter(x, FS, **params)
    ceiling = db_to_gain(-6.0)
    assert np.abs(raw).max() <= ceiling * (1 + 1e-12)
    np.testing.assert_allclose(y, ref, rtol=0, atol=REFERENCE_RTOL * ceiling)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 32 - 1),
       ceiling_db=st.floats(-30.0, 0.0),
       lookahead_ms=st.floats(0.1, 50.0),
       release_ms=st.floats(1.0, 2000.0),
       fs=st.sampled_from([8000, 16000, 44100, 48000]),
       channels=st.integers(1, 2),
       big=st.floats(1.0, 1e4))
def test_limiter_never_exceeds_ceiling(seed, ceiling_db, lookahead_ms, release_ms, fs,
                                       channels, big):
    """Whatever the signal, ceiling, look-ahead, release and block cutting, no
    output sample is above the ceiling.  The output is float32, so the ceiling
    is compared at float32 precision (np.float32 of the linear ceiling)."""
    rng = np.random.default_rng(seed)
    x = bursty_signal(rng, 4000, channels) * np.float32(big)
    lim = Limiter(ceiling_db=ceiling_db, lookahead_ms=lookahead_ms, release_ms=release_ms)
    y = in_blocks(lim, x, fs, rng, max_block=900)
    assert np.abs(y).max() <= np.float32(db_to_gain(ceiling_db))


@pytest.mark.parametrize("fs", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("lookahead_ms", [0.1, 0.5, 1.5, 5.0, 50.0])
def test_limiter_latency(fs, lookahead_ms):
    """latency == round(lookahead_ms * fs / 1000) (at least one sample)."""
    lim = Limiter(lookahead_ms=lookahead_ms)
    expected = max(1, round(lookahead_ms * fs / 1000))
    assert lim.latency_at(fs) == expected
    lim.process(np.zeros(10, np.float32), fs)
    assert lim.latency == expected


@pytest.mark.parametrize("fs", [16000, 44100, 48000])
@pytest.mark.parametrize("lookahead_ms", [0.1, 1.5, 5.0, 50.0])
def test_limiter_delays_an_impulse_below_the_ceiling_exactly(fs, lookahead_ms):
    """An impulse below the ceiling comes out exactly ``latency`` samples late,
    with its value unchanged, and nothing else comes out."""
    lim = Limiter(ceiling_db=-3.0, lookahead_ms=lookahead_ms)
    d = lim.latency_at(fs)
    x = np.zeros(3 * d + 50, np.float32)
    x[17] = np.float32(0.7)  # below 10^(-3/20) = 0.708
    y = lim.process(x, fs)
    expected = np.zeros_like(x)
    expected[17 + d] = x[17]
    np.testing.assert_array_equal(y, expected)


def test_limiter_passes_a_steady_signal_below_the_ceiling_unchanged(speech):
    """Stereo speech scaled to peak just under the ceiling: the output is the
    input delayed by ``latency``, sample for sample."""
    ceiling = db_to_gain(-1.0)
    s = speech[:FS * 2]
    x = np.stack([s, s[::-1]]) / np.abs(s).max() * ceiling * 0.999
    x = np.ascontiguousarray(x, dtype=np.float32)
    lim = Limiter(ceiling_db=-1.0, lookahead_ms=5.0)
    y = lim.process(x, FS)
    d = lim.latency
    np.testing.assert_array_equal(y[:, :d], 0.0)
    np.testing.assert_array_equal(y[:, d:], x[:, :-d])


#: The gain's recovery is a one-pole exponential with exactly the release time
#: constant, seen through the (D+1)-sample moving average, which does not
#: change an exponential's time constant; 3 % covers the fit over float32 output.
RELEASE_RTOL = 0.03


@pytest.mark.parametrize("release_ms", [20.0, 60.0, 500.0])
def test_limiter_gain_recovers_at_the_release_time(release_ms):
    """A lone spike over a steady DC level: the gain drops to what the spike
    needs, then recovers with time constant release_ms (an exponential fitted to
    the gain deficit), and the deficit has fallen to 1/e about release_ms after
    the recovery started."""
    lim = Limiter(ceiling_db=-6.0, release_ms=release_ms, lookahead_ms=5.0)
    level, spike_at = 0.1, FS // 10
    x = np.full(int(FS * (0.2 + 8 * release_ms / 1000)), level, np.float32)
    x[spike_at] = 2.0
    y = lim.process(x, FS).astype(np.float64)
    d = lim.latency
    gain = y / level
    gain[spike_at + d] = np.nan  # the spike itself, not the DC
    after = np.arange(spike_at + d + 1, len(x))
    deficit = 1.0 - gain[after]
    assert 1 - deficit.max() == pytest.approx(db_to_gain(-6.0) / 2.0, rel=1e-3)
    top = int(np.nanargmax(deficit))
    sel = (np.arange(len(deficit)) > top) & (deficit < 0.6 * deficit[top]) & (
        deficit > 0.02 * deficit[top])
    slope = np.polyfit(np.flatnonzero(sel), np.log(deficit[sel]), 1)[0]
    tau_ms = -1.0 / slope / FS * 1000
    assert tau_ms == pytest.approx(release_ms, rel=RELEASE_RTOL)
    # "Roughly": 1/e of the deficit release_ms after it began to shrink (within the look-ahead).
    t_e = int(np.flatnonzero(deficit[top:] < deficit[top] / math.e)[0])
    assert abs(t_e / FS * 1000 - release_ms) <= 5.0 + 0.02 * release_ms


# --------------------------------------------------------------------------- noise gate

GATE_DB = 0.1


def test_gate_passes_a_loud_tone_unchanged_after_the_attack():
    """A -20 dBFS tone (threshold -50): after 20 attack time constants every
    sample is within 0.1 dB of the input (and the gain is 1 to rounding)."""
    gate = NoiseGate(threshold_db=-50, range_db=-60, attack_ms=1.0)
    x = tone(1000.0, FS, 0.5, 0.1)
    y = gate.process(x, FS)
    k = int(0.020 * FS)
    big = np.abs(x[k:]) > 1e-3
    ratio_db = 20 * np.log10(np.abs(y[k:][big]) / np.abs(x[k:][big]))
    assert np.abs(ratio_db).max() < GATE_DB
    assert gate._state[1] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("range_db", [-20.0, -40.0, -60.0, -100.0])
def test_gate_attenuates_quiet_noise_by_its_range(range_db, rng):
    """Quiet noise (peaks at -65 dBFS, under the -56 dBFS closing level) after a
    loud tone: once the hold and the release are over, the noise comes out
    range_db quieter (RMS, within 1 dB).  From a cold start the gate is closed."""
    gate = NoiseGate(threshold_db=-50, hysteresis_db=6, range_db=range_db, hold_ms=50,
                     release_ms=80)
    quiet = db_to_gain(-65)
    noise = rng.uniform(-quiet, quiet, FS * 2).astype(np.float32)
    x = np.concatenate([tone(500.0, FS, 0.2, 0.3), noise])
    y = gate.process(x, FS)
    tail = slice(len(x) - FS // 2, None)  # 1.5 s after the drop: 50 ms hold + 18 release constants
    out_db = 10 * np.log10(np.mean(y[tail].astype(np.float64) ** 2)
                           / np.mean(x[tail].astype(np.float64) ** 2))
    assert out_db == pytest.approx(range_db, abs=1.0)
    cold = NoiseGate(threshold_db=-50, range_db=range_db).process(noise[:FS // 4], FS)
    np.testing.assert_allclose(cold, noise[:FS // 4] * db_to_gain(range_db), rtol=1e-6)


@pytest.mark.parametrize("hold_ms", [0.0, 50.0, 200.0])
def test_gate_hold_time(hold_ms):
    """After a loud input (DC at 0.5) drops to a level under the closing level,
    the gate stays fully open while its detector falls to the closing level
    (10 ms time constant: 10 ms x ln(0.5 / close)) and then for hold_ms more;
    then it starts to close.  Closing instant within 1 ms (whole samples)."""
    threshold, hysteresis = -50.0, 6.0
    gate = NoiseGate(threshold_db=threshold, hysteresis_db=hysteresis, range_db=-60,
                     hold_ms=hold_ms, release_ms=80)
    loud, quiet = 0.5, 1e-4
    drop = FS // 5
    x = np.concatenate([np.full(drop, loud), np.full(FS, quiet)]).astype(np.float32)
    y = gate.process(x, FS).astype(np.float64)
    gain = y[drop:] / np.float64(np.float32(quiet))
    close = db_to_gain(threshold - hysteresis)
    expected_ms = NoiseGate.detector_ms * math.log(loud / close) + hold_ms
    still_open = np.flatnonzero(gain > 1 - 1e-5)
    assert still_open[0] == 0 and np.all(np.diff(still_open) == 1)  # open, then never again
    open_ms = (still_open[-1] + 1) / FS * 1000
    assert open_ms == pytest.approx(expected_ms, abs=1.0)
    # After closing, the gain falls towards the range (-60 dB) at the release rate.
    assert gain[int((expected_ms + 5 * 80) * FS / 1000)] < 10 * db_to_gain(-60)


def test_gate_hysteresis():
    """A tone between the closing (-56 dBFS) and opening (-50 dBFS) levels keeps
    an open gate open, and a closed gate closed."""
    mid = db_to_gain(-53)
    middle = tone(1000.0, FS, 1.0, mid)
    gate = NoiseGate(threshold_db=-50, hysteresis_db=6, range_db=-60, hold_ms=10)
    gate.process(tone(1000.0, FS, 0.1, 0.5), FS)
    np.testing.assert_allclose(gate.process(middle, FS), middle, rtol=1e-6, atol=0)
    cold = NoiseGate(threshold_db=-50, hysteresis_db=6, range_db=-60, hold_ms=10)
    np.testing.assert_allclose(cold.process(middle, FS), middle * 1e-3, rtol=1e-6, atol=0)


def test_gate_with_infinite_range_gives_exact_silence(rng):
    """range_db = -inf: once closed and released, the output is exactly 0.0."""
    gate = NoiseGate(threshold_db=-40, range_db=-math.inf, hold_ms=20, release_ms=10)
    noise = (rng.uniform(-1, 1, FS) * db_to_gain(-60)).astype(np.float32)
    x = np.concatenate([tone(300.0, FS, 0.2, 0.5), noise])
    y = gate.process(x, FS)
    # Closed ~110 ms after the drop; 1e-20 is reached after 46 release constants.
    np.testing.assert_array_equal(y[-FS // 3:], 0.0)
    assert gate._state[1] == 0.0
    assert np.any(y[len(x) - FS:len(x) - FS + 100] != 0)  # before that the noise came through


# --------------------------------------------------------------------------- denormals

SMALLEST_STATE = 1e-30


def float_states(proc):
    if isinstance(proc, Compressor):
        return [proc._state, proc._makeup]
    if isinstance(proc, NoiseGate):
        return [proc._state]
    return [proc._delay, proc._needs, proc._suffix, proc._fstate]


@pytest.mark.parametrize("proc", [
    Compressor(threshold_db=-30, release_ms=50),
    Compressor(threshold_db=-20, release_ms=5000, attack_ms=0.05),
    NoiseGate(range_db=-60),
    NoiseGate(range_db=-math.inf, release_ms=1),
    NoiseGate(range_db=-120, release_ms=5000),
    Limiter(ceiling_db=-12, release_ms=1),
], ids=lambda p: type(p).__name__)
def test_dynamics_state_never_subnormal_in_silence(proc, rng):
    """Loud input, then 30 s of silence: the float64 states hold only exact zeros
    or values >= 1e-30, checked after every second."""
    proc.reset()
    proc.process((0.9 * rng.standard_normal((2, FS // 2))).astype(np.float32), FS)
    silence = np.zeros((2, FS), np.float32)
    for second in range(30):
        proc.process(silence, FS)
        for state in float_states(proc):
            s = np.abs(state)
            tiny = s[(s > 0) & (s < SMALLEST_STATE)]
            assert tiny.size == 0, f"after {second + 1} s: state values down to {tiny.min():g}"


def test_exp_neg_matches_numpy():
    """The compressor's exponential, against numpy.exp (2e-8 relative up to 12,
    which is a gain reduction of 104 dB)."""
    from stagevox.dsp.kernels.dynamics import exp_neg
    import numba

    xs = np.concatenate([np.linspace(0.0, 12.0, 200_001), [1e-12]])
    values = numba.njit(lambda a: np.array([exp_neg(v) for v in a]))(xs)
    np.testing.assert_allclose(values, np.exp(-xs), rtol=2e-8, atol=0)
    assert exp_neg(1e6) == pytest.approx(np.exp(-40.0), rel=1e-3)  # capped, never subnormal


def test_limiter_idle_fast_path_changes_nothing(rng):
    """Bursts 3 s apart: between them the limiter goes idle (gain exactly 1,
    ring full of ones) and skips its per-sample loop.  Cut into 10 ms blocks
    or processed whole, the output is the same to the last bit."""
    fs = 48000
    x = (0.05 * rng.standard_normal(fs * 8)).astype(np.float32)
    for start in (fs, 4 * fs, 7 * fs):
        x[start:start + 2000] *= 30.0  # over the ceiling: the limiter acts
    whole = Limiter(ceiling_db=-1)(x, fs)
    lim = Limiter(ceiling_db=-1)
    framed = []
    idle_before_burst = False
    for i in range(0, x.size, 480):
        if i == 4 * fs - 480:  # just before the second burst
            w = lim._delay.shape[1] + 1
            idle_before_burst = lim._fstate[0] == 1.0 and lim._fstate[1] == w
        framed.append(lim(x[i:i + 480], fs))
    assert idle_before_burst, lim._fstate[:2]  # so the fast path did run
    np.testing.assert_array_equal(np.concatenate(framed), whole)
    assert np.abs(whole[4 * fs:4 * fs + 2000]).max() < 0.95  # and it limits after


def test_log2_mantissa_matches_numpy():
    """The compressor's branch-free log2 on [1, 2) (every float32 mantissa
    step near the ends and the fold at sqrt(2), and a dense grid) agrees with
    numpy.log2 within 1e-10 (the series stops at t**11: at most 3e-11)."""
    import numba
    from stagevox.dsp.kernels.dynamics import log2_mantissa
    ulp = 2.0 ** -23
    edges = np.concatenate([1.0 + ulp * np.arange(64), 2.0 - ulp * np.arange(1, 64),
                            np.sqrt(2.0) + ulp * np.arange(-32, 32)])
    ms = np.concatenate([np.linspace(1.0, 2.0, 100001, endpoint=False), edges])
    values = numba.njit(lambda a: np.array([log2_mantissa(v) for v in a]))(ms)
    np.testing.assert_allclose(values, np.log2(ms), rtol=0, atol=1e-10)

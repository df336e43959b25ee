"""ConvolutionReverb and RoomReverb: partitioned FFT convolution and simulated rooms.

References and tolerances:
* convolution: ``scipy.signal.fftconvolve`` (float64) of the whole signal,
  aligned by ``latency``, within 1e-5 of the reference's peak;
* IR files: soundfile + ``soxr.resample`` (VHQ) of the same file, 1e-5;
* room: ``pyroomacoustics.experimental.measure_rt60`` on the processed
  impulse within 20 % of ``rt60_s``; direct sound at distance / 343 m/s
  within one sample.
"""

import math

import numpy as np
import pytest
import soundfile as sf
import soxr
from pyroomacoustics.experimental import measure_rt60
from scipy import signal

from stagevox import dsp
from stagevox.dsp.convolution import (ConvolutionReverb, RoomReverb, default_impulse_response,
                                      partition_size, tail_partition_size)

WET = dict(dry_level_db=-math.inf, wet_level_db=0.0)


def decaying_noise(rng, channels, n, rt60_samples):
    h = rng.standard_normal((channels, n)) * 10 ** (-3 * np.arange(n) / rt60_samples)
    return h if channels > 1 else h[0]


def reference(x, h, latency):
    """fftconvolve of each output channel, delayed by ``latency``, cut to len(x)."""
    x2 = np.atleast_2d(x).astype(np.float64)
    h2 = np.atleast_2d(h)
    outs = max(x2.shape[0], h2.shape[0])
    y = np.zeros((outs, x2.shape[1]))
    for o in range(outs):
        full = signal.fftconvolve(x2[o % x2.shape[0]], h2[o % h2.shape[0]])
        y[o, latency:] = full[:x2.shape[1] - latency]
    return y


def check_close(y, ref):
    peak = np.abs(ref).max()
    assert peak > 0
    np.testing.assert_allclose(np.atleast_2d(y), ref, rtol=0, atol=1e-5 * peak)


# ------------------------------------------------------------------ engine

@pytest.mark.parametrize("fs", [16000, 48000])
@pytest.mark.parametrize("ir_seconds", [0.001, 0.0053, 0.3, 3.0])
@pytest.mark.parametrize("ir_ch,x_ch", [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_matches_fftconvolve(ir_ch, x_ch, ir_seconds, fs, rng):
    n_ir = max(1, int(ir_seconds * fs))
    h = decaying_noise(rng, ir_ch, n_ir, 0.5 * fs)
    x = (0.3 * rng.standard_normal((x_ch, int(1.5 * fs)))).astype(np.float32)
    if x_ch == 1:
        x = x[0]
    fx = ConvolutionReverb(ir=h, **WET)
    y = fx.process(x, fs)
    assert fx.latency == partition_size(fs)
    assert y.shape[0] == max(ir_ch, x_ch) or (y.ndim == 1 and ir_ch == x_ch == 1)
    check_close(y, reference(x, h, fx.latency))


def test_long_ir_in_ten_ms_frames_matches_fftconvolve(rng):
    fs = 48000
    h = decaying_noise(rng, 2, 3 * fs, 1.5 * fs)
    x = (0.3 * rng.standard_normal(4 * fs)).astype(np.float32)
    fx = ConvolutionReverb(ir=h, **WET)
    y = np.concatenate([fx.process(x[i:i + 480], fs) for i in range(0, x.size, 480)], axis=1)
    check_close(y, reference(x, h, fx.latency))


def test_block_size_invariance_exact(rng):
    fs = 16000
    h = decaying_noise(rng, 1, fs, 0.4 * fs)
    x = (0.3 * rng.standard_normal((2, 2 * fs))).astype(np.float32)
    whole = ConvolutionReverb(ir=h, dry_level_db=-3.0).process(x, fs)
    sizes = rng.choice([0, 1, 2, 5, 63, 64, 65, 300, 2000], size=80)
    fx = ConvolutionReverb(ir=h, dry_level_db=-3.0)
    outs, pos = [], 0
    for s in sizes:
        outs.append(fx.process(x[:, pos:pos + s], fs))
        pos += s
    outs.append(fx.process(x[:, pos:], fs))
    np.testing.assert_array_equal(np.concatenate(outs, axis=1), whole)


@pytest.mark.parametrize("fs,expected", [(8000, 64), (11025, 64), (16000, 128), (22050, 128),
                                         (24000, 128), (32000, 256), (44100, 256),
                                         (48000, 256)])
def test_latency_is_the_partition_and_at_most_10_ms(fs, expected):
    fx = ConvolutionReverb(ir=np.array([1.0]), dry_level_db=-math.inf)
    assert fx.latency_at(fs) == expected <= 0.010 * fs
    x = np.zeros(3 * expected, np.float32)
    x[7] = 0.5
    y = fx.process(x, fs)
    assert fx.latency == expected
    expected_y = np.zeros_like(x)
    expected_y[7 + expected] = 0.5
    np.testing.assert_allclose(y, expected_y, rtol=0, atol=1e-6)


def test_tail_level_sizes():
    assert tail_partition_size(144000, 256) == 8192  # sqrt(144000 * 256) = 6071
    assert tail_partition_size(100, 256) == 1024     # at least 4 B
    assert tail_partition_size(10 ** 8, 256) == 32768


def test_wet_and_dry_paths(rng):
    fs = 48000
    h = decaying_noise(rng, 1, fs // 2, 0.2 * fs)
    x = (0.3 * rng.standard_normal(fs)).astype(np.float32)
    b = partition_size(fs)
    dry_only = ConvolutionReverb(ir=h, wet_level_db=-math.inf).process(x, fs)
    np.testing.assert_array_equal(dry_only[b:], x[:-b])
    assert np.all(dry_only[:b] == 0)
    both = ConvolutionReverb(ir=h, wet_level_db=-6.0, dry_level_db=3.0).process(x, fs)
    ref = 10 ** (-6 / 20) * reference(x, h, b)[0]
    ref[b:] += 10 ** (3 / 20) * x[:-b]
    check_close(both, ref[None, :])


def test_default_impulse_response():
    fs = 48000
    h = default_impulse_response(fs)
    assert h.shape == (1, fs // 2)
    assert np.sum(h ** 2) == pytest.approx(1.0)
    assert measure_rt60(h[0], fs, decay_db=30) == pytest.approx(0.5, rel=0.1)
    np.testing.assert_array_equal(h, default_impulse_response(fs))
    fx = ConvolutionReverb()
    assert fx.tail_at(fs) == fs // 2 - 1
    x = np.zeros(fs, np.float32)
    x[0] = 1.0
    y = ConvolutionReverb(**WET).process(x, fs)
    np.testing.assert_allclose(y[fx.latency:fx.latency + fs // 2], h[0], rtol=0, atol=1e-6)


# ------------------------------------------------------------------ impulse responses

def test_ir_from_a_file_is_resampled_with_soxr(tmp_path, rng):
    h = decaying_noise(rng, 2, 22050, 10000) * 0.5
    path = tmp_path / "ir.wav"
    sf.write(str(path), h.T, 44100, subtype="FLOAT")
    fs = 48000
    x = (0.3 * rng.standard_normal(fs)).astype(np.float32)
    fx = ConvolutionReverb(ir=path, **WET)
    y = fx.process(x, fs)
    read, rate = sf.read(str(path), dtype="float64", always_2d=True)
    expected_ir = soxr.resample(read, rate, fs, quality="VHQ").T
    assert fx.tail_at(fs) == expected_ir.shape[1] - 1
    assert abs(expected_ir.shape[1] - 24000) <= 1
    check_close(y, reference(x, expected_ir, fx.latency))
    # and with the file's own rate nothing is resampled
    y44 = ConvolutionReverb(ir=str(path), **WET).process(x, 44100)
    check_close(y44, reference(x, read.T, partition_size(44100)))


def test_ir_array_with_its_rate(rng):
    h = decaying_noise(rng, 1, 4000, 2000)
    fx = ConvolutionReverb(ir=h, ir_sample_rate=16000)
    assert abs(fx.tail_at(48000) + 1 - 12000) <= 1
    assert fx.tail_at(16000) == 3999
    assert ConvolutionReverb(ir=h).tail_at(48000) == 3999  # no rate: used as it is


@pytest.mark.parametrize("bad,match", [
    (np.zeros((3, 100)), "1 or 2 channels"),
    (np.zeros((2, 2, 5)), "1 or 2 channels"),
    (np.zeros(0), "empty"),
    (np.array([1.0, np.nan]), "NaN or Inf"),
    ("no/such/file.wav", "cannot read"),
    (["a", "b"], "array of numbers"),
])
def test_bad_impulse_responses_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        ConvolutionReverb(ir=bad)


def test_bad_ir_rate_and_layout_raise():
    with pytest.raises(ValueError, match="ir_sample_rate"):
        ConvolutionReverb(ir=[1.0], ir_sample_rate=0)
    with pytest.raises(ValueError, match="mono or stereo"):
        ConvolutionReverb(ir=np.ones((2, 10))).process(np.zeros((3, 10), np.float32), 16000)
    y = ConvolutionReverb(ir=np.ones(10)).process(np.zeros((3, 10), np.float32), 16000)
    assert y.shape == (3, 10)  # a mono response takes any number of channels


def test_set_ir_while_streaming_keeps_the_input_history(rng):
    fs = 16000
    h1 = decaying_noise(rng, 1, fs, 0.3 * fs)
    h2 = decaying_noise(rng, 1, 2 * fs, 0.6 * fs)
    x = (0.3 * rng.standard_normal(4 * fs)).astype(np.float32)
    fx = ConvolutionReverb(ir=h1, **WET)
    at = fs + 1234
    first = fx.process(x[:at], fs)
    fx.set_ir(h2)
    rest = fx.process(x[at:], fs)
    y = np.concatenate([first, rest])
    b = fx.latency
    check_close(y[:at][None, :], reference(x[:at], h1, b))
    # once both levels have cross-faded, the output is the whole input
    # convolved with the new response
    settled = at + 2 * tail_partition_size(fs, b)
    ref2 = reference(x, h2, b)
    np.testing.assert_allclose(y[settled:], ref2[0, settled:], rtol=0,
                               atol=1e-5 * np.abs(ref2).max())


# ------------------------------------------------------------------ room

@pytest.mark.parametrize("fs", [16000, 48000])
@pytest.mark.parametrize("rt60", [0.3, 0.6])
def test_room_decay_time_is_within_20_percent(rt60, fs):
    fx = RoomReverb(rt60_s=rt60)
    x = np.zeros(int((1.5 * rt60 + 0.2) * fs), np.float32)
    x[0] = 1.0
    y = fx.process(x, fs)[fx.latency:]
    assert measure_rt60(y, fs, decay_db=30) == pytest.approx(rt60, rel=0.2)


@pytest.mark.parametrize("fs", [8000, 16000, 48000])
@pytest.mark.parametrize("listener", [(6.0, 3.0, 1.5), (3.0, 4.5, 2.0)])
def test_room_direct_sound_arrives_at_distance_over_c(listener, fs):
    source = (2.0, 3.0, 1.5)
    fx = RoomReverb(listener=listener, source=source)
    x = np.zeros(fs, np.float32)
    x[0] = 1.0
    y = fx.process(x, fs)[fx.latency:]
    distance = math.dist(source, listener)
    expected = distance / 343.0 * fs
    # no reflection can arrive before the direct sound has travelled 0.5 m more
    window = int(expected + 0.5 / 343.0 * fs)
    first = int(np.argmax(np.abs(y[:window])))
    assert abs(first - expected) <= 1.0, (first, expected)
    # the direct sound is scaled to about unit gain (a fractional-delay sinc)
    assert 0.6 < np.abs(y[first]) <= 1.05
    assert np.abs(y[:max(0, int(expected) - 45)]).max(initial=0.0) < 1e-6


def test_room_geometry_errors():
    with pytest.raises(ValueError, match="RoomReverb.source .* outside the room"):
        RoomReverb(source=(9.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="RoomReverb.listener .* outside the room"):
        RoomReverb(room_dim_m=(4.0, 4.0, 3.0))  # default listener x = 6
    with pytest.raises(ValueError, match="0.05 m apart"):
        RoomReverb(listener=(2.0, 3.0, 1.5))
    with pytest.raises(ValueError, match="order"):
        RoomReverb(room_dim_m=(3.0, 3.0, 2.5), source=(1, 1, 1), listener=(2, 2, 1),
                   rt60_s=1.5).process(np.zeros(10, np.float32), 16000)
    with pytest.raises(ValueError, match="too short"):
        RoomReverb(rt60_s=0.1).process(np.zeros(10, np.float32), 16000)


def test_room_change_while_streaming_moves_the_direct_sound():
    fs = 16000
    fx = RoomReverb(rt60_s=0.3)
    silence = np.zeros(fs, np.float32)
    fx.process(silence, fs)
    fx.set_params(listener=(3.0, 3.0, 1.5))  # 1 m from the source
    x = np.zeros(fs, np.float32)
    x[100] = 1.0
    y = fx.process(x, fs)[100 + fx.latency:]
    first = int(np.argmax(np.abs(y[:int(1.5 / 343.0 * fs)])))
    assert abs(first - fs / 343.0) <= 1.0
    assert np.abs(y[:int(fs / 343.0) - 45]).max() < 1e-6


def test_room_reverb_through_process_file_renders_the_tail(tmp_path):
    fs = 16000
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    x = np.zeros(fs // 2, np.float32)
    x[0] = 0.5
    sf.write(str(src), x, fs, subtype="FLOAT")
    fx = RoomReverb(rt60_s=0.3)
    report = dsp.process_file(src, dst, fx)
    y, rate = sf.read(str(dst), dtype="float32")
    assert rate == fs and report.latency == fx.latency_at(fs)
    assert y.size == x.size + fx.tail_at(fs)
    h = RoomReverb(rt60_s=0.3)._impulse_response(fs)[0]
    np.testing.assert_allclose(y[:h.size], 0.5 * h, rtol=0, atol=1e-5)

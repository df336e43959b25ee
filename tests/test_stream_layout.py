"""A remote Opus stream is decoded with its own channel count (the TOC's
stereo flag) and given in the listener's layout (engine.receiver)."""

import numpy as np

from stagevox.engine.codec import make_decoder, make_encoder
from stagevox.engine.receiver import _StreamLayout

RATE = 48000
N = 960


def frames(channels, count, rng):
    t = np.arange(count * N) / RATE
    x = np.stack([0.3 * np.sin(2 * np.pi * 330 * t), 0.3 * np.sin(2 * np.pi * 550 * t)])
    x = (x + 0.01 * rng.standard_normal(x.shape)).astype(np.float32)[:channels]
    return [np.ascontiguousarray(x[:, i * N:(i + 1) * N]) for i in range(count)]


def encoded(channels, count, rng, application="audio"):
    enc = make_encoder("opus", channels=channels, bitrate=64000 * channels, frame_ms=20,
                       application=application)
    return [enc.encode(f) for f in frames(channels, count, rng)]


def test_a_mono_stream_stays_mono_through_concealment_for_a_stereo_listener(rng):
    enc = make_encoder("opus", channels=1, bitrate=32000, frame_ms=20, application="voip")
    packets = [enc.encode((0.2 * rng.standard_normal((1, N))).astype(np.float32))
               for _ in range(10)]
    dec = _StreamLayout(2)
    for p in packets:
        y = dec.decode(p)
    assert dec.stream_channels == 1 and y.shape == (2, N)
    np.testing.assert_array_equal(y[0], y[1])
    concealed = dec.conceal(N)
    np.testing.assert_array_equal(concealed[0], concealed[1])
    assert np.abs(concealed).max() > 0.01
    # The plain stereo decoder this replaces conceals the two ears differently.
    plain = make_decoder("opus", 2)
    for p in packets:
        plain.decode(p)
    concealed = plain.conceal(N)
    assert np.abs(concealed[0] - concealed[1]).max() > 0.01


def test_the_layout_follows_a_change_of_profile_and_mixes_down_for_mono(rng):
    stereo = _StreamLayout(2)
    mono = _StreamLayout(1)
    for p in encoded(1, 5, rng) + encoded(2, 10, rng):
        y2, y1 = stereo.decode(p), mono.decode(p)
    assert stereo.stream_channels == 2 and mono.stream_channels == 2
    assert y2.shape == (2, N) and y1.shape == (1, N)

    def level(x, hz):
        return np.abs(np.fft.rfft(x * np.hanning(N)))[round(hz * N / RATE)]
    # Left 330 Hz, right 550 Hz; the mono listener hears both at half level.
    assert level(y2[0], 330) > 10 * level(y2[0], 550)
    assert level(y2[1], 550) > 10 * level(y2[1], 330)
    np.testing.assert_allclose(y1[0], y2.mean(axis=0), atol=1e-6)
    assert stereo.decode_fec(encoded(2, 1, rng)[0], N).shape == (2, N)

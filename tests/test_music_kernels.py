"""The music's frame kernel (dsp.kernels.music.mix_music) against the same
arithmetic written out with NumPy: the published voice plus the music under
a gain ramp, and the music kept for the local playout in the ring."""

import numpy as np
import pytest
from stagevox.dsp.kernels import music as kern


@pytest.mark.parametrize("voice_channels", [1, 2])
@pytest.mark.parametrize("gains", [(0.7, 0.7), (1.0, 0.25)])
def test_mix_music_matches_numpy(rng, voice_channels, gains):
    n, start, size = 480, 123, 1000
    voice = rng.uniform(-0.5, 0.5, (voice_channels, n)).astype(np.float32)
    music = rng.uniform(-0.5, 0.5, (2, 2000)).astype(np.float32)
    ring = np.zeros((2, size), np.float32)
    state = np.array([900, 300], np.int64)          # wraps around the end while written
    ring[:, 900:] = 1.0
    ring[:, :200] = 2.0
    out = np.empty_like(voice)
    local = np.empty((2, n), np.float32)
    g0, g1 = gains
    kern.mix_music(voice, music, start, g0, g1, 0.4, out, local, ring, state)

    piece = music[:, start:start + n].astype(np.float64)
    ramp = g0 + (g1 - g0) * np.arange(1, n + 1) / n
    added = piece * ramp
    if voice_channels == 1:
        added = added.mean(axis=0, keepdims=True)
    np.testing.assert_allclose(out, voice + added, atol=2e-7)
    np.testing.assert_allclose(local, 0.4 * piece, atol=1e-7)
    # The ring held 300 samples and got 480 more: 780, the new ones last.
    kept = np.empty((2, 800), np.float32)
    kern.ring_read(ring, state, kept)
    np.testing.assert_array_equal(kept[:, :100], 1.0)
    np.testing.assert_array_equal(kept[:, 100:300], 2.0)
    np.testing.assert_array_equal(kept[:, 300:780], local)
    np.testing.assert_array_equal(kept[:, 780:], 0.0)
    assert state[1] == 0

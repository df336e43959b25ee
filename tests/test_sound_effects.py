"""Sound effects (engine.sound_effects through engine.music.MusicMixer):
several at once, published or local only, loops, pitch, pan, gain."""

import librosa
import numpy as np
import pytest
import soundfile as sf

from stagevox.dsp.errors import ParameterError
from stagevox.engine.music import MusicMixer

RATE = 48000
FRAME = 480


@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("effects")
    rng = np.random.default_rng(9)
    out = {}
    for name, seconds in (("a", 0.3), ("b", 0.5)):
        x = (0.1 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
        out[name] = x
        sf.write(folder / f"{name}.wav", x, RATE, subtype="FLOAT")
    t = np.arange(int(0.6 * RATE)) / RATE
    tone = sum(0.2 / k * np.sin(2 * np.pi * 220 * k * t) for k in range(1, 6))
    sf.write(folder / "tone.wav", tone.astype(np.float32), RATE, subtype="FLOAT")
    out["folder"] = folder
    return out


def run(mixer, frames):
    silence = np.zeros((2, FRAME), np.float32)
    published, local = [], []
    for _ in range(frames):
        published.append(mixer.mix_publish(silence))
        local.append(mixer.playout(FRAME, RATE, 2))
    return np.concatenate(published, axis=1), np.concatenate(local, axis=1)


def gain_of(y, x):
    return float(np.dot(y[:len(x)], x) / np.dot(x, x))


def test_two_at_once_one_published_one_local(sounds):
    finished = []
    mixer = MusicMixer()
    mixer.on_effect_finished = finished.append
    folder = sounds["folder"]
    mixer.effects.preload(1, folder / "a.wav")
    mixer.effects.play(1, pan=-1.0, gain=50)                     # left only, published
    mixer.effects.play(2, folder / "b.wav", publish=False)       # centre, local only
    published, local = run(mixer, 60)
    lag = mixer._limiter.latency
    a, b = sounds["a"], sounds["b"]
    left = np.sqrt(2) * 0.5                                        # constant power, hard left
    assert gain_of(published[0, lag:], a) == pytest.approx(left, abs=0.01)
    assert np.abs(published[1]).max() < 1e-6                     # nothing on the right
    assert abs(gain_of(published[0, lag:], b)) < 0.01          # b is not published
    # Heard here: both, a on the left, b in the centre at full gain.
    both = np.stack([a, b[:len(a)]], axis=1)
    (g_a, g_b), *_ = np.linalg.lstsq(both, local[0, :len(a)], rcond=None)
    assert g_a == pytest.approx(left, abs=0.01) and g_b == pytest.approx(1.0, abs=0.01)
    assert gain_of(local[1, len(a):], b[len(a):]) == pytest.approx(1.0, abs=0.01)
    assert sorted(finished) == [1, 2] and not mixer.effects.active


def test_loops_pause_resume_and_stop(sounds):
    finished = []
    mixer = MusicMixer()
    mixer.on_effect_finished = finished.append
    mixer.effects.play(1, sounds["folder"] / "a.wav", loop_count=2, publish=False)
    _, local = run(mixer, 100)                                   # 1 s: three plays of 0.3 s
    sounding = np.nonzero(np.abs(local[0]) > 0)[0]
    assert (sounding[-1] + 1) == 3 * len(sounds["a"])
    assert finished == [1]
    mixer.effects.play(1, loop_count=-1, publish=False)
    run(mixer, 5)
    mixer.effects.pause(1)
    assert not run(mixer, 3)[1].any()
    mixer.effects.resume(1)
    assert run(mixer, 3)[1].any()
    mixer.effects.stop_all()
    assert not run(mixer, 3)[1].any() and finished == [1]


def test_pitch_of_an_effect(sounds):
    mixer = MusicMixer()
    mixer.effects.play(3, sounds["folder"] / "tone.wav", pitch=1.5, publish=False)
    _, local = run(mixer, 70)
    f0, _, _ = librosa.pyin(local[0].astype(np.float64), fmin=60, fmax=1000, sr=RATE,
                            frame_length=2048)
    cents = 1200 * np.log2(np.nanmedian(f0) / (220 * 1.5))
    assert abs(cents) < 20


def test_bad_arguments(sounds, tmp_path):
    effects = MusicMixer().effects
    with pytest.raises(ParameterError, match="no such file"):
        effects.preload(1, tmp_path / "none.wav")
    with pytest.raises(ParameterError, match="not preloaded"):
        effects.play(5)
    for kw, pattern in ((dict(pitch=3.0), "pitch"), (dict(pan=2), "pan"),
                        (dict(gain=101), "gain"), (dict(loop_count=-2), "loop_count")):
        with pytest.raises(ParameterError, match=pattern):
            effects.play(1, sounds["folder"] / "a.wav", **kw)

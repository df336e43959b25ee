"""Music mixing (engine.music): volumes, pitch, speed, ducking, loopback,
events and the Client's methods, without a network."""

import librosa
import numpy as np
import pytest
import soundfile as sf
from music_helpers import StateRecorder

from stagevox import engine
from stagevox.dsp.errors import ParameterError
from stagevox.engine.music import MusicMixer

RATE = 48000
F0 = 220.0
FRAME = 480


def harmonic_tone(seconds, f0=F0):
    t = np.arange(int(RATE * seconds)) / RATE
    return sum(0.2 / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 6)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixer")
    rng = np.random.default_rng(3)
    noise = (0.1 * rng.standard_normal((RATE, 2))).astype(np.float32)
    tone = harmonic_tone(1.0)
    paths = {"noise": folder / "noise.wav", "tone": folder / "tone.wav"}
    sf.write(paths["noise"], noise, RATE, subtype="FLOAT")
    sf.write(paths["tone"], np.stack([tone, tone], 1), RATE, subtype="FLOAT")
    paths["noise_data"] = noise.T
    return paths


def started(path, **kw):
    events = StateRecorder()
    mixer = MusicMixer(events)
    mixer.start(path, buffer_ms=5000, **kw)
    assert mixer.source.wait_ready(full=True)
    return mixer, events


def render_until_end(mixer, limit_s=4.0, tail_frames=10):
    out = []
    for _ in range(int(limit_s * RATE / FRAME)):
        out.append(mixer.render(FRAME))
        if mixer.source.finished:
            break
    out += [mixer.render(FRAME) for _ in range(tail_frames)]
    return np.concatenate(out, axis=1)


def test_volumes_measured_by_correlation_with_the_sources(files, speech):
    """The published block is voice + music x publish volume (least squares on
    the two sources), the local playout is music x playout volume."""
    mixer, _ = started(files["noise"])
    mixer.set_publish_volume(40)
    mixer.set_playout_volume(70)
    n = RATE // 2
    voice = 0.3 * speech[RATE:RATE + n]
    published, played = [], []
    for i in range(0, n, FRAME):
        published.append(mixer.mix_publish(voice[None, i:i + FRAME]))
        played.append(mixer.playout(FRAME, RATE, 2))
    published = np.concatenate(published, axis=1)[0]
    played = np.concatenate(played, axis=1)
    music = files["noise_data"][:, :n]
    lag = mixer._limiter.latency
    y = published[lag:]
    basis = np.stack([voice[:n - lag], music.mean(axis=0)[:n - lag]], 1)
    (g_voice, g_music), *_ = np.linalg.lstsq(basis, y, rcond=None)
    assert abs(g_voice - 1.0) < 0.02 and abs(g_music - 0.4) < 0.02, (g_voice, g_music)
    g_play = float(np.sum(played * music) / np.sum(music * music))
    assert abs(g_play - 0.7) < 0.01
    mixer.stop()


def test_loopback_is_played_locally_and_not_published(files):
    mixer, _ = started(files["noise"], loopback=True)
    silence = np.zeros((1, FRAME), np.float32)
    published = np.concatenate([mixer.mix_publish(silence) for _ in range(20)], axis=1)
    assert not published.any()
    played = np.concatenate([mixer.playout(FRAME, RATE, 2) for _ in range(20)], axis=1)
    music = files["noise_data"][:, :played.shape[1]]
    assert np.corrcoef(played.ravel(), music.ravel())[0, 1] > 0.999
    mixer.stop()


def test_limiter_keeps_the_published_sum_under_its_ceiling(files):
    mixer, _ = started(files["noise"])
    loud = np.full((1, FRAME), 0.95, np.float32)
    out = np.concatenate([mixer.mix_publish(loud) for _ in range(40)], axis=1)
    assert np.max(np.abs(out)) <= 10 ** (-1 / 20) + 1e-6
    mixer.stop()


def median_f0(y):
    f0, _, _ = librosa.pyin(y.astype(np.float64), fmin=60, fmax=1000, sr=RATE,
                            frame_length=2048)
    return float(np.nanmedian(f0))


@pytest.mark.parametrize("semitones, speed", [(5, 100), (-7, 100), (0, 150), (3, 200)])
def test_pitch_moves_by_the_semitones_asked_and_speed_keeps_it(files, semitones, speed):
    mixer, _ = started(files["tone"])
    mixer.set_pitch(semitones)
    mixer.set_speed(speed)
    y = render_until_end(mixer)[0]
    voiced = np.nonzero(np.abs(y) > 0.02)[0]
    f0 = median_f0(y[voiced[0]:voiced[-1]])
    cents = 1200 * np.log2(f0 / (F0 * 2 ** (semitones / 12)))
    assert abs(cents) < 20, (semitones, speed, f0)


@pytest.mark.parametrize("speed", [50, 200, 400])
def test_speed_changes_the_duration_as_asked(files, speed):
    mixer, events = started(files["tone"])
    mixer.set_speed(speed)
    y = render_until_end(mixer, tail_frames=30)[0]
    sounding = np.nonzero(np.abs(y) > 0.02)[0]
    seconds = (sounding[-1] - sounding[0]) / RATE
    assert abs(seconds / (100 / speed) - 1) < 0.02, seconds
    assert events.done.wait(2.0)          # from the worker, once the last sample is read
    assert ("stopped", "all_loops_completed") in events.events


def test_ducking_lowers_the_music_under_the_voice_only(files):
    mixer, _ = started(files["noise"], cycle=-1)
    mixer.set_ducking(True, depth_db=-12)
    mixer.set_publish_volume(50)
    silence = np.zeros((1, FRAME), np.float32)
    voice = 0.3 * np.sin(2 * np.pi * 300 * np.arange(FRAME) / RATE)[None].astype(np.float32)
    quiet = np.concatenate([mixer.mix_publish(silence) for _ in range(50)], axis=1)[:, -4800:]
    talking = np.concatenate([mixer.mix_publish(voice) for _ in range(50)], axis=1)[:, -4800:]
    # The limiter (not acting at these levels) delays the sum by its look-ahead.
    lag = mixer._limiter.latency
    voice_out = np.tile(voice, 60)[:, -4800 - lag:-lag]
    level = 20 * np.log10(np.std(talking - voice_out) / np.std(quiet))
    assert abs(level - (-12)) < 1.0, level
    mixer.stop()


def test_pause_resume_stop_and_position(files):
    mixer, events = started(files["noise"])
    mixer.render(4800)
    mixer.pause()
    assert not mixer.render(FRAME).any()
    at = mixer.position_ms
    mixer.resume()
    assert mixer.render(FRAME).any()
    assert mixer.position_ms == pytest.approx(at + 10, abs=0.1)
    mixer.set_position(500)
    assert mixer.position_ms == 500
    assert mixer.duration_ms == pytest.approx(1000, abs=1)
    mixer.stop()
    assert mixer.position_ms is None
    assert events.events == [("playing", "started"), ("paused", "paused_by_user"),
                      ("playing", "resumed_by_user"), ("stopped", "stopped_by_user")]


def test_bad_arguments_raise_parameter_errors(files):
    mixer = MusicMixer()
    for call, arg, pattern in ((mixer.set_publish_volume, 101, r"volume .*\[0, 100\]"),
                               (mixer.set_playout_volume, -1, "volume"),
                               (mixer.set_pitch, 13, r"pitch .*\[-12, 12\]"),
                               (mixer.set_speed, 40, r"speed .*\[50, 400\]"),
                               (mixer.set_position, 10, "no music"),
                               (mixer.start, "", "path or URL")):
        with pytest.raises(ParameterError, match=pattern):
            call(arg)


def test_client_methods_events_and_local_playout(files, tmp_path):
    """Without joining: the music plays into pull_audio at the playout volume
    while push_audio clocks it; a missing file is an event on the handler."""
    client = engine.Client(channels=2)
    handler = StateRecorder()
    client.register_event_handler(handler)
    client.start_audio_mixing(str(tmp_path / "missing.mp3"))
    assert handler.done.wait(5.0)
    assert handler.events == [("failed", "not_found")]
    client.start_audio_mixing(str(files["noise"]))
    client._music.source.wait_ready(full=True)
    client.adjust_audio_mixing_volume(50)
    assert client.get_audio_mixing_duration() == pytest.approx(1000, abs=1)
    played = []
    for _ in range(10):
        client.push_audio(np.zeros((2, FRAME), np.float32))
        played.append(client.pull_audio(FRAME))
    played = np.concatenate(played, axis=1)
    music = files["noise_data"][:, :played.shape[1]]
    assert float(np.sum(played * music) / np.sum(music * music)) == pytest.approx(0.5, abs=0.01)
    assert client.get_audio_mixing_current_position() == pytest.approx(100, abs=0.1)
    client.stop_audio_mixing()
    assert handler.events[-1] == ("stopped", "stopped_by_user")
    with pytest.raises(ParameterError, match="music_standard_stereo"):
        client.set_audio_profile("music")
    client.set_audio_profile("music_high_quality_stereo")
    assert client._sender.channels == 2 and client._sender.encoder.bitrate == 128000


@pytest.mark.parametrize("voice_channels", [1, 2])
def test_kernel_frame_path_matches_the_numpy_path(files, speech, voice_channels):
    """The usual frame (one kernel call) against the general NumPy path that
    effects take, on the same music, voice, volumes and ducking: the same
    published blocks and the same local playout."""
    fast, _ = started(files["noise"])
    slow, _ = started(files["noise"])
    for mixer in (fast, slow):
        mixer.set_publish_volume(60)
        mixer.set_playout_volume(30)
        mixer.set_ducking(True, -20.0)
    voice = np.tile(speech[:50 * FRAME], (voice_channels, 1)).astype(np.float32)
    for k in range(50):
        x = np.ascontiguousarray(voice[:, k * FRAME:(k + 1) * FRAME])
        published = fast.mix_publish(x)
        # The same frame through the NumPy path, then the limiter, as mix_publish does.
        expected = slow._limiter.process(slow._mix_all(x), RATE)
        np.testing.assert_allclose(published, expected, atol=1e-6, err_msg=f"frame {k}")
        np.testing.assert_allclose(fast.playout(FRAME, RATE, 2), slow.playout(FRAME, RATE, 2),
                                   atol=1e-7, err_msg=f"frame {k}")
    fast.stop()
    slow.stop()

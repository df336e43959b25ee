"""``stagevox host ... --music FILE [--music-volume V]``, run in this process
against a real server on 127.0.0.1, with a stereo listener recording."""

import threading
import time

import numpy as np
import pytest
import soundfile as sf

from stagevox import cli, engine

SECRET = "music-cli-secret"
RATE = 48000


@pytest.fixture
def server():
    with engine.Server(secret=SECRET) as s:
        yield s


def host_argv(server, *extra):
    host, port = server.address
    return ["host", "--server", f"{host}:{port}", "--server-key", server.public_key_text,
            "--channel", "room", "--uid", "1",
            "--token", engine.make_token(SECRET, "room", 1, "host"), *map(str, extra)]


@pytest.fixture
def files(tmp_path, speech):
    voice = tmp_path / "voice.wav"
    sf.write(voice, 0.5 * speech[:int(1.5 * RATE)], RATE)
    t = np.arange(int(3 * RATE)) / RATE
    music = np.stack([0.2 * np.sin(2 * np.pi * 330 * t), 0.2 * np.sin(2 * np.pi * 550 * t)], 1)
    path = tmp_path / "music.flac"
    sf.write(path, music, RATE)
    return voice, path


def record(server, seconds, out):
    listener = engine.Client(channels=2)
    listener.join_channel(server.address, "room", 2,
                          engine.make_token(SECRET, "room", 2, "audience"), "audience",
                          server_key=server.public_key)
    t0 = time.monotonic()
    try:
        for i in range(int(seconds * 100)):
            delay = t0 + (i + 1) * 0.01 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            out.append(listener.pull_audio(480))
    finally:
        listener.leave_channel()


def level_at(x, hz):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) / len(x)
    k = int(round(hz * len(x) / RATE))
    return float(spectrum[k - 2:k + 3].max())


def test_host_with_music_sends_the_music_in_stereo_at_its_volume(server, files, capsys):
    voice, music = files
    heard = []
    listener = threading.Thread(target=record, args=(server, 3.0, heard))
    listener.start()
    time.sleep(0.3)
    status = cli.main(host_argv(server, "--input", voice, "--music", music,
                                "--music-volume", 50))
    listener.join(10)
    assert status == 0, capsys.readouterr().err
    y = np.concatenate(heard, axis=1)
    # The host starts when its command has loaded and joined: judge the 0.4 s
    # where the music is loudest (it plays for 1.5 s, with the voice).
    width = int(0.4 * RATE)
    starts = range(0, y.shape[1] - width, RATE // 10)
    best = max(starts, key=lambda k: level_at(y[0, k:k + width], 330))
    y = y[:, best:best + width]
    # music_standard_stereo by default with --music: 330 Hz left, 550 Hz right,
    # each at half the file's amplitude: 0.1, which level_at reads as 0.1 / 4
    # (half for the one-sided spectrum, half for the Hann window's mean).
    for channel, here, other in ((0, 330, 550), (1, 550, 330)):
        assert level_at(y[channel], here) == pytest.approx(0.1 / 4, rel=0.15)
        assert level_at(y[channel], other) < 0.1 * level_at(y[channel], here)


def test_bad_music_volume_exits_before_joining(server, files, capsys):
    voice, music = files
    status = cli.main(host_argv(server, "--input", voice, "--music", music,
                                "--music-volume", 150))
    assert status == 1
    assert "--music-volume must be in 0..100" in capsys.readouterr().err
    assert sum(server.counters.values()) == 0


def test_missing_music_is_told_and_the_voice_goes_on(server, files, tmp_path, capsys):
    voice, _ = files
    status = cli.main(host_argv(server, "--input", voice, "--music", tmp_path / "none.mp3"))
    err = capsys.readouterr().err
    assert status == 0, err
    assert "the music cannot be played (not_found)" in err

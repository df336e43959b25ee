"""The decode-ahead media source of music mixing (engine.media_source):
formats, failures as events, seeking, loops."""

import numpy as np
import pytest
import scipy.signal as ss
import soundfile as sf
import soxr

from music_helpers import StateRecorder
from stagevox.dsp.errors import ParameterError
from stagevox.engine.media_source import MediaSource

RATE = 48000
FILE_RATE = 44100
SECONDS = 1.0


def _stereo_test_signal(rate, seconds):
    """Left a 440 Hz tone, right a 660 Hz one, both under a slow chirp-like
    amplitude wobble so that a place in the file can be told from another."""
    t = np.arange(int(rate * seconds)) / rate
    wobble = 0.6 + 0.4 * np.sin(2 * np.pi * (1.3 * t + 0.7 * t * t))
    left = 0.3 * wobble * np.sin(2 * np.pi * 440 * t)
    right = 0.3 * wobble * np.sin(2 * np.pi * 660 * t)
    return np.stack([left, right], 1).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("music")
    x = _stereo_test_signal(FILE_RATE, SECONDS)
    paths = {}
    for suffix in ("wav", "flac", "ogg", "mp3"):
        paths[suffix] = folder / f"music.{suffix}"
        sf.write(paths[suffix], x, FILE_RATE)
    # band-limited noise, where every place differs from every other (for seeking)
    noise = np.random.default_rng(5).standard_normal((int(FILE_RATE * SECONDS), 2))
    noise = ss.sosfilt(ss.butter(4, 5000, fs=FILE_RATE, output="sos"), 0.2 * noise, axis=0)
    for suffix in ("wav", "ogg", "mp3"):
        paths[f"noise.{suffix}"] = folder / f"noise.{suffix}"
        sf.write(paths[f"noise.{suffix}"], noise.astype(np.float32), FILE_RATE)
    paths["noise"] = soxr.resample(noise.astype(np.float32), FILE_RATE, RATE, quality="VHQ").T
    paths["text"] = folder / "notes.mp3"
    paths["text"].write_text("these are not the notes of any song\n" * 50)
    # the reference at 48 kHz, as (2, n)
    paths["reference"] = soxr.resample(x, FILE_RATE, RATE, quality="VHQ").T
    return paths


def read_all(source, limit_s=10.0):
    """Everything the source gives until its last pass has been read."""
    out = []
    for _ in range(int(limit_s * 100)):
        source.wait_ready(timeout=2.0, full=True)
        out.append(source.read(4800))
        if source.finished or source.failed:
            break
    return np.concatenate(out, axis=1)


def dominant_hz(x):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * RATE / len(x)


@pytest.mark.parametrize("suffix", ["wav", "flac", "ogg", "mp3"])
def test_reads_each_format_at_48k_stereo(files, suffix):
    rec = StateRecorder()
    source = MediaSource(files[suffix], rec)
    try:
        y = read_all(source)
    finally:
        source.close()
    ref = files["reference"]
    assert rec.events[0] == ("playing", "started")
    assert rec.done.wait(2.0) and rec.events[-1] == ("stopped", "all_loops_completed")
    assert abs(source.duration_ms - 1000 * SECONDS) < 30
    assert abs(y.shape[1] - ref.shape[1]) <= 0.01 * RATE        # within 10 ms
    assert abs(dominant_hz(y[0]) - 440) < 3 and abs(dominant_hz(y[1]) - 660) < 3
    n = min(y.shape[1], ref.shape[1])
    # Lossless formats come back as the file; lossy ones close to it, in place
    # (FFmpeg removes the codecs' delay).
    snr = 10 * np.log10(np.sum(ref[:, :n] ** 2) / np.sum((y[:, :n] - ref[:, :n]) ** 2))
    assert snr > (60 if suffix in ("wav", "flac") else 12), snr


def test_missing_and_unsupported_files_are_events_not_exceptions(files, tmp_path):
    for path, reason in ((tmp_path / "gone.mp3", "not_found"), (files["text"], "unsupported")):
        rec = StateRecorder()
        source = MediaSource(path, rec)
        assert rec.done.wait(5.0)
        assert rec.events == [("failed", reason)]
        assert source.read(480).shape == (2, 0)        # nothing, and no exception
        source.close()


@pytest.mark.parametrize("suffix", ["wav", "ogg", "mp3"])
def test_seek_lands_within_20_ms(files, suffix):
    """Where the audio read after a start position or a seek comes from in the
    file, found by cross-correlation with the file's noise."""
    ref = files["noise"][0]
    piece = int(0.15 * RATE)
    for start_ms, seek_ms in ((250, 620), (0, 80), (900, 10)):
        source = MediaSource(files[f"noise.{suffix}"], start_pos_ms=start_ms)
        try:
            assert source.wait_ready(full=True)
            first = source.read(piece)[0]
            source.seek(seek_ms)
            assert source.position_ms == seek_ms
            assert source.wait_ready(full=True)
            second = source.read(piece)[0]
        finally:
            source.close()
        for got, want_ms in ((first, start_ms), (second, seek_ms)):
            assert len(got) >= RATE // 20
            corr = ss.correlate(ref, got, mode="valid")
            found_ms = 1000 * np.argmax(corr) / RATE
            assert abs(found_ms - want_ms) <= 20, (suffix, want_ms, found_ms)


def test_plays_cycle_times_then_stops(files):
    rec = StateRecorder()
    source = MediaSource(files["flac"], rec, cycle=3)
    try:
        y = read_all(source)
    finally:
        source.close()
    assert rec.done.wait(2.0)
    assert rec.events == [("playing", "started"), ("playing", "new_loop"),
                          ("playing", "new_loop"), ("stopped", "all_loops_completed")]
    one = files["reference"].shape[1]
    assert abs(y.shape[1] - 3 * one) <= 0.03 * RATE
    # each pass is the file again
    third = y[0, 2 * one + 2400:2 * one + 2400 + RATE // 4]
    assert np.corrcoef(third, files["reference"][0, 2400:2400 + RATE // 4])[0, 1] > 0.99


def test_cycle_minus_one_keeps_looping(files):
    rec = StateRecorder()
    source = MediaSource(files["wav"], rec, cycle=-1)
    try:
        got = 0
        for _ in range(600):
            source.wait_ready(timeout=2.0, full=True)
            got += source.read(4800).shape[1]
            if got > 4.5 * SECONDS * RATE:
                break
        assert not source.finished
        assert got > 4.5 * SECONDS * RATE
        assert rec.events.count(("playing", "new_loop")) >= 4
    finally:
        source.close()


def test_bad_arguments_raise_parameter_errors(files):
    with pytest.raises(ParameterError, match="cycle"):
        MediaSource(files["wav"], cycle=0)
    with pytest.raises(ParameterError, match="start_pos_ms"):
        MediaSource(files["wav"], start_pos_ms=-5)
    source = MediaSource(files["wav"])
    try:
        source.wait_ready()
        with pytest.raises(ParameterError, match="past the end"):
            source.seek(5000)
    finally:
        source.close()


def test_a_seek_after_the_end_plays_again_from_there(files):
    rec = StateRecorder()
    source = MediaSource(files["noise.wav"], rec)
    try:
        read_all(source)
        assert rec.done.wait(2.0) and source.finished
        source.seek(500)
        assert source.wait_ready(full=True)
        got = source.read(int(0.15 * RATE))[0]
    finally:
        source.close()
    corr = ss.correlate(files["noise"][0], got, mode="valid")
    assert abs(1000 * np.argmax(corr) / RATE - 500) <= 20
    assert rec.events.count(("playing", "started")) == 2

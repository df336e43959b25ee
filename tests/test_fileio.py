"""dsp.process_file: streaming, alignment, tails, formats, and losing nothing on error."""

import os
import tracemalloc

import av
import numpy as np
import pytest
import soundfile as sf

from stagevox import dsp
from stagevox.dsp.fileio import AudioFileError, process_file
from stagevox.dsp.processor import Processor

LSB16 = 1.0 / 32768.0


def write(path, audio, rate=48000, subtype="PCM_16"):
    sf.write(str(path), np.asarray(audio).T, rate, subtype=subtype)
    return path


def read(path):
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return audio.T, rate


def leftovers(folder):
    """Temporary files left next to outputs (they start with a dot)."""
    return [p for p in os.listdir(folder) if p.startswith(".")]


@pytest.fixture
def tone(rng):
    t = np.arange(48000 * 2) / 48000
    return (0.25 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)).astype(
        np.float32)


class Tail(Processor, register=False):
    """Test processor: identity with a declared tail of 1000 samples."""

    def tail_at(self, sample_rate):
        return 1000

    def _process(self, block):
        return block.copy()


class FailOnThirdBlock(Processor, register=False):
    def _prepare(self):
        self.calls = 0

    def _process(self, block):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("boom")
        return block.copy()


def test_gain_applied_and_length_kept(tmp_path, tone):
    src = write(tmp_path / "in.wav", tone)
    report = process_file(src, tmp_path / "out.wav", dsp.Gain(gain_db=6.0206), block_size=1000)
    x, _ = read(src)
    y, rate = read(tmp_path / "out.wav")
    assert rate == 48000 and y.shape == x.shape
    # 16-bit in and out: within two quantisation steps of the exact product.
    np.testing.assert_allclose(y, 2 * x, atol=2 * LSB16)
    assert report.input_frames == report.output_frames == x.shape[1]


def test_latency_is_compensated(tmp_path, tone):
    """A limiter below its ceiling is a pure delay: after compensation, identity."""
    src = write(tmp_path / "in.wav", tone)
    lim = dsp.Limiter(ceiling_db=-1, lookahead_ms=7)
    report = process_file(src, tmp_path / "out.wav", lim, block_size=333)
    assert report.latency == round(0.007 * 48000)
    x, _ = read(src)
    y, _ = read(tmp_path / "out.wav")
    assert y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=LSB16)


def test_tail_is_rendered(tmp_path, tone):
    src = write(tmp_path / "in.wav", tone)
    report = process_file(src, tmp_path / "out.wav", Tail(), block_size=4096)
    y, _ = read(tmp_path / "out.wav")
    assert y.shape[1] == tone.size + 1000 == report.output_frames


def test_mono_to_stereo_effect_writes_stereo(tmp_path, tone):
    src = write(tmp_path / "in.wav", tone)
    process_file(src, tmp_path / "out.flac", dsp.Pan(pan=-1.0))
    y, _ = read(tmp_path / "out.flac")
    assert y.shape == (2, tone.size)
    assert np.abs(y[1]).max() < 2 * LSB16  # hard left


def test_block_size_does_not_change_the_result(tmp_path, tone):
    src = write(tmp_path / "in.wav", tone, subtype="FLOAT")
    fx = dsp.Chain(dsp.Equalizer(gains_db=[3, 0, -2, 0, 4, 0, -5, 2, 0, 1]), dsp.Compressor())
    process_file(src, tmp_path / "a.wav", fx, block_size=7)
    process_file(src, tmp_path / "b.wav", fx, block_size=48000)
    a, _ = read(tmp_path / "a.wav")
    b, _ = read(tmp_path / "b.wav")
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_float_input_keeps_float_output(tmp_path, tone):
    src = write(tmp_path / "in.wav", tone * 8, subtype="FLOAT")  # peaks above full scale
    report = process_file(src, tmp_path / "out.wav", None)
    assert sf.info(str(tmp_path / "out.wav")).subtype == "FLOAT"
    assert report.clipped_samples == 0
    y, _ = read(tmp_path / "out.wav")
    np.testing.assert_array_equal(y[0], tone * 8)


def test_integer_output_clips_and_reports(tmp_path, tone):
    src = write(tmp_path / "in.wav", tone * 8, subtype="FLOAT")
    report = process_file(src, tmp_path / "out.flac", None)
    expected = int(np.count_nonzero(np.abs(tone * 8) > 1.0))
    assert report.clipped_samples == expected > 0
    y, _ = read(tmp_path / "out.flac")
    assert np.abs(y).max() <= 1.0


def test_resampling_to_requested_rate(tmp_path):
    rate_in = 44100
    t = np.arange(rate_in) / rate_in
    src = write(tmp_path / "in.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), rate_in)
    report = process_file(src, tmp_path / "out.wav", dsp.Gain(), sample_rate=16000)
    y, rate = read(tmp_path / "out.wav")
    assert rate == 16000 == report.sample_rate
    assert abs(y.shape[1] - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(y[0] * np.hanning(y.shape[1])))
    assert abs(np.argmax(spectrum) * 16000 / y.shape[1] - 1000) < 2


def test_rates_above_48k_are_brought_down(tmp_path):
    t = np.arange(96000) / 96000
    src = write(tmp_path / "in.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), 96000)
    report = process_file(src, tmp_path / "out.wav", dsp.Gain())
    assert report.sample_rate == 48000 and sf.info(str(tmp_path / "out.wav")).samplerate == 48000


def test_output_is_read_back_by_an_independent_decoder(tmp_path, tone):
    """FFmpeg (through PyAV) decodes what we write to the same samples."""
    src = write(tmp_path / "in.wav", tone, subtype="FLOAT")
    process_file(src, tmp_path / "out.flac", dsp.Gain(gain_db=-6))
    ours, _ = read(tmp_path / "out.flac")
    with av.open(str(tmp_path / "out.flac")) as container:
        stream = container.streams.audio[0]
        assert stream.rate == 48000 and stream.codec_context.name == "flac"
        decoded = list(container.decode(stream))
    # A float input is written as 24-bit FLAC, which FFmpeg hands out as s32.
    assert sf.info(str(tmp_path / "out.flac")).subtype == "PCM_24"
    assert {f.format.name for f in decoded} == {"s32"}
    theirs = np.concatenate([f.to_ndarray() for f in decoded], axis=1) / 2.0 ** 31
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, atol=1e-7)


def test_memory_does_not_grow_with_length(tmp_path):
    """Peak Python-side allocation is the same for a 20 s and a 200 s file."""
    peaks = []
    for seconds in (20, 200):
        src = tmp_path / f"in{seconds}.wav"
        with sf.SoundFile(str(src), "w", 16000, 1, subtype="PCM_16") as f:
            block = np.full(16000, 0.1, np.float32)
            for _ in range(seconds):
                f.write(block)
        fx = dsp.Equalizer(gains_db=[2] * 10)
        tracemalloc.start()
        process_file(src, tmp_path / f"out{seconds}.wav", fx, block_size=4096)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # 10x the audio (6.4 MB more as float32) may not cost more than 0.5 MB more.
    assert peaks[1] - peaks[0] < 500_000, peaks


def test_progress_reports_input_frames(tmp_path, tone):
    src = write(tmp_path / "in.wav", tone)
    seen = []
    process_file(src, tmp_path / "out.wav", None, block_size=10000,
                 progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (tone.size, tone.size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


# ---------------------------------------------------------------- bad input

def test_missing_input(tmp_path):
    with pytest.raises(AudioFileError, match="no such file"):
        process_file(tmp_path / "nope.wav", tmp_path / "out.wav", None)
    assert os.listdir(tmp_path) == []


def test_empty_file(tmp_path):
    (tmp_path / "in.wav").write_bytes(b"")
    with pytest.raises(AudioFileError, match="empty"):
        process_file(tmp_path / "in.wav", tmp_path / "out.wav", None)
    assert not (tmp_path / "out.wav").exists()


def test_file_without_samples(tmp_path):
    write(tmp_path / "in.wav", np.zeros(0, np.float32))
    with pytest.raises(AudioFileError, match="no audio"):
        process_file(tmp_path / "in.wav", tmp_path / "out.wav", None)


def test_corrupt_file(tmp_path):
    (tmp_path / "in.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    with pytest.raises(AudioFileError, match="not a readable audio file"):
        process_file(tmp_path / "in.wav", tmp_path / "out.wav", None)
    assert sorted(os.listdir(tmp_path)) == ["in.wav"]


def test_unsupported_output_suffix_lists_valid_ones(tmp_path, tone):
    src = write(tmp_path / "in.wav", tone)
    with pytest.raises(AudioFileError, match=r"\.xyz.*\.wav.*\.flac"):
        process_file(src, tmp_path / "out.xyz", None)


def test_nan_samples_name_the_position_and_write_nothing(tmp_path, tone):
    bad = tone.copy()
    bad[70000] = np.nan
    src = write(tmp_path / "in.wav", bad, subtype="FLOAT")
    with pytest.raises(AudioFileError, match="sample 70000 of channel 0 is nan"):
        process_file(src, tmp_path / "out.wav", dsp.Gain(), block_size=4096)
    assert sorted(os.listdir(tmp_path)) == ["in.wav"]


def test_input_is_not_overwritten_unless_asked(tmp_path, tone):
    src = write(tmp_path / "in.wav", tone)
    before = src.read_bytes()
    with pytest.raises(AudioFileError, match="is the input file"):
        process_file(src, src, dsp.Gain(gain_db=-6))
    assert src.read_bytes() == before
    process_file(src, src, dsp.Gain(gain_db=-6.0206), overwrite=True)
    y, _ = read(src)
    np.testing.assert_allclose(y[0], tone / 2, atol=2 * LSB16)


def test_existing_output_needs_overwrite(tmp_path, tone):
    src = write(tmp_path / "in.wav", tone)
    (tmp_path / "out.wav").write_bytes(b"keep me")
    with pytest.raises(AudioFileError, match="exists already"):
        process_file(src, tmp_path / "out.wav", None)
    assert (tmp_path / "out.wav").read_bytes() == b"keep me"


def test_missing_output_folder(tmp_path, tone):
    src = write(tmp_path / "in.wav", tone)
    with pytest.raises(AudioFileError, match="does not exist"):
        process_file(src, tmp_path / "no" / "out.wav", None)


def test_error_midway_leaves_no_file_and_keeps_the_old_output(tmp_path, tone):
    src = write(tmp_path / "in.wav", tone)
    (tmp_path / "out.wav").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        process_file(src, tmp_path / "out.wav", FailOnThirdBlock(), block_size=1000,
                     overwrite=True)
    assert (tmp_path / "out.wav").read_bytes() == b"old"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("size", [0, -1, 2.5, True])
def test_bad_block_size(tmp_path, tone, size):
    src = write(tmp_path / "in.wav", tone)
    with pytest.raises(ValueError, match="block_size"):
        process_file(src, tmp_path / "out.wav", None, block_size=size)


def test_output_gets_ordinary_file_permissions(tmp_path, tone):
    """The temporary file is private (0600); the finished output must not be."""
    src, dst = write(tmp_path / "in.wav", tone), tmp_path / "out.wav"
    old = os.umask(0o022)
    try:
        process_file(src, dst, dsp.Gain(gain_db=-6.0))
    finally:
        os.umask(old)
    assert os.stat(dst).st_mode & 0o777 == 0o644


# ------------------------------------------------------------ format conversion

def _encode_with_pyav(path, audio, rate, codec):
    """Write ``audio`` (channels, frames) float32 with FFmpeg's ``codec``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        fmt = stream.codec_context.codec.audio_formats[0].name
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio), format="fltp",
                                           layout="stereo")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=fmt, layout="stereo", rate=rate)
        for f in resampler.resample(frame) + resampler.resample(None):
            container.mux(stream.encode(f))
        container.mux(stream.encode(None))


def _decode_with_pyav(path):
    """(channels, frames) float64 and the rate, decoded by FFmpeg."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        resampler = av.AudioResampler(format="fltp", rate=rate)
        frames = [r.to_ndarray() for f in container.decode(stream) for r in resampler.resample(f)]
    return np.concatenate(frames, axis=1).astype(np.float64), rate


CONVERSION_RATE = 44100


@pytest.fixture(scope="module")
def stereo_tones():
    """0.5 s of 440 Hz left and 660 Hz right at -12 dBFS."""
    t = np.arange(CONVERSION_RATE // 2) / CONVERSION_RATE
    return (0.25 * np.stack([np.sin(2 * np.pi * 440 * t),
                             np.sin(2 * np.pi * 660 * t)])).astype(np.float32)


def _write_input(path, audio):
    if path.suffix == ".mp3":
        _encode_with_pyav(path, audio, CONVERSION_RATE, "libmp3lame")
    elif path.suffix == ".m4a":  # AAC: libsndfile cannot read it, PyAV does
        _encode_with_pyav(path, audio, CONVERSION_RATE, "aac")
    elif path.suffix == ".flac":
        sf.write(str(path), audio.T, CONVERSION_RATE, subtype="PCM_24")
    else:
        sf.write(str(path), audio.T, CONVERSION_RATE, format="OGG", subtype="VORBIS")


@pytest.mark.parametrize("dst_suffix, expected_subtype", [
    (".wav", None), (".flac", None), (".ogg", "VORBIS")])
@pytest.mark.parametrize("src_suffix", [".mp3", ".flac", ".ogg", ".m4a"])
def test_any_input_converts_to_any_output(tmp_path, stereo_tones, src_suffix, dst_suffix,
                                          expected_subtype):
    """An MP3 or AAC file (from FFmpeg; AAC is read through PyAV), a FLAC or
    an Ogg Vorbis file converts to WAV, FLAC and Ogg with a sample format
    valid for the output (PCM_24 stays PCM_24, lossy inputs become PCM_16),
    and FFmpeg reads back each channel's tone at the level written (within
    0.5 dB) and the length (within the encoders' padding of 2,000 frames)."""
    src = tmp_path / f"in{src_suffix}"
    _write_input(src, stereo_tones)
    dst = tmp_path / f"out{dst_suffix}"
    process_file(src, dst, None)
    if expected_subtype is None:
        expected_subtype = "PCM_24" if src_suffix == ".flac" else "PCM_16"
    assert sf.info(str(dst)).subtype == expected_subtype
    theirs, rate = _decode_with_pyav(dst)
    assert rate == CONVERSION_RATE and theirs.shape[0] == 2
    assert abs(theirs.shape[1] - stereo_tones.shape[1]) <= 2000
    for channel, hz in enumerate((440, 660)):
        x = theirs[channel]
        spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
        assert abs(np.argmax(spectrum) * rate / x.size - hz) < 5
        middle = x[x.size // 4: 3 * x.size // 4]
        level_db = 20 * np.log10(np.sqrt(np.mean(middle ** 2)) / (0.25 / np.sqrt(2)))
        assert abs(level_db) < 0.5, (channel, level_db)

"""Processing audio files block by block, in constant memory, safely.

The output goes to a temporary file next to the destination and is renamed
over it only when everything has been written, so an error or an interrupt
never leaves a half-written file, and the input is not replaced unless asked.
"""

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, check_sample_rate
from .avreader import AvReader
from .errors import ParameterError
from .lazykernels import kernels

kcommon = kernels("common")

#: Output formats by file suffix (soundfile/libsndfile format names).
FORMATS = {
    ".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".mp3": "MP3",
    ".aif": "AIFF", ".aiff": "AIFF", ".au": "AU", ".caf": "CAF", ".w64": "W64",
    ".rf64": "RF64",
}

DEFAULT_BLOCK_SIZE = 4096


class AudioFileError(ParameterError):
    """A file cannot be read or written as asked (message names the file)."""


class OutputExistsError(AudioFileError):
    """The output exists (or is the input) and ``overwrite`` was not given.

    ``message(option)`` words the error for a caller whose way to overwrite
    is ``option`` (the command line says ``--overwrite``).
    """

    def __init__(self, path, is_input):
        self.path, self.is_input = str(path), is_input
        super().__init__(self.message("overwrite=True"))

    def message(self, option):
        """The error text, telling to pass ``option`` to replace the file."""
        if self.is_input:
            return (f"{self.path}: is the input file; choose another output, or pass "
                    f"{option} to replace the input")
        return f"{self.path}: exists already; pass {option} to replace it"


@dataclasses.dataclass
class FileReport:
    """What ``process_file`` did."""

    src: str
    dst: str
    sample_rate: int
    channels: int
    input_frames: int
    output_frames: int
    latency: int
    clipped_samples: int
    #: The input file's own rate (differs from ``sample_rate`` when resampled).
    source_rate: int = None

    @property
    def seconds(self):
        return self.output_frames / self.sample_rate


def output_format(path):
    """The soundfile format for ``path``'s suffix; ``AudioFileError`` if none."""
    suffix = Path(path).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None or fmt not in sf.available_formats():
        valid = ", ".join(s for s, f in FORMATS.items() if f in sf.available_formats())
        raise AudioFileError(f"{path}: cannot write {suffix or 'files without a suffix'}; "
                             f"supported output suffixes: {valid}")
    return fmt


def open_input(path):
    """Open ``path`` for reading (with soundfile, or PyAV for what libsndfile
    does not read), with errors that say what is wrong."""
    p = Path(path)
    if not p.exists():
        raise AudioFileError(f"{path}: no such file")
    if p.is_dir():
        raise AudioFileError(f"{path}: is a folder, not an audio file")
    if p.stat().st_size == 0:
        raise AudioFileError(f"{path}: file is empty (0 bytes)")
    try:
        f = sf.SoundFile(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        try:  # formats libsndfile does not know (AAC, M4A, ...): FFmpeg
            f = AvReader(p)
        except ValueError:
            raise AudioFileError(f"{path}: not a readable audio file ({_reason(exc)})") from None
    if f.frames == 0:
        f.close()
        raise AudioFileError(f"{path}: holds no audio (0 samples)")
    return f


def _reason(exc):
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return text.replace("Error opening", "error opening")


def processing_rate(file_rate, sample_rate=None):
    """The rate to process at: ``sample_rate`` if given, else the file's own
    rate brought into the supported 8-48 kHz range."""
    if sample_rate is not None:
        return check_sample_rate(sample_rate)
    return min(max(int(file_rate), MIN_SAMPLE_RATE), MAX_SAMPLE_RATE)


#: Sample formats an input may hand on to the output, each with the ones to
#: try next (no less precise) when the output format does not take it.
_PCM_SUBTYPES = {
    "PCM_S8": ("PCM_S8", "PCM_U8", "PCM_16"),
    "PCM_U8": ("PCM_U8", "PCM_S8", "PCM_16"),
    "PCM_16": ("PCM_16",),
    "PCM_24": ("PCM_24", "PCM_32", "FLOAT"),
    "PCM_32": ("PCM_32", "FLOAT", "PCM_24"),
    "FLOAT": ("FLOAT", "DOUBLE", "PCM_24"),
    "DOUBLE": ("DOUBLE", "FLOAT", "PCM_24"),
}


def output_subtype(src_subtype, fmt):
    """The sample format to write format ``fmt`` in, given the input's.

    A PCM or floating-point input keeps its sample format where ``fmt``
    takes it (else the nearest one at least as precise); anything else (MP3,
    Vorbis, Opus, ADPCM, ...) is written as 16-bit PCM where ``fmt`` is a
    PCM format.  Otherwise the format's own default (Vorbis for OGG, MPEG
    layer III for MP3, ...).  Encoded subtypes are never carried over:
    libsndfile accepts MP3 inside WAV on paper but cannot write it.
    """
    for subtype in _PCM_SUBTYPES.get(src_subtype, ("PCM_16",)):
        if sf.check_format(fmt, subtype):
            return subtype
    return sf.default_subtype(fmt)


def check_block_size(block_size):
    """``block_size`` if it is a whole number of frames >= 1, else ``ParameterError``."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ParameterError(
            f"block_size must be a whole number of frames >= 1, got {block_size!r}")
    return block_size


def process_file(src, dst, fx=None, *, block_size=DEFAULT_BLOCK_SIZE, sample_rate=None,
                 overwrite=False, progress=None):
    """Run the audio of file ``src`` through ``fx`` into file ``dst``.

    ``fx``: a processor (or ``None`` to convert only).  The file is streamed
    in blocks of ``block_size`` frames, so memory does not grow with its
    length.  It is processed at ``sample_rate`` Hz (resampled with soxr if
    the file differs; default: the file's rate, or 8/48 kHz for rates outside
    that range) and written at that rate.  ``fx``'s latency is compensated so
    the output lines up with the input, and its tail (such as a reverb's
    decay) is appended.  The format follows ``dst``'s suffix; the sample
    format follows the input's where the output format allows it (see
    ``output_subtype``); encoded inputs such as MP3 become 16-bit PCM.  Integer
    formats are clipped to full scale and the count of clipped samples is
    reported.  ``progress(done, total)``, if given, is called with input
    frames.

    Raises ``AudioFileError`` (a ``ValueError``) naming the file for a
    missing, empty, unreadable or unsupported file, an unknown output suffix,
    an existing output without ``overwrite``, or NaN/Inf samples.  On any
    error nothing is written.  Returns a ``FileReport``.
    """
    check_block_size(block_size)
    src_path, dst_path = Path(src), Path(dst)
    fmt = output_format(dst_path)
    reader = open_input(src_path)
    try:
        if dst_path.exists() and os.path.samefile(src_path, dst_path) and not overwrite:
            raise OutputExistsError(dst, is_input=True)
        if dst_path.is_dir():
            raise AudioFileError(f"{dst}: is a folder; give a file name")
        if dst_path.exists() and not overwrite:
            raise OutputExistsError(dst, is_input=False)
        if not dst_path.parent.is_dir():
            raise AudioFileError(f"{dst}: folder {dst_path.parent} does not exist")
    except BaseException:
        reader.close()
        raise

    with reader:
        rate = processing_rate(reader.samplerate, sample_rate)
        subtype = output_subtype(reader.subtype, fmt)
        clip = not subtype.startswith(("FLOAT", "DOUBLE", "VORBIS", "OPUS", "MPEG"))
        if fx is not None:
            fx.reset()
        with atomic_output(dst_path) as tmp:
            report = _stream(reader, fx, rate, block_size, tmp, fmt, subtype, clip,
                             progress, src, dst)
    return report


@contextlib.contextmanager
def atomic_output(dst):
    """Write a file in one piece: yields a temporary path next to ``dst``, which
    replaces ``dst`` when the block ends normally and is deleted when it raises.

    The file gets the permissions a plain ``open`` would give (0666 less the
    umask), not the private 0600 of a temporary file.
    """
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=dst.suffix)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stream(reader, fx, rate, block_size, tmp, fmt, subtype, clip, progress, src, dst):
    total = reader.frames
    channels_in = reader.channels
    resampler = None
    if reader.samplerate != rate:
        resampler = soxr.ResampleStream(reader.samplerate, rate, channels_in,
                                        dtype="float32", quality="HQ")
    latency = fx.latency_at(rate) if fx is not None else 0
    tail = fx.tail_at(rate) if fx is not None else 0
    writer = None
    state = {"skip": latency, "frames_in": 0, "frames_out": 0, "clipped": 0}

    def emit(block):
        nonlocal writer
        out = fx.process(block, rate) if fx is not None else block
        if out.ndim == 1:
            out = out[None, :]
        skip = min(state["skip"], out.shape[1])
        state["skip"] -= skip
        out = out[:, skip:]
        if writer is None:
            writer = sf.SoundFile(tmp, "w", samplerate=rate, channels=out.shape[0],
                                  format=fmt, subtype=subtype)
        if out.shape[1]:
            if clip:
                over = np.abs(out) > 1.0
                n_over = int(np.count_nonzero(over))
                if n_over:
                    state["clipped"] += n_over
                    out = np.clip(out, -1.0, 1.0)
            writer.write(out.T)
            state["frames_out"] += out.shape[1]

    try:
        done = 0
        data = reader.read(block_size, dtype="float32", always_2d=True)
        while data.shape[0]:
            # One block ahead: the resampler must know which block is the last
            # (a header's length can be wrong, and PyAV's is an estimate).
            following = reader.read(block_size, dtype="float32", always_2d=True)
            block = np.ascontiguousarray(data.T)
            bad = kcommon.first_non_finite(block)
            if bad >= 0:
                c, n = divmod(int(bad), block.shape[1])
                raise AudioFileError(
                    f"{src}: sample {done + n} of channel {c} is {block[c, n]}; "
                    "only finite samples can be processed")
            done += block.shape[1]
            if resampler is not None:
                block = np.ascontiguousarray(
                    resampler.resample_chunk(data, last=following.shape[0] == 0).T)
            state["frames_in"] += block.shape[1]
            emit(block)
            if progress is not None:
                progress(done, max(total, done))
            data = following
        # Flush the latency and render the tail, in blocks.
        remaining = latency + tail
        while remaining > 0 or writer is None:
            n = min(block_size, remaining)
            emit(np.zeros((channels_in, n), dtype=np.float32))
            remaining -= n
    finally:
        if writer is not None:
            writer.close()
    return FileReport(str(src), str(dst), rate, writer.channels, state["frames_in"],
                      state["frames_out"], latency, state["clipped"], reader.samplerate)

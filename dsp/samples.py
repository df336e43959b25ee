"""Sample audio bundled with the package (see ``data/README.md``)."""

from importlib import resources

import soundfile as sf
import soxr

from .audio import check_sample_rate


def speech_path():
    """Path of the bundled speech sample (48 kHz mono FLAC)."""
    return resources.files("stagevox.dsp") / "data" / "speech.flac"


def speech(sample_rate=48000):
    """The bundled speech sample (19 s) as a 1-D float32 array.

    ``sample_rate``: 8000 to 48000 Hz (resampled with soxr); ``ValueError``
    for another rate.
    """
    rate = check_sample_rate(sample_rate)
    with resources.as_file(speech_path()) as path:
        audio, file_rate = sf.read(str(path), dtype="float32")
    if file_rate != rate:
        audio = soxr.resample(audio, file_rate, rate, quality="HQ")
    return audio

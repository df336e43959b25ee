"""Audio conventions: checking and converting the arrays processors receive.

Audio is a C-contiguous float32 array shaped ``(channels, samples)``; a 1-D
array is mono.  Integer PCM is scaled to [-1, 1) by its full scale, so an
int16 array from a WAV file means what it says.
"""

import numbers

import numpy as np

from .errors import ParameterError
from .lazykernels import kernels

kcommon = kernels("common")

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
#: More channels than this (or more than ``FEW_CHANNELS`` and more channels
#: than samples) means the array is in soundfile's ``(frames, channels)`` layout.
MAX_CHANNELS = 64
FEW_CHANNELS = 8


_FLOAT32 = np.dtype(np.float32)


def as_block(audio, check_finite=True):
    """Return ``(block, was_1d)``: ``audio`` as float32 ``(channels, samples)``.

    Raises ``ParameterError`` (a ``ValueError``) for arrays that are not 1-D
    or 2-D, that have no channels, that are clearly ``(frames, channels)``
    (more than 64 rows, or more than 8 rows and fewer columns than rows: the
    message says to pass ``audio.T``), or that hold NaN or Inf (naming the
    channel and sample), and ``TypeError`` for things that are not numbers.
    ``check_finite=False`` leaves the NaN/Inf check to the caller (a kernel
    that scans its input before touching any state, then calls
    ``raise_non_finite``).
    """
    a = audio
    if not (type(a) is np.ndarray and a.dtype is _FLOAT32 and a.flags.c_contiguous):
        a = _convert(a)
    if a.ndim == 1:
        block = a.reshape(1, a.shape[0])
        was_1d = True
    elif a.ndim == 2:
        block = a
        was_1d = False
    else:
        raise ParameterError(
            f"audio must be 1-D (mono) or 2-D (channels, samples), got shape {a.shape}")
    if block.shape[0] == 0:
        raise ParameterError("audio has 0 channels; expected shape (channels, samples)")
    channels, samples = block.shape
    if channels > MAX_CHANNELS or (channels > FEW_CHANNELS and channels > samples):
        raise ParameterError(
            f"audio of shape {block.shape} looks like (frames, channels), as soundfile "
            f"reads it: {channels} channels of {samples} samples; stagevox takes "
            f"(channels, samples) with at most {MAX_CHANNELS} channels: pass audio.T")
    if check_finite:
        # Before any processor is built (which loads the kernels), NumPy: a
        # live stream's first frames must not wait for Numba.
        bad = kcommon.first_non_finite(block) if kcommon.loaded else _first_non_finite(block)
        if bad >= 0:
            raise_non_finite(block, bad)
    return block, was_1d


def _first_non_finite(block):
    """Flat index of the first NaN or Inf in ``block``, or -1 (NumPy)."""
    bad = np.flatnonzero(~np.isfinite(block))
    return int(bad[0]) if bad.size else -1


def raise_non_finite(block, flat_index):
    """Raise the ``ParameterError`` for the NaN/Inf at ``flat_index`` of ``block``."""
    c, n = divmod(int(flat_index), block.shape[1])
    raise ParameterError(f"audio contains {block[c, n]} at channel {c}, sample {n}; "
                         "only finite samples can be processed")


def _convert(audio):
    a = np.asarray(audio)
    if a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        offset = (int(info.max) + int(info.min) + 1) / 2.0  # 128 for uint8, else 0
        scale = (int(info.max) - int(info.min) + 1) / 2.0
        a = (a.astype(np.float64) - offset) / scale
    elif a.dtype.kind == "f":
        if a.dtype != np.float32 and a.size:
            big = np.abs(a[np.isfinite(a)]).max(initial=0.0)
            if big > np.finfo(np.float32).max:
                raise ParameterError(f"audio contains {big:g}, beyond the float32 range")
    elif a.dtype.kind == "b":
        a = a.astype(np.float32)
    else:
        raise TypeError(f"audio must be a numeric array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def check_sample_rate(sample_rate):
    """Return ``sample_rate`` as an int after checking it lies in 8-48 kHz.

    Raises ``TypeError`` for a non-number and ``ParameterError`` (a
    ``ValueError``) for a rate outside the range or not a whole number.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real):
        raise TypeError(f"sample_rate must be a number in Hz, got {sample_rate!r}")
    # int() of inf/nan would raise OverflowError/ValueError without the range.
    rate = int(sample_rate) if MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE else None
    if rate is None or rate != sample_rate:
        raise ParameterError(
            f"sample_rate {sample_rate!r} is not supported: use a whole number of Hz "
            f"from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} (resample other rates first, "
            "e.g. with stagevox process --sample-rate)")
    return rate


def float32_below(value):
    """The largest float32 not above ``value``: a ceiling that survives rounding."""
    v = np.float32(value)
    return float(np.nextafter(v, np.float32(-np.inf)) if v > value else v)


def db_to_gain(db):
    """Decibels to a linear amplitude factor: ``10 ** (db / 20)``.

    ``db``: a number in dB; ``-inf`` gives 0.
    """
    return 0.0 if db == -np.inf else 10.0 ** (db / 20.0)

"""Convolution reverbs: any impulse response, or one of a simulated room.

Both run the impulse response through ``kernels.convolution``: partitioned
overlap-save FFT convolution in two levels, the response's head in
partitions of B samples, B the largest power of two not above 10 ms (256 at
32 to 48 kHz, 128 at 16 to 24 kHz, 64 at 8 to 12 kHz), and its tail in
partitions of L, the power of two nearest ``sqrt(N B)`` for a response of N
samples (at least 4B).  The latency is B samples (5.3 ms at 48 kHz),
reported in ``latency``; the dry path is delayed by as much, so wet and dry
stay aligned.

Layout: a mono impulse response is applied to every input channel (output
channels = input channels); a stereo one gives stereo output from mono input
(each output channel its own response) or from stereo input (left with left,
right with right).  A stereo response with more than two input channels
raises ``ValueError``.

Replacing the impulse response while streaming (``ConvolutionReverb.set_ir``,
or a change of ``RoomReverb``'s room) cross-fades from the old to the new
response over one partition; the input history is kept, so the tail goes on.
Building a new response (reading, resampling, simulating a room) is not done
in real time: do it off the audio thread, or between blocks.
"""

import functools
import math
import os

import numpy as np
import soundfile as sf
import soxr

from .audio import db_to_gain
from .lazykernels import kernels
from .processor import Float, FloatList, Processor, make_ramp, ramp_to

kern = kernels("convolution")

#: Longest partition (and so latency), in seconds.
MAX_LATENCY_S = 0.010
#: Longest impulse response accepted, in seconds at the processing rate.
MAX_IR_SECONDS = 30.0
#: The built-in impulse response: exponentially decaying Gaussian noise.
DEFAULT_IR_SECONDS = 0.5
DEFAULT_IR_SEED = 20240601


def partition_size(sample_rate):
    """Largest power of two not above MAX_LATENCY_S seconds at ``sample_rate``."""
    return 1 << int(math.floor(math.log2(MAX_LATENCY_S * sample_rate)))


def default_impulse_response(sample_rate):
    """The built-in response: 0.5 s of Gaussian noise decaying by 60 dB over
    its length (RT60 0.5 s), with unit energy, mono, float64 ``(1, n)``.

    The same seed is used at every rate, so it is reproducible.
    """
    n = int(round(DEFAULT_IR_SECONDS * sample_rate))
    noise = np.random.default_rng(DEFAULT_IR_SEED).standard_normal(n)
    h = noise * 10.0 ** (-3.0 * np.arange(n) / n)
    return (h / np.sqrt(np.sum(h * h)))[None, :]


def spectra(h, b):
    """Partition ``h`` (``(channels, n)``) into blocks of ``b``; return the
    real and imaginary parts of their 2b-point FFTs, float32 ``(channels, P, b + 1)``."""
    channels, n = h.shape
    parts = max(1, -(-n // b))
    padded = np.zeros((channels, parts, 2 * b))
    padded[:, :, :b] = np.pad(h, ((0, 0), (0, parts * b - n))).reshape(channels, parts, b)
    spec = np.fft.rfft(padded, axis=-1)
    return (np.ascontiguousarray(spec.real, dtype=np.float32),
            np.ascontiguousarray(spec.imag, dtype=np.float32))


def tail_partition_size(n, b):
    """Partition length L of the tail level for a response of ``n`` samples:
    the power of two nearest ``sqrt(n b)``, from 4b to 32768."""
    target = math.sqrt(max(n, 1) * b)
    size = 1 << int(round(math.log2(target)))
    return int(min(max(size, 4 * b), 32768))


def empty_spectra(channels, b):
    """Spectra with no partitions (a level with nothing to do)."""
    empty = np.zeros((channels, 0, b + 1), np.float32)
    return empty, empty.copy()


def check_impulse_response(h, owner):
    """``h`` as float64 ``(channels, n)`` with 1 or 2 channels; ``ValueError`` otherwise."""
    try:
        a = np.array(h, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: the impulse response must be an array of numbers") from None
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] not in (1, 2):
        raise ValueError(f"{owner}: the impulse response must be 1-D (mono) or "
                         f"(channels, samples) with 1 or 2 channels, got shape {a.shape}")
    if a.shape[1] == 0:
        raise ValueError(f"{owner}: the impulse response is empty (0 samples)")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{owner}: the impulse response contains NaN or Inf")
    return a


class _Convolver(Processor, register=False):
    """The convolution engine; subclasses supply ``_impulse_response(rate)``."""

    wet_level_db = Float(0.0, -20.0, 10.0, off=True, unit="dB", doc="level of the wet path")
    dry_level_db = Float(0.0, -20.0, 10.0, off=True, unit="dB", doc="level of the dry path")

    channel_independent = False

    def _impulse_response(self, sample_rate):
        """The response at ``sample_rate``: float64 ``(1 or 2, n)``."""
        raise NotImplementedError

    def _layout(self, ir_channels):
        """``(in_of, ir_of)`` for each output channel."""
        c = self.num_channels
        if ir_channels == 1:
            return np.arange(c), np.zeros(c, np.int64)
        if c > 2:
            raise ValueError(f"{type(self).__name__}: a stereo impulse response takes mono or "
                             f"stereo audio, got {c} channels")
        return np.zeros(2, np.int64) if c == 1 else np.arange(2), np.arange(2)

    def _prepare(self):
        b = partition_size(self.sample_rate)
        h = self._impulse_response(self.sample_rate)
        in_of, ir_of = self._layout(h.shape[0])
        self._in_of = np.ascontiguousarray(in_of, dtype=np.int64)
        self._ir_of = np.ascontiguousarray(ir_of, dtype=np.int64)
        self._ir_channels = h.shape[0]
        self._ir_length = h.shape[1]
        tail = tail_partition_size(h.shape[1], b)
        outs, ins = len(self._in_of), self.num_channels
        self._levels = []
        for size in (b, tail):
            level = dict(inbuf=np.zeros((ins, 2 * size), np.float32),
                         outbuf=np.zeros((outs, size), np.float32),
                         state=np.zeros(3, np.int64))
            self._levels.append(level)
        self._set_spectra(h, keep_old=False)
        self._ramps = np.array([make_ramp(db_to_gain(self.wet_level_db)),
                                make_ramp(db_to_gain(self.dry_level_db))])

    def _set_spectra(self, h, keep_old):
        """Spectra of both levels for response ``h``; grow the delay lines if
        needed; with ``keep_old`` cross-fade from the present spectra."""
        head_size = self._levels[0]["outbuf"].shape[1]
        tail_size = self._levels[1]["outbuf"].shape[1]
        parts = (spectra(h[:, :tail_size], head_size),
                 spectra(h[:, tail_size:], tail_size) if h.shape[1] > tail_size
                 else empty_spectra(h.shape[0], tail_size))
        for level, (re, im) in zip(self._levels, parts):
            need = re.shape[1]
            fdl = level.get("fdl_re")
            if fdl is None:
                shape = (self.num_channels, need, re.shape[2])
                level["fdl_re"] = np.zeros(shape, np.float32)
                level["fdl_im"] = np.zeros(shape, np.float32)
            elif need > fdl.shape[1]:
                # grow the delay line, keeping each slot's distance from head
                slots, head = fdl.shape[1], level["state"][1]
                for key in ("fdl_re", "fdl_im"):
                    old = level[key]
                    new = np.zeros((old.shape[0], need, old.shape[2]), np.float32)
                    if slots:
                        order = (head - np.arange(slots)) % slots
                        new[:, (head - np.arange(slots)) % need] = old[:, order]
                    level[key] = new
            if keep_old:
                level["old_re"], level["old_im"] = level["h_re"], level["h_im"]
                level["state"][kern.CROSSFADE] = 1
            else:
                level["old_re"], level["old_im"] = re, im
            level["h_re"], level["h_im"] = re, im
        self._ir_length = h.shape[1]

    def _param_changed(self, name):
        n = self.ramp_samples()
        ramp_to(self._ramps[0], db_to_gain(self.wet_level_db), n)
        ramp_to(self._ramps[1], db_to_gain(self.dry_level_db), n)

    def _switch_to(self, h):
        """Cross-fade to response ``h`` (same channel count) over each level's next block."""
        self._set_spectra(h, keep_old=True)

    def _process(self, block):
        out = np.empty((len(self._in_of), block.shape[1]), dtype=np.float32)
        head, tail = self._levels
        kern.partitioned_convolution(
            block, out, self._in_of, self._ir_of, self._ramps,
            head["inbuf"], head["outbuf"], head["fdl_re"], head["fdl_im"], head["h_re"],
            head["h_im"], head["old_re"], head["old_im"], head["state"],
            tail["inbuf"], tail["outbuf"], tail["fdl_re"], tail["fdl_im"], tail["h_re"],
            tail["h_im"], tail["old_re"], tail["old_im"], tail["state"])
        return out

    def latency_at(self, sample_rate):
        """The partition length B at ``sample_rate`` (at most 10 ms)."""
        return partition_size(sample_rate)

    def tail_at(self, sample_rate):
        """The impulse response's length minus one sample (0 if the wet path is muted)."""
        if self.wet_level_db == -math.inf:
            return 0
        return self._impulse_response(sample_rate).shape[1] - 1


class ConvolutionReverb(_Convolver):
    """Convolution with an impulse response from a file or an array.

    ``ir``: a path to an audio file (read with soundfile, resampled with soxr
    to the processing rate), or an array, 1-D (mono) or ``(channels,
    samples)`` with 1 or 2 channels, at ``ir_sample_rate`` Hz (``None``: used
    as it is at whatever rate the audio has).  Without ``ir``, a built-in
    response (see ``default_impulse_response``).  Responses up to 30 s.
    ``wet_level_db``/``dry_level_db``: -20 to +10 dB, or ``-inf`` to mute.
    ``ValueError`` for an unreadable file, a bad array, or a bad rate.
    """

    arguments = {
        "ir": "impulse response: an audio file (or, in Python, an array); "
              "default: a built-in room",
        "ir_sample_rate": "rate in Hz of an array ir (Python only); default: the audio's",
    }

    def __init__(self, ir=None, ir_sample_rate=None, **params):
        super().__init__(**params)
        self._source, self._source_rate = self._load(ir, ir_sample_rate)
        self._by_rate = {}

    def _load(self, ir, ir_sample_rate):
        owner = type(self).__name__
        if ir_sample_rate is not None:
            if isinstance(ir_sample_rate, bool) or not isinstance(
                    ir_sample_rate, (int, float, np.integer, np.floating)) \
                    or not (1000 <= ir_sample_rate <= 768000):
                raise ValueError(f"{owner}.ir_sample_rate = {ir_sample_rate!r} is invalid: must "
                                 "be a number of Hz from 1000 to 768000 (or None)")
        if ir is None:
            return None, None
        if isinstance(ir, (str, bytes, os.PathLike)):
            try:
                data, rate = sf.read(os.fsdecode(ir), dtype="float64", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                raise ValueError(f"{owner}: cannot read impulse response {os.fsdecode(ir)!r}: "
                                 f"{exc}") from None
            return check_impulse_response(data.T, owner), float(rate)
        return check_impulse_response(ir, owner), (None if ir_sample_rate is None
                                                   else float(ir_sample_rate))

    def _impulse_response(self, sample_rate):
        h = self._by_rate.get(sample_rate)
        if h is None:
            if self._source is None:
                h = default_impulse_response(sample_rate)
            elif self._source_rate is None or self._source_rate == sample_rate:
                h = self._source
            else:
                h = soxr.resample(self._source.T, self._source_rate, sample_rate,
                                  quality="VHQ").T
                h = np.ascontiguousarray(np.atleast_2d(h))
            if h.shape[1] > MAX_IR_SECONDS * sample_rate:
                raise ValueError(f"{type(self).__name__}: the impulse response is "
                                 f"{h.shape[1] / sample_rate:g} s long; at most "
                                 f"{MAX_IR_SECONDS:g} s is supported")
            self._by_rate[sample_rate] = h
        return h

    def set_ir(self, ir=None, ir_sample_rate=None):
        """Use another impulse response: ``ir`` and ``ir_sample_rate`` as for
        the constructor.

        While streaming, the output cross-fades to it over one partition; a
        response with another channel count restarts the processor instead.
        """
        self._source, self._source_rate = self._load(ir, ir_sample_rate)
        self._by_rate = {}
        if self.sample_rate is None:
            return
        h = self._impulse_response(self.sample_rate)
        if h.shape[0] != self._ir_channels:
            self._prepare()
        else:
            self._switch_to(h)


# ---------------------------------------------------------------- simulated room

#: Highest image-source order simulated (the build time grows as its cube).
MAX_IMAGE_ORDER = 100
#: Corner of the high-pass that removes the image-source model's DC (Hz).
HIGH_PASS_HZ = 15.0


def schroeder_decay_time(h, sample_rate, lo_db=-5.0, hi_db=-25.0):
    """RT60 (s) from a least-squares line through the Schroeder curve of ``h``
    between ``lo_db`` and ``hi_db``, extrapolated to -60 dB."""
    energy = np.cumsum((h * h)[::-1])[::-1]
    curve = 10 * np.log10(np.maximum(energy / energy[0], 1e-300))
    idx = np.flatnonzero((curve <= lo_db) & (curve >= hi_db))
    slope = np.polyfit(idx / sample_rate, curve[idx], 1)[0]
    return -60.0 / slope


def _image_source_ir(room_dim, absorption, max_order, source, listener, sample_rate):
    """pyroomacoustics' image-source response, made causal: its own zero-phase
    15 Hz high-pass (which rings before the direct sound) is switched off for
    the call and a causal 2nd-order 15 Hz Butterworth high-pass used instead."""
    import pyroomacoustics as pra
    room = pra.ShoeBox(list(room_dim), fs=sample_rate, materials=pra.Material(absorption),
                       max_order=max_order, air_absorption=False)
    room.add_source(list(source))
    room.add_microphone(list(listener))
    was = pra.constants.get("rir_hpf_enable")
    pra.constants.set("rir_hpf_enable", False)
    try:
        room.compute_rir()
    finally:
        pra.constants.set("rir_hpf_enable", was)
    h = np.asarray(room.rir[0][0], dtype=np.float64)
    from scipy.signal import butter, sosfilt  # here: scipy.signal takes seconds to import
    return sosfilt(butter(2, HIGH_PASS_HZ, btype="highpass", fs=sample_rate, output="sos"), h)


@functools.lru_cache(maxsize=16)
def room_impulse_response(room_dim, rt60_s, source, listener, sample_rate):
    """Impulse response from ``source`` to ``listener`` in a shoebox room.

    pyroomacoustics' image-source model, with the wall absorption and the
    image order from Sabine's formula (``pra.inverse_sabine``).  The model's
    decay differs from Sabine's (e.g. +26 % in the default room), so the
    absorption is corrected once, Eyring-style (``-ln(1 - a)`` in
    proportion to the decay rate), from the first response's Schroeder decay.
    pyroomacoustics' fractional-delay offset is removed, so the direct sound
    arrives after distance / 343 m/s (its speed of sound), and nothing comes
    before it (see ``_image_source_ir``); the response is scaled so the
    direct sound has gain 1.  Returns a read-only float64 ``(1, n)`` array.
    ``ValueError`` if Sabine's formula needs an absorption above 1 or more
    than MAX_IMAGE_ORDER orders of images.
    """
    import pyroomacoustics as pra
    dims = f"{room_dim[0]:g} x {room_dim[1]:g} x {room_dim[2]:g} m"
    try:
        absorption, order = pra.inverse_sabine(rt60_s, list(room_dim))
    except ValueError:
        absorption, order = 2.0, 0
    if absorption >= 1.0:
        raise ValueError(f"RoomReverb: rt60_s = {rt60_s:g} s is too short for a {dims} room "
                         "(the walls would have to absorb everything); use a smaller room "
                         "or a longer rt60_s")
    if order > MAX_IMAGE_ORDER:
        raise ValueError(f"RoomReverb: rt60_s = {rt60_s:g} s in a {dims} room needs image "
                         f"sources up to order {order} (at most {MAX_IMAGE_ORDER}); use a "
                         "larger room or a shorter rt60_s")
    h = _image_source_ir(room_dim, absorption, order, source, listener, sample_rate)
    measured = schroeder_decay_time(h, sample_rate)
    absorption = min(0.99, 1.0 - (1.0 - absorption) ** (measured / rt60_s))
    h = _image_source_ir(room_dim, absorption, order, source, listener, sample_rate)
    offset = pra.constants.get("frac_delay_length") // 2
    distance = math.dist(source, listener)
    h = h[offset:] * distance  # pyroomacoustics attenuates by 1 / distance
    h = np.trim_zeros(h, "b")[None, :]
    h.setflags(write=False)
    return h


def _inside(point, room_dim):
    return all(0.0 < p < d for p, d in zip(point, room_dim))


class RoomReverb(_Convolver):
    """Convolution with the simulated response of a shoebox room.

    ``room_dim_m``: length, width, height (m); ``rt60_s``: decay time (s);
    ``source`` and ``listener``: positions (m) inside the room, at least
    5 cm apart.  The response is built with pyroomacoustics (see
    ``room_impulse_response``) when the processor is prepared, and again
    before the next block after a change of the room (taking from 0.1 s to
    about 2 s, so not on a live audio thread); the switch is cross-faded.
    The response contains the direct sound, so the dry path is muted by
    default.  ``ValueError`` for positions outside the room, or for a decay
    the room cannot have (see ``room_impulse_response``).
    """

    room_dim_m = FloatList((8.0, 6.0, 3.0), 1.0, 50.0, length=3, unit="m",
                           doc="room length, width and height")
    rt60_s = Float(0.6, 0.1, 2.0, unit="s", doc="reverberation time (-60 dB)")
    source = FloatList((2.0, 3.0, 1.5), 0.0, 50.0, length=3, unit="m",
                       doc="sound source position")
    listener = FloatList((6.0, 3.0, 1.5), 0.0, 50.0, length=3, unit="m",
                         doc="listener (microphone) position")
    dry_level_db = Float(-math.inf, -20.0, 10.0, off=True, unit="dB",
                         doc="level of the dry path")

    channel_independent = True

    _ROOM = ("room_dim_m", "rt60_s", "source", "listener")

    def __init__(self, **params):
        super().__init__(**params)
        self._check_geometry()
        self._stale = False

    def _check_geometry(self):
        for name in ("source", "listener"):
            point = getattr(self, name)
            if not _inside(point, self.room_dim_m):
                raise ValueError(f"RoomReverb.{name} = {list(point)} is outside the room "
                                 f"room_dim_m = {list(self.room_dim_m)}: each coordinate must "
                                 "be above 0 and below the room's size")
        if math.dist(self.source, self.listener) < 0.05:
            raise ValueError("RoomReverb: source and listener must be at least 0.05 m apart, "
                             f"got {list(self.source)} and {list(self.listener)}")

    def _prepare(self):
        super()._prepare()
        self._stale = False

    def _impulse_response(self, sample_rate):
        self._check_geometry()
        return room_impulse_response(tuple(self.room_dim_m), self.rt60_s, tuple(self.source),
                                     tuple(self.listener), int(sample_rate))

    def _param_changed(self, name):
        if name in self._ROOM:
            self._stale = True  # rebuilt before the next block, so several changes apply at once
        else:
            super()._param_changed(name)

    def _process(self, block):
        if self._stale:
            self._stale = False
            self._switch_to(self._impulse_response(self.sample_rate))
        return super()._process(block)

"""Audio codecs of the live engine: Opus (RFC 6716/7587) and L16 linear PCM.

Every codec works at the wire rate ``SAMPLE_RATE`` (48 kHz); callers resample
to it.  Encoders take one frame of float32 audio shaped
``(channels, frame_samples)`` (1-D for mono) and return the RTP payload bytes;
decoders take a payload and return float32 ``(channels, samples)``.

Opus goes through ``opuslib_next`` (ctypes).  ``load_libopus`` chooses the
shared library once per process: the system's libopus where there is one,
else the copy bundled in PyAV's wheel, so ``pip install`` alone is enough.
The environment variable ``STAGEVOX_LIBOPUS`` forces the choice: ``system``,
``bundled`` or a path to a libopus shared library.

Errors: bad arguments (channels, bitrate, frame_ms, a frame of the wrong
shape, ...) raise ``ValueError`` or ``TypeError``; what libopus refuses
(invalid packets), a bad concealment length and a library that cannot be found
raise ``CodecError``.  Encoder and decoder objects keep state and scratch
buffers: use one object from one thread at a time.
"""

import ctypes
import ctypes.util
import importlib
import importlib.util
import math
import os
import pathlib
import platform
import sys
import threading

import numpy as np

from stagevox.dsp.errors import StagevoxError

from .rtp import CLOCK_RATE


class CodecError(StagevoxError, RuntimeError):
    """libopus refused something (invalid packet, bad frame size) or is missing."""


#: The sampling rate of every codec here: the RTP clock (RFC 7587), in Hz.
SAMPLE_RATE = CLOCK_RATE
#: Frame durations an encoder can be built with, in ms.
FRAME_MS_CHOICES = (10, 20)
#: Concealment and FEC lengths are multiples of 2.5 ms (samples at 48 kHz) ...
GRANULE_SAMPLES = SAMPLE_RATE // 400
#: ... up to the longest Opus packet, 120 ms.
MAX_FRAME_SAMPLES = SAMPLE_RATE * 120 // 1000
#: Output room for one encoded packet, in bytes (libopus's recommendation).
MAX_PACKET_BYTES = 4000
#: Bitrate range libopus accepts, in bit/s.
BITRATE_RANGE = (6000, 510000)
#: Encoder applications: stagevox name -> opuslib_next name.
APPLICATIONS = {"voip": "voip", "audio": "audio", "lowdelay": "restricted_lowdelay"}
CODECS = ("opus", "pcm")

_ENV = "STAGEVOX_LIBOPUS"
#: Where opuslib_next itself looks when find_library finds nothing.
_FIXED_PATHS = {
    "Linux": ("/usr/lib/x86_64-linux-gnu/libopus.so.0", "/usr/local/lib/libopus.so.0"),
    "Darwin": ("/opt/homebrew/lib/libopus.dylib", "/usr/local/lib/libopus.dylib"),
}


# ------------------------------------------------------------------ loading libopus

_load_lock = threading.Lock()
_loaded = None    # (path, source) once load_libopus has run
_api = None       # the opuslib_next package, imported against the chosen library


def load_libopus():
    """Choose libopus, make ``opuslib_next`` use it, and return ``(path, source)``.

    Runs once per process; later calls return the first answer.  ``source`` is
    ``"system"`` (found by the dynamic linker's search, as ``opuslib_next``
    would), ``"bundled"`` (PyAV's copy in ``av.libs``/``av/.dylibs``) or
    ``"explicit"`` (a path given in ``STAGEVOX_LIBOPUS``).  ``path`` is the
    file actually loaded where the platform can tell (``dladdr``), else the
    name given to the loader.

    Without ``STAGEVOX_LIBOPUS`` the system library wins and the bundled one is
    the fallback (also when the system's cannot be loaded).  ``STAGEVOX_LIBOPUS=system|bundled|/path/to/libopus.so``
    forces the choice.  Raises ``CodecError`` when the chosen library cannot be
    found or loaded, when the variable holds something else, or when
    ``opuslib_next`` had been imported (before stagevox asked) with another
    library than the one forced.
    """
    global _loaded, _api
    with _load_lock:
        if _loaded is None:
            setting = os.environ.get(_ENV, "").strip()
            candidates = _libopus_candidates(setting)
            preloaded = "opuslib_next.api" in sys.modules
            for i, (name, source) in enumerate(candidates):
                try:
                    _api = _import_opuslib(name)
                    break
                except CodecError:      # unloadable: try the next one, if any
                    if i == len(candidates) - 1:
                        raise
            path = _library_file(_api.api.libopus, name)
            if preloaded:
                source = _check_preloaded(path, name, source, setting)
            _loaded = (path, source)
        return _loaded


def _libopus_candidates(setting):
    """[(name or path to load, source), ...] in order, for a STAGEVOX_LIBOPUS value."""
    if setting == "":
        found = [(_system_libopus(), "system"), (_bundled_libopus(), "bundled")]
        found = [(name, source) for name, source in found if name is not None]
        if found:
            return found
        raise CodecError(
            "no libopus found: install the system's libopus (e.g. apt install libopus0, "
            "brew install opus) or a PyAV wheel that bundles it (pip install av), "
            f"or set {_ENV} to the path of a libopus shared library")
    if setting == "system":
        name = _system_libopus()
        if name is None:
            raise CodecError(f"{_ENV}=system but the system has no libopus; install it "
                             "(e.g. apt install libopus0) or use "
                             f"{_ENV}=bundled for PyAV's copy")
        return [(name, "system")]
    if setting == "bundled":
        path = _bundled_libopus()
        if path is None:
            raise CodecError(f"{_ENV}=bundled but no libopus was found in PyAV's wheel "
                             "(av.libs or av/.dylibs); install a PyAV wheel with pip "
                             f"install av, or use {_ENV}=system")
        return [(path, "bundled")]
    if os.sep in setting or "/" in setting or os.path.exists(setting):
        if not os.path.isfile(setting):
            raise CodecError(f"{_ENV}={setting!r}: no such file")
        return [(setting, "explicit")]
    raise CodecError(f"{_ENV}={setting!r} is not a choice: use 'system', 'bundled' "
                     "or the path of a libopus shared library")


def _system_libopus():
    """What opuslib_next would load on its own: find_library, then fixed paths."""
    name = ctypes.util.find_library("opus")
    if name is not None:
        return name
    for path in _FIXED_PATHS.get(platform.system(), ()):
        if os.path.exists(path):
            return path
    return None


def _bundled_libopus():
    """Path of the libopus in PyAV's wheel, found without importing PyAV."""
    spec = importlib.util.find_spec("av")
    if spec is None or spec.origin is None:
        return None
    av_dir = pathlib.Path(spec.origin).parent
    patterns = [(av_dir.parent / "av.libs", "libopus*.so*"),    # Linux (auditwheel)
                (av_dir / ".dylibs", "libopus*.dylib"),         # macOS (delocate)
                (av_dir.parent / "av.libs", "*opus*.dll")]      # Windows (delvewheel)
    for folder, pattern in patterns:
        found = sorted(folder.glob(pattern))
        if found:
            return str(found[0])
    return None


def _import_opuslib(name):
    """Import opuslib_next so that it loads ``name``; return the package.

    opuslib_next opens libopus at import time of ``opuslib_next.api``, with
    ``ctypes.util.find_library("opus")``, and its submodules bind the C
    functions of that library object as they are imported.  So the library
    cannot be swapped afterwards; instead ``find_library`` answers ``name`` for
    "opus" (and defers to the real one for anything else) while the package is
    imported, and is restored right after.  opuslib_next then goes through
    its own normal path with no copy of its code here.  If it was already
    imported (by someone else, before us), it keeps the library it has.
    """
    modules = ("opuslib_next", "opuslib_next.api", "opuslib_next.api.encoder",
               "opuslib_next.api.decoder", "opuslib_next.api.info", "opuslib_next.api.ctl")
    real_find_library = ctypes.util.find_library

    def find_library(lib_name):
        return name if lib_name == "opus" else real_find_library(lib_name)

    ctypes.util.find_library = find_library
    try:
        for module in modules:
            importlib.import_module(module)
    except OSError as exc:
        raise CodecError(f"could not load libopus from {name!r}: {exc}") from exc
    finally:
        ctypes.util.find_library = real_find_library
    return sys.modules["opuslib_next"]


def _check_preloaded(path, name, source, setting):
    """The source of the library opuslib_next loaded before we were asked.

    It cannot be changed any more: raise ``CodecError`` if the choice was
    forced and it is another file; otherwise tell which one it is.
    """
    chosen = _library_file(ctypes.CDLL(name), name)
    if os.path.realpath(chosen) == os.path.realpath(path):
        return source
    if setting:
        raise CodecError(
            f"{_ENV}={setting!r} asks for {chosen}, but opuslib_next was imported "
            f"before and already uses {path}; call stagevox.engine.codec.load_libopus() "
            "before anything imports opuslib_next")
    bundled = _bundled_libopus()
    if bundled is not None and os.path.realpath(bundled) == os.path.realpath(path):
        return "bundled"
    return "system"


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _library_file(lib, fallback):
    """The file ``lib`` was loaded from (via dladdr), or ``fallback``."""
    try:
        dladdr = ctypes.CDLL(None)["dladdr"]
    except (OSError, TypeError, AttributeError):   # no dladdr (Windows)
        return fallback
    dladdr.argtypes = (ctypes.c_void_p, ctypes.POINTER(_DlInfo))
    dladdr.restype = ctypes.c_int
    info = _DlInfo()
    symbol = ctypes.cast(lib["opus_get_version_string"], ctypes.c_void_p)
    if dladdr(symbol, ctypes.byref(info)) and info.dli_fname:
        return os.path.realpath(os.fsdecode(info.dli_fname))
    return fallback


def _opus():
    """The opuslib_next package, loading libopus on first use."""
    if _api is None:
        load_libopus()
    return _api


_nb_samples = None    # opus_packet_get_nb_samples, which opuslib_next does not wrap


def _opus_error(code):
    """libopus's text for the error ``code``."""
    return str(_opus().OpusError(code))


# ------------------------------------------------------------------ argument checks

def _check_int(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low} to {high}, got {value}")
    return int(value)


def _check_channels(channels):
    if isinstance(channels, bool) or channels not in (1, 2):
        raise ValueError(f"channels must be 1 (mono) or 2 (stereo), got {channels!r}")
    return int(channels)


def _check_frame_ms(frame_ms):
    if isinstance(frame_ms, bool) or frame_ms not in FRAME_MS_CHOICES:
        raise ValueError(f"frame_ms must be one of {FRAME_MS_CHOICES}, got {frame_ms!r}")
    return int(frame_ms)


def _check_bitrate(bps):
    return _check_int("bitrate", bps, *BITRATE_RANGE)


def _check_loss_pct(pct):
    return _check_int("packet_loss_pct", pct, 0, 100)


def _check_application(application):
    if application not in APPLICATIONS:
        raise ValueError(f"application must be one of {tuple(APPLICATIONS)}, "
                         f"got {application!r}")
    return application


def _check_frame_samples(frame_samples):
    """Concealment/FEC length: a multiple of 2.5 ms, at most 120 ms."""
    valid = (not isinstance(frame_samples, bool)
             and isinstance(frame_samples, (int, np.integer))
             and 0 < frame_samples <= MAX_FRAME_SAMPLES
             and frame_samples % GRANULE_SAMPLES == 0)
    if not valid:
        raise CodecError(
            f"frame_samples must be a multiple of {GRANULE_SAMPLES} (2.5 ms at {SAMPLE_RATE} "
            f"Hz) from {GRANULE_SAMPLES} to {MAX_FRAME_SAMPLES}, such as 480 (10 ms) or "
            f"960 (20 ms); got {frame_samples!r}")
    return int(frame_samples)


def _check_payload(payload):
    """``payload`` as non-empty bytes."""
    if isinstance(payload, (bytearray, memoryview)):
        payload = bytes(payload)
    elif not isinstance(payload, bytes):
        raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
    if not payload:
        raise CodecError("empty payload: a packet has at least one byte; "
                         "call conceal() for a lost packet")
    return payload


class _FrameInput:
    """Checks one input frame and copies it, interleaved, into a float32 buffer."""

    def __init__(self, channels, frame_ms):
        self.channels = channels
        self.frame_ms = frame_ms
        self.frame_samples = SAMPLE_RATE * frame_ms // 1000
        self.interleaved = np.zeros((self.frame_samples, channels), dtype=np.float32)

    def load(self, pcm):
        """Copy ``pcm`` into ``self.interleaved``; ValueError/TypeError if it is no frame."""
        x = pcm if isinstance(pcm, np.ndarray) else np.asarray(pcm)
        shape = x.shape
        if x.ndim == 1 and self.channels == 1:
            x = x.reshape(1, x.shape[0])
        if x.shape != (self.channels, self.frame_samples):
            mono = f" or ({self.frame_samples},)" if self.channels == 1 else ""
            raise ValueError(
                f"pcm must be exactly one {self.frame_ms} ms frame at {SAMPLE_RATE} Hz, "
                f"shaped ({self.channels}, {self.frame_samples}){mono}; got shape {shape}")
        if x.dtype.kind in "iu":       # integer PCM: scale by its full scale
            info = np.iinfo(x.dtype)
            offset = (int(info.max) + int(info.min) + 1) / 2.0
            x = (x.astype(np.float64) - offset) / ((int(info.max) - int(info.min) + 1) / 2.0)
        elif x.dtype.kind != "f":
            raise TypeError(f"pcm must be float audio in [-1, 1], got dtype {x.dtype}")
        if x.dtype == np.float32:
            np.copyto(self.interleaved, x.T)
        else:    # float64 beyond float32 becomes inf here, reported below
            with np.errstate(over="ignore", invalid="ignore"):
                np.copyto(self.interleaved, x.T)
        # A float64 sum of float32 values overflows only if one is not finite.
        if not math.isfinite(float(self.interleaved.sum(dtype=np.float64))):
            n, c = np.argwhere(~np.isfinite(self.interleaved))[0]
            raise ValueError(f"pcm contains {x[c, n]} at channel {c}, sample {n}; "
                             "only finite samples (within float32) can be encoded")
        return self.interleaved


# ------------------------------------------------------------------ Opus

class OpusEncoder:
    """Opus encoder for one stream: one frame of float32 audio in, one packet out.

    ``channels`` 1 or 2; ``bitrate`` in bit/s (6000..510000, VBR around it);
    ``frame_ms`` 10 or 20; ``application`` ``"voip"`` (speech, the default),
    ``"audio"`` (music) or ``"lowdelay"`` (CELT only, 2.5 ms lookahead instead
    of 6.5 ms, no FEC); ``fec`` turns in-band forward error correction on, which
    libopus only spends bits on while ``packet_loss_pct`` > 0;
    ``complexity`` 0..10 (CPU for quality).  Bad values raise ``ValueError``.
    """

    payload_type = 111

    def __init__(self, channels=1, bitrate=32000, frame_ms=20, application="voip",
                 fec=True, packet_loss_pct=0, complexity=9):
        self.channels = _check_channels(channels)
        self.frame_ms = _check_frame_ms(frame_ms)
        self.application = _check_application(application)
        bitrate = _check_bitrate(bitrate)
        packet_loss_pct = _check_loss_pct(packet_loss_pct)
        complexity = _check_int("complexity", complexity, 0, 10)
        self._input = _FrameInput(self.channels, self.frame_ms)
        #: Samples per channel in one frame (960 for 20 ms).
        self.frame_samples = self._input.frame_samples
        opus = _opus()
        try:
            self._enc = opus.Encoder(SAMPLE_RATE, self.channels, APPLICATIONS[application])
            self._enc.complexity = complexity
        except opus.OpusError as exc:
            raise CodecError(f"libopus could not create the encoder: {exc}") from exc
        self.set_bitrate(bitrate)
        self.set_fec(fec)
        self.set_packet_loss_pct(packet_loss_pct)
        self.complexity = complexity
        # opuslib_next's encode_float allocates its output on every call; the
        # same C function is called here with buffers made once.
        self._encode = opus.api.encoder.libopus_encode_float
        self._pcm_ptr = self._input.interleaved.ctypes.data_as(opus.api.c_float_pointer)
        self._out = (ctypes.c_char * MAX_PACKET_BYTES)()

    @property
    def lookahead(self):
        """The codec's delay in samples at 48 kHz (312 for voip/audio, 120 for lowdelay)."""
        return self._ctl("lookahead")

    def encode(self, pcm):
        """Encode one frame and return the Opus packet (the RTP payload).

        ``pcm``: float32 ``(channels, frame_samples)`` in [-1, 1], or 1-D for
        mono; other float dtypes are converted and integer PCM is scaled by its
        full scale.  Raises ``ValueError`` for another shape or NaN/Inf.
        """
        self._input.load(pcm)
        n = self._encode(self._enc.encoder_state, self._pcm_ptr, self.frame_samples,
                         self._out, MAX_PACKET_BYTES)
        if n < 0:
            raise CodecError(f"libopus could not encode the frame: {_opus_error(n)}")
        return ctypes.string_at(self._out, n)

    def set_bitrate(self, bps):
        """Set the target bitrate ``bps`` in bit/s, 6000..510000.

        Raises ``ValueError`` outside that range.
        """
        self._ctl("bitrate", _check_bitrate(bps))
        self.bitrate = int(bps)

    def set_packet_loss_pct(self, pct):
        """Tell libopus the expected packet loss ``pct``, 0..100 %, which sets
        how much in-band FEC it spends (none at 0); ``ValueError`` otherwise."""
        self._ctl("packet_loss_perc", _check_loss_pct(pct))
        self.packet_loss_pct = int(pct)

    def set_fec(self, on):
        """Turn in-band FEC on (``on`` True) or off.

        Effective only with packet_loss_pct > 0.
        """
        self._ctl("inband_fec", 1 if on else 0)
        self.fec = bool(on)

    def reset(self):
        """Forget the signal history (as a new encoder), keeping the settings."""
        self._ctl(None)

    def _ctl(self, name, value=None):
        opus = _opus()
        try:
            if name is None:
                return self._enc.reset_state()
            if value is None:
                return getattr(self._enc, name)
            setattr(self._enc, name, value)
        except opus.OpusError as exc:
            raise CodecError(f"libopus refused {name}={value!r}: {exc}") from exc


class OpusDecoder:
    """Opus decoder for one stream, with loss concealment and in-band FEC.

    ``channels`` (1 or 2) is the output layout and need not match the
    stream's: libopus mixes stereo down or copies mono to both channels.
    Raises ``ValueError`` for another channel count and ``CodecError`` when
    libopus cannot create the decoder.
    """

    payload_type = 111
    #: In-band FEC: ``decode_fec`` rebuilds the previous frame from a packet.
    has_fec = True

    def __init__(self, channels=1):
        self.channels = _check_channels(channels)
        opus = _opus()
        try:
            self._dec = opus.Decoder(SAMPLE_RATE, self.channels)
        except opus.OpusError as exc:
            raise CodecError(f"libopus could not create the decoder: {exc}") from exc
        # opuslib_next's decode_float needs packet bytes (no NULL for
        # concealment) and allocates per call; the same C function is called
        # here with one output buffer, room for the longest packet.
        self._decode = opus.api.decoder.libopus_decode_float
        self._pcm = np.zeros((MAX_FRAME_SAMPLES, self.channels), dtype=np.float32)
        self._pcm_ptr = self._pcm.ctypes.data_as(opus.api.c_float_pointer)

    def decode(self, payload):
        """Decode one Opus packet ``payload`` (bytes) to float32 ``(channels, n)``,
        n samples as the packet says (e.g. 960 for 20 ms).  ``CodecError`` if
        it is not a valid packet."""
        payload = _check_payload(payload)
        return self._run(payload, MAX_FRAME_SAMPLES, 0, "decode the payload")

    def decode_fec(self, next_payload, frame_samples):
        """Rebuild the lost frame just before ``next_payload`` from the in-band
        FEC that ``next_payload`` carries, ``frame_samples`` long (a multiple of
        120, e.g. 960 for 20 ms).  Where it carries no FEC (FEC off, no loss
        expected, a CELT-mode packet) libopus conceals instead.  Decode
        ``next_payload`` itself normally afterwards."""
        payload = _check_payload(next_payload)
        n = _check_frame_samples(frame_samples)
        return self._run(payload, n, 1, "decode FEC from the payload")

    def conceal(self, frame_samples):
        """Packet-loss concealment: ``frame_samples`` (a multiple of 120) made
        up from the history, for a packet that never arrived."""
        n = _check_frame_samples(frame_samples)
        return self._run(None, n, 0, "conceal")

    def reset(self):
        """Forget the stream's history (as a new decoder)."""
        self._dec.reset_state()

    def _run(self, payload, frame_samples, fec, what):
        length = 0 if payload is None else len(payload)
        n = self._decode(self._dec.decoder_state, payload, length, self._pcm_ptr,
                         frame_samples, fec)
        if n < 0:
            size = "" if payload is None else f" ({length} bytes)"
            raise CodecError(f"libopus could not {what}{size}: {_opus_error(n)}")
        return self._pcm[:n].T.copy()


def packet_samples(payload):
    """Samples per channel at 48 kHz in the Opus packet ``payload`` (all its
    frames; 960 for a 20 ms packet), read from its TOC and frame count only.
    ``CodecError`` if these are invalid (no frames, over 120 ms, empty)."""
    global _nb_samples
    payload = _check_payload(payload)
    if _nb_samples is None:
        fn = _opus().api.libopus["opus_packet_get_nb_samples"]   # a private function object
        fn.argtypes = (ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32)
        fn.restype = ctypes.c_int
        _nb_samples = fn
    n = _nb_samples(payload, len(payload), SAMPLE_RATE)
    if n < 0:
        raise CodecError(f"not a valid Opus packet ({len(payload)} bytes): {_opus_error(n)}")
    if n == 0:   # a code-3 packet that declares no frames (RFC 6716, 3.2.5)
        raise CodecError(f"not a valid Opus packet ({len(payload)} bytes): it declares 0 frames")
    return n


# ------------------------------------------------------------------ L16 (debugging)

#: Full scale of L16: sample value v in [-32768, 32767] means v / 32768.
_L16_SCALE = 32768.0


class PcmEncoder:
    """L16 encoder (RFC 3551: 16-bit signed big-endian, channels interleaved).

    A debugging codec: exact to 1/32768 and trivially readable, but 768 kbit/s
    per channel (a 20 ms stereo frame is 3840 bytes, more than one Ethernet
    MTU; use 10 ms frames or mono on a real network).  Input beyond [-1, 1] is
    clipped.  It takes the same arguments and methods as ``OpusEncoder`` so
    that the two swap freely; the Opus-only settings (bitrate, FEC, loss,
    application, complexity) are checked the same way and have no effect.
    """

    payload_type = 96

    def __init__(self, channels=1, bitrate=32000, frame_ms=20, application="voip",
                 fec=True, packet_loss_pct=0, complexity=9):
        self.channels = _check_channels(channels)
        self.frame_ms = _check_frame_ms(frame_ms)
        self.application = _check_application(application)
        self.complexity = _check_int("complexity", complexity, 0, 10)
        self.set_bitrate(bitrate)
        self.set_fec(fec)
        self.set_packet_loss_pct(packet_loss_pct)
        self._input = _FrameInput(self.channels, self.frame_ms)
        self.frame_samples = self._input.frame_samples
        self._ints = np.zeros((self.frame_samples, self.channels), dtype=">i2")
        #: L16 adds no delay.
        self.lookahead = 0

    def encode(self, pcm):
        """Encode one frame (same input rules as ``OpusEncoder.encode``) to
        ``2 * channels * frame_samples`` bytes: round(x * 32768), clipped to int16."""
        x = self._input.load(pcm)
        np.multiply(x, _L16_SCALE, out=x)
        np.rint(x, out=x)
        np.clip(x, -_L16_SCALE, _L16_SCALE - 1, out=x)
        self._ints[...] = x
        return self._ints.tobytes()

    def set_bitrate(self, bps):
        """Checked like Opus (6000..510000 bit/s); L16's rate is fixed, so no effect."""
        self.bitrate = _check_bitrate(bps)

    def set_packet_loss_pct(self, pct):
        """Checked like Opus (0..100); no effect, L16 has no FEC."""
        self.packet_loss_pct = _check_loss_pct(pct)

    def set_fec(self, on):
        """Recorded only: L16 has no FEC."""
        self.fec = bool(on)

    def reset(self):
        """Nothing to forget: L16 keeps no state."""


class PcmDecoder:
    """L16 decoder: big-endian int16 payload to float32 ``(channels, n)``.

    The payload carries no channel count, so the stream must have
    ``channels`` channels.  Loss is concealed with silence, never with a
    made-up signal, so that on this debugging codec every loss stays audible
    and exactly measurable; ``decode_fec`` conceals likewise (L16 has no FEC).
    """

    payload_type = 96
    #: L16 carries no FEC: ``decode_fec`` only conceals.
    has_fec = False

    def __init__(self, channels=1):
        self.channels = _check_channels(channels)

    def decode(self, payload):
        """Decode an L16 payload; ``CodecError`` unless its length is a
        non-zero multiple of ``2 * channels`` bytes."""
        payload = _check_payload(payload)
        step = 2 * self.channels
        if len(payload) % step:
            raise CodecError(f"L16 payload of {len(payload)} bytes is not a whole number of "
                             f"{self.channels}-channel samples ({step} bytes each)")
        n = len(payload) // step
        ints = np.frombuffer(payload, dtype=">i2").reshape(n, self.channels)
        out = np.empty((self.channels, n), dtype=np.float32)
        np.multiply(ints.T, 1.0 / _L16_SCALE, out=out, casting="unsafe")
        return out

    def decode_fec(self, next_payload, frame_samples):
        """L16 has no FEC: checks ``next_payload`` and returns ``conceal(frame_samples)``."""
        _check_payload(next_payload)
        return self.conceal(frame_samples)

    def conceal(self, frame_samples):
        """Silence, ``frame_samples`` long (a multiple of 120, at most 5760)."""
        return np.zeros((self.channels, _check_frame_samples(frame_samples)), dtype=np.float32)

    def reset(self):
        """Nothing to forget: L16 keeps no state."""


# ------------------------------------------------------------------ factories

def make_encoder(codec="opus", **kw):
    """A new encoder for ``codec`` (``"opus"`` or ``"pcm"``), ``kw`` as the
    ``OpusEncoder`` arguments.  ``ValueError`` for another codec name."""
    return _codec_class(codec, OpusEncoder, PcmEncoder)(**kw)


def make_decoder(codec="opus", channels=1):
    """A new decoder for ``codec`` (``"opus"`` or ``"pcm"``) giving ``channels``
    output channels.  ``ValueError`` for another codec name."""
    return _codec_class(codec, OpusDecoder, PcmDecoder)(channels=channels)


def _codec_class(codec, opus_class, pcm_class):
    if codec == "opus":
        return opus_class
    if codec == "pcm":
        return pcm_class
    raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")

"""Sound cards for a live-channel client: list them, and drive a ``Client``
from a device's callback.

PortAudio (through ``sounddevice``: ``pip install 'stagevox[devices]'`` and
the system's PortAudio library, Debian's ``libportaudio2``) calls a callback
on its own thread for every block the card records or plays.  The callbacks
here only copy between the card and two bounded ring buffers; a worker
thread moves audio between the rings and the client (``push_audio`` and
``pull_audio``, 10 ms at a time, resampled with soxr when the card does not
run at the client's rate).  So effects, encoding and decoding never run on
the card's thread: a slow frame becomes a counted over- or under-run, never
a late callback.  The device clock paces the client: the worker pulls when
the card has played what was queued, and pushes when the card has recorded.
"""

import threading
import time
from dataclasses import dataclass

import numpy as np

from stagevox.dsp.errors import ParameterError

__all__ = ["DeviceError", "DeviceInfo", "DeviceLink", "list_devices", "find_device", "rescan"]

#: soxr quality on the device path: LQ (16-bit precision) delays 0.5-4 ms of
#: audio where HQ delays about 15 ms; on a live path the delay counts more,
#: and 16 bits are below any microphone's noise.
RESAMPLE_QUALITY = "LQ"
#: Recorded audio waiting for the worker, at most, in ms: the input callback
#: drops what does not fit (an overrun).
MAX_BUFFER_MS = 200.0
#: Recorded audio older than this many blocks when the worker gets to it
#: (after a stall) is dropped, the newest block kept, so the voice does not
#: stay late for the rest of the session (counted as an overrun).
MAX_BACKLOG_BLOCKS = 4
#: Played audio queued beyond the callback's block, in blocks, at the start:
#: the worker may be this late before the card runs dry.  Each under-run
#: adds a block, up to MAX_BUFFER_MS (a card that asks for several blocks at
#: once, or a worker often late, gets the queue it needs).
OUTPUT_MARGIN_BLOCKS = 1


class DeviceError(ParameterError):
    """A sound device that cannot be used: an unknown name or index, a device
    without the direction asked for, settings it refuses, or PortAudio missing.

    The message names the problem and, for an unknown device, the devices there are.
    """


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device.

    ``index``: PortAudio's device number; ``name``; ``host_api`` (ALSA, JACK,
    CoreAudio, WASAPI, ...); ``max_input_channels``/``max_output_channels``
    (0: not that direction); ``default_sample_rate`` in Hz;
    ``default_input``/``default_output``: whether it is the default.
    """

    index: int
    name: str
    host_api: str
    max_input_channels: int
    max_output_channels: int
    default_sample_rate: float
    default_input: bool
    default_output: bool


def _sounddevice():
    """The ``sounddevice`` module; ``DeviceError`` saying what to install when
    it or PortAudio is missing."""
    try:
        import sounddevice
    except ImportError:
        raise DeviceError("sound devices need the sounddevice package: "
                          "pip install 'stagevox[devices]'") from None
    except OSError as exc:
        raise DeviceError(f"sound devices need the PortAudio library ({exc}); on Debian or "
                          "Ubuntu: apt-get install libportaudio2") from None
    return sounddevice


def rescan():
    """Ask PortAudio for the devices again (a card plugged in, a new ALSA or
    JACK configuration); no stream may be open.  Raises ``DeviceError`` when
    PortAudio is missing."""
    sd = _sounddevice()
    sd._terminate()
    sd._initialize()


def _default_index(sd, kind):
    try:
        return int(sd.query_devices(kind=kind)["index"])
    except (sd.PortAudioError, ValueError, KeyError, TypeError):
        return -1


def list_devices():
    """Every input and output device PortAudio sees, as ``DeviceInfo``s in index order.

    Raises ``DeviceError`` when sounddevice or PortAudio is missing.
    """
    sd = _sounddevice()
    apis = sd.query_hostapis()
    default_in, default_out = _default_index(sd, "input"), _default_index(sd, "output")
    return [DeviceInfo(index=int(d["index"]), name=d["name"],
                       host_api=apis[d["hostapi"]]["name"],
                       max_input_channels=int(d["max_input_channels"]),
                       max_output_channels=int(d["max_output_channels"]),
                       default_sample_rate=float(d["default_samplerate"]),
                       default_input=d["index"] == default_in,
                       default_output=d["index"] == default_out)
            for d in sd.query_devices()]


def describe_devices(devices, kind=None):
    """The devices as lines of text (index, channels in/out, rate, host API,
    name; ``*`` marks a default), those of ``kind`` ("input"/"output") only
    when given."""
    lines = []
    for d in devices:
        if kind is not None and not _channels(d, kind):
            continue
        mark = "*" if (d.default_input and kind != "output") or (
            d.default_output and kind != "input") else " "
        lines.append(f"{mark}{d.index:3d}  in {d.max_input_channels:3d}  out "
                     f"{d.max_output_channels:3d}  {d.default_sample_rate:7.0f} Hz  "
                     f"{d.host_api:<8s}  {d.name}")
    return lines


def _channels(device, kind):
    return device.max_input_channels if kind == "input" else device.max_output_channels


def find_device(spec, kind):
    """The ``DeviceInfo`` of the ``kind`` ("input" or "output") device ``spec`` names.

    ``spec``: ``True`` or ``None`` for the default device, an index (int or
    digits), or a name: the device of exactly that name, else the only one
    whose name contains it (case ignored).  Raises ``DeviceError`` for a
    device that does not exist or has no channels of that kind, with the list
    of the ``kind`` devices there are; ``ValueError`` for a bad ``kind``.
    """
    if kind not in ("input", "output"):
        raise ValueError(f"kind must be 'input' or 'output', got {kind!r}")
    devices = list_devices()
    usable = [d for d in devices if _channels(d, kind)]
    listing = "\n".join(describe_devices(usable)) or "  (none)"
    if spec is True or spec is None:
        found = [d for d in usable if getattr(d, f"default_{kind}")]
        if not found:
            raise DeviceError(f"there is no default {kind} device; choose one of these "
                              f"{kind} devices:\n{listing}")
        return found[0]
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool) or (
            isinstance(spec, str) and spec.strip().isdigit()):
        found = [d for d in usable if d.index == int(spec)]
        what = f"number {int(spec)}"
    elif isinstance(spec, str) and spec.strip():
        found = [d for d in usable if d.name == spec]
        if not found:
            found = [d for d in usable if spec.lower() in d.name.lower()]
        what = f"named {spec!r}"
    else:
        raise DeviceError(f"a {kind} device is True (the default), an index or a name, "
                          f"got {spec!r}")
    if len(found) != 1:
        problem = "several" if found else "no"
        raise DeviceError(f"{problem} {kind} device{'s' if found else ''} {what}; the {kind} "
                          f"devices are:\n{listing}")
    return found[0]


class _Ring:
    """A bounded ring of float32 frames ``(channels, capacity)`` between one
    writing thread and one reading thread.

    Each side copies first and then moves only its own counter (one Python
    assignment, atomic under the GIL), so neither ever waits for the other;
    a stale view of the other's counter only makes a side see less room or
    less audio than there is.
    """

    def __init__(self, channels, capacity):
        self.data = np.zeros((channels, capacity), np.float32)
        self.capacity = capacity
        self.written = 0                  # samples written so far (the writer's)
        self.read = 0                     # samples read so far (the reader's)

    @property
    def fill(self):
        """Samples waiting to be read."""
        return self.written - self.read

    def write(self, block):
        """Append as much of ``block`` ``(channels, n)`` as fits; returns the samples taken."""
        n = min(block.shape[1], self.capacity - self.fill)
        start = self.written % self.capacity
        first = min(n, self.capacity - start)
        self.data[:, start:start + first] = block[:, :first]
        self.data[:, :n - first] = block[:, first:n]
        self.written += n
        return n

    def read_into(self, out):
        """Move up to ``out.shape[1]`` samples into ``out``; returns how many."""
        n = min(out.shape[1], self.fill)
        start = self.read % self.capacity
        first = min(n, self.capacity - start)
        out[:, :first] = self.data[:, start:start + first]
        out[:, first:n] = self.data[:, :n - first]
        self.read += n
        return n

    def skip(self, n):
        """Drop the ``n`` oldest samples (at most what is there); returns how many."""
        n = min(n, self.fill)
        self.read += n
        return n


class _Monitor:
    """Keeps the mixed frame (room plus one's own processed voice) of the
    last ``pull_audio``, for a link that plays it instead of the room alone."""

    def __init__(self):
        self.frame = None

    def on_mixed_audio_frame(self, frame):
        """Remember ``frame``, the room's mix plus the local processed voice."""
        self.frame = frame


class DeviceLink:
    """Drives ``client`` from sound cards: what ``input`` records goes to
    ``push_audio``, what ``pull_audio`` gives goes to ``output``.

    ``input``/``output``: a device (``True`` for the default, an index or a
    name, see ``find_device``), or ``None`` for no device that way; at least
    one.  ``block_ms``: the card's block and the client's step, 2.5-100 ms
    (10 is the live frame).  ``sample_rate``: the cards' rate in Hz (default:
    the client's rate if the card takes it, else the card's own default;
    soxr converts between them).  ``monitor``: play one's own processed voice
    with the room (needs an output).  ``latency``: the buffering asked of
    PortAudio, ``"low"`` (default), ``"high"`` or seconds; more lets the
    card's callback be late (a busy machine, other Python threads holding
    the GIL) without an over- or under-run, at that much more delay.

    The recording is opened with at most the client's channel count, the
    playback with at most two (a mono client is heard on both).  ``stats()``
    counts over-runs (recorded audio dropped: the worker fell behind or
    PortAudio reported an input overflow) and under-runs (silence played:
    nothing was ready or PortAudio reported an output underflow), and
    reports the delay the device path adds.

    Raises ``DeviceError`` for an unknown device or settings the card
    refuses, ``ValueError`` for a bad ``block_ms`` or ``latency``, no device
    at all, or ``monitor`` without an output.
    """

    def __init__(self, client, input=None, output=None, block_ms=10.0, *, sample_rate=None,
                 monitor=False, latency="low"):
        if input is None and output is None:
            raise ValueError("give an input device, an output device or both "
                             "(True for the default one)")
        if not (isinstance(block_ms, (int, float)) and 2.5 <= block_ms <= 100):
            raise ValueError(f"block_ms must be a number of milliseconds in [2.5, 100], "
                             f"got {block_ms!r}")
        if monitor and output is None:
            raise ValueError("monitor plays one's own voice: it needs an output device")
        if not (latency in ("low", "high") or isinstance(latency, (int, float))
                and 0 < latency <= 1):
            raise ValueError(f"latency must be 'low', 'high' or seconds in (0, 1], "
                             f"got {latency!r}")
        self.latency = latency
        self.client = client
        self.block_ms = float(block_ms)
        self._sd = _sounddevice()
        self._monitor = _Monitor() if monitor else None
        self._client_block = round(client.sample_rate * self.block_ms / 1000)
        self.input = self.output = None
        self._streams = []
        self._in = self._out = None
        if input is not None:
            self.input = find_device(input, "input")
            channels = min(self.input.max_input_channels, client.channels)
            self._in = self._direction(self.input, "input", channels, sample_rate)
        if output is not None:
            self.output = find_device(output, "output")
            channels = min(self.output.max_output_channels, 2)
            self._out = self._direction(self.output, "output", channels, sample_rate)
        # Each counter has one writer: the input callback, the output callback
        # or the worker (an increment from two threads could be lost).
        self._counts = dict(overruns=0, dropped_samples=0, underruns=0, silent_samples=0,
                            skips=0, skipped_samples=0, worker_errors=0)
        self.last_error = None
        self._delays = {"input": [0.0, 0], "output": [0.0, 0]}   # sum of s, count
        self._last_write = None            # monotonic time of the last input callback
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None

    def _direction(self, device, kind, channels, sample_rate):
        """The rate, block, ring and resampler of one direction (checked with PortAudio)."""
        sd = self._sd
        check = sd.check_input_settings if kind == "input" else sd.check_output_settings
        rates = ([sample_rate] if sample_rate is not None
                 else [self.client.sample_rate, device.default_sample_rate])
        problem = None
        for rate in rates:
            try:
                check(device=device.index, channels=channels, dtype="float32",
                      samplerate=rate)
                break
            except (sd.PortAudioError, ValueError) as exc:
                problem = exc
        else:
            raise DeviceError(f"{kind} device {device.name!r} refuses {channels} channel(s) at "
                              f"{' or '.join(f'{r:g}' for r in rates)} Hz: {problem}")
        rate = int(round(rate))
        block = round(rate * self.block_ms / 1000)
        d = {"device": device, "rate": rate, "channels": channels, "block": block,
             "resampler": None}
        if rate != self.client.sample_rate:
            import soxr
            src, dst = ((rate, self.client.sample_rate) if kind == "input"
                        else (self.client.sample_rate, rate))
            d["resampler"] = soxr.ResampleStream(src, dst, channels, dtype="float32",
                                                 quality=RESAMPLE_QUALITY)
        if kind == "input":
            d["ring"] = _Ring(channels, max(2 * block, round(rate * MAX_BUFFER_MS / 1000)))
            d["buffer"] = np.zeros((channels, block), np.float32)
        else:
            d["target"] = block * (1 + OUTPUT_MARGIN_BLOCKS)
            d["max_target"] = max(d["target"], block + round(rate * MAX_BUFFER_MS / 1000))
            d["underruns_seen"] = 0
            d["ring"] = _Ring(channels, d["max_target"] + 2 * block + rate // 100)
        return d

    # ------------------------------------------------------------ life cycle

    def start(self):
        """Open the streams and start moving audio.  Raises ``DeviceError`` when
        PortAudio cannot open or start a stream (nothing is left open)."""
        sd = self._sd
        if self._monitor is not None:
            self.client.register_audio_frame_observer(self._monitor)
        if self._out is not None:           # the first callbacks find a full queue
            o = self._out
            o["ring"].write(np.zeros((o["channels"], o["target"]), np.float32))
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="stagevox-device", daemon=True)
        self._thread.start()
        try:
            for kind, d, cls, cb in (("input", self._in, sd.InputStream, self._on_input),
                                     ("output", self._out, sd.OutputStream, self._on_output)):
                if d is None:
                    continue
                try:
                    stream = cls(device=d["device"].index, samplerate=d["rate"],
                                 blocksize=d["block"], channels=d["channels"], dtype="float32",
                                 latency=self.latency, callback=cb)
                except (sd.PortAudioError, ValueError) as exc:
                    raise DeviceError(f"cannot open {kind} device {d['device'].name!r} at "
                                      f"{d['rate']} Hz: {exc}") from None
                self._streams.append(stream)
                d["stream"] = stream
            for stream in self._streams:
                stream.start()
            for d in (self._in, self._out):
                if d is not None:
                    d["latency"] = float(d["stream"].latency)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Stop and close the streams and the worker (idempotent)."""
        for stream in self._streams:
            try:
                stream.stop()
                stream.close()
            except self._sd.PortAudioError:
                pass
        self._streams = []
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        if self._monitor is not None:
            try:
                self.client.unregister_audio_frame_observer(self._monitor)
            except ValueError:            # stopped before it was registered
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------ the card's thread

    def _on_input(self, indata, frames, time_info, status):
        written = self._in["ring"].write(indata.T)
        self._last_write = time.monotonic()
        if written < frames or status.input_overflow:
            self._counts["overruns"] += 1
            self._counts["dropped_samples"] += frames - written
        self._wake.set()

    def _on_output(self, outdata, frames, time_info, status):
        ring = self._out["ring"]
        self._delays["output"][0] += ring.fill / self._out["rate"]
        self._delays["output"][1] += 1
        got = ring.read_into(outdata.T)
        if got < frames:
            outdata[got:] = 0.0
            self._counts["silent_samples"] += frames - got
        if got < frames or status.output_underflow:
            self._counts["underruns"] += 1
        self._wake.set()

    # ------------------------------------------------------------ the worker

    def _run(self):
        timeout = self.block_ms / 1000
        while not self._stop.is_set():
            self._wake.wait(timeout)
            self._wake.clear()
            try:
                if self._in is not None:
                    self._record()
                if self._out is not None:
                    self._play()
            except Exception as exc:     # the link goes on; stats() shows it
                self._counts["worker_errors"] += 1
                self.last_error = f"{type(exc).__name__}: {exc}"

    def _record(self):
        d = self._in
        ring, block = d["ring"], d["block"]
        while ring.fill >= block:
            backlog = ring.fill - block
            if backlog > MAX_BACKLOG_BLOCKS * block:
                self._counts["skipped_samples"] += ring.skip(backlog)
                self._counts["skips"] += 1
            waited = (ring.fill - block) / d["rate"]
            if self._last_write is not None:
                waited += time.monotonic() - self._last_write
            self._delays["input"][0] += waited
            self._delays["input"][1] += 1
            n = ring.read_into(d["buffer"])
            x = d["buffer"][:, :n].copy()
            if d["resampler"] is not None:
                x = d["resampler"].resample_chunk(np.ascontiguousarray(x.T)).T
            self.client.push_audio(np.ascontiguousarray(x))

    def _play(self):
        d = self._out
        ring = d["ring"]
        underruns = self._counts["underruns"]
        if underruns > d["underruns_seen"]:
            d["underruns_seen"] = underruns
            d["target"] = min(d["target"] + d["block"], d["max_target"])
        while ring.fill < d["target"]:
            y = self.client.pull_audio(self._client_block)
            if self._monitor is not None and self._monitor.frame is not None:
                y, self._monitor.frame = self._monitor.frame, None
            if y.shape[0] != d["channels"]:
                y = (np.repeat(y, d["channels"], axis=0) if y.shape[0] == 1
                     else y.mean(axis=0, keepdims=True))
            if d["resampler"] is not None:
                y = d["resampler"].resample_chunk(np.ascontiguousarray(y.T, np.float32)).T
            ring.write(y)

    # ------------------------------------------------------------ statistics

    def stats(self):
        """The device path's counters and delays, a dict.

        ``input_device``/``output_device`` (names or None), ``input_rate``/
        ``output_rate`` (Hz), ``block_ms``; ``overruns`` (times recorded
        audio was dropped) with ``dropped_ms``; ``underruns`` (times the card
        played silence for want of audio) with ``silence_ms``;
        ``output_queue_ms``: the audio the worker now keeps queued for the
        card (it grows by a block at each under-run);
        ``input_latency_ms``/``output_latency_ms``: the delay the device path
        adds each way, the sum of PortAudio's reported stream latency
        (``portaudio_*_latency_ms``), the mean time audio waits in the link's
        buffer (``*_buffer_ms``) and the resampler's delay
        (``*_resampler_ms``); ``worker_errors`` and ``last_error``.
        """
        c = self._counts
        s = {"block_ms": self.block_ms, "overruns": c["overruns"] + c["skips"],
             "underruns": c["underruns"],
             "worker_errors": c["worker_errors"], "last_error": self.last_error}
        for kind, d in (("input", self._in), ("output", self._out)):
            s[f"{kind}_device"] = None if d is None else d["device"].name
            s[f"{kind}_rate"] = None if d is None else d["rate"]
            for key in (f"{kind}_latency_ms", f"portaudio_{kind}_latency_ms",
                        f"{kind}_buffer_ms", f"{kind}_resampler_ms"):
                s[key] = None
            if d is None:
                continue
            pa = d.get("latency", 0.0)
            total, count = self._delays[kind]
            buffered = total / count if count else 0.0
            r = d["resampler"]
            out_rate = self.client.sample_rate if kind == "input" else d["rate"]
            resampler = r.delay() / out_rate if r is not None else 0.0
            s[f"portaudio_{kind}_latency_ms"] = 1e3 * pa
            s[f"{kind}_buffer_ms"] = 1e3 * buffered
            s[f"{kind}_resampler_ms"] = 1e3 * resampler
            s[f"{kind}_latency_ms"] = 1e3 * (pa + buffered + resampler)
        s["output_queue_ms"] = (1e3 * self._out["target"] / self._out["rate"]
                                if self._out else None)
        rate_in = self._in["rate"] if self._in else 1
        rate_out = self._out["rate"] if self._out else 1
        s["dropped_ms"] = 1e3 * (c["dropped_samples"] + c["skipped_samples"]) / rate_in
        s["silence_ms"] = 1e3 * c["silent_samples"] / rate_out
        return s

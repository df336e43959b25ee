"""CDN push: a channel's mix encoded as AAC-LC with PyAV and pushed as FLV
over RTMP.

Every URL of a channel has the same settings (the channel's
``Transcoding``), so the channel's mix is encoded once
(``ChannelEncoder``, an output of the channel mix, on its worker) and the
AAC packets go to one connection per URL (``RtmpPublisher``: a thread, and
a worker process that muxes FLV and sends: ``publish_worker``).

Each ``RtmpPublisher`` takes the packets through a bounded queue (a full
queue drops and counts, ``publish_dropped``), so adding, removing, losing
or stalling one URL never makes a gap in another.  A
connection that cannot be opened or that drops is tried again with
back-off (0.5 s doubling up to ``MAX_BACKOFF_S``), and every change is
reported as ``(url, state, reason)``:

- states: ``"connecting"``, ``"running"``, ``"recovering"`` (lost or not
  reached, trying again), ``"failure"`` (given up), ``"stopped"``;
- reasons: ``"ok"``, ``"connection_failed"``, ``"connection_lost"``,
  ``"end_to_end_encrypted"``, ``"removed"``.
"""

import collections
import fractions
import logging
import os
import select
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

import numpy as np

from .channel_mix import CLOCK_RATE, MAX_BATCH_S, Transcoding, gain_matrix, mix_down
from .publish_worker import AAC_OPTIONS, RECORD

log = logging.getLogger(__name__)

#: AAC packets waiting for a connection, at most (about 1 s at 48 kHz).
QUEUE_PACKETS = 50
#: Retry back-off bounds, seconds.
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
#: Seconds an RTMP connect, read or write may take before it counts as failed.
IO_TIMEOUT_S = 5.0
MAX_URL_BYTES = 1024
SCHEMES = ("rtmp", "rtmps")

#: The worker process's script, run by path (it needs no more than PyAV)
#: with ``-P``: its folder, which holds ``token.py``, must not shadow
#: the standard library.
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "publish_worker.py")
#: Bytes of a failed worker's message logged at most.
MAX_ERROR_BYTES = 2000


def check_url(url):
    """Return ``url`` if it is an RTMP URL we push to; ``ValueError`` naming
    what is wrong otherwise (scheme, host, length, control characters)."""
    if not isinstance(url, str):
        raise ValueError(f"the publish URL must be a string, got {type(url).__name__}")
    if len(url.encode()) > MAX_URL_BYTES:
        raise ValueError(f"the publish URL is longer than {MAX_URL_BYTES} bytes")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ValueError(f"the publish URL {url!r} holds spaces or control characters")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError(f"the publish URL {url!r} has scheme {parts.scheme!r}; "
                         f"valid: {', '.join(SCHEMES)}")
    if not parts.hostname:
        raise ValueError(f"the publish URL {url!r} names no host")
    return url


def _settings(transcoding):
    """What makes a new AAC stream: ``(sample_rate, channels, bitrate)``."""
    return transcoding.sample_rate, transcoding.channels, transcoding.bitrate


class ChannelEncoder:
    """The channel mix encoded once as AAC-LC for all its RTMP connections.

    An output of ``channel_mix.ChannelMix``: ``feed(frames)`` mixes one
    frame as the transcoding says; ``flush()`` (after each batch of frames)
    encodes what was mixed (PyAV; FFmpeg's encoder does no I/O) and hands
    the AAC packets, as one block of ``publish_worker.RECORD`` records, to
    every publisher added with ``add`` that runs, tagged with the settings
    they were made with.  It encodes only while a publisher runs.
    ``update(transcoding)``: new volumes and pans from the next frame; a
    new sample rate, channel count or bitrate starts a new encoder.
    """

    #: The CDN lags anyway: the mix may hand frames over in batches this long.
    batch_s = MAX_BATCH_S

    def __init__(self, transcoding):
        self.transcoding = Transcoding.of(transcoding)
        self.publishers = {}
        self._context = None
        self._pts = 0
        self._mixed = []                 # this batch's mixed frames, not encoded yet
        self._gains = None               # (transcoding, uids, gain matrix) last used

    def add(self, url, publisher):
        self.publishers = {**self.publishers, url: publisher}

    def remove(self, url):
        publishers = dict(self.publishers)
        publishers.pop(url, None)
        self.publishers = publishers

    def update(self, transcoding):
        self.transcoding = Transcoding.of(transcoding)
        for publisher in self.publishers.values():
            publisher.update(self.transcoding)

    def feed(self, frames):
        """Mix one frame (``{uid: float32 frame}``) for the next ``flush``
        (nothing while no publisher runs)."""
        if not any(p.state == "running" for p in self.publishers.values()):
            return
        t = self.transcoding
        uids = tuple(frames)
        cached = self._gains
        if cached is None or cached[0] is not t or cached[1] != uids:
            cached = self._gains = (t, uids, gain_matrix(t, uids))
        self._mixed.append(mix_down(frames, t, gains=cached[2]))

    def flush(self):
        """Encode the frames fed since the last call and send the packets."""
        import av
        mixed, self._mixed = self._mixed, []
        running = [p for p in self.publishers.values() if p.state == "running"]
        if not running:
            self._context = None         # a new stream when one runs again
            return
        t = self.transcoding
        settings = _settings(t)
        if self._context is None or self._context_settings != settings:
            self._open(settings)
        mixed = [m for m in mixed if m.shape[0] == t.channels]   # not made before a change
        if not mixed:
            return
        pcm = mixed[0] if len(mixed) == 1 else np.concatenate(mixed, axis=1)
        frame = av.AudioFrame.from_ndarray(pcm, format="fltp",
                                           layout="mono" if t.channels == 1 else "stereo")
        frame.sample_rate = CLOCK_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, CLOCK_RATE)
        self._pts += pcm.shape[1]
        records = [struct.pack(RECORD, packet.pts, packet.size) + bytes(packet)
                   for packet in self._context.encode(frame)]
        if records:
            data = b"".join(records)
            for publisher in running:
                publisher.send(settings, data, len(records))

    def _open(self, settings):
        import av
        rate, channels, bitrate = settings
        ctx = av.CodecContext.create("aac", "w")
        ctx.sample_rate = rate
        ctx.layout = "mono" if channels == 1 else "stereo"
        ctx.format = "fltp"
        ctx.bit_rate = bitrate
        ctx.time_base = fractions.Fraction(1, rate)
        ctx.options = AAC_OPTIONS
        ctx.open()
        self._context, self._context_settings, self._pts = ctx, settings, 0


class RtmpPublisher:
    """Push a channel's AAC packets to ``url`` until ``close()``.

    ``on_state(url, state, reason)`` hears every state change (on this
    publisher's thread).  ``send(settings, pts, data)`` is the channel
    encoder's call; packets made with other settings than this
    connection's (``(sample_rate, channels, bitrate)`` of ``transcoding``)
    are dropped while it restarts.
    """

    def __init__(self, url, transcoding, on_state, counters, sealed=lambda: False):
        self.url = check_url(url)
        self.transcoding = Transcoding.of(transcoding)
        self.state = None
        self.worker_pid = None               # the current worker process's id
        self._on_state = on_state
        self._counters = counters
        self._sealed = sealed
        self._settings = None                # of the worker that runs
        self._queue = collections.deque()     # (records, packets) for the worker
        self._queued = 0                      # packets in it
        self._lock = threading.Lock()
        self._ready = threading.Event()       # something was queued
        self._stop = threading.Event()
        self._restart = threading.Event()     # sample rate, channels or bitrate changed
        self._thread = threading.Thread(target=self._run, name="stagevox-rtmp", daemon=True)
        self._thread.start()

    def send(self, settings, data, packets):
        """Queue ``data``, ``packets`` AAC packets as ``publish_worker.RECORD``
        records (pts in samples at the output rate), made with ``settings``,
        for the worker; never blocks.  Beyond ``QUEUE_PACKETS`` waiting, the
        block is dropped and counted."""
        if self.state != "running" or settings != self._settings:
            return
        with self._lock:
            if self._queued + packets > QUEUE_PACKETS:
                self._counters["publish_dropped"] += packets
                return
            self._queued += packets
            self._queue.append((data, packets))
        self._ready.set()

    def update(self, transcoding):
        """New settings: volumes and pans from the next frame on; a new sample
        rate, channel count or bitrate restarts the encoder (a new stream on
        the same URL)."""
        old, self.transcoding = self.transcoding, Transcoding.of(transcoding)
        if _settings(old) != _settings(self.transcoding):
            self._restart.set()

    def close(self, timeout=None):
        """Stop pushing, end the stream and report ``stopped``; waits
        ``timeout`` seconds at most (None: ``IO_TIMEOUT_S`` and a second) for
        the stream to end."""
        self._stop.set()
        self._thread.join(IO_TIMEOUT_S + 1.0 if timeout is None else timeout)

    def _set_state(self, state, reason):
        if state == self.state:
            return
        self.state = state
        log.info("RTMP %s: %s (%s)", self.url, state, reason)
        try:
            self._on_state(self.url, state, reason)
        except Exception as exc:        # a handler's error is the handler's
            log.warning("RTMP state handler failed: %r", exc)

    def _run(self):
        backoff = FIRST_BACKOFF_S
        reason = "ok"
        while not self._stop.is_set():
            if self._sealed():
                self._set_state("failure", "end_to_end_encrypted")
                return
            self._set_state("connecting" if self.state is None else "recovering", reason)
            failure = self._connection()
            if failure is None:
                backoff, reason = FIRST_BACKOFF_S, "ok"
                continue
            self._counters["publish_errors"] += 1
            reason = failure
            self._set_state("recovering", reason)
            self._stop.wait(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)
        if self.state != "failure":
            self._set_state("stopped", "removed")

    def _connection(self):
        """One connection through a worker process: start it, wait until it is
        connected, then hand it mixes until stopped or restarted (None) or
        until it fails (the reason)."""
        settings = _settings(self.transcoding)
        self._restart.clear()
        proc = subprocess.Popen(
            [sys.executable, "-P", WORKER, self.url, *map(str, settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.worker_pid = proc.pid
        try:
            if not self._connected(proc):
                return "connection_failed"
            self._drain()
            self._settings = settings
            self._set_state("running", "ok")
            fd = proc.stdin.fileno()
            os.set_blocking(fd, False)
            while not (self._stop.is_set() or self._restart.is_set()):
                if self._sealed():
                    self._stop.set()
                    self._set_state("failure", "end_to_end_encrypted")
                    break
                if not self._ready.wait(0.1):
                    if proc.poll() is not None:
                        return "connection_lost"
                    continue
                self._ready.clear()
                data = self._drain()
                if data and not self._write(proc, fd, data):
                    return "connection_lost"
            proc.stdin.close()               # the worker ends the stream and exits
            proc.wait(IO_TIMEOUT_S)
            return None
        except (OSError, subprocess.TimeoutExpired):
            return "connection_lost"
        finally:
            self._settings = None
            self._end(proc)

    def _connected(self, proc):
        """Whether the worker says it is connected within ``IO_TIMEOUT_S``."""
        deadline = time.monotonic() + IO_TIMEOUT_S + 1.0
        while time.monotonic() < deadline and not self._stop.is_set():
            ready, _, _ = select.select([proc.stdout], [], [], 0.1)
            if ready:
                return proc.stdout.readline().strip() == b"running"
        return False

    def _write(self, proc, fd, data):
        """Write ``data`` to the worker; False if it ended or stalled for
        ``IO_TIMEOUT_S`` (its RTMP connection no longer takes data)."""
        view = memoryview(data)
        deadline = time.monotonic() + IO_TIMEOUT_S
        while view:
            _, writable, _ = select.select([], [fd], [], 0.1)
            if writable:
                view = view[os.write(fd, view):]
            elif proc.poll() is not None or time.monotonic() > deadline or self._stop.is_set():
                return False
        return True

    def _end(self, proc):
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.returncode:
            err = proc.stderr.read(MAX_ERROR_BYTES).decode(errors="replace").strip()
            log.info("RTMP %s: the worker ended with %s: %s", self.url, proc.returncode, err)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()

    def _drain(self):
        """Take everything queued; returns it as one block of bytes."""
        with self._lock:
            blocks, self._queue = self._queue, collections.deque()
            self._queued = 0
        return b"".join(data for data, _ in blocks)


def check_allow_prefix(prefix):
    """``prefix`` checked as one of the URL prefixes a server lets its hosts
    have a channel pushed to: an ``rtmp://`` or ``rtmps://`` URL with a host
    and a path ending in ``/`` (so that ``rtmp://cdn.example/live/`` cannot
    match ``rtmp://cdn.example.evil/``).  Returns it; ``ValueError`` otherwise."""
    import urllib.parse
    parts = urllib.parse.urlsplit(prefix) if isinstance(prefix, str) else None
    if parts is None or parts.scheme not in ("rtmp", "rtmps") or not parts.hostname \
            or parts.username is not None or not parts.path.endswith("/") or parts.query \
            or parts.fragment:
        raise ValueError(f"an allowed publish prefix must be an rtmp:// or rtmps:// URL with a "
                         f"host and a path ending in '/' (e.g. rtmp://cdn.example/live/), "
                         f"got {prefix!r}")
    return prefix

"""A music file or stream decoded ahead, for the real-time thread to read.

``MediaSource`` opens any file or URL that PyAV (FFmpeg) opens (WAV, FLAC,
MP3, OGG, AAC/M4A, HTTP, ...), decodes it on a worker thread, resamples it
to 48 kHz stereo with soxr and keeps up to ``buffer_ms`` of it in a bounded
queue.  ``read`` (the real-time side) only copies from that queue: it never
waits for the disk or the network; when the queue runs dry it returns what
it has (an underrun, counted).

States and errors go to ``on_state(state, reason)``, called from the worker
thread (never from ``read``): ``("playing", "started")``, ``("playing",
"new_loop")``, ``("stopped", "all_loops_completed")``, ``("failed",
reason)`` with reason ``"not_found"``, ``"unsupported"`` (not audio, or no
audio stream), ``"network_error"`` (a URL that cannot be reached or breaks)
or ``"decode_error"``.
"""

import collections
import threading
import time

import numpy as np

from stagevox.dsp.errors import ParameterError

#: The rate and channel count ``read`` gives.
RATE = 48000
CHANNELS = 2
#: Decoded audio kept ahead of the reader, ms.
BUFFER_MS = 1000
#: Decoded audio is queued in blocks of at least this many samples (100 ms
#: at 48 kHz; a few MP3 or AAC frames), so that the worker takes the
#: queue's lock, and ``read`` walks, a block per 100 ms, not per codec frame.
BLOCK_SAMPLES = RATE // 10
#: The worker looks at its requests at least this often while it waits, s
#: (seek and close wake it at once; this is a safety net).
POLL_S = 0.2


def _classify(exc, url, opening):
    """The failure reason for ``exc``, raised while opening (``opening``) or decoding."""
    import av
    if isinstance(exc, FileNotFoundError):      # av.FileNotFoundError is one too
        return "not_found"
    remote = "://" in url and not url.startswith("file:")
    if isinstance(exc, av.InvalidDataError) or (opening and not remote):
        return "unsupported"
    return "network_error" if remote else "decode_error"


def _joined(pieces):
    """The pieces ((channels, n) arrays) one after another."""
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)


class MediaSource:
    """``url`` (a path or URL) decoded ahead on a worker thread.

    ``cycle``: times to play it (-1: forever); ``start_pos_ms``: where the
    first pass starts.  ``on_state(state, reason)``: state events (see the
    module docstring).  Raises ``ParameterError`` for a bad ``cycle`` or
    ``start_pos_ms``; a file that cannot be opened is not an exception but
    a ``"failed"`` event.
    """

    def __init__(self, url, on_state=None, *, cycle=1, start_pos_ms=0, buffer_ms=BUFFER_MS):
        if isinstance(cycle, bool) or not isinstance(cycle, int) or not (cycle == -1
                                                                          or cycle >= 1):
            raise ParameterError(f"cycle must be -1 (loop forever) or a whole number >= 1, "
                                 f"got {cycle!r}")
        if not (isinstance(start_pos_ms, (int, float)) and start_pos_ms >= 0):
            raise ParameterError(f"start_pos_ms must be a number >= 0, got {start_pos_ms!r}")
        self.url = str(url)
        self.cycle = cycle
        self.on_state = on_state or (lambda state, reason: None)
        self._capacity = int(buffer_ms * RATE / 1000)
        self._cond = threading.Condition()
        self._blocks = collections.deque()    # [position in samples, float32 (2, n)]
        self._queued = 0
        self._seek_to = int(round(start_pos_ms * RATE / 1000))
        self._stop = False
        self._eof = False                     # the last pass is all in the queue
        self._resting = False                 # the worker waits for room in the queue
        self._position = self._seek_to        # of the next sample read
        self.duration_ms = None               # known once the file is open
        self.failed = None                    # the reason, after a "failed" event
        self.finished = False                 # every pass has been read
        self.underruns = 0
        self.worker_cpu_s = 0.0               # the worker thread's CPU time
        self._thread = threading.Thread(target=self._run, name="stagevox-music", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ real-time side

    def read(self, n):
        """Up to ``n`` samples, float32 ``(2, k)`` at 48 kHz, ``k <= n``; never waits.

        ``k < n`` at the end of the last pass, after a failure, or when the
        worker is behind (counted in ``underruns``).
        """
        out = np.zeros((CHANNELS, n), np.float32)
        k = 0
        with self._cond:
            while k < n and self._blocks:
                pos, block = self._blocks[0]
                take = min(n - k, block.shape[1])
                out[:, k:k + take] = block[:, :take]
                k += take
                self._position = pos + take
                if take == block.shape[1]:
                    self._blocks.popleft()
                else:
                    self._blocks[0] = [pos + take, block[:, take:]]
            self._queued -= k
            if self._eof and not self._blocks:
                self.finished = True
            elif k < n and self.failed is None:
                self.underruns += 1
            if self._queued <= self._capacity // 2 or not self._blocks:
                self._cond.notify_all()
        return out[:, :k]

    @property
    def available(self):
        """Samples queued for ``read`` now (at 48 kHz)."""
        return self._queued

    @property
    def position_ms(self):
        """Where the next sample read comes from in the file, ms."""
        return self._position * 1000.0 / RATE

    # ------------------------------------------------------------ control

    def seek(self, position_ms):
        """Continue from ``position_ms`` in the file (the queue is dropped).

        Raises ``ParameterError`` for a negative position or one past the end.
        """
        if not (isinstance(position_ms, (int, float)) and position_ms >= 0):
            raise ParameterError(f"position must be a number of ms >= 0, got {position_ms!r}")
        if self.duration_ms is not None and position_ms > self.duration_ms:
            raise ParameterError(f"position {position_ms} ms is past the end of the music "
                                 f"({self.duration_ms:.0f} ms)")
        with self._cond:
            self._seek_to = int(round(position_ms * RATE / 1000))
            self._blocks.clear()
            self._queued = 0
            self._position = self._seek_to
            self._eof = self.finished = False
            self._cond.notify_all()
            if not self._thread.is_alive() and self.failed is None and not self._stop:
                # Played to its end: a seek plays it again from there.
                self._thread = threading.Thread(target=self._run, name="stagevox-music",
                                                daemon=True)
                self._thread.start()

    def close(self, timeout=2.0):
        """Stop the worker and drop what is queued (idempotent)."""
        with self._cond:
            self._stop = True
            self._blocks.clear()
            self._queued = 0
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wait_ready(self, timeout=5.0, full=False):
        """Wait until audio is queued (``full``: until the worker has filled the
        queue and rests, or has queued the rest of the last pass), the source
        failed, or ``timeout`` s pass;
        returns True if audio is queued.  For tests and tools, not for the
        real-time thread."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self.failed is None and not self._eof and time.monotonic() < deadline
                   and (not self._full() if full else not self._blocks)):
                self._cond.wait(0.01)
            return bool(self._blocks)

    def _full(self):
        """The worker rests on a queue it need not refill yet."""
        return self._resting and self._queued > self._capacity // 2

    # ------------------------------------------------------------ worker

    def _run(self):
        self._cpu0 = time.thread_time()
        try:
            self._decode_all()
        except Exception as exc:     # reported, never raised into the audio path
            self._fail(_classify(exc, self.url, opening=False))
        finally:
            self.worker_cpu_s = time.thread_time() - self._cpu0

    def _fail(self, reason):
        with self._cond:
            self.failed = reason
            self._eof = True
            self._cond.notify_all()
        self.on_state("failed", reason)

    def _decode_all(self):
        import av
        try:
            container = av.open(self.url, timeout=(5.0, 5.0))
        except Exception as exc:
            self._fail(_classify(exc, self.url, opening=True))
            return
        with container:
            if not container.streams.audio:
                self._fail("unsupported")
                return
            stream = container.streams.audio[0]
            if stream.duration is not None:
                self.duration_ms = float(stream.duration * stream.time_base) * 1000.0
            elif container.duration is not None:
                self.duration_ms = container.duration / av.time_base * 1000.0
            self.on_state("playing", "started")
            passes = 0
            decoded = False
            while not self._stop:
                with self._cond:
                    target, self._seek_to = self._seek_to, None
                if target is None:
                    target = 0
                # The first pass from the start needs no seek (a live stream cannot).
                rewind = passes > 0 or target > 0 or decoded
                decoded = True
                ended = self._decode_pass(container, stream, target, rewind)
                if self._stop:
                    break
                if not ended:
                    continue                  # a seek came: decode from there
                passes += 1
                if self.cycle != -1 and passes >= self.cycle:
                    if self._wait_drained():
                        self.on_state("stopped", "all_loops_completed")
                        return
                    continue                  # a seek brought it back
                self.on_state("playing", "new_loop")

    def _decode_pass(self, container, stream, target, rewind):
        """Decode from ``target`` (samples at 48 kHz) to the end of the file into
        the queue; returns True at the end, False when a seek or stop came."""
        import av
        import soxr
        rate = int(stream.rate)
        channels = 1 if stream.channels == 1 else 2
        resampler = av.AudioResampler(format="fltp", layout="mono" if channels == 1
                                      else "stereo", rate=rate)
        to48 = None if rate == RATE else soxr.ResampleStream(rate, RATE, channels,
                                                             dtype="float32", quality="HQ")
        start_native = int(target * rate / RATE)
        # Timestamps count from the stream's start time (an MP3's encoder
        # delay, for one), which is sample 0 of the audio.
        origin = stream.start_time or 0
        if rewind:
            container.seek(int(start_native / rate / stream.time_base) + origin, stream=stream,
                           backward=True, any_frame=False)
        pending, count = [], 0           # decoded, queued together once a block is full
        position = target                # of the first pending sample
        for frame in container.decode(stream):
            if frame.pts is not None:
                first = int(round(float((frame.pts - origin) * frame.time_base) * rate))
            else:
                first = None
            for piece in resampler.resample(frame):
                x = piece.to_ndarray().reshape(channels, -1)
                if first is not None:
                    skip = start_native - first
                    first += x.shape[1]
                    if skip > 0:
                        x = x[:, skip:]
                if x.shape[1] == 0:
                    continue
                if to48 is not None:
                    x = to48.resample_chunk(np.ascontiguousarray(x.T)).T
                pending.append(x)
                count += x.shape[1]
                if count >= BLOCK_SAMPLES:
                    if not self._queue(_joined(pending), position):
                        return False
                    pending, position, count = [], position + count, 0
        if to48 is not None:
            pending.append(to48.resample_chunk(np.zeros((0, channels), np.float32), last=True).T)
        return not pending or self._queue(_joined(pending), position)

    def _queue(self, x, position):
        """Put ``x`` (1 or 2 channels) in the queue, waiting for room; False if a
        seek or stop came meanwhile (``x`` is then dropped)."""
        if x.shape[1] == 0:
            return True
        if x.shape[0] == 1:
            x = np.repeat(x, CHANNELS, axis=0)
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self._cond:
            if self._queued >= self._capacity:
                # Full: decode again once half of it has been read (one wake-up
                # per half a buffer, not one per read).
                self._resting = True
                self._cond.notify_all()
                while self._queued > self._capacity // 2:
                    if self._stop or self._seek_to is not None:
                        self._resting = False
                        return False
                    self._cond.wait(POLL_S)
                self._resting = False
            if self._stop or self._seek_to is not None:
                return False
            self._blocks.append([position, x])
            self._queued += x.shape[1]
            self._cond.notify_all()
        self.worker_cpu_s = time.thread_time() - self._cpu0
        return True

    def _wait_drained(self):
        """Wait until the reader has taken the last pass; False if a seek or
        stop came first."""
        with self._cond:
            self._eof = True
            while not self.finished and not self._stop and self._seek_to is None:
                if not self._blocks:
                    self.finished = True
                    break
                self._cond.wait(POLL_S)
            if self._seek_to is not None:
                self._eof = self.finished = False
                return False
            return self.finished

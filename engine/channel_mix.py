"""The server's channel mix: the hosts of one channel decoded through jitter
buffers and handed, 20 ms at a time, to the channel's outputs (CDN push,
RTP forward), on a worker thread of its own.

Each host goes through a ``mix_stream.MixStream`` (a reorder buffer of
fixed delay, ``DELAY_S``, with Opus FEC and concealment), not a listener's
adaptive jitter buffer: nobody on the mix's side talks back, so a fixed
delay costs nothing and its per-packet work is a dictionary insert.  The
worker wakes once per batch of frames (``batch_s`` of its outputs, the
longest all of them allow) rather than every 20 ms.

The server's event loop only offers packets (``ChannelMix.offer``): a
``put_nowait`` into a bounded queue, so a slow mix never delays forwarding;
a full queue drops the packet and counts it (``mix_dropped``).

Frames sealed end to end (``e2ee``) cannot be opened here: the mix notes it
(``ChannelMix.sealed``) and its outputs stop with that reason.

``Transcoding`` is the mix's settings for one output: sample rate, channels,
bitrate and each user's volume and pan; ``mix_down`` applies them, all hosts
in one matrix product.
"""

import collections
import dataclasses
import logging
import threading
import time

import numpy as np

from .mix_stream import MixStream
from .rtp import CLOCK_RATE, PT_RED, PT_SEALED_OPUS

log = logging.getLogger(__name__)

#: The mix's frame: 20 ms at 48 kHz (the hosts' Opus frame; half the work
#: per second of 10 ms pulls from 17 jitter buffers).
FRAME_SAMPLES = CLOCK_RATE // 50
FRAME_S = FRAME_SAMPLES / CLOCK_RATE
#: Packets waiting for the worker, at most (about 1 s of a full stage).
QUEUE_PACKETS = 2048
#: Each host's fixed delay from arrival to playout, s (the mix may lag more
#: than a listener does: nobody talks back to a CDN).
DELAY_S = 0.15
#: A host heard from no more for this long is dropped from the mix.
HOST_SILENT_S = 5.0
#: The longest batch of frames the worker makes per wake-up, s.
MAX_BATCH_S = 0.2
#: The worker catches up at most this many late frames (1 s) at once; later than
#: that it skips ahead (a stalled machine does not make a burst of frames).
MAX_CATCH_UP = 50

SAMPLE_RATES = (32000, 44100, 48000)
MAX_BITRATE = 128000
MIN_BITRATE = 16000


@dataclasses.dataclass(frozen=True)
class Transcoding:
    """How a channel is mixed for an output.

    ``sample_rate`` 32000, 44100 or 48000 Hz; ``channels`` 1 or 2;
    ``bitrate`` in bit/s, 16000..128000; ``volumes``: ``{uid: 0..100}``
    (users not named play at 100); ``pans``: ``{uid: -1.0 (left) .. 1.0
    (right)}`` (stereo only; 0 is the centre).  Out-of-range values raise
    ``ValueError`` naming the field and its range.
    """

    sample_rate: int = 48000
    channels: int = 1
    bitrate: int = 64000
    volumes: dict = dataclasses.field(default_factory=dict)
    pans: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.sample_rate not in SAMPLE_RATES:
            raise ValueError(f"transcoding sample_rate must be one of {SAMPLE_RATES} Hz, "
                             f"got {self.sample_rate!r}")
        if self.channels not in (1, 2):
            raise ValueError(f"transcoding channels must be 1 or 2, got {self.channels!r}")
        if (isinstance(self.bitrate, bool) or not isinstance(self.bitrate, int)
                or not MIN_BITRATE <= self.bitrate <= MAX_BITRATE):
            raise ValueError(f"transcoding bitrate must be an integer in "
                             f"{MIN_BITRATE}..{MAX_BITRATE} bit/s, got {self.bitrate!r}")
        _check_map("volumes", self.volumes, 0.0, 100.0)
        _check_map("pans", self.pans, -1.0, 1.0)

    @classmethod
    def of(cls, config):
        """A ``Transcoding`` from ``None`` (the defaults), a ``Transcoding`` or
        a dict of its fields; ``ValueError`` for an unknown field."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if not isinstance(config, dict):
            raise ValueError(f"transcoding must be a Transcoding, a dict or None, "
                             f"got {type(config).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown transcoding field(s) {unknown}; "
                             f"valid: {sorted(known)}")
        return cls(**config)

    def gains(self, uid):
        """``(left, right)`` gains of user ``uid``, or ``(g, g)`` for mono.
        The pan is a balance: centred, both sides at the user's volume; to
        the left, the right side fades to nothing at -1 (and the other way)."""
        g = self.volumes.get(uid, 100.0) / 100.0
        if self.channels == 1:
            return g, g
        pan = self.pans.get(uid, 0.0)
        return g * min(1.0, 1.0 - pan), g * min(1.0, 1.0 + pan)


def _check_map(name, mapping, lo, hi):
    if not isinstance(mapping, dict):
        raise ValueError(f"transcoding {name} must be a dict {{uid: value}}, "
                         f"got {type(mapping).__name__}")
    for uid, value in mapping.items():
        if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid < 2 ** 32:
            raise ValueError(f"transcoding {name}: uid must be an integer in 0..4294967295, "
                             f"got {uid!r}")
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not lo <= value <= hi):
            raise ValueError(f"transcoding {name}[{uid}] must be in {lo:g}..{hi:g}, "
                             f"got {value!r}")


def gain_matrix(transcoding, uids):
    """The ``(channels, len(uids))`` float32 gains that ``mix_down`` applies
    to the users ``uids`` (in that order)."""
    channels = transcoding.channels
    return np.array([transcoding.gains(uid)[:channels] for uid in uids],
                    np.float32).reshape(len(uids), channels).T.copy()


def mix_down(frames, transcoding, only_uid=None, gains=None):
    """Mix ``frames`` (``{uid: 1-D float32 frame}``) as ``transcoding`` says,
    into ``(channels, n)`` float32 clipped to [-1, 1].  ``only_uid``: that
    user alone, at full volume, centred.  ``gains``: ``gain_matrix(transcoding,
    list(frames))`` if the caller keeps it (it changes only with the users
    or the settings)."""
    channels = transcoding.channels
    if only_uid is not None:
        out = np.zeros((channels, FRAME_SAMPLES), np.float32)
        if only_uid in frames:
            out += frames[only_uid]
    elif not frames:
        return np.zeros((channels, FRAME_SAMPLES), np.float32)
    else:
        if gains is None:
            gains = gain_matrix(transcoding, list(frames))
        out = gains @ np.array(list(frames.values()))
    np.clip(out, -1.0, 1.0, out=out)
    return out


class ChannelMix:
    """The decoded hosts of channel ``name``, frame by frame, for its outputs.

    ``counters``: a ``collections.Counter`` for what is dropped.
    ``add_output(key, output)``: ``output.feed(frames)`` is called once per
    20 ms frame on the worker with ``{uid: float32 (FRAME_SAMPLES,)}`` (read
    only); it must not block (outputs hand frames to threads of their own).
    An output with a ``batch_s`` attribute lets the worker hand it frames
    that many seconds at a time (at most ``MAX_BATCH_S``); without one it
    gets each frame when it is due.  An output with a ``flush()`` method has
    it called after each batch (to pass on what the batch made at once).
    ``close()`` stops the worker.
    """

    def __init__(self, name, counters, clock=time.monotonic):
        self.name = name
        self.counters = counters
        self.sealed = False
        #: What the hosts' streams met, summed (``mix_stream.MixStream.stats``).
        self.stats = collections.Counter()
        self.outputs = {}
        self._clock = clock
        self._queue = collections.deque()    # appends and pops are atomic: no lock
        self._streams = {}               # uid -> [MixStream, ssrc, last packet time]
        self._start = None               # the clock's time of frame 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stagevox-mix-{name}",
                                        daemon=True)
        self._thread.start()

    # Called on the server's loop.
    def offer(self, uid, ssrc, packet, now):
        """Hand one host's RTP packet to the worker; never blocks."""
        if len(self._queue) < QUEUE_PACKETS:
            self._queue.append((uid, ssrc, packet, now))
        else:
            self.counters["mix_dropped"] += 1

    def add_output(self, key, output):
        self.outputs = {**self.outputs, key: output}

    def remove_output(self, key):
        """Take output ``key`` away; returns it (None if there was none)."""
        outputs = dict(self.outputs)
        output = outputs.pop(key, None)
        self.outputs = outputs
        return output

    def close(self, timeout=2.0):
        self._stop.set()
        self._thread.join(timeout)

    # The worker.
    def _batch_frames(self):
        """Frames per wake-up: the longest batch every output allows."""
        batch = min((getattr(o, "batch_s", FRAME_S) for o in self.outputs.values()),
                    default=MAX_BATCH_S)
        return max(1, round(min(batch, MAX_BATCH_S) / FRAME_S))

    def _run(self):
        self._start = self._clock()
        frame = 0                        # the next frame to make
        while not self._stop.is_set():
            due = int((self._clock() - self._start) / FRAME_S) + 1 - frame
            if due > MAX_CATCH_UP:
                self.counters["mix_skipped"] += due - 1
                frame += due - 1
                due = 1
            for _ in range(due):
                try:
                    self._step(frame)
                except Exception as exc:     # one bad frame must not end the mix
                    self.counters["mix_errors"] += 1
                    log.warning("channel %r: a mix step failed: %r", self.name, exc)
                frame += 1
            for output in self.outputs.values():
                flush = getattr(output, "flush", None)
                if flush is not None:
                    try:
                        flush()
                    except Exception as exc:
                        self.counters["mix_errors"] += 1
                        log.warning("channel %r: an output's flush failed: %r", self.name, exc)
            # Wake when the last frame of the next batch is due.
            wake = self._start + (frame + self._batch_frames() - 1) * FRAME_S
            self._stop.wait(max(0.0, wake - self._clock()))

    def _step(self, frame):
        self._take_packets()
        now = self._clock()
        late = max(0.0, now - (self._start + frame * FRAME_S))
        frames = {}
        for uid, entry in list(self._streams.items()):
            if now - entry[2] > HOST_SILENT_S:
                del self._streams[uid]
                continue
            frames[uid] = entry[0].pull(frame, late)
        for output in self.outputs.values():
            output.feed(frames)

    def _take_packets(self):
        while self._queue:
            uid, ssrc, packet, now = self._queue.popleft()
            pt = packet.payload_type
            if pt == PT_RED and packet.payload:
                pt = packet.payload[0] & 0x7F
            if pt == PT_SEALED_OPUS:
                self.sealed = True
                continue
            entry = self._streams.get(uid)
            if entry is None or entry[1] != ssrc:
                entry = self._streams[uid] = [MixStream(DELAY_S, FRAME_SAMPLES, FRAME_S,
                                                        self.stats),
                                              ssrc, now]
            entry[2] = now
            entry[0].put(packet, now, self._start)

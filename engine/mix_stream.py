"""One host's stream as the server's channel mix hears it: a reorder buffer
of fixed delay, decoded in timestamp order with Opus in-band FEC and loss
concealment, pulled one mix frame at a time.

The channel mix feeds audiences that do not talk back (a CDN, an RTP
listener), so it can afford a fixed delay a little longer than a listener's
adaptive one and none of its machinery (delay estimation, time stretching,
NACK lists, loss statistics for the sender): per packet a dictionary
insert, per frame a dictionary look-up and one decoder call.

Timing: the first packet's arrival (at ``now``) sets the first mix frame
played, the first that starts ``delay_s`` or more after it; that frame
plays the earliest packet then buffered (so packets reordered at the start
are not lost), and from then on each mix frame takes the next frame's
worth of the host's timestamps.  A frame
missing when it is due is rebuilt from the next packet's FEC if that packet
is here, else concealed.  When nothing at all is buffered (the host paused,
or its packets run late) the stream conceals without moving on, so a late
packet still plays; after ``MAX_WAIT_FRAMES`` of that it falls silent and
the next packet starts it afresh, with the full delay.  More than the delay
and ``SLACK_FRAMES`` buffered (a sender whose clock runs fast, a burst after
a stall) skips ahead to the delay, so the delay stays bounded.
"""

import collections
import math

import numpy as np

from .codec import CodecError, make_decoder
from .red import decode_red
from .rtp import CLOCK_RATE, PT_L16, PT_OPUS, PT_RED, PacketError, TimestampUnwrapper

#: Payload types the mix decodes, and their codec.
CODEC_OF = {PT_OPUS: "opus", PT_L16: "pcm"}
#: Frames concealed in place while nothing is buffered before the stream
#: falls silent and waits for a fresh start.
MAX_WAIT_FRAMES = 5
#: Frames buffered beyond the delay before the stream skips ahead.
SLACK_FRAMES = 5
#: A timestamp this far (s) from the playout point is a restarted stream.
RESTART_S = 2.0
#: Buffered packets kept at most (a hostile or broken sender cannot grow it).
MAX_PACKETS = 256
#: Concealment lengths libopus accepts are multiples of this (2.5 ms).
GRANULE = CLOCK_RATE // 400


class MixStream:
    """One host's packets in, ``frame_samples`` of mono float32 out per mix frame.

    ``delay_s``: the fixed delay from a packet's arrival to its playout;
    ``frame_s``: the mix frame's duration.  ``stats`` (a
    ``collections.Counter``, new if None; several streams may share one)
    counts ``late`` (came after their playout), ``recovered`` (from FEC),
    ``concealed``, ``skipped`` (frames dropped to hold the delay),
    ``malformed``, ``restarts`` and ``starts``.
    """

    def __init__(self, delay_s, frame_samples, frame_s, stats=None):
        self.delay_s = delay_s
        self.frame_samples = frame_samples
        self.frame_s = frame_s
        self.stats = collections.Counter() if stats is None else stats
        self._delay = round(delay_s * CLOCK_RATE)
        self._restart = round(RESTART_S * CLOCK_RATE)
        self._codec = None
        self._decoder = None
        self._unwrap = TimestampUnwrapper()
        self._store = {}                   # unwrapped timestamp -> payload
        self._next = None                  # timestamp of the next sample to decode
        self._top = None                   # end of the newest packet's timestamps
        self._start_frame = None           # the mix frame playout (re)starts at
        self._dur = frame_samples          # samples of the last packet decoded
        self._waited = 0
        self._carry = np.zeros(0, np.float32)
        self._silence = np.zeros(frame_samples, np.float32)
        self._silence.flags.writeable = False

    # ------------------------------------------------------------ arrivals

    def put(self, packet, now, mix_start):
        """Take one RTP packet that arrived at ``now`` (the mix's clock, whose
        frame 0 started at ``mix_start``)."""
        pt = packet.payload_type
        if pt == PT_RED:
            try:
                blocks = decode_red(packet.payload, packet.timestamp)
            except PacketError:
                self.stats["malformed"] += 1
                return
            items = [(b.payload_type, b.timestamp, b.payload) for b in blocks]
        else:
            items = [(pt, packet.timestamp, packet.payload)]
        codec = CODEC_OF.get(items[-1][0])
        if codec is None:
            self.stats["malformed"] += 1
            return
        if codec != self._codec:
            self._codec, self._decoder = codec, make_decoder(codec, 1)
        primary = self._unwrap.unwrap(items[-1][1])
        point = self._top if self._next is None else self._next
        if self._start_frame is not None and abs(primary - point) > self._restart:
            self.stats["restarts"] += 1
            self._start_frame = None
            self._decoder.reset()
        if self._start_frame is None:
            self._anchor(primary, now, mix_start)
        for i, (_, ts, payload) in enumerate(items):
            ext = primary if i == len(items) - 1 else self._unwrap.unwrap(ts)
            if self._next is not None and ext < self._next:
                if i == len(items) - 1:
                    self.stats["late"] += 1
                continue
            if payload:
                self._store.setdefault(ext, payload)
        self._top = max(self._top, primary + self._dur)
        if len(self._store) > MAX_PACKETS:
            floor = self._top - self._restart if self._next is None else self._next
            self._store = {t: p for t, p in self._store.items() if t >= floor}

    def _anchor(self, ts, now, mix_start):
        self.stats["starts"] += 1
        self._store.clear()
        self._carry = self._carry[:0]
        self._next = None                  # set by the first frame played
        self._top = ts
        self._waited = 0
        self._start_frame = math.ceil((now + self.delay_s - mix_start) / self.frame_s - 1e-9)

    # ------------------------------------------------------------ playout

    def pull(self, frame, late_s=0.0):
        """The host's audio for mix frame ``frame`` (``frame_samples`` float32;
        silence before it starts and while it waits for a fresh start).
        ``late_s``: how long after its due time the frame is made (the mix
        makes frames in batches): packets that came meanwhile are not
        counted as too much buffered."""
        if self._start_frame is None or frame < self._start_frame:
            return self._silence
        if self._next is None:
            if not self._store:                   # only empty payloads came
                self._start_frame = None
                return self._silence
            self._next = min(self._store)
        n = self.frame_samples
        late = round(late_s * CLOCK_RATE)
        if self._top - self._next > self._delay + SLACK_FRAMES * n + late:
            self._skip_to(self._top - self._delay - late)
        if len(self._carry) == 0:
            x = self._decode_next(n)
            if x is None:
                return self._silence
            if len(x) == n:
                return x
            parts, have = [x], len(x)
        else:
            parts, have = [self._carry], len(self._carry)
        while have < n:
            x = self._decode_next(n - have)
            if x is None:
                x = np.zeros(n - have, np.float32)
            parts.append(x)
            have += len(x)
        joined = np.concatenate(parts)
        self._carry = joined[n:]
        return joined[:n]

    def _decode_next(self, want):
        """The next decoded packet (or its FEC or concealment); None once the
        stream has waited out ``MAX_WAIT_FRAMES`` with nothing buffered."""
        payload = self._store.pop(self._next, None)
        decoder = self._decoder
        try:
            if payload is not None:
                x = decoder.decode(payload)[0]
                self._dur = len(x)
                self._waited = 0
            elif self._top > self._next:          # lost, or late and later ones are here
                following = self._store.get(self._next + self._dur)
                if following is not None:
                    x = decoder.decode_fec(following, self._dur)[0]
                    self.stats["recovered"] += 1
                else:
                    x = decoder.conceal(self._dur)[0]
                    self.stats["concealed"] += 1
            else:                                 # nothing buffered: wait in place
                self._waited += 1
                if self._waited > MAX_WAIT_FRAMES:
                    self._start_frame = None      # the next packet starts afresh
                    return None
                self.stats["concealed"] += 1
                if want % GRANULE:
                    return np.zeros(want, np.float32)
                return decoder.conceal(want)[0]
        except (CodecError, ValueError):          # a packet libopus refuses
            self.stats["malformed"] += 1
            x = np.zeros(self._dur, np.float32)
        self._next += len(x)
        return x

    def _skip_to(self, ts):
        """Drop what is buffered before ``ts`` (a whole packet's start)."""
        keep = [t for t in self._store if t >= ts]
        start = min(keep) if keep else ts
        self.stats["skipped"] += (start - self._next) // self.frame_samples
        self._store = {t: self._store[t] for t in keep}
        self._next = start
        self._carry = self._carry[:0]

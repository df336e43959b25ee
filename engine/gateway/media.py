"""Audio between aiortc and a channel member: the two directions of one browser person.

``ChannelTrack`` is the aiortc track a talking person hears: every 20 ms it
pulls that much of the channel from the person's ``Client`` and hands it to
aiortc's Opus encoder.  ``FeedTrack`` is a shared listener's track: it hands
aiortc the Opus packets a ``ChannelFeed`` encoded once for all its
listeners.  ``EncodedVoice`` passes the browser's Opus frames on to the
person's ``Client`` as they are, where nothing needs the audio (no preset
or volume on the voice); ``pump_to_channel`` reads the track the browser
sends (aiortc decodes the frames not passed on), resamples it to 48 kHz
mono and pushes it to the ``Client``.  Pulling and pushing run in worker threads (decoding,
effects and encoding stay off the gateway's event loop).
"""

import asyncio
import fractions
import time

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError

from ..codec import CodecError, OpusDecoder
from ..rtp import CLOCK_RATE, ts_add, ts_diff

#: One frame to the browser, samples at 48 kHz (20 ms, Opus' usual packet).
FRAME_SAMPLES = 960
#: Behind the schedule by more than this (a stalled loop): start a new one from now.
MAX_LAG_S = 0.2
#: Frames a listener's track holds at most (a slow consumer loses the oldest).
QUEUE_FRAMES = 10
#: The time base of the frames' pts: samples at 48 kHz.
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)
#: A gap in the browser's stream up to this long (lost packets, which aiortc
#: does not conceal) is pushed as silence, so what follows keeps its time;
#: a longer one (the sender paused) is not.
MAX_GAP_S = 0.5


#: Packets aiortc's audio receiver holds before it decodes the oldest.
RECEIVE_PREFETCH = 1
#: Where aiortc's ``RTCRtpReceiver`` keeps its jitter buffer (a private attribute).
_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"


def hold_one_packet(receiver, take=None):
    """Make an aiortc audio ``receiver`` decode each packet as soon as the next
    one arrives (a 20 ms hold) instead of when the fourth after it arrives
    (80 ms); with ``take``, offer each frame to ``take(payload, timestamp)``
    first, and decode only those it does not take (returns False).

    The browser's voice goes on to the channel, whose listeners each have an
    adaptive jitter buffer, so a second deep buffer on the gateway only adds
    delay.  aiortc offers no setting for it: its receiver's buffer is
    replaced, before any packet arrives, by one of its own class with a
    smaller prefetch.  Returns False (and changes nothing) when the installed
    aiortc keeps it elsewhere.
    """
    old = getattr(receiver, _JITTER_ATTR, None)
    if not isinstance(old, JitterBuffer):
        return False
    setattr(receiver, _JITTER_ATTR, TappedJitterBuffer(old.capacity, RECEIVE_PREFETCH, take))
    return True


class TappedJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer whose complete frames go first to ``take(payload,
    timestamp)`` (None: to nobody); a frame taken (True) is not decoded."""

    def __init__(self, capacity, prefetch, take=None):
        super().__init__(capacity=capacity, prefetch=prefetch)
        self._take = take

    def add(self, packet):
        """Add one RTP packet; returns ``(pli, frame)`` as aiortc's buffer does,
        the frame None when ``take`` took it."""
        pli, frame = super().add(packet)
        if frame is not None and self._take is not None and self._take(frame.data,
                                                                       frame.timestamp):
            frame = None
        return pli, frame


class EncodedVoice:
    """Passes a browser's Opus frames to a channel ``client`` as they are
    (``Client.push_encoded_audio``), without decoding and encoding them again,
    while the client allows it (``can_push_encoded``: no preset, volume or
    music on the person's voice) and the frames are as long as the client's.
    Frames it does not take are decoded by aiortc and pushed as audio.

    ``meter(x)``: fed the decoded voice, float32 ``(1, n)`` (the person's own
    level meter; the decoding costs a fraction of an encoding).  ``passed``
    counts the frames passed on.
    """

    def __init__(self, client, meter=None):
        self.client = client
        self.meter = meter
        self.passed = 0
        self._next_ts = None
        self._decoder = OpusDecoder(1) if meter is not None else None

    def take(self, payload, timestamp):
        """Offer one frame (its Opus ``payload`` and RTP ``timestamp``); True if passed on."""
        if not self.client.can_push_encoded():
            self._next_ts = None
            return False
        gap = 0
        if self._next_ts is not None:
            ahead = ts_diff(timestamp, self._next_ts)
            if ahead < 0:
                return True              # older than one passed on: dropped
            if ahead <= MAX_GAP_S * CLOCK_RATE:
                gap = ahead
        try:
            samples = self.client.push_encoded_audio(payload, after_gap=gap)
        except CodecError:               # not Opus: aiortc's decoder says what is wrong
            return False
        except ValueError:               # another length, or a preset set just now
            self._next_ts = None
            return False
        self._next_ts = ts_add(timestamp, samples)
        self.passed += 1
        if self._decoder is not None:
            self.meter(self._decoder.decode(payload))
        return True


class Pacer:
    """The real-time schedule of 20 ms frames: ``await next()`` returns when the
    next frame is due and gives its timestamp (samples at 48 kHz from the first).

    A schedule that fell behind by more than ``MAX_LAG_S`` (a stalled loop)
    starts again from now instead of hurrying to catch up.
    """

    def __init__(self):
        self._t0 = None
        self.pts = 0

    async def next(self):
        """Wait for the next frame's time; returns its pts and moves on by one frame."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        else:
            due = self._t0 + self.pts / CLOCK_RATE
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > MAX_LAG_S:
                self._t0 += now - due
        pts = self.pts
        self.pts += FRAME_SAMPLES
        return pts


def pcm_frame(pcm, pts):
    """An ``av.AudioFrame`` (s16 mono 48 kHz) of int16 ``pcm`` ``(1, n)`` at ``pts``."""
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate = CLOCK_RATE
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


def to_int16(x):
    """float32 ``(channels, n)`` in [-1, 1] -> int16 ``(1, n)`` of its first channel."""
    return (np.clip(x[:1], -1.0, 1.0) * 32767.0).astype(np.int16)


class ChannelTrack(MediaStreamTrack):
    """An aiortc audio track of what ``pull(n)`` returns, paced at real time
    (aiortc encodes it: one encoder for this track alone).

    ``pull(n)``: a callable that returns float32 ``(1, n)`` at 48 kHz (the
    person's ``Client.pull_audio``, through its level meters).
    """

    kind = "audio"

    def __init__(self, pull):
        super().__init__()
        self._pull = pull
        self._pacer = Pacer()

    async def recv(self):
        """The next 20 ms frame (an ``av.AudioFrame``, s16 mono 48 kHz)."""
        if self.readyState != "live":
            raise MediaStreamError
        pts = await self._pacer.next()
        x = await asyncio.to_thread(self._pull, FRAME_SAMPLES)
        return pcm_frame(to_int16(x), pts)


class FeedTrack(MediaStreamTrack):
    """An aiortc audio track fed by a ``ChannelFeed`` (one mix for all its listeners).

    ``encoded`` True (the connection negotiated Opus): ``recv`` returns the
    feed's Opus packets as they are, ``av.Packet`` objects that aiortc's
    sender packetizes without decoding or encoding; False (another codec):
    it returns the PCM frames and aiortc encodes them for this track.
    Frames that arrive while ``QUEUE_FRAMES`` are waiting push out the
    oldest, counted in ``dropped``; ``delivered`` counts the frames handed
    to aiortc.  Nothing is queued before aiortc first asks (the connection
    is still being set up).
    """

    kind = "audio"

    def __init__(self):
        super().__init__()
        self.encoded = True
        self.dropped = 0
        self.delivered = 0
        self._queue = asyncio.Queue(QUEUE_FRAMES)
        self._asked = False

    def put(self, pts, packet, pcm):
        """Queue one frame: its ``pts``, the Opus ``packet`` (an ``av.Packet``
        shared by every track: aiortc only reads it) and the int16 ``pcm``."""
        if not self._asked or self.readyState != "live":
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait((pts, packet, pcm))

    async def recv(self):
        """The next frame: an ``av.Packet`` (Opus) or an ``av.AudioFrame``."""
        if self.readyState != "live":
            raise MediaStreamError
        self._asked = True
        pts, packet, pcm = await self._queue.get()
        self.delivered += 1
        return packet if self.encoded else pcm_frame(pcm, pts)


async def pump_to_channel(track, push):
    """Push what ``track`` (a received aiortc audio track) carries to ``push(frames)``,
    as float32 ``(1, n)`` at 48 kHz, until the track ends.

    Frames are placed by their timestamps: a short gap (lost packets) is
    pushed as silence, a frame from before the last one (late) is dropped.
    """
    resampler = av.AudioResampler(format="flt", layout="mono", rate=CLOCK_RATE)
    expected = None                      # the next frame's pts, in the frame's time base
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if frame.pts is not None and frame.time_base is not None:
            if expected is not None:
                gap_s = float((frame.pts - expected) * frame.time_base)
                if gap_s < 0:
                    continue
                if 0 < gap_s <= MAX_GAP_S:
                    await asyncio.to_thread(push, np.zeros((1, round(gap_s * CLOCK_RATE)),
                                                           np.float32))
            expected = frame.pts + round(frame.samples / frame.sample_rate / frame.time_base)
        for out in resampler.resample(frame):
            x = out.to_ndarray().reshape(1, -1).astype(np.float32, copy=False)
            await asyncio.to_thread(push, x)

"""Audio between aiortc and a channel member: the two directions of one browser person.

``ChannelTrack`` is the aiortc track the browser plays: every 20 ms it pulls
that much of the channel from the person's ``Client`` and hands it to
aiortc's Opus encoder.  ``pump_to_channel`` reads the track the browser
sends (aiortc decodes its Opus), resamples it to 48 kHz mono and pushes it
to the ``Client``.  Pulling and pushing run in worker threads (decoding,
effects and encoding stay off the gateway's event loop).
"""

import asyncio
import fractions
import time

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from ..rtp import CLOCK_RATE

#: One frame to the browser, samples at 48 kHz (20 ms, Opus' usual packet).
FRAME_SAMPLES = 960
#: Behind the schedule by more than this (a stalled loop): start a new one from now.
MAX_LAG_S = 0.2
#: A gap in the browser's stream up to this long (lost packets, which aiortc
#: does not conceal) is pushed as silence, so what follows keeps its time;
#: a longer one (the sender paused) is not.
MAX_GAP_S = 0.5


class ChannelTrack(MediaStreamTrack):
    """An aiortc audio track of what ``pull(n)`` returns, paced at real time.

    ``pull(n)``: a callable that returns float32 ``(1, n)`` at 48 kHz (the
    person's ``Client.pull_audio``, through its level meters).
    """

    kind = "audio"

    def __init__(self, pull):
        super().__init__()
        self._pull = pull
        self._t0 = None
        self._pts = 0
        self._time_base = fractions.Fraction(1, CLOCK_RATE)

    async def recv(self):
        """The next 20 ms frame (an ``av.AudioFrame``, s16 mono 48 kHz)."""
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        else:
            due = self._t0 + self._pts / CLOCK_RATE
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > MAX_LAG_S:
                self._t0 += now - due
        x = await asyncio.to_thread(self._pull, FRAME_SAMPLES)
        pcm = (np.clip(x[:1], -1.0, 1.0) * 32767.0).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = CLOCK_RATE
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += FRAME_SAMPLES
        return frame


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

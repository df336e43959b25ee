"""WHIP and WHEP peers (aiortc) for ``test_engine_gateway``, run in a process of their own.

    python whip_peers.py GATEWAY_URL CHANNEL PUBLISH_TOKEN LISTEN_TOKEN IN.wav OUT.wav

Listens to CHANNEL with WHEP, publishes IN.wav (48 kHz mono) with WHIP in
real time, and writes what the WHEP peer received to OUT.wav; exit status 0
when both ended their sessions with the gateway as RFC 9725 says.
"""

import asyncio
import fractions
import sys
import time

import aiohttp
import av
import numpy as np
import soundfile as sf
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

RATE = 48000


def array_track(signal):
    """An aiortc audio track that plays ``signal`` (48 kHz mono) in 20 ms frames
    at real-time pace, then silence."""
    class Track(MediaStreamTrack):
        kind = "audio"

        def __init__(self):
            super().__init__()
            self.t0 = None
            self.pos = 0

        async def recv(self):
            n = 960
            if self.t0 is None:
                self.t0 = time.monotonic()
            wait = self.t0 + self.pos / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            chunk = np.zeros(n, np.float32)
            part = signal[self.pos:self.pos + n]
            chunk[:len(part)] = part
            frame = av.AudioFrame.from_ndarray((chunk * 32767).astype(np.int16)[None],
                                               format="s16", layout="mono")
            frame.sample_rate, frame.pts = RATE, self.pos
            frame.time_base = fractions.Fraction(1, RATE)
            self.pos += n
            return frame

    return Track()


async def whip_and_whep(url, channel, publish_token, listen_token, signal):
    """Listen with WHEP, publish ``signal`` with WHIP; returns what the WHEP
    peer received (48 kHz mono) once ``signal`` has been played."""
    received = []

    async def collect(track):
        # Each frame goes where its RTP timestamp (pts) says, as a player plays
        # it: a lost packet is a gap, not a shift of all that follows.
        while True:
            try:
                frame = await track.recv()
            except Exception:       # the track ended
                return
            assert frame.sample_rate == RATE and frame.format.name == "s16", frame
            pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1)
            received.append((frame.pts, pcm / 32768.0))

    async def offer(session, pc, kind, tok):
        await pc.setLocalDescription(await pc.createOffer())
        async with session.post(f"{url}{kind}/{channel}", data=pc.localDescription.sdp,
                                headers={"Content-Type": "application/sdp",
                                         "Authorization": f"Bearer {tok}"}) as res:
            assert res.status == 201, await res.text()
            assert res.content_type == "application/sdp"
            answer, location = await res.text(), res.headers["Location"]
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        return location

    tasks = []
    subscriber, publisher = RTCPeerConnection(), RTCPeerConnection()
    subscriber.addTransceiver("audio", direction="recvonly")
    subscriber.on("track", lambda track: tasks.append(asyncio.ensure_future(collect(track))))
    publisher.addTransceiver(array_track(signal), direction="sendonly")
    async with aiohttp.ClientSession() as session:
        whep = await offer(session, subscriber, "whep", listen_token)
        whip = await offer(session, publisher, "whip", publish_token)
        await asyncio.sleep(len(signal) / RATE + 1.0)
        for location in (whip, whep):
            async with session.delete(url.rstrip("/") + location) as res:
                assert res.status == 200, await res.text()
    await publisher.close()
    await subscriber.close()
    for task in tasks:
        task.cancel()
    start = received[0][0]
    out = np.zeros(max(pts for pts, _ in received) - start + 960, np.float32)
    for pts, pcm in received:
        out[pts - start:pts - start + len(pcm)] = pcm
    return out




def main(url, channel, publish_token, listen_token, src, dst):
    signal, rate = sf.read(src, dtype="float32")
    assert rate == RATE and signal.ndim == 1, (rate, signal.shape)
    received = asyncio.run(whip_and_whep(url, channel, publish_token, listen_token, signal))
    sf.write(dst, received, RATE)


if __name__ == "__main__":
    main(*sys.argv[1:])

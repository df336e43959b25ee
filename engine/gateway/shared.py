"""Listeners of one channel that share one subscription to it.

A ``ChannelFeed`` is the gateway's own member of a channel: one ``Client``
joined as audience under a uid the gateway picks, with a token the gateway
makes with the server's secret.  Every 20 ms it pulls the channel's mix,
encodes it to Opus once, and hands the same packet to the ``FeedTrack`` of
every browser listening to that channel (aiortc sends it as it is where the
connection negotiated Opus).  The pulling and encoding keep time in a
thread of the feed's own, not on the gateway's event loop: a loop busy with
many connections delays the hand-over (the tracks queue what waits) but
makes no frame late or lost at the source.  A ``Listener`` is one such browser: its own
WebRTC connection, no channel member of its own.

Authorisation: the gateway verifies each listener's token with the secret
(signature, channel, uid, expiry) before attaching it to the feed, and
closes the listener when its token expires, so a browser hears only a
channel its own token admits it to, and only while the token is valid.
"""

import asyncio
import logging
import secrets
import threading

import av
from aiortc.sdp import SessionDescription

from ..client import Client
from ..codec import OpusEncoder
from ..pacing import Pacer
from ..rtp import CLOCK_RATE
from ..token import make_token
from .media import FRAME_SAMPLES, TIME_BASE, FeedTrack, to_int16
from .person import (METER_FLOOR_DB, Meters, close_unless_connected, peer_connection, speakers,
                     take_offer)

log = logging.getLogger("stagevox.engine.gateway")

#: Lifetime of the feed member's token, s; renewed when the server warns of expiry.
FEED_TOKEN_S = 3600
#: The feed's Opus stream: bits per second and application (a channel mix may
#: hold music as well as speech).
FEED_BITRATE = 64000
FEED_APPLICATION = "audio"
#: The feed's uids are drawn from here (people's uids are usually small).
FEED_UIDS = (2**31, 2**32 - 1)
#: The feed's frame, s.
FEED_FRAME_S = FRAME_SAMPLES / CLOCK_RATE
#: The feed's thread behind its schedule by more than this (the process went
#: without a CPU that long): it skips to now; less, it catches up.
FEED_MAX_LAG_S = 0.5


class ChannelFeed:
    """The gateway's one member of ``channel``, shared by its browser listeners.

    ``secret``: the server's token secret (to make the member's token).
    ``uid``: the member's uid, by default drawn at random from ``FEED_UIDS``.
    ``frames`` counts the frames encoded: one per 20 ms, whatever the
    number of listeners; ``renewals`` the member's token renewals.
    """

    def __init__(self, channel, secret, uid=None):
        self.channel = channel
        self.uid = uid if uid is not None else secrets.SystemRandom().randint(*FEED_UIDS)
        self._secret = secret
        self.client = Client(sample_rate=CLOCK_RATE, channels=1)
        self.meters = Meters()
        self.client.register_audio_frame_observer(self.meters)
        self.client.register_event_handler(_Renewer(self))
        self.tracks = set()
        #: Listeners holding the feed (counted from the moment they ask for it).
        self.users = 0
        self.frames = 0
        self.renewals = 0
        self._encoder = OpusEncoder(1, FEED_BITRATE, 20, FEED_APPLICATION)
        self._loop = None
        self._thread = None
        self._stopping = threading.Event()

    def token(self):
        """A fresh audience token for the feed's uid in its channel."""
        return make_token(self._secret, self.channel, self.uid, "audience",
                          expire_s=FEED_TOKEN_S)

    async def start(self, server_address, server_key, join_timeout):
        """Join the channel and start encoding; raises what ``Client.join_channel`` raises."""
        await asyncio.to_thread(self.client.join_channel, server_address, self.channel,
                                self.uid, self.token(), "audience", server_key=server_key,
                                timeout=join_timeout)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="stagevox-feed", daemon=True)
        self._thread.start()

    def subscribe(self):
        """A new ``FeedTrack`` that gets this feed's frames."""
        track = FeedTrack()
        self.tracks.add(track)
        return track

    def unsubscribe(self, track):
        """Stop feeding ``track`` (nothing if it is not fed)."""
        self.tracks.discard(track)
        track.stop()

    def _run(self):
        """The feed's thread: a frame every 20 ms, handed to the event loop."""
        pacer = Pacer(FEED_FRAME_S, max_lag_s=FEED_MAX_LAG_S)
        origin = pacer.start()
        while not self._stopping.is_set():
            pacer.wait()
            # The frame's time: a skip ahead (pacer.t0 moved) shows as a jump.
            due = pacer.t0 + pacer.ticks * FEED_FRAME_S
            pts = round((due - origin) / FEED_FRAME_S) * FRAME_SAMPLES
            try:
                payload, pcm = self._next_frame()
            except Exception:      # one bad frame must not silence the channel for good
                log.exception("gateway: the feed of %r could not make a frame", self.channel)
                continue
            try:
                self._loop.call_soon_threadsafe(self._hand_over, pts, payload, pcm)
            except RuntimeError:   # the loop has closed: the gateway is stopping
                return

    def _hand_over(self, pts, payload, pcm):
        """On the event loop: give one frame to every track."""
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = TIME_BASE
        for track in list(self.tracks):
            track.put(pts, packet, pcm)

    def _next_frame(self):
        """Pull 20 ms of the channel and encode it: ``(opus_payload, int16 pcm)``."""
        x = self.client.pull_audio(FRAME_SAMPLES)
        self.frames += 1
        return self._encoder.encode(x), to_int16(x)

    def status(self):
        """The feed's part of a listener's status: channel state, speakers and
        people in the room (the channel's members, the feed counted as the
        browsers it feeds here)."""
        stats = self.client.stats()
        members = stats["channel_members"]
        return {"channel_state": self.client.state,
                "speakers": speakers(stats, self.meters),
                "people": None if members is None else members - 1 + len(self.tracks)}

    async def close(self):
        """Stop encoding, end the tracks and leave the channel (idempotent)."""
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 2.0)
            self._thread = None
        for track in list(self.tracks):
            self.unsubscribe(track)
        await asyncio.to_thread(self.client.leave_channel)


class _Renewer:
    """Gives the server a fresh token for the feed when it warns of expiry."""

    def __init__(self, feed):
        self._feed = feed

    def on_token_privilege_will_expire(self, expires_at):
        # The request waits for the server's answer: not on the client's network thread.
        threading.Thread(target=self._renew, name="stagevox-feed-renew", daemon=True).start()

    def _renew(self):
        try:
            self._feed.client.renew_token(self._feed.token())
            self._feed.renewals += 1
        except Exception as exc:       # the server will drop the member; its state says so
            log.warning("gateway: the feed of %r could not renew its token: %s",
                        self._feed.channel, exc)


class Listener:
    """A browser listening to a channel through the channel's ``ChannelFeed``.

    ``claims``: the ``TokenClaims`` of the browser's token, already verified
    with the secret.  ``start`` answers the browser's offer; ``close`` ends
    the connection (and, at the token's expiry, the gateway calls it).
    The same face as a ``Person``: ``id``, ``mode``, ``status``, ``command``,
    ``close``, ``closed`` and ``on_closed``.
    """

    mode = "listen"

    def __init__(self, claims, feed):
        self.id = secrets.token_urlsafe(12)
        self.claims = claims
        self.feed = feed
        self.track = None
        self.pc = None
        self._deadline = None
        self.closed = False
        self.answer = None
        #: The timer that closes the listener when its token expires (set by the gateway).
        self.expiry = None
        #: Called once when the listener is closed (the gateway forgets them).
        self.on_closed = None

    async def start(self, offer_sdp):
        """Answer the browser's SDP ``offer_sdp``; returns the answer.  Raises
        ``ValueError`` for an offer aiortc cannot read or with no audio."""
        self.pc = peer_connection(self)
        await take_offer(self.pc, offer_sdp)
        self.track = self.feed.subscribe()
        self.pc.addTrack(self.track)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self.track.encoded = sends_opus(self.pc.localDescription.sdp)
        # An offer that never connects holds no place on the feed.
        self._deadline = asyncio.ensure_future(close_unless_connected(self))
        return self.pc.localDescription.sdp

    async def command(self, msg):
        """A listener has no requests: raises ``ValueError`` saying what to do instead."""
        raise ValueError("listening takes no requests; press Talk to speak or go on stage")

    def status(self):
        """What the page shows (the same keys as ``Person.status``)."""
        track = self.track
        return {
            "channel": self.claims.channel, "uid": self.claims.uid, "mode": self.mode,
            "role": "audience", "can_publish": self.claims.can_publish,
            "muted": False, "preset": "off",
            "webrtc_state": self.pc.connectionState if self.pc is not None else "new",
            "level_db": METER_FLOOR_DB, "uplink_loss": 0.0, "voice_frames_passed": 0,
            "dropped_frames": track.dropped if track is not None else 0,
            **self.feed.status(),
        }

    async def close(self):
        """Close the WebRTC connection and stop feeding it (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self._deadline is not None and self._deadline is not asyncio.current_task():
            self._deadline.cancel()
        if self.track is not None:
            self.feed.unsubscribe(self.track)
        if self.on_closed is not None:
            self.on_closed(self)
        if self.pc is not None:
            await self.pc.close()


def sends_opus(answer_sdp):
    """True when the answer's first audio section sends Opus first (the codec used)."""
    for media in SessionDescription.parse(answer_sdp).media:
        if media.kind == "audio" and media.rtp.codecs:
            return media.rtp.codecs[0].mimeType.lower() == "audio/opus"
    return False

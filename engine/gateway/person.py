"""One browser person on the gateway: a channel ``Client`` and its WebRTC connection.

A person listens (joins as audience and receives the channel) or talks
(joins as host, sends the microphone and receives the channel).  The
gateway reads the person's state for the page (``status``) and applies the
page's requests (``command``).  (A gateway that holds the server's secret
does not make a person of a listener: see ``shared``.)
"""

import asyncio
import math
import logging
import secrets
import threading
import time

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription

from ..client import AudioFrameObserver, Client
from ..rtp import CLOCK_RATE
from .media import ChannelTrack, EncodedVoice, hold_one_packet, pump_to_channel
from .sdp import drop_unresolvable_candidates

log = logging.getLogger("stagevox.engine.gateway")

MODES = ("listen", "talk")
#: Level meters fall by this much per second after a peak (a VU-like decay).
METER_FALL_DB_S = 20.0
#: The floor of the meters, dBFS: silence reads this.
METER_FLOOR_DB = -60.0
#: A person whose browser has not connected (ICE and DTLS) this many seconds
#: after the answer is closed, and leaves the channel: an offer that never
#: connects holds no member.
CONNECT_TIMEOUT_S = 20.0


class Meters(AudioFrameObserver):
    """Level meters (dBFS, peak-holding with a decay) of each remote speaker
    and of the person's own voice, fed by the client's frame observers."""

    def __init__(self):
        self._lock = threading.Lock()
        self._levels = {}              # key -> (dB, time)

    def _feed(self, key, frame):
        rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float64)))) if frame.size else 0.0
        db = max(METER_FLOOR_DB, 20.0 * math.log10(rms) if rms > 0 else METER_FLOOR_DB)
        now = time.monotonic()
        with self._lock:
            old = self._read(key, now)
            self._levels[key] = (max(db, old), now)

    def _read(self, key, now):
        db, t = self._levels.get(key, (METER_FLOOR_DB, now))
        return max(METER_FLOOR_DB, db - METER_FALL_DB_S * (now - t))

    def level(self, key):
        """The meter of ``key`` (a remote uid, or ``"me"``) now, dBFS."""
        with self._lock:
            return round(self._read(key, time.monotonic()), 1)

    def on_playback_audio_frame_before_mixing(self, uid, frame):
        """Feed the meter of remote speaker ``uid``."""
        self._feed(uid, frame)

    def on_record_audio_frame(self, frame):
        """Feed the meter of the person's own voice."""
        self._feed("me", frame)


def peer_connection(owner):
    """A new ``RTCPeerConnection`` that closes ``owner`` (``await owner.close()``)
    when it fails or is closed."""
    pc = RTCPeerConnection()

    @pc.on("connectionstatechange")
    async def on_state():
        if pc.connectionState in ("failed", "closed"):
            await owner.close()

    return pc


async def take_offer(pc, offer_sdp):
    """Set the browser's SDP ``offer_sdp`` on ``pc`` (without the candidates the
    gateway cannot resolve, see ``sdp``).  Raises ``ValueError`` for an offer
    aiortc cannot read or one without audio."""
    try:
        await pc.setRemoteDescription(RTCSessionDescription(
            sdp=drop_unresolvable_candidates(offer_sdp), type="offer"))
    except Exception as exc:                     # aiortc raises several kinds
        raise ValueError(f"the SDP offer cannot be used: {exc}") from None
    if not any(t.kind == "audio" for t in pc.getTransceivers()):
        raise ValueError("the SDP offer has no audio section")


async def close_unless_connected(owner):
    """Close ``owner`` (``await owner.close()``) if its ``pc`` has not connected
    ``CONNECT_TIMEOUT_S`` from now."""
    await asyncio.sleep(CONNECT_TIMEOUT_S)
    if owner.pc is not None and owner.pc.connectionState != "connected":
        await owner.close()


def speakers(stats, meters):
    """The page's list of remote speakers: uid, level (dBFS) and loss of each,
    from ``Client.stats()`` and the ``Meters`` fed by the same client."""
    out = []
    for uid, u in sorted(stats["users"].items()):
        total = u["received"] + u["lost"]
        out.append({"uid": uid, "level_db": meters.level(uid),
                    "loss": round(u["lost"] / total, 4) if total else 0.0})
    return out


class Person:
    """A browser person: ``claims`` (``TokenClaims`` read from ``token``), ``mode``
    "listen" or "talk".  ``start`` joins and answers the browser's offer;
    ``close`` leaves.  ``id`` names the person in the gateway's URLs.
    ``send_channel`` False: the channel is not sent back (a WHIP publisher).
    """

    def __init__(self, claims, token, mode, send_channel=True):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.id = secrets.token_urlsafe(12)
        self.claims = claims
        self.token = token
        self.mode = mode
        self.send_channel = send_channel
        self.preset = "off"
        self.muted = False
        self.client = Client(sample_rate=CLOCK_RATE, channels=1)
        self.meters = Meters()
        self.client.register_audio_frame_observer(self.meters)
        self.voice = EncodedVoice(self.client, self.meters.on_record_audio_frame)
        self.pc = None
        self._tasks = set()
        self.closed = False
        #: Called once when the person is closed (the gateway forgets them).
        self.on_closed = None

    @property
    def role(self):
        """The channel role now: "host" or "audience" (``None`` before joining)."""
        return self.client.role

    async def start(self, server_address, server_key, offer_sdp, join_timeout):
        """Join the channel, then answer the browser's SDP ``offer_sdp``; returns the answer.

        Raises what ``Client.join_channel`` raises (``RefusedError``,
        ``TimeoutError``), and ``ValueError`` for an offer aiortc cannot read.
        """
        role = "host" if self.mode == "talk" else "audience"
        await asyncio.to_thread(self.client.join_channel, server_address, self.claims.channel,
                                self.claims.uid, self.token, role, server_key=server_key,
                                timeout=join_timeout)
        self.pc = peer_connection(self)

        @self.pc.on("track")
        def on_track(track):
            if track.kind == "audio":
                for transceiver in self.pc.getTransceivers():
                    if transceiver.receiver.track is track \
                            and not hold_one_packet(transceiver.receiver, self.voice.take):
                        log.warning("aiortc's receiver has no jitter buffer where expected: "
                                    "the browser's voice keeps aiortc's 80 ms hold")
                self._spawn(pump_to_channel(track, self.client.push_audio))

        await take_offer(self.pc, offer_sdp)
        if self.send_channel:
            self.pc.addTrack(ChannelTrack(self.client.pull_audio))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._spawn(close_unless_connected(self))
        return self.pc.localDescription.sdp

    def _spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def command(self, msg):
        """Apply one request of the page: ``{"mute": bool}``, ``{"role": "host"|"audience"}``
        or ``{"preset": NAME}``.  Raises ``ValueError`` for anything else, and what
        the client raises (``RefusedError`` for a role the token does not allow)."""
        if not isinstance(msg, dict) or len(msg) != 1:
            raise ValueError('a request is one of {"mute": true|false}, '
                             '{"role": "host"|"audience"}, {"preset": NAME}')
        (key, value), = msg.items()
        if key == "mute" and isinstance(value, bool):
            self.client.mute_local_audio_stream(value)
            self.muted = value
        elif key == "role" and value in ("host", "audience"):
            if value == "host" and not self.claims.can_publish:
                raise ValueError("this link's token is for the audience: it cannot go on stage")
            await asyncio.to_thread(self.client.set_client_role, value)
        elif key == "preset" and isinstance(value, str):
            self.client.set_audio_effect_preset(value)
            self.preset = value
        else:
            raise ValueError(f"unknown request {msg!r}; a request is one of "
                             '{"mute": true|false}, {"role": "host"|"audience"}, '
                             '{"preset": NAME}')

    def status(self):
        """What the page shows: states, loss, the speakers with their levels."""
        stats = self.client.stats()
        return {
            "channel": self.claims.channel, "uid": self.claims.uid, "mode": self.mode,
            "role": self.role, "can_publish": self.claims.can_publish,
            "muted": self.muted, "preset": self.preset,
            "channel_state": self.client.state,
            "webrtc_state": self.pc.connectionState if self.pc is not None else "new",
            "level_db": self.meters.level("me"),
            "uplink_loss": round(stats["uplink_loss"], 4),
            "voice_frames_passed": self.voice.passed,
            "speakers": speakers(stats, self.meters),
            "people": stats["channel_members"],
        }

    async def close(self):
        """Close the WebRTC connection and leave the channel (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self.on_closed is not None:
            self.on_closed(self)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:          # the connect deadline may be the caller
                task.cancel()
        if self.pc is not None:
            await self.pc.close()
        await asyncio.to_thread(self.client.leave_channel)

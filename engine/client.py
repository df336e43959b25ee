"""The live-channel client: join, publish, receive, mix.

A thin front end over ``session`` (the handshake and the sealed datagrams),
``sender`` (the published stream), ``receiver`` (one per remote host) and
``transport`` (the socket and the periodic tasks).

Threads: the network runs on an asyncio loop in a background thread (packets
in, control messages, keep-alive, receiver reports, NACKs; every datagram is
sealed and opened there).  Encoding and the local effects run in the thread
that calls ``push_audio``; decoding, concealment and mixing in the thread
that calls ``pull_audio``.  So a slow frame never delays packets, and the
Numba kernels (``nogil``) really run in parallel with the network.

Method names follow the well-known live-audio SDK in snake_case.  Events go
to the objects given to ``register_event_handler`` (any of ``on_user_joined(uid)``,
``on_user_offline(uid, reason)``, ``on_client_role_changed(old, new)``,
``on_connection_state_changed(state, reason)``,
``on_token_privilege_will_expire(token_expires_at)``,
``on_encryption_error(uid, reason)``,
``on_channel_media_relay_state_changed(state, reason)``), called from the
network thread (relay states from the relay's worker thread), and
``on_audio_mixing_state_changed(state, reason)`` (see ``music``), called from
the music's worker thread or the thread that changed the music, and
``on_audio_effect_finished(sound_id)`` (see ``sound_effects``), called from
the thread of ``push_audio``.  Raw
audio goes to the objects given to ``register_audio_frame_observer`` (see
``AudioFrameObserver``).
"""

import asyncio
import collections
import itertools
import math
import random
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from stagevox import dsp
from stagevox.dsp.errors import ParameterError, RefusedError

from . import control, media_relay, session
from .control import (Ack, Event, Join, Joined, Leave, Nack, Ping, Pong, PublishStream,
                      PublishStreamDone, ReceiverReport, Refused, RenewToken, RoleChanged,
                      SetRole, TokenRenewed, clamped_report_block)
from .codec import packet_samples
from .music import MusicMixing, _to_channels
from .profiles import audio_profile
from .receiver import Receiver
from .rtp import CLOCK_RATE, PacketError, RtpPacket, is_rtp
from .sender import Sender
from .session import SessionError
from .transport import open_endpoint, run_periodic

ROLES = ("host", "audience")
#: Connection states reported by ``on_connection_state_changed``.
STATES = ("disconnected", "connecting", "connected", "reconnecting", "failed")
#: Reverb keys of ``set_local_voice_reverb`` and the ``Reverb`` parameter each sets.
REVERB_KEYS = {"dry_level": "dry_level_db", "wet_level": "wet_level_db",
               "room_size": "room_size", "wet_delay": "wet_delay_ms", "strength": "strength"}

PING_INTERVAL_S = 1.0
#: Receiver reports: every half second on a clean path, every 0.1 s while
#: the last report saw loss (so redundancy reaches a lossy path quickly).
REPORT_INTERVAL_S = 0.5
LOSSY_REPORT_INTERVAL_S = 0.1
NACK_INTERVAL_S = 0.01
#: Handshake messages are sent again, two copies at a time, this often until
#: the server answers (a join crosses a path that loses 70 % each way within
#: a few seconds).
HANDSHAKE_RETRY_S = 0.1
#: Requests (role, token) are sent again this often until answered.
REQUEST_RETRY_S = 0.25
#: No answer from the server for this long: "reconnecting", and a new
#: handshake (same uid, token and SSRC) every RECONNECT_RETRY_S until it answers.
SERVER_SILENT_S = 4.0
RECONNECT_RETRY_S = 0.5
REJOIN_REQUEST_ID = 0
#: Events that arrived ahead of a missing one, kept at most.
MAX_EVENTS_AHEAD = 512
#: The default time ``join_channel`` keeps trying, seconds.
JOIN_TIMEOUT_S = 10.0


class AudioFrameObserver:
    """Base class for raw-audio observers; override what you need.

    Each method gets a float32 ``(channels, n)`` frame at the client's sample
    rate and may return ``None`` (keep it) or a replacement of the same shape.
    """

    def on_record_audio_frame(self, frame):
        """The local audio as pushed, before volume and effects.

        ``frame``: float32 ``(channels, n)`` at the client's rate.
        """

    def on_playback_audio_frame(self, frame):
        """The mix of remote users about to be played.

        ``frame``: float32 ``(channels, n)`` at the client's rate.
        """

    def on_mixed_audio_frame(self, frame):
        """The playback mix plus the local (processed) audio of the same period.

        ``frame``: float32 ``(channels, n)``; a replacement is not played.
        """

    def on_playback_audio_frame_before_mixing(self, uid, frame):
        """One remote user's decoded audio, before volume, position and mixing.

        ``uid``: the remote user; ``frame``: float32 ``(channels, n)``.
        """


class Client(MusicMixing):
    """One participant of a live channel.

    ``sample_rate``: the rate of ``push_audio``/``pull_audio`` (8000-48000; the
    wire is 48 kHz).  ``channels``: 1 or 2, for both directions.  ``codec``:
    ``"opus"`` (default) or ``"pcm"`` (debugging).  ``bitrate``: Opus bits per
    second.  ``frame_ms``: 10 or 20.  ``min_delay_ms``/``max_delay_ms``: the
    jitter buffer's bounds.  ``ssrc``: the RTP source of the published
    stream (default: random).  Raises ``ValueError`` for a bad rate, channel
    count, codec, bitrate or frame length.
    """

    def __init__(self, sample_rate=48000, channels=1, *, codec="opus", bitrate=32000,
                 frame_ms=20, min_delay_ms=10.0, max_delay_ms=140.0, ssrc=None):
        self.sample_rate = dsp.check_sample_rate(sample_rate)
        dsp.load_kernels()  # now, not on the first live frame
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {channels!r}")
        self.channels = channels
        self.codec = codec
        self.frame_ms = frame_ms
        self.ssrc = ssrc if ssrc is not None else random.randrange(1, 2**32)
        self._sender = Sender(codec, channels, bitrate, frame_ms, self.ssrc)
        #: The profile set by ``set_audio_profile``; None: the constructor's
        #: ``channels`` and ``bitrate`` in Opus's VoIP mode (so the default
        #: mono client sends the "speech" profile).
        self.audio_profile = None
        self._min_delay_ms = min_delay_ms
        self._max_delay_ms = max_delay_ms
        self.uid = None
        self.channel = None
        self.role = None
        self.state = "disconnected"
        self.server_address = None
        self._server_key = None
        self._handlers = []
        self._observers = []
        self._remotes = {}                # ssrc -> Receiver
        self._uids = {}                   # uid -> ssrc
        self._requests = {}               # request id -> Future
        self._request_ids = itertools.count(1)
        self._stats = collections.Counter()
        self._rtt = None
        self._channel_members = None
        self._last_heard = None
        self._token = None
        self._token_expires_at = None
        # session
        self._session = None              # session.Session once the handshake is done
        self._initiator = None            # session.Initiator while a handshake runs
        self._handshake_reply = None      # Future for the Joined/Refused of a join
        self._confirming = None           # the Joined of a session not yet confirmed
        self._next_event = 1
        self._events_ahead = {}
        self._decryptor = None            # e2ee.FrameDecryptor when encryption is on
        self._crypto_reported = set()
        self._tick_vars = {"ping": 0.0, "report": 0.0, "rejoin": 0.0, "lossy": False}
        # publishing
        self._push_lock = threading.Lock()
        self._muted = False
        self._record_gain = 1.0
        self._effects = None
        self._voice = {}                  # "pitch" / "eq" / "reverb" -> processor
        self._preset = None
        self._to_wire = None              # soxr stream, client rate -> 48 kHz
        self._pending = np.zeros((channels, 0), np.float32)   # at the stream's channels
        self._local_fifo = np.zeros((channels, 0), np.float32)
        self._first_push = None
        self._pushed_samples = 0
        self._relay = None                # media_relay.ChannelMediaRelay while relaying
        # receiving
        self._spatial = None
        self._device = None               # devices.DeviceLink while a sound card runs
        # network
        self._loop = None
        self._endpoint = None
        self._thread = None
        self._closing = None

    # ----------------------------------------------------------- registration

    def register_event_handler(self, handler):
        """Add ``handler``, an object whose ``on_...`` methods receive events.

        See the module docstring for the callbacks; they run on the network thread.
        """
        self._handlers.append(handler)

    def unregister_event_handler(self, handler):
        """Remove ``handler`` from the event handlers.

        Raises ``ValueError`` if it was not registered.
        """
        self._handlers.remove(handler)

    def register_audio_frame_observer(self, observer):
        """Add ``observer``, an ``AudioFrameObserver`` (or any object with some
        of its methods); it sees, and may replace, the frames it asks for."""
        self._observers.append(observer)

    def unregister_audio_frame_observer(self, observer):
        """Remove ``observer`` from the audio frame observers.

        Raises ``ValueError`` if it was not registered.
        """
        self._observers.remove(observer)

    def _emit(self, name, *args):
        for h in list(self._handlers):
            fn = getattr(h, name, None)
            if fn is not None:
                fn(*args)

    def _observe(self, name, frame, *args):
        for obs in self._observers:
            fn = getattr(obs, name, None)
            if fn is None:
                continue
            out = fn(*args, frame)
            if out is not None:
                out = np.asarray(out, dtype=np.float32)
                if out.shape != frame.shape:
                    raise ValueError(f"{name} returned a frame shaped {out.shape}, "
                                     f"expected {frame.shape}")
                frame = out
        return frame

    def _set_state(self, state, reason):
        if state != self.state:
            self.state = state
            self._emit("on_connection_state_changed", state, reason)

    # ----------------------------------------------------------- channel

    def join_channel(self, server_address, channel, uid, token, role="audience", *,
                     server_key=None, timeout=JOIN_TIMEOUT_S):
        """Join ``channel`` on the server at ``server_address`` ``(host, port)``
        as ``uid`` (1 to 2**32-1) with ``token``, in ``role`` (host or audience).

        ``server_key``: the server's public key (32 bytes, or the text the
        server prints at start-up, ``Server.public_key_text``); the handshake
        proves the server holds it.  The handshake is sent again every 0.1 s
        until the server answers or ``timeout`` seconds pass.

        Returns once the server has accepted; raises ``RefusedError`` with the
        server's reason, ``TimeoutError`` when the server does not answer, and
        ``ValueError`` for a bad role, uid or key.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if not (isinstance(uid, int) and 0 < uid < 2**32):
            raise ValueError(f"uid must be an integer in 1..{2**32 - 1}, got {uid!r}")
        if server_key is None:
            raise ValueError("join_channel needs server_key, the server's public key "
                             "(printed by 'stagevox server' at start; Server.public_key_text)")
        key = (session.parse_public_key(server_key) if isinstance(server_key, str)
               else bytes(server_key))
        if len(key) != 32:
            raise ValueError(f"server_key must be 32 bytes, got {len(key)}")
        if self.channel is not None:
            raise RuntimeError(f"already in channel {self.channel!r}; leave_channel() first")
        self._server_key = key
        self._start_network(server_address)
        self._set_state("connecting", "join_channel")
        rid = next(self._request_ids)
        try:
            reply = self._handshake(Join(rid, channel, uid, role, token or "", self.ssrc),
                                    timeout)
        except Exception as exc:
            self._set_state("failed", str(exc))
            self._stop_network()
            raise
        self.uid, self.channel, self.role = uid, channel, role
        self._token = token
        self._token_expires_at = reply.expires_at
        self._last_heard = time.monotonic()
        for host_uid, ssrc in reply.hosts:
            self._add_remote(host_uid, ssrc)
        self._set_state("connected", "joined")
        for host_uid, _ in reply.hosts:
            self._emit("on_user_joined", host_uid)

    def _handshake(self, join, timeout):
        """Run the handshake carrying ``join``; returns the server's ``Joined``."""
        initiator = session.Initiator(self._server_key, join.encode())
        fut = Future()
        self._call(self._begin_handshake, initiator, fut)
        try:
            return self._await(fut, timeout, HANDSHAKE_RETRY_S,
                               lambda: self._call(self._handshake_retry, initiator))
        except TimeoutError:
            self._call(self._end_handshake, initiator)
            raise

    def _await(self, fut, timeout, interval, resend):
        """The reply ``fut`` gets, calling ``resend()`` every ``interval`` seconds
        meanwhile.  Raises ``TimeoutError`` after ``timeout`` seconds and
        ``RefusedError`` for a ``Refused`` reply."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = fut.result(timeout=min(interval, max(0.0, deadline - time.monotonic())))
                break
            except FutureTimeout:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no answer from the server at {self.server_address} "
                                       f"within {timeout} s") from None
                resend()
        if isinstance(reply, Refused):
            raise RefusedError(reply.code, reply.reason)
        return reply

    def leave_channel(self):
        """Leave the channel (idempotent); the remote streams stop."""
        self.stop_channel_media_relay()
        if self.channel is None:
            self._stop_network()
            return
        for _ in range(3):                # a lossy path may lose one; the rest are ignored
            self._send_msg(Leave())
        self.channel = None
        self.role = None
        self._remotes.clear()
        self._uids.clear()
        self._stop_network()
        self._set_state("disconnected", "leave_channel")

    def set_client_role(self, role, token=None, *, timeout=5.0):
        """Switch ``role`` between ``"host"`` and ``"audience"``.

        ``token``: a new token, if the old one does not allow publishing.
        Waits up to ``timeout`` seconds for the server.  Raises
        ``RefusedError`` with the server's reason, ``TimeoutError``,
        ``ValueError`` for a bad role and ``RuntimeError`` outside a channel.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        self._need_channel()
        rid = next(self._request_ids)
        self._request(rid, SetRole(rid, role, token or ""), timeout)
        old, self.role = self.role, role
        if token:
            self._token = token
        if old != role:
            self._emit("on_client_role_changed", old, role)

    def renew_token(self, token, *, timeout=5.0):
        """Give the server a fresh ``token`` before the current one expires.

        Waits up to ``timeout`` seconds.  Raises ``RefusedError`` for a token
        the server does not accept, ``TimeoutError``, and ``RuntimeError``
        outside a channel.
        """
        self._need_channel()
        rid = next(self._request_ids)
        reply = self._request(rid, RenewToken(rid, token), timeout)
        self._token = token
        self._token_expires_at = reply.expires_at

    def add_publish_stream_url(self, url, *, timeout=5.0):
        """Have the server push the channel's mix to ``url`` (``rtmp://`` or
        ``rtmps://``, AAC in FLV); only a host may.  Waits up to ``timeout``
        seconds.  Raises ``ValueError`` for a bad URL, ``RefusedError`` with
        the server's reason (not a host, encrypted end to end, too many URLs,
        too many requests), ``TimeoutError``, ``RuntimeError`` outside a
        channel."""
        self._publish_request("add", url, timeout)

    def remove_publish_stream_url(self, url, *, timeout=5.0):
        """Have the server stop pushing the channel to ``url``, waiting up to
        ``timeout`` seconds; errors as ``add_publish_stream_url``."""
        self._publish_request("remove", url, timeout)

    def _publish_request(self, action, url, timeout):
        from .publish import check_url
        check_url(url)
        self._need_channel()
        rid = next(self._request_ids)
        self._request(rid, PublishStream(rid, action, url), timeout)

    # ----------------------------------------------------------- media relay

    def start_channel_media_relay(self, destinations):
        """Publish this host's audio in other channels too (co-hosting, PK).

        ``destinations``: up to 6 ``media_relay.RelayDestination`` (channel,
        uid, host token, and the server for a channel on another server).
        Returns at once; each destination is joined on a worker thread and
        the outcome arrives as ``on_channel_media_relay_state_changed(state,
        reason)`` (``connecting``, ``running``, ``failure``; see
        ``media_relay``).  Raises ``RuntimeError`` outside a channel, when not
        a host or when a relay runs already, ``ParameterError`` for a bad list.
        """
        self._need_channel()
        if self.role != "host":
            raise RuntimeError("only a host can relay its audio to other channels; "
                               "set_client_role('host') first")
        if self._relay is not None:
            raise RuntimeError("a channel media relay runs already; "
                               "use update_channel_media_relay")
        relay = media_relay.ChannelMediaRelay(self)
        relay.update(destinations)
        self._relay = relay

    def update_channel_media_relay(self, destinations):
        """Relay into exactly ``destinations`` from now on: new ones are joined,
        dropped ones left, the rest go on without a gap.  Raises
        ``RuntimeError`` when no relay runs, ``ParameterError`` for a bad list."""
        if self._relay is None:
            raise RuntimeError("no channel media relay runs; start_channel_media_relay first")
        self._relay.update(destinations)

    def stop_channel_media_relay(self):
        """Leave every destination channel (idempotent)."""
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.stop()

    def pause_all_channel_media_relay(self):
        """Stop sending into the destinations, staying in them.  Raises
        ``RuntimeError`` when no relay runs."""
        if self._relay is None:
            raise RuntimeError("no channel media relay runs")
        self._relay.pause_all()

    def resume_all_channel_media_relay(self):
        """Send into the destinations again.  Raises ``RuntimeError`` when no relay runs."""
        if self._relay is None:
            raise RuntimeError("no channel media relay runs")
        self._relay.resume_all()

    def enable_encryption(self, key):
        """Seal every published frame end to end with the channel ``key`` and
        open the frames of remote hosts with it (``None`` turns it off).

        ``key``: bytes (16-64) or a passphrase (at least 8 characters) that
        every member of the channel uses.  The server forwards, repairs and
        relays frames it cannot hear.  Members without the key hear silence;
        a frame that does not open raises ``on_encryption_error(uid, reason)``
        (``"no_key"``, ``"decryption_failed"``, ``"not_encrypted"``), never
        noise.  Needs the opus codec.
        """
        from .e2ee import FrameDecryptor, FrameEncryptor
        if key is None:
            encryptor = decryptor = None
        else:
            encryptor, decryptor = FrameEncryptor(key), FrameDecryptor(key)
        with self._push_lock:
            self._sender.set_encryptor(encryptor)
        self._decryptor = decryptor
        for uid, ssrc in list(self._uids.items()):
            self._remotes.pop(ssrc, None)
            self._add_remote(uid, ssrc, force=True)

    def _need_channel(self):
        if self.channel is None:
            raise RuntimeError("not in a channel; join_channel() first")

    def _request(self, rid, msg, timeout):
        fut = Future()
        self._requests[rid] = fut
        data = msg.encode()
        self._send(data)
        try:
            return self._await(fut, timeout, REQUEST_RETRY_S, lambda: self._send(data))
        finally:
            self._requests.pop(rid, None)

    # ----------------------------------------------------------- network

    def _start_network(self, server_address):
        host, port = server_address
        self.server_address = (host, int(port))
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run_network, args=(ready,),
                                        name="stagevox-client", daemon=True)
        self._thread.start()
        if not ready.wait(5.0):
            raise RuntimeError("the client's network thread did not start")

    def _run_network(self, ready):
        async def main():
            self._loop = asyncio.get_running_loop()
            self._closing = asyncio.Event()
            local = "::" if ":" in self.server_address[0] else "0.0.0.0"
            if self.server_address[0] in ("127.0.0.1", "localhost", "::1"):
                local = "::1" if self.server_address[0] == "::1" else "127.0.0.1"
            self._endpoint = await open_endpoint(self._datagram, self._stats, "client",
                                                 local, 0, remote=self.server_address)
            ready.set()
            ticker = asyncio.ensure_future(run_periodic(NACK_INTERVAL_S, self._tick_step,
                                                        self._stats, "client"))
            try:
                await self._closing.wait()
            finally:
                ticker.cancel()
                self._endpoint.close()
        asyncio.run(main())

    def _stop_network(self):
        if self._loop is not None and self._closing is not None:
            try:
                self._loop.call_soon_threadsafe(self._closing.set)
            except RuntimeError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        self._thread = self._loop = self._endpoint = self._closing = None
        self._session = self._initiator = None

    def _call(self, fn, *args):
        """Run ``fn(*args)`` on the network thread (sealing happens only there)."""
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:        # loop closed while leaving
                pass

    def _send(self, inner):
        """Seal and send ``inner`` (an RTP packet or a control message) from any thread."""
        self._call(self._seal_and_send, inner)

    def _seal_and_send(self, inner):
        if self._session is None or self._endpoint is None:
            return
        try:
            data = self._session.seal(inner)
        except SessionError:
            self._stats["send_errors"] += 1
            return
        self._endpoint.send(data)

    def _send_msg(self, msg):
        self._send(msg.encode())

    # handshake steps, on the network thread

    def _begin_handshake(self, initiator, fut):
        self._initiator = initiator
        self._handshake_reply = fut
        self._send_initiation(initiator)

    def _send_initiation(self, initiator):
        if self._initiator is initiator and self._endpoint is not None:
            self._endpoint.send(initiator.initiation())

    def _handshake_retry(self, initiator):
        # No answer yet: the path may be lossy, so from now on two copies go
        # each time (the server answers a repeated initiation from its cache).
        for _ in range(2):
            if self._initiator is initiator:
                self._send_initiation(initiator)
            elif self._confirming is not None:
                self._seal_and_send(Ping(time.monotonic()).encode())

    def _end_handshake(self, initiator):
        if self._initiator is initiator:
            self._initiator = None
        self._confirming = None

    def _on_handshake_datagram(self, data, kind):
        initiator = self._initiator
        if initiator is None:
            return
        try:
            if kind == session.KIND_COOKIE:
                if initiator.read_cookie(data):
                    self._send_initiation(initiator)
                return
            payload, sess = initiator.read_response(data)
            reply = control.decode(payload)
        except (SessionError, control.ControlError):
            self._stats["malformed_received"] += 1
            return
        if not isinstance(reply, (Joined, Refused)):
            self._stats["malformed_received"] += 1
            return
        self._initiator = None
        if isinstance(reply, Refused):
            fut = self._handshake_reply
            if fut is not None and not fut.done():
                fut.set_result(reply)
            return
        self._session = sess
        self._next_event = 1
        self._events_ahead.clear()
        # Our first sealed datagram confirms the session: the server admits us
        # with it, and its answer (the first sealed datagram we get) tells us so.
        self._confirming = reply
        self._seal_and_send(Ping(time.monotonic()).encode())

    def _confirmed(self):
        reply, self._confirming = self._confirming, None
        fut = self._handshake_reply
        if fut is not None and not fut.done():
            fut.set_result(reply)
        elif reply.request_id == REJOIN_REQUEST_ID:
            self._rejoined(reply)

    def _rejoined(self, reply):
        """Back after a silence, on a new session: hosts that came or went meanwhile."""
        self._last_heard = time.monotonic()
        hosts = dict(reply.hosts)
        for host_uid, ssrc in hosts.items():
            if self._uids.get(host_uid) != ssrc:
                self._add_remote(host_uid, ssrc)
                self._emit("on_user_joined", host_uid)
        for host_uid in [u for u in self._uids if u not in hosts]:
            if self._remove_remote(host_uid):
                self._emit("on_user_offline", host_uid, "dropped")
        self._set_state("connected", "server answered again")

    def _datagram(self, data, addr):
        kind = session.datagram_kind(data)
        if kind in (session.KIND_COOKIE, session.KIND_RESPONSE):
            self._on_handshake_datagram(data, kind)
            return
        if kind != session.KIND_TRANSPORT or self._session is None:
            self._stats["malformed_received"] += 1
            return
        try:
            inner = self._session.open(data)
        except SessionError:
            self._stats["unauthentic_received"] += 1
            return
        now = time.monotonic()
        self._last_heard = now
        if self._confirming is not None:
            self._confirmed()
        if self.state == "reconnecting":
            self._set_state("connected", "server answered again")
        if is_rtp(inner):
            try:
                packet = RtpPacket.parse(inner)
            except PacketError:
                self._stats["malformed_received"] += 1
                return
            remote = self._remotes.get(packet.ssrc)
            if remote is None:
                self._stats["unknown_ssrc"] += 1
                return
            remote.put(packet, now)
            return
        try:
            msg = control.decode(inner)
        except control.ControlError:
            self._stats["malformed_received"] += 1
            return
        self._on_control(msg, now)

    def _on_control(self, msg, now):
        rid = getattr(msg, "request_id", None)
        if isinstance(msg, (Refused, RoleChanged, TokenRenewed, PublishStreamDone)):
            fut = self._requests.get(rid)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif isinstance(msg, Pong):
            self._rtt = max(0.0, now - msg.echo_time)
            self._channel_members = msg.members
        elif isinstance(msg, ReceiverReport):
            for block in msg.reports:
                if block.ssrc == self.ssrc:
                    self._sender.on_report(block, now)
        elif isinstance(msg, Event):
            self._on_event_message(msg)
        elif isinstance(msg, Nack) and msg.ssrc == self.ssrc:
            # The server missed these of ours: send them again if still kept.
            with self._push_lock:
                packets = self._sender.retransmissions(msg.sequence_numbers)
            for data in packets:
                self._seal_and_send(data)

    def _on_event_message(self, ev):
        """Events arrive numbered, maybe repeated or out of order: each is
        handled once, in order, and acknowledged."""
        if ev.seq >= self._next_event and len(self._events_ahead) < MAX_EVENTS_AHEAD:
            self._events_ahead[ev.seq] = ev
        while self._next_event in self._events_ahead:
            self._on_event(self._events_ahead.pop(self._next_event))
            self._next_event += 1
        self._seal_and_send(Ack(self._next_event - 1).encode())

    def _on_event(self, ev):
        if ev.kind == "user_joined":
            self._add_remote(ev.uid, ev.ssrc)
            self._emit("on_user_joined", ev.uid)
        elif ev.kind in ("user_left", "user_offline") or (
                ev.kind == "role_changed" and ev.role == "audience"):
            if ev.uid == self.uid:
                old, self.role = self.role, ev.role
                self._emit("on_client_role_changed", old, ev.role)
                return
            reason = {"user_left": "quit", "user_offline": "dropped"}.get(ev.kind,
                                                                         "became_audience")
            if self._remove_remote(ev.uid):
                self._emit("on_user_offline", ev.uid, reason)
        elif ev.kind == "token_will_expire":
            self._emit("on_token_privilege_will_expire", self._token_expires_at)
        elif ev.kind == "removed":
            self.channel = None
            self._remotes.clear()
            self._uids.clear()
            self._set_state("failed", ev.reason)

    def _add_remote(self, uid, ssrc, force=False):
        old = self._uids.get(uid)
        if old == ssrc and not force:
            return
        # The remote exists before its uid is published: another thread that sees
        # the uid (remote_users, mute_remote_audio_stream, ...) finds it.
        self._remotes[ssrc] = Receiver(
            uid, ssrc, self.channels, self.sample_rate, self._min_delay_ms, self._max_delay_ms,
            self.codec, decryptor=self._decryptor,
            on_crypto_failure=lambda reason, uid=uid: self._crypto_failure(uid, reason))
        self._uids[uid] = ssrc
        if old is not None and old != ssrc:
            self._remotes.pop(old, None)

    def _crypto_failure(self, uid, reason):
        self._stats["frames_not_opened"] += 1
        if (uid, reason) not in self._crypto_reported:
            self._crypto_reported.add((uid, reason))
            self._emit("on_encryption_error", uid, reason)

    def _remove_remote(self, uid):
        ssrc = self._uids.pop(uid, None)
        if ssrc is None:
            return False
        self._remotes.pop(ssrc, None)
        if self._spatial is not None and uid in self._spatial.speakers:
            self._spatial.remove_remote_position(uid)
        return True

    def _tick_step(self, now):
        """Housekeeping every NACK_INTERVAL_S on the network thread: NACKs,
        keep-alive, reconnection, receiver reports."""
        if self.channel is None or self._session is None and self._initiator is None:
            return
        tick = self._tick_vars
        rtt = self._rtt if self._rtt is not None else 0.05
        for remote in list(self._remotes.values()):
            seqs = remote.nacks(now, rtt)
            for i in range(0, len(seqs), control.MAX_NACKS):
                self._seal_and_send(Nack(remote.ssrc,
                                         tuple(seqs[i:i + control.MAX_NACKS])).encode())
        if now - tick["ping"] >= PING_INTERVAL_S:
            tick["ping"] = now
            self._seal_and_send(Ping(now).encode())
        if self._last_heard is not None and now - self._last_heard > SERVER_SILENT_S:
            self._set_state("reconnecting", "no answer from the server")
            if now - tick["rejoin"] >= RECONNECT_RETRY_S:
                tick["rejoin"] = now
                self._reconnect()
        interval = LOSSY_REPORT_INTERVAL_S if tick["lossy"] else REPORT_INTERVAL_S
        if now - tick["report"] >= interval:
            tick["report"] = now
            blocks = []
            for remote in list(self._remotes.values()):
                r = remote.report()
                if r is not None:
                    blocks.append(clamped_report_block(
                        remote.ssrc, r["fraction_lost"], r["highest_seq"], r["jitter_ms"],
                        r["burst"], r["cumulative_lost"]))
            if blocks:
                # Nothing new to report keeps the pace: a lossy path stays lossy.
                tick["lossy"] = any(b.fraction_lost > 0.0 for b in blocks)
                self._seal_and_send(ReceiverReport(tuple(blocks[:control.MAX_REPORTS])).encode())

    def _reconnect(self):
        """A new handshake with the same uid, token and SSRC (the server may
        have dropped us after a long silence); the old session goes on
        meanwhile, in case the server comes back to it."""
        if self._initiator is None:
            join = Join(REJOIN_REQUEST_ID, self.channel, self.uid, self.role,
                        self._token or "", self.ssrc)
            self._initiator = session.Initiator(self._server_key, join.encode())
            self._handshake_reply = None
        self._send_initiation(self._initiator)

    # ----------------------------------------------------------- publishing

    def push_audio(self, frames):
        """Publish audio ``frames``: float32 ``(channels, n)`` (or 1-D mono) at ``sample_rate``.

        Call at real-time pace with frames of any length (10 ms is usual).  The
        local effects run here, then the encoder; a host sends a packet per
        ``frame_ms``.  Audio pushed while not a host (or muted) is processed
        for the observers and dropped.  Raises ``ValueError`` for frames with
        another channel count (mono is spread) or NaN/Inf samples.
        """
        x, _ = dsp.as_block(frames)
        if x.shape[0] != self.channels:
            if x.shape[0] == 1:
                x = np.repeat(x, self.channels, axis=0)
            else:
                raise ValueError(f"push_audio takes {self.channels}-channel frames, got "
                                 f"{x.shape[0]} channels")
        with self._push_lock:
            now = time.monotonic()
            if self._first_push is None:
                self._first_push = now
            self._pushed_samples += x.shape[1]
            x = self._observe("on_record_audio_frame", x)
            if self._record_gain != 1.0:
                x = x * np.float32(self._record_gain)
            x = self._apply_effects(x)
            self._local_fifo = np.concatenate([self._local_fifo, x], axis=1)[
                :, -int(0.2 * self.sample_rate):]
            if self.sample_rate != CLOCK_RATE:
                if self._to_wire is None:
                    import soxr
                    self._to_wire = soxr.ResampleStream(self.sample_rate, CLOCK_RATE,
                                                        self.channels, dtype="float32")
                x = np.ascontiguousarray(
                    self._to_wire.resample_chunk(np.ascontiguousarray(x.T)).T)
            x = _to_channels(x, self._sender.channels)
            if self._music is not None:
                x = self._music.mix_publish(x)
            relay = self._relay
            if relay is not None and self.role == "host" and not self._muted:
                relay.push(x)
            self._pending = np.concatenate([self._pending, x], axis=1)
            step = self._sender.frame_samples
            while self._pending.shape[1] >= step:
                frame, self._pending = self._pending[:, :step], self._pending[:, step:]
                self._send_frame(frame)

    def can_push_encoded(self):
        """True when ``push_encoded_audio`` would send Opus packets as they are:
        an Opus client with no local effects or preset, the recording volume
        at 100, and no music or channel relay (each of those needs the audio)."""
        return (self.codec == "opus" and self._record_gain == 1.0 and self._preset is None
                and self._effects is None and not any(self._voice.values())
                and self._music is None and self._relay is None)

    def push_encoded_audio(self, payload, after_gap=0):
        """Publish one Opus packet encoded elsewhere, as it is (a gateway passing
        a browser's voice on without decoding and encoding it again).

        ``payload``: the Opus packet (bytes), as long as the published frames
        (``frame_ms``).  ``after_gap``: samples at 48 kHz lost just before it
        (the stream's clock moves on by that much first).  Sent only by a host,
        unmuted, in a channel; otherwise the clock moves on.  The frame
        observers do not see it, and audio pushed but not yet sent is dropped.
        Returns the packet's length in samples at 48 kHz.  Raises ``ValueError`` when ``can_push_encoded()`` is False (push the
        audio instead), for a packet of another length or a negative gap, and
        ``codec.CodecError`` for one that is not Opus.
        """
        if not self.can_push_encoded():
            raise ValueError("this client processes its audio (effects, volume, music or "
                             "relay): push the audio with push_audio")
        if not 0 <= after_gap <= 2**31:
            raise ValueError(f"after_gap must be 0..2^31 samples, got {after_gap!r}")
        samples = packet_samples(payload)
        step = self._sender.frame_samples
        if samples != step:
            raise ValueError(f"the packet holds {samples} samples; this client sends "
                             f"{step}-sample frames ({self._sender.frame_ms} ms)")
        with self._push_lock:
            if self._first_push is None:
                self._first_push = time.monotonic()
            self._pushed_samples += (after_gap + samples) * self.sample_rate // CLOCK_RATE
            self._pending = self._pending[:, :0]
            if after_gap:
                self._sender.skip(after_gap)
            if self.channel is None or self.role != "host" or self._muted:
                self._sender.skip(samples)
            else:
                self._send(self._sender.encoded_packet(payload, samples))
        return samples

    def set_audio_profile(self, profile, scenario="default"):
        """Encode the published stream with ``profile`` (``profiles.PROFILES``:
        ``"speech"``, the default, mono 32 kb/s for voice; ``"music_standard"``,
        ``"music_standard_stereo"``, ``"music_high_quality"``,
        ``"music_high_quality_stereo"``: full band, up to 128 kb/s, stereo or
        mono).  ``scenario``: only ``"default"`` so far.  Before joining or
        between songs; a stereo profile on a mono client sends the voice in
        both channels.  Raises ``ParameterError`` naming the valid profiles and
        scenarios for an unknown one, or on a client of the pcm codec.
        """
        p = audio_profile(profile, scenario)
        if self.codec != "opus":
            raise ParameterError(f"audio profiles are Opus settings; this client sends "
                                 f"{self.codec!r} (make it with codec='opus')")
        with self._push_lock:
            self._sender.set_profile(p.channels, p.bitrate, p.application)
            self._pending = _to_channels(self._pending, p.channels)
            self.audio_profile = p.name

    def _send_frame(self, frame):
        if self.channel is None or self.role != "host" or self._muted:
            self._sender.skip(frame.shape[1])
            return
        self._send(self._sender.packet(frame))

    def mute_local_audio_stream(self, mute):
        """Stop (``mute`` True) or resume (False) sending the local audio.

        The stream's RTP clock keeps running while muted.
        """
        self._muted = bool(mute)

    def adjust_recording_signal_volume(self, volume):
        """Scale the local audio by ``volume``: 0-400 (100 = unchanged, 400 = +12 dB).

        Raises ``ValueError`` outside that range.
        """
        _check_range("volume", volume, 0, 400)
        self._record_gain = volume / 100.0

    # ----------------------------------------------------------- local effects

    def set_local_voice_pitch(self, pitch):
        """Set the voice ``pitch``: 0.5-2.0 (1.0 = unchanged).

        Applied as a pitch shift of 12*log2(pitch) semitones.  Raises
        ``ValueError`` outside that range.
        """
        _check_range("pitch", pitch, 0.5, 2.0)
        semitones = 12.0 * math.log2(pitch)
        self._voice_processor("pitch", dsp.PitchShift).semitones = semitones

    def set_local_voice_equalization(self, band, gain_db):
        """Set ``band`` (0-9: 31 Hz ... 16 kHz) of the local voice's equalizer to
        ``gain_db`` (-15 to 15 dB).  Raises ``ValueError`` for either out of range."""
        if not (isinstance(band, int) and 0 <= band <= 9):
            raise ValueError(f"band must be an integer 0-9 (31 Hz ... 16 kHz), got {band!r}")
        _check_range("gain_db", gain_db, -15, 15)
        eq = self._voice_processor("eq", dsp.Equalizer)
        gains = list(eq.gains_db)
        gains[band] = float(gain_db)
        eq.gains_db = gains

    def set_local_voice_reverb(self, key, value):
        """Set one reverb parameter of the local voice to ``value``.

        ``key``: one of ``REVERB_KEYS`` (dry_level, wet_level in dB -20..10;
        room_size 0-100; wet_delay in ms 0-200; strength 0-100).  Raises
        ``ValueError`` for an unknown key or a value out of range.
        """
        if key not in REVERB_KEYS:
            raise ValueError(f"reverb key must be one of {sorted(REVERB_KEYS)}, got {key!r}")
        rev = self._voice_processor("reverb", dsp.Reverb)
        setattr(rev, REVERB_KEYS[key], value)

    def set_audio_effect_preset(self, name):
        """Use a bundled preset (``presets.names()``) on the local voice; ``None`` or
        ``"off"`` removes it.  Raises ``presets.PresetError`` for an unknown name."""
        from stagevox import presets
        with self._push_lock:
            self._preset = None if name in (None, "off") else presets.load(name)

    def set_local_effects(self, processor):
        """Run ``processor`` (any ``dsp`` processor or graph) on the local voice.

        ``None`` removes it.  Raises ``TypeError`` for anything else.
        """
        if processor is not None and not isinstance(processor, dsp.Processor):
            raise TypeError(f"expected a stagevox.dsp processor, got {type(processor).__name__}")
        with self._push_lock:
            self._effects = processor

    def _voice_processor(self, key, cls):
        with self._push_lock:
            if key not in self._voice:
                self._voice[key] = cls()
            return self._voice[key]

    def _apply_effects(self, x):
        for fx in (self._voice.get("pitch"), self._voice.get("eq"), self._voice.get("reverb"),
                   self._preset, self._effects):
            if fx is None:
                continue
            x, _ = dsp.as_block(fx.process(x, self.sample_rate))
            if x.shape[0] != self.channels:
                x = (x.mean(axis=0, keepdims=True) if self.channels == 1
                     else np.repeat(x, 2, axis=0)).astype(np.float32)
        return x

    def effects_latency(self):
        """Samples of delay the local effects add (at ``sample_rate``)."""
        return sum(fx.latency for fx in (*self._voice.values(), self._preset, self._effects)
                   if fx is not None)

    # ----------------------------------------------------------- receiving

    def pull_audio(self, num_samples):
        """The next ``num_samples`` of what this listener hears: float32
        ``(channels, num_samples)`` at ``sample_rate`` (silence when nothing arrived).

        Call at real-time pace (e.g. 10 ms every 10 ms).  Raises ``ValueError``
        unless ``num_samples`` is a whole number from 0 to 1,000,000.
        """
        if not (isinstance(num_samples, (int, np.integer)) and 0 <= num_samples <= 10**6):
            raise ValueError(f"num_samples must be an integer in 0..1000000, got {num_samples!r}")
        now = time.monotonic()
        mix = np.zeros((self.channels, num_samples), np.float32)
        spatial = {}
        placed = (set(self._spatial.speakers) if self._spatial is not None and self.channels == 2
                  else ())
        for remote in list(self._remotes.values()):
            frame = self._pull_remote(remote, num_samples, now)
            if remote.uid is not None:
                frame = self._observe("on_playback_audio_frame_before_mixing", frame, remote.uid)
            if remote.muted:
                continue
            if remote.uid in placed:
                spatial[remote.uid] = frame.mean(axis=0).astype(np.float32) * np.float32(
                    remote.volume)
                continue
            mix += _position(frame, remote.volume * remote.gain, remote.pan)
        if spatial:
            mix += self._spatial.render(spatial, self.sample_rate)
        if self._music is not None:
            mix += self._music.playout(num_samples, self.sample_rate, self.channels)
        np.clip(mix, -1.0, 1.0, out=mix)
        mix = self._observe("on_playback_audio_frame", mix)
        if any(getattr(o, "on_mixed_audio_frame", None) for o in self._observers):
            with self._push_lock:
                local = self._local_fifo[:, :num_samples]
                self._local_fifo = self._local_fifo[:, local.shape[1]:]
            mixed = mix.copy()
            mixed[:, :local.shape[1]] += local
            self._observe("on_mixed_audio_frame", mixed)
        return mix

    def _pull_remote(self, remote, n, now):
        return remote.pull(n, now)

    def mute_remote_audio_stream(self, uid, mute):
        """Stop (``mute`` True) or resume (False) playing user ``uid``.

        Raises ``KeyError`` naming the hosts when ``uid`` is not one.
        """
        self._remote(uid).muted = bool(mute)

    def adjust_user_playback_signal_volume(self, uid, volume):
        """Set the playback ``volume`` of user ``uid``: 0-100 (100 = unchanged).

        Raises ``ValueError`` out of range, ``KeyError`` for an unknown uid.
        """
        _check_range("volume", volume, 0, 100)
        self._remote(uid).volume = volume / 100.0

    def set_remote_voice_position(self, uid, pan, gain):
        """Place user ``uid``: ``pan`` -1 (left) to 1 (right), ``gain`` 0-100.

        Raises ``ValueError`` out of range, ``KeyError`` for an unknown uid.
        """
        _check_range("pan", pan, -1.0, 1.0)
        _check_range("gain", gain, 0, 100)
        r = self._remote(uid)
        r.pan, r.gain = float(pan), gain / 100.0

    def enable_spatial_audio(self, enabled=True):
        """Render remote users with a position binaurally (``enabled`` True) or not.

        Stereo clients only: ``ValueError`` when enabling it on a mono client.

        Positions are set on ``spatial_scene`` (a ``dsp.SpatialScene``), e.g.
        ``client.spatial_scene.update_remote_position(uid, [2, 1, 0])``.
        """
        if enabled and self.channels != 2:
            raise ValueError("spatial audio needs a stereo client (channels=2)")
        self._spatial = dsp.SpatialScene() if enabled else None

    @property
    def spatial_scene(self):
        """The ``dsp.SpatialScene`` of remote users (``None`` until enabled)."""
        return self._spatial

    def _remote(self, uid):
        ssrc = self._uids.get(uid)
        if ssrc is None:
            raise KeyError(f"no remote host with uid {uid} in this channel "
                           f"(hosts: {sorted(self._uids)})")
        return self._remotes[ssrc]

    def remote_users(self):
        """The uids of the channel's other hosts."""
        return sorted(self._uids)

    # ----------------------------------------------------------- sound card

    def start_audio_device(self, input=None, output=None, block_ms=10, **options):
        """Record from and/or play to sound cards: the ``input`` device's audio
        is pushed (``push_audio``) and the ``output`` device plays what
        ``pull_audio`` gives, both driven by the card's callback.

        ``input``/``output``: ``True`` for the default device, a PortAudio
        index or a device name (``devices.list_devices()``), ``None`` for
        none that way.  ``block_ms``: the card's block, 2.5-100 ms.
        ``options``: ``sample_rate`` (the card's rate in Hz), ``monitor``
        (play one's own processed voice too) and ``latency`` (PortAudio's
        buffering: "low", "high" or seconds), see ``devices.DeviceLink``.
        Needs ``pip install 'stagevox[devices]'`` and PortAudio.  Returns the
        ``DeviceLink``; its counters and delays are ``stats()["device"]``.

        Raises ``devices.DeviceError`` (a ``ValueError``) for an unknown
        device, listing the devices there are, for settings the card refuses
        or without PortAudio; ``RuntimeError`` when a device runs already.
        """
        from .devices import DeviceLink
        if self._device is not None:
            raise RuntimeError("a sound card runs already; stop_audio_device() first")
        link = DeviceLink(self, input, output, block_ms, **options)
        self._device = link.start()
        return link

    def stop_audio_device(self):
        """Stop the sound card started by ``start_audio_device`` (idempotent)."""
        link, self._device = self._device, None
        if link is not None:
            link.stop()

    # ----------------------------------------------------------- statistics

    def stats(self):
        """A dict of counters and estimates (see the README's engine section)."""
        now = time.monotonic()
        sent = self._sender.stats
        s = {k: sent[k] for k in ("packets_sent", "payload_bytes_sent", "codec_bytes_sent",
                                  "packets_retransmitted")}
        # Each packet goes out sealed: the session's overhead on top of the RTP bytes.
        s["bytes_sent"] = sent["rtp_bytes_sent"] + sent["packets_sent"] * session.TRANSPORT_OVERHEAD
        s["malformed_received"] = self._stats["malformed_received"]
        s["unauthentic_received"] = self._stats["unauthentic_received"]
        s["periodic_errors"] = self._stats["periodic_errors"]
        elapsed = (self._pushed_samples / self.sample_rate) if self._pushed_samples else 0.0
        s["send_bitrate"] = 8 * s["bytes_sent"] / elapsed if elapsed else 0.0
        s["codec_bitrate"] = 8 * s["codec_bytes_sent"] / elapsed if elapsed else 0.0
        s["red_depth"] = self._sender.uplink.depth
        s["uplink_loss"] = self._sender.uplink.fraction_lost
        s["rtt_ms"] = None if self._rtt is None else 1e3 * self._rtt
        s["channel_members"] = self._channel_members
        users = {}
        for remote in list(self._remotes.values()):
            u = remote.summary(now)
            rtt = self._rtt or 0.0
            u["end_to_end_delay_ms"] = (self.frame_ms + 1e3 * rtt / 2 + u["buffer_delay_ms"])
            users[remote.uid] = u
        s["users"] = users
        s["device"] = None if self._device is None else self._device.stats()
        for key in ("received", "lost", "recovered_red", "recovered_fec",
                    "recovered_retransmission", "concealed", "expanded_ms", "shortened_ms",
                    "lengthened_ms"):
            s[key] = sum(u[key] for u in users.values())
        return s


def _position(frame, gain, pan):
    """Scale and pan one user's frame (constant power; mono output ignores pan)."""
    if frame.shape[0] == 1 or pan == 0.0:
        return frame * np.float32(gain)
    theta = (pan + 1.0) * math.pi / 4.0
    g = np.array([[math.cos(theta)], [math.sin(theta)]], np.float32) * np.float32(
        gain * math.sqrt(2.0))
    return frame.mean(axis=0, keepdims=True) * g


def _check_range(name, value, lo, hi):
    if not (isinstance(value, (int, float)) and lo <= value <= hi):
        raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")

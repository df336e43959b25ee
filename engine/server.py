"""The channel server: handshakes, admission, roles, and forwarding hosts'
packets to the channel (an SFU), over one UDP socket.

Threat model: anyone can send any datagram from any source address; a member
may be malicious; a passive observer sees all traffic; tokens are secrets of
the member that holds them.  So:

- Before a client has proved that it receives at its address, the server
  keeps no state for it and answers with nothing larger than what it got: the
  first handshake message (always 1200 bytes) earns a 24-byte cookie; only
  the second, carrying that cookie, costs a key exchange (``session``).
- The handshake (Noise NK with the server's long-term key) gives each session
  its own keys; the token travels encrypted inside it.  Every later datagram,
  both ways, is sealed with ChaCha20-Poly1305 and checked against an
  anti-replay window; one that fails costs one AEAD check and is counted.
- A session joins its channel (and takes over a uid already there, whose old
  session is told ``removed: replaced``) only with its first authenticated
  datagram; a member's address changes only by authenticated datagrams.
- Each member has a packet and byte budget; retransmissions to a member are
  de-duplicated and paid from a credit earned by what was forwarded to it;
  the RED depth is bounded; per-packet work is bounded (``forwarding``).
- Announcements (user joined, left, offline, role changed, removed) are
  numbered per member and repeated until acknowledged.
- Every periodic task survives the exception of one step (``transport``).

Nothing a member sends can harm another; what is dropped is counted in
``Server.counters``.
"""

import asyncio
import collections
import logging
import math
import os
import struct
import threading
import time

from . import control, session
from .control import (Ack, Event, Join, Joined, Leave, Nack, Ping, Pong, PublishStream,
                      PublishStreamDone, ReceiverReport, Refused, RenewToken, RoleChanged,
                      SetRole, TokenRenewed, clamped_report_block)
from .feedback import ReceiverRedundancy
from .forwarding import UplinkStream
from .inject import StreamInjector
from .media_bridges import BridgeError, MediaBridges
from .publish import check_allow_prefix, check_url
from .rtp import PT_SEALED_OPUS, PacketError, RtpPacket, is_rtp
from .session import SessionError
from .token import TokenError, make_token, verify_token
from .transport import LimitedLog, format_address, open_endpoint, run_periodic

log = logging.getLogger(__name__)

#: Largest datagram read; anything longer is dropped unparsed (room for a
#: 20 ms stereo frame of the L16 debug codec, sealed).
MAX_DATAGRAM = 4096
#: Retransmission requests to hosts: interval and tries per missing packet.
UPLINK_NACK_S = 0.01
UPLINK_NACK_TRIES = 6
#: Token expiry warning, seconds ahead (as the well-known SDK does).
EXPIRY_WARNING_S = 30.0
#: Receiver reports to hosts: every half second on a clean uplink, every
#: 0.1 s on a lossy one.  Housekeeping runs every TICK_S.
REPORT_INTERVAL_S = 0.5
LOSSY_REPORT_INTERVAL_S = 0.1
TICK_S = 0.05
#: Timeouts, token expiry and retired sessions are looked at every SCAN_S.
SCAN_S = 0.25
#: Events not acknowledged are sent again this often; a member's outbox holds
#: at most MAX_OUTBOX events (the oldest go first).
EVENT_RETRY_S = 0.1
MAX_OUTBOX = 256
#: Handshakes answered but not yet confirmed by the client: at most this many,
#: for at most PENDING_S seconds.  A replaced session lingers RETIRED_S to
#: deliver its "removed" event.
MAX_PENDING = 4096
PENDING_S = 10.0
RETIRED_S = 5.0
#: Key exchanges per second the server does at most (a flood of handshakes
#: with valid cookies from many addresses cannot take the whole core).
HANDSHAKE_RATE = 4000.0
#: Retransmissions to a member are paid from a credit of RTX_SHARE bytes per
#: byte forwarded to it, at most RTX_CREDIT_MAX; each sequence number is sent
#: again at most RTX_MAX_PER_SEQ times and not twice within RTX_MIN_GAP_S.
RTX_SHARE = 2.0
RTX_CREDIT_MAX = 64 * 1024
RTX_MAX_PER_SEQ = 4
RTX_MIN_GAP_S = 0.02
#: Membership lines (joins, leaves, role changes, refusals) logged at INFO: at
#: most MEMBERSHIP_LOG_RATE a second in bursts of MEMBERSHIP_LOG_BURST; the
#: rest are counted and summed up in one line, so a flood of refused joins
#: cannot fill the log.
MEMBERSHIP_LOG_RATE = 50.0
MEMBERSHIP_LOG_BURST = 200
#: How long a token of an injected stream (``add_inject_stream_url``) is
#: valid, s; the injector renews it when the server warns of its expiry.
INJECT_TOKEN_S = 3600.0
#: Publish requests (``PublishStream``) a host may make: a second, in bursts of.
PUBLISH_REQUEST_RATE = 1.0
PUBLISH_REQUEST_BURST = 4

#: Session indexes drawn from the system's random source at a time.
INDEX_BATCH = 256
_INDEXES = struct.Struct(f">{INDEX_BATCH}I")

#: The handler method of each control message a member may send.
_CONTROL_HANDLERS = {Leave: "_on_leave", SetRole: "_on_set_role", RenewToken: "_on_renew",
                     Ping: "_on_ping", ReceiverReport: "_on_report", Nack: "_on_nack",
                     Ack: "_on_ack", PublishStream: "_on_publish"}


class _Bucket:
    """Token bucket: ``rate`` units a second, bursts of ``burst``."""

    __slots__ = ("rate", "burst", "level", "stamp")

    def __init__(self, rate, burst, now):
        self.rate = rate
        self.burst = burst
        self.level = burst
        self.stamp = now

    def allow(self, now, cost=1.0):
        level = self.level + (now - self.stamp) * self.rate
        self.level = level if level < self.burst else self.burst
        self.stamp = now
        if self.level >= cost:
            self.level -= cost
            return True
        return False


class _Member:
    """A session and, once confirmed, a member of its channel."""

    def __init__(self, server, index, sess, join, claims, addr, now, hosts_told):
        self.index = index
        self.session = sess
        self.uid = join.uid
        self.channel_name = join.channel
        self.channel = None                  # set when confirmed
        self.role = join.role
        self.ssrc = join.ssrc
        self.claims = claims
        self.addr = addr
        self.created = now
        self.last_seen = now
        self.confirmed = False
        self.ephemeral = None                # the client's handshake key, until confirmed
        self.retired_at = None
        self.hosts_told = hosts_told         # {uid: ssrc} in the Joined reply
        self.warned = False
        self.redundancy = ReceiverRedundancy()
        self.packets = _Bucket(server.rate_limit_pps, server.rate_limit_pps, now)
        self.bytes = _Bucket(server.rate_limit_bps, server.rate_limit_bps, now)
        self.rtx_credit = 0.0
        self.publish_requests = _Bucket(PUBLISH_REQUEST_RATE, PUBLISH_REQUEST_BURST, now)
        self.publish_done = {}               # request id -> its answer, for repeats
        self.rtx_log = {}                    # (ssrc, ext seq) -> [times sent, last sent]
        self.outbox = collections.OrderedDict()   # event seq -> [Event, last sent]
        self.next_event = 1


class _Channel:
    def __init__(self, name):
        self.name = name
        self.members = {}                # uid -> _Member
        self.groups = {}                 # sender uid -> {RED depth: [members]}
        self.streams = {}                # ssrc -> UplinkStream
        self.ssrcs = {}                  # ssrc -> uid of the members
        self._hosts = None

    def changed(self, hosts=True):
        """Members, roles or RED depths changed: forget what was worked out from
        them.  ``hosts=False``: the hosts are the same (a member who is not a
        host came or went, or a RED depth changed), so their list is kept: a
        join then costs the same in a channel of ten as of ten thousand."""
        self.groups.clear()
        if hosts:
            self._hosts = None

    def hosts(self):
        """The channel's hosts (a list kept until the channel changes)."""
        if self._hosts is None:
            self._hosts = [m for m in self.members.values() if m.role == "host"]
        return self._hosts


class Server:
    """A channel server on one UDP port.

    ``secret``: bytes or str, the token secret.  ``private_key``: the
    server's long-term X25519 key (32 bytes), or ``key_file``: a file that
    holds it (created on first use, mode 0600); neither: a new key for this
    run.  Clients need ``public_key`` (``public_key_text`` in the CLI).

    Limits, each refused with its own code: ``max_channels`` per server
    (``too_many_channels``), ``max_members`` per channel (``channel_full``),
    ``max_hosts`` per channel (``too_many_hosts``).  ``rate_limit_pps`` and
    ``rate_limit_bps``: packets and bytes per second accepted from one member
    (bursts of the same size).  ``member_timeout_s``: a member silent this
    long is dropped and reported offline.  ``publish_allow``: URL prefixes
    (``rtmp://cdn.example/live/``) a host may have its channel pushed to
    (``Client.add_publish_stream_url``); none by default, since a host
    could otherwise make the server connect and send wherever it likes.
    The server's own ``add_publish_stream_url`` is not limited by it.

    Use ``start()``/``stop()`` (a background thread) or ``with Server(...) as
    s:``; ``run()`` serves in the calling thread until ``stop()``.  ``host``
    and ``port`` (0: a free one) are where it listens; ``address`` is the
    bound address once started.  Raises ``ValueError`` for a missing secret,
    a limit out of range, or both ``private_key`` and ``key_file``.
    """

    def __init__(self, host="127.0.0.1", port=0, secret=None, *, private_key=None,
                 key_file=None, max_hosts=17, max_members=10000, max_channels=10000,
                 member_timeout_s=10.0, rate_limit_pps=400, rate_limit_bps=256_000,
                 publish_allow=()):
        if secret is None or len(secret) == 0:
            raise ValueError("the server needs a non-empty secret (bytes or str) to check tokens")
        if not 1 <= max_hosts <= 128:
            raise ValueError(f"max_hosts must be in 1..128, got {max_hosts}")
        for name, value in (("max_members", max_members), ("max_channels", max_channels)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        if not rate_limit_pps > 0 or not rate_limit_bps > 0:
            raise ValueError("rate_limit_pps and rate_limit_bps must be > 0")
        if private_key is not None and key_file is not None:
            raise ValueError("give private_key or key_file, not both")
        if isinstance(publish_allow, str):
            publish_allow = (publish_allow,)
        self.publish_allow = tuple(check_allow_prefix(p) for p in publish_allow)
        if key_file is not None:
            private_key = session.load_or_create_key(key_file)
        elif private_key is None:
            private_key = session.generate_private_key()
        self._responder = session.Responder(private_key)
        self.public_key = self._responder.public_key
        self.public_key_text = session.public_key_text(self.public_key)
        self.host = host
        self.port = port
        self.secret = secret
        self.max_hosts = max_hosts
        self.max_members = max_members
        self.max_channels = max_channels
        self.member_timeout_s = member_timeout_s
        self.rate_limit_pps = rate_limit_pps
        self.rate_limit_bps = rate_limit_bps
        self.counters = collections.Counter()
        self.address = None
        self._sessions = {}              # local index -> _Member (pending, confirmed, retired)
        self._index_pool = []            # random session indexes not yet handed out
        self._pending = {}               # client ephemeral -> (member, initiation, response)
        self._outboxes = set()           # members with events not acknowledged yet
        self._last_scan = 0.0
        self._channels = {}              # name -> _Channel
        self._handshakes = _Bucket(HANDSHAKE_RATE, HANDSHAKE_RATE, time.monotonic())
        self._log = LimitedLog(log)
        self._membership_log = _Bucket(MEMBERSHIP_LOG_RATE, MEMBERSHIP_LOG_BURST,
                                       time.monotonic())
        self._membership_unlogged = 0
        self._loop = None
        self._endpoint = None
        self._thread = None
        self._ready = threading.Event()
        self._stopping = None
        self._error = None
        self._injectors = {}             # (channel, url) -> inject.StreamInjector
        self._injectors_lock = threading.Lock()
        self._bridges = MediaBridges(self.counters, self._channel_sealed)

    # ------------------------------------------------------------- lifecycle

    def start(self, timeout=5.0):
        """Serve in a background thread; returns once the socket is bound.

        Waits at most ``timeout`` seconds.  Raises ``RuntimeError`` when
        already started or not ready in time, ``OSError`` when the address
        cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._thread = threading.Thread(target=self.run, name="stagevox-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"server did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def run(self):
        """Serve in this thread until ``stop()``."""
        try:
            asyncio.run(self._main())
        except OSError as exc:
            self._error = exc
            self._ready.set()
            if self._thread is None:
                raise

    def stop(self, timeout=5.0):
        """Stop serving and close the socket (idempotent).

        Injected streams leave first; waits up to ``timeout`` seconds for the
        server's thread to end.
        """
        with self._injectors_lock:
            injectors = list(self._injectors.values())
            self._injectors.clear()
        for injector in injectors:
            injector.stop()
        if self._loop is not None and self._stopping is not None:
            try:
                self._loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:        # the loop has already ended: stopped before
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    async def _main(self):
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._endpoint = await open_endpoint(self.datagram_received, self.counters,
                                             "server", self.host, self.port)
        self.address = self._endpoint.sock.getsockname()[:2]
        self._ready.set()
        tasks = [asyncio.ensure_future(run_periodic(TICK_S, self._tick, self.counters,
                                                    "server housekeeping")),
                 asyncio.ensure_future(run_periodic(UPLINK_NACK_S, self._nack_uplinks,
                                                    self.counters, "server uplink NACK"))]
        try:
            await self._stopping.wait()
        finally:
            for t in tasks:
                t.cancel()
            self._endpoint.close()
            self._bridges.close()

    # ------------------------------------------------------------- sending

    def _send_raw(self, data, addr):
        self._endpoint.send(data, addr)

    def _seal(self, member, inner):
        try:
            self._endpoint.send(member.session.seal(inner), member.addr)
        except SessionError:            # the session's counter is used up
            self.counters["send_errors"] += 1

    def _send_msg(self, member, msg):
        self._seal(member, msg.encode())

    def _event(self, member, kind, uid, role, ssrc, reason=""):
        """Queue an event for ``member`` and send it (repeated until acknowledged)."""
        seq = member.next_event
        member.next_event += 1
        ev = Event(seq, kind, uid, role, ssrc, reason[:control.MAX_REASON_BYTES])
        if len(member.outbox) >= MAX_OUTBOX:
            member.outbox.popitem(last=False)
            self.counters["events_dropped"] += 1
        member.outbox[seq] = [ev, time.monotonic()]
        self._outboxes.add(member)
        self._send_msg(member, ev)

    def _announce(self, channel, kind, uid, role, ssrc, reason="", exclude=None):
        for m in channel.members.values():
            if m.uid != exclude:
                self._event(m, kind, uid, role, ssrc, reason)

    def members(self, channel):
        """``{uid: role}`` of the members of ``channel`` (a name).

        A snapshot; empty when there is no such channel.
        """
        ch = self._channels.get(channel)
        return {} if ch is None else {uid: m.role for uid, m in ch.members.items()}

    # ------------------------------------------------------------- media bridges

    def register_event_handler(self, handler):
        """Have ``handler`` hear the server's events: its
        ``on_rtmp_streaming_state_changed(url, state, reason)`` (see
        ``publish``), called on a publisher's thread, and
        ``on_inject_stream_state_changed(channel, url, state, reason)`` (see
        ``inject``), called on the injector's thread."""
        self._bridges.add_handler(handler)

    def add_inject_stream_url(self, channel, url, uid=666, volume=100):
        """Publish ``url`` (an online stream or a file: HTTP, HLS, RTMP, anything
        FFmpeg opens) into ``channel`` as host ``uid``, a member the server
        admits like any other, with tokens it makes itself (valid
        ``INJECT_TOKEN_S``, and renewed before they expire).  Returns at once: the stream's states arrive as
        ``on_inject_stream_state_changed(channel, url, state, reason)`` (see
        ``inject``: connecting, playing, retrying, stopped).  ``volume``: 0-100.
        Raises ``RuntimeError`` before ``start``, ``ValueError`` when ``url``
        is being injected into ``channel`` already or for a bad uid, channel,
        URL or volume."""
        if self.address is None:
            raise RuntimeError("start the server before injecting a stream")
        make_token(self.secret, channel, uid, "host")          # bad channel or uid: raises here

        def token():
            return make_token(self.secret, channel, uid, "host", expire_s=INJECT_TOKEN_S)
        host, port = self.address[:2]
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)

        def report(state, reason):
            self._bridges.emit("on_inject_stream_state_changed", channel, url, state, reason)
        with self._injectors_lock:
            running = self._injectors.get((channel, url))
            if running is not None and running.state != "stopped":
                raise ValueError(f"{url!r} is injected into channel {channel!r} already")
            injector = StreamInjector((host, port), self.public_key, channel, uid, token, url,
                                      volume=volume, on_state=report)
            self._injectors[(channel, url)] = injector
        injector.start()

    def remove_inject_stream_url(self, channel, url):
        """Stop injecting ``url`` into ``channel`` (its member leaves).
        ``ValueError`` when it is not injected there."""
        with self._injectors_lock:
            injector = self._injectors.pop((channel, url), None)
        if injector is None:
            raise ValueError(f"{url!r} is not injected into channel {channel!r}")
        injector.stop()

    def inject_stream_urls(self, channel):
        """The streams injected into ``channel``, as ``{url: state}`` (see
        ``inject``; a stream that ended stays listed as "stopped" until removed)."""
        with self._injectors_lock:
            return {url: inj.state for (ch, url), inj in self._injectors.items() if ch == channel}

    def add_publish_stream_url(self, channel, url, transcoding=None):
        """Push the mix of ``channel`` to ``url`` (``rtmp://`` or ``rtmps://``)
        as AAC-LC in FLV, retried with back-off until removed.

        ``transcoding``: a ``channel_mix.Transcoding`` or a dict of its fields
        (sample rate, channels, bitrate up to 128 kb/s, per-user volume and
        pan), for all the channel's URLs.  Adding a URL already pushed to
        changes nothing.  Raises ``ValueError`` (``BridgeError`` with a
        ``code``) for an unknown channel, a bad URL or setting, a channel
        encrypted end to end or too many URLs.
        """
        self._bridges.add_publish_stream_url(channel, url, transcoding)

    def remove_publish_stream_url(self, channel, url):
        """Stop pushing ``channel`` to ``url``; the other URLs go on.
        ``ValueError`` when it is not pushed there."""
        self._bridges.remove_publish_stream_url(channel, url)

    def update_transcoding(self, channel, config):
        """New transcoding settings ``config`` (as in ``add_publish_stream_url``)
        for the CDN pushes of ``channel``: volumes and pans at once; a new
        rate, channel count or bitrate restarts the streams.  ``ValueError``
        for a bad setting or an unknown channel."""
        self._bridges.update_transcoding(channel, config)

    def publish_urls(self, channel):
        """The CDN pushes of ``channel``: ``{url: state}`` (states as in
        ``publish``; empty when it is pushed nowhere)."""
        return self._bridges.publish_urls(channel)

    def start_rtp_forward(self, channel, host, port, uid=None, sdp_path=None):
        """Send the mix of ``channel`` (or host ``uid`` alone) as plain
        RTP/Opus, mono, to ``host`` (an IP address) : ``port`` and write the
        SDP that describes it to ``sdp_path`` (a temporary file if None).
        Returns the SDP file's path.  ``ValueError`` for an unknown channel, a
        host that is not one unicast IP address, a bad port, or a channel
        encrypted end to end."""
        return self._bridges.start_rtp_forward(channel, host, port, uid, sdp_path)

    def stop_rtp_forward(self, channel, host, port):
        """Stop the RTP forward of ``channel`` to ``host``:``port`` (as given
        to ``start_rtp_forward``); ``ValueError`` when there is none."""
        self._bridges.stop_rtp_forward(channel, host, port)

    def _channel_sealed(self, name):
        """None if ``name`` is not served, else whether its media is sealed end to end."""
        channel = self._channels.get(name)
        if channel is None:
            return None
        return any(s.payload_type == PT_SEALED_OPUS for s in list(channel.streams.values()))

    def _on_publish(self, member, msg, now):
        """A host asks for a CDN push of its channel (added or removed)."""
        if msg.request_id in member.publish_done:     # a repeat: its first answer again
            self._send_msg(member, member.publish_done[msg.request_id])
            return
        if member.role != "host":
            self._refuse(member, msg.request_id, "no_publish_privilege",
                         "only a host may have the channel pushed to a CDN")
            return
        if not member.publish_requests.allow(now):
            self._refuse(member, msg.request_id, "rate_limited",
                         f"at most {PUBLISH_REQUEST_RATE:g} publish request a second")
            return
        if msg.action == "add":
            try:
                check_url(msg.url)
            except ValueError as exc:
                self._refuse(member, msg.request_id, "bad_request", str(exc))
                return
        if msg.action == "add" and not any(msg.url.startswith(p) for p in self.publish_allow):
            self._refuse(member, msg.request_id, "publish_not_allowed",
                         "this server pushes only to the URLs its operator allows "
                         "(stagevox server --allow-publish PREFIX)")
            return
        try:
            if msg.action == "add":
                self._bridges.add_publish_stream_url(member.channel.name, msg.url,
                                                     by_host=True)
            else:
                self._bridges.remove_publish_stream_url(member.channel.name, msg.url,
                                                        wait=False, by_host=True)
        except BridgeError as exc:
            code = exc.code if exc.code in control.REFUSAL_CODES else "bad_request"
            self._refuse(member, msg.request_id, code, str(exc))
            return
        except ValueError as exc:
            self._refuse(member, msg.request_id, "bad_request", str(exc))
            return
        self._membership("publish: channel %r uid %d %s %s", member.channel.name, member.uid,
                         msg.action, msg.url)
        reply = PublishStreamDone(msg.request_id)
        if len(member.publish_done) >= 16:
            member.publish_done.pop(next(iter(member.publish_done)))
        member.publish_done[msg.request_id] = reply
        self._send_msg(member, reply)

    # ------------------------------------------------------------- datagrams

    def datagram_received(self, data, addr):
        """Handle one datagram ``data`` (bytes) from ``addr`` ``(host, port)``.

        Runs on the server's loop; whatever is wrong with it is counted, never raised.
        """
        if len(data) > MAX_DATAGRAM:
            self.counters["dropped_oversize"] += 1
            return
        kind = data[0] if data else None
        if kind == session.KIND_TRANSPORT:
            self._on_transport(data, addr)
        elif kind == session.KIND_INITIATION:
            self._on_initiation(data, addr)
        else:
            self.counters["dropped_unauthenticated"] += 1

    def _on_initiation(self, data, addr):
        now = time.monotonic()
        pending = self._pending.get(bytes(data[8:40]))
        if pending is not None and pending[1] == data and pending[0].addr == addr:
            # The same initiation again (our response was lost): the same answer.
            self.counters["handshake_resent"] += 1
            self._send_raw(pending[2], addr)
            return
        try:
            result = self._responder.receive_initiation(data, addr, self._may_exchange)
        except SessionError:
            self.counters["dropped_bad_handshake"] += 1
            return
        if result.payload is None:
            self.counters["cookie_replies"] += 1
            self._send_raw(result.cookie_reply, addr)
            return
        self.counters["handshakes"] += 1
        try:
            join = control.decode(result.payload)
        except control.ControlError:
            self.counters["dropped_bad_handshake"] += 1
            return
        if not isinstance(join, Join):
            self.counters["dropped_bad_handshake"] += 1
            return
        index = self._new_index()
        admitted = self._admit(join, now)
        if isinstance(admitted, Refused):
            response, _ = result.respond(index, admitted.encode())
            self.counters["refused"] += 1
            self.counters["refused_" + admitted.code] += 1
            self._membership("refused join: channel %r uid %d as %s from %s: %s (%s)",
                             join.channel, join.uid, join.role, format_address(addr),
                             admitted.code, admitted.reason)
            self._send_raw(response, addr)
            return
        channel = self._channels.get(join.channel)
        hosts = {} if channel is None else {
            m.uid: m.ssrc for m in channel.hosts() if m.uid != join.uid}
        reply = Joined(join.request_id, join.uid, join.role, int(admitted.expires_at),
                       tuple(hosts.items())[:control.MAX_HOSTS])
        response, sess = result.respond(index, reply.encode())
        member = _Member(self, index, sess, join, admitted, addr, now, hosts)
        member.ephemeral = result.ephemeral
        self._expire_pending(now)
        if len(self._pending) >= MAX_PENDING:
            oldest = next(iter(self._pending))
            self._sessions.pop(self._pending.pop(oldest)[0].index, None)
        self._sessions[index] = member
        self._pending[result.ephemeral] = (member, bytes(data), response)
        self._send_raw(response, addr)

    def _may_exchange(self):
        """Whether a key exchange fits the server's rate (asked only once the
        cookie is valid, so a flood without cookies does not spend it)."""
        if self._handshakes.allow(time.monotonic()):
            return True
        self.counters["dropped_handshake_rate"] += 1
        return False

    def _new_index(self):
        """A random session index not in use.  Drawn from INDEX_BATCH indexes
        read from the system's random source at once (one system call per
        batch, not one per handshake)."""
        while True:
            if not self._index_pool:
                self._index_pool = list(_INDEXES.unpack(os.urandom(4 * INDEX_BATCH)))
            index = self._index_pool.pop()
            if index not in self._sessions:
                return index

    def _admit(self, join, now):
        """The token's claims, or the ``Refused`` message for this join."""
        def refuse(code, reason):
            return Refused(join.request_id, code, reason)
        try:
            claims = verify_token(self.secret, join.token, join.channel, join.uid,
                                  now=time.time())
        except TokenError as exc:
            return refuse(exc.code, str(exc))
        if join.role == "host" and not claims.can_publish:
            return refuse("no_publish_privilege",
                          "the token does not allow publishing; join as audience "
                          "or get a host token")
        channel = self._channels.get(join.channel)
        if channel is None:
            if len(self._channels) >= self.max_channels:
                return refuse("too_many_channels",
                              f"the server already serves {self.max_channels} channels "
                              f"(the most allowed)")
            return claims
        # Counted without walking the members: a join costs the same in a
        # channel of ten as of ten thousand.
        old = channel.members.get(join.uid)
        if len(channel.members) - (old is not None) >= self.max_members:
            return refuse("channel_full", f"channel {join.channel!r} already has "
                                          f"{self.max_members} members (the most allowed)")
        hosts = channel.hosts()
        if join.role == "host" and len(hosts) - (old in hosts) >= self.max_hosts:
            return refuse("too_many_hosts",
                          f"channel {join.channel!r} already has {self.max_hosts} hosts "
                          f"(the most allowed); join as audience")
        if join.ssrc != 0 and channel.ssrcs.get(join.ssrc, join.uid) != join.uid:
            return refuse("bad_request",
                          f"SSRC {join.ssrc} is already used in this channel; pick another")
        return claims

    def _on_transport(self, data, addr):
        index = session.peek_receiver_index(data)
        member = self._sessions.get(index)
        if member is None:
            self.counters["dropped_unknown_session"] += 1
            return
        try:
            inner = member.session.open(data)
        except SessionError as exc:
            self.counters["dropped_replayed" if "replay" in str(exc) else
                          "dropped_unauthentic"] += 1
            return
        now = time.monotonic()
        if not (member.packets.allow(now) and member.bytes.allow(now, len(data))):
            self.counters["dropped_rate_limited"] += 1
            return
        member.last_seen = now
        if member.addr != addr:
            # Authenticated: the member's NAT rebound or it roamed.
            member.addr = addr
            self.counters["address_changes"] += 1
        if member.retired_at is not None:
            if control.is_control(inner):
                self._on_retired(member, inner)
            else:
                self.counters["dropped_retired"] += 1
            return
        if not member.confirmed and not self._confirm(member, now):
            return
        if control.is_control(inner):
            try:
                msg = control.decode(inner)
            except control.ControlError:
                self.counters["dropped_malformed"] += 1
                return
            self._on_control(member, msg, now)
        elif is_rtp(inner):
            self._on_rtp(member, inner, now)
        else:
            self.counters["dropped_malformed"] += 1

    def _on_retired(self, member, inner):
        try:
            msg = control.decode(inner)
        except control.ControlError:
            return
        if isinstance(msg, Ack):
            self._on_ack(member, msg, 0.0)

    # ------------------------------------------------------------- membership

    def _confirm(self, member, now):
        """The session's first authenticated datagram: it joins its channel."""
        self._pending.pop(member.ephemeral, None)
        channel = self._channels.get(member.channel_name)
        if channel is None:
            if len(self._channels) >= self.max_channels:
                self._drop_session(member)
                return False
            channel = self._channels[member.channel_name] = _Channel(member.channel_name)
        old = channel.members.get(member.uid)
        if member.role == "host" and len([m for m in channel.hosts() if m is not old]) \
                >= self.max_hosts:
            member.role = "audience"         # the stage filled meanwhile
            self._event(member, "role_changed", member.uid, "audience", member.ssrc,
                        "too_many_hosts")
        member.confirmed = True
        member.channel = channel
        was_host = old is not None and old.role == "host"
        if old is not None:
            self.counters["replaced"] += 1
            self._retire(old, "replaced")
            if old.ssrc != member.ssrc:
                channel.streams.pop(old.ssrc, None)
            # The old session may have been the channel's last member.
            self._channels[channel.name] = channel
        channel.members[member.uid] = member
        channel.ssrcs[member.ssrc] = member.uid
        # The old session, if any, has left the channel already (``_retire``).
        channel.changed(hosts=member.role == "host")
        if member.role == "host":
            channel.streams.setdefault(member.ssrc, UplinkStream(member.ssrc))
        self.counters["joined"] += 1
        if log.isEnabledFor(logging.INFO):          # (the address is formatted only to be logged)
            self._membership("joined: channel %r uid %d as %s from %s%s", channel.name,
                             member.uid, member.role, format_address(member.addr),
                             " (took over its earlier session)" if old is not None else "")
        # Hosts that came or went between the Joined reply and now.
        current = {m.uid: m for m in channel.hosts() if m is not member}
        for uid, m in current.items():
            if member.hosts_told.get(uid) != m.ssrc:
                self._event(member, "user_joined", uid, "host", m.ssrc)
        for uid, ssrc in member.hosts_told.items():
            if uid not in current:
                self._event(member, "user_offline", uid, "host", ssrc, "left")
        member.hosts_told = None
        if member.role == "host" and not (was_host and old.ssrc == member.ssrc):
            self._announce(channel, "user_joined", member.uid, "host", member.ssrc,
                           exclude=member.uid)
        elif was_host and member.role != "host":
            self._announce(channel, "role_changed", member.uid, member.role, member.ssrc,
                           exclude=member.uid)
        return True

    def _retire(self, member, reason, announce=None):
        """Take ``member`` out of its channel (announcing ``announce`` to the
        others if it was a host); its session lingers RETIRED_S to deliver the
        ``removed`` event with ``reason``."""
        self._leave_channel(member, announce, reason)
        member.retired_at = time.monotonic()
        self._event(member, "removed", member.uid, member.role, member.ssrc, reason)

    def _drop_session(self, member):
        self._sessions.pop(member.index, None)
        self._outboxes.discard(member)

    def _leave_channel(self, member, kind, reason):
        """Take ``member`` out of its channel, announcing ``kind`` if it was a host."""
        channel = member.channel
        if channel is None:
            return
        if channel.members.get(member.uid) is member:
            del channel.members[member.uid]
            if channel.ssrcs.get(member.ssrc) == member.uid:
                del channel.ssrcs[member.ssrc]
            channel.changed(hosts=member.role == "host")
            channel.streams.pop(member.ssrc, None)
            if member.role == "host" and kind is not None:
                self._announce(channel, kind, member.uid, member.role, member.ssrc, reason)
        if not channel.members:
            self._channels.pop(channel.name, None)
        member.channel = None

    def _remove(self, member, kind, reason):
        self._leave_channel(member, kind, reason)
        self._drop_session(member)

    # ------------------------------------------------------------- control

    def _on_control(self, member, msg, now):
        handler = _CONTROL_HANDLERS.get(type(msg))
        if handler is None:
            self.counters["dropped_unexpected"] += 1
            return
        getattr(self, handler)(member, msg, now)

    def _refuse(self, member, request_id, code, reason):
        self.counters["refused"] += 1
        self.counters["refused_" + code] += 1
        self._membership("refused request: channel %r uid %d: %s (%s)", member.channel_name,
                         member.uid, code, reason)
        self._send_msg(member, Refused(request_id, code, reason))

    def _on_leave(self, member, msg, now):
        self._membership("left: channel %r uid %d", member.channel_name, member.uid)
        self._remove(member, "user_left", "left the channel")

    def _on_ack(self, member, msg, now):
        while member.outbox:
            seq = next(iter(member.outbox))
            if seq > msg.seq:
                break
            del member.outbox[seq]

    def _on_set_role(self, member, msg, now):
        claims = member.claims
        if msg.token:
            try:
                claims = verify_token(self.secret, msg.token, member.channel.name, member.uid,
                                      now=time.time())
            except TokenError as exc:
                self._refuse(member, msg.request_id, exc.code, str(exc))
                return
        channel = member.channel
        if msg.role == "host":
            if not claims.can_publish:
                self._refuse(member, msg.request_id, "no_publish_privilege",
                             "the token does not allow publishing; renew it with a host token")
                return
            if member.role != "host" and len(channel.hosts()) >= self.max_hosts:
                self._refuse(member, msg.request_id, "too_many_hosts",
                             f"channel {channel.name!r} already has {self.max_hosts} hosts")
                return
        member.claims = claims
        member.warned = False
        changed = member.role != msg.role
        member.role = msg.role
        if msg.role == "host":
            channel.streams.setdefault(member.ssrc, UplinkStream(member.ssrc))
        else:
            channel.streams.pop(member.ssrc, None)
        channel.changed()
        self._send_msg(member, RoleChanged(msg.request_id, member.uid, msg.role))
        if changed:
            self._membership("role changed: channel %r uid %d is now %s", channel.name,
                             member.uid, msg.role)
            kind = "user_joined" if msg.role == "host" else "role_changed"
            self._announce(channel, kind, member.uid, msg.role, member.ssrc,
                           exclude=member.uid)

    def _on_renew(self, member, msg, now):
        try:
            claims = verify_token(self.secret, msg.token, member.channel.name, member.uid,
                                  now=time.time())
        except TokenError as exc:
            self._refuse(member, msg.request_id, exc.code, str(exc))
            return
        if member.role == "host" and not claims.can_publish:
            self._refuse(member, msg.request_id, "no_publish_privilege",
                         "a host needs a token that allows publishing")
            return
        member.claims = claims
        member.warned = False
        self._send_msg(member, TokenRenewed(msg.request_id, int(claims.expires_at)))

    def _on_ping(self, member, msg, now):
        self._send_msg(member, Pong(msg.send_time, len(member.channel.members)))

    def _on_report(self, member, msg, now):
        before = member.redundancy.depth
        streams = member.channel.streams
        for block in msg.reports:
            if block.ssrc not in streams:       # no stream of this channel: nothing to size
                continue
            member.redundancy.add(now, block.ssrc, block.fraction_lost, block.burst,
                                  block.highest_seq, block.cumulative_lost)
        if member.redundancy.depth != before:
            member.channel.changed(hosts=False)

    def _on_nack(self, member, msg, now):
        """Resend the frames a member asks for, packed as RED (every frame
        once, each packet carrying older requested frames besides its own), in
        copies on a very lossy path; de-duplicated per sequence number and paid
        from the member's retransmission credit."""
        stream = member.channel.streams.get(msg.ssrc)
        if stream is None:
            self.counters["nack_misses"] += len(msg.sequence_numbers)
            return
        log_ = member.rtx_log

        def skip(ext):
            entry = log_.get((msg.ssrc, ext))
            return entry is not None and (entry[0] >= RTX_MAX_PER_SEQ
                                          or now - entry[1] < RTX_MIN_GAP_S)
        packets, ext_seqs, misses = stream.retransmissions(set(msg.sequence_numbers), skip)
        self.counters["nack_misses"] += misses
        if not packets:
            return
        loss = member.redundancy.fraction_lost
        copies = 1 + (loss >= 0.3) + (loss >= 0.5)
        member.rtx_credit = min(member.rtx_credit, RTX_CREDIT_MAX)
        for data, ext in zip(packets, ext_seqs):
            cost = copies * (len(data) + session.TRANSPORT_OVERHEAD)
            if cost > member.rtx_credit:
                self.counters["rtx_over_budget"] += 1
                break
            member.rtx_credit -= cost
            for _ in range(copies):
                self._seal(member, data)
            self.counters["retransmitted"] += copies
            entry = log_.setdefault((msg.ssrc, ext), [0, now])
            entry[0] += 1
            entry[1] = now
        if len(log_) > 4096:
            for key in [k for k, e in log_.items() if now - e[1] > 2.0]:
                del log_[key]
            if len(log_) > 4096:
                log_.clear()

    # ------------------------------------------------------------- media

    def _on_rtp(self, member, inner, now):
        if member.role != "host":
            self.counters["dropped_audience"] += 1
            return
        try:
            packet = RtpPacket.parse(inner)
        except PacketError:
            self.counters["dropped_malformed"] += 1
            return
        if packet.ssrc != member.ssrc:
            self.counters["dropped_wrong_ssrc"] += 1
            return
        channel = member.channel
        stream = channel.streams.get(member.ssrc)
        if stream is None:
            stream = channel.streams[member.ssrc] = UplinkStream(member.ssrc)
        result = stream.add(packet, now)
        if isinstance(result, str):
            self.counters["dropped_" + result] += 1
            return
        primary_ext, recovered = result
        self.counters["recovered_uplink"] += len(recovered)
        self._bridges.offer(channel.name, member.uid, member.ssrc, packet, now)
        self._forward(channel, member, stream, packet, primary_ext, recovered)

    def _forward(self, channel, sender, stream, packet, primary_ext, recovered):
        by_depth = channel.groups.get(sender.uid)
        if by_depth is None:
            # Receivers grouped by the RED depth they need, cached until the
            # channel's members or their depths change.
            by_depth = {}
            for m in channel.members.values():
                if m is not sender:
                    by_depth.setdefault(m.redundancy.depth, []).append(m)
            channel.groups[sender.uid] = by_depth
        send = self._endpoint.send
        for depth, members in by_depth.items():
            data = stream.forward(packet, primary_ext, recovered, depth)
            credit = RTX_SHARE * len(data)
            for m in members:
                try:
                    send(m.session.seal(data), m.addr)
                except SessionError:
                    self.counters["send_errors"] += 1
                    continue
                m.rtx_credit += credit          # capped where it is spent
            self.counters["forwarded"] += len(members)

    # ------------------------------------------------------------- housekeeping

    def _tick(self, now):
        """Every TICK_S: events not yet acknowledged, uplink reports; every
        SCAN_S also timeouts, token expiry and retired sessions."""
        if self._membership_unlogged and self._membership_log.allow(now):
            log.info("%d membership lines not logged (more than %d a second)",
                     self._membership_unlogged, MEMBERSHIP_LOG_RATE)
            self._membership_unlogged = 0
        for member in list(self._outboxes):
            self._guarded("events", member, self._resend_events, member, now)
        if now - self._last_scan >= SCAN_S:
            self._last_scan = now
            wall = time.time()
            for member in list(self._sessions.values()):
                self._guarded("tick", member, self._tick_member, member, now, wall)
            self._expire_pending(now)
        for channel in list(self._channels.values()):
            for m in channel.hosts():
                self._guarded("report", m, self._report_uplink, m, channel, now)

    def _membership(self, message, *args):
        """Log one membership line at INFO, within the membership log's rate."""
        if not log.isEnabledFor(logging.INFO):
            return
        if self._membership_log.allow(time.monotonic()):
            log.info(message, *args)
        else:
            self._membership_unlogged += 1

    def _guarded(self, what, member, step, *args):
        """One member's housekeeping step; its exception is counted and logged
        (one line now and then), and the others' steps go on."""
        try:
            step(*args)
        except Exception as exc:
            self.counters["periodic_errors"] += 1
            self._log.warning(what, "server: %s of uid %s failed: %r", what, member.uid, exc)

    def _tick_member(self, member, now, wall):
        if member.retired_at is not None:
            if not member.outbox or now - member.retired_at > RETIRED_S:
                self._drop_session(member)
            return
        if not member.confirmed:
            return                           # expired with the pending handshakes
        if now - member.last_seen > self.member_timeout_s:
            self.counters["timed_out"] += 1
            self._membership("offline: channel %r uid %d (nothing heard for %.0f s)",
                             member.channel_name, member.uid, self.member_timeout_s)
            self._remove(member, "user_offline", "timeout")
            return
        left = member.claims.expires_at - wall
        if left <= 0:
            self.counters["expired"] += 1
            self._membership("removed: channel %r uid %d (its token expired)",
                             member.channel_name, member.uid)
            self._retire(member, "token expired", announce="user_offline")
            return
        if left <= EXPIRY_WARNING_S and not member.warned:
            member.warned = True
            self._event(member, "token_will_expire", member.uid, member.role, member.ssrc,
                        f"the token expires in {math.ceil(left)} s")

    def _resend_events(self, member, now):
        if not member.outbox or member.index not in self._sessions:
            self._outboxes.discard(member)
            return
        sent = 0
        for entry in member.outbox.values():
            if now - entry[1] >= EVENT_RETRY_S:
                entry[1] = now
                self._send_msg(member, entry[0])
                self.counters["events_resent"] += 1
                sent += 1
                if sent >= 32:
                    break

    def _expire_pending(self, now):
        while self._pending:
            key = next(iter(self._pending))
            member = self._pending[key][0]
            if now - member.created < PENDING_S and member.index in self._sessions:
                break
            del self._pending[key]
            if not member.confirmed:
                self._sessions.pop(member.index, None)

    def _nack_uplinks(self, now):
        """Ask hosts to resend what their uplink lost, while it can still be used.

        A gap in a host's sequence numbers, or nothing from a host for more
        than two frame times (the only way to learn of a loss burst while it
        lasts), is asked for every UPLINK_NACK_S, a few times; the host
        answers from the packets it sent last.  RED usually recovers the
        frames when the next packet comes; a retransmission makes it sooner.
        """
        for channel in list(self._channels.values()):
            for m in channel.hosts():
                stream = channel.streams.get(m.ssrc)
                if stream is None or stream.last_seq is None:
                    continue
                last_seq, last_ts = stream.last_seq
                stream.missing.overdue(last_seq, last_ts, stream.step,
                                       min(stream.overdue_count(now), 16))
                asked = stream.missing.due(now, UPLINK_NACK_S, UPLINK_NACK_TRIES,
                                           wanted=lambda seq, ts: ts not in stream.frames)
                if asked:
                    self.counters["uplink_nacks"] += len(asked)
                    self._send_msg(m, Nack(m.ssrc, tuple(s & 0xFFFF for s in
                                                         asked[:control.MAX_NACKS])))

    def _report_uplink(self, m, channel, now):
        """Tell a host how its uplink fares: every half second, or every 0.1 s
        while it is losing packets (so its redundancy rises quickly)."""
        stream = channel.streams.get(m.ssrc)
        if stream is None:
            return
        interval = LOSSY_REPORT_INTERVAL_S if stream.lossy else REPORT_INTERVAL_S
        if now - stream.last_report < interval:
            return
        stream.last_report = now
        loss = stream.loss.report()
        if loss is None:
            return
        stream.lossy = loss[0] > 0.0
        block = clamped_report_block(m.ssrc, loss[0], stream.loss.highest or 0, 0.0,
                                     loss[1], stream.loss.cumulative_lost)
        self._send_msg(m, ReceiverReport((block,)))


"""The channel server: admission, roles, and forwarding hosts' packets (an SFU).

One asyncio loop owns one UDP socket.  Control messages (``control``) and RTP
packets (``rtp``) share it; the first two bytes tell them apart.  Hosts'
packets are forwarded to every other member of the channel without decoding.

Loss recovery on each leg, without decoding:

- the uplink (host to server): the host adds RED redundancy at the depth the
  server's receiver reports call for; the server unpacks the RED blocks and
  keeps every frame it gets in a short per-stream cache;
- the downlink (server to each member): the server rebuilds each forwarded
  packet with the RED depth that member's own reports call for, adds any
  frame it has only just recovered from the uplink, and answers NACKs from the
  cache.  Members at the same depth share one serialized packet, so fan-out
  costs one ``sendto`` per member.

Nothing a member sends can harm another: malformed packets, packets from
non-members or audience members, packets claiming another member's SSRC and
floods beyond the per-address rate limit are dropped and counted in
``Server.counters``.
"""

import asyncio
import collections
import dataclasses
import logging
import math
import socket
import threading
import time

from . import control
from .control import (Event, Join, Joined, Leave, Nack, Ping, Pong, ReceiverReport, Refused,
                      RenewToken, ReportBlock, RoleChanged, SetRole, TokenRenewed)
from .feedback import MAX_RED_PAYLOAD, LossMeter, ReceiverRedundancy
from .red import MAX_TS_OFFSET, RedBlock, decode_red, encode_red_within
from .rtp import (CLOCK_RATE, PT_OPUS, PT_RED, PacketError, RtpPacket, SequenceUnwrapper,
                  TimestampUnwrapper, seq_diff)
from .token import TokenError, verify_token

log = logging.getLogger(__name__)

#: Seconds of frames kept per stream for redundancy and retransmission.
CACHE_S = 1.0
#: Kernel send and receive buffers of the server's socket, bytes: room for
#: short stalls of the loop at full-stage rates.
SOCKET_BUFFER = 1 << 20
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


@dataclasses.dataclass
class _Bucket:
    """Token bucket: ``rate`` packets a second, bursts of ``burst``."""

    rate: float
    burst: float
    level: float = 0.0
    stamp: float = 0.0

    def allow(self, now):
        self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level >= 1.0:
            self.level -= 1.0
            return True
        return False


class _Stream:
    """One host's published stream, as the server sees it."""

    def __init__(self, ssrc):
        self.ssrc = ssrc
        self.unwrap = SequenceUnwrapper()
        self.loss = LossMeter()
        self.frames = {}                 # ext ts -> payload
        self.by_seq = {}                 # ext seq -> (ext ts, rtp timestamp)
        self.unwrap_ts = TimestampUnwrapper()
        self.step = 960                  # samples per frame, learned
        self.payload_type = PT_OPUS      # of the media frames (inside RED too), learned
        self.last_seq = None             # (ext seq, ext ts) of the newest packet
        self.last_report = 0.0
        self.lossy = False
        self.last_arrival = None
        self.missing = {}                # ext seq -> [ext ts, first missed, nacks, last nack]

    def trim(self, newest_ext):
        horizon = newest_ext - int(CACHE_S * 48000)
        if len(self.frames) > 3 * CACHE_S * 50:
            for ts in [t for t in self.frames if t < horizon]:
                del self.frames[ts]
            for seq in [s for s, (t, _) in self.by_seq.items() if t < horizon]:
                del self.by_seq[seq]


def _media_packet(payload_type, seq, timestamp, ssrc, payload, older, marker=False):
    """The packet for one frame: RED carrying the ``older`` blocks before it
    when there are any (the oldest left out if too long), else the bare frame."""
    if older:
        payload = encode_red_within(older + [RedBlock(payload_type, timestamp, payload)],
                                    timestamp, MAX_RED_PAYLOAD)
        payload_type = PT_RED
    return RtpPacket(payload_type=payload_type, sequence_number=seq, timestamp=timestamp,
                     ssrc=ssrc, marker=marker, payload=payload)


class _Member:
    def __init__(self, uid, channel, role, addr, ssrc, claims, now, rate):
        self.uid = uid
        self.channel = channel
        self.role = role
        self.addr = addr
        self.ssrc = ssrc
        self.claims = claims
        self.last_seen = now
        self.warned = False
        self.redundancy = ReceiverRedundancy()     # from this member's reports
        self.bucket = _Bucket(rate, rate, level=rate, stamp=now)


class _Channel:
    def __init__(self, name):
        self.name = name
        self.members = {}                # uid -> _Member
        self.groups = {}                 # sender uid -> {RED depth: [addresses]}
        self.streams = {}                # ssrc -> _Stream

    def hosts(self):
        return [m for m in self.members.values() if m.role == "host"]


class Server:
    """A channel server on one UDP port.

    ``secret``: bytes or str, the token secret.  ``max_hosts``: hosts per
    channel.  ``member_timeout_s``: a member silent this long is dropped and
    reported offline.  ``rate_limit_pps``: packets per second accepted from
    one address (bursts of the same size); the rest are dropped.

    Use ``start()``/``stop()`` (a background thread) or ``with Server(...) as
    s:``; ``run()`` serves in the calling thread until ``stop()``.
    """

    def __init__(self, host="127.0.0.1", port=0, secret=None, *, max_hosts=17,
                 member_timeout_s=10.0, rate_limit_pps=400):
        if secret is None or len(secret) == 0:
            raise ValueError("the server needs a non-empty secret (bytes or str) to check tokens")
        if not 1 <= max_hosts <= 128:
            raise ValueError(f"max_hosts must be in 1..128, got {max_hosts}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        self.host = host
        self.port = port
        self.secret = secret
        self.max_hosts = max_hosts
        self.member_timeout_s = member_timeout_s
        self.rate_limit_pps = rate_limit_pps
        self.counters = collections.Counter()
        self.address = None
        self._members = {}               # addr -> _Member
        self._channels = {}              # name -> _Channel
        self._strangers = {}             # addr -> _Bucket, for non-members (bounded)
        self._loop = None
        self._transport = None
        self._sock = None
        self._thread = None
        self._ready = threading.Event()
        self._stopping = None
        self._error = None

    # ------------------------------------------------------------- lifecycle

    def start(self, timeout=5.0):
        """Serve in a background thread; returns once the socket is bound."""
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
        """Stop serving and close the socket (idempotent)."""
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
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET,
                             socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.bind((self.host, self.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Protocol(self), sock=sock)
        self.address = self._transport.get_extra_info("sockname")[:2]
        self._ready.set()
        ticker = asyncio.ensure_future(self._tick())
        nacker = asyncio.ensure_future(self._nack_uplinks())
        try:
            await self._stopping.wait()
        finally:
            ticker.cancel()
            nacker.cancel()
            self._transport.close()

    # ------------------------------------------------------------- helpers

    def _send(self, data, addr):
        # The socket's own sendto: asyncio's transport adds a few checks per
        # packet, which fan-out to a thousand members pays a thousand times.
        # When the kernel's buffer is full the transport queues the rest.
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._transport.sendto(data, addr)
        except OSError:
            self.counters["send_errors"] += 1

    def _send_msg(self, msg, addr):
        self._send(msg.encode(), addr)

    def _broadcast(self, channel, msg, exclude=None):
        data = msg.encode()
        for m in channel.members.values():
            if m.uid != exclude:
                self._send(data, m.addr)

    def members(self, channel):
        """``{uid: role}`` of a channel's members (a snapshot; empty when none)."""
        ch = self._channels.get(channel)
        return {} if ch is None else {uid: m.role for uid, m in ch.members.items()}

    # ------------------------------------------------------------- datagrams

    def datagram_received(self, data, addr):
        now = time.monotonic()
        member = self._members.get(addr)
        if member is not None:
            if not member.bucket.allow(now):
                self.counters["dropped_rate_limited"] += 1
                return
            member.last_seen = now
        elif not control.is_control(data):
            # Only a stranger's control messages cost work (a join checks a token), so
            # only they spend its budget: its media, e.g. a host's stream arriving from
            # a new address after a NAT rebinding, must not crowd out its new Join.
            self.counters["dropped_not_member"] += 1
            return
        else:
            bucket = self._strangers.get(addr)
            if bucket is None:
                if len(self._strangers) > 10000:
                    self._strangers.clear()
                bucket = self._strangers[addr] = _Bucket(20.0, 20.0, 20.0, now)
            if not bucket.allow(now):
                self.counters["dropped_rate_limited"] += 1
                return
        if control.is_control(data):
            try:
                msg = control.decode(data)
            except control.ControlError:
                self.counters["dropped_malformed"] += 1
                return
            self._on_control(msg, addr, member, now)
        elif member is None:
            self.counters["dropped_not_member"] += 1
        elif member.role != "host":
            self.counters["dropped_audience"] += 1
        else:
            try:
                packet = RtpPacket.parse(data)
            except PacketError:
                self.counters["dropped_malformed"] += 1
                return
            if packet.ssrc != member.ssrc:
                self.counters["dropped_wrong_ssrc"] += 1
                return
            self._on_media(member, packet, now)

    # ------------------------------------------------------------- control

    def _on_control(self, msg, addr, member, now):
        handler = {Join: self._on_join, Leave: self._on_leave, SetRole: self._on_set_role,
                   RenewToken: self._on_renew, Ping: self._on_ping,
                   ReceiverReport: self._on_report, Nack: self._on_nack}.get(type(msg))
        if handler is None:
            self.counters["dropped_unexpected"] += 1
            return
        if member is None and handler != self._on_join:
            if not isinstance(msg, (Ping, Leave)):
                self._send_msg(Refused(getattr(msg, "request_id", 0), "not_joined",
                                       "join the channel first"), addr)
            self.counters["dropped_not_member"] += 1
            return
        handler(msg, addr, member, now) if handler == self._on_join else handler(msg, member, now)

    def _refuse(self, addr, request_id, code, reason):
        self.counters[f"refused_{code}"] += 1
        self._send_msg(Refused(request_id, code, reason), addr)

    def _on_join(self, msg, addr, member, now):
        try:
            claims = verify_token(self.secret, msg.token, msg.channel, msg.uid, now=time.time())
        except TokenError as exc:
            self._refuse(addr, msg.request_id, exc.code, str(exc))
            return
        if msg.role == "host" and not claims.can_publish:
            self._refuse(addr, msg.request_id, "no_publish_privilege",
                         "this token lets the user join as audience only")
            return
        channel = self._channels.get(msg.channel)
        old = channel.members.get(msg.uid) if channel else None
        if member is not None and (member.uid != msg.uid or member.channel is not channel):
            # One address, one member: joining elsewhere leaves the old channel.
            self._remove(member, "user_left", "joined another channel")
            channel = self._channels.get(msg.channel)
            old = channel.members.get(msg.uid) if channel else None
        if msg.role == "host" and channel is not None:
            hosts = [m for m in channel.hosts() if m.uid != msg.uid]
            if len(hosts) >= self.max_hosts:
                self._refuse(addr, msg.request_id, "too_many_hosts",
                             f"channel {msg.channel!r} already has {self.max_hosts} hosts "
                             f"(the most allowed); join as audience")
                return
        if channel is not None and msg.ssrc != 0 and any(
                m.ssrc == msg.ssrc and m.uid != msg.uid for m in channel.members.values()):
            self._refuse(addr, msg.request_id, "bad_request",
                         f"SSRC {msg.ssrc} is already used in this channel; pick another")
            return
        if channel is None:
            channel = self._channels[msg.channel] = _Channel(msg.channel)
        was_host = old is not None and old.role == "host"
        if old is not None:
            # The same user again, maybe from a new address: it keeps its uid.
            self._members.pop(old.addr, None)
            if old.ssrc != msg.ssrc:
                channel.streams.pop(old.ssrc, None)
        new = _Member(msg.uid, channel, msg.role, addr, msg.ssrc, claims, now,
                      self.rate_limit_pps)
        channel.members[msg.uid] = new
        channel.groups.clear()
        self._members[addr] = new
        self._strangers.pop(addr, None)
        if msg.role == "host":
            channel.streams.setdefault(msg.ssrc, _Stream(msg.ssrc))
        hosts = tuple((m.uid, m.ssrc) for m in channel.hosts() if m.uid != msg.uid)
        self._send_msg(Joined(msg.request_id, msg.uid, msg.role, int(claims.expires_at), hosts),
                       addr)
        self.counters["joined"] += 1
        if msg.role == "host" and not (was_host and old.ssrc == msg.ssrc):
            self._broadcast(channel, Event("user_joined", msg.uid, "host", msg.ssrc, ""),
                            exclude=msg.uid)
        elif was_host and msg.role != "host":
            self._broadcast(channel, Event("role_changed", msg.uid, msg.role, msg.ssrc, ""),
                            exclude=msg.uid)

    def _on_leave(self, msg, member, now):
        self._remove(member, "user_left", "left the channel")

    def _remove(self, member, kind, reason):
        channel = member.channel
        self._members.pop(member.addr, None)
        if channel.members.get(member.uid) is member:
            del channel.members[member.uid]
            channel.groups.clear()
            channel.streams.pop(member.ssrc, None)
            if member.role == "host":
                self._broadcast(channel, Event(kind, member.uid, member.role, member.ssrc, reason))
        if not channel.members:
            self._channels.pop(channel.name, None)

    def _on_set_role(self, msg, member, now):
        claims = member.claims
        if msg.token:
            try:
                claims = verify_token(self.secret, msg.token, member.channel.name, member.uid,
                                      now=time.time())
            except TokenError as exc:
                self._refuse(member.addr, msg.request_id, exc.code, str(exc))
                return
        if msg.role == "host":
            if not claims.can_publish:
                self._refuse(member.addr, msg.request_id, "no_publish_privilege",
                             "the token does not allow publishing; renew it with a host token")
                return
            if member.role != "host" and len(member.channel.hosts()) >= self.max_hosts:
                self._refuse(member.addr, msg.request_id, "too_many_hosts",
                             f"channel {member.channel.name!r} already has {self.max_hosts} hosts")
                return
        member.claims = claims
        member.warned = False
        changed = member.role != msg.role
        member.role = msg.role
        channel = member.channel
        if msg.role == "host":
            channel.streams.setdefault(member.ssrc, _Stream(member.ssrc))
        else:
            channel.streams.pop(member.ssrc, None)
        self._send_msg(RoleChanged(msg.request_id, member.uid, msg.role), member.addr)
        if changed:
            kind = "user_joined" if msg.role == "host" else "role_changed"
            self._broadcast(channel, Event(kind, member.uid, msg.role, member.ssrc, ""),
                            exclude=member.uid)

    def _on_renew(self, msg, member, now):
        try:
            claims = verify_token(self.secret, msg.token, member.channel.name, member.uid,
                                  now=time.time())
        except TokenError as exc:
            self._refuse(member.addr, msg.request_id, exc.code, str(exc))
            return
        if member.role == "host" and not claims.can_publish:
            self._refuse(member.addr, msg.request_id, "no_publish_privilege",
                         "a host needs a token that allows publishing")
            return
        member.claims = claims
        member.warned = False
        self._send_msg(TokenRenewed(msg.request_id, int(claims.expires_at)), member.addr)

    def _on_ping(self, msg, member, now):
        self._send_msg(Pong(msg.send_time), member.addr)

    def _on_report(self, msg, member, now):
        before = member.redundancy.depth
        streams = member.channel.streams
        for block in msg.reports:
            if block.ssrc not in streams:       # no stream of this channel: nothing to size
                continue
            member.redundancy.add(now, block.ssrc, block.fraction_lost, block.burst,
                                  block.highest_seq, block.cumulative_lost)
        if member.redundancy.depth != before:
            member.channel.groups.clear()

    def _on_nack(self, msg, member, now):
        """Resend the frames a listener asks for.  Each answer is a RED packet
        that also carries the older frames of the same request, so on a lossy
        path the first answer to arrive fills the whole gap; on a very lossy
        one each answer goes out in several copies."""
        stream = member.channel.streams.get(msg.ssrc)
        if stream is None or stream.last_seq is None:
            return
        newest_seq = stream.last_seq[0]
        found = []                       # (ext ts, 16-bit seq, rtp timestamp)
        for seq in msg.sequence_numbers:
            ext = newest_seq + seq_diff(seq, newest_seq % 2**16)
            entry = stream.by_seq.get(ext)
            if entry is None or entry[0] not in stream.frames:
                self.counters["nack_misses"] += 1
                continue
            found.append((entry[0], seq, entry[1]))
        found.sort()
        loss = member.redundancy.fraction_lost
        copies = 1 + (loss >= 0.3) + (loss >= 0.5)
        pt = stream.payload_type
        for k, (ext_ts, seq, ts) in enumerate(found):
            older = [RedBlock(pt, t, stream.frames[e]) for e, _, t in found[:k]
                     if 0 < ext_ts - e <= MAX_TS_OFFSET]
            data = _media_packet(pt, seq, ts, msg.ssrc, stream.frames[ext_ts], older).serialize()
            for _ in range(copies):
                self._send(data, member.addr)
            self.counters["retransmitted"] += copies

    # ------------------------------------------------------------- media

    def _on_media(self, member, packet, now):
        channel = member.channel
        stream = channel.streams.get(member.ssrc)
        if stream is None:
            stream = channel.streams[member.ssrc] = _Stream(member.ssrc)
        if packet.payload_type == PT_RED:
            try:
                blocks = decode_red(packet.payload, packet.timestamp)
            except PacketError:
                self.counters["dropped_malformed"] += 1
                return
        else:
            blocks = [RedBlock(packet.payload_type, packet.timestamp, packet.payload)]
        stream.payload_type = blocks[-1].payload_type
        ext_seq = stream.unwrap.unwrap(packet.sequence_number)
        primary_ext = stream.unwrap_ts.unwrap(packet.timestamp)
        if primary_ext in stream.frames:
            self.counters["dropped_duplicate"] += 1
            return
        asked = stream.missing.pop(ext_seq, None)
        if asked is None or asked[2] == 0:
            # A retransmission we asked for is no sign of a healthy path.
            stream.loss.add(ext_seq)
        else:
            self.counters["uplink_retransmissions"] += 1
        stream.last_arrival = now
        if stream.last_seq is not None:
            last_seq, last_ts = stream.last_seq
            if ext_seq - last_seq == 1 and 0 < primary_ext - last_ts <= 5760:
                stream.step = primary_ext - last_ts
            for seq in range(max(last_seq + 1, ext_seq - 32), ext_seq):
                ts = primary_ext - (ext_seq - seq) * stream.step
                if ts not in stream.frames and seq not in stream.missing:
                    stream.missing[seq] = [ts, now, 0, -math.inf]
        if stream.last_seq is None or ext_seq > stream.last_seq[0]:
            stream.last_seq = (ext_seq, primary_ext)
        stream.by_seq[ext_seq] = (primary_ext, packet.timestamp)
        recovered = []
        for block in blocks[:-1]:
            ext = primary_ext - ((packet.timestamp - block.timestamp) % 2**32)
            if ext not in stream.frames:
                stream.frames[ext] = block.payload
                recovered.append(ext)
        stream.frames[primary_ext] = blocks[-1].payload
        if recovered and stream.missing:
            got = set(recovered)
            for seq in [q for q, e in stream.missing.items() if e[0] in got]:
                del stream.missing[seq]
        self.counters["recovered_uplink"] += len(recovered)
        stream.trim(primary_ext)
        self._forward(channel, member, stream, packet, primary_ext, recovered)

    def _forward(self, channel, sender, stream, packet, primary_ext, recovered):
        by_depth = channel.groups.get(sender.uid)
        if by_depth is None:
            # Receivers grouped by the RED depth they need, cached until the
            # channel's members or their depths change.
            by_depth = {}
            for m in channel.members.values():
                if m is not sender:
                    by_depth.setdefault(m.redundancy.depth, []).append(m.addr)
            channel.groups[sender.uid] = by_depth
        payload_type = stream.payload_type
        for depth, addrs in by_depth.items():
            wanted = set(recovered)
            for k in range(1, depth + 1):
                ext = primary_ext - k * stream.step
                if ext in stream.frames:
                    wanted.add(ext)
            wanted = sorted(e for e in wanted if 0 < primary_ext - e <= MAX_TS_OFFSET)
            older = [RedBlock(payload_type, (packet.timestamp - (primary_ext - e)) % 2**32,
                              stream.frames[e]) for e in wanted]
            data = _media_packet(payload_type, packet.sequence_number, packet.timestamp,
                                 packet.ssrc, stream.frames[primary_ext], older,
                                 packet.marker).serialize()
            for addr in addrs:
                self._send(data, addr)
            self.counters["forwarded"] += len(addrs)

    # ------------------------------------------------------------- housekeeping

    async def _tick(self):
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            wall = time.time()
            for member in list(self._members.values()):
                if now - member.last_seen > self.member_timeout_s:
                    self.counters["timed_out"] += 1
                    self._remove(member, "user_offline", "timeout")
                    continue
                left = member.claims.expires_at - wall
                if left <= 0:
                    self._send_msg(Event("removed", member.uid, member.role, member.ssrc,
                                         "token expired"), member.addr)
                    self.counters["expired"] += 1
                    self._remove(member, "user_offline", "token expired")
                elif left <= EXPIRY_WARNING_S and not member.warned:
                    member.warned = True
                    self._send_msg(Event("token_will_expire", member.uid, member.role,
                                         member.ssrc, f"the token expires in {math.ceil(left)} s"),
                                   member.addr)
            self._report_uplinks(now)

    async def _nack_uplinks(self):
        """Ask hosts to resend what their uplink lost, while it can still be used.

        A gap in a host's sequence numbers, or nothing from a host for more
        than two frame times (the only way to learn of a loss burst while it
        lasts), is asked for every UPLINK_NACK_S, a few times; the host
        answers from the packets it sent last.  RED usually recovers the
        frames when the next packet comes; a retransmission makes it sooner.
        """
        while True:
            await asyncio.sleep(UPLINK_NACK_S)
            now = time.monotonic()
            for channel in list(self._channels.values()):
                for m in channel.hosts():
                    stream = channel.streams.get(m.ssrc)
                    if stream is None or stream.last_seq is None:
                        continue
                    self._nack_uplink(m, stream, now)

    def _nack_uplink(self, member, stream, now):
        last_seq, last_ts = stream.last_seq
        silent = now - stream.last_arrival
        overdue = int(silent * CLOCK_RATE / stream.step) - 1
        if silent < 1.0:
            for i in range(1, min(overdue, 16) + 1):
                if last_seq + i not in stream.missing:
                    stream.missing[last_seq + i] = [last_ts + i * stream.step, -math.inf, 0,
                                                    -math.inf]
        asked = []
        for seq, entry in list(stream.missing.items()):
            ts, first, tries, last = entry
            if tries >= UPLINK_NACK_TRIES or ts in stream.frames:
                del stream.missing[seq]
                continue
            if now - first < 0.003 or now - last < UPLINK_NACK_S:
                continue
            entry[2] += 1
            entry[3] = now
            asked.append(seq & 0xFFFF)
        if asked:
            self.counters["uplink_nacks"] += len(asked)
            self._send_msg(Nack(member.ssrc, tuple(asked[:control.MAX_NACKS])), member.addr)

    def _report_uplinks(self, now):
        """Tell each host how its uplink fares: every half second, or every 0.1 s
        while it is losing packets (so its redundancy rises quickly)."""
        for channel in self._channels.values():
            for m in channel.hosts():
                stream = channel.streams.get(m.ssrc)
                if stream is None:
                    continue
                interval = LOSSY_REPORT_INTERVAL_S if stream.lossy else REPORT_INTERVAL_S
                if now - stream.last_report < interval:
                    continue
                stream.last_report = now
                loss = stream.loss.report()
                if loss is None:
                    continue
                stream.lossy = loss[0] > 0.0
                block = ReportBlock(m.ssrc, loss[0], (stream.loss.highest or 0) % 2**32, 0.0,
                                    burst=loss[1],
                                    cumulative_lost=stream.loss.cumulative_lost % 2**32)
                self._send_msg(ReceiverReport((block,)), m.addr)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server):
        self.server = server

    def datagram_received(self, data, addr):
        try:
            self.server.datagram_received(data, addr[:2])
        except Exception:      # one bad datagram must never stop the server
            self.server.counters["internal_errors"] += 1
            log.exception("error handling a datagram from %s", addr)

    def error_received(self, exc):
        self.server.counters["socket_errors"] += 1

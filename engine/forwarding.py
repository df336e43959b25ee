"""The server's forwarding state, with no I/O: each host's uplink stream
cache, the packets built for listeners from it, and the answers to their
retransmission requests.

Bounded work and memory whatever a host sends: a RED packet is unpacked only
up to ``MAX_DEPTH + 1`` blocks; the cache keeps frames no older than
``CACHE_S`` behind the newest timestamp seen, at most ``MAX_CACHE_FRAMES``
frames and ``MAX_CACHE_BYTES`` bytes, trimmed from the newest timestamp (a
stream whose timestamps run backwards stores nothing new); frames too large
for RED travel without it.
"""

from .feedback import MAX_DEPTH, MAX_RED_PAYLOAD, LossMeter
from .nack import MissingPackets
from .red import MAX_TS_OFFSET, RedBlock, decode_red, encode_red_within
from .rtp import (CLOCK_RATE, PT_OPUS, PT_RED, RtpPacket, SequenceUnwrapper,
                  TimestampUnwrapper, seq_diff, ts_add, ts_diff)

#: Seconds of frames kept per stream for redundancy and retransmission.
CACHE_S = 1.0
#: Frames and bytes kept per stream at most (1 s of 10 ms frames, with room).
MAX_CACHE_FRAMES = 160
MAX_CACHE_BYTES = 160 * 1024
#: Sequence numbers remembered per stream (for retransmission requests).
MAX_SEQ_KEPT = 256
#: Earlier requested frames each retransmission carries besides its own.
RTX_RED_DEPTH = 3
#: Largest step between frames learned from a stream, samples (120 ms).
MAX_STEP = 5760


class UplinkStream:
    """One host's published stream as the server holds it."""

    def __init__(self, ssrc):
        self.ssrc = ssrc
        self.unwrap = SequenceUnwrapper()
        self.unwrap_ts = TimestampUnwrapper()
        self.loss = LossMeter()
        self.frames = {}                 # ext ts -> payload
        self.frame_bytes = 0
        self.by_seq = {}                 # ext seq -> (ext ts, rtp timestamp)
        self.step = 960                  # samples per frame, learned
        self.payload_type = PT_OPUS      # of the media frames (inside RED too), learned
        self.last_seq = None             # (ext seq, ext ts) of the newest packet
        self.newest_ts = None
        self.last_report = 0.0
        self.lossy = False
        self.last_arrival = None
        self.missing = MissingPackets(max_gap=32)
        self._since_trim = 0             # packets since the cache was last trimmed

    def add(self, packet, now):
        """Take one packet of the host's.  Returns ``(primary_ext, recovered)``
        (the packet's frame timestamp, extended, and the timestamps of frames
        its RED blocks brought that were missing), or a string saying why the
        packet was dropped: ``"malformed"``, ``"duplicate"`` or ``"stale"``.
        """
        if packet.payload_type == PT_RED:
            try:
                blocks = decode_red(packet.payload, packet.timestamp, max_blocks=MAX_DEPTH + 1)
            except ValueError:
                return "malformed"
        else:
            blocks = [RedBlock(packet.payload_type, packet.timestamp, packet.payload)]
        primary_ext = self.unwrap_ts.unwrap(packet.timestamp)
        if primary_ext in self.frames:
            return "duplicate"
        if self.newest_ts is not None and primary_ext < self.newest_ts - CACHE_S * CLOCK_RATE:
            return "stale"
        ext_seq = self.unwrap.unwrap(packet.sequence_number)
        self.payload_type = blocks[-1].payload_type
        asked = self.missing.tries(ext_seq)
        self.missing.arrived(ext_seq)
        if asked == 0:
            # A retransmission we asked for is no sign of a healthy path.
            self.loss.add(ext_seq)
        self.last_arrival = now
        if self.last_seq is not None:
            last_seq, last_ts = self.last_seq
            if ext_seq - last_seq == 1 and 0 < primary_ext - last_ts <= MAX_STEP:
                self.step = primary_ext - last_ts
            if ext_seq > last_seq + 1:
                self.missing.gap(last_seq, ext_seq, primary_ext, self.step, now,
                                 has_frame=self.frames.__contains__)
        if self.last_seq is None or ext_seq > self.last_seq[0]:
            self.last_seq = (ext_seq, primary_ext)
        if self.newest_ts is None or primary_ext > self.newest_ts:
            self.newest_ts = primary_ext
        self.by_seq[ext_seq] = (primary_ext, packet.timestamp)
        recovered = []
        for block in blocks[:-1]:
            ext = primary_ext - ts_diff(packet.timestamp, block.timestamp)
            if ext not in self.frames:
                self._keep(ext, block.payload)
                recovered.append(ext)
        self._keep(primary_ext, blocks[-1].payload)
        if recovered and len(self.missing):
            self.missing.forget_frames(recovered)
        self._trim()
        return primary_ext, recovered

    def _keep(self, ext, payload):
        self.frames[ext] = payload
        self.frame_bytes += len(payload)

    def _trim(self):
        # By time every 16 packets; at once when over a limit in entries or bytes.
        self._since_trim += 1
        horizon = self.newest_ts - CACHE_S * CLOCK_RATE
        if (len(self.frames) > MAX_CACHE_FRAMES or self.frame_bytes > MAX_CACHE_BYTES
                or self._since_trim >= 16):
            self._since_trim = 0
            for ts in sorted(self.frames):
                if (ts >= horizon and len(self.frames) <= MAX_CACHE_FRAMES
                        and self.frame_bytes <= MAX_CACHE_BYTES):
                    break
                self.frame_bytes -= len(self.frames.pop(ts))
        if len(self.by_seq) > MAX_SEQ_KEPT:
            low = self.last_seq[0] - MAX_SEQ_KEPT // 2
            for seq in [s for s in self.by_seq if s < low]:
                del self.by_seq[seq]

    def forward(self, packet, primary_ext, recovered, depth):
        """The packet (bytes) that carries this frame to a listener at RED
        ``depth``: the ``depth`` frames before it and any just recovered."""
        wanted = set(recovered)
        for k in range(1, min(depth, MAX_DEPTH) + 1):
            ext = primary_ext - k * self.step
            if ext in self.frames:
                wanted.add(ext)
        older = [RedBlock(self.payload_type, ts_add(packet.timestamp, e - primary_ext),
                          self.frames[e])
                 for e in sorted(wanted) if 0 < primary_ext - e <= MAX_TS_OFFSET]
        return media_packet(self.payload_type, packet.sequence_number, packet.timestamp,
                            packet.ssrc, self.frames[primary_ext], older,
                            packet.marker).serialize()

    def retransmissions(self, sequence_numbers, skip=None):
        """The packets (bytes) answering a request for ``sequence_numbers``
        (16-bit) of this stream, oldest first: one per frame found, as RED
        carrying up to ``RTX_RED_DEPTH`` earlier requested frames besides its
        own (on a lossy path the first answer to arrive fills most of the
        gap), so the answer is at most ``RTX_RED_DEPTH + 1`` times the frames
        asked for.  ``skip(ext_seq)`` True leaves a number out (answered just
        before).  Returns ``(packets, ext_seqs, misses)``."""
        if self.last_seq is None:
            return [], [], len(sequence_numbers)
        newest_seq = self.last_seq[0]
        found = {}
        misses = 0
        for seq in sequence_numbers:
            ext = newest_seq + seq_diff(seq, newest_seq & 0xFFFF)
            entry = self.by_seq.get(ext)
            if entry is None or entry[0] not in self.frames:
                misses += 1
                continue
            if skip is not None and skip(ext):
                continue
            found[entry[0]] = (ext, entry[1])
        order = sorted(found)
        pt = self.payload_type
        packets = []
        for k, ext_ts in enumerate(order):
            ext, ts = found[ext_ts]
            older = [RedBlock(pt, found[e][1], self.frames[e])
                     for e in order[max(0, k - RTX_RED_DEPTH):k]]
            packets.append(media_packet(pt, ext & 0xFFFF, ts, self.ssrc, self.frames[ext_ts],
                                        older).serialize())
        return packets, [found[e][0] for e in order], misses

    def overdue_count(self, now):
        """Frames overdue since the last packet (nothing came for that long)."""
        silent = now - self.last_arrival
        return int(silent * CLOCK_RATE / self.step) - 1 if silent < 1.0 else 0


def media_packet(payload_type, seq, timestamp, ssrc, payload, older, marker=False):
    """The RTP packet for one frame: RED carrying the ``older`` blocks before
    it when there are any that RED can carry, else the bare frame."""
    if older:
        body = encode_red_within(older + [RedBlock(payload_type, timestamp, payload)],
                                 timestamp, MAX_RED_PAYLOAD)
        if len(body) != len(payload) + 1:
            return RtpPacket(payload_type=PT_RED, sequence_number=seq, timestamp=timestamp,
                             ssrc=ssrc, marker=marker, payload=body)
    return RtpPacket(payload_type=payload_type, sequence_number=seq, timestamp=timestamp,
                     ssrc=ssrc, marker=marker, payload=payload)


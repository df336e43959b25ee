"""The publishing half of a client: encoding, sequencing, RED history, the
FEC policy, end-to-end sealing and the retransmission store.  No I/O: it
turns 48 kHz frames into RTP packets (bytes) and answers retransmission
requests from what it sent last.
"""

import collections
import random

from .codec import make_encoder
from .feedback import MAX_DEPTH, MAX_RED_PAYLOAD, RedundancyControl
from .red import MAX_TS_OFFSET, RedBlock, encode_red_within
from .rtp import PT_OPUS, PT_RED, PT_SEALED_OPUS, RtpPacket, seq_add, ts_add, ts_diff

#: Loss percentage the Opus encoder is told when the uplink is lossy (see set_fec).
FEC_LOSS_PCT = 5
#: Sent packets kept for the server's retransmission requests (1.3 s of 20 ms
#: frames); each is sent again at most MAX_RESENDS times.
SENT_KEPT = 64
MAX_RESENDS = 8


class Sender:
    """Encodes and packetizes one published stream.

    ``codec``: ``"opus"`` or ``"pcm"``; ``bitrate`` in bits per second (Opus);
    ``frame_ms``: 10 or 20; ``ssrc``: the stream's RTP source;
    ``application``: the Opus application (``"voip"`` or ``"audio"``).
    """

    def __init__(self, codec, channels, bitrate, frame_ms, ssrc, application="voip"):
        self.codec = codec
        self.ssrc = ssrc
        self.frame_ms = frame_ms
        self._make_encoder(channels, bitrate, application)
        self.uplink = RedundancyControl()       # RED depth from the server's reports
        self.stats = collections.Counter()
        self.encryptor = None                   # an e2ee.FrameEncryptor, when on
        # Sealed frames are bound to the stream: a member holding the channel
        # key cannot pass its frames off as another host's.
        self._ssrc_bytes = ssrc.to_bytes(4, "big")
        self._seq = random.randrange(2**16)
        self._ts = random.randrange(2**32)
        self._history = collections.deque(maxlen=MAX_DEPTH)
        self._sent = {}                         # sequence number -> [packet, resends]
        self._fec_on = False

    def _make_encoder(self, channels, bitrate, application):
        if self.codec == "opus":
            self.encoder = make_encoder(self.codec, channels=channels, bitrate=bitrate,
                                        frame_ms=self.frame_ms, application=application)
        else:
            self.encoder = make_encoder(self.codec, channels=channels, frame_ms=self.frame_ms)
        self.channels = channels
        self.bitrate = bitrate
        self.frame_samples = self.encoder.frame_samples

    def set_profile(self, channels, bitrate, application):
        """Encode from now on with ``channels``, ``bitrate`` (bit/s) and the Opus
        ``application``: a new encoder; sequence numbers and timestamps run on,
        redundancy starts afresh."""
        self._make_encoder(channels, bitrate, application)
        self._history.clear()
        self._fec_on = False

    def set_encryptor(self, encryptor):
        """Seal every frame with ``encryptor`` (``e2ee.FrameEncryptor``; None: off).
        Only Opus frames are sealed; redundancy starts afresh."""
        if encryptor is not None and self.codec != "opus":
            raise ValueError("end-to-end encryption needs the opus codec")
        self.encryptor = encryptor
        self._history.clear()

    def skip(self, frame_samples):
        """A frame not sent (muted, not a host): time moves on, redundancy restarts."""
        self._ts = ts_add(self._ts, frame_samples)
        self._history.clear()

    def packet(self, frame):
        """Encode one frame (float32 ``(channels, frame_samples)`` at 48 kHz) into
        the RTP packet to send (bytes), with the RED depth the uplink calls for."""
        if self.codec == "opus":
            self.set_fec(self.uplink.fraction_lost)
        return self._packetize(self.encoder.encode(frame), self.encoder.payload_type,
                               frame.shape[1])

    def encoded_packet(self, payload, samples):
        """The RTP packet (bytes) for an Opus ``payload`` encoded elsewhere,
        ``samples`` long at 48 kHz, as ``packet`` makes it for its own.
        Raises ``ValueError`` on a sender of another codec."""
        if self.codec != "opus":
            raise ValueError(f"encoded packets are Opus; this sender sends {self.codec!r}")
        return self._packetize(bytes(payload), PT_OPUS, samples)

    def _packetize(self, payload, pt, samples):
        ts = self._ts
        self._ts = ts_add(ts, samples)
        codec_bytes = len(payload)
        if self.encryptor is not None:
            payload = self.encryptor.encrypt(payload, metadata=self._ssrc_bytes)
            pt = PT_SEALED_OPUS
        depth = min(self.uplink.depth, len(self._history))
        if depth:
            blocks = [RedBlock(p_t, t, p) for p_t, t, p in list(self._history)[-depth:]
                      if 0 < ts_diff(ts, t) <= MAX_TS_OFFSET]
            blocks.append(RedBlock(pt, ts, payload))
            body, body_pt = encode_red_within(blocks, ts, MAX_RED_PAYLOAD), PT_RED
        else:
            body, body_pt = payload, pt
        self._history.append((pt, ts, payload))
        packet = RtpPacket(payload_type=body_pt, sequence_number=self._seq, timestamp=ts,
                           ssrc=self.ssrc, payload=body)
        self._seq = seq_add(self._seq, 1)
        data = packet.serialize()
        self._sent[packet.sequence_number] = [data, 0]
        if len(self._sent) > SENT_KEPT:
            del self._sent[next(iter(self._sent))]
        self.stats["packets_sent"] += 1
        self.stats["rtp_bytes_sent"] += len(data)
        self.stats["payload_bytes_sent"] += len(body)
        self.stats["codec_bytes_sent"] += codec_bytes
        return data

    def retransmissions(self, sequence_numbers):
        """The kept packets for the requested 16-bit ``sequence_numbers`` (each
        number once per request, each packet at most MAX_RESENDS times)."""
        out = []
        for seq in dict.fromkeys(sequence_numbers):
            entry = self._sent.get(seq)
            if entry is None or entry[1] >= MAX_RESENDS:
                continue
            entry[1] += 1
            out.append(entry[0])
        self.stats["packets_retransmitted"] += len(out)
        return out

    def on_report(self, block, now):
        """A receiver report from the server about this stream."""
        self.uplink.add(now, block.fraction_lost, block.burst, block.highest_seq,
                        block.cumulative_lost)

    def set_fec(self, fraction_lost):
        """Opus in-band FEC for a lossy uplink, at a light setting.

        RED already carries whole copies of earlier frames; the in-band FEC
        (a low-rate copy of the previous frame inside each packet) is for the
        frames RED could not save.  Telling libopus the real loss would make
        it spend up to half the bits on that copy (at 30 % loss, STOI of the
        lossless decode falls from 0.993 to 0.958 at 32 kb/s), so it is told
        5 % and the bitrate rises by 12.5 % to pay for it (STOI 0.991).
        """
        lossy = fraction_lost > 0.01
        if lossy != self._fec_on:
            self._fec_on = lossy
            self.encoder.set_packet_loss_pct(FEC_LOSS_PCT if lossy else 0)
            self.encoder.set_bitrate(int(self.bitrate * (1.125 if lossy else 1.0)))


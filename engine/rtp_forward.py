"""RTP forward: a channel's mix (or one host of it) sent as plain RTP/Opus
(RFC 7587, no RED, no encryption) to one address, with the SDP file that
lets standard tools (ffmpeg, GStreamer, VLC) play it.

Sent only where asked: the address must be an IP literal (no name to
resolve), unicast and not unspecified; one 20 ms packet every 20 ms at the
bitrate asked, from a socket of its own that never blocks (a full socket
buffer drops and counts, ``rtp_forward_dropped``).
"""

import ipaddress
import os
import secrets
import socket
import tempfile

import numpy as np

from .channel_mix import Transcoding, mix_down
from .codec import OpusEncoder
from .rtp import PT_OPUS, RtpPacket

#: Opus frame of the forwarded stream, ms, and its default bitrate, bit/s.
FRAME_MS = 20
BITRATE = 64000


def check_address(host, port):
    """``(host, port)`` as given if a forward may go there; ``ValueError``
    naming the problem otherwise."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"RTP forward host must be an IP address (127.0.0.1, ::1, ...), "
                         f"got {host!r}") from None
    if ip.is_multicast or ip.is_unspecified or str(ip) == "255.255.255.255":
        raise ValueError(f"RTP forward host must be one unicast address, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"RTP forward port must be an integer in 1..65535, got {port!r}")
    return str(ip), port


def sdp_text(host, port, channels, name):
    """The SDP (RFC 4566/7587) describing a forward to ``host``:``port``."""
    family = "IP6" if ":" in host else "IP4"
    stereo = "1" if channels == 2 else "0"
    return (f"v=0\r\no=- 0 0 IN {family} {host}\r\ns={name}\r\nc=IN {family} {host}\r\n"
            f"t=0 0\r\nm=audio {port} RTP/AVP {PT_OPUS}\r\n"
            f"a=rtpmap:{PT_OPUS} opus/48000/2\r\n"
            f"a=fmtp:{PT_OPUS} stereo={stereo}; sprop-stereo={stereo}\r\na=recvonly\r\n")


class RtpForward:
    """One forward of ``channel`` to ``host``:``port`` (``uid``: that host
    only, else the whole mix, mono).  ``sdp_path``: where the SDP goes (a new
    file in the temporary folder if None).  ``close()`` stops it and keeps
    the SDP file."""

    def __init__(self, channel, host, port, uid, counters, sdp_path=None, bitrate=BITRATE):
        self.host, self.port = check_address(host, port)
        self.uid = uid
        self._counters = counters
        self._transcoding = Transcoding(channels=1)
        self._encoder = OpusEncoder(channels=1, bitrate=bitrate, frame_ms=FRAME_MS,
                                    application="audio", fec=False)
        self._pending = np.zeros(0, np.float32)
        self._ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        if sdp_path is None:
            fd, sdp_path = tempfile.mkstemp(prefix="stagevox-rtp-", suffix=".sdp")
            os.close(fd)
        self.sdp_path = str(sdp_path)
        what = f"host {uid}" if uid is not None else "mix"
        with open(self.sdp_path, "w", encoding="ascii", newline="") as f:
            f.write(sdp_text(self.host, self.port, 1, f"stagevox {what} of {channel!r}"))

    def feed(self, frames):
        """Take a mix frame of the channel; sends a packet per 20 ms."""
        mix = mix_down(frames, self._transcoding, self.uid)[0]
        self._pending = np.concatenate([self._pending, mix])
        step = self._encoder.frame_samples
        while self._pending.size >= step:
            pcm, self._pending = self._pending[:step], self._pending[step:]
            packet = RtpPacket(payload_type=PT_OPUS, sequence_number=self._seq,
                               timestamp=self._ts, ssrc=self._ssrc,
                               payload=self._encoder.encode(pcm))
            self._seq = (self._seq + 1) & 0xFFFF
            self._ts = (self._ts + step) & 0xFFFFFFFF
            try:
                self._sock.sendto(packet.serialize(), (self.host, self.port))
                self._counters["rtp_forwarded"] += 1
            except OSError:              # buffer full, nobody listening (ICMP), ...
                self._counters["rtp_forward_dropped"] += 1

    def close(self):
        self._sock.close()


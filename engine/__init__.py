"""stagevox.engine: the live channel.

Hosts publish, the audience listens, anyone can be moved on stage::

    from stagevox import engine

    with engine.Server(secret="s3cret") as server:        # 127.0.0.1, a free port
        token = engine.make_token("s3cret", "room", 7, "host")
        alice = engine.Client()
        alice.join_channel(server.address, "room", 7, token, "host")
        alice.push_audio(frame)                            # 10 ms at a time
        ...
        bob.pull_audio(480)                                # what a listener hears

Modules: ``rtp`` (RFC 3550 packets), ``red`` (RFC 2198 redundancy),
``control`` (join/leave/roles/keep-alive/reports/NACK, the project's own
format), ``token`` (HMAC-SHA256 access tokens), ``codec`` (Opus through
ctypes, and L16 PCM), ``jitter`` (the adaptive jitter buffer), ``stretch``
(pitch-synchronous frame stretching), ``feedback`` (loss measurement and RED
depth), ``server`` (admission and forwarding, an SFU), ``client``, and ``cli``
(the ``stagevox server | token | host | listen`` commands).
"""

from .client import AudioFrameObserver, Client, RefusedError
from .codec import CodecError, OpusDecoder, OpusEncoder, load_libopus, make_decoder, make_encoder
from .control import ControlError
from .jitter import JitterBuffer
from .rtp import PacketError, RtpPacket
from .server import Server
from .token import TokenClaims, TokenError, make_token, verify_token

__all__ = [
    "AudioFrameObserver", "Client", "CodecError", "ControlError", "JitterBuffer",
    "OpusDecoder", "OpusEncoder", "PacketError", "RefusedError", "RtpPacket", "Server",
    "TokenClaims", "TokenError", "load_libopus", "make_decoder", "make_encoder", "make_token",
    "verify_token",
]

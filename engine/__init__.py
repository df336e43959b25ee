"""stagevox.engine: the live channel.

Hosts publish, the audience listens, anyone can be moved on stage::

    from stagevox import engine

    with engine.Server(secret="s3cret") as server:        # 127.0.0.1, a free port
        token = engine.make_token("s3cret", "room", 7, "host")
        alice = engine.Client()
        alice.join_channel(server.address, "room", 7, token, "host",
                           server_key=server.public_key)
        alice.push_audio(frame)                            # 10 ms at a time
        ...
        bob.pull_audio(480)                                # what a listener hears

Threat model: anyone can send any datagram with any source address; a
member may be malicious; a passive observer sees all traffic; tokens are
secrets of the member that holds them.  What the engine does about it is
told in ``server``'s docstring and the README's "Security" section.

Modules, one job each: ``rtp`` (RFC 3550 packets and sequence arithmetic),
``red`` (RFC 2198 redundancy), ``control`` (join/leave/roles/keep-alive/
reports/NACK/events, the project's own format), ``token`` (HMAC-SHA256
access tokens), ``session`` (the Noise NK handshake, cookies, sealed
datagrams, the anti-replay window), ``e2ee`` (end-to-end frame keys in the
manner of SFrame), ``transport`` (the UDP endpoint and periodic tasks of both
sides), ``codec`` (Opus through ctypes, and L16 PCM), ``sender`` (encoding,
RED history, FEC policy, retransmission store), ``receiver`` (per remote
host: jitter buffer, decoder choice, decryption, resampling), ``jitter``
(the adaptive jitter buffer), ``stretch`` (pitch-synchronous frame
stretching), ``nack`` (missing-packet tracking), ``feedback`` (loss
measurement and RED depth), ``forwarding`` (the server's uplink cache and
per-listener packets), ``profiles`` (audio profiles: channels, bitrate,
Opus application), ``media_source`` (a music file or URL decoded ahead on a
worker thread), ``music`` (music mixed into the published voice and the
local playout), ``sound_effects`` (short sounds over the voice),
``media_relay`` (a host's audio published in other channels: co-hosting,
PK), ``inject`` (an online stream published as a host), ``pacing``
(real-time deadlines), ``server`` and ``client`` (thin front ends), the
server's media bridges (``media_bridges``: which channels are mixed and for
what; ``channel_mix``: a channel's hosts decoded and mixed on a worker;
``mix_stream``: one host's fixed-delay reorder buffer for that mix;
``publish`` and ``publish_worker``: CDN push, AAC in FLV over RTMP;
``rtp_forward``: plain RTP/Opus and its SDP file), ``devices`` (sound cards
through PortAudio, driving a client from the card's callback), ``cli``,
``device_cli`` and ``publish_cli`` (the ``stagevox server | token | host |
listen | inject | gateway | talk | devices`` commands), and ``gateway`` (the
browser gateway, ``Gateway``: a web page and WebRTC bridged to a channel;
needs the ``gateway`` extra, and is imported on first use).

Errors come from ``stagevox.dsp.errors`` and are exported here too: unreadable
or unauthentic packets, messages and tokens raise ``ProtocolError`` subclasses
(``PacketError``, ``ControlError``, ``TokenError``), a refused request
``RefusedError``, all under ``StagevoxError``.
"""

from stagevox.dsp.errors import ParameterError, ProtocolError, RefusedError, StagevoxError

from .client import AudioFrameObserver, Client
from .codec import CodecError, OpusDecoder, OpusEncoder, load_libopus, make_decoder, make_encoder
from .control import ControlError
from .inject import StreamInjector
from .devices import DeviceError, DeviceInfo, DeviceLink, list_devices
from .jitter import JitterBuffer
from .media_relay import RelayDestination
from .rtp import PacketError, RtpPacket
from .server import Server
from .session import SessionError
from .token import TokenClaims, TokenError, make_token, read_claims, verify_token

__all__ = [
    "AudioFrameObserver", "Client", "CodecError", "ControlError", "DeviceError", "DeviceInfo",
    "DeviceLink", "JitterBuffer",
    "OpusDecoder", "OpusEncoder", "PacketError", "ParameterError", "ProtocolError",
    "RefusedError", "RelayDestination", "RtpPacket", "Server", "SessionError", "StagevoxError",
    "StreamInjector", "TokenClaims", "TokenError",
    "list_devices", "load_libopus", "make_decoder", "make_encoder", "make_token", "read_claims",
    "verify_token",
]


def __getattr__(name):
    """``engine.Gateway`` imports the gateway (aiortc, aiohttp) on first use only."""
    if name == "Gateway":
        from .gateway import Gateway
        return Gateway
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

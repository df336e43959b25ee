"""The gateway's receive side of a talking browser (``engine.gateway.media``)."""

import asyncio

from aiortc import RTCPeerConnection
from aiortc.rtp import RtpPacket

from stagevox.engine.gateway.media import _JITTER_ATTR, hold_one_packet

OPUS_TICKS = 960                          # 20 ms at the RTP clock of 48 kHz


def frames_out(receiver, count):
    """What the receiver's jitter buffer hands on as ``count`` packets arrive in order."""
    buffer = getattr(receiver, _JITTER_ATTR)
    out = []
    for seq in range(count):
        packet = RtpPacket(payload_type=111, sequence_number=seq, timestamp=seq * OPUS_TICKS)
        packet._data = bytes([seq])       # what aiortc's receiver sets after depayloading
        frame = buffer.add(packet)[1]
        out.append(None if frame is None else frame.timestamp)
    return out


def receivers(change):
    async def main():
        pc = RTCPeerConnection()
        receiver = pc.addTransceiver("audio", direction="recvonly").receiver
        changed = hold_one_packet(receiver) if change else None
        out = frames_out(receiver, 8)
        await pc.close()
        return changed, out
    return asyncio.run(main())


def test_a_talkers_packet_is_decoded_once_the_next_one_arrives():
    """aiortc's own receiver hands on a packet when the fourth after it
    arrives (an 80 ms hold); the gateway's, when the next arrives (20 ms)."""
    _, default = receivers(change=False)
    assert default == [None] * 4 + [k * OPUS_TICKS for k in range(4)]
    changed, ours = receivers(change=True)
    assert changed is True, "the installed aiortc keeps its jitter buffer elsewhere"
    assert ours == [None] + [k * OPUS_TICKS for k in range(7)]

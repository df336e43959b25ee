"""The gateway's receive side of a talking browser (``engine.gateway.media``)."""

import asyncio

import numpy as np
from aiortc import RTCPeerConnection
from aiortc.rtp import RtpPacket

from stagevox.engine import Client, make_encoder
from stagevox.engine.gateway.media import _JITTER_ATTR, EncodedVoice, hold_one_packet

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


def test_encoded_voice_passes_frames_of_the_clients_length_and_leaves_the_rest():
    """``EncodedVoice.take``: a 20 ms Opus frame goes on as it is (and feeds
    the meter); a 10 ms one, a broken one or one while a preset is on is left
    to aiortc's decoder; one older than a frame passed on is dropped."""
    client = Client()                        # not in a channel: the sender's clock moves on
    levels = []
    voice = EncodedVoice(client, levels.append)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(960) / 48000)).astype(np.float32)
    frame = make_encoder("opus", channels=1, frame_ms=20).encode(tone[None])
    short = make_encoder("opus", channels=1, frame_ms=10).encode(tone[None, :480])
    assert voice.take(frame, 1000) is True
    assert voice.take(frame, 1000 + OPUS_TICKS) is True
    assert voice.passed == 2 and len(levels) == 2 and levels[0].shape == (1, 960)
    assert voice.take(frame, 1000) is True and voice.passed == 2      # late: dropped
    assert voice.take(short, 1000 + 2 * OPUS_TICKS) is False
    assert voice.take(b"\xff", 1000 + 3 * OPUS_TICKS) is False
    client.set_audio_effect_preset("ktv")
    assert voice.take(frame, 1000 + 4 * OPUS_TICKS) is False
    assert voice.passed == 2

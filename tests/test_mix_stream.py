"""The channel mix's per-host reorder buffer (engine.mix_stream): fed packets
with made-up arrival times, compared with the same packets decoded in order
by a plain Opus decoder."""

import numpy as np
import pytest
from stagevox.engine import codec
from stagevox.engine.mix_stream import MAX_WAIT_FRAMES, SLACK_FRAMES, MixStream
from stagevox.engine.red import RedBlock, encode_red
from stagevox.engine.rtp import PT_OPUS, PT_RED, RtpPacket

FRAME = 960
FRAME_S = 0.02
DELAY_S = 0.1
DELAY_FRAMES = 5


@pytest.fixture(scope="module")
def payloads(speech):
    """40 Opus packets of 20 ms speech with FEC in them."""
    enc = codec.OpusEncoder(bitrate=32000, fec=True, packet_loss_pct=20)
    x = np.asarray(speech[:40 * FRAME], np.float32)
    return [enc.encode(x[k * FRAME:(k + 1) * FRAME]) for k in range(40)]


def packet(payloads, k, ts0=1000):
    return RtpPacket(payload_type=PT_OPUS, sequence_number=k, timestamp=ts0 + k * FRAME,
                     ssrc=1, payload=payloads[k])


def play(stream, arrivals, frames):
    """Frames ``frames`` (a range) of ``stream`` as the mix makes them: before
    frame f (due at f * FRAME_S), the packets of ``arrivals`` ((time,
    packet) in arrival order) that have come by then are put."""
    pending = list(arrivals)
    out = []
    for f in frames:
        while pending and pending[0][0] <= f * FRAME_S:
            stream.put(pending[0][1], pending[0][0], 0.0)
            pending.pop(0)
        out.append(stream.pull(f).copy())
    return out


def reference(payloads, lost=()):
    """Decoded in order by a plain decoder; lost packets rebuilt from the
    next one's FEC."""
    dec = codec.OpusDecoder(1)
    out = []
    for k, p in enumerate(payloads):
        out.append(dec.decode_fec(payloads[k + 1], FRAME)[0] if k in lost else dec.decode(p)[0])
    return out


def test_reordered_packets_play_in_order_after_the_delay(payloads):
    s = MixStream(DELAY_S, FRAME, FRAME_S)
    order = list(range(len(payloads)))
    for k in range(0, len(order) - 1, 2):       # every pair swapped
        order[k], order[k + 1] = order[k + 1], order[k]
    got = play(s, [(0.001 + i * FRAME_S, packet(payloads, k)) for i, k in enumerate(order)],
               range(DELAY_FRAMES + 1 + len(payloads)))
    # Arrived at 1 ms: the first frame starting 100 ms later is frame 6.
    assert not np.concatenate(got[:DELAY_FRAMES + 1]).any()
    got = got[DELAY_FRAMES + 1:]
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(reference(payloads)))
    assert s.stats["late"] == 0 and s.stats["concealed"] == 0


def test_a_lost_packet_is_rebuilt_from_the_next_ones_fec(payloads):
    s = MixStream(DELAY_S, FRAME, FRAME_S)
    got = play(s, [(k * FRAME_S, packet(payloads, k)) for k in range(len(payloads)) if k != 10],
               range(DELAY_FRAMES + len(payloads)))[DELAY_FRAMES:]
    np.testing.assert_array_equal(np.concatenate(got),
                                  np.concatenate(reference(payloads, lost={10})))
    assert s.stats["recovered"] == 1


def test_red_blocks_fill_a_gap(payloads):
    s = MixStream(DELAY_S, FRAME, FRAME_S)
    arrivals = []
    for k in range(len(payloads)):
        if k == 10:
            continue
        p = packet(payloads, k)
        if k == 11:                  # carries packet 10 as a redundant block
            red = encode_red([RedBlock(PT_OPUS, p.timestamp - FRAME, payloads[10]),
                              RedBlock(PT_OPUS, p.timestamp, payloads[11])], p.timestamp)
            p = RtpPacket(payload_type=PT_RED, sequence_number=k, timestamp=p.timestamp,
                          ssrc=1, payload=red)
        arrivals.append((k * FRAME_S, p))
    got = play(s, arrivals, range(DELAY_FRAMES + len(payloads)))[DELAY_FRAMES:]
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(reference(payloads)))


def test_a_packet_after_its_playout_is_counted_late_and_dropped(payloads):
    s = MixStream(DELAY_S, FRAME, FRAME_S)
    play(s, [(k * FRAME_S, packet(payloads, k)) for k in range(12) if k != 3],
         range(DELAY_FRAMES + 6))                   # packet 3 rebuilt from 4's FEC
    s.put(packet(payloads, 3), 0.5, 0.0)
    assert s.stats["late"] == 1 and s.stats["recovered"] == 1


def test_a_pause_conceals_briefly_then_falls_silent_and_restarts_with_the_delay(payloads):
    s = MixStream(DELAY_S, FRAME, FRAME_S)
    frames = play(s, [(k * FRAME_S, packet(payloads, k)) for k in range(5)],
                  range(DELAY_FRAMES + 5 + MAX_WAIT_FRAMES + 3))[DELAY_FRAMES:]
    assert s.stats["concealed"] == MAX_WAIT_FRAMES
    assert not np.concatenate(frames[5 + MAX_WAIT_FRAMES:]).any()      # then silence
    # The host comes back 2 s later (its timestamps moved on by 1 s: it was muted).
    for k in range(5, 10):
        s.put(packet(payloads, k, ts0=1000 + 50 * FRAME), 2.0 + (k - 5) * FRAME_S, 0.0)
    start = round(2.0 / FRAME_S) + DELAY_FRAMES
    assert not s.pull(start - 1).any()
    got = [s.pull(f).copy() for f in range(start, start + 5)]
    dec = codec.OpusDecoder(1)
    for k in range(5):
        dec.decode(payloads[k])
    for k in range(MAX_WAIT_FRAMES):
        dec.conceal(FRAME)
    np.testing.assert_array_equal(np.concatenate(got),
                                  np.concatenate([dec.decode(p)[0] for p in payloads[5:10]]))


def test_a_fast_sender_is_held_to_the_delay(payloads):
    """A sender whose packets come faster than the mix plays them (a fast
    clock, a burst after a stall) is skipped ahead: at most the delay and
    the slack stay buffered."""
    s = MixStream(DELAY_S, FRAME, FRAME_S)
    for k in range(30):                          # 30 packets at once
        s.put(packet(payloads, k), 0.0, 0.0)
    got = [s.pull(f).copy() for f in (DELAY_FRAMES, DELAY_FRAMES + 1)]
    # Beyond the delay and the slack: the stream goes on from the packet
    # that leaves the delay's worth buffered.
    assert 30 > DELAY_FRAMES + SLACK_FRAMES and s.stats["skipped"] == 30 - DELAY_FRAMES
    dec = codec.OpusDecoder(1)
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(
        [dec.decode(payloads[k])[0] for k in (30 - DELAY_FRAMES, 31 - DELAY_FRAMES)]))


def test_ten_ms_packets_fill_twenty_ms_frames(payloads, speech):
    enc = codec.OpusEncoder(bitrate=32000, frame_ms=10)
    x = np.asarray(speech[:20 * 480], np.float32)
    small = [enc.encode(x[k * 480:(k + 1) * 480]) for k in range(20)]
    s = MixStream(DELAY_S, FRAME, FRAME_S)
    got = np.concatenate(play(s, [(k * 0.01, RtpPacket(payload_type=PT_OPUS, sequence_number=k,
                                                       timestamp=k * 480, ssrc=1, payload=p))
                                  for k, p in enumerate(small)],
                              range(DELAY_FRAMES + 10))[DELAY_FRAMES:])
    dec = codec.OpusDecoder(1)
    np.testing.assert_array_equal(got, np.concatenate([dec.decode(p)[0] for p in small]))


def test_garbage_is_counted_not_raised():
    s = MixStream(DELAY_S, FRAME, FRAME_S)
    s.put(RtpPacket(payload_type=PT_RED, sequence_number=0, timestamp=0, ssrc=1,
                    payload=b"\xff"), 0.0, 0.0)
    s.put(RtpPacket(payload_type=0, sequence_number=1, timestamp=0, ssrc=1, payload=b"x"),
          0.0, 0.0)
    assert s.stats["malformed"] == 2
    assert not s.pull(10).any()

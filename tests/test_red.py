"""RFC 2198 redundant audio (engine.red)."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagevox.engine.red import (
    MAX_BLOCK_LENGTH,
    MAX_TS_OFFSET,
    RedBlock,
    decode_red,
    encode_red,
)
from stagevox.engine.rtp import PacketError


def red_header(pt, offset, length):
    """RFC 2198 section 3: F=1 (1 bit), block PT (7), timestamp offset (14), block length (10)."""
    return struct.pack("!I", (1 << 31) | (pt << 24) | (offset << 10) | length)


def test_limits():
    assert (MAX_TS_OFFSET, MAX_BLOCK_LENGTH) == (2**14 - 1, 2**10 - 1)


def test_header_bits_by_hand():
    """Two redundant Opus blocks (20 ms apart) and the primary, against hand-built bytes."""
    ts = 100000
    blocks = [RedBlock(111, ts - 1920, b"old"), RedBlock(111, ts - 960, b"mid!"),
              RedBlock(111, ts, b"new frame")]
    expected = (red_header(111, 1920, 3) + red_header(111, 960, 4) + bytes([111])
                + b"old" + b"mid!" + b"new frame")
    got = encode_red(blocks, ts)
    assert got == expected
    # The same bits spelled out for the first header:
    # F=1, PT=1101111, offset=00011110000000, len=0000000011
    assert got[:4] == int("1" + "1101111" + "00011110000000" + "0000000011", 2).to_bytes(4, "big")
    assert got[8] == 0b0_1101111  # the primary header is one byte with F=0
    assert decode_red(expected, ts) == blocks


def test_primary_only_is_one_header_byte():
    assert encode_red([RedBlock(96, 5, b"pcm")], 5) == b"\x60pcm"
    assert decode_red(b"\x60pcm", 5) == [RedBlock(96, 5, b"pcm")]
    assert decode_red(b"\x60", 5) == [RedBlock(96, 5, b"")]


def test_limits_are_inclusive():
    ts = 50000
    blocks = [RedBlock(0, ts - MAX_TS_OFFSET, bytes(MAX_BLOCK_LENGTH)), RedBlock(127, ts, b"p")]
    data = encode_red(blocks, ts)
    assert data[:4] == red_header(0, MAX_TS_OFFSET, MAX_BLOCK_LENGTH)
    assert decode_red(data, ts) == blocks


def test_timestamp_wrap():
    """Blocks from before the 32-bit wrap in a packet after it."""
    ts = 500
    old_ts = (ts - 960) % 2**32  # 4294966836
    blocks = [RedBlock(111, old_ts, b"a"), RedBlock(111, ts, b"b")]
    data = encode_red(blocks, ts)
    assert data[:4] == red_header(111, 960, 1)
    assert decode_red(data, ts) == blocks
    assert decode_red(data, ts)[0].timestamp == 2**32 - 460


@st.composite
def red_packets(draw):
    ts = draw(st.integers(0, 2**32 - 1))
    offsets = sorted(draw(st.lists(st.integers(1, MAX_TS_OFFSET), max_size=6)), reverse=True)
    blocks = [RedBlock(draw(st.integers(0, 127)), (ts - off) % 2**32,
                       draw(st.binary(max_size=MAX_BLOCK_LENGTH)))
              for off in offsets]
    blocks.append(RedBlock(draw(st.integers(0, 127)), ts, draw(st.binary(max_size=1500))))
    return blocks, ts


@settings(max_examples=200)
@given(red_packets())
def test_round_trip(packet):
    blocks, ts = packet
    data = encode_red(blocks, ts)
    assert len(data) == 4 * (len(blocks) - 1) + 1 + sum(len(b.payload) for b in blocks)
    assert decode_red(data, ts) == blocks


@pytest.mark.parametrize("blocks,ts,message", [
    ([], 0, "RED payload needs at least one block (the primary), got none"),
    ([RedBlock(111, 10, b"")], 11,
     "RED primary block (the last) has timestamp 10, the packet has 11; they must be equal"),
    ([RedBlock(111, 1000, b"x"), RedBlock(111, 1000, b"y")], 1000,
     ("RED redundant block 0 has timestamp offset 0 (timestamp 1000, packet 1000); "
      "it must be 1..16383")),
    ([RedBlock(111, 0, b"x"), RedBlock(111, 16384, b"y")], 16384,
     ("RED redundant block 0 has timestamp offset 16384 (timestamp 0, packet 16384); "
      "it must be 1..16383")),
    ([RedBlock(111, 1001, b"x"), RedBlock(111, 1000, b"y")], 1000,
     ("RED redundant block 0 has timestamp offset 4294967295 (timestamp 1001, packet 1000); "
      "it must be 1..16383")),
    ([RedBlock(111, 100, b"x"), RedBlock(111, 10, b"y"), RedBlock(111, 1000, b"z")], 1000,
     ("RED redundant block 1 (offset 990) is older than block 0 (offset 900); "
      "blocks go oldest first")),
    ([RedBlock(111, 40, bytes(1024)), RedBlock(111, 1000, b"y")], 1000,
     "RED redundant block 0 is 1024 bytes, at most 1023"),
    ([RedBlock(128, 1000, b"y")], 1000,
     "RED primary block payload_type must be an integer in 0..127, got 128"),
    ([RedBlock(111, 1000, b"y")], 2**32,
     "RED timestamp must be an integer in 0..4294967295, got 4294967296"),
])
def test_encode_rejects(blocks, ts, message):
    with pytest.raises(PacketError) as e:
        encode_red(blocks, ts)
    assert str(e.value) == message


@pytest.mark.parametrize("data,message", [
    (b"", "RED payload is empty; it needs at least the 1-byte primary header"),
    (red_header(111, 960, 0),
     "RED payload truncated: 4 bytes of headers with the F bit set and no primary header"),
    (red_header(111, 960, 0)[:3],
     "RED payload truncated: header of block 0 needs 4 bytes at offset 0, 3 left"),
    (red_header(111, 960, 0) + red_header(111, 480, 0)[:2],
     "RED payload truncated: header of block 1 needs 4 bytes at offset 4, 2 left"),
    (red_header(111, 960, 5) + b"\x6f" + b"abcd",
     ("RED block lengths overrun the payload: 1 redundant blocks declare 5 bytes, "
      "4 left after the headers")),
    (red_header(111, 960, 3) + red_header(111, 480, 3) + b"\x6f" + b"abcde",
     ("RED block lengths overrun the payload: 2 redundant blocks declare 6 bytes, "
      "5 left after the headers")),
])
def test_decode_rejects_truncation_and_overrun(data, message):
    with pytest.raises(PacketError) as e:
        decode_red(data, 1000)
    assert str(e.value) == message


@settings(max_examples=200)
@given(red_packets(), st.data())
def test_every_truncation_of_the_headers_or_redundant_data_fails(packet, data):
    """Cutting a RED payload anywhere before the primary's data raises PacketError."""
    blocks, ts = packet
    encoded = encode_red(blocks, ts)
    primary_start = len(encoded) - len(blocks[-1].payload)
    cut = data.draw(st.integers(0, primary_start - 1))
    with pytest.raises(PacketError):
        decode_red(encoded[:cut], ts)


@settings(max_examples=300)
@given(st.binary(max_size=64), st.integers(0, 2**32 - 1))
def test_decode_random_bytes_only_raises_packet_error(data, ts):
    try:
        blocks = decode_red(data, ts)
    except PacketError:
        return
    assert sum(len(b.payload) for b in blocks) + 4 * (len(blocks) - 1) + 1 == len(data)
    assert blocks[-1].timestamp == ts

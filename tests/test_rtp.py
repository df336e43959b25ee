"""RTP packets and sequence/timestamp arithmetic (engine.rtp), against RFC 3550."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagevox.engine.rtp import (
    CLOCK_RATE,
    PT_L16,
    PT_OPUS,
    PT_RED,
    PacketError,
    RtpPacket,
    SequenceUnwrapper,
    TimestampUnwrapper,
    is_rtp,
    seq_add,
    seq_diff,
    seq_newer,
    ts_add,
    ts_diff,
)


def header(v=2, p=0, x=0, cc=0, m=0, pt=0, seq=0, ts=0, ssrc=0):
    """The RFC 3550 section 5.1 fixed header, built bit by bit."""
    return struct.pack("!BBHII", (v << 6) | (p << 5) | (x << 4) | cc, (m << 7) | pt, seq, ts, ssrc)


# ----------------------------------------------------------------------------- layout

def test_constants():
    assert (PT_L16, PT_OPUS, PT_RED, CLOCK_RATE) == (96, 111, 100, 48000)


def test_minimal_packet_bytes():
    pkt = RtpPacket(payload_type=PT_OPUS, sequence_number=0x1234, timestamp=0xDEADBEEF,
                    ssrc=0x01020304, payload=b"\xaa\xbb")
    expected = bytes([0x80, 111, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4, 0xAA, 0xBB])
    assert pkt.serialize() == expected
    assert RtpPacket.parse(expected) == pkt


def test_full_packet_bytes():
    """Marker, 2 CSRCs, a header extension and 3 bytes of padding, byte by byte."""
    pkt = RtpPacket(payload_type=PT_RED, sequence_number=65535, timestamp=2**32 - 1,
                    ssrc=0xCAFEBABE, marker=True, payload=b"hello", csrc=[7, 0xFFFFFFFF],
                    extension_profile=0xBEDE, extension=b"\x10\x01\x02\x03\x00\x00\x00\x00",
                    padding_size=3)
    expected = (header(p=1, x=1, cc=2, m=1, pt=100, seq=65535, ts=2**32 - 1, ssrc=0xCAFEBABE)
                + struct.pack("!II", 7, 0xFFFFFFFF)
                + struct.pack("!HH", 0xBEDE, 2) + b"\x10\x01\x02\x03\x00\x00\x00\x00"
                + b"hello" + b"\x00\x00\x03")
    got = pkt.serialize()
    assert got == expected
    assert got[0] == 0b1011_0010  # V=2, P=1, X=1, CC=2
    assert got[1] == 0b1110_0100  # M=1, PT=100
    assert RtpPacket.parse(expected) == pkt


def test_empty_extension_and_padding_of_one():
    data = header(p=1, x=1, pt=96, seq=1) + struct.pack("!HH", 0x1000, 0) + b"pcm" + b"\x01"
    pkt = RtpPacket.parse(data)
    assert pkt.extension_profile == 0x1000 and pkt.extension == b""
    assert pkt.payload == b"pcm" and pkt.padding_size == 1
    assert pkt.serialize() == data


def test_padding_may_cover_everything_after_the_header():
    data = header(p=1) + b"\x00\x00\x04" + b"\x04"
    pkt = RtpPacket.parse(data)
    assert pkt.payload == b"" and pkt.padding_size == 4


@st.composite
def packets(draw):
    profile = draw(st.none() | st.integers(0, 65535))
    return RtpPacket(
        payload_type=draw(st.integers(0, 127)),
        sequence_number=draw(st.integers(0, 65535)),
        timestamp=draw(st.integers(0, 2**32 - 1)),
        ssrc=draw(st.integers(0, 2**32 - 1)),
        marker=draw(st.booleans()),
        payload=draw(st.binary(max_size=300)),
        csrc=draw(st.lists(st.integers(0, 2**32 - 1), max_size=15)),
        extension_profile=profile,
        extension=b"" if profile is None else draw(st.binary(max_size=12)) * 4,
        padding_size=draw(st.integers(0, 255)),
    )


@settings(max_examples=300)
@given(packets())
def test_round_trip(pkt):
    data = pkt.serialize()
    n_ext = 0 if pkt.extension_profile is None else 4 + len(pkt.extension)
    assert len(data) == 12 + 4 * len(pkt.csrc) + n_ext + len(pkt.payload) + pkt.padding_size
    assert is_rtp(data)
    assert RtpPacket.parse(data) == pkt
    # The fixed header is exactly the RFC 3550 layout.
    assert data[:12] == header(p=int(pkt.padding_size > 0),
                               x=int(pkt.extension_profile is not None),
                               cc=len(pkt.csrc), m=int(pkt.marker), pt=pkt.payload_type,
                               seq=pkt.sequence_number, ts=pkt.timestamp, ssrc=pkt.ssrc)


# ----------------------------------------------------------------------------- malformed

@pytest.mark.parametrize("data,message", [
    (b"", "RTP packet too short: 0 bytes, need at least 12"),
    (header()[:7], "RTP packet too short: 7 bytes, need at least 12"),
    (header(v=1) + b"x", "RTP version must be 2, got 1"),
    (header(v=0), "RTP version must be 2, got 0"),
    (header(v=3), "RTP version must be 2, got 3"),
    (header(cc=2) + b"\x00" * 7,
     "RTP packet truncated: CSRC count 2 needs 20 header bytes, packet is 19 bytes"),
    (header(cc=15),
     "RTP packet truncated: CSRC count 15 needs 72 header bytes, packet is 12 bytes"),
    (header(x=1) + b"\x00\x01",
     "RTP header extension truncated: its 4-byte header needs 16 bytes, packet is 14 bytes"),
    (header(x=1, cc=1) + b"\x00" * 4 + struct.pack("!HH", 1, 3) + b"\x00" * 11,
     "RTP header extension truncated: length 3 words needs 32 bytes, packet is 31 bytes"),
    (header(p=1) + b"abc\x00", "RTP padding length is 0; it must count at least its own byte"),
    (header(p=1) + b"abc\x05", "RTP padding length 5 exceeds the 4 bytes after the header"),
    (header(p=1, x=1) + struct.pack("!HH", 1, 0) + b"\x09",
     "RTP padding length 9 exceeds the 1 bytes after the header"),
])
def test_malformed_packets(data, message):
    with pytest.raises(PacketError) as e:
        RtpPacket.parse(data)
    assert str(e.value) == message


@pytest.mark.parametrize("fields,message", [
    ({"payload_type": 128}, "RTP payload_type must be an integer in 0..127, got 128"),
    ({"payload_type": -1}, "RTP payload_type must be an integer in 0..127, got -1"),
    ({"sequence_number": 65536}, "RTP sequence_number must be an integer in 0..65535, got 65536"),
    ({"timestamp": 2**32}, "RTP timestamp must be an integer in 0..4294967295, got 4294967296"),
    ({"ssrc": -5}, "RTP ssrc must be an integer in 0..4294967295, got -5"),
    ({"padding_size": 256}, "RTP padding_size must be an integer in 0..255, got 256"),
    ({"csrc": [1] * 16}, "RTP packet has 16 CSRCs, at most 15"),
    ({"csrc": [1, 2**32]}, "RTP csrc[1] must be an integer in 0..4294967295, got 4294967296"),
    ({"extension_profile": 1, "extension": b"abc"},
     "RTP header extension is 3 bytes; it must be a multiple of 4"),
    ({"extension_profile": 65536},
     "RTP extension_profile must be an integer in 0..65535, got 65536"),
    ({"extension": b"abcd"}, "RTP header extension data given without an extension_profile"),
    ({"payload": "text"}, "RTP payload must be bytes, got str"),
])
def test_serialize_rejects_out_of_range_fields(fields, message):
    with pytest.raises(PacketError) as e:
        RtpPacket(**fields).serialize()
    assert str(e.value) == message


@settings(max_examples=500)
@given(st.binary(max_size=80))
def test_parse_random_bytes_only_raises_packet_error(data):
    try:
        pkt = RtpPacket.parse(data)
    except PacketError:
        return
    # Everything but the padding's filler bytes (serialize writes zeros) comes back.
    out = pkt.serialize()
    assert len(out) == len(data)
    assert out[:len(out) - pkt.padding_size] == data[:len(data) - pkt.padding_size]
    assert out[-1:] == data[-1:]


def test_is_rtp():
    assert is_rtp(header())
    assert not is_rtp(header()[:11])
    assert not is_rtp(header(v=1))
    assert not is_rtp(b"SV\x01\x09\x00\x08" + b"\x00" * 8)  # a control message


# ----------------------------------------------------------------------------- wrap-around

def test_wrap_cases():
    assert seq_add(65535, 1) == 0
    assert seq_add(0, -1) == 65535
    assert seq_add(65000, 1000) == 464
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(5, 5) == 0
    assert seq_diff(32767, 0) == 32767
    assert seq_diff(32768, 0) == -32768
    assert seq_newer(0, 65535) and not seq_newer(65535, 0) and not seq_newer(7, 7)
    assert ts_add(2**32 - 1, 1) == 0
    assert ts_add(0, -960) == 2**32 - 960
    assert ts_diff(0, 2**32 - 1) == 1
    assert ts_diff(2**32 - 1, 0) == -1
    assert ts_diff(2**31 - 1, 0) == 2**31 - 1
    assert ts_diff(2**31, 0) == -2**31


def slow_signed_distance(a, b, bits):
    """The d in [-2**(bits-1), 2**(bits-1)) with b + d == a modulo 2**bits, by search."""
    mod = 1 << bits
    candidates = [d for d in (a - b - mod, a - b, a - b + mod) if -mod // 2 <= d < mod // 2]
    assert len(candidates) == 1
    assert (b + candidates[0]) % mod == a
    return candidates[0]


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_seq_diff_matches_reference(a, b):
    d = seq_diff(a, b)
    assert d == slow_signed_distance(a, b, 16)
    assert seq_add(b, d) == a
    assert seq_newer(a, b) == (d > 0)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_ts_diff_matches_reference(a, b):
    d = ts_diff(a, b)
    assert d == slow_signed_distance(a, b, 32)
    assert ts_add(b, d) == a


def test_unwrapper_wraps_forwards_and_places_late_packets():
    u = SequenceUnwrapper()
    assert [u.unwrap(s) for s in (65534, 65535, 0, 65533, 1, 65535, 2)] == \
        [65534, 65535, 65536, 65533, 65537, 65535, 65538]
    u = SequenceUnwrapper()
    assert [u.unwrap(s) for s in (0, 65535, 1)] == [0, -1, 1]
    u = SequenceUnwrapper()
    assert u.unwrap(1000) == 1000  # the first one maps to itself


def test_unwrapper_rejects_out_of_range():
    with pytest.raises(ValueError, match="0..65535, got 65536"):
        SequenceUnwrapper().unwrap(65536)
    with pytest.raises(ValueError, match="timestamp must be an integer in 0..4294967295"):
        TimestampUnwrapper().unwrap(2**32)


def test_timestamp_unwrapper_wraps_at_32_bits():
    u = TimestampUnwrapper()
    top = 2**32 - 960
    assert [u.unwrap(t) for t in (top, 0, top - 960, 960)] == \
        [top, 2**32, top - 960, 2**32 + 960]


@settings(max_examples=300)
@given(st.integers(0, 65535), st.lists(st.integers(-32768, 32767), max_size=200))
def test_unwrap_recovers_the_true_sequence(first, steps):
    """A stream whose true (unbounded) numbers never lie more than half the space from
    the highest one seen is unwrapped exactly, across any number of wraps."""
    u = SequenceUnwrapper()
    assert u.unwrap(first) == first
    highest = first
    for step in steps:
        true = highest + step  # relative to the highest seen: late, duplicate or ahead
        assert u.unwrap(true % 65536) == true
        highest = max(highest, true)

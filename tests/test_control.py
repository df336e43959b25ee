"""stagevox control messages (engine.control): framing, round trips, every malformed case."""

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagevox.engine import control
from stagevox.engine.control import (
    Ack,
    EVENT_KINDS,
    REFUSAL_CODES,
    ROLES,
    VERSION,
    ControlError,
    Event,
    Join,
    Joined,
    Leave,
    Nack,
    Ping,
    Pong,
    PublishStream,
    PublishStreamDone,
    ReceiverReport,
    Refused,
    RenewToken,
    ReportBlock,
    RoleChanged,
    SetRole,
    TokenRenewed,
    decode,
    is_control,
)
from stagevox.engine.rtp import is_rtp

#: The type byte of each message, as the protocol fixes it.
TYPES = {Join: 1, Joined: 2, Refused: 3, Leave: 4, SetRole: 5, RoleChanged: 6, RenewToken: 7,
         TokenRenewed: 8, Ping: 9, Pong: 10, ReceiverReport: 11, Nack: 12, Event: 13,
         Ack: 14, PublishStream: 15, PublishStreamDone: 16}


def frame(type_code, body, version=3, length=None):
    """A datagram built from the framing spec: b"SV", version, type, u16 body length, body."""
    return b"SV" + bytes([version, type_code]) + struct.pack(
        "!H", len(body) if length is None else length) + body


def s16(text):
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


# ----------------------------------------------------------------------------- hand-built bytes

def test_join_bytes_match_the_framing_spec():
    msg = Join(request_id=7, channel="room-é", uid=42, role="audience", token="tk",
               ssrc=0xA1B2C3D4)
    body = (struct.pack("!I", 7) + struct.pack("!H", 7) + b"room-\xc3\xa9"
            + struct.pack("!I", 42) + b"\x01" + struct.pack("!H", 2) + b"tk"
            + struct.pack("!I", 0xA1B2C3D4))
    expected = b"SV\x03\x01" + struct.pack("!H", 26) + body
    assert len(body) == 26
    assert msg.encode() == expected
    assert decode(expected) == msg


def test_joined_and_refused_bytes():
    msg = Joined(request_id=1, uid=2, role="host", expires_at=1_700_000_000,
                 hosts=((10, 0xAAAA), (11, 0xBBBB)))
    body = struct.pack("!IIBQH", 1, 2, 0, 1_700_000_000, 2) + struct.pack("!IIII", 10, 0xAAAA,
                                                                          11, 0xBBBB)
    assert msg.encode() == frame(2, body)
    msg = Refused(request_id=9, code="expired_token", reason="token expired")
    assert msg.encode() == frame(3, struct.pack("!IB", 9, 4) + s16("token expired"))


def test_small_messages_bytes():
    assert Leave().encode() == b"SV\x03\x04\x00\x00"
    assert Ping(1.5).encode() == frame(9, struct.pack("!d", 1.5))
    assert Pong(-2.25, 7).encode() == frame(10, struct.pack("!dI", -2.25, 7))
    assert Nack(ssrc=3, sequence_numbers=(65535, 0, 1)).encode() == frame(
        12, struct.pack("!IHHHH", 3, 3, 65535, 0, 1))
    assert Event(9, "removed", 5, "audience", 6, "kicked").encode() == frame(
        13, struct.pack("!IBIBI", 9, 5, 5, 1, 6) + s16("kicked"))
    assert Ack(2**32 - 1).encode() == frame(14, struct.pack("!I", 2**32 - 1))
    assert SetRole(4, "host").encode() == frame(5, struct.pack("!IB", 4, 0) + s16(""))
    assert RoleChanged(4, 8, "audience").encode() == frame(6, struct.pack("!IIB", 4, 8, 1))
    assert RenewToken(3, "abc").encode() == frame(7, struct.pack("!I", 3) + s16("abc"))
    assert TokenRenewed(3, 2**64 - 1).encode() == frame(8, struct.pack("!IQ", 3, 2**64 - 1))


def test_report_block_quantisation():
    """fraction_lost travels as round(255 f) (RTCP style), jitter as whole microseconds,
    burst in tenths of a packet (3.25 rounds half to even: 32), cumulative_lost as u32."""
    msg = ReceiverReport((ReportBlock(ssrc=5, fraction_lost=0.25, highest_seq=70000,
                                      jitter_ms=12.3456, burst=3.25, cumulative_lost=123456),))
    expected = frame(11, struct.pack("!H", 1)
                     + struct.pack("!IBIIHI", 5, 64, 70000, 12346, 32, 123456))
    assert msg.encode() == expected
    got = decode(expected).reports[0]
    assert got.ssrc == 5 and got.highest_seq == 70000
    assert got.fraction_lost == 64 / 255
    assert abs(got.fraction_lost - 0.25) <= 0.5 / 255  # half a step of 1/255
    assert abs(got.jitter_ms - 12.3456) <= 0.0005  # half a microsecond
    assert got.burst == 3.2 and got.cumulative_lost == 123456


def test_type_codes_and_constants():
    assert VERSION == 3
    assert ROLES == ("host", "audience")
    assert len(REFUSAL_CODES) == 18 and len(EVENT_KINDS) == 6
    for cls, code in TYPES.items():
        assert cls.TYPE == code


def test_control_and_rtp_are_told_apart():
    for msg in (Leave(), Ping(0.0), Join(1, "c", 1, "host", "t", 1)):
        data = msg.encode()
        assert is_control(data) and not is_rtp(data)
    rtp = bytes([0x80, 111]) + bytes(10)
    assert is_rtp(rtp) and not is_control(rtp)
    assert not is_control(b"S")


# ----------------------------------------------------------------------------- round trips

def utf8_text(limit):
    """Strings of at most ``limit`` bytes of UTF-8, the limit itself included often."""
    def trim(s):
        while len(s.encode()) > limit:
            s = s[:-1]
        return s
    return st.text(max_size=limit).map(trim)


u32 = st.integers(0, 2**32 - 1)
roles = st.sampled_from(ROLES)
finite = st.floats(allow_nan=False, allow_infinity=False)
report_blocks = st.builds(ReportBlock, ssrc=u32,
                          fraction_lost=st.integers(0, 255).map(lambda k: k / 255),
                          highest_seq=u32,
                          jitter_ms=st.integers(0, 2**32 - 1).map(lambda us: us / 1000),
                          burst=st.integers(0, 2**16 - 1).map(lambda t: t / 10))

messages = st.one_of(
    st.builds(Join, request_id=u32, channel=utf8_text(64), uid=u32, role=roles,
              token=utf8_text(512), ssrc=u32),
    st.builds(Joined, request_id=u32, uid=u32, role=roles, expires_at=st.integers(0, 2**64 - 1),
              hosts=st.lists(st.tuples(u32, u32), max_size=128).map(tuple)),
    st.builds(Refused, request_id=u32, code=st.sampled_from(REFUSAL_CODES),
              reason=utf8_text(256)),
    st.just(Leave()),
    st.builds(SetRole, request_id=u32, role=roles, token=utf8_text(512)),
    st.builds(RoleChanged, request_id=u32, uid=u32, role=roles),
    st.builds(RenewToken, request_id=u32, token=utf8_text(512)),
    st.builds(TokenRenewed, request_id=u32, expires_at=st.integers(0, 2**64 - 1)),
    st.builds(Ping, send_time=finite),
    st.builds(Pong, echo_time=finite, members=u32),
    st.builds(ReceiverReport, reports=st.lists(report_blocks, max_size=62).map(tuple)),
    st.builds(Nack, ssrc=u32,
              sequence_numbers=st.lists(st.integers(0, 65535), max_size=128).map(tuple)),
    st.builds(Event, seq=u32, kind=st.sampled_from(EVENT_KINDS), uid=u32, role=roles,
              ssrc=u32, reason=utf8_text(256)),
    st.builds(Ack, seq=u32),
    st.builds(PublishStream, request_id=u32, action=st.sampled_from(("add", "remove")),
              url=utf8_text(1024)),
    st.builds(PublishStreamDone, request_id=u32),
)


@settings(max_examples=500)
@given(messages)
def test_round_trip(msg):
    data = msg.encode()
    assert len(data) <= 1200
    assert data[:4] == b"SV" + bytes([VERSION, TYPES[type(msg)]])
    assert struct.unpack("!H", data[4:6])[0] == len(data) - 6
    assert decode(data) == msg


@pytest.mark.parametrize("msg", [
    Join(2**32 - 1, "c" * 64, 2**32 - 1, "host", "t" * 512, 2**32 - 1),
    Join(0, "é" * 32, 0, "audience", "", 0),
    Joined(0, 0, "host", 0, tuple((i, i) for i in range(128))),
    Refused(0, "server_error", "ü" * 128),
    ReceiverReport(tuple(ReportBlock(i, 1.0, 2**32 - 1, 4294967.295, 6553.5, 2**32 - 1)
                         for i in range(62))),
    Nack(0, tuple(range(128))),
    Event(2**32 - 1, "user_offline", 0, "host", 0, "r" * 256),
    Ack(0),
    PublishStream(2**32 - 1, "remove", "u" * 1024),
])
def test_round_trip_at_the_limits(msg):
    assert decode(msg.encode()) == msg


# ----------------------------------------------------------------------------- malformed datagrams

GOOD_JOIN = Join(7, "room", 42, "host", "tk", 99).encode()


@pytest.mark.parametrize("data,message", [
    (b"", "control message too short: 0 bytes, need at least 6"),
    (b"SV\x03", "control message too short: 3 bytes, need at least 6"),
    (b"XY\x01\x04\x00\x00", "bad control magic b'XY', expected b'SV'"),
    (b"SV\x07\x04\x00\x00", "unsupported control version 7 (this build speaks 3)"),
    (b"SV\x02\x04\x00\x00", "unsupported control version 2 (this build speaks 3)"),
    (b"SV\x03\x2a\x00\x00", "unknown control message type 42 (known: 1..16)"),
    (b"SV\x03\x00\x00\x00", "unknown control message type 0 (known: 1..16)"),
    (frame(4, b"", length=3), "control message body truncated: header declares 3 bytes, 0 present"),
    (GOOD_JOIN[:-1],
     (f"control message body truncated: header declares {len(GOOD_JOIN) - 6} bytes, "
      f"{len(GOOD_JOIN) - 7} present")),
    (GOOD_JOIN + b"\x00\x00",
     f"control message has 2 bytes beyond its declared {len(GOOD_JOIN) - 6}-byte body"),
    (frame(4, b"") + bytes(1195), "control message is 1201 bytes, at most 1200"),
    (frame(1, bytes(5)), "Join body is 5 bytes, need at least 17"),
    (frame(2, bytes(18)), "Joined body is 18 bytes, need at least 19"),
    (frame(9, bytes(7)), "Ping body is 7 bytes, need at least 8"),
    (frame(4, b"\x00"), "Leave body has 1 unexpected bytes after its last field"),
    (frame(10, bytes(13)), "Pong body has 1 unexpected bytes after its last field"),
    # A string longer than what is left of the body.
    (frame(1, struct.pack("!IH", 7, 20) + b"abcde" + bytes(6)),
     "Join channel truncated: the string declares 20 bytes, the Join body has 11 left"),
    # Strings well formed but their lengths push the fixed fields past the end.
    (frame(1, struct.pack("!IH", 7, 6) + b"abcdef" + bytes(5)),
     "Join token truncated: need 2 bytes at offset 17, the Join body has 0 left"),
    (frame(1, struct.pack("!IH", 7, 65) + b"c" * 65 + bytes(11)),
     "Join channel is 65 bytes, at most 64"),
    (frame(5, struct.pack("!IBH", 1, 0, 513) + b"t" * 513),
     "SetRole token is 513 bytes, at most 512"),
    (frame(3, struct.pack("!IBH", 1, 0, 257) + b"r" * 257),
     "Refused reason is 257 bytes, at most 256"),
    (frame(1, struct.pack("!IH", 7, 2) + b"\xc3\x28" + bytes(11)), "bad UTF-8 in Join channel"),
    (frame(6, struct.pack("!IIB", 1, 2, 2)),
     "unknown RoleChanged role code 2 (valid: 0..1, meaning 'host' or 'audience')"),
    (frame(3, struct.pack("!IBH", 1, 18, 0)),
     ("unknown Refused code code 18 (valid: 0..17, meaning one of 'bad_request', 'no_token', "
      "'malformed_token', 'bad_signature', 'expired_token', 'wrong_channel', 'wrong_uid', "
      "'no_publish_privilege', 'too_many_hosts', 'not_joined', 'rate_limited', "
      "'server_error', 'too_many_channels', 'channel_full', 'server_busy', "
      "'end_to_end_encrypted', 'too_many_outputs', 'publish_not_allowed')")),
    (frame(15, struct.pack("!IBH", 1, 2, 0)),
     "unknown PublishStream action code 2 (valid: 0..1, meaning 'add' or 'remove')"),
    (frame(13, struct.pack("!IBIBIH", 1, 6, 1, 0, 1, 0)),
     ("unknown Event kind code 6 (valid: 0..5, meaning one of 'user_joined', 'user_left', "
      "'user_offline', 'role_changed', 'token_will_expire', 'removed')")),
    # List counts beyond the data and beyond the limits.
    (frame(12, struct.pack("!IH", 1, 10) + bytes(3)),
     "Nack sequence_numbers lists 10 sequence numbers (20 bytes) but the Nack body has 3 left"),
    (frame(12, struct.pack("!IH", 1, 129) + bytes(258)),
     "Nack sequence_numbers has 129 sequence numbers, at most 128"),
    (frame(11, struct.pack("!H", 2) + bytes(15)),
     ("ReceiverReport reports lists 2 report blocks (38 bytes) but the ReceiverReport body has "
      "15 left")),
    (frame(11, struct.pack("!H", 63) + bytes(62 * 19)),
     "ReceiverReport reports has 63 report blocks, at most 62"),
    (frame(2, struct.pack("!IIBQH", 1, 2, 0, 3, 1) + bytes(7)),
     "Joined hosts lists 1 hosts (8 bytes) but the Joined body has 7 left"),
    (frame(2, struct.pack("!IIBQH", 1, 2, 0, 3, 129) + bytes(8 * 129)),
     "Joined hosts has 129 hosts, at most 128"),
    (frame(9, struct.pack("!d", math.nan)), "Ping send_time must be a finite number, got nan"),
    (frame(10, struct.pack("!dI", -math.inf, 0)), "Pong echo_time must be a finite number, got -inf"),
])
def test_malformed_datagrams(data, message):
    with pytest.raises(ControlError) as e:
        decode(data)
    assert str(e.value) == message


@settings(max_examples=300)
@given(st.data())
def test_every_cut_or_extension_of_a_message_fails(data):
    """Changing the body length (declared or actual) of any valid message is always caught."""
    msg = data.draw(messages)
    encoded = msg.encode()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(ControlError):
        decode(encoded[:cut])
    with pytest.raises(ControlError):
        decode(encoded + data.draw(st.binary(min_size=1, max_size=8)))
    body = encoded[6:]
    if body:
        # Header and body agree on a shorter body: the message's own fields come up short.
        short = body[:data.draw(st.integers(0, len(body) - 1))]
        with pytest.raises(ControlError):
            decode(frame(TYPES[type(msg)], short))
    # Header and body agree on a longer body: bytes left after the last field.
    with pytest.raises(ControlError):
        decode(frame(TYPES[type(msg)], body + b"\x00"))


def check_decode(data):
    """decode returns a message that encodes back to exactly ``data``, or raises ControlError."""
    try:
        msg = decode(data)
    except ControlError:
        return
    assert msg.encode() == data


@settings(max_examples=1000)
@given(st.binary(max_size=64))
def test_random_bytes(data):
    check_decode(data)


@settings(max_examples=1000)
@given(st.sampled_from(sorted(TYPES.values())), st.binary(max_size=200))
def test_random_bodies_behind_a_valid_header(type_code, body):
    check_decode(frame(type_code, body))


@settings(max_examples=500)
@given(messages, st.data())
def test_mutated_messages(msg, data):
    encoded = bytearray(msg.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255))
    check_decode(bytes(encoded))


def slow_decode(data):
    """The message in ``data`` by the field-by-field codecs alone, or the
    ControlError's text."""
    cls = control._BY_TYPE.get(data[3]) if len(data) >= 6 and data[:3] == b"SV" + bytes(
        [VERSION]) else None
    if cls is None or struct.unpack("!H", data[4:6])[0] != len(data) - 6 or len(data) > 1200:
        return None
    try:
        return cls._decode_checked(data[6:])
    except ControlError as exc:
        return str(exc)


@settings(max_examples=500)
@given(messages, st.data())
def test_quick_codec_agrees_with_the_field_by_field_one(msg, data):
    """Messages of plain fields go through a quick codec (``control._Plan``):
    it must encode every message, and decode every datagram, mutated or not,
    exactly as the field-by-field codecs do (an error being the same error)."""
    encoded = msg.encode()
    assert encoded == msg._encode_checked()
    mutated = bytearray(encoded)
    for _ in range(data.draw(st.integers(0, 3))):
        if len(mutated) > 6:
            mutated[data.draw(st.integers(6, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    for datagram in (encoded, bytes(mutated)):
        expected = slow_decode(datagram)
        if expected is None:
            continue
        try:
            got = decode(datagram)
        except ControlError as exc:
            got = str(exc)
        assert got == expected


def test_quick_codec_covers_the_join_path():
    """The messages of every join (Join, Ping, Pong, Leave, Ack, Joined) have a quick codec."""
    for cls in (Join, Joined, Ping, Pong, Leave, Ack, Nack, Event):
        assert control._plan(cls) is not None, cls.__name__
    assert control._plan(ReceiverReport) is None       # fractions and tenths: field by field


# ----------------------------------------------------------------------------- encode checks

@pytest.mark.parametrize("msg,message", [
    (Join(0, "c" * 65, 0, "host", "", 0), "Join channel is 65 bytes of UTF-8, at most 64"),
    (Join(0, "é" * 33, 0, "host", "", 0), "Join channel is 66 bytes of UTF-8, at most 64"),
    (Join(0, "c", 0, "host", "t" * 513, 0), "Join token is 513 bytes of UTF-8, at most 512"),
    (Join(0, "c", 0, "admin", "", 0), "Join role must be 'host' or 'audience', got 'admin'"),
    (Join(0, b"c", 0, "host", "", 0), "Join channel must be a str, got bytes"),
    (Join(0, "\ud800", 0, "host", "", 0),
     "Join channel cannot be encoded as UTF-8: surrogates not allowed"),
    (Join(-1, "c", 0, "host", "", 0),
     "Join request_id must be an integer in 0..4294967295, got -1"),
    (Join(0, "c", 2**32, "host", "", 0),
     "Join uid must be an integer in 0..4294967295, got 4294967296"),
    (Join(0, "c", 0, "host", "", True), "Join ssrc must be an integer in 0..4294967295, got True"),
    (Joined(0, 0, "host", 2**64, ()),
     "Joined expires_at must be an integer in 0..18446744073709551615, got 18446744073709551616"),
    (Joined(0, 0, "host", 0, ((1, 2),) * 129), "Joined hosts has 129 hosts, at most 128"),
    (Joined(0, 0, "host", 0, ((1, 2, 3),)),
     "Joined hosts[0] must be a pair (uid, ssrc), got (1, 2, 3)"),
    (Joined(0, 0, "host", 0, ((1, -2),)),
     "Joined hosts[0] ssrc must be an integer in 0..4294967295, got -2"),
    (Refused(0, "nope", ""),
     ("Refused code must be one of 'bad_request', 'no_token', "
      "'malformed_token', 'bad_signature', 'expired_token', 'wrong_channel', 'wrong_uid', "
      "'no_publish_privilege', 'too_many_hosts', 'not_joined', 'rate_limited', 'server_error', "
      "'too_many_channels', 'channel_full', 'server_busy', 'end_to_end_encrypted', "
      "'too_many_outputs', 'publish_not_allowed', got 'nope'")),
    (Refused(0, "bad_request", "r" * 257), "Refused reason is 257 bytes of UTF-8, at most 256"),
    (Event(1, "joined", 0, "host", 0, ""),
     ("Event kind must be one of 'user_joined', 'user_left', "
      "'user_offline', 'role_changed', 'token_will_expire', 'removed', got 'joined'")),
    (SetRole(0, "Host"), "SetRole role must be 'host' or 'audience', got 'Host'"),
    (Ping(math.nan), "Ping send_time must be a finite number, got nan"),
    (Pong(math.inf, 0), "Pong echo_time must be a finite number, got inf"),
    (Ping("1.0"), "Ping send_time must be a finite number, got '1.0'"),
    (ReceiverReport((ReportBlock(0, 0.0, 0, 0.0),) * 63),
     "ReceiverReport reports has 63 report blocks, at most 62"),
    (ReceiverReport(((0, 0.0, 0, 0.0),)),
     "ReceiverReport reports[0] must be a ReportBlock, got tuple"),
    (ReceiverReport((ReportBlock(0, 1.5, 0, 0.0),)),
     "ReceiverReport reports[0] fraction_lost must be a number in 0..1, got 1.5"),
    (ReceiverReport((ReportBlock(0, 0.5, 0, -1.0),)),
     "ReceiverReport reports[0] jitter_ms must be a number of ms in 0..4294967.295, got -1.0"),
    (ReceiverReport((ReportBlock(0, 0.5, 2**32, 1.0),)),
     "ReceiverReport reports[0] highest_seq must be an integer in 0..4294967295, got 4294967296"),
    (Nack(0, tuple(range(129))), "Nack sequence_numbers has 129 sequence numbers, at most 128"),
    (Nack(0, (1, 65536)), "Nack sequence_numbers[1] must be an integer in 0..65535, got 65536"),
    (Nack(0, 5), "Nack sequence_numbers must be a tuple, got int"),
    (PublishStream(0, "start", "rtmp://h/a"),
     "PublishStream action must be 'add' or 'remove', got 'start'"),
    (PublishStream(0, "add", "u" * 1025), "PublishStream url is 1025 bytes of UTF-8, at most 1024"),
])
def test_encode_rejects_bad_fields(msg, message):
    with pytest.raises(ControlError) as e:
        msg.encode()
    assert str(e.value) == message


def test_messages_are_frozen():
    msg = Ping(1.0)
    with pytest.raises(AttributeError):
        msg.send_time = 2.0


def test_every_message_class_is_covered():
    """The test's table of type codes lists every message the module defines."""
    defined = {obj for obj in vars(control).values()
               if isinstance(obj, type) and issubclass(obj, control._Message)
               and obj is not control._Message}
    assert defined == set(TYPES)


@pytest.mark.parametrize("args,expected", [
    ((5, 0.25, 70000, 12.5, 3.0, 10), ReportBlock(5, 0.25, 70000, 12.5, 3.0, 10)),
    # A sequence-number jump: a burst or a loss count beyond their fields, a
    # negative count, a highest number past 32 bits, a fraction above 1.
    ((2**32 + 5, 1.7, 2**40 + 3, 1e12, 1e9, -4), ReportBlock(5, 1.0, 3, 4294967.295, 6553.5, 0)),
    ((1, -0.5, -1, -3.0, -2.0, 2**40), ReportBlock(1, 0.0, 2**32 - 1, 0.0, 0.0, 2**32 - 1)),
    ((1, math.nan, 0, math.inf, math.nan, 0), ReportBlock(1, 0.0, 0, 0.0, 0.0, 0)),
])
def test_clamped_report_block_always_encodes(args, expected):
    """Values written to the wire are clamped to their fields, never raised on."""
    block = control.clamped_report_block(*args)
    assert block == expected
    assert decode(ReceiverReport((block,)).encode()).reports[0].ssrc == expected.ssrc

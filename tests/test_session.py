"""The session security layer (engine.session): Noise NK handshake, cookies, transport,
replay window, keys."""

import hashlib
import hmac
import os
import stat
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stagevox.dsp.errors import ParameterError, ProtocolError
from stagevox.engine import session as sm
from stagevox.engine.session import (
    COOKIE_REPLY_SIZE,
    INIT_SIZE,
    KIND_COOKIE,
    KIND_INITIATION,
    KIND_RESPONSE,
    KIND_TRANSPORT,
    MAX_INIT_PAYLOAD,
    MAX_RESPONSE_PAYLOAD,
    PROTOCOL_VERSION,
    REJECT_AFTER_MESSAGES,
    TRANSPORT_HEADER,
    TRANSPORT_OVERHEAD,
    CookieJar,
    Initiator,
    ReplayWindow,
    Responder,
    Session,
    SessionError,
    datagram_kind,
    decode_key,
    encode_key,
    generate_private_key,
    load_or_create_key,
    peek_receiver_index,
    public_key,
)

SERVER_PRIVATE = bytes(range(1, 33))
ADDR = ("127.0.0.1", 40000)
OTHER_ADDR = ("127.0.0.2", 40000)
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


class FakeClock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def responder(clock):
    return Responder(SERVER_PRIVATE, cookie_jar=CookieJar(rotate_s=120.0, clock=clock))


def mac(key, data):
    """HMAC-SHA256 truncated to 16 bytes, computed here independently of the module."""
    return hmac.new(key, data, hashlib.sha256).digest()[:16]


def handshake(responder, client_payload=b"token", server_payload=b"welcome", addr=ADDR,
              server_index=77):
    """A complete handshake.

    Returns (initiator, result, response, client session, server session).
    """
    initiator = Initiator(responder.public_key, client_payload)
    first = responder.receive_initiation(initiator.initiation(), addr)
    assert initiator.read_cookie(first.cookie_reply)
    result = responder.receive_initiation(initiator.initiation(), addr)
    response, server_session = result.respond(server_index, server_payload)
    got, client_session = initiator.read_response(response)
    assert got == server_payload
    return initiator, result, response, client_session, server_session


@pytest.fixture
def sessions(responder):
    """(client session, server session) of one handshake."""
    _, _, _, client, server = handshake(responder)
    return client, server


def flip(data, bit):
    data = bytearray(data)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


# ---------------------------------------------------------------- handshake

def test_sizes():
    assert INIT_SIZE == 1200
    assert MAX_INIT_PAYLOAD == 1200 - 8 - 32 - 2 - 16 - 32
    assert MAX_RESPONSE_PAYLOAD == 1200 - 40 - 4 - 16
    assert TRANSPORT_OVERHEAD == TRANSPORT_HEADER + 16 == 29
    assert issubclass(SessionError, ProtocolError) and issubclass(SessionError, ValueError)


def test_full_handshake_round_trip(responder):
    initiator = Initiator(responder.public_key, b"the token", sender_index=0xDEADBEEF)
    initiation = initiator.initiation()
    assert len(initiation) == INIT_SIZE and datagram_kind(initiation) == KIND_INITIATION

    # No cookie yet: a small cookie reply, no payload.
    first = responder.receive_initiation(initiation, ADDR)
    assert first.payload is None and first.ephemeral is None
    assert first.client_index == 0xDEADBEEF
    assert len(first.cookie_reply) == COOKIE_REPLY_SIZE == 24 <= len(initiation)
    assert first.cookie_reply[:8] == bytes([KIND_COOKIE, PROTOCOL_VERSION, 0, 0]) \
        + struct.pack(">I", 0xDEADBEEF)
    assert initiator.read_cookie(first.cookie_reply)

    # With the cookie: the payload arrives, a resend gives the same ephemeral key.
    second = initiator.initiation()
    assert second[:-16] == initiation[:-16] and second[-16:] != initiation[-16:]
    result = responder.receive_initiation(second, ADDR)
    assert result.cookie_reply is None
    assert result.payload == b"the token"
    assert result.client_index == 0xDEADBEEF
    resent = responder.receive_initiation(initiator.initiation(), ADDR)
    assert resent.ephemeral == result.ephemeral and len(result.ephemeral) == 32
    assert resent.payload == result.payload

    response, server = result.respond(12345, b"welcome aboard")
    assert len(response) <= INIT_SIZE and datagram_kind(response) == KIND_RESPONSE
    payload, client = initiator.read_response(response)
    assert payload == b"welcome aboard"
    assert (client.local_index, client.remote_index) == (0xDEADBEEF, 12345)
    assert (server.local_index, server.remote_index) == (12345, 0xDEADBEEF)

    for i in range(3):
        up = client.seal(b"up %d" % i)
        assert peek_receiver_index(up) == 12345
        assert server.open(up) == b"up %d" % i
        down = server.seal(b"down %d" % i)
        assert peek_receiver_index(down) == 0xDEADBEEF
        assert client.open(down) == b"down %d" % i
    assert client.sealed == client.opened == server.sealed == server.opened == 3
    # Directional keys: a datagram never opens on the side that sealed it.
    with pytest.raises(SessionError):
        client.open(client.seal(b"x"))


def test_sessions_use_different_keys_per_direction(sessions):
    client, server = sessions
    a = client.seal(b"same")
    b = server.seal(b"same")
    assert a[TRANSPORT_HEADER:] != b[TRANSPORT_HEADER:]


def test_initiation_layout_and_macs(responder):
    """The wire layout, with mac1 and mac2 recomputed here from the specification."""
    initiator = Initiator(responder.public_key, b"abc", sender_index=5)
    data = initiator.initiation()
    assert data[:8] == bytes([1, 1, 0, 0, 0, 0, 0, 5])
    mac1_key = hashlib.sha256(b"mac1" + responder.public_key).digest()
    assert data[-32:-16] == mac(mac1_key, data[:-32])
    assert data[-16:] == bytes(16)
    assert initiator.initiation() == data       # same ciphertext every call
    reply = responder.receive_initiation(data, ADDR).cookie_reply
    cookie = reply[8:]
    assert cookie == responder.cookie_jar.make(ADDR)
    address = bytes([127, 0, 0, 1]) + (40000).to_bytes(2, "big")
    assert cookie == mac(responder.cookie_jar._current, address)
    initiator.read_cookie(reply)
    with_cookie = initiator.initiation()
    assert with_cookie[-16:] == mac(cookie, with_cookie[:-16])


def test_largest_payloads(responder):
    big = bytes(range(256)) * 4 + b"x" * (MAX_INIT_PAYLOAD - 1024)
    _, result, response, _, _ = handshake(responder, big, b"y" * MAX_RESPONSE_PAYLOAD)
    assert result.payload == big
    assert len(response) == INIT_SIZE
    with pytest.raises(SessionError, match=f"1111 bytes, at most {MAX_INIT_PAYLOAD}"):
        Initiator(responder.public_key, b"x" * (MAX_INIT_PAYLOAD + 1))
    initiator = Initiator(responder.public_key, b"")
    initiator.read_cookie(responder.receive_initiation(initiator.initiation(), ADDR).cookie_reply)
    result = responder.receive_initiation(initiator.initiation(), ADDR)
    assert result.payload == b""
    with pytest.raises(SessionError, match="response payload is 1141 bytes"):
        result.respond(1, b"y" * (MAX_RESPONSE_PAYLOAD + 1))


def test_cookie_reply_does_no_diffie_hellman(responder, monkeypatch):
    initiator = Initiator(responder.public_key, b"t")

    def no_dh(*args):
        raise AssertionError("Diffie-Hellman before the address was proven")

    monkeypatch.setattr(sm, "_dh", no_dh)
    result = responder.receive_initiation(initiator.initiation(), ADDR)
    assert result.cookie_reply is not None and result.payload is None


def test_wrong_server_key_fails_mac1_without_diffie_hellman(responder, monkeypatch):
    wrong = public_key(generate_private_key())
    initiator = Initiator(wrong, b"t")
    dh_calls = []
    real_dh = sm._dh
    monkeypatch.setattr(sm, "_dh", lambda *a: dh_calls.append(a) or real_dh(*a))
    with pytest.raises(SessionError, match="mac1"):
        responder.receive_initiation(initiator.initiation(), ADDR)
    assert dh_calls == []


def forge(responder, body, addr=ADDR):
    """An initiation with the given first 1168 bytes and correct mac1 and mac2 for ``addr``."""
    assert len(body) == INIT_SIZE - 32
    mac1_key = hashlib.sha256(b"mac1" + responder.public_key).digest()
    data = body + mac(mac1_key, body)
    return data + mac(responder.cookie_jar.make(addr), data)


def test_forged_macs_with_random_ciphertext_fail_decryption(responder):
    body = bytes([1, 1, 0, 0, 0, 0, 0, 9]) + public_key(generate_private_key()) \
        + os.urandom(INIT_SIZE - 32 - 40)
    with pytest.raises(SessionError, match="does not authenticate"):
        responder.receive_initiation(forge(responder, body), ADDR)
    # A low-order ephemeral key (all zeros) is refused, not an exception of another kind.
    body = bytes([1, 1, 0, 0, 0, 0, 0, 9]) + bytes(32) + os.urandom(INIT_SIZE - 32 - 40)
    with pytest.raises(SessionError, match="low-order"):
        responder.receive_initiation(forge(responder, body), ADDR)


def test_bad_length_prefix(responder):
    header = bytes([1, 1, 0, 0, 0, 0, 0, 3])
    plaintext = struct.pack(">H", MAX_INIT_PAYLOAD + 1) + bytes(MAX_INIT_PAYLOAD)
    _, _, message = sm._nk_initiator_write(responder.public_key, sm.PROLOGUE + header, plaintext)
    with pytest.raises(SessionError, match="length prefix is 1111"):
        responder.receive_initiation(forge(responder, header + message), ADDR)


def test_header_is_bound_to_the_handshake(responder):
    """Changing the sender index (and re-making both MACs) breaks the Noise decryption."""
    initiator = Initiator(responder.public_key, b"t", sender_index=1)
    body = bytearray(initiator.initiation()[:-32])
    body[7] = 2
    with pytest.raises(SessionError, match="does not authenticate"):
        responder.receive_initiation(forge(responder, bytes(body)), ADDR)


def test_respond_only_once(responder):
    initiator = Initiator(responder.public_key, b"t")
    first = responder.receive_initiation(initiator.initiation(), ADDR)
    with pytest.raises(SessionError, match="cookie reply"):
        first.respond(1, b"")
    initiator.read_cookie(first.cookie_reply)
    result = responder.receive_initiation(initiator.initiation(), ADDR)
    with pytest.raises(ParameterError, match="server index"):
        result.respond(2 ** 32, b"")
    result.respond(1, b"")
    with pytest.raises(SessionError, match="already answered"):
        result.respond(1, b"")


def test_read_response_checks(responder):
    initiator, result, response, _, _ = handshake(responder)
    with pytest.raises(SessionError, match="already complete"):
        initiator.read_response(response)
    assert initiator.read_cookie(bytes([2, 1, 0, 0]) + struct.pack(">I", initiator.sender_index)
                                 + bytes(16)) is False

    other = Initiator(responder.public_key, b"t", sender_index=1)
    with pytest.raises(SessionError, match="receiver index"):
        other.read_response(response)
    with pytest.raises(SessionError, match="response is 59 bytes, expected 60..1200"):
        other.read_response(response[:59])
    assert other.read_cookie(bytes([2, 1, 0, 0, 0, 0, 0, 2]) + bytes(16)) is False


def test_failed_response_leaves_the_handshake_intact(responder):
    initiator = Initiator(responder.public_key, b"t")
    initiator.read_cookie(responder.receive_initiation(initiator.initiation(), ADDR).cookie_reply)
    result = responder.receive_initiation(initiator.initiation(), ADDR)
    response, server = result.respond(9, b"ok")
    forged = response[:40] + os.urandom(len(response) - 40)
    with pytest.raises(SessionError):
        initiator.read_response(forged)
    with pytest.raises(SessionError):
        initiator.read_response(flip(response, 8 * len(response) - 1))
    payload, client = initiator.read_response(response)
    assert payload == b"ok" and server.open(client.seal(b"hi")) == b"hi"


@FAST
@given(bit=st.integers(0, 8 * INIT_SIZE - 1))
def test_initiation_bit_flip(responder, bit):
    initiator = Initiator(responder.public_key, b"payload", sender_index=4)
    initiator.read_cookie(responder.receive_initiation(initiator.initiation(), ADDR).cookie_reply)
    flipped = flip(initiator.initiation(), bit)
    if bit >= 8 * (INIT_SIZE - 16):
        # A flipped mac2 is an invalid cookie MAC: the client is only asked again.
        result = responder.receive_initiation(flipped, ADDR)
        assert result.payload is None and result.cookie_reply is not None
    else:
        with pytest.raises(SessionError):
            responder.receive_initiation(flipped, ADDR)
    if 8 * 4 <= bit < 8 * (INIT_SIZE - 32):
        # Past mac1, the Noise handshake itself must refuse the altered message.
        with pytest.raises(SessionError):
            responder.receive_initiation(forge(responder, flipped[:-32]), ADDR)


@FAST
@given(bit=st.integers(0, 8 * (8 + 32 + 4 + 3 + 16) - 1))
def test_response_bit_flip(responder, bit):
    initiator = Initiator(responder.public_key, b"p")
    initiator.read_cookie(responder.receive_initiation(initiator.initiation(), ADDR).cookie_reply)
    response, _ = responder.receive_initiation(initiator.initiation(), ADDR).respond(3, b"abc")
    with pytest.raises(SessionError):
        initiator.read_response(flip(response, bit))
    payload, _ = initiator.read_response(response)
    assert payload == b"abc"


def test_truncated_and_reordered_handshake_messages(responder):
    initiator = Initiator(responder.public_key, b"p")
    initiation = initiator.initiation()
    reply = responder.receive_initiation(initiation, ADDR).cookie_reply
    for cut in (0, 1, 8, 40, INIT_SIZE - 1):
        with pytest.raises(SessionError, match=f"initiation is {cut} bytes"):
            responder.receive_initiation(initiation[:cut], ADDR)
    for cut in (0, 7, 23):
        with pytest.raises(SessionError, match="cookie reply is"):
            initiator.read_cookie(reply[:cut])
    # Out of order: the cookie reply where a response is expected, and the other way round.
    with pytest.raises(SessionError, match="response is 24 bytes"):
        initiator.read_response(reply)
    initiator.read_cookie(reply)
    result = responder.receive_initiation(initiator.initiation(), ADDR)
    response, server = result.respond(5, b"r")
    with pytest.raises(SessionError):
        initiator.read_cookie(response)
    with pytest.raises(SessionError, match="initiation is"):
        responder.receive_initiation(response, ADDR)
    with pytest.raises(SessionError, match="kind byte is 0x01"):
        initiator.read_response(initiation[:len(response)])
    with pytest.raises(SessionError, match="kind byte is 0x03"):
        initiator.read_cookie(response[:24])
    with pytest.raises(SessionError, match="kind byte"):
        server.open(initiation)
    for cut in range(len(response)):
        with pytest.raises(SessionError):
            initiator.read_response(response[:cut])
    assert initiator.read_response(response)[0] == b"r"


@pytest.mark.parametrize("index, value, message", [
    (0, 2, "kind byte is 0x02"), (1, 2, "protocol version 2"),
    (2, 1, "reserved"), (3, 1, "reserved")])
def test_initiation_header_checks(responder, index, value, message):
    data = bytearray(Initiator(responder.public_key, b"").initiation())
    data[index] = value
    with pytest.raises(SessionError, match=message):
        responder.receive_initiation(bytes(data), ADDR)


# ---------------------------------------------------------------- cookies

def test_cookie_is_bound_to_the_address(clock):
    jar = CookieJar(clock=clock)
    cookie = jar.make(ADDR)
    assert len(cookie) == 16
    assert jar.check(ADDR, cookie)
    assert not jar.check(OTHER_ADDR, cookie)
    assert not jar.check(("127.0.0.1", 40001), cookie)
    assert not jar.check(ADDR, cookie[:15])
    assert not jar.check(ADDR, None)
    v6 = ("2001:db8::1", 5000, 0, 0)
    assert jar.check(v6, jar.make(v6)) and not jar.check(("2001:db8::2", 5000), jar.make(v6))
    assert jar.make(("::1", 5)) != jar.make(("127.0.0.1", 5))
    with pytest.raises(ParameterError, match="IPv4 or IPv6"):
        jar.make(("localhost", 5))
    with pytest.raises(ParameterError, match="port"):
        jar.make(("127.0.0.1", 70000))
    with pytest.raises(ParameterError, match="rotate_s"):
        CookieJar(rotate_s=0)


def test_cookie_from_another_address_gets_another_cookie_reply(responder):
    initiator = Initiator(responder.public_key, b"t")
    initiator.read_cookie(responder.receive_initiation(initiator.initiation(), ADDR).cookie_reply)
    moved = responder.receive_initiation(initiator.initiation(), OTHER_ADDR)
    assert moved.payload is None
    assert moved.cookie_reply[8:] == responder.cookie_jar.make(OTHER_ADDR)
    assert responder.receive_initiation(initiator.initiation(), ADDR).payload == b"t"


def test_cookie_rotation(clock):
    jar = CookieJar(rotate_s=120.0, clock=clock)
    old = jar.make(ADDR)
    clock.t += 119.9
    assert jar.make(ADDR) == old
    clock.t += 0.2                      # one rotation: the previous secret still counts
    assert jar.make(ADDR) != old
    assert jar.check(ADDR, old)
    clock.t += 120.0                    # two rotations: the one before is gone
    assert not jar.check(ADDR, old)
    recent = jar.make(ADDR)
    clock.t += 5 * 120.0                # a long pause drops both secrets at once
    assert not jar.check(ADDR, recent)


def test_cookie_rotation_through_the_responder(responder, clock):
    initiator = Initiator(responder.public_key, b"t")
    initiator.read_cookie(responder.receive_initiation(initiator.initiation(), ADDR).cookie_reply)
    clock.t += 130.0
    assert responder.receive_initiation(initiator.initiation(), ADDR).payload == b"t"
    clock.t += 120.0
    assert responder.receive_initiation(initiator.initiation(), ADDR).payload is None


# ---------------------------------------------------------------- replay window

def reference_accepts(seen, counter, size):
    """The slow model: new, and not older than the window below the highest seen."""
    return counter not in seen and (not seen or counter > max(seen) - size)


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 130),
       counters=st.lists(st.one_of(st.integers(0, 300), st.integers(0, 2 ** 64 - 1)),
                         max_size=60))
def test_replay_window_matches_reference(size, counters):
    window = ReplayWindow(size)
    seen = set()
    for counter in counters:
        expected = reference_accepts(seen, counter, size)
        assert window.check(counter) == expected, (counter, sorted(seen)[-5:])
        if expected:
            window.update(counter)
            seen.add(counter)
    assert window.highest == (max(seen) if seen else -1)


@settings(max_examples=80, deadline=None)
@given(counters=st.lists(st.integers(0, 5000), max_size=80))
def test_replay_window_default_size(counters):
    window = ReplayWindow()
    seen = set()
    for counter in counters:
        expected = reference_accepts(seen, counter, 2048)
        assert window.check(counter) == expected
        if expected:
            window.update(counter)
            seen.add(counter)


def test_replay_window_edges():
    window = ReplayWindow(64)
    assert window.check(0)
    window.update(0)
    assert not window.check(0)                      # duplicate
    window.update(10)
    assert window.check(5) and not window.check(10)
    window.update(73)                               # window now covers 10..73
    assert not window.check(9) and window.check(11) and not window.check(10)
    window.update(2 ** 64 - 1)                      # a far jump slides everything out
    assert not window.check(73) and not window.check(2 ** 64 - 1)
    assert window.check(2 ** 64 - 64) and not window.check(2 ** 64 - 65)
    assert not window.check(2 ** 64) and not window.check(-1)
    window.update(5)                                # below the window: ignored
    assert window.highest == 2 ** 64 - 1
    with pytest.raises(ParameterError):
        ReplayWindow(0)


# ---------------------------------------------------------------- transport

def test_transport_layout(sessions):
    """Header and AEAD recomputed here: nonce = 4 zero bytes + counter little-endian,
    associated data = the header."""
    client, server = sessions
    client.seal(b"first")
    datagram = client.seal(b"hello")
    header = struct.pack(">BIQ", KIND_TRANSPORT, server.local_index, 1)
    assert datagram[:13] == header and len(datagram) == 5 + TRANSPORT_OVERHEAD
    k1 = client._send
    nonce = bytes(4) + (1).to_bytes(8, "little")
    assert k1.decrypt(nonce, datagram[13:], header) == b"hello"


def test_transport_replay_and_reordering(sessions):
    client, server = sessions
    datagrams = [client.seal(b"%d" % i) for i in range(20)]
    for i in (3, 0, 1, 19, 2, 18, 4):
        assert server.open(datagrams[i]) == b"%d" % i
    for i in (3, 19, 0):
        with pytest.raises(SessionError, match="replay"):
            server.open(datagrams[i])
    assert server.opened == 7


def test_transport_counter_far_ahead_and_too_old(sessions):
    client, server = sessions
    early = client.seal(b"early")
    client._send_counter = 5000
    assert server.open(client.seal(b"late")) == b"late"
    with pytest.raises(SessionError, match="outside the window"):
        server.open(early)


def test_replay_is_rejected_before_decryption(sessions, monkeypatch):
    client, server = sessions
    datagram = client.seal(b"x")
    server.open(datagram)

    class NoDecrypt:
        def decrypt(self, *a):
            raise AssertionError("decrypted a replay")

    monkeypatch.setattr(server, "_receive", NoDecrypt())
    with pytest.raises(SessionError, match="replay"):
        server.open(datagram)


def test_failed_authentication_does_not_move_the_window(sessions):
    client, server = sessions
    datagram = client.seal(b"x")
    with pytest.raises(SessionError, match="does not authenticate"):
        server.open(datagram[:-1] + bytes([datagram[-1] ^ 1]))
    assert server.open(datagram) == b"x"


@FAST
@given(bit=st.integers(0, 8 * (100 + TRANSPORT_OVERHEAD) - 1))
def test_transport_bit_flip(sessions, bit):
    client, server = sessions
    datagram = client.seal(bytes(range(100)))
    with pytest.raises(SessionError):
        server.open(flip(datagram, bit))
    assert server.open(datagram) == bytes(range(100))


def test_transport_truncated_and_misdirected(sessions):
    client, server = sessions
    datagram = client.seal(b"abc")
    for cut in range(len(datagram)):
        with pytest.raises(SessionError):
            server.open(datagram[:cut])
    other = Session(os.urandom(32), os.urandom(32), server.local_index + 1, 0)
    with pytest.raises(SessionError, match="receiver index"):
        other.open(datagram)
    assert server.open(datagram) == b"abc"


def test_seal_limit(sessions):
    client, _ = sessions
    client._send_counter = REJECT_AFTER_MESSAGES - 1
    client.seal(b"last")
    with pytest.raises(SessionError, match="limit"):
        client.seal(b"one too many")


def test_peek_receiver_index_and_kind():
    assert peek_receiver_index(b"") is None
    assert peek_receiver_index(bytes([4, 0, 0, 1, 2]) + bytes(24)) == 258
    assert peek_receiver_index(bytes([4, 0, 0, 1, 2]) + bytes(23)) is None
    assert peek_receiver_index(bytes([3, 0, 0, 1, 2]) + bytes(24)) is None
    assert datagram_kind(b"") is None and datagram_kind(b"\x04abc") == KIND_TRANSPORT


# ---------------------------------------------------------------- fuzz: only SessionError

@FAST
@given(data=st.one_of(st.binary(max_size=1300), st.binary(min_size=1200, max_size=1200),
                      st.binary(min_size=1196, max_size=1196).map(
                          lambda b: bytes([1, 1, 0, 0]) + b)))
def test_fuzz_receive_initiation(responder, data):
    try:
        result = responder.receive_initiation(data, ADDR)
    except SessionError:
        return
    assert result.cookie_reply is not None or result.payload is not None


@FAST
@given(body=st.binary(min_size=INIT_SIZE - 40 - 32, max_size=INIT_SIZE - 40 - 32),
       e=st.binary(min_size=32, max_size=32))
def test_fuzz_receive_initiation_past_the_macs(responder, body, e):
    with pytest.raises(SessionError):
        responder.receive_initiation(forge(responder, bytes([1, 1, 0, 0, 0, 0, 0, 1]) + e + body),
                                     ADDR)


@pytest.fixture
def waiting_initiator(responder):
    return Initiator(responder.public_key, b"p", sender_index=7)


@FAST
@given(data=st.one_of(st.binary(max_size=1300),
                      st.binary(max_size=1200).map(lambda b: bytes([3, 1, 0, 0, 0, 0, 0, 7]) + b),
                      st.binary(min_size=16, max_size=16).map(
                          lambda b: bytes([2, 1, 0, 0, 0, 0, 0, 7]) + b)))
def test_fuzz_initiator(waiting_initiator, data):
    for method in (waiting_initiator.read_cookie, waiting_initiator.read_response):
        try:
            method(data)
        except SessionError:
            pass


@FAST
@given(data=st.one_of(st.binary(max_size=200),
                      st.tuples(st.integers(0, 2 ** 64 - 1), st.binary(max_size=100)).map(
                          lambda t: struct.pack(">BIQ", 4, 77, t[0]) + t[1])))
def test_fuzz_session_open(sessions, data):
    _, server = sessions
    with pytest.raises(SessionError):
        server.open(data)


@settings(max_examples=150, deadline=None)
@given(text=st.one_of(st.text(max_size=60),
                      st.text(alphabet=B64URL, min_size=43, max_size=43),
                      st.binary(max_size=50).map(lambda b: b.decode("latin-1"))))
def test_fuzz_decode_key(text):
    try:
        raw = decode_key(text)
    except SessionError:
        return
    assert len(raw) == 32 and encode_key(raw) == text


# ---------------------------------------------------------------- keys

def test_key_encoding():
    private = generate_private_key()
    assert len(private) == 32 and len(public_key(private)) == 32
    text = encode_key(private)
    assert len(text) == 43 and "=" not in text
    assert decode_key(text) == private
    with pytest.raises(SessionError, match="42 characters, expected 43"):
        decode_key(text[:-1])
    with pytest.raises(SessionError, match=r"'\+' at position 3"):
        decode_key(text[:3] + "+" + text[4:])
    with pytest.raises(SessionError, match="non-zero unused bits"):
        decode_key("A" * 42 + "B")
    with pytest.raises(SessionError, match="31 bytes"):
        encode_key(bytes(31))
    with pytest.raises(SessionError, match="must be a str"):
        decode_key(b"x" * 43)
    with pytest.raises(SessionError, match="private key is 16 bytes"):
        Responder(bytes(16))
    with pytest.raises(SessionError, match="server public key is 33 bytes"):
        Initiator(bytes(33), b"")


def test_load_or_create_key(tmp_path):
    path = tmp_path / "server.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == encode_key(key) + "\n"
    assert load_or_create_key(str(path)) == key
    assert os.listdir(tmp_path) == ["server.key"]          # no temporary file left
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_or_create_key(tmp_path / "missing" / "server.key")


@pytest.mark.parametrize("content, message", [
    (b"", "0 lines"),
    (b"tooshort\n", "8 characters"),
    (b"A" * 43 + b"\n" + b"A" * 43 + b"\n", "2 lines"),
    (b"\xff" * 43, "not ASCII"),
    (b"A" * 42 + b"!\n", "'!' at position 42"),
    (b"A" * 5000, "larger than"),
])
def test_load_or_create_key_refuses_a_bad_file(tmp_path, content, message):
    path = tmp_path / "server.key"
    path.write_bytes(content)
    with pytest.raises(SessionError, match=message) as info:
        load_or_create_key(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == content


# ---------------------------------------------------------------- Noise test vectors
# Noise_NK_25519_ChaChaPoly_SHA256 from the public vector files in mcginty/snow,
# tests/vectors/cacophony.txt (generated by cacophony) and tests/vectors/snow.txt.
# The first two messages are the handshake, the rest transport messages
# alternating initiator -> responder (k1) and responder -> initiator (k2).

CACOPHONY = {
    "prologue": "4a6f686e2047616c74",
    "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
    "remote_static": "31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62",
    "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
    "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
    "handshake_hash": "2efa38a9c7c93ac98f3a097af25c2f58b9e7673787717bc27e98827118c2c1a5",
    "messages": [
        ("4c756477696720766f6e204d69736573",
         "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
         "8134d00711fdb390a0d178fa008f6d47d2891e5ea18ae136c3b4c23ac384efb0"),
        ("4d757272617920526f746862617264",
         "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
         "8ea16e3701bc0d77744f117bee22451c9afa7f4cdbbcff00c04a8ee0913c88"),
        ("462e20412e20486179656b",
         "a62de29ce27cb80245d440d986ed816c156e9d757d7008df2198b0"),
        ("4361726c204d656e676572",
         "174a35f11c689f4530d7208618e0564ae12f2f50ba8eb4df5382ff"),
        ("4a65616e2d426170746973746520536179",
         "337e475ebb8eae60f91974c4e455a5af38d1d8628d1803b160d60442874b0a1777"),
        ("457567656e2042f6686d20766f6e2042617765726b",
         "047e80e060b7bb08b53c5a23dfe9920cae135b9d1dc6302fc475003062723700366346ac9d"),
    ],
}

SNOW = {
    "prologue": "5468657265206973206e6f20726967687420616e642077726f6e672e2054686572652773"
                "206f6e6c792066756e20616e6420626f72696e672e",
    "init_ephemeral": "1b0c2affa2a0ba57c3d96a2b5def1671aa00f66a46d306618a2546a6757f5f65",
    "remote_static": "a1685fa10096ad890ba2427ef08d85c44ffe7b1990ebb6ed7555f57b248b9319",
    "resp_static": "eb80faf5ebe8437d8edacb3bd95d0718a4eb3e5de6f835bca4d7e161301a563e",
    "resp_ephemeral": "908f7161432df9036325367c1592ca275fea9a44cdf70d4f3135e16d0034dedc",
    "handshake_hash": None,
    "messages": [
        ("6b2da7554f3d4b8a27f371a0b2fb0d1b9c4830ea29e804b05d698f3f302740f4",
         "1c83e1721fadb9fc168e67da9d25503aa286e42d7d35b80c73096d29cce50309"
         "6ee5516c7bd399fb1f8b0f2affa71e262626c7eb957069a46177f86530217aac"
         "9d18bbb78c297d3de7b651995c6783cc"),
        ("0216bdac2fb32a7c53d9c4711e3ed995c2e856d19fb1ed465cc88efd4f347e6f",
         "d514c7509ba675f32aaaaef759846609383fb36f6081a3aed84737c800a3127c"
         "66ebfa61ba8ee2a58b5074e40e3c0ce02ac02c30f3b6afd9ace9fcc4494485e7"
         "e3e545d05f5e9f1336ab5cd9f0d8eb54"),
        ("0497dfc21ec4d70f04ffc7094b9467808c043d027c87d410b62e1af3dc791dce",
         "5bd6fb7c4fd75dd4d15b6600c8df4a59509709a97affb19f4e4a72e62dc8459f"
         "89361ae710a9fd58545eee4ceb37ec01"),
        ("874ba1f2539061f556a212f83c7a96faf33a451aa75099ef8a9b2aeb54c48f36",
         "1f7b7dd2a4992441bc91b6996b0079c3b0747e5aa8dc2443b1fe01331d57644"
         "647bbef13cda29f0abc9836739df52fff"),
    ],
}


@pytest.mark.parametrize("vector", [CACOPHONY, SNOW], ids=["cacophony", "snow"])
def test_noise_nk_vector(vector):
    h = bytes.fromhex
    prologue = h(vector["prologue"])
    resp_static = h(vector["resp_static"])
    assert public_key(resp_static) == h(vector["remote_static"])
    messages = [(h(p), h(c)) for p, c in vector["messages"]]

    i_state, i_e, message1 = sm._nk_initiator_write(
        h(vector["remote_static"]), prologue, messages[0][0], h(vector["init_ephemeral"]))
    assert message1 == messages[0][1]
    r_state, remote_e, payload1 = sm._nk_responder_read(
        sm._private_key_object(resp_static), public_key(resp_static), prologue, message1)
    assert payload1 == messages[0][0]
    message2, r_keys = sm._nk_responder_write(r_state, remote_e, messages[1][0],
                                              h(vector["resp_ephemeral"]))
    assert message2 == messages[1][1]
    payload2, i_keys = sm._nk_initiator_read(i_state, i_e, message2)
    assert payload2 == messages[1][0]
    assert i_keys == r_keys
    assert i_state.h == r_state.h
    if vector["handshake_hash"]:
        assert i_state.h == h(vector["handshake_hash"])

    k1, k2 = i_keys
    for i, (payload, ciphertext) in enumerate(messages[2:]):
        key = k1 if i % 2 == 0 else k2
        nonce = bytes(4) + (i // 2).to_bytes(8, "little")
        assert ChaCha20Poly1305(key).encrypt(nonce, payload, b"") == ciphertext


def test_noise_protocol_name_is_used_unhashed():
    """The name is exactly 32 bytes, so h starts as the name itself (spec section 5.2)."""
    state = sm._SymmetricState(sm.NOISE_PROTOCOL_NAME)
    assert len(sm.NOISE_PROTOCOL_NAME) == 32 and state.h == state.ck == sm.NOISE_PROTOCOL_NAME
    long_name = sm._SymmetricState(b"N" * 33)
    assert long_name.h == hashlib.sha256(b"N" * 33).digest()
    short = sm._SymmetricState(b"abc")
    assert short.h == b"abc" + bytes(29)



def test_public_key_text_never_reads_as_an_option():
    """Keys whose base64 starts with "-" still print safely for a command line."""
    for _ in range(200):
        public = public_key(generate_private_key())
        text = sm.public_key_text(public)
        assert text.startswith("svk1.") and not text.startswith("-")
        assert sm.parse_public_key(text) == public
        assert sm.parse_public_key(encode_key(public)) == public
    with pytest.raises(SessionError, match="characters"):
        sm.parse_public_key("svk1.short")

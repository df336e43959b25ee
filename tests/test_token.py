"""Access tokens (engine.token): made, verified, and every refusal on its own."""

import base64
import hashlib
import hmac
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagevox.engine.token import (
    PRIVILEGE_JOIN,
    PRIVILEGE_PUBLISH,
    TokenClaims,
    TokenError,
    make_token,
    read_claims,
    verify_token,
)

SECRET = b"server secret, 32 bytes of it..!"
NOW = 1_700_000_000.0


def b64d(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64e(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def split(token):
    """(payload bytes, mac bytes) of a token, decoded here independently of the module."""
    prefix, payload, mac = token.split(".")
    assert prefix == "sv1"
    return b64d(payload), b64d(mac)


def join(payload, mac):
    return "sv1." + b64e(payload) + "." + b64e(mac)


def refusal(token, channel="room", uid=42, now=NOW + 1, secret=SECRET):
    with pytest.raises(TokenError) as e:
        verify_token(secret, token, channel, uid, now=now)
    return e.value


# ----------------------------------------------------------------------------- made and verified

def test_host_token_verifies():
    token = make_token(SECRET, "room", 42, "host", expire_s=600, now=NOW)
    claims = verify_token(SECRET, token, "room", 42, now=NOW + 1)
    assert claims == TokenClaims("room", 42, PRIVILEGE_JOIN | PRIVILEGE_PUBLISH, int(NOW) + 600)
    assert claims.can_publish


def test_audience_token_cannot_publish():
    token = make_token(SECRET, "room", 42, "audience", expire_s=600, now=NOW)
    claims = verify_token(SECRET, token, "room", 42, now=NOW)
    assert claims.privileges == PRIVILEGE_JOIN and not claims.can_publish


def test_payload_layout_and_mac_checked_independently():
    token = make_token("pässword", "ktv-房间", 0xDEADBEEF, "host", expire_s=3600, now=NOW)
    assert token.isascii() and token.isprintable() and "=" not in token
    payload, mac = split(token)
    channel = "ktv-房间".encode()
    assert payload == struct.pack("!BIBQ", 1, 0xDEADBEEF, 3, int(NOW) + 3600) + channel
    # A str secret is its UTF-8 bytes.
    assert mac == hmac.new("pässword".encode(), payload, hashlib.sha256).digest()
    claims = verify_token("pässword".encode(), token, "ktv-房间", 0xDEADBEEF, now=NOW)
    assert claims.uid == 0xDEADBEEF


def test_expiry_rounds_up_to_whole_seconds():
    token = make_token(SECRET, "room", 1, expire_s=0.25, now=NOW + 0.5)
    assert split(token)[0][6:14] == struct.pack("!Q", int(NOW) + 1)
    assert verify_token(SECRET, token, "room", 1, now=NOW + 0.75).expires_at == int(NOW) + 1


def test_default_clock_is_now():
    token = make_token(SECRET, "room", 42)  # one hour from the real clock
    assert verify_token(SECRET, token, "room", 42).can_publish


@settings(max_examples=100)
@given(channel=st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=16),
       uid=st.integers(0, 2**32 - 1), role=st.sampled_from(["host", "audience"]),
       expire_s=st.integers(1, 10**6), secret=st.binary(min_size=1, max_size=64))
def test_any_valid_token_round_trips(channel, uid, role, expire_s, secret):
    token = make_token(secret, channel, uid, role, expire_s=expire_s, now=NOW)
    assert len(token) <= 512  # fits the control message's token field
    payload, mac = split(token)
    assert mac == hmac.new(secret, payload, hashlib.sha256).digest()
    claims = verify_token(secret, token, channel, uid, now=NOW + expire_s - 1)
    assert claims == TokenClaims(channel, uid, 3 if role == "host" else 1, int(NOW) + expire_s)


# ----------------------------------------------------------------------------- each refusal

GOOD = make_token(SECRET, "room", 42, "host", expire_s=600, now=NOW)


def test_no_token():
    e = refusal("")
    assert e.code == "no_token" and str(e) == "no token was given"


@pytest.mark.parametrize("token,reason", [
    ("sv2." + GOOD[4:], "token does not start with 'sv1.'"),
    ("hello", "token does not start with 'sv1.'"),
    ("sv1." + GOOD[4:] + ".x", "token must have 2 base64url parts after 'sv1.', got 3"),
    ("sv1.abc", "token must have 2 base64url parts after 'sv1.', got 1"),
    ("sv1.ab+c." + GOOD.split(".")[2], "token payload is not base64url"),
    ("sv1.abcde." + GOOD.split(".")[2], "token payload is not base64url"),  # 5 chars: 1 mod 4
    (GOOD.rsplit(".", 1)[0] + ".AAAA", "token signature is 3 bytes, expected 32"),
    (GOOD + "é", "token signature is not base64url"),
    (join(struct.pack("!BIBQ", 1, 42, 3, 0), bytes(32)),
     "token payload is 14 bytes, expected 15..78"),
    (join(struct.pack("!BIBQ", 1, 42, 3, 0) + b"c" * 65, bytes(32)),
     "token payload is 79 bytes, expected 15..78"),
    (join(b"\x02" + split(GOOD)[0][1:], split(GOOD)[1]),
     "unsupported token version 2 (this build reads 1)"),
])
def test_malformed(token, reason):
    e = refusal(token)
    assert e.code == "malformed_token"
    assert str(e) == reason


def test_non_canonical_base64_is_malformed():
    """The last base64 character may hide unused bits; a token with them set is not ours."""
    prefix, payload, mac = GOOD.split(".")
    assert len(mac) % 4 == 3  # 32 bytes -> 43 characters, the last holding 2 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    tweaked = mac[:-1] + alphabet[alphabet.index(mac[-1]) ^ 1]
    assert b64d(tweaked) == b64d(mac)  # same bytes to a lenient decoder
    e = refusal(f"{prefix}.{payload}.{tweaked}")
    assert e.code == "malformed_token" and str(e) == "token signature is not in canonical base64url"


@settings(max_examples=200)
@given(st.data())
def test_one_flipped_payload_bit_is_a_bad_signature(data):
    """Any bit after the version byte (uid, privileges, expiry, channel) breaks the MAC."""
    payload, mac = split(GOOD)
    bit = data.draw(st.integers(8, 8 * len(payload) - 1))
    forged = bytearray(payload)
    forged[bit // 8] ^= 1 << (bit % 8)
    e = refusal(join(bytes(forged), mac))
    assert e.code == "bad_signature"
    assert str(e) == ("token signature does not match; it was not issued with this server's "
                      "secret or was altered")


@settings(max_examples=200)
@given(st.integers(0, 255))
def test_one_flipped_mac_bit_is_a_bad_signature(bit):
    payload, mac = split(GOOD)
    forged = bytearray(mac)
    forged[bit // 8] ^= 1 << (bit % 8)
    assert refusal(join(payload, bytes(forged))).code == "bad_signature"


def test_raising_privileges_is_a_bad_signature():
    """An audience member turning their token into a host's."""
    payload, mac = split(make_token(SECRET, "room", 42, "audience", expire_s=600, now=NOW))
    assert payload[5] == PRIVILEGE_JOIN
    forged = payload[:5] + bytes([PRIVILEGE_JOIN | PRIVILEGE_PUBLISH]) + payload[6:]
    assert refusal(join(forged, mac)).code == "bad_signature"


def test_other_secret():
    token = make_token(b"another secret", "room", 42, expire_s=600, now=NOW)
    assert refusal(token).code == "bad_signature"
    assert refusal(GOOD, secret="server secret, 32 bytes of it..?").code == "bad_signature"


def test_wrong_channel():
    e = refusal(GOOD, channel="room2")
    assert e.code == "wrong_channel" and str(e) == "token is for channel 'room', not 'room2'"


def test_wrong_uid():
    e = refusal(GOOD, uid=43)
    assert e.code == "wrong_uid" and str(e) == "token is for uid 42, not 43"


def test_expired_exactly_at_expiry():
    verify_token(SECRET, GOOD, "room", 42, now=NOW + 599.999)
    e = refusal(GOOD, now=NOW + 600)
    assert e.code == "expired_token"
    assert str(e) == f"token expired at {int(NOW) + 600} (unix s), 0 s ago"
    assert refusal(GOOD, now=NOW + 3600).code == "expired_token"


def test_checks_run_in_order():
    """A forged token for another channel is refused for its signature, not its channel;
    a genuine expired token for another uid is refused for the uid."""
    payload, mac = split(GOOD)
    forged = bytearray(payload)
    forged[-1] ^= 1
    assert refusal(join(bytes(forged), mac), channel="other").code == "bad_signature"
    assert refusal(GOOD, uid=7, now=NOW + 10**6).code == "wrong_uid"
    assert refusal(GOOD, channel="x", uid=7, now=NOW + 10**6).code == "wrong_channel"


def test_token_error_codes_are_checked():
    with pytest.raises(ValueError, match="token error code must be one of"):
        TokenError("nope", "reason")


# ----------------------------------------------------------------------------- make_token input

@pytest.mark.parametrize("kwargs,message", [
    ({"secret": b""}, "secret must not be empty"),
    ({"secret": ""}, "secret must not be empty"),
    ({"role": "admin"}, "role must be 'host' or 'audience', got 'admin'"),
    ({"uid": -1}, "uid must be an integer in 0..4294967295, got -1"),
    ({"uid": 2**32}, "uid must be an integer in 0..4294967295, got 4294967296"),
    ({"uid": 1.0}, "uid must be an integer in 0..4294967295, got 1.0"),
    ({"channel": ""}, "channel must not be empty"),
    ({"channel": "c" * 65}, "channel is 65 bytes of UTF-8, at most 64"),
    ({"channel": "房" * 22}, "channel is 66 bytes of UTF-8, at most 64"),
    ({"channel": "a\nb"}, "channel must not hold control characters, found '\\n'"),
    ({"channel": "a\x7fb"}, "channel must not hold control characters, found '\\x7f'"),
    ({"expire_s": 0}, "expire_s must be a positive number of seconds, got 0"),
    ({"expire_s": -5.0}, "expire_s must be a positive number of seconds, got -5.0"),
    ({"expire_s": float("inf")}, "expire_s must be a positive number of seconds, got inf"),
])
def test_make_token_rejects(kwargs, message):
    args = {"secret": SECRET, "channel": "room", "uid": 1, "role": "host", "expire_s": 60,
            "now": NOW} | kwargs
    with pytest.raises(ValueError) as e:
        make_token(**args)
    assert str(e.value) == message


@pytest.mark.parametrize("kwargs,message", [
    ({"secret": 5}, "secret must be bytes or str, got int"),
    ({"channel": b"room"}, "channel must be a str, got bytes"),
])
def test_make_token_rejects_wrong_types(kwargs, message):
    args = {"secret": SECRET, "channel": "room", "uid": 1} | kwargs
    with pytest.raises(TypeError) as e:
        make_token(**args)
    assert str(e.value) == message


def test_channel_limit_is_inclusive():
    token = make_token(SECRET, "c" * 64, 1, now=NOW)
    assert verify_token(SECRET, token, "c" * 64, 1, now=NOW).channel == "c" * 64


# ----------------------------------------------------------------------------- read_claims

def test_read_claims_states_the_token_without_the_secret():
    """What a member without the secret (the browser gateway) reads: the same
    claims ``verify_token`` returns, and the same form errors."""
    token = make_token(SECRET, "lobby", 77, "audience", expire_s=600)
    assert read_claims(token) == verify_token(SECRET, token, "lobby", 77)
    assert not read_claims(token).can_publish
    assert read_claims(make_token(SECRET, "lobby", 77, "host")).can_publish
    # The signature is the server's to judge: a forged one reads the same.
    prefix, payload, mac = token.split(".")
    forged = f"{prefix}.{payload}.{'A' * len(mac)}"
    assert read_claims(forged) == read_claims(token)
    for bad, code in (("", "no_token"), ("sv1.abc", "malformed_token"),
                      (make_token(SECRET, "lobby", 77, expire_s=1, now=NOW), "expired_token")):
        with pytest.raises(TokenError) as err:
            read_claims(bad)
        assert err.value.code == code

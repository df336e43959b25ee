"""Access tokens: who may join which channel, with which privileges, until when.

A token is printable ASCII::

    "sv1." + base64url(payload) + "." + base64url(mac)      (no "=" padding)

    payload = version u8 (1), uid u32, privileges u8, expires_at u64 (unix seconds),
              then the channel name's UTF-8 bytes (1..64), all big-endian
    mac     = HMAC-SHA256(secret, payload)

The server holds the secret; anyone holding it can mint tokens.  A token
grants JOIN, and PUBLISH for hosts.  Nothing here does I/O.
"""

import base64
import binascii
import hashlib
import hmac
import math
import re
import struct
import time
import unicodedata
from dataclasses import dataclass

from stagevox.dsp.errors import ProtocolError

from .hmac_sha256 import hmac_sha256

PRIVILEGE_JOIN = 1
PRIVILEGE_PUBLISH = 2
TOKEN_VERSION = 1
PREFIX = "sv1."
MAX_CHANNEL_BYTES = 64

#: Why a token was refused; the same names as the control protocol's refusal codes.
ERROR_CODES = ("no_token", "malformed_token", "bad_signature", "expired_token",
               "wrong_channel", "wrong_uid")

_ROLE_PRIVILEGES = {"host": PRIVILEGE_JOIN | PRIVILEGE_PUBLISH, "audience": PRIVILEGE_JOIN}
_FIXED = struct.Struct("!BIBQ")
_MAC_SIZE = hashlib.sha256().digest_size
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class TokenError(ProtocolError):
    """A token that does not admit its bearer; ``code`` says why.

    ``code``: one of ``ERROR_CODES``; ``reason``: the message.  Raises
    ``ValueError`` for another code.
    """

    def __init__(self, code, reason):
        if code not in ERROR_CODES:
            raise ValueError(f"token error code must be one of {', '.join(ERROR_CODES)}, "
                             f"got {code!r}")
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token grants: ``channel``, ``uid``, ``privileges`` bits, until ``expires_at``.

    ``expires_at`` is in unix seconds.
    """

    channel: str
    uid: int
    privileges: int
    expires_at: int

    @property
    def can_publish(self) -> bool:
        """True when the token carries the PUBLISH privilege (a host's token)."""
        return bool(self.privileges & PRIVILEGE_PUBLISH)


def make_token(secret: bytes | str, channel: str, uid: int, role: str = "host",
               expire_s: float = 3600, now: float | None = None) -> str:
    """A token for ``uid`` in ``channel``, valid for ``expire_s`` seconds from ``now``.

    ``role`` "host" grants JOIN and PUBLISH, "audience" JOIN only.  ``now``
    defaults to ``time.time()`` (unix seconds); the expiry is rounded up to a
    whole second.  Raises ``ValueError`` for an empty secret, another role,
    a uid outside 0..2**32-1, a channel that is empty, longer than 64 bytes
    of UTF-8 or holds control characters, or ``expire_s`` not positive;
    ``TypeError`` for a secret that is not bytes or str, a channel not a str.
    """
    key = _secret_bytes(secret)
    if role not in _ROLE_PRIVILEGES or not isinstance(role, str):
        raise ValueError(f"role must be 'host' or 'audience', got {role!r}")
    if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid <= 0xFFFFFFFF:
        raise ValueError(f"uid must be an integer in 0..4294967295, got {uid!r}")
    raw_channel = _channel_bytes(channel)
    if isinstance(expire_s, bool) or not isinstance(expire_s, (int, float)) \
            or not math.isfinite(expire_s) or expire_s <= 0:
        raise ValueError(f"expire_s must be a positive number of seconds, got {expire_s!r}")
    if now is None:
        now = time.time()
    expires_at = math.ceil(now + expire_s)
    if not 0 <= expires_at < 1 << 64:
        raise ValueError(f"token expiry {expires_at} (now + expire_s) is outside 0..2**64-1")
    payload = _FIXED.pack(TOKEN_VERSION, uid, _ROLE_PRIVILEGES[role], expires_at) + raw_channel
    mac = hmac_sha256(key, payload)
    return PREFIX + _b64encode(payload) + "." + _b64encode(mac)


def verify_token(secret: bytes | str, token: str, channel: str, uid: int,
                 now: float | None = None) -> TokenClaims:
    """The claims of ``token`` if it admits ``uid`` to ``channel`` at ``now``.

    ``now`` defaults to ``time.time()``.  Raises ``TokenError`` with ``code``
    "no_token" (empty), "malformed_token" (not a stagevox token of this
    version), "bad_signature" (not signed with ``secret``), "wrong_channel",
    "wrong_uid" or "expired_token" (``now >= expires_at``), checked in that
    order; ``ValueError`` for an empty secret (``TypeError`` if not bytes or str).
    """
    key = _secret_bytes(secret)
    payload, mac, version, token_uid, privileges, expires_at = _split(token)
    expected = hmac_sha256(key, payload)
    if not hmac.compare_digest(mac, expected):
        raise TokenError("bad_signature", "token signature does not match; "
                         "it was not issued with this server's secret or was altered")
    token_channel = _claimed_channel(payload, privileges)
    if token_channel != channel:
        raise TokenError("wrong_channel",
                         f"token is for channel {token_channel!r}, not {channel!r}")
    if token_uid != uid:
        raise TokenError("wrong_uid", f"token is for uid {token_uid}, not {uid!r}")
    if now is None:
        now = time.time()
    if now >= expires_at:
        raise TokenError("expired_token",
                         f"token expired at {expires_at} (unix s), {now - expires_at:.0f} s ago")
    return TokenClaims(token_channel, token_uid, privileges, expires_at)


def read_claims(token: str) -> TokenClaims:
    """The claims ``token`` states, checked for form but not for authenticity.

    For a member that does not hold the secret (the browser gateway) and must
    know which channel, uid and role a token is for before the server judges
    it.  Raises ``TokenError`` with code "no_token", "malformed_token" (see
    ``verify_token``) or "expired_token"; a token that passes may still be
    refused by the server ("bad_signature").
    """
    payload, _, _, uid, privileges, expires_at = _split(token)
    channel = _claimed_channel(payload, privileges)
    if time.time() >= expires_at:
        raise TokenError("expired_token", f"token expired at {expires_at} (unix s)")
    return TokenClaims(channel, uid, privileges, expires_at)


def _split(token):
    """``(payload, mac, version, uid, privileges, expires_at)`` of a token of the right form."""
    if not token:
        raise TokenError("no_token", "no token was given")
    if not isinstance(token, str):
        raise TokenError("malformed_token", f"token must be a str, got {type(token).__name__}")
    if not token.startswith(PREFIX):
        raise TokenError("malformed_token", f"token does not start with {PREFIX!r}")
    parts = token[len(PREFIX):].split(".")
    if len(parts) != 2:
        raise TokenError("malformed_token",
                         f"token must have 2 base64url parts after {PREFIX!r}, got {len(parts)}")
    payload = _b64decode(parts[0], "payload")
    mac = _b64decode(parts[1], "signature")
    if len(mac) != _MAC_SIZE:
        raise TokenError("malformed_token",
                         f"token signature is {len(mac)} bytes, expected {_MAC_SIZE}")
    low, high = _FIXED.size + 1, _FIXED.size + MAX_CHANNEL_BYTES
    if not low <= len(payload) <= high:
        raise TokenError("malformed_token",
                         f"token payload is {len(payload)} bytes, expected {low}..{high}")
    version, token_uid, privileges, expires_at = _FIXED.unpack_from(payload, 0)
    if version != TOKEN_VERSION:
        raise TokenError("malformed_token",
                         f"unsupported token version {version} (this build reads {TOKEN_VERSION})")
    return payload, mac, version, token_uid, privileges, expires_at


def _claimed_channel(payload, privileges):
    try:
        channel = payload[_FIXED.size:].decode("utf-8")
    except UnicodeDecodeError:
        raise TokenError("malformed_token", "token channel is not valid UTF-8") from None
    if not privileges & PRIVILEGE_JOIN or privileges & ~(PRIVILEGE_JOIN | PRIVILEGE_PUBLISH):
        raise TokenError("malformed_token", f"token privileges {privileges:#x} are not valid")
    return channel


def _secret_bytes(secret):
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, (bytes, bytearray)):
        raise TypeError(f"secret must be bytes or str, got {type(secret).__name__}")
    if not secret:
        raise ValueError("secret must not be empty")
    return bytes(secret)


def _channel_bytes(channel):
    if not isinstance(channel, str):
        raise TypeError(f"channel must be a str, got {type(channel).__name__}")
    if not channel:
        raise ValueError("channel must not be empty")
    bad = next((c for c in channel if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise ValueError(f"channel must not hold control characters, found {bad!r}")
    try:
        raw = channel.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"channel cannot be encoded as UTF-8: {e.reason}") from None
    if len(raw) > MAX_CHANNEL_BYTES:
        raise ValueError(f"channel is {len(raw)} bytes of UTF-8, at most {MAX_CHANNEL_BYTES}")
    return raw


def _b64encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


#: base64url to standard base64 and back (binascii works on the standard alphabet).
_FROM_URL = bytes.maketrans(b"-_", b"+/")
_TO_URL = bytes.maketrans(b"+/", b"-_")


def _b64decode(text, part):
    """Strict base64url without padding: only the alphabet, canonical form.

    (``binascii`` directly: a server checks a token with every join.)"""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise TokenError("malformed_token", f"token {part} is not base64url")
    raw = text.encode("ascii")              # the pattern admits ASCII only
    try:
        data = binascii.a2b_base64(raw.translate(_FROM_URL) + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed_token", f"token {part} is not base64url") from None
    if binascii.b2a_base64(data, newline=False).translate(_TO_URL).rstrip(b"=") != raw:
        raise TokenError("malformed_token", f"token {part} is not in canonical base64url")
    return data

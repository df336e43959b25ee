"""The security layer of the engine's UDP protocol: handshake, keys, AEAD, replay window.

Nothing here does I/O; the server and the client feed datagrams in and send
what comes out.  The first byte of every datagram says what it is::

    KIND_INITIATION  client -> server, exactly INIT_SIZE (1200) bytes
    KIND_COOKIE      server -> client, 24 bytes
    KIND_RESPONSE    server -> client, at most INIT_SIZE bytes
    KIND_TRANSPORT   both ways, after the handshake

The handshake is Noise NK (``Noise_NK_25519_ChaChaPoly_SHA256``, Noise
Protocol Framework revision 34): the client knows the server's static public
key, sends an ephemeral key and its encrypted payload (the token) in the
initiation, and the server answers with its own ephemeral key and encrypted
payload.  Both then hold two directional ChaCha20-Poly1305 keys.

Denial of service (WireGuard's scheme): the initiation is padded to 1200 bytes
and carries two MACs.  ``mac1`` is keyed by the server's public key, so junk
costs the server one HMAC.  ``mac2`` is keyed by a cookie that only a client
receiving at its source address can know; until it is valid the server
answers with a 24-byte cookie reply (never more bytes than it got), does no
Diffie-Hellman and keeps no state.

Transport datagrams are ``kind | receiver index u32 | counter u64`` (13 bytes,
big-endian, the AEAD's associated data) followed by the ChaCha20-Poly1305
ciphertext; the receiver checks the counter against a sliding replay window
before it decrypts.

Only the ``cryptography`` package (X25519, ChaCha20Poly1305) and the standard
library's ``hmac``/``hashlib``/``secrets`` do cryptography here.
"""

import base64
import binascii
import hashlib
import hmac
import math
import os
import re
import secrets
import socket
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from stagevox.dsp.errors import ParameterError, ProtocolError

from .hmac_sha256 import KeyedHmac, hmac_new, hmac_sha256

__all__ = [
    "COOKIE_REPLY_SIZE", "INIT_SIZE", "KEY_SIZE", "KIND_COOKIE", "KIND_INITIATION",
    "KIND_RESPONSE", "KIND_TRANSPORT", "MAX_INIT_PAYLOAD", "MAX_RESPONSE_PAYLOAD",
    "NOISE_PROTOCOL_NAME", "PROLOGUE", "PROTOCOL_VERSION", "REJECT_AFTER_MESSAGES",
    "TRANSPORT_HEADER", "TRANSPORT_OVERHEAD", "CookieJar", "InitiationResult", "Initiator",
    "ReplayWindow", "Responder", "Session", "SessionError", "datagram_kind", "decode_key",
    "encode_key", "generate_private_key", "load_or_create_key", "peek_receiver_index",
    "public_key",
]

KIND_INITIATION = 0x01
KIND_COOKIE = 0x02
KIND_RESPONSE = 0x03
KIND_TRANSPORT = 0x04
PROTOCOL_VERSION = 1

NOISE_PROTOCOL_NAME = b"Noise_NK_25519_ChaChaPoly_SHA256"
#: Bound into the handshake together with the initiation's first 8 bytes.
PROLOGUE = b"stagevox handshake v1"

KEY_SIZE = 32            # X25519 keys, ChaCha20-Poly1305 keys
TAG_SIZE = 16            # Poly1305 tag
MAC_SIZE = 16            # mac1, mac2
COOKIE_SIZE = 16
HANDSHAKE_HEADER = 8     # kind, version, 2 reserved bytes, index u32
INIT_SIZE = 1200
COOKIE_REPLY_SIZE = HANDSHAKE_HEADER + COOKIE_SIZE
_INIT_PLAINTEXT = INIT_SIZE - HANDSHAKE_HEADER - KEY_SIZE - TAG_SIZE - 2 * MAC_SIZE
#: The largest client payload an initiation carries (after its u16 length prefix).
MAX_INIT_PAYLOAD = _INIT_PLAINTEXT - 2
#: The largest server payload a response carries (after the u32 server index).
MAX_RESPONSE_PAYLOAD = INIT_SIZE - HANDSHAKE_HEADER - KEY_SIZE - 4 - TAG_SIZE
_MIN_RESPONSE = HANDSHAKE_HEADER + KEY_SIZE + 4 + TAG_SIZE

TRANSPORT_HEADER = 13
TRANSPORT_OVERHEAD = TRANSPORT_HEADER + TAG_SIZE
#: A session seals no more than this many datagrams (WireGuard's limit); rekey before.
REJECT_AFTER_MESSAGES = 2 ** 60

_HEADER = struct.Struct(">BBHI")
_TRANSPORT = struct.Struct(">BIQ")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_KIND_NAMES = {KIND_INITIATION: "initiation", KIND_COOKIE: "cookie reply",
               KIND_RESPONSE: "response", KIND_TRANSPORT: "transport"}
_KEY_TEXT = re.compile(r"[A-Za-z0-9_-]*")
_KEY_TEXT_SIZE = 43
_MAX_KEY_FILE = 4096


class SessionError(ProtocolError):
    """A handshake message, cookie, transport datagram or key that is malformed or not
    authentic."""


# ---------------------------------------------------------------- keys

def generate_private_key() -> bytes:
    """A new random X25519 private key, 32 raw bytes."""
    return X25519PrivateKey.generate().private_bytes_raw()


def public_key(private: bytes) -> bytes:
    """The X25519 public key (32 raw bytes) of ``private`` (32 raw bytes).

    Raises ``SessionError`` if ``private`` is not 32 bytes.
    """
    return _private_key_object(private).public_key().public_bytes_raw()


def encode_key(raw: bytes) -> str:
    """``raw`` (a 32-byte key) as URL-safe base64 without padding: 43 characters.

    Raises ``SessionError`` if ``raw`` is not 32 bytes.
    """
    raw = _key_bytes(raw, "key")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_key(text: str) -> bytes:
    """The 32 raw bytes of a key written by ``encode_key``.

    Raises ``SessionError`` saying what is wrong: not a str, not 43
    characters, a character outside the URL-safe base64 alphabet, or a last
    character whose unused low bits are not zero (not the canonical form).
    """
    if not isinstance(text, str):
        raise SessionError(f"key must be a str, got {type(text).__name__}")
    if len(text) != _KEY_TEXT_SIZE:
        raise SessionError(f"key is {len(text)} characters, expected {_KEY_TEXT_SIZE} "
                           "(URL-safe base64 of 32 bytes, no padding)")
    if not _KEY_TEXT.fullmatch(text):
        position, char = next((i, c) for i, c in enumerate(text) if not _KEY_TEXT.fullmatch(c))
        raise SessionError(f"key has {char!r} at position {position}, outside the URL-safe "
                           "base64 alphabet (A-Z a-z 0-9 - _)")
    try:
        raw = base64.urlsafe_b64decode(text + "=")
    except (binascii.Error, ValueError):  # unreachable after the checks above; kept as a guard
        raise SessionError("key is not valid URL-safe base64") from None
    if encode_key(raw) != text:
        raise SessionError(f"key's last character {text[-1]!r} has non-zero unused bits "
                           "(not canonical base64)")
    return raw


#: The text form of a server's public key starts with this, so it never starts
#: with "-" (a command line would read it as an option) and says what it is.
PUBLIC_KEY_PREFIX = "svk1."


def public_key_text(public: bytes) -> str:
    """A server's public key as text: ``PUBLIC_KEY_PREFIX`` + ``encode_key``."""
    return PUBLIC_KEY_PREFIX + encode_key(public)


def parse_public_key(text: str) -> bytes:
    """The 32 bytes of a public key given as ``public_key_text`` wrote it (the
    prefix may be left out).  Raises ``SessionError`` saying what is wrong."""
    if isinstance(text, str) and text.startswith(PUBLIC_KEY_PREFIX):
        text = text[len(PUBLIC_KEY_PREFIX):]
    return decode_key(text)


def load_or_create_key(path) -> bytes:
    """The server's private key (32 raw bytes) from the text file ``path``, made if missing.

    The file holds one line, the key as ``encode_key`` writes it.  If the file
    does not exist, a new key is written to it with mode 0600, atomically
    (a temporary file in the same folder, then ``os.replace``); the folder
    must exist (``FileNotFoundError`` otherwise).  A file whose contents are
    not such a key raises ``SessionError`` naming the file and the problem;
    the file is left as it is.  Other ``OSError``s (unreadable file, path is
    a folder) propagate.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            content = f.read(_MAX_KEY_FILE + 1)
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise FileNotFoundError(f"cannot create key file {path}: folder {path.parent} "
                                    "does not exist") from None
        return _create_key_file(path)
    if len(content) > _MAX_KEY_FILE:
        raise SessionError(f"key file {path} is larger than {_MAX_KEY_FILE} bytes; "
                           "expected one line with a 43-character key")
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError:
        raise SessionError(f"key file {path} is not ASCII text; "
                           "expected one line with a 43-character key") from None
    lines = text.splitlines()
    if len(lines) != 1:
        raise SessionError(f"key file {path} has {len(lines)} lines, expected 1 "
                           "(a 43-character key)")
    try:
        return decode_key(lines[0].strip())
    except SessionError as e:
        raise SessionError(f"key file {path}: {e}") from None


def _create_key_file(path):
    key = generate_private_key()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp already creates the file 0600; chmod states it explicitly.
        os.chmod(tmp, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(encode_key(key) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return key


def _key_bytes(value, what):
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise SessionError(f"{what} must be bytes, got {type(value).__name__}")
    value = bytes(value)
    if len(value) != KEY_SIZE:
        raise SessionError(f"{what} is {len(value)} bytes, expected {KEY_SIZE}")
    return value


def _private_key_object(private):
    return X25519PrivateKey.from_private_bytes(_key_bytes(private, "private key"))


# ---------------------------------------------------------------- Noise

def _hkdf2(chaining_key, input_key_material):
    """The Noise spec's HKDF (section 4.3) with two outputs, as the spec writes it
    over HMAC-SHA256 (RFC 5869 HKDF with the chaining key as salt and no info);
    three one-shot HMACs cost less than building an HKDF object each time."""
    return _hkdf2_expand(hmac_new(chaining_key, input_key_material, "sha256").digest())


def _hkdf2_expand(temp_key):
    """The two outputs of the Noise HKDF from its ``temp_key`` (the extract step's result)."""
    output1 = hmac_new(temp_key, b"\x01", "sha256").digest()
    return output1, hmac_new(temp_key, output1 + b"\x02", "sha256").digest()


_HASH_LEN = 32                     # SHA-256
#: h and ck after InitializeSymmetric(NOISE_PROTOCOL_NAME): the name is 32 bytes.
_INITIAL_H = NOISE_PROTOCOL_NAME
_initial_ck_hmac = KeyedHmac(_INITIAL_H)
#: ChaChaPoly's 96-bit nonce: 32 zero bits, then the 64-bit counter, little-endian.
_NONCE = struct.Struct("<4xQ")
#: The nonce of a handshake key's one use: in NK every MixKey is followed by
#: exactly one EncryptAndHash or DecryptAndHash.
_FIRST_NONCE = _NONCE.pack(0)
_NOT_AUTHENTIC = "handshake message does not authenticate (wrong key, or altered in transit)"
_sha256 = hashlib.sha256


def _dh(private, public):
    """X25519 of a private key object and a public key (32 bytes, or an
    ``X25519PublicKey`` already made of them); SessionError for a low-order point."""
    if isinstance(public, (bytes, bytearray, memoryview)):   # (a check on the key class is slow)
        public = X25519PublicKey.from_public_bytes(public)
    try:
        return private.exchange(public)
    except ValueError:
        # cryptography refuses an all-zero shared secret (a low-order public key).
        raise SessionError("the peer's public key is a low-order point "
                           "(the shared secret would be all zeros)") from None


class _SymmetricState:
    """Noise SymmetricState with its CipherState (spec sections 5.1 and 5.2).

    Fixed to SHA-256 (HASHLEN 32) and ChaChaPoly.  ``h`` is the handshake
    hash, ``ck`` the chaining key.
    """

    __slots__ = ("h", "ck", "_aead", "_n")

    def __init__(self, protocol_name: bytes):
        """InitializeSymmetric: the name, zero-padded to 32 bytes, or its hash if longer."""
        if protocol_name == NOISE_PROTOCOL_NAME:
            h = _INITIAL_H
        elif len(protocol_name) <= _HASH_LEN:
            h = protocol_name.ljust(_HASH_LEN, b"\x00")
        else:
            h = hashlib.sha256(protocol_name).digest()
        self.h = h
        self.ck = h
        self._aead = None
        self._n = 0

    @classmethod
    def at(cls, h: bytes, ck: bytes) -> "_SymmetricState":
        """A state with handshake hash ``h`` and chaining key ``ck`` and no cipher key."""
        state = cls.__new__(cls)
        state.h, state.ck, state._aead, state._n = h, ck, None, 0
        return state

    def copy(self) -> "_SymmetricState":
        """An independent copy (the cipher object is immutable and can be shared)."""
        other = _SymmetricState.__new__(_SymmetricState)
        other.h, other.ck, other._aead, other._n = self.h, self.ck, self._aead, self._n
        return other

    def mix_hash(self, data: bytes) -> None:
        """h = SHA256(h || data)."""
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, input_key_material: bytes) -> None:
        """ck, k = HKDF(ck, input_key_material); the cipher's nonce restarts at 0."""
        if self.ck == _INITIAL_H:
            # The first MixKey of every handshake: its HMAC key is the same each time.
            self.ck, temp_k = _hkdf2_expand(_initial_ck_hmac(input_key_material))
        else:
            self.ck, temp_k = _hkdf2(self.ck, input_key_material)
        self._aead = ChaCha20Poly1305(temp_k)
        self._n = 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """Encrypt with h as associated data (or pass through while there is no key yet),
        then mix the ciphertext into h."""
        if self._aead is None:
            ciphertext = plaintext
        else:
            ciphertext = self._aead.encrypt(self._next_nonce(), plaintext, self.h)
            self._n += 1
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """The inverse of ``encrypt_and_hash``; SessionError if authentication fails."""
        if self._aead is None:
            plaintext = ciphertext
        else:
            try:
                plaintext = self._aead.decrypt(self._next_nonce(), ciphertext, self.h)
            except InvalidTag:
                raise SessionError(_NOT_AUTHENTIC) from None
            self._n += 1
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """(k1, k2): the initiator sends with k1, the responder with k2."""
        return _hkdf2(self.ck, b"")

    def _next_nonce(self):
        if self._n >= 2 ** 64 - 1:  # 2**64-1 is reserved by the spec
            raise SessionError("handshake cipher nonce exhausted")
        return _NONCE.pack(self._n)


def _ephemeral(ephemeral_private):
    if ephemeral_private is None:
        return X25519PrivateKey.generate()
    return _private_key_object(ephemeral_private)


def _nk_initiator_write(server_public, prologue, payload, ephemeral_private=None):
    """NK message 1 (``-> e, es``).

    Returns (state, ephemeral private key object, message), the message
    being e (32 bytes) then the encrypted payload.  ``ephemeral_private``
    fixes e (tests only).
    """
    state = _SymmetricState(NOISE_PROTOCOL_NAME)
    state.mix_hash(prologue)
    state.mix_hash(server_public)                 # pre-message <- s
    e = _ephemeral(ephemeral_private)
    e_public = e.public_key().public_bytes_raw()
    state.mix_hash(e_public)
    state.mix_key(_dh(e, server_public))          # es
    return state, e, e_public + state.encrypt_and_hash(payload)


def _nk_responder_read(static_private, static_public, prologue, message):
    """Read NK message 1 with the server's static key (an object, and its public bytes).

    Returns (state, the initiator's e, payload); SessionError if the
    message is shorter than e + tag or does not authenticate.
    """
    state, remote_e, _, payload = _nk_responder_read_key(static_private, static_public,
                                                         prologue, message)
    return state, remote_e, payload


def _nk_responder_read_key(static_private, static_public, prologue, message):
    """``_nk_responder_read``, also returning the initiator's e as an
    ``X25519PublicKey`` (message 2 needs it again): (state, e, e key, payload).

    The server runs this for every handshake, so h and ck are kept in locals
    rather than in a ``_SymmetricState`` (the steps are those of its methods:
    MixHash of the prologue, of s and of e, MixKey of es, DecryptAndHash).
    """
    if len(message) < KEY_SIZE + TAG_SIZE:
        raise SessionError(f"handshake message 1 is {len(message)} bytes, "
                           f"expected at least {KEY_SIZE + TAG_SIZE}")
    remote_e = bytes(message[:KEY_SIZE])
    remote_key = X25519PublicKey.from_public_bytes(remote_e)
    h = _sha256(_sha256(_sha256(_INITIAL_H + prologue).digest() + static_public).digest()
                + remote_e).digest()
    ck, key = _hkdf2_expand(_initial_ck_hmac(_dh(static_private, remote_key)))   # es
    ciphertext = bytes(message[KEY_SIZE:])
    try:
        payload = ChaCha20Poly1305(key).decrypt(_FIRST_NONCE, ciphertext, h)
    except InvalidTag:
        raise SessionError(_NOT_AUTHENTIC) from None
    return _SymmetricState.at(_sha256(h + ciphertext).digest(), ck), remote_e, remote_key, payload


def _nk_responder_write(state, remote_e, payload, ephemeral_private=None):
    """NK message 2 (``<- e, ee``) on ``state`` (changed in place); ``remote_e``:
    the initiator's e, 32 bytes or an ``X25519PublicKey``.

    Returns (message, (k1, k2)).  Like ``_nk_responder_read_key``, in locals:
    MixHash of e, MixKey of ee, EncryptAndHash, Split.
    """
    e = _ephemeral(ephemeral_private)
    e_public = e.public_key().public_bytes_raw()
    h = _sha256(state.h + e_public).digest()
    ck, key = _hkdf2(state.ck, _dh(e, remote_e))                                   # ee
    ciphertext = ChaCha20Poly1305(key).encrypt(_FIRST_NONCE, payload, h)
    state.h = _sha256(h + ciphertext).digest()
    state.ck = ck
    state._aead = None
    return e_public + ciphertext, _hkdf2(ck, b"")


def _nk_initiator_read(state, e, message):
    """Read NK message 2 on ``state`` (changed in place) with our ephemeral key object.

    Returns (payload, (k1, k2)); SessionError if too short or not authentic.
    """
    if len(message) < KEY_SIZE + TAG_SIZE:
        raise SessionError(f"handshake message 2 is {len(message)} bytes, "
                           f"expected at least {KEY_SIZE + TAG_SIZE}")
    remote_e = bytes(message[:KEY_SIZE])
    state.mix_hash(remote_e)
    state.mix_key(_dh(e, remote_e))               # ee
    payload = state.decrypt_and_hash(bytes(message[KEY_SIZE:]))
    return payload, state.split()


# ---------------------------------------------------------------- datagrams

def datagram_kind(data) -> int | None:
    """The kind byte of a datagram (first byte), or None for empty data."""
    return data[0] if len(data) else None


def peek_receiver_index(data) -> int | None:
    """The receiver index of a transport datagram, or None if ``data`` is not one.

    Only the header is looked at (kind byte and length at least
    ``TRANSPORT_OVERHEAD``); nothing is authenticated, so use the index only
    to find the session whose ``open`` then checks the datagram.
    """
    if len(data) < TRANSPORT_OVERHEAD or data[0] != KIND_TRANSPORT:
        return None
    return _U32.unpack_from(data, 1)[0]


def _check_header(data, kind):
    """Check kind, version and reserved bytes of a handshake message; return its index."""
    name = _KIND_NAMES[kind]
    got_kind, version, reserved, index = _HEADER.unpack_from(data, 0)
    if got_kind != kind:
        got = _KIND_NAMES.get(got_kind, "unknown")
        raise SessionError(f"{name} expected: kind byte is {got_kind:#04x} ({got}), "
                           f"expected {kind:#04x}")
    if version != PROTOCOL_VERSION:
        raise SessionError(f"{name} has protocol version {version}, "
                           f"this build speaks {PROTOCOL_VERSION}")
    if reserved:
        raise SessionError(f"{name} has non-zero reserved bytes {reserved:#06x}")
    return index


_NO_MAC = bytes(MAC_SIZE)


def _mac2_matches(cookie, data, mac2):
    """Whether ``mac2`` is the MAC of the initiation ``data`` under ``cookie``
    (False for no cookie); constant-time."""
    return cookie is not None and hmac.compare_digest(
        hmac_sha256(cookie, data[:-MAC_SIZE])[:MAC_SIZE], mac2)


def _mac1_key(server_public):
    return hashlib.sha256(b"mac1" + server_public).digest()


def _check_index(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise ParameterError(f"{what} must be an integer in 0..4294967295, got {value!r}")
    return value


def _payload_bytes(payload, limit, what):
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise SessionError(f"{what} must be bytes, got {type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) > limit:
        raise SessionError(f"{what} is {len(payload)} bytes, at most {limit} fit")
    return payload


# ---------------------------------------------------------------- cookies

def _packed_address(addr):
    """``_address_bytes`` of an address as a socket gives it; only an address
    that fails the quick way is looked at field by field."""
    if type(addr) is tuple and len(addr) >= 2:
        host, port = addr[0], addr[1]
        if type(host) is str and type(port) is int and 0 <= port <= 0xFFFF:
            try:
                packed = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                          host)
            except (OSError, ValueError):
                pass
            else:
                return packed + port.to_bytes(2, "big")
    return _address_bytes(addr)


def _address_bytes(addr):
    """The packed IP address and the port (u16) of an (host, port, ...) tuple."""
    try:
        host, port = addr[0], addr[1]
    except (TypeError, IndexError, KeyError):
        raise ParameterError(f"address must be a (host, port) tuple, got {addr!r}") from None
    if not isinstance(host, str):
        raise ParameterError(f"address host must be a str, got {type(host).__name__}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise ParameterError(f"address port must be an integer in 0..65535, got {port!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        packed = socket.inet_pton(family, host.partition("%")[0])
    except OSError:
        raise ParameterError(f"address host must be an IPv4 or IPv6 address, "
                             f"got {host!r}") from None
    return packed + port.to_bytes(2, "big")


class CookieJar:
    """Makes and checks the cookies that prove a client receives at its source address.

    A cookie is HMAC-SHA256(secret, packed IP address + port)[:16].  The
    random secret is replaced every ``rotate_s`` seconds of ``clock`` (a
    function returning seconds); cookies of the current and of the previous
    secret are accepted, so a cookie lives between ``rotate_s`` and
    ``2 * rotate_s`` seconds.  Raises ``ParameterError`` for a ``rotate_s``
    that is not a positive finite number.
    """

    def __init__(self, rotate_s: float = 120.0, clock=time.monotonic):
        if isinstance(rotate_s, bool) or not isinstance(rotate_s, (int, float)) \
                or not math.isfinite(rotate_s) or rotate_s <= 0:
            raise ParameterError(f"rotate_s must be a positive number of seconds, "
                                 f"got {rotate_s!r}")
        self.rotate_s = float(rotate_s)
        self._clock = clock
        self._current = secrets.token_bytes(32)
        self._previous = None
        self._current_mac = KeyedHmac(self._current)
        self._previous_mac = None
        self._since = clock()

    def make(self, addr) -> bytes:
        """The 16-byte cookie for ``addr`` ((host, port); IPv4 or IPv6) under the current secret.

        Raises ``ParameterError`` for an address that is not an IP address and port.
        """
        return next(self._candidates(addr))

    def check(self, addr, cookie: bytes) -> bool:
        """True if ``cookie`` was made for ``addr`` under the current or the previous secret.

        The comparison is constant-time.  A cookie that is not bytes is not valid.
        """
        if not isinstance(cookie, (bytes, bytearray, memoryview)):
            return False
        found = False
        for candidate in self._candidates(addr):
            found |= hmac.compare_digest(candidate, bytes(cookie))
        return found

    def _candidates(self, addr):
        """The cookies ``addr`` may hold now, made as they are asked for: the
        current secret's, then the previous one's."""
        address = _packed_address(addr)
        yield self._current_cookie(address)
        previous = self._previous_cookie(address)
        if previous is not None:
            yield previous

    def _current_cookie(self, address):
        """The current secret's cookie for ``address`` (``_packed_address``);
        the secret is replaced first if it is due."""
        if self._clock() - self._since >= self.rotate_s:
            self._rotate()
        return self._current_mac(address)[:COOKIE_SIZE]

    def _previous_cookie(self, address):
        """The previous secret's cookie for ``address``, None when there is none."""
        if self._previous_mac is None:
            return None
        return self._previous_mac(address)[:COOKIE_SIZE]

    def _rotate(self):
        elapsed = self._clock() - self._since
        if elapsed < self.rotate_s:
            return
        periods = int(elapsed // self.rotate_s)
        # After two or more periods without use, the last secret is too old to honour.
        self._previous = self._current if periods == 1 else None
        self._previous_mac = self._current_mac if periods == 1 else None
        self._current = secrets.token_bytes(32)
        self._current_mac = KeyedHmac(self._current)
        self._since += periods * self.rotate_s


# ---------------------------------------------------------------- transport

_DEFAULT_WINDOW = 2048


class ReplayWindow:
    """The anti-replay sliding window of RFC 4303 section 3.4.3 over 64-bit counters.

    The window covers the ``size`` counters up to the highest one seen:
    a counter above it is new, one inside it is new unless already seen,
    one below it is too old.  The bitmap is a Python int (bit i = highest - i
    seen).  Raises ``ParameterError`` for a size that is not a positive int.
    """

    def __init__(self, size: int = _DEFAULT_WINDOW):
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ParameterError(f"replay window size must be a positive integer, got {size!r}")
        self.size = size
        self._mask = (1 << size) - 1
        self._highest = -1
        self._bitmap = 0

    @property
    def highest(self) -> int:
        """The highest counter marked as seen, -1 before the first."""
        return self._highest

    def check(self, counter: int) -> bool:
        """True if ``counter`` would be accepted (0 <= counter < 2**64, not seen, not too old)."""
        if not 0 <= counter < 1 << 64:
            return False
        if counter > self._highest:
            return True
        offset = self._highest - counter
        if offset >= self.size:
            return False
        return not (self._bitmap >> offset) & 1

    def update(self, counter: int) -> None:
        """Mark ``counter`` as seen, sliding the window forward if it is the new highest.

        Call it only after the datagram authenticated; a counter below the
        window is ignored.
        """
        if counter > self._highest:
            shift = counter - self._highest
            # A big jump would make a huge int; everything old falls out anyway.
            self._bitmap = 1 if shift >= self.size else ((self._bitmap << shift) | 1) & self._mask
            self._highest = counter
        else:
            offset = self._highest - counter
            if offset < self.size:
                self._bitmap |= 1 << offset


class Session:
    """One side of an established session: seals datagrams to the peer, opens the peer's.

    Made by the handshake (``InitiationResult.respond`` on the server,
    ``Initiator.read_response`` on the client).  ``local_index`` is the index
    the peer puts in datagrams to us, ``remote_index`` the one we put in
    datagrams to the peer; ``sealed`` and ``opened`` count datagrams.
    """

    def __init__(self, send_key: bytes, receive_key: bytes, local_index: int,
                 remote_index: int, *, window_size: int = 2048):
        self._start(_key_bytes(send_key, "send key"), _key_bytes(receive_key, "receive key"),
                    _check_index(local_index, "local index"),
                    _check_index(remote_index, "remote index"), ReplayWindow(window_size))

    @classmethod
    def _from_handshake(cls, send_key, receive_key, local_index, remote_index):
        """A Session of the handshake's own keys and indexes, which need no checks."""
        session = cls.__new__(cls)
        session._start(send_key, receive_key, local_index, remote_index,
                       ReplayWindow(_DEFAULT_WINDOW))
        return session

    def _start(self, send_key, receive_key, local_index, remote_index, window):
        self._send = ChaCha20Poly1305(send_key)
        self._receive = ChaCha20Poly1305(receive_key)
        self.local_index = local_index
        self.remote_index = remote_index
        self._window = window
        self._send_counter = 0
        self.opened = 0

    def seal(self, inner: bytes) -> bytes:
        """The transport datagram carrying ``inner`` (TRANSPORT_OVERHEAD bytes longer).

        Each call uses the next counter; raises ``SessionError`` once
        REJECT_AFTER_MESSAGES datagrams were sealed (make a new session).
        """
        counter = self._send_counter
        if counter >= REJECT_AFTER_MESSAGES:
            raise SessionError(f"session has sealed {counter} datagrams, the limit; "
                               "a new handshake is needed")
        header = _TRANSPORT.pack(KIND_TRANSPORT, self.remote_index, counter)
        self._send_counter = counter + 1
        return header + self._send.encrypt(_NONCE.pack(counter), inner, header)

    @property
    def sealed(self) -> int:
        """Datagrams sealed so far."""
        return self._send_counter

    def open(self, datagram: bytes) -> bytes:
        """The inner bytes of a transport datagram from the peer.

        Raises ``SessionError`` if it is shorter than TRANSPORT_OVERHEAD, not
        a transport datagram, for another receiver index, has a counter that
        was already seen or is older than the replay window (checked before
        any decryption), or does not authenticate.  The replay window moves
        only for datagrams that authenticate.
        """
        size = len(datagram)
        if size < TRANSPORT_OVERHEAD:
            raise SessionError(f"transport datagram is {size} bytes, "
                               f"expected at least {TRANSPORT_OVERHEAD}")
        kind, index, counter = _TRANSPORT.unpack_from(datagram, 0)
        if kind != KIND_TRANSPORT:
            raise SessionError(f"transport datagram expected: kind byte is {kind:#04x}, "
                               f"expected {KIND_TRANSPORT:#04x}")
        if index != self.local_index:
            raise SessionError(f"transport datagram is for receiver index {index}, "
                               f"this session is {self.local_index}")
        if counter >= REJECT_AFTER_MESSAGES or not self._window.check(counter):
            raise SessionError(f"transport counter {counter} is a replay or outside the window "
                               f"(highest seen {self._window.highest}, "
                               f"window {self._window.size})")
        datagram = bytes(datagram)
        try:
            inner = self._receive.decrypt(_NONCE.pack(counter), datagram[TRANSPORT_HEADER:],
                                          datagram[:TRANSPORT_HEADER])
        except InvalidTag:
            raise SessionError(f"transport datagram {counter} does not authenticate") from None
        self._window.update(counter)
        self.opened += 1
        return inner


# ---------------------------------------------------------------- server side

@dataclass(eq=False)
class InitiationResult:
    """What ``Responder.receive_initiation`` made of an authentic-looking initiation.

    Either ``cookie_reply`` is set (send it back; ``payload`` and
    ``ephemeral`` are None, nothing else was done), or ``payload`` holds the
    client's payload, ``ephemeral`` its ephemeral public key (unique per
    initiation, a key for recognising resends) and ``respond`` finishes the
    handshake.  ``client_index`` is the client's sender index in both cases.
    """

    client_index: int
    cookie_reply: bytes | None = None
    payload: bytes | None = None
    ephemeral: bytes | None = None
    _state: _SymmetricState | None = field(default=None, repr=False)
    _responded: bool = field(default=False, repr=False)
    _ephemeral_key: X25519PublicKey | None = field(default=None, repr=False)

    def respond(self, server_index: int, payload: bytes = b"") -> tuple[bytes, Session]:
        """The response datagram carrying ``payload``, and the server's Session.

        ``server_index`` (u32) is the index clients put in datagrams to this
        session.  Callable once.  Raises ``SessionError`` if this result is
        a cookie reply, was already answered, or ``payload`` is longer than
        MAX_RESPONSE_PAYLOAD; ``ParameterError`` for an index outside u32.
        """
        if self._state is None:
            if self._responded:
                raise SessionError("this initiation was already answered")
            raise SessionError("this initiation got a cookie reply; there is no handshake "
                               "to respond to")
        server_index = _check_index(server_index, "server index")
        payload = _payload_bytes(payload, MAX_RESPONSE_PAYLOAD, "response payload")
        state, self._state, self._responded = self._state, None, True
        remote_e = self.ephemeral if self._ephemeral_key is None else self._ephemeral_key
        message, (k1, k2) = _nk_responder_write(state, remote_e,
                                                _U32.pack(server_index) + payload)
        datagram = _HEADER.pack(KIND_RESPONSE, PROTOCOL_VERSION, 0, self.client_index) + message
        assert len(datagram) <= INIT_SIZE, len(datagram)
        return datagram, Session._from_handshake(k2, k1, server_index, self.client_index)


class Responder:
    """The server's half. Holds the static key pair, the CookieJar and the mac1 key."""

    def __init__(self, private_key: bytes, *, cookie_jar: CookieJar | None = None):
        """Raises ``SessionError`` if ``private_key`` is not 32 bytes."""
        self._private = _private_key_object(private_key)
        self.public_key = self._private.public_key().public_bytes_raw()
        self.cookie_jar = CookieJar() if cookie_jar is None else cookie_jar
        self._mac1_key = _mac1_key(self.public_key)
        self._mac1 = KeyedHmac(self._mac1_key)

    def receive_initiation(self, data: bytes, addr, may_exchange=None) -> InitiationResult:
        """Check an initiation that came from ``addr`` ((host, port)) and read it.

        ``may_exchange()``, when given, is asked once the cookie is valid and
        before the key exchange: False refuses the exchange (``SessionError``),
        so a server can cap its key exchanges per second.

        The checks go cheapest first: length, kind, version, reserved bytes,
        mac1 (one HMAC), then mac2 against the cookie for ``addr``.  Without
        a valid mac2 the result carries only a ``cookie_reply`` (24 bytes):
        no Diffie-Hellman was done and nothing is kept.  With one, the Noise
        handshake runs and the result carries the client's payload.
        Raises ``SessionError`` for anything malformed or not authentic (and
        for a payload length prefix larger than what was sent).
        """
        size = len(data)
        if size != INIT_SIZE:
            raise SessionError(f"initiation is {size} bytes, expected {INIT_SIZE}")
        data = bytes(data)
        kind, version, reserved, client_index = _HEADER.unpack_from(data, 0)
        if kind != KIND_INITIATION or version != PROTOCOL_VERSION or reserved:
            _check_header(data, KIND_INITIATION)      # raises, naming what is wrong
        without_macs = data[:-2 * MAC_SIZE]
        if not hmac.compare_digest(self._mac1(without_macs)[:MAC_SIZE],
                                   data[-2 * MAC_SIZE:-MAC_SIZE]):
            raise SessionError("initiation mac1 does not match this server's public key")
        jar = self.cookie_jar
        address = _packed_address(addr)
        cookie = jar._current_cookie(address)
        mac2 = data[-MAC_SIZE:]
        # Which secret a cookie was made under is no secret: the previous
        # secret's cookie is made only when the current one does not match.
        if mac2 == _NO_MAC or not (
                _mac2_matches(cookie, data, mac2)
                or _mac2_matches(jar._previous_cookie(address), data, mac2)):
            reply = _HEADER.pack(KIND_COOKIE, PROTOCOL_VERSION, 0, client_index) + cookie
            return InitiationResult(client_index, cookie_reply=reply)
        if may_exchange is not None and not may_exchange():
            raise SessionError("key exchange refused: the server is over its handshake rate")
        state, remote_e, remote_key, plaintext = _nk_responder_read_key(
            self._private, self.public_key, PROLOGUE + data[:HANDSHAKE_HEADER],
            without_macs[HANDSHAKE_HEADER:])
        (length,) = _U16.unpack_from(plaintext, 0)
        if length > len(plaintext) - 2:
            raise SessionError(f"initiation payload length prefix is {length}, "
                               f"at most {len(plaintext) - 2} fit")
        return InitiationResult(client_index, payload=plaintext[2:2 + length],
                                ephemeral=remote_e, _state=state, _ephemeral_key=remote_key)

# ---------------------------------------------------------------- client side

class Initiator:
    """The client's half of one handshake with a server whose static public key it knows.

    The ephemeral key and the encrypted ``payload`` are fixed at
    construction, so every ``initiation()`` carries the same ciphertext
    (a resend is recognisable); only mac2 changes once a cookie is known.
    ``sender_index`` (u32, random if not given) is the index the server puts
    in datagrams to us.  Raises ``SessionError`` for a server key that is not
    32 bytes or a payload longer than MAX_INIT_PAYLOAD, ``ParameterError``
    for a sender index outside u32.
    """

    def __init__(self, server_public: bytes, payload: bytes, *, sender_index: int | None = None):
        server_public = _key_bytes(server_public, "server public key")
        payload = _payload_bytes(payload, MAX_INIT_PAYLOAD, "initiation payload")
        self.sender_index = secrets.randbits(32) if sender_index is None \
            else _check_index(sender_index, "sender index")
        header = _HEADER.pack(KIND_INITIATION, PROTOCOL_VERSION, 0, self.sender_index)
        plaintext = (_U16.pack(len(payload)) + payload).ljust(_INIT_PLAINTEXT, b"\x00")
        self._state, self._ephemeral, message = _nk_initiator_write(
            server_public, PROLOGUE + header, plaintext)
        body = header + message
        self._without_mac2 = body + hmac_sha256(_mac1_key(server_public), body)[:MAC_SIZE]
        assert len(self._without_mac2) == INIT_SIZE - MAC_SIZE
        self._cookie = None
        self._done = False

    def initiation(self) -> bytes:
        """The 1200-byte initiation datagram, with mac2 if a cookie is known (zeros otherwise)."""
        if self._cookie is None:
            mac2 = bytes(MAC_SIZE)
        else:
            mac2 = hmac_sha256(self._cookie, self._without_mac2)[:MAC_SIZE]
        return self._without_mac2 + mac2

    def read_cookie(self, data: bytes) -> bool:
        """Take the cookie from a cookie reply; True if it was for our sender index.

        False for a reply to another index or after the handshake finished.
        Raises ``SessionError`` for a malformed reply (length, kind,
        version, reserved bytes).  The reply is not authenticated: a forged
        cookie only costs one more round trip.
        """
        size = len(data)
        if size != COOKIE_REPLY_SIZE:
            raise SessionError(f"cookie reply is {size} bytes, expected {COOKIE_REPLY_SIZE}")
        data = bytes(data)
        index = _check_header(data, KIND_COOKIE)
        if index != self.sender_index or self._done:
            return False
        self._cookie = data[HANDSHAKE_HEADER:]
        return True

    def read_response(self, data: bytes) -> tuple[bytes, Session]:
        """The server's payload and the client's Session, from the server's response.

        Raises ``SessionError`` if the response is too short or too long,
        malformed, for another receiver index, does not authenticate, or the
        handshake was already completed.  A failed response leaves the
        handshake as it was, so the genuine one can still be read.
        """
        if self._done:
            raise SessionError("the handshake is already complete; response ignored")
        size = len(data)
        if not _MIN_RESPONSE <= size <= INIT_SIZE:
            raise SessionError(f"response is {size} bytes, expected {_MIN_RESPONSE}..{INIT_SIZE}")
        data = bytes(data)
        index = _check_header(data, KIND_RESPONSE)
        if index != self.sender_index:
            raise SessionError(f"response is for receiver index {index}, "
                               f"our sender index is {self.sender_index}")
        state = self._state.copy()
        plaintext, (k1, k2) = _nk_initiator_read(state, self._ephemeral,
                                                 data[HANDSHAKE_HEADER:])
        (server_index,) = _U32.unpack_from(plaintext, 0)
        self._done = True
        return plaintext[4:], Session(k1, k2, self.sender_index, server_index)

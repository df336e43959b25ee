"""End-to-end media encryption of Opus frames, after SFrame (RFC 9605).

With end-to-end encryption on, every member of a channel holds the channel's
base key; the server does not.  Each sender seals every Opus frame before it
goes into RTP/RED, the server forwards, repairs (RED, NACK retransmission) and
relays sealed frames it cannot read, and each receiver unseals a frame before
decoding it.  A frame sealed under another key fails authentication and is
refused (``FrameCryptoError``); it is never decoded as noise.

A sealed frame is an SFrame ciphertext (RFC 9605 section 4.2)::

    header || AES-128-GCM(sframe_key, nonce, aad = header || metadata, frame)

    header   config byte X(1) K(3) Y(1) C(3), then the KID, then the CTR
             (section 4.3): a value 0..7 sits in K or C with its flag clear;
             a larger one follows the config byte as a minimal big-endian
             integer of 1..8 bytes, K or C holding its length minus one
    nonce    sframe_salt XOR CTR, 12 bytes big-endian         (section 4.4.3)
    tag      the last 16 bytes

Keys (section 4.4.2), HKDF-SHA256, with KID as 8 bytes and the cipher suite
as 2 bytes, both big-endian::

    sframe_secret = HKDF-Extract("", base_key)
    sframe_key    = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret key "  + KID + suite, 16)
    sframe_salt   = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret salt " + KID + suite, 12)

The cipher suite is AES_128_GCM_SHA256_128 (0x0004).  Every sender instance
encrypts under its own KID (a random 64-bit one unless told otherwise), so the
KID separates the keys of senders that share one channel key, and a sender that
restarts its counter at 0 with a fresh KID never repeats a (key, nonce) pair.

Frames may arrive in any order and more than once (RED and retransmission
repeat them); decryption keeps no replay state and is a pure function of the
keys and the sealed bytes (de-duplication is the jitter buffer's job).
Every member can seal frames under any KID: this authenticates the channel,
not the sender.  Nothing in this module does I/O.
"""

import secrets
import threading
import unicodedata
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from stagevox.dsp.errors import ParameterError, ProtocolError

__all__ = [
    "CIPHER_SUITE", "KEY_SIZE", "MAX_BASE_KEY_BYTES", "MAX_CTR", "MAX_KID", "MIN_BASE_KEY_BYTES",
    "MIN_PASSPHRASE_CHARS", "NONCE_SIZE", "TAG_SIZE", "FrameCryptoError", "FrameDecryptor",
    "FrameEncryptor", "derive_key_salt", "encode_header", "key_from_text", "parse_header",
]

CIPHER_SUITE = 0x0004  #: AES_128_GCM_SHA256_128 (RFC 9605 section 8.1)
KEY_SIZE = 16  #: Nk, bytes of sframe_key
NONCE_SIZE = 12  #: Nn, bytes of sframe_salt and of the nonce
TAG_SIZE = 16  #: Nt, bytes of the authentication tag
MAX_KID = (1 << 64) - 1
MAX_CTR = (1 << 64) - 1
MIN_BASE_KEY_BYTES = 16
MAX_BASE_KEY_BYTES = 64
MIN_PASSPHRASE_CHARS = 8

_KEY_LABEL = b"SFrame 1.0 Secret key "
_SALT_LABEL = b"SFrame 1.0 Secret salt "
_PASSPHRASE_INFO = b"stagevox e2ee passphrase"
_SUITE_BYTES = CIPHER_SUITE.to_bytes(2, "big")
_MAX_HEADER = 1 + 8 + 8


class FrameCryptoError(ProtocolError):
    """A sealed frame that cannot be opened (malformed header, truncated, or not
    authentic), or a frame that can no longer be sealed; the message names the problem."""


def key_from_text(key: bytes | str) -> bytes:
    """The channel's base key from ``key``.

    Bytes (or bytearray/memoryview) of 16 to 64 bytes are used as they are.  A
    str is a passphrase of at least 8 characters (counted after Unicode NFC
    normalization, so the same passphrase typed on any system gives the same
    key); it becomes 32 bytes through HKDF-SHA256 over its UTF-8 bytes with the
    info label "stagevox e2ee passphrase".  HKDF does not slow down guessing:
    anyone holding one sealed frame can test passphrases offline, so a
    passphrase must carry its own entropy; prefer random bytes.

    Raises ``ParameterError`` (a ``ValueError``) naming the valid choices for
    bytes of another length, a shorter passphrase, or any other type.
    """
    if isinstance(key, (bytes, bytearray, memoryview)):
        raw = bytes(key)
        if not MIN_BASE_KEY_BYTES <= len(raw) <= MAX_BASE_KEY_BYTES:
            raise ParameterError(
                f"a base key given as bytes must be {MIN_BASE_KEY_BYTES} to "
                f"{MAX_BASE_KEY_BYTES} bytes long, got {len(raw)} bytes")
        return raw
    if isinstance(key, str):
        text = unicodedata.normalize("NFC", key)
        if len(text) < MIN_PASSPHRASE_CHARS:
            raise ParameterError(
                f"a passphrase must be at least {MIN_PASSPHRASE_CHARS} characters long, "
                f"got {len(text)}")
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=_PASSPHRASE_INFO).derive(text.encode("utf-8"))
    raise ParameterError(
        f"a base key must be bytes ({MIN_BASE_KEY_BYTES} to {MAX_BASE_KEY_BYTES} bytes) or a "
        f"passphrase str (at least {MIN_PASSPHRASE_CHARS} characters), "
        f"got {type(key).__name__}")


def _check_u64(value, name):
    """``value`` if it is an int in 0..2**64-1; ``ParameterError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_KID:
        raise ParameterError(f"{name} must be an integer in 0..2**64-1, got {value!r}")
    return value


def _extract(base_key):
    """sframe_secret = HKDF-Extract("", base_key) with SHA-256 (RFC 5869 section 2.2)."""
    mac = hmac.HMAC(b"", hashes.SHA256())
    mac.update(base_key)
    return mac.finalize()


def _expand(secret, kid):
    """(sframe_key, sframe_salt) of ``kid`` from ``sframe_secret`` (RFC 9605 section 4.4.2)."""
    context = kid.to_bytes(8, "big") + _SUITE_BYTES
    key = HKDFExpand(hashes.SHA256(), KEY_SIZE, _KEY_LABEL + context).derive(secret)
    salt = HKDFExpand(hashes.SHA256(), NONCE_SIZE, _SALT_LABEL + context).derive(secret)
    return key, salt


def derive_key_salt(base_key: bytes | str, kid: int) -> tuple[bytes, bytes]:
    """(sframe_key, sframe_salt), 16 and 12 bytes, of KID ``kid`` under ``base_key``.

    ``base_key`` is taken as ``key_from_text`` takes it.  Raises
    ``ParameterError`` for a bad base key or a KID outside 0..2**64-1.
    """
    return _expand(_extract(key_from_text(base_key)), _check_u64(kid, "kid"))


def _field(value):
    """(the 3-bit field, the extension flag, the bytes after the config byte) of ``value``."""
    if value < 8:
        return value, 0, b""
    length = (value.bit_length() + 7) // 8
    return length - 1, 1, value.to_bytes(length, "big")


def encode_header(kid: int, ctr: int) -> bytes:
    """The SFrame header (RFC 9605 section 4.3) of ``kid`` and ``ctr``: 1 to 17 bytes.

    Raises ``ParameterError`` for a KID or CTR outside 0..2**64-1.
    """
    k, x, kid_bytes = _field(_check_u64(kid, "kid"))
    c, y, ctr_bytes = _field(_check_u64(ctr, "ctr"))
    return bytes(((x << 7) | (k << 4) | (y << 3) | c,)) + kid_bytes + ctr_bytes


def _read_field(data, offset, extended, bits, name):
    """(value, next offset) of the KID or CTR field that ``bits``/``extended`` describe."""
    if not extended:
        return bits, offset
    end = offset + bits + 1
    if end > len(data):
        raise FrameCryptoError(
            f"SFrame header is truncated: its {name} needs bytes {offset}..{end - 1}, "
            f"the frame has {len(data)} bytes")
    raw = data[offset:end]
    value = int.from_bytes(raw, "big")
    # RFC 9605 requires the minimal encoding; accepting only that keeps one
    # header per (KID, CTR), so equal frames have equal bytes.
    if value < 8 or raw[0] == 0:
        raise FrameCryptoError(
            f"SFrame header {name} {value} is not minimally encoded ({len(raw)} bytes)")
    return value, end


def parse_header(data: bytes) -> tuple[int, int, int]:
    """(kid, ctr, header_length in bytes) of the SFrame header at the start of ``data``.

    Only minimal encodings (the only ones ``encode_header`` writes) are
    accepted.  Raises ``FrameCryptoError`` for empty data, a header whose KID
    or CTR runs past the end, or a non-minimal encoding.
    """
    if len(data) == 0:
        raise FrameCryptoError("SFrame header is missing: the frame is empty")
    config = data[0]
    kid, offset = _read_field(data, 1, config & 0x80, (config >> 4) & 0x07, "KID")
    ctr, offset = _read_field(data, offset, config & 0x08, config & 0x07, "CTR")
    return kid, ctr, offset


class FrameEncryptor:
    """Seals one sender's frames under one KID with a counter that starts at 0.

    ``base_key`` is the channel key, taken as ``key_from_text`` takes it.
    ``key_id`` is the KID, 0..2**64-1; None picks a random 64-bit KID.  A fixed
    ``key_id`` must never be used by two encryptors with the same base key (two
    senders, or one sender restarted): their counters would repeat nonces.
    Raises ``ParameterError`` for a bad key or KID.  ``encrypt`` may be called
    from several threads.
    """

    def __init__(self, base_key: bytes | str, key_id: int | None = None):
        base = key_from_text(base_key)
        if key_id is None:
            key_id = secrets.randbits(64)
        self.key_id = _check_u64(key_id, "key_id")
        key, salt = _expand(_extract(base), self.key_id)
        self._aead = AESGCM(key)
        self._salt = int.from_bytes(salt, "big")
        self._ctr = 0
        self._lock = threading.Lock()

    @property
    def overhead(self) -> int:
        """Bytes the next ``encrypt`` adds to its frame: header plus 16-byte tag.

        The header grows (2 to 17 bytes) as the counter needs more bytes.
        """
        return len(encode_header(self.key_id, min(self._ctr, MAX_CTR))) + TAG_SIZE

    def encrypt(self, frame: bytes, *, metadata: bytes = b"") -> bytes:
        """The sealed frame: header || ciphertext || tag, ``len(frame) + overhead`` bytes.

        ``metadata`` (RFC 9605 section 9.4) is authenticated, not sent; the
        receiver must pass the same bytes.  Each call uses the next counter
        value.  Raises ``FrameCryptoError`` once the counter would pass
        2**64-1 (a new encryptor, with a new KID, must take over).
        """
        with self._lock:
            ctr = self._ctr
            if ctr > MAX_CTR:
                raise FrameCryptoError(
                    f"frame counter of KID {self.key_id:#x} is exhausted (2**64 frames sealed); "
                    "start a new FrameEncryptor with another KID")
            self._ctr = ctr + 1
        header = encode_header(self.key_id, ctr)
        nonce = (self._salt ^ ctr).to_bytes(NONCE_SIZE, "big")
        return header + self._aead.encrypt(nonce, frame, header + metadata)


class FrameDecryptor:
    """Opens frames sealed by any sender of one channel key, whatever their KID.

    The key of each KID is derived on first use and kept in a cache of at most
    ``max_keys`` KIDs (the least recently used dropped); a key enters the cache
    only once a frame under it has authenticated, so forged KIDs cost one key
    derivation each and never push out a sender's key.  ``failures`` counts
    failed ``decrypt`` calls.  Raises ``ParameterError`` for a bad key or a
    ``max_keys`` below 1.  Not thread-safe: use one decryptor per thread.
    """

    def __init__(self, base_key: bytes | str, *, max_keys: int = 64):
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ParameterError(f"max_keys must be an integer >= 1, got {max_keys!r}")
        self._secret = _extract(key_from_text(base_key))
        self._max_keys = max_keys
        self._keys = OrderedDict()  # kid -> (AESGCM, salt as int), most recent last
        self.failures = 0

    @property
    def cached_keys(self) -> int:
        """How many KIDs' keys the cache holds now (at most ``max_keys``)."""
        return len(self._keys)

    def decrypt(self, sealed: bytes, *, metadata: bytes = b"") -> bytes:
        """The frame that ``sealed`` (header || ciphertext || tag) carries.

        ``metadata`` must equal what the sender authenticated (empty by
        default).  Raises ``FrameCryptoError`` for a malformed or truncated
        header, fewer than 16 bytes after the header, or failed authentication
        (another channel key, an altered byte, other metadata); each raise
        adds one to ``failures``.
        """
        try:
            kid, ctr, header_length = parse_header(sealed)
            if len(sealed) - header_length < TAG_SIZE:
                raise FrameCryptoError(
                    f"sealed frame is truncated: {len(sealed) - header_length} bytes after "
                    f"the header, at least {TAG_SIZE} (the tag) are needed")
            cached = self._keys.get(kid)
            if cached is None:
                key, salt = _expand(self._secret, kid)
                aead, salt_int = AESGCM(key), int.from_bytes(salt, "big")
            else:
                aead, salt_int = cached
            header = bytes(sealed[:header_length])
            nonce = (salt_int ^ ctr).to_bytes(NONCE_SIZE, "big")
            try:
                frame = aead.decrypt(nonce, sealed[header_length:], header + metadata)
            except InvalidTag:
                raise FrameCryptoError(
                    f"sealed frame of KID {kid:#x}, CTR {ctr} failed authentication: "
                    "sealed under another channel key, or altered") from None
        except FrameCryptoError:
            self.failures += 1
            raise
        if cached is None:
            self._keys[kid] = (aead, salt_int)
            if len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(kid)
        return frame

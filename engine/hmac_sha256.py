"""HMAC-SHA256 on the shortest path to the standard library's C code.

A handshake computes about fifteen HMACs, so the way to the C code counts:
``hmac.digest`` calls OpenSSL's one-shot ``HMAC()``, which with OpenSSL 3
looks the MAC and the digest up by name on every call (about 20,000
instructions each, several times the hashing itself), and ``hmac.new`` wraps
the C object in a Python one.  The C ``HMAC`` object of ``_hashlib``, the
module ``hmac`` itself is built on, keeps its digest fetched once.  Where
``_hashlib`` is missing (a Python built without OpenSSL), ``hmac`` is used.
"""

import hashlib
import hmac

try:
    from _hashlib import hmac_new as _hmac_new
except ImportError:                  # no OpenSSL in this Python: the pure path of ``hmac``
    _hmac_new = None

__all__ = ["hmac_new", "hmac_sha256", "KeyedHmac"]

#: ``hmac_new(key, data, "sha256").digest()`` is ``hmac_sha256(key, data)``
#: without a Python frame between (for code that makes several in a row).
hmac_new = hmac.new if _hmac_new is None else _hmac_new

if _hmac_new is not None:
    def hmac_sha256(key: bytes, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` under ``key`` (both bytes): 32 bytes."""
        return _hmac_new(key, data, "sha256").digest()
else:
    def hmac_sha256(key: bytes, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` under ``key`` (both bytes): 32 bytes."""
        return hmac.new(key, data, hashlib.sha256).digest()


class KeyedHmac:
    """HMAC-SHA256 under one key used again and again: the key is set up
    once and each MAC starts from a copy of that state.  ``mac(data)`` returns
    the 32-byte HMAC of ``data``."""

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes):
        self._keyed = _hmac_new(key, b"", "sha256") if _hmac_new is not None \
            else hmac.new(key, digestmod=hashlib.sha256)

    def __call__(self, data: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(data)
        return mac.digest()

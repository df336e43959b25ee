"""engine.hmac_sha256 against the standard library's hmac (RFC 2104), with and without _hashlib."""

import hashlib
import hmac
import importlib
import random
import sys

import pytest

from stagevox.engine import hmac_sha256 as hs

# Keys shorter than, equal to and longer than SHA-256's 64-byte block (a longer
# key is hashed first), and empty and multi-block messages.
SIZES = (0, 1, 32, 64, 65, 200)
MESSAGES = (0, 1, 55, 64, 1168, 5000)


def cases():
    rng = random.Random(5)
    return [(rng.randbytes(k), rng.randbytes(m)) for k in SIZES for m in MESSAGES]


def test_rfc4231_case_2():
    """RFC 4231 test case 2: key "Jefe", "what do ya want for nothing?"."""
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert hs.hmac_sha256(b"Jefe", b"what do ya want for nothing?").hex() == expected


@pytest.fixture(params=["_hashlib", "hmac fallback"])
def module(request, monkeypatch):
    """The module as imported with _hashlib, and as imported without it."""
    if request.param == "_hashlib":
        yield hs
        return
    monkeypatch.setitem(sys.modules, "_hashlib", None)     # import _hashlib now fails
    fallback = importlib.reload(hs)
    assert fallback._hmac_new is None
    yield fallback
    monkeypatch.undo()
    importlib.reload(hs)


def test_same_as_hmac_digest(module):
    for key, data in cases():
        expected = hmac.digest(key, data, hashlib.sha256)
        assert module.hmac_sha256(key, data) == expected
        assert module.hmac_new(key, data, "sha256").digest() == expected


def test_keyed_hmac_used_again_and_again(module):
    rng = random.Random(6)
    for size in SIZES:
        key = rng.randbytes(size)
        keyed = module.KeyedHmac(key)
        for data in (rng.randbytes(m) for m in MESSAGES + MESSAGES):
            assert keyed(data) == hmac.digest(key, data, hashlib.sha256)

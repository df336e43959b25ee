"""End-to-end frame encryption (engine.e2ee) against RFC 9605 (SFrame).

The test vectors are transcribed from RFC 9605 Appendix C (C.1 header
encoding, C.3 SFrame encryption with cipher suite 0x0004); they agree with the
JSON that the SFrame working group publishes with the draft
(github.com/sframe-wg/sframe, test-vectors/test-vectors.json).  Independent
slow references (HKDF written with ``hmac``, the header built bit by bit from
the RFC's prose) cover what the vectors do not.
"""

import hashlib
import hmac
import itertools
import random
import sys
import threading
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagevox.dsp.errors import ParameterError, ProtocolError
from stagevox.engine.e2ee import (
    CIPHER_SUITE,
    MAX_CTR,
    TAG_SIZE,
    FrameCryptoError,
    FrameDecryptor,
    FrameEncryptor,
    derive_key_salt,
    encode_header,
    key_from_text,
    parse_header,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
U64 = st.integers(0, 2**64 - 1)
BOUNDARIES = (0, 7, 8, 255, 256, 2**64 - 1)

# RFC 9605 Appendix C.1: KID, CTR, encoded header (a subset of the 289 pairs).
RFC_HEADERS = """
    0x0000000000000000 0x0000000000000000 00
    0x0000000000000000 0x0000000000000001 01
    0x0000000000000000 0x00000000000000ff 08ff
    0x0000000000000000 0x0000000000000100 090100
    0x0000000000000000 0x0100000000000000 0f0100000000000000
    0x0000000000000000 0xffffffffffffffff 0fffffffffffffffff
    0x0000000000000001 0x0000000000000000 10
    0x0000000000000001 0x0000000000000001 11
    0x0000000000000001 0x00000000000000ff 18ff
    0x0000000000000001 0x0000000000000100 190100
    0x0000000000000001 0x0100000000000000 1f0100000000000000
    0x0000000000000001 0xffffffffffffffff 1fffffffffffffffff
    0x00000000000000ff 0x0000000000000000 80ff
    0x00000000000000ff 0x0000000000000001 81ff
    0x00000000000000ff 0x00000000000000ff 88ffff
    0x00000000000000ff 0x0000000000000100 89ff0100
    0x00000000000000ff 0x0100000000000000 8fff0100000000000000
    0x00000000000000ff 0xffffffffffffffff 8fffffffffffffffffff
    0x0000000000000100 0x0000000000000000 900100
    0x0000000000000100 0x0000000000000001 910100
    0x0000000000000100 0x00000000000000ff 980100ff
    0x0000000000000100 0x0000000000000100 9901000100
    0x0000000000000100 0x0100000000000000 9f01000100000000000000
    0x0000000000000100 0xffffffffffffffff 9f0100ffffffffffffffff
    0x000000000000ffff 0x0000000000000000 90ffff
    0x000000000000ffff 0x0000000000000001 91ffff
    0x000000000000ffff 0x00000000000000ff 98ffffff
    0x000000000000ffff 0x0000000000000100 99ffff0100
    0x000000000000ffff 0x0100000000000000 9fffff0100000000000000
    0x000000000000ffff 0xffffffffffffffff 9fffffffffffffffffffff
    0x0000000100000000 0x0000000000000000 c00100000000
    0x0000000100000000 0x0000000000000001 c10100000000
    0x0000000100000000 0x00000000000000ff c80100000000ff
    0x0000000100000000 0x0000000000000100 c901000000000100
    0x0000000100000000 0x0100000000000000 cf01000000000100000000000000
    0x0000000100000000 0xffffffffffffffff cf0100000000ffffffffffffffff
    0xffffffffffffffff 0x0000000000000000 f0ffffffffffffffff
    0xffffffffffffffff 0x0000000000000001 f1ffffffffffffffff
    0xffffffffffffffff 0x00000000000000ff f8ffffffffffffffffff
    0xffffffffffffffff 0x0000000000000100 f9ffffffffffffffff0100
    0xffffffffffffffff 0x0100000000000000 ffffffffffffffffff0100000000000000
    0xffffffffffffffff 0xffffffffffffffff ffffffffffffffffffffffffffffffffff
"""
HEADER_VECTORS = [(int(k, 16), int(c, 16), bytes.fromhex(h))
                  for k, c, h in (line.split() for line in RFC_HEADERS.strip().splitlines())]

# RFC 9605 Appendix C.3, cipher suite 0x0004 (AES_128_GCM_SHA256_128).
RFC_KID = 0x123
RFC_CTR = 0x4567
RFC_BASE_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
RFC_KEY_LABEL = bytes.fromhex("534672616d6520312e3020536563726574206b65792000000000000001230004")
RFC_SALT_LABEL = bytes.fromhex(
    "534672616d6520312e30205365637265742073616c742000000000000001230004")
RFC_SECRET = bytes.fromhex("d926952ca8b7ec4a95941d1ada3a5203ceff8cceee34f574d23909eb314c40c0")
RFC_KEY = bytes.fromhex("d34f547f4ca4f9a7447006fe7fcbf768")
RFC_SALT = bytes.fromhex("75234edefe07819026751816")
RFC_METADATA = bytes.fromhex("4945544620534672616d65205747")
RFC_PT = bytes.fromhex("64726166742d696574662d736672616d652d656e63")
RFC_CT = bytes.fromhex("9901234567b7412c2513a1b66dbb48841bbaf17f598751176ad847681a69c6d0"
                       "b091c07018ce4adb34eb")


# ----------------------------------------------------------------------------- references

def ref_extract(salt, ikm):
    """HKDF-Extract with SHA-256 (RFC 5869 section 2.2), from the hmac module."""
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def ref_expand(prk, info, length):
    """HKDF-Expand with SHA-256 (RFC 5869 section 2.3), block by block."""
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def ref_labels(kid):
    """The RFC 9605 section 4.4.2 key and salt labels of ``kid`` for suite 0x0004."""
    tail = kid.to_bytes(8, "big") + (4).to_bytes(2, "big")
    return b"SFrame 1.0 Secret key " + tail, b"SFrame 1.0 Secret salt " + tail


def ref_key_salt(base_key, kid):
    """(sframe_key, sframe_salt) the slow way."""
    secret = ref_extract(b"", base_key)
    key_label, salt_label = ref_labels(kid)
    return ref_expand(secret, key_label, 16), ref_expand(secret, salt_label, 12)


def ref_header(kid, ctr):
    """The SFrame header built bit by bit from RFC 9605 section 4.3's prose."""
    def part(value):
        # (flag, 3-bit field, extra bytes): small values in the field, others
        # as the fewest big-endian bytes with the field holding length - 1.
        if value <= 7:
            return 0, value, []
        length = 1
        while value >= 256 ** length:
            length += 1
        return 1, length - 1, [(value >> (8 * (length - 1 - i))) & 0xFF for i in range(length)]

    x, k, kid_bytes = part(kid)
    y, c, ctr_bytes = part(ctr)
    bits = [x, (k >> 2) & 1, (k >> 1) & 1, k & 1, y, (c >> 2) & 1, (c >> 1) & 1, c & 1]
    config = sum(bit << (7 - i) for i, bit in enumerate(bits))
    return bytes([config] + kid_bytes + ctr_bytes)


# ----------------------------------------------------------------------------- RFC 9605 vectors

def test_constants():
    assert (CIPHER_SUITE, TAG_SIZE, MAX_CTR) == (0x0004, 16, 2**64 - 1)


@pytest.mark.parametrize(("kid", "ctr", "header"), HEADER_VECTORS,
                         ids=[h.hex() for _, _, h in HEADER_VECTORS])
def test_rfc_header_vectors(kid, ctr, header):
    assert encode_header(kid, ctr) == header
    assert parse_header(header) == (kid, ctr, len(header))
    assert parse_header(header + b"\x00payload") == (kid, ctr, len(header))


def test_reference_derivation_matches_rfc_vector():
    """The slow reference reproduces the RFC's labels, secret, key and salt."""
    assert ref_labels(RFC_KID) == (RFC_KEY_LABEL, RFC_SALT_LABEL)
    assert ref_extract(b"", RFC_BASE_KEY) == RFC_SECRET
    assert ref_key_salt(RFC_BASE_KEY, RFC_KID) == (RFC_KEY, RFC_SALT)


def test_rfc_key_derivation():
    assert derive_key_salt(RFC_BASE_KEY, RFC_KID) == (RFC_KEY, RFC_SALT)


def test_rfc_encryption():
    """Encryptor with KID 0x123: frame number 0x4567 (its CTR) seals to the RFC's ciphertext."""
    encryptor = FrameEncryptor(RFC_BASE_KEY, key_id=RFC_KID)
    for ctr in range(RFC_CTR):
        assert parse_header(encryptor.encrypt(b""))[1] == ctr
    assert encryptor.encrypt(RFC_PT, metadata=RFC_METADATA) == RFC_CT


def test_rfc_decryption():
    decryptor = FrameDecryptor(RFC_BASE_KEY)
    assert decryptor.decrypt(RFC_CT, metadata=RFC_METADATA) == RFC_PT
    with pytest.raises(FrameCryptoError, match="authentication"):
        decryptor.decrypt(RFC_CT)  # the metadata is part of the AAD
    assert decryptor.failures == 1


@settings(max_examples=50)
@given(base_key=st.binary(min_size=16, max_size=64), kid=U64)
def test_derivation_matches_slow_reference(base_key, kid):
    assert derive_key_salt(base_key, kid) == ref_key_salt(base_key, kid)


# ----------------------------------------------------------------------------- round trips

@settings(max_examples=60, deadline=None)
@given(frames=st.lists(st.binary(max_size=1500), min_size=1, max_size=12), data=st.data())
def test_round_trip_any_order_and_repeated(frames, data):
    encryptor = FrameEncryptor(KEY)
    sealed = [encryptor.encrypt(frame) for frame in frames]
    for i, (frame, item) in enumerate(zip(frames, sealed)):
        assert len(item) == len(frame) + len(encode_header(encryptor.key_id, i)) + TAG_SIZE
        assert parse_header(item)[:2] == (encryptor.key_id, i)
    decryptor = FrameDecryptor(KEY)
    order = data.draw(st.lists(st.integers(0, len(frames) - 1), min_size=len(frames),
                               max_size=3 * len(frames)))
    order += data.draw(st.permutations(range(len(frames))))
    for index in order:
        assert decryptor.decrypt(sealed[index]) == frames[index]
    assert decryptor.failures == 0


def test_accepts_bytes_like_input():
    encryptor = FrameEncryptor(KEY, key_id=9)
    sealed = encryptor.encrypt(memoryview(b"opus frame"))
    decryptor = FrameDecryptor(bytearray(KEY))
    assert decryptor.decrypt(memoryview(sealed)) == b"opus frame"
    assert decryptor.decrypt(bytearray(sealed)) == b"opus frame"


def test_senders_with_different_kids_do_not_share_keystream():
    frame = bytes(80)
    alice, bob = FrameEncryptor(KEY, key_id=1), FrameEncryptor(KEY, key_id=2)
    sealed_a, sealed_b = alice.encrypt(frame), bob.encrypt(frame)
    # Same CTR (0), same frame: one-byte headers, then nothing in common.
    assert parse_header(sealed_a) == (1, 0, 1) and parse_header(sealed_b) == (2, 0, 1)
    assert sealed_a[1:] != sealed_b[1:]
    assert sum(a == b for a, b in zip(sealed_a[1:], sealed_b[1:])) < 16
    decryptor = FrameDecryptor(KEY)
    assert decryptor.decrypt(sealed_a) == frame and decryptor.decrypt(sealed_b) == frame
    assert decryptor.cached_keys == 2


def test_random_kids_are_distinct_and_in_range():
    kids = [FrameEncryptor(KEY).key_id for _ in range(20)]
    assert len(set(kids)) == 20
    assert all(0 <= kid <= 2**64 - 1 for kid in kids)
    assert max(kids) >= 2**56  # 64 random bits, not a small counter


def test_counter_is_unique_across_threads():
    encryptor = FrameEncryptor(KEY, key_id=5)
    results = [[] for _ in range(4)]

    def work(out):
        for _ in range(2000):
            out.append(encryptor.encrypt(b"x"))

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so an unlocked counter would race
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    ctrs = [parse_header(item)[1] for item in itertools.chain(*results)]
    assert sorted(ctrs) == list(range(8000))


def test_overhead_tracks_the_growing_header():
    encryptor = FrameEncryptor(KEY, key_id=3)
    for start, header_size in ((0, 1), (6, 1), (7, 1), (8, 2), (255, 2), (256, 3),
                               (2**56 - 1, 8), (2**56, 9), (MAX_CTR, 9)):
        encryptor._ctr = start  # jump ahead instead of sealing 2**56 frames
        for _ in range(2 if start < MAX_CTR else 1):
            expected = encryptor.overhead
            frame = b"\x01" * 80
            assert len(encryptor.encrypt(frame)) - len(frame) == expected
        encryptor._ctr = start
        assert encryptor.overhead == header_size + TAG_SIZE
    assert FrameEncryptor(KEY, key_id=2**64 - 1).overhead == 1 + 8 + TAG_SIZE


def test_counter_exhaustion_raises():
    encryptor = FrameEncryptor(KEY, key_id=3)
    encryptor._ctr = MAX_CTR  # the last counter value
    last = encryptor.encrypt(b"last")
    assert parse_header(last)[1] == MAX_CTR
    assert FrameDecryptor(KEY).decrypt(last) == b"last"
    for _ in range(2):
        with pytest.raises(FrameCryptoError, match="exhausted"):
            encryptor.encrypt(b"one too many")


# ----------------------------------------------------------------------------- refusals

def test_wrong_key_fails_and_counts():
    sealed = FrameEncryptor(KEY).encrypt(b"hello" * 10)
    decryptor = FrameDecryptor(OTHER_KEY)
    for count in (1, 2):
        with pytest.raises(FrameCryptoError, match="authentication"):
            decryptor.decrypt(sealed)
        assert decryptor.failures == count
    assert decryptor.cached_keys == 0
    assert FrameDecryptor("channel passphrase").failures == 0
    with pytest.raises(FrameCryptoError):
        FrameDecryptor("channel passphrase").decrypt(sealed)


def test_passphrases_interoperate_and_differ():
    sealed = FrameEncryptor("correct horse battery").encrypt(b"voice")
    assert FrameDecryptor("correct horse battery").decrypt(sealed) == b"voice"
    with pytest.raises(FrameCryptoError):
        FrameDecryptor("correct horse battery!").decrypt(sealed)


def test_failed_frame_is_an_error_of_the_package():
    with pytest.raises(ProtocolError):
        FrameDecryptor(KEY).decrypt(b"\x00" * 20)
    assert issubclass(FrameCryptoError, ValueError)


@settings(max_examples=150)
@given(frame=st.binary(max_size=200), data=st.data())
def test_any_bit_flip_is_refused(frame, data):
    encryptor = FrameEncryptor(KEY, key_id=data.draw(st.sampled_from(BOUNDARIES)))
    encryptor._ctr = data.draw(st.sampled_from(BOUNDARIES))
    sealed = bytearray(encryptor.encrypt(frame))
    bit = data.draw(st.integers(0, 8 * len(sealed) - 1))
    sealed[bit // 8] ^= 1 << (bit % 8)
    decryptor = FrameDecryptor(KEY)
    with pytest.raises(FrameCryptoError):
        decryptor.decrypt(bytes(sealed))
    assert decryptor.failures == 1


def test_every_truncation_and_extension_is_refused():
    encryptor = FrameEncryptor(KEY, key_id=0x1234)
    encryptor._ctr = 0x10000
    sealed = encryptor.encrypt(b"an opus frame of some length")
    decryptor = FrameDecryptor(KEY)
    for length in range(len(sealed)):
        with pytest.raises(FrameCryptoError):
            decryptor.decrypt(sealed[:length])
    with pytest.raises(FrameCryptoError):
        decryptor.decrypt(sealed + b"\x00")
    assert decryptor.failures == len(sealed) + 1
    assert decryptor.decrypt(sealed) == b"an opus frame of some length"


def test_truncation_messages_name_the_problem():
    decryptor = FrameDecryptor(KEY)
    with pytest.raises(FrameCryptoError, match="empty"):
        decryptor.decrypt(b"")
    with pytest.raises(FrameCryptoError, match="truncated.*KID"):
        decryptor.decrypt(bytes([0xF0, 1, 2]))          # an 8-byte KID announced
    with pytest.raises(FrameCryptoError, match="truncated.*CTR"):
        decryptor.decrypt(bytes([0x0A, 1]))             # a 3-byte CTR announced
    with pytest.raises(FrameCryptoError, match="truncated.*tag"):
        decryptor.decrypt(bytes([0x00]) + bytes(15))    # 15 bytes: no room for the tag


# ----------------------------------------------------------------------------- headers

@pytest.mark.parametrize(("kid", "ctr"), list(itertools.product(BOUNDARIES, BOUNDARIES)))
def test_header_boundaries_match_reference(kid, ctr):
    header = encode_header(kid, ctr)
    assert header == ref_header(kid, ctr)
    assert parse_header(header + b"\xff" * 3) == (kid, ctr, len(header))


@settings(max_examples=300)
@given(kid=U64, ctr=U64)
def test_header_round_trip_matches_reference(kid, ctr):
    header = encode_header(kid, ctr)
    assert header == ref_header(kid, ctr)
    assert parse_header(header) == (kid, ctr, len(header))


@pytest.mark.parametrize("data", [
    bytes([0x80, 0x05]),        # KID 5 written in an extra byte
    bytes([0x90, 0x00, 0xFF]),  # KID 255 with a leading zero byte
    bytes([0x08, 0x07]),        # CTR 7 written in an extra byte
    bytes([0x09, 0x00, 0x08]),  # CTR 8 in two bytes
])
def test_non_minimal_headers_are_refused(data):
    with pytest.raises(FrameCryptoError, match="minimal"):
        parse_header(data)


@pytest.mark.parametrize(("kid", "ctr"), [(-1, 0), (0, -1), (2**64, 0), (0, 2**64),
                                          (True, 0), (0, 1.0), ("1", 0)])
def test_encode_header_refuses_values_outside_u64(kid, ctr):
    with pytest.raises(ParameterError, match="0..2"):
        encode_header(kid, ctr)


# ----------------------------------------------------------------------------- fuzz

@settings(max_examples=500)
@given(data=st.binary(max_size=64))
def test_parse_header_fuzz(data):
    try:
        kid, ctr, length = parse_header(data)
    except FrameCryptoError:
        return
    # Whatever parses is the one canonical header of its (KID, CTR).
    assert encode_header(kid, ctr) == bytes(data[:length])


@settings(max_examples=400)
@given(data=st.one_of(
    st.binary(max_size=80),
    st.builds(lambda kid, ctr, tail: encode_header(kid, ctr) + tail,
              U64, U64, st.binary(max_size=80))))
def test_decrypt_fuzz_raises_only_frame_crypto_error(data):
    decryptor = FrameDecryptor(KEY, max_keys=4)
    with pytest.raises(FrameCryptoError):
        decryptor.decrypt(data)
    assert decryptor.failures == 1
    assert decryptor.cached_keys == 0


# ----------------------------------------------------------------------------- key cache

def test_forged_kids_never_enter_the_cache():
    encryptor = FrameEncryptor(KEY, key_id=42)
    decryptor = FrameDecryptor(KEY, max_keys=8)
    assert decryptor.decrypt(encryptor.encrypt(b"real")) == b"real"
    rng = random.Random(7)
    kids = {rng.getrandbits(64) for _ in range(1000)} - {42}
    for kid in kids:
        with pytest.raises(FrameCryptoError):
            decryptor.decrypt(encode_header(kid, rng.randrange(2**32)) + rng.randbytes(40))
        assert decryptor.cached_keys <= 8
    assert decryptor.failures == len(kids) > 990
    assert decryptor.cached_keys == 1 and 42 in decryptor._keys
    assert decryptor.decrypt(encryptor.encrypt(b"still")) == b"still"


def test_authentic_kids_are_bounded_least_recently_used():
    """A member knows the channel key and can seal under any KID: the cache stays bounded."""
    decryptor = FrameDecryptor(KEY, max_keys=8)
    sealed = {kid: FrameEncryptor(KEY, key_id=kid).encrypt(kid.to_bytes(2, "big"))
              for kid in range(1000)}
    for kid, item in sealed.items():
        assert decryptor.decrypt(item) == kid.to_bytes(2, "big")
        assert decryptor.cached_keys == min(kid + 1, 8)
        if kid >= 8:
            # KID 8 evicts KID 0; touching it derives its key again, and from
            # then on being the most recently used keeps it cached.
            assert decryptor.decrypt(sealed[0]) == b"\x00\x00"
    assert decryptor.cached_keys == 8
    assert set(decryptor._keys) == {0, *range(993, 1000)}
    assert list(decryptor._keys)[-1] == 0  # most recently used last
    # An evicted KID is derived again, not refused.
    assert decryptor.decrypt(sealed[500]) == (500).to_bytes(2, "big")
    assert decryptor.failures == 0


# ----------------------------------------------------------------------------- key_from_text

@pytest.mark.parametrize("size", [16, 17, 32, 64])
def test_key_bytes_used_as_they_are(size):
    key = bytes(range(size))
    assert key_from_text(key) == key
    assert key_from_text(bytearray(key)) == key


@pytest.mark.parametrize("size", [0, 8, 15, 65, 128])
def test_key_bytes_of_wrong_length_refused(size):
    with pytest.raises(ParameterError, match="16 to 64 bytes"):
        key_from_text(bytes(size))


def test_passphrase_becomes_hkdf_sha256_key():
    key = key_from_text("sing along, everyone")
    assert len(key) == 32
    assert key == key_from_text("sing along, everyone")
    expected = ref_expand(ref_extract(b"", "sing along, everyone".encode()),
                          b"stagevox e2ee passphrase", 32)
    assert key == expected
    assert key_from_text("sing along, everyone!") != key


def test_passphrase_is_nfc_normalized():
    composed = unicodedata.normalize("NFC", "caf\u00e9 au lait")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert key_from_text(composed) == key_from_text(decomposed)
    # Seven characters, eight code points before normalization: still too short.
    with pytest.raises(ParameterError, match="at least 8 characters"):
        key_from_text("cafe\u0301 ab")


@pytest.mark.parametrize("passphrase", ["", "short", "1234567"])
def test_short_passphrase_refused(passphrase):
    with pytest.raises(ValueError, match="at least 8 characters"):
        key_from_text(passphrase)


@pytest.mark.parametrize("value", [None, 12345678901234567890, 1.5, ["k"] * 16, True])
def test_other_key_types_refused(value):
    with pytest.raises(ParameterError, match="bytes.*passphrase"):
        key_from_text(value)
    with pytest.raises(ValueError):
        FrameEncryptor(value)
    with pytest.raises(ValueError):
        FrameDecryptor(value)


def test_key_from_text_accepts_eight_characters():
    assert len(key_from_text("12345678")) == 32


@pytest.mark.parametrize("key_id", [-1, 2**64, True, 1.0, "7"])
def test_bad_key_id_refused(key_id):
    with pytest.raises(ParameterError, match="key_id"):
        FrameEncryptor(KEY, key_id=key_id)


@pytest.mark.parametrize("max_keys", [0, -3, 1.5, True])
def test_bad_max_keys_refused(max_keys):
    with pytest.raises(ParameterError, match="max_keys"):
        FrameDecryptor(KEY, max_keys=max_keys)

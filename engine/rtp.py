"""RTP packets (RFC 3550), the payload types stagevox uses, and wrap-around arithmetic.

An RTP packet is a 12-byte fixed header, up to 15 CSRC identifiers, an
optional header extension, the payload and optional padding::

    byte 0   V(2) P(1) X(1) CC(4)      version 2, padding, extension, CSRC count
    byte 1   M(1) PT(7)                marker, payload type
    2..3     sequence number           u16, big-endian
    4..7     timestamp                 u32
    8..11    SSRC                      u32
    then     CC x CSRC                 u32 each
    then     (X) profile u16, length u16 in 32-bit words, extension data
    then     payload
    then     (P) padding, the last byte counting the padding bytes including itself

Sequence numbers wrap at 2**16 and timestamps at 2**32; the helpers here
compare them as the shortest signed distance.  Nothing in this module does I/O.
"""

import struct
from dataclasses import dataclass, field

from stagevox.dsp.errors import ProtocolError


class PacketError(ProtocolError):
    """A packet that cannot be parsed or serialized; the message names the problem."""


PT_L16 = 96  #: 16-bit big-endian PCM at 48 kHz (a debug codec)
PT_OPUS = 111  #: Opus (RFC 7587), RTP clock 48000 Hz
PT_RED = 100  #: redundant audio (RFC 2198)
PT_SEALED_OPUS = 112  #: Opus frames sealed end to end (``e2ee``), RTP clock 48000 Hz
CLOCK_RATE = 48000  #: RTP clock of every stagevox payload type, in Hz

RTP_VERSION = 2
HEADER_SIZE = 12  #: fixed header, bytes
MAX_CSRC = 15

_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32
_FIXED = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")


@dataclass
class RtpPacket:
    """One RTP packet.  ``parse`` reads the wire bytes, ``serialize`` writes them.

    Fields (RFC 3550, 5.1): ``payload_type`` (7 bits), ``sequence_number``
    (16 bits), ``timestamp`` (32 bits, 48 kHz for Opus), ``ssrc`` (32 bits),
    ``marker``, ``payload`` (bytes), ``csrc`` (up to 15 contributing sources).

    ``padding_size`` is the number of padding bytes (0 for none, else 1..255,
    the last padding byte holding that count); ``extension_profile`` not None
    means a header extension is present, with ``extension`` as its data (a
    multiple of 4 bytes, possibly empty).
    """

    payload_type: int = 0
    sequence_number: int = 0
    timestamp: int = 0
    ssrc: int = 0
    marker: bool = False
    payload: bytes = b""
    csrc: list[int] = field(default_factory=list)
    extension_profile: int | None = None
    extension: bytes = b""
    padding_size: int = 0

    @classmethod
    def parse(cls, data: bytes) -> "RtpPacket":
        """Read a packet from ``data``.

        Raises ``PacketError`` when the packet is shorter than its header,
        the version is not 2, the CSRC list or the header extension runs past
        the end, or the padding count is 0 or longer than what follows the
        header.
        """
        data = bytes(data)
        n = len(data)
        if n < HEADER_SIZE:
            raise PacketError(f"RTP packet too short: {n} bytes, need at least {HEADER_SIZE}")
        b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data, 0)
        version = b0 >> 6
        if version != RTP_VERSION:
            raise PacketError(f"RTP version must be {RTP_VERSION}, got {version}")
        has_padding = bool(b0 & 0x20)
        has_extension = bool(b0 & 0x10)
        cc = b0 & 0x0F
        pos = HEADER_SIZE
        if n < pos + 4 * cc:
            raise PacketError(
                f"RTP packet truncated: CSRC count {cc} needs {pos + 4 * cc} header bytes, "
                f"packet is {n} bytes")
        csrc = list(struct.unpack_from(f"!{cc}I", data, pos))
        pos += 4 * cc
        profile = None
        extension = b""
        if has_extension:
            if n < pos + 4:
                raise PacketError(
                    f"RTP header extension truncated: its 4-byte header needs {pos + 4} bytes, "
                    f"packet is {n} bytes")
            profile, words = _EXT_HEADER.unpack_from(data, pos)
            pos += 4
            if n < pos + 4 * words:
                raise PacketError(
                    f"RTP header extension truncated: length {words} words needs "
                    f"{pos + 4 * words} bytes, packet is {n} bytes")
            extension = data[pos:pos + 4 * words]
            pos += 4 * words
        end = n
        padding = 0
        if has_padding:
            padding = data[-1]
            if padding == 0:
                raise PacketError("RTP padding length is 0; it must count at least its own byte")
            if padding > n - pos:
                raise PacketError(
                    f"RTP padding length {padding} exceeds the {n - pos} bytes after the header")
            end = n - padding
        return cls(
            payload_type=b1 & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            marker=bool(b1 & 0x80),
            payload=data[pos:end],
            csrc=csrc,
            extension_profile=profile,
            extension=extension,
            padding_size=padding,
        )

    def serialize(self) -> bytes:
        """The packet's wire bytes.

        Raises ``PacketError`` naming the field when one is out of range:
        payload type 0..127, sequence number 0..65535, timestamp, SSRC and
        CSRCs 0..2**32-1, at most 15 CSRCs, extension profile 0..65535 with
        data a multiple of 4 bytes (at most 65535 words), padding 0..255.
        """
        _check_int("payload_type", self.payload_type, 0, 127)
        _check_int("sequence_number", self.sequence_number, 0, _SEQ_MOD - 1)
        _check_int("timestamp", self.timestamp, 0, _TS_MOD - 1)
        _check_int("ssrc", self.ssrc, 0, _TS_MOD - 1)
        _check_int("padding_size", self.padding_size, 0, 255)
        if len(self.csrc) > MAX_CSRC:
            raise PacketError(f"RTP packet has {len(self.csrc)} CSRCs, at most {MAX_CSRC}")
        for i, c in enumerate(self.csrc):
            _check_int(f"csrc[{i}]", c, 0, _TS_MOD - 1)
        _check_bytes("payload", self.payload)
        _check_bytes("extension", self.extension)
        has_extension = self.extension_profile is not None
        if has_extension:
            _check_int("extension_profile", self.extension_profile, 0, 0xFFFF)
            if len(self.extension) % 4:
                raise PacketError(
                    f"RTP header extension is {len(self.extension)} bytes; "
                    "it must be a multiple of 4")
            if len(self.extension) // 4 > 0xFFFF:
                raise PacketError(
                    f"RTP header extension is {len(self.extension) // 4} words, at most 65535")
        elif self.extension:
            raise PacketError("RTP header extension data given without an extension_profile")

        b0 = (RTP_VERSION << 6) | (0x20 if self.padding_size else 0) \
            | (0x10 if has_extension else 0) | len(self.csrc)
        b1 = (0x80 if self.marker else 0) | self.payload_type
        parts = [_FIXED.pack(b0, b1, self.sequence_number, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if has_extension:
            parts.append(_EXT_HEADER.pack(self.extension_profile, len(self.extension) // 4))
            parts.append(bytes(self.extension))
        parts.append(bytes(self.payload))
        if self.padding_size:
            parts.append(bytes(self.padding_size - 1) + bytes([self.padding_size]))
        return b"".join(parts)


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PacketError(f"RTP {name} must be an integer in {lo}..{hi}, got {value!r}")


def _check_bytes(name, value):
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise PacketError(f"RTP {name} must be bytes, got {type(value).__name__}")


def is_rtp(data: bytes) -> bool:
    """True when ``data`` could be an RTP packet: at least 12 bytes, version 2.

    stagevox control messages start with ``b"SV"`` (version bits 01), so they
    never pass this test.
    """
    return len(data) >= HEADER_SIZE and data[0] >> 6 == RTP_VERSION


def seq_add(seq: int, n: int) -> int:
    """``seq + n`` modulo 2**16 (``n`` may be negative)."""
    return (seq + n) % _SEQ_MOD


def seq_diff(a: int, b: int) -> int:
    """``a - b`` for 16-bit sequence numbers, as the shortest signed distance.

    The result is in -32768..32767: ``seq_diff(0, 65535) == 1``.
    """
    return (a - b + 0x8000) % _SEQ_MOD - 0x8000


def seq_newer(a: int, b: int) -> bool:
    """True when sequence number ``a`` comes after ``b`` (across the wrap)."""
    return seq_diff(a, b) > 0


def ts_add(ts: int, n: int) -> int:
    """``ts + n`` modulo 2**32 (``n`` may be negative), for RTP timestamps."""
    return (ts + n) % _TS_MOD


def ts_diff(a: int, b: int) -> int:
    """``a - b`` for 32-bit RTP timestamps, signed, in -2**31..2**31-1."""
    return (a - b + 0x80000000) % _TS_MOD - 0x80000000


class _Unwrapper:
    """Extends wrapping counters of ``bits`` bits to unbounded ints (the first
    value seen maps to itself).

    Each value is placed at the shortest distance from the highest one seen
    so far, so a wrap forwards (65535 then 0 gives 65536 for 16 bits) and a
    late value from before the wrap (65536 seen, then 65535 arrives) both land
    where they belong.  A late value from before the first one may come out
    negative.
    """

    bits = 16
    noun = "sequence number"

    def __init__(self):
        self._highest = None

    def unwrap(self, value: int) -> int:
        """The extended value of ``value`` (0..2**bits-1); ``ValueError`` outside that range."""
        mod = 1 << self.bits
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < mod:
            raise ValueError(f"{self.noun} must be an integer in 0..{mod - 1}, got {value!r}")
        if self._highest is None:
            self._highest = value
            return value
        half = mod >> 1
        extended = self._highest + ((value - self._highest + half) % mod - half)
        self._highest = max(self._highest, extended)
        return extended


class SequenceUnwrapper(_Unwrapper):
    """Extends 16-bit RTP sequence numbers (see ``_Unwrapper``)."""


class TimestampUnwrapper(_Unwrapper):
    """Extends 32-bit RTP timestamps (see ``_Unwrapper``)."""

    bits = 32
    noun = "RTP timestamp"

"""Redundant audio payloads (RFC 2198).

A RED payload carries older frames again next to the newest one, so a lost
packet can be rebuilt from the next.  It is a list of block headers followed
by the block data in the same order::

    redundant header (4 bytes)  F=1 (1 bit), block PT (7), timestamp offset (14), length (10)
    primary header   (1 byte)   F=0 (1 bit), block PT (7)
    data                        redundant blocks, oldest first, then the primary

The timestamp offset is how far the block lies before the packet's RTP
timestamp; the primary block has the packet's timestamp and takes whatever
data is left, so its length is not limited.  Nothing here does I/O.
"""

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .rtp import PacketError

MAX_TS_OFFSET = 16383  #: largest timestamp offset of a redundant block (14 bits)
MAX_BLOCK_LENGTH = 1023  #: largest redundant block, bytes (10 bits)

_TS_MOD = 1 << 32
_HEADER = struct.Struct("!I")


@dataclass(frozen=True)
class RedBlock:
    """One block of a RED payload: its payload type, absolute RTP timestamp and data."""

    payload_type: int
    timestamp: int
    payload: bytes


def encode_red(blocks: Sequence[RedBlock], timestamp: int) -> bytes:
    """The RED payload carrying ``blocks`` in a packet with RTP ``timestamp``.

    ``blocks`` go oldest first; the last one is the primary and must have
    ``timestamp``.  Every redundant block's offset ``timestamp - block.timestamp``
    (modulo 2**32) must be 1..16383 and no smaller than the next block's, and
    its data at most 1023 bytes.  Raises ``PacketError`` naming the block and
    the reason, also for an empty list or a payload type outside 0..127.
    """
    if len(blocks) == 0:
        raise PacketError("RED payload needs at least one block (the primary), got none")
    _check_int("timestamp", timestamp, 0, _TS_MOD - 1)
    headers = []
    previous_offset = None
    last = len(blocks) - 1
    for i, block in enumerate(blocks):
        what = "primary block" if i == last else f"redundant block {i}"
        _check_int(f"{what} payload_type", block.payload_type, 0, 127)
        _check_int(f"{what} timestamp", block.timestamp, 0, _TS_MOD - 1)
        if not isinstance(block.payload, (bytes, bytearray, memoryview)):
            raise PacketError(f"RED {what} payload must be bytes, got "
                              f"{type(block.payload).__name__}")
        if i == last:
            if block.timestamp != timestamp:
                raise PacketError(
                    f"RED primary block (the last) has timestamp {block.timestamp}, "
                    f"the packet has {timestamp}; they must be equal")
            headers.append(bytes([block.payload_type]))
            break
        offset = (timestamp - block.timestamp) % _TS_MOD
        if not 1 <= offset <= MAX_TS_OFFSET:
            raise PacketError(
                f"RED {what} has timestamp offset {offset} (timestamp {block.timestamp}, "
                f"packet {timestamp}); it must be 1..{MAX_TS_OFFSET}")
        if previous_offset is not None and offset > previous_offset:
            raise PacketError(
                f"RED {what} (offset {offset}) is older than block {i - 1} "
                f"(offset {previous_offset}); blocks go oldest first")
        previous_offset = offset
        length = len(block.payload)
        if length > MAX_BLOCK_LENGTH:
            raise PacketError(
                f"RED {what} is {length} bytes, at most {MAX_BLOCK_LENGTH}")
        headers.append(_HEADER.pack(
            0x80000000 | (block.payload_type << 24) | (offset << 10) | length))
    return b"".join(headers) + b"".join(bytes(b.payload) for b in blocks)


def decode_red(payload: bytes, timestamp: int, max_blocks: int | None = None) -> list[RedBlock]:
    """The blocks of the RED ``payload`` of a packet with RTP ``timestamp``.

    Returns them oldest first with the primary last, each with its absolute
    timestamp (modulo 2**32).  Raises ``PacketError`` for an empty payload, a
    header cut short, block lengths that run past the end, or more than
    ``max_blocks`` blocks (primary included; ``None``: no limit), found before
    any block is copied, so a hostile packet costs work linear in its size.
    """
    _check_int("timestamp", timestamp, 0, _TS_MOD - 1)
    data = bytes(payload)
    n = len(data)
    if n == 0:
        raise PacketError("RED payload is empty; it needs at least the 1-byte primary header")
    pos = 0
    redundant = []  # (payload_type, offset, length)
    while True:
        if pos >= n:
            raise PacketError(
                f"RED payload truncated: {n} bytes of headers with the F bit set "
                "and no primary header")
        if not data[pos] & 0x80:
            primary_type = data[pos] & 0x7F
            pos += 1
            break
        if pos + 4 > n:
            raise PacketError(
                f"RED payload truncated: header of block {len(redundant)} needs 4 bytes "
                f"at offset {pos}, {n - pos} left")
        (word,) = _HEADER.unpack_from(data, pos)
        redundant.append(((word >> 24) & 0x7F, (word >> 10) & 0x3FFF, word & 0x3FF))
        pos += 4
        if max_blocks is not None and len(redundant) >= max_blocks:
            raise PacketError(f"RED payload has more than {max_blocks} blocks, "
                              f"at most {max_blocks} allowed")
    total = sum(length for _, _, length in redundant)
    if pos + total > n:
        raise PacketError(
            f"RED block lengths overrun the payload: {len(redundant)} redundant blocks "
            f"declare {total} bytes, {n - pos} left after the headers")
    blocks = []
    for payload_type, offset, length in redundant:
        blocks.append(RedBlock(payload_type, (timestamp - offset) % _TS_MOD,
                               data[pos:pos + length]))
        pos += length
    blocks.append(RedBlock(primary_type, timestamp, data[pos:]))
    return blocks


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PacketError(f"RED {name} must be an integer in {lo}..{hi}, got {value!r}")


def encode_red_within(blocks: Sequence[RedBlock], timestamp: int, max_bytes: int) -> bytes:
    """``encode_red``, leaving out redundant blocks RED cannot carry (data
    over ``MAX_BLOCK_LENGTH`` bytes, offsets over ``MAX_TS_OFFSET``) and then
    the oldest ones until the payload is at most ``max_bytes`` long.  The
    primary block is always kept.  Work is linear in the number of blocks."""
    blocks = list(blocks)
    if not blocks:
        return encode_red(blocks, timestamp)
    primary = blocks[-1]
    older = [b for b in blocks[:-1] if len(b.payload) <= MAX_BLOCK_LENGTH
             and 1 <= (timestamp - b.timestamp) % _TS_MOD <= MAX_TS_OFFSET]
    size = 1 + len(primary.payload) + sum(4 + len(b.payload) for b in older)
    first = 0
    while size > max_bytes and first < len(older):
        size -= 4 + len(older[first].payload)
        first += 1
    return encode_red(older[first:] + [primary], timestamp)

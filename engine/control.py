"""stagevox control messages: join, leave, roles, tokens, keep-alive and feedback.

They share the UDP socket with RTP and, like it, travel sealed inside the
session's datagrams (``session``); what is sealed is one message of at most
1200 bytes, big-endian throughout::

    b"SV"      magic (2 bytes; its top bits 01 never look like RTP version 2)
    version    u8, VERSION
    type       u8, one of the message types below
    length     u16, body length in bytes
    body       exactly ``length`` bytes: the message's fields in order

Field encodings: integers as u8/u16/u32/u64, times as f64, strings as a u16
byte count then UTF-8, roles and codes as a u8 index into ``ROLES``,
``REFUSAL_CODES`` or ``EVENT_KINDS``, lists as a u16 count then the items.
Every string and list has a limit (the ``MAX_*`` constants).  ``decode``
checks every length and limit and raises ``ControlError`` naming what is
wrong; ``encode`` checks every field the same way.  Nothing here does I/O.
"""

import math
import struct
from dataclasses import dataclass, fields
from typing import ClassVar

from stagevox.dsp.errors import ProtocolError


class ControlError(ProtocolError):
    """A control message that cannot be decoded or encoded; the message names the problem."""


VERSION = 3  #: the control protocol version this build speaks
MAGIC = b"SV"
HEADER_SIZE = 6  #: magic, version, type, body length
MAX_DATAGRAM = 1200  #: largest control message, bytes

MAX_CHANNEL_BYTES = 64
MAX_TOKEN_BYTES = 512
MAX_REASON_BYTES = 256
MAX_HOSTS = 128  #: (uid, ssrc) pairs in a Joined message
MAX_REPORTS = 62  #: report blocks in a ReceiverReport (19 bytes each)
MAX_NACKS = 128  #: sequence numbers in a Nack
MAX_URL_BYTES = 1024  #: a URL in PublishStream

ROLES = ("host", "audience")
REFUSAL_CODES = ("bad_request", "no_token", "malformed_token", "bad_signature", "expired_token",
                 "wrong_channel", "wrong_uid", "no_publish_privilege", "too_many_hosts",
                 "not_joined", "rate_limited", "server_error", "too_many_channels",
                 "channel_full", "server_busy", "end_to_end_encrypted", "too_many_outputs",
                 "publish_not_allowed")
PUBLISH_ACTIONS = ("add", "remove")
EVENT_KINDS = ("user_joined", "user_left", "user_offline", "role_changed", "token_will_expire",
               "removed")

_HEADER = struct.Struct("!2sBBH")


# ----------------------------------------------------------------------------- field codecs

class _Reader:
    """Reads the fields of one message body, raising ControlError on a short body."""

    def __init__(self, body, message):
        self.body = body
        self.pos = 0
        self.message = message

    def left(self):
        return len(self.body) - self.pos

    def take(self, n, field):
        if n > self.left():
            raise ControlError(
                f"{field} truncated: need {n} bytes at offset {self.pos}, "
                f"the {self.message} body has {self.left()} left")
        chunk = self.body[self.pos:self.pos + n]
        self.pos += n
        return chunk


class _Int:
    def __init__(self, fmt):
        self.struct = struct.Struct("!" + fmt)
        self.size = self.struct.size
        self.hi = (1 << (8 * self.size)) - 1

    def check(self, where, value):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= self.hi:
            raise ControlError(f"{where} must be an integer in 0..{self.hi}, got {value!r}")

    def pack(self, where, value):
        self.check(where, value)
        return self.struct.pack(value)

    def unpack(self, reader, where):
        return self.struct.unpack(reader.take(self.size, where))[0]


class _Float:
    """f64; only finite values."""

    size = 8

    def pack(self, where, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ControlError(f"{where} must be a finite number, got {value!r}")
        return struct.pack("!d", float(value))

    def unpack(self, reader, where):
        value = struct.unpack("!d", reader.take(8, where))[0]
        if not math.isfinite(value):
            raise ControlError(f"{where} must be a finite number, got {value!r}")
        return value


class _Str:
    """u16 byte count, then UTF-8, at most ``limit`` bytes."""

    size = 2

    def __init__(self, limit):
        self.limit = limit

    def pack(self, where, value):
        if not isinstance(value, str):
            raise ControlError(f"{where} must be a str, got {type(value).__name__}")
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ControlError(f"{where} cannot be encoded as UTF-8: {e.reason}") from None
        if len(raw) > self.limit:
            raise ControlError(f"{where} is {len(raw)} bytes of UTF-8, at most {self.limit}")
        return struct.pack("!H", len(raw)) + raw

    def unpack(self, reader, where):
        (n,) = struct.unpack("!H", reader.take(2, where))
        if n > self.limit:
            raise ControlError(f"{where} is {n} bytes, at most {self.limit}")
        if n > reader.left():
            raise ControlError(
                f"{where} truncated: the string declares {n} bytes, "
                f"the {reader.message} body has {reader.left()} left")
        try:
            return reader.take(n, where).decode("utf-8")
        except UnicodeDecodeError:
            raise ControlError(f"bad UTF-8 in {where}") from None


class _Choice:
    """One of a tuple of names, as a u8 index."""

    size = 1

    def __init__(self, choices):
        self.choices = choices

    def _valid(self):
        return " or ".join(repr(c) for c in self.choices) if len(self.choices) == 2 \
            else "one of " + ", ".join(repr(c) for c in self.choices)

    def pack(self, where, value):
        if value not in self.choices or not isinstance(value, str):
            raise ControlError(f"{where} must be {self._valid()}, got {value!r}")
        return bytes([self.choices.index(value)])

    def unpack(self, reader, where):
        index = reader.take(1, where)[0]
        if index >= len(self.choices):
            raise ControlError(
                f"unknown {where} code {index} (valid: 0..{len(self.choices) - 1}, "
                f"meaning {self._valid()})")
        return self.choices[index]


class _Fraction:
    """A fraction 0..1 as a u8 count of 255ths (like RTCP's fraction lost)."""

    size = 1

    def pack(self, where, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0.0 <= value <= 1.0:
            raise ControlError(f"{where} must be a number in 0..1, got {value!r}")
        return bytes([round(255 * value)])

    def unpack(self, reader, where):
        return reader.take(1, where)[0] / 255


class _Millis:
    """A non-negative duration in ms, carried as a u32 count of microseconds."""

    size = 4
    hi = ((1 << 32) - 1) / 1000

    def pack(self, where, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0.0 <= value <= self.hi:
            raise ControlError(f"{where} must be a number of ms in 0..{self.hi}, got {value!r}")
        return struct.pack("!I", min(round(value * 1000), (1 << 32) - 1))

    def unpack(self, reader, where):
        return struct.unpack("!I", reader.take(4, where))[0] / 1000


class _Tenths:
    """A non-negative count in tenths, carried as a u16 (0..6553.5)."""

    size = 2
    hi = 6553.5

    def pack(self, where, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0.0 <= value <= self.hi:
            raise ControlError(f"{where} must be a number in 0..{self.hi}, got {value!r}")
        return struct.pack("!H", round(value * 10))

    def unpack(self, reader, where):
        return struct.unpack("!H", reader.take(2, where))[0] / 10


class _Record:
    """A fixed group of fields, read back as ``make(*values)``."""

    def __init__(self, make, named_codecs):
        self.make = make
        self.named = named_codecs
        self.size = sum(c.size for _, c in named_codecs)

    def pack(self, where, value):
        if self.make is tuple:
            if not isinstance(value, (tuple, list)) or len(value) != len(self.named):
                names = ", ".join(n for n, _ in self.named)
                raise ControlError(f"{where} must be a pair ({names}), got {value!r}")
            values = value
        else:
            if not isinstance(value, self.make):
                raise ControlError(
                    f"{where} must be a {self.make.__name__}, got {type(value).__name__}")
            values = [getattr(value, n) for n, _ in self.named]
        return b"".join(c.pack(f"{where} {n}", v) for (n, c), v in zip(self.named, values))

    def unpack(self, reader, where):
        values = [c.unpack(reader, f"{where} {n}") for n, c in self.named]
        return tuple(values) if self.make is tuple else self.make(*values)


class _List:
    """u16 count, then that many items of one fixed-size codec; at most ``limit``."""

    size = 2

    def __init__(self, item, limit, noun):
        self.item = item
        self.limit = limit
        self.noun = noun

    def pack(self, where, value):
        if not isinstance(value, (tuple, list)):
            raise ControlError(f"{where} must be a tuple, got {type(value).__name__}")
        if len(value) > self.limit:
            raise ControlError(
                f"{where} has {len(value)} {self.noun}, at most {self.limit}")
        return struct.pack("!H", len(value)) + b"".join(
            self.item.pack(f"{where}[{i}]", v) for i, v in enumerate(value))

    def unpack(self, reader, where):
        (count,) = struct.unpack("!H", reader.take(2, where))
        if count > self.limit:
            raise ControlError(f"{where} has {count} {self.noun}, at most {self.limit}")
        need = count * self.item.size
        if need > reader.left():
            raise ControlError(
                f"{where} lists {count} {self.noun} ({need} bytes) "
                f"but the {reader.message} body has {reader.left()} left")
        return tuple(self.item.unpack(reader, f"{where}[{i}]") for i in range(count))


_U16 = _Int("H")
_U32 = _Int("I")
_U64 = _Int("Q")
_F64 = _Float()
_ROLE = _Choice(ROLES)
_CHANNEL = _Str(MAX_CHANNEL_BYTES)
_TOKEN = _Str(MAX_TOKEN_BYTES)
_REASON = _Str(MAX_REASON_BYTES)
_URL = _Str(MAX_URL_BYTES)


# ----------------------------------------------------------------------------- messages

_BY_TYPE = {}
_LAYOUTS = {}
_MIN_BODY = {}                  # message class -> bytes of its fixed-size fields


class _Message:
    """Base of the message dataclasses: ``_CODECS`` maps each field to its codec."""

    TYPE: ClassVar[int]
    _CODECS: ClassVar[dict]

    def __init_subclass__(cls, type_code=None, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.TYPE = type_code
        _BY_TYPE[type_code] = cls

    @classmethod
    def _layout(cls):
        """``[(field name, codec, "Message field"), ...]``, worked out once per class
        (messages go by the thousand a second)."""
        layout = _LAYOUTS.get(cls)
        if layout is None:
            layout = _LAYOUTS[cls] = [(f.name, cls._CODECS[f.name], f"{cls.__name__} {f.name}")
                                      for f in fields(cls)]
            _MIN_BODY[cls] = sum(c.size for _, c, _ in layout)
        return layout

    def encode(self) -> bytes:
        """The message's datagram.  ``ControlError`` names any field out of its range."""
        plan = _PLANS.get(type(self), _NO_PLAN)
        if plan is _NO_PLAN:
            plan = _plan(type(self))
        if plan is not None:
            data = plan.encode(self)
            if data is not None:
                return data
        return self._encode_checked()

    def _encode_checked(self):
        """``encode`` field by field, each checked by its codec (the slow path,
        whose errors name the field)."""
        name = type(self).__name__
        body = b"".join(codec.pack(where, getattr(self, field))
                        for field, codec, where in self._layout())
        total = HEADER_SIZE + len(body)
        if total > MAX_DATAGRAM:
            raise ControlError(f"{name} encodes to {total} bytes, at most {MAX_DATAGRAM}")
        return _HEADER.pack(MAGIC, VERSION, self.TYPE, len(body)) + body

    @classmethod
    def _decode_body(cls, body):
        plan = _PLANS.get(cls, _NO_PLAN)
        if plan is _NO_PLAN:
            plan = _plan(cls)
        if plan is not None:
            values = plan.decode(body)
            if values is not None:
                return cls(*values)
        return cls._decode_checked(body)

    @classmethod
    def _decode_checked(cls, body):
        """``_decode_body`` field by field (the slow path, whose errors name the field)."""
        name = cls.__name__
        layout = cls._layout()
        need = _MIN_BODY[cls]
        if len(body) < need:
            raise ControlError(f"{name} body is {len(body)} bytes, need at least {need}")
        reader = _Reader(body, name)
        values = [c.unpack(reader, where) for _, c, where in layout]
        if reader.left():
            raise ControlError(
                f"{name} body has {reader.left()} unexpected bytes after its last field")
        return cls(*values)


_FIXED, _STRING, _INTS = range(3)       # kinds of a _Plan's steps


class _Plan:
    """A quick codec for a message made only of integers, numbers, choices,
    strings and lists of integers (or of tuples of one integer type): runs of
    fixed-size fields are packed and unpacked as one struct, a list as one.
    ``encode`` and ``decode`` return None for anything they do not take as it
    is (a value out of range, a short body, ...): the field-by-field codecs
    then give the answer, or the error that names the field.  Built once per
    message class (``_plan``)."""

    def __init__(self, steps, fields):
        # (_FIXED, struct, [(codec class, arg), ...], only integers?),
        # (_STRING, limit), (_INTS, format char, hi, limit, tuple size or 0, bytes an int).
        self.steps = steps
        self.fields = fields        # field names in order
        # One struct holds every field (Ping, Ack, Leave...): no loop over steps.
        self.fixed = None
        if not steps:
            self.fixed = (struct.Struct("!"), [], True)
        elif len(steps) == 1 and steps[0][0] is _FIXED:
            self.fixed = steps[0][1:]

    def decode(self, body):
        if self.fixed is not None:
            packer, items, plain = self.fixed
            if len(body) != packer.size:
                return None
            got = packer.unpack(body)
            return got if plain else _checked_in(got, items, [])
        values = []
        pos = 0
        size = len(body)
        for step in self.steps:
            kind = step[0]
            if kind is _FIXED:
                packer = step[1]
                end = pos + packer.size
                if end > size:
                    return None
                got = packer.unpack_from(body, pos)
                pos = end
                if step[3]:
                    values.extend(got)
                elif _checked_in(got, step[2], values) is None:
                    return None
                continue
            if pos + 2 > size:
                return None
            n = (body[pos] << 8) | body[pos + 1]
            pos += 2
            if kind is _STRING:
                if n > step[1] or pos + n > size:
                    return None
                try:
                    values.append(body[pos:pos + n].decode("utf-8"))
                except UnicodeDecodeError:
                    return None
                pos += n
                continue
            _, char, _, limit, width, item_size = step
            count = n * (width or 1)
            if n > limit or pos + count * item_size > size:
                return None
            flat = struct.unpack_from(f"!{count}{char}", body, pos)
            pos += count * item_size
            values.append(tuple(zip(*[iter(flat)] * width)) if width else flat)
        return values if pos == size else None

    def encode(self, message):
        values = [getattr(message, f) for f in self.fields]
        if self.fixed is not None:
            packer, items, _ = self.fixed
            fixed = _checked_out(values, items)
            body = None if fixed is None else packer.pack(*fixed)
        else:
            body = self._encode_steps(values)
        if body is None or HEADER_SIZE + len(body) > MAX_DATAGRAM:
            return None
        return _HEADER.pack(MAGIC, VERSION, message.TYPE, len(body)) + body

    def _encode_steps(self, values):
        parts = []
        i = 0
        for step in self.steps:
            kind = step[0]
            if kind is _FIXED:
                items = step[2]
                fixed = _checked_out(values[i:i + len(items)], items)
                if fixed is None:
                    return None
                i += len(items)
                parts.append(step[1].pack(*fixed))
                continue
            value = values[i]
            i += 1
            if kind is _STRING:
                if type(value) is not str:
                    return None
                try:
                    raw = value.encode("utf-8")
                except UnicodeEncodeError:
                    return None
                if len(raw) > step[1]:
                    return None
                parts.append(len(raw).to_bytes(2, "big"))
                parts.append(raw)
                continue
            _, char, hi, limit, width, _ = step
            if type(value) is not tuple or len(value) > limit:
                return None
            flat = value
            if width:
                flat = []
                for item in value:
                    if type(item) is not tuple or len(item) != width:
                        return None
                    flat.extend(item)
            for v in flat:
                if type(v) is not int or not 0 <= v <= hi:
                    return None
            parts.append(len(value).to_bytes(2, "big"))
            parts.append(struct.pack(f"!{len(flat)}{char}", *flat))
        return b"".join(parts)


def _checked_in(got, items, values):
    """Append the unpacked ``got`` to ``values`` as field values (choices by
    name); None if a choice or number is out of range."""
    for value, (codec, arg) in zip(got, items):
        if codec is _Choice:
            if value >= len(arg[0]):
                return None
            value = arg[0][value]
        elif codec is _Float and not math.isfinite(value):
            return None
        values.append(value)
    return values


def _checked_out(values, items):
    """The wire values of field ``values`` (choices by index), or None if one
    is not exactly of its type and range."""
    fixed = []
    for value, (codec, arg) in zip(values, items):
        if codec is _Int:
            if type(value) is not int or not 0 <= value <= arg:
                return None
        elif codec is _Float:
            if type(value) is not float or not math.isfinite(value):
                return None
        else:
            value = arg[1].get(value) if type(value) is str else None
            if value is None:
                return None
        fixed.append(value)
    return fixed


_PLANS = {}                     # message class -> _Plan, or None if it has other fields
_NO_PLAN = object()


def _ints_step(codec):
    """The _INTS step of a _List codec of integers, or of tuples of one integer
    type; None for another list."""
    item = codec.item
    if type(item) is _Int:
        return (_INTS, item.struct.format[1:], item.hi, codec.limit, 0, item.size)
    if type(item) is _Record and item.make is tuple:
        kinds = {c for _, c in item.named}
        if len(kinds) == 1 and type(next(iter(kinds))) is _Int:
            only = next(iter(kinds))
            return (_INTS, only.struct.format[1:], only.hi, codec.limit, len(item.named),
                    only.size)
    return None


def _plan(cls):
    """The ``_Plan`` of message class ``cls`` (None when a field is of
    another kind), made once."""
    steps, formats, items = [], [], []

    def flush():
        if items:
            steps.append((_FIXED, struct.Struct("!" + "".join(formats)), list(items),
                          all(codec is _Int for codec, _ in items)))
            formats.clear()
            items.clear()
    plan = None
    for _, codec, _ in cls._layout():
        if type(codec) is _Int:
            formats.append(codec.struct.format[1:])
            items.append((_Int, codec.hi))
        elif type(codec) is _Float:
            formats.append("d")
            items.append((_Float, None))
        elif type(codec) is _Choice:
            formats.append("B")
            items.append((_Choice, (codec.choices,
                                    {c: i for i, c in enumerate(codec.choices)})))
        elif type(codec) is _Str:
            flush()
            steps.append((_STRING, codec.limit))
        elif type(codec) is _List and _ints_step(codec) is not None:
            flush()
            steps.append(_ints_step(codec))
        else:
            break
    else:
        flush()
        plan = _Plan(steps, [f.name for f in fields(cls)])
    _PLANS[cls] = plan
    return plan


@dataclass(frozen=True)
class Join(_Message, type_code=1):
    """Client to server: join ``channel`` as ``uid`` in ``role``, sending RTP from ``ssrc``."""

    request_id: int
    channel: str
    uid: int
    role: str
    token: str
    ssrc: int
    _CODECS: ClassVar[dict] = {"request_id": _U32, "channel": _CHANNEL, "uid": _U32,
                               "role": _ROLE, "token": _TOKEN, "ssrc": _U32}


@dataclass(frozen=True)
class Joined(_Message, type_code=2):
    """Server to client: the join succeeded.

    ``expires_at`` is the token's expiry in unix seconds; ``hosts`` lists the
    channel's other hosts as ``(uid, ssrc)`` pairs.
    """

    request_id: int
    uid: int
    role: str
    expires_at: int
    hosts: tuple[tuple[int, int], ...]
    _CODECS: ClassVar[dict] = {
        "request_id": _U32, "uid": _U32, "role": _ROLE, "expires_at": _U64,
        "hosts": _List(_Record(tuple, [("uid", _U32), ("ssrc", _U32)]), MAX_HOSTS, "hosts")}


@dataclass(frozen=True)
class Refused(_Message, type_code=3):
    """Server to client: request ``request_id`` was refused, ``code`` from ``REFUSAL_CODES``."""

    request_id: int
    code: str
    reason: str
    _CODECS: ClassVar[dict] = {"request_id": _U32, "code": _Choice(REFUSAL_CODES),
                               "reason": _REASON}


@dataclass(frozen=True)
class Leave(_Message, type_code=4):
    """Client to server: leave the channel."""

    _CODECS: ClassVar[dict] = {}


@dataclass(frozen=True)
class SetRole(_Message, type_code=5):
    """Client to server: switch to ``role``; ``token`` may be "" to keep the current one."""

    request_id: int
    role: str
    token: str = ""
    _CODECS: ClassVar[dict] = {"request_id": _U32, "role": _ROLE, "token": _TOKEN}


@dataclass(frozen=True)
class RoleChanged(_Message, type_code=6):
    """Server to client: reply to ``SetRole``, ``uid`` now has ``role``."""

    request_id: int
    uid: int
    role: str
    _CODECS: ClassVar[dict] = {"request_id": _U32, "uid": _U32, "role": _ROLE}


@dataclass(frozen=True)
class RenewToken(_Message, type_code=7):
    """Client to server: replace the session's token before it expires."""

    request_id: int
    token: str
    _CODECS: ClassVar[dict] = {"request_id": _U32, "token": _TOKEN}


@dataclass(frozen=True)
class TokenRenewed(_Message, type_code=8):
    """Server to client: the new token is accepted, valid until ``expires_at`` (unix seconds)."""

    request_id: int
    expires_at: int
    _CODECS: ClassVar[dict] = {"request_id": _U32, "expires_at": _U64}


@dataclass(frozen=True)
class Ping(_Message, type_code=9):
    """Client to server keep-alive; ``send_time`` is the sender's clock, in seconds."""

    send_time: float
    _CODECS: ClassVar[dict] = {"send_time": _F64}


@dataclass(frozen=True)
class Pong(_Message, type_code=10):
    """Server to client: echoes ``Ping.send_time`` so the client can measure the
    round trip; ``members`` is how many members the channel has now (hosts and
    audience)."""

    echo_time: float
    members: int
    _CODECS: ClassVar[dict] = {"echo_time": _F64, "members": _U32}


@dataclass(frozen=True)
class ReportBlock:
    """Reception statistics for one source, as in an RTCP receiver report.

    ``fraction_lost`` 0..1 travels in 255ths, ``highest_seq`` is the extended
    highest sequence number received (u32), ``jitter_ms`` travels as whole
    microseconds (u32).  ``burst`` is a high percentile of the length of
    loss runs, in packets, in tenths (u16); the sender sizes its redundancy
    by it (``feedback.redundancy_depth``).  ``cumulative_lost`` is the
    number of packets lost since the stream began (u32), so the sender
    measures the loss between any two reports it gets, however many of
    those between were lost (RFC 3550, appendix A.3).
    """

    ssrc: int
    fraction_lost: float
    highest_seq: int
    jitter_ms: float
    burst: float = 0.0
    cumulative_lost: int = 0


def clamped_report_block(ssrc, fraction_lost, highest_seq, jitter_ms, burst=0.0,
                         cumulative_lost=0):
    """A ``ReportBlock`` whose values are clamped into their wire fields (a
    sequence-number jump or a long silence must not make a report unsendable)."""
    def clamp(v, lo, hi):
        v = float(v)
        return lo if not math.isfinite(v) else min(hi, max(lo, v))
    return ReportBlock(int(ssrc) % 2**32, clamp(fraction_lost, 0.0, 1.0), int(highest_seq) % 2**32,
                       clamp(jitter_ms, 0.0, _Millis.hi), clamp(burst, 0.0, _Tenths.hi),
                       max(0, min(int(cumulative_lost), 2**32 - 1)))


_REPORT_BLOCK = _Record(ReportBlock, [("ssrc", _U32), ("fraction_lost", _Fraction()),
                                      ("highest_seq", _U32), ("jitter_ms", _Millis()),
                                      ("burst", _Tenths()), ("cumulative_lost", _U32)])


@dataclass(frozen=True)
class ReceiverReport(_Message, type_code=11):
    """Reception feedback, one ``ReportBlock`` per source (at most 64)."""

    reports: tuple[ReportBlock, ...]
    _CODECS: ClassVar[dict] = {"reports": _List(_REPORT_BLOCK, MAX_REPORTS, "report blocks")}


@dataclass(frozen=True)
class Nack(_Message, type_code=12):
    """Ask for the retransmission of ``sequence_numbers`` (at most 128) of source ``ssrc``."""

    ssrc: int
    sequence_numbers: tuple[int, ...]
    _CODECS: ClassVar[dict] = {"ssrc": _U32,
                               "sequence_numbers": _List(_U16, MAX_NACKS, "sequence numbers")}


@dataclass(frozen=True)
class Event(_Message, type_code=13):
    """Server to client: something happened to user ``uid`` (``kind`` one of ``EVENT_KINDS``).

    ``seq`` numbers a member's events from 1; the member acknowledges them
    (``Ack``) and the server repeats those not acknowledged, so an
    announcement crosses a lossy path.
    """

    seq: int
    kind: str
    uid: int
    role: str
    ssrc: int
    reason: str
    _CODECS: ClassVar[dict] = {"seq": _U32, "kind": _Choice(EVENT_KINDS), "uid": _U32,
                               "role": _ROLE, "ssrc": _U32, "reason": _REASON}


@dataclass(frozen=True)
class Ack(_Message, type_code=14):
    """Client to server: every ``Event`` up to and including ``seq`` has arrived."""

    seq: int
    _CODECS: ClassVar[dict] = {"seq": _U32}


@dataclass(frozen=True)
class PublishStream(_Message, type_code=15):
    """Client (a host) to server: push the channel's mix to ``url`` (RTMP)
    when ``action`` is ``"add"``, stop pushing to it when ``"remove"``."""

    request_id: int
    action: str
    url: str
    _CODECS: ClassVar[dict] = {"request_id": _U32, "action": _Choice(PUBLISH_ACTIONS),
                               "url": _URL}


@dataclass(frozen=True)
class PublishStreamDone(_Message, type_code=16):
    """Server to client: the ``PublishStream`` request ``request_id`` is done."""

    request_id: int
    _CODECS: ClassVar[dict] = {"request_id": _U32}


# ----------------------------------------------------------------------------- framing

def is_control(data: bytes) -> bool:
    """True when ``data`` starts with the control magic ``b"SV"`` (and so is not RTP)."""
    return bytes(data[:2]) == MAGIC


def decode(data: bytes):
    """The message in the datagram ``data``: a ``Join``, ``Joined``, ... instance.

    Raises ``ControlError`` naming the problem: too short, bad magic, larger
    than 1200 bytes, another version, an unknown type, a body shorter or longer
    than declared, a field cut short or beyond its limit, bad UTF-8, an
    unknown role or code, or bytes left after the last field.
    """
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise ControlError(
            f"control message too short: {len(data)} bytes, need at least {HEADER_SIZE}")
    magic, version, type_code, length = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise ControlError(f"bad control magic {magic!r}, expected {MAGIC!r}")
    if len(data) > MAX_DATAGRAM:
        raise ControlError(f"control message is {len(data)} bytes, at most {MAX_DATAGRAM}")
    if version != VERSION:
        raise ControlError(
            f"unsupported control version {version} (this build speaks {VERSION})")
    cls = _BY_TYPE.get(type_code)
    if cls is None:
        raise ControlError(
            f"unknown control message type {type_code} (known: 1..{len(_BY_TYPE)})")
    body = data[HEADER_SIZE:]
    if len(body) < length:
        raise ControlError(
            f"control message body truncated: header declares {length} bytes, "
            f"{len(body)} present")
    if len(body) > length:
        raise ControlError(
            f"control message has {len(body) - length} bytes beyond its declared "
            f"{length}-byte body")
    return cls._decode_body(body)

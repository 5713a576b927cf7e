"""The link-layer frame body: a sequence of link records, version 1.

A body is the plaintext that frame security seals (``crypto/radio.py`` adds a
3 B header and a 4 B tag).  It is a run of records; every record starts with
one *kind byte*, and every record except the last carries its length, so the
common case (one unreliable position from the sender itself) costs exactly one
byte of link overhead::

    DATA      L 0 0 P P R O D   [len] [origin] [dest] [seq] payload
    FRAGMENT  L 0 1 P P R O D   [len] [origin] [dest] seq|id index count chunk
    CONTROL   L 1 K K K f f f   [len] ...                (K: control kind)

``L``: a length (u15) follows; absent on the last record, which runs to the end.
``PP``: precedence (the 2-bit code of :class:`Precedence`).  ``R``: reliable,
a per-origin sequence number follows (u15 on the wire, 1 B below 128, else 2 B).
``O``: an origin slot byte follows (else the origin is the frame's sender).
``D``: a destination slot byte follows (else 255, everybody).

Control kinds: ACK (``fff`` = bitmap bytes 0..7; origin, cumulative seq,
bitmap where bit i says seq cum+2+i is held), DIGEST (version vector, then
per track 3 B: slot, and ``fix_no:4 time:12``, the fix number *and* the fix's
time (Unix seconds) modulo 4096, which name the acknowledged fix without
ambiguity although fix numbers wrap at 16; see :data:`ACK_TIME_MODULUS`),
SKIP (a custodian gave up on one sequence number so receivers stop waiting
for it) and VERSION (kind 7, ``fff`` = body format
version).  Version 1 bodies never start with a VERSION byte; a later format
will, and a version-1 decoder refuses it rather than misreading it (style
rule 15: the compact encoding carries a version at no cost to version 1).

Every malformed body raises :class:`~fieldc2.errors.RadioFrameError`.
"""

from __future__ import annotations

import msgspec

from fieldc2.errors import RadioFrameError

#: Version of this body format; bodies of other versions start with a VERSION byte.
BODY_VERSION = 1
#: Sequence numbers travel modulo 2**15 (u15: 1 or 2 bytes).  Receivers unwrap
#: relative to what they hold; half the space (16 384 messages) in flight from
#: one origin is far beyond any queue limit of this package.
SEQ_MODULUS = 1 << 15
#: Unreliable fragmented messages carry a 1-byte message id instead of a seq.
FRAG_ID_MODULUS = 256
#: Largest fragment count: index and count are one byte each.
MAX_FRAGMENTS = 255
#: Largest ACK bitmap, bytes (3 bits in the kind byte): 56 sequence numbers
#: above the cumulative one, more than a LoRa link has in flight.
MAX_BITMAP_BYTES = 7
BROADCAST = 255
#: A digest's track entry names the acknowledged fix by its 4-bit number and
#: its channel time modulo this (12 bits, 68 min).  A fix number is reused
#: every 16 fixes; two fixes with the same number and the same time residue
#: lie at least 4096 s apart, more than any fix a relay acknowledges
#: (``link.radio.MAX_ACK_AGE``) or a sender deltas against, so a stale digest
#: can never make a sender code against a different fix than the receiver holds.
ACK_TIME_MODULUS = 1 << 12

_L = 0x80
_CTRL = 0x40
_FRAG = 0x20
_R, _O, _D = 0x04, 0x02, 0x01
_ACK, _DIGEST, _SKIP, _VERSION = 0, 1, 2, 7


class DataRecord(msgspec.Struct, frozen=True, tag=True):
    """One whole application payload."""

    precedence: int
    payload: bytes
    seq: int | None = None
    """Wire sequence number (mod 2**15) when reliable, None when unreliable."""
    origin: int | None = None
    """Originator slot when it is not the frame's sender (relayed traffic)."""
    dest: int = BROADCAST


class FragmentRecord(msgspec.Struct, frozen=True, tag=True):
    """One piece of a payload larger than a body.  Reliable fragments each take
    a sequence number, so acks and retransmissions work per fragment."""

    precedence: int
    chunk: bytes
    index: int
    count: int
    seq: int
    """Wire seq of this fragment (reliable) or the message id (unreliable)."""
    reliable: bool
    origin: int | None = None
    dest: int = BROADCAST


class AckRecord(msgspec.Struct, frozen=True, tag=True):
    """What the frame's sender holds of one origin's reliable stream."""

    origin: int
    cum: int
    """Highest wire seq up to which everything is held (or skipped)."""
    bitmap: int = 0
    """Bit i set: seq cum+2+i is held too."""


class DigestRecord(msgspec.Struct, frozen=True, tag=True):
    """Anti-entropy summary: per-origin cumulative seq and per-track fix numbers."""

    origins: tuple[tuple[int, int], ...] = ()
    tracks: tuple[tuple[int, int, int], ...] = ()
    """(track slot, 4-bit fix number, fix time mod :data:`ACK_TIME_MODULUS`)
    triples supplied by the application: which fix the sender holds per track."""


class SkipRecord(msgspec.Struct, frozen=True, tag=True):
    """Sequence number ``seq`` of ``origin`` was abandoned (TTL) by its custodian."""

    origin: int
    seq: int


Record = DataRecord | FragmentRecord | AckRecord | DigestRecord | SkipRecord


def put_u15(out: bytearray, value: int) -> None:
    """Append ``value`` (0..32767) as 1 byte below 128, else 2 bytes big-endian."""
    if value < 0x80:
        out.append(value)
    else:
        out += bytes((0x80 | (value >> 8), value & 0xFF))


def u15_size(value: int) -> int:
    return 1 if value < 0x80 else 2


class _Reader:
    """Bounds-checked cursor over one record's bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise RadioFrameError("link record truncated")
        self.pos += 1
        return self.data[self.pos - 1]

    def u15(self) -> int:
        first = self.byte()
        return first if first < 0x80 else ((first & 0x7F) << 8) | self.byte()

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise RadioFrameError("link record truncated")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out


def _slot(value: int, what: str) -> int:
    if not 0 <= value <= BROADCAST:
        raise RadioFrameError(f"{what} {value} is not a slot")
    return value


def _encode_content(rec: Record) -> tuple[int, bytes]:
    """The kind byte (without L) and the content that follows the length."""
    out = bytearray()
    match rec:
        case DataRecord() | FragmentRecord():
            kind = (_FRAG if isinstance(rec, FragmentRecord) else 0) | (rec.precedence & 3) << 3
            if rec.origin is not None:
                kind |= _O
                out.append(_slot(rec.origin, "origin"))
            if rec.dest != BROADCAST:
                kind |= _D
                out.append(_slot(rec.dest, "dest"))
            if isinstance(rec, DataRecord):
                if rec.seq is not None:
                    kind |= _R
                    put_u15(out, rec.seq % SEQ_MODULUS)
                out += rec.payload
            else:
                if rec.reliable:
                    kind |= _R
                    put_u15(out, rec.seq % SEQ_MODULUS)
                else:
                    out.append(rec.seq % FRAG_ID_MODULUS)
                out += bytes((rec.index, rec.count))
                out += rec.chunk
            return kind, bytes(out)
        case AckRecord(origin=origin, cum=cum, bitmap=bitmap):
            nbytes = (bitmap.bit_length() + 7) // 8
            if nbytes > MAX_BITMAP_BYTES:
                raise RadioFrameError("ack bitmap too long")
            out.append(_slot(origin, "origin"))
            put_u15(out, cum % SEQ_MODULUS)
            out += bitmap.to_bytes(nbytes, "little")
            return _CTRL | _ACK << 3 | nbytes, bytes(out)
        case DigestRecord(origins=origins, tracks=tracks):
            out.append(len(origins))
            for origin, cum in origins:
                out.append(_slot(origin, "origin"))
                put_u15(out, cum % SEQ_MODULUS)
            out.append(len(tracks))
            for track, fix_no, time in tracks:
                out.append(_slot(track, "track"))
                out += ((fix_no & 0xF) << 12 | time % ACK_TIME_MODULUS).to_bytes(2, "big")
            return _CTRL | _DIGEST << 3, bytes(out)
        case SkipRecord(origin=origin, seq=seq):
            out.append(_slot(origin, "origin"))
            put_u15(out, seq % SEQ_MODULUS)
            return _CTRL | _SKIP << 3, bytes(out)
    raise TypeError(f"not a link record: {rec!r}")  # pragma: no cover


def record_size(rec: Record, *, last: bool) -> int:
    """Bytes ``rec`` takes in a body, with its length prefix unless ``last``."""
    _, content = _encode_content(rec)
    return 1 + len(content) + (0 if last else u15_size(len(content)))


def encode_body(records: list[Record]) -> bytes:
    """The body carrying ``records`` in order.  At least one record."""
    if not records:
        raise ValueError("a body needs at least one record")
    out = bytearray()
    for i, rec in enumerate(records):
        kind, content = _encode_content(rec)
        if len(content) >= SEQ_MODULUS:
            raise ValueError("link record too long")
        if i < len(records) - 1:
            out.append(kind | _L)
            put_u15(out, len(content))
        else:
            out.append(kind)
        out += content
    return bytes(out)


def decode_body(body: bytes) -> list[Record]:
    """The records of ``body``; RadioFrameError on anything malformed."""
    if not body:
        raise RadioFrameError("empty link body")
    reader = _Reader(body)
    records: list[Record] = []
    while reader.pos < len(body):
        kind = reader.byte()
        if kind & _CTRL and (kind >> 3) & 7 == _VERSION:
            raise RadioFrameError(f"link body version {kind & 7} not supported")
        content = reader.take(reader.u15()) if kind & _L else reader.rest()
        records.append(_decode_record(kind, _Reader(content)))
    return records


def _decode_record(kind: int, r: _Reader) -> Record:
    if not kind & _CTRL:
        origin = r.byte() if kind & _O else None
        dest = r.byte() if kind & _D else BROADCAST
        prec = (kind >> 3) & 3
        reliable = bool(kind & _R)
        if not kind & _FRAG:
            seq = r.u15() if reliable else None
            return DataRecord(prec, r.rest(), seq, origin, dest)
        seq = r.u15() if reliable else r.byte()
        index, count = r.byte(), r.byte()
        if count < 2 or index >= count:
            raise RadioFrameError(f"fragment {index} of {count} is impossible")
        return FragmentRecord(prec, r.rest(), index, count, seq, reliable, origin, dest)
    ctrl, flags = (kind >> 3) & 7, kind & 7
    if ctrl == _ACK:
        origin, cum = r.byte(), r.u15()
        bitmap = int.from_bytes(r.take(flags), "little")
        rec: Record = AckRecord(origin, cum, bitmap)
    elif ctrl == _DIGEST:
        origins = tuple((r.byte(), r.u15()) for _ in range(r.byte()))
        tracks = []
        for _ in range(r.byte()):
            track, word = r.byte(), int.from_bytes(r.take(2), "big")
            tracks.append((track, word >> 12, word % ACK_TIME_MODULUS))
        rec = DigestRecord(origins, tuple(tracks))
    elif ctrl == _SKIP:
        rec = SkipRecord(r.byte(), r.u15())
    else:
        raise RadioFrameError(f"unknown link control record {ctrl}")
    if r.pos != len(r.data):
        raise RadioFrameError("trailing bytes in link control record")
    return rec

"""The compact application encoding of the radio link: records <-> bytes, sans-I/O.

One record is one link-layer data payload (the link delimits it; the record
carries no length of its own).  Records are bit-packed MSB first, padded
with zero bits to a byte.  The first bits name the record kind and its schema
version:

::

    0     PositionBatch v1   fixes back to back (see compact_geo)
    1001  Text v1            sender:8 to:8 room? text [flash:1 (sig:64B? time)]
    1010  Report v1          sender:8 id:16 kind:3 time point count:EG2? severity:3? text
                             [flash:1 (sig:64B?)]
    1011  Order v1           origin:8 id:16 to:8 precedence:2 task:4 due? point? text
                             sig:64B? [ref? task_ref? more_text?]
    1100  OrderStatus v1     sender:8 id:16 state:3 time
    1101  Announce v1        slot:8 uid callsign team role cot_type key:32B?

Positions, the commonest record, get a one-bit kind.  ``1000``, ``1110`` and
``1111`` are reserved: a layout change that appending cannot express takes a
fresh code, and so does any change to PositionBatch, whose fixes run to the
end of the record.  The other schemas grow only at the end (STYLE 15): a decoder
ignores bits after the fields it knows, and a newer decoder treats a record
that ends early as having the new fields at their defaults.  ``x?`` is a
presence bit then ``x``; ``[...]`` are fields appended later, read as absent
when the record ends before them.  Strings are an 8-bit byte length and UTF-8
(16-bit for ``more_text``).  An order's text is cut at a character boundary
after 200 bytes; the rest (up to 2400 bytes in all) is ``more_text``, so a v1
decoder still reads the first 200 bytes.  ``ref`` and ``task_ref`` are the
command post's order and task ids, which its signature covers
(:mod:`fieldc2.orders.sign`); ``(x)`` is present when the flag before it is set.
A point is ``0 lat:17s lon:18s`` inside the operations box, else
``1 lat:25 lon:26`` (the 1e-5 degree grid, as for fixes).
Non-position times are ``zigzag(t - epoch)`` as Exp-Golomb order 12 (no
window: reports and orders may be hours old or days ahead); positions
use a 14-bit window, see :mod:`fieldc2.protocol.compact_geo`.

Errors: encoding a record the wire cannot hold (a slot above 254, text over
its limit, a height beyond 31 km) is local misuse, :class:`LinkError`;
decoding bytes that are not a valid record is :class:`RadioFrameError`, and
nothing else escapes :func:`decode`.
"""

from __future__ import annotations

from fieldc2.errors import LinkError, RadioFrameError
from fieldc2.model.radio import Fix, PositionBatch, Record
from fieldc2.protocol.compact_bits import BitReader, BitWriter
from fieldc2.protocol.compact_context import ChannelContext, Origin, PositionContext
from fieldc2.protocol.compact_geo import MIN_FIX_BITS, quantise_fix, read_fix, write_fix
from fieldc2.protocol.compact_records import (
    KIND_CODES,
    MAX_LABEL_BYTES,
    MAX_ORDER_TEXT_BYTES,
    MAX_TEXT_BYTES,
    MAX_UID_BYTES,
    READERS,
    WRITERS,
    order_signing_bytes,
)

__all__ = [
    "MAX_BATCH_FIXES", "MAX_LABEL_BYTES", "MAX_ORDER_TEXT_BYTES", "MAX_TEXT_BYTES",
    "MAX_UID_BYTES", "ChannelContext", "Origin", "PositionContext", "decode", "encode",
    "encode_positions", "encoded_size", "order_signing_bytes",
]

#: Fixes in one batch record: a 255-byte frame holds at most ~45 delta fixes;
#: the bound only refuses absurd records before they are built.
MAX_BATCH_FIXES = 64


def encode(record: Record, ctx: ChannelContext) -> bytes:
    """Encode a record.  Fixes are recorded in ``ctx`` as sent (for later deltas)."""
    out = BitWriter()
    if isinstance(record, PositionBatch):
        if not 0 < len(record.fixes) <= MAX_BATCH_FIXES:
            raise LinkError(f"a batch holds 1..{MAX_BATCH_FIXES} fixes")
        out.write(0, 1)
        for fix in record.fixes:  # all encode before any is recorded as sent
            out.extend(_encode_fix(fix, ctx, commit=False))
        for fix in record.fixes:
            ctx.positions.record_sent(quantise_fix(fix))
        return out.getvalue()
    if type(record) not in WRITERS:
        raise LinkError(f"{type(record).__name__} is not a compact record")
    out.write(0b1000 | KIND_CODES[type(record)], 4)
    WRITERS[type(record)](out, record, ctx)
    return out.getvalue()


def decode(data: bytes, ctx: ChannelContext, *, now: float) -> Record:
    """Decode one record; ``now`` (Unix s, the receiver's clock) resolves fix times.

    A batch returns the fixes it could resolve; fixes delta-coded against a
    fix this node lacks are dropped (the next digest asks for absolute ones),
    and when that leaves none the record is a :class:`RadioFrameError`."""
    src = BitReader(data)
    if src.read(1) == 0:
        return _decode_batch(src, ctx, now)
    kind = src.read(3)
    reader = READERS.get(kind)
    if reader is None:
        raise RadioFrameError(f"unknown compact record kind {kind}")
    record: Record = reader(src, ctx)
    return record


def encoded_size(record: Record, ctx: ChannelContext) -> int:
    """Bytes ``encode`` would produce now, without recording anything in ``ctx``."""
    if isinstance(record, PositionBatch):
        bits = 1 + sum(_encode_fix(f, ctx, commit=False).bits for f in record.fixes)
        return (bits + 7) // 8
    out = BitWriter()
    out.write(0, 4)
    WRITERS[type(record)](out, record, ctx)
    return (out.bits + 7) // 8


def encode_positions(fixes: list[Fix] | tuple[Fix, ...], ctx: ChannelContext,
                     budget: int) -> tuple[bytes, int]:
    """Pack the leading fixes that fit ``budget`` bytes into one batch record.

    Returns the record and how many fixes it holds (0 and ``b""`` when not
    even the first fits).  Only packed fixes are recorded as sent."""
    out = BitWriter()
    out.write(0, 1)
    count = 0
    for fix in fixes[:MAX_BATCH_FIXES]:
        piece = _encode_fix(fix, ctx, commit=False)
        if (out.bits + piece.bits + 7) // 8 > budget:
            break
        out.extend(_encode_fix(fix, ctx, commit=True))
        count += 1
    return (out.getvalue(), count) if count else (b"", 0)


def _encode_fix(fix: Fix, ctx: ChannelContext, *, commit: bool) -> BitWriter:
    out = BitWriter()
    write_fix(out, fix, ctx.positions.base_for(fix), ctx.origin)
    if commit:
        ctx.positions.record_sent(quantise_fix(fix))
    return out


def _decode_batch(src: BitReader, ctx: ChannelContext, now: float) -> PositionBatch:
    fixes: list[Fix] = []
    skipped = 0
    while src.remaining >= MIN_FIX_BITS:
        if len(fixes) + skipped >= MAX_BATCH_FIXES:
            raise RadioFrameError(f"batch longer than {MAX_BATCH_FIXES} fixes")
        fix = read_fix(src, ctx.positions, ctx.origin, now)
        if fix is None:
            skipped += 1
        else:
            fixes.append(fix)
    if not fixes:
        raise RadioFrameError("batch with no fix this node can resolve"
                              if skipped else "empty position batch")
    for fix in fixes:
        ctx.positions.record_received(fix)
    return PositionBatch(tuple(fixes))

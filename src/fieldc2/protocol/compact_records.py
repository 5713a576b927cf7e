"""Bit layouts of the non-position compact records, and the order signing bytes.

The layouts are tabled in :mod:`fieldc2.protocol.compact`; each writer here
starts after the 4 kind bits, each reader returns the finished record.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any, TypeVar

from fieldc2.errors import LinkError, RadioFrameError
from fieldc2.model.precedence import Precedence
from fieldc2.model.radio import (
    BROADCAST,
    MAX_SLOTS,
    Announce,
    Order,
    OrderState,
    OrderStatus,
    Report,
    ReportKind,
    TaskKind,
    Text,
)
from fieldc2.protocol.compact_bits import BitReader, BitWriter, unzigzag, zigzag
from fieldc2.protocol.compact_context import SCALE, ChannelContext, grid
from fieldc2.protocol.compact_geo import read_absolute, write_absolute

#: Chat text and report/order remarks, UTF-8 bytes.  200 keeps an Order with
#: its 64-byte signature inside one 255-byte LoRa frame after headers, and a
#: Text inside one Iridium SBD mobile-terminated message (270 B).
MAX_TEXT_BYTES = 200
#: Order text, UTF-8 bytes.  The command post cuts an order at 600 characters
#: (``orders.compose.MAX_ORDER_TEXT``), up to 4 bytes each; the link layer
#: fragments.  The first MAX_TEXT_BYTES travel where v1 decoders read text,
#: the rest in a trailing field (STYLE 15).
MAX_ORDER_TEXT_BYTES = 2400
#: Server order and task ids (``ORD-1A2B3C4D``, plan task ids) are short labels.
MAX_REF_BYTES = 64
#: CoT uids are 20-46 characters (ANDROID-<16 hex>, UUIDs, Windows SIDs).
MAX_UID_BYTES = 64
#: Callsigns, team and room names, roles and CoT types are short labels.
MAX_LABEL_BYTES = 32
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
#: Exp-Golomb order of record times: 2**12 s (68 min) costs 13 bits, a day 19.
TIME_EG_ORDER = 12
#: Counts in reports (people, items); 2**20 is more than any report means.
MAX_COUNT = 1 << 20
MAX_SEVERITY = 7

E = TypeVar("E", ReportKind, TaskKind, OrderState, Precedence)


def _slot(out: BitWriter, slot: int, *, broadcast: bool = False) -> None:
    if not (0 <= slot < MAX_SLOTS or (broadcast and slot == BROADCAST)):
        raise LinkError(f"slot {slot} out of range")
    out.write(slot, 8)


def _read_slot(src: BitReader, *, broadcast: bool = False) -> int:
    slot = src.read(8)
    if slot == BROADCAST and not broadcast:
        raise RadioFrameError("broadcast slot where a participant is required")
    return slot


def _time(out: BitWriter, time: int, ctx: ChannelContext) -> None:
    out.write_eg(zigzag(time - ctx.epoch), TIME_EG_ORDER)


def _read_time(src: BitReader, ctx: ChannelContext) -> int:
    return ctx.epoch + unzigzag(src.read_eg(TIME_EG_ORDER))


def _point(out: BitWriter, lat: float, lon: float, ctx: ChannelContext) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        raise LinkError(f"point {lat},{lon} is off the globe")
    write_absolute(out, grid(lat), grid(lon), ctx.origin)


def _read_point(src: BitReader, ctx: ChannelContext) -> tuple[float, float]:
    lat_i, lon_i = read_absolute(src, ctx.origin)
    if not (-90 * SCALE <= lat_i <= 90 * SCALE and -180 * SCALE <= lon_i <= 180 * SCALE):
        raise RadioFrameError("point is off the globe")
    return lat_i / SCALE, lon_i / SCALE


def _u16(out: BitWriter, value: int, what: str) -> None:
    if not 0 <= value < 1 << 16:
        raise LinkError(f"{what} {value} is not a 16-bit number")
    out.write(value, 16)


def _enum(kind: type[E], code: int) -> E:
    try:
        return kind(code)
    except ValueError as exc:
        raise RadioFrameError(f"{kind.__name__} code {code} is not defined") from exc


def _optional_text(out: BitWriter, text: str, limit: int) -> None:
    out.write_flag(bool(text))
    if text:
        out.write_text(text, limit)


def _read_optional_text(src: BitReader, limit: int) -> str:
    return src.read_text(limit) if src.read_flag() else ""


def _fixed_bytes(out: BitWriter, data: bytes, size: int, what: str) -> None:
    if data and len(data) != size:
        raise LinkError(f"{what} must be {size} bytes or empty, not {len(data)}")
    out.write_flag(bool(data))
    out.write_bytes(data)


def _read_fixed_bytes(src: BitReader, size: int) -> bytes:
    return src.read_bytes(size) if src.read_flag() else b""


def _more(src: BitReader) -> bool:
    """A trailing presence bit; a record from an older encoder ends before it
    (at most 7 zero bits of padding remain, which read as absent)."""
    return src.remaining > 0 and src.read_flag()


def _split_text(text: str) -> tuple[str, str]:
    """Text cut at a character boundary after MAX_TEXT_BYTES: (head, rest)."""
    head = text.encode("utf-8")[:MAX_TEXT_BYTES].decode("utf-8", "ignore")
    return head, text[len(head):]


def _write_flash(out: BitWriter, flash: bool, signature: bytes) -> None:
    out.write_flag(flash)
    if flash:
        _fixed_bytes(out, signature, SIGNATURE_BYTES, "signature")
    elif signature:
        raise LinkError("only a FLASH text or report carries a signature")


# --- Text ----------------------------------------------------------------------

def write_chat(out: BitWriter, record: Text, ctx: ChannelContext) -> None:
    _slot(out, record.sender)
    _slot(out, record.to, broadcast=True)
    if record.room and record.to != BROADCAST:
        raise LinkError("a chat room names a broadcast; a directed Text has none")
    _optional_text(out, record.room, MAX_LABEL_BYTES)
    out.write_text(record.text, MAX_TEXT_BYTES)
    if record.flash and record.time is None:
        raise LinkError("a FLASH text needs its time (what makes a replay visible)")
    _write_flash(out, record.flash, record.signature)
    if record.flash and record.time is not None:
        _time(out, record.time, ctx)


def read_chat(src: BitReader, ctx: ChannelContext) -> Text:
    sender, to = _read_slot(src), _read_slot(src, broadcast=True)
    room = _read_optional_text(src, MAX_LABEL_BYTES)
    if room and to != BROADCAST:
        raise RadioFrameError("directed Text with a chat room")
    text = src.read_text(MAX_TEXT_BYTES)
    if not _more(src):
        return Text(sender=sender, to=to, room=room, text=text)
    signature = _read_fixed_bytes(src, SIGNATURE_BYTES)
    return Text(sender=sender, to=to, room=room, text=text, flash=True,
                time=_read_time(src, ctx), signature=signature)


# --- Report --------------------------------------------------------------------

def write_report(out: BitWriter, record: Report, ctx: ChannelContext) -> None:
    _slot(out, record.sender)
    _u16(out, record.report_id, "report id")
    out.write(ReportKind(record.kind), 3)
    _time(out, record.time, ctx)
    _point(out, record.lat, record.lon, ctx)
    out.write_flag(record.count is not None)
    if record.count is not None:
        if not 0 <= record.count < MAX_COUNT:
            raise LinkError(f"report count {record.count} out of range")
        out.write_eg(record.count, 2)
    out.write_flag(record.severity is not None)
    if record.severity is not None:
        if not 0 <= record.severity <= MAX_SEVERITY:
            raise LinkError(f"severity {record.severity} outside 0..{MAX_SEVERITY}")
        out.write(record.severity, 3)
    out.write_text(record.text, MAX_TEXT_BYTES)
    _write_flash(out, record.flash, record.signature)


def read_report(src: BitReader, ctx: ChannelContext) -> Report:
    sender, report_id = _read_slot(src), src.read(16)
    kind = _enum(ReportKind, src.read(3))
    time = _read_time(src, ctx)
    lat, lon = _read_point(src, ctx)
    count = src.read_eg(2) if src.read_flag() else None
    if count is not None and count >= MAX_COUNT:
        raise RadioFrameError(f"report count {count} out of range")
    severity = src.read(3) if src.read_flag() else None
    text = src.read_text(MAX_TEXT_BYTES)
    flash = _more(src)
    return Report(sender=sender, report_id=report_id, kind=kind, time=time, lat=lat, lon=lon,
                  count=count, severity=severity, text=text, flash=flash,
                  signature=_read_fixed_bytes(src, SIGNATURE_BYTES) if flash else b"")


# --- Order ---------------------------------------------------------------------

def write_order(out: BitWriter, record: Order, ctx: ChannelContext) -> None:
    _slot(out, record.origin)
    _u16(out, record.order_id, "order id")
    _slot(out, record.to, broadcast=True)
    out.write(Precedence(record.precedence), 2)
    out.write(TaskKind(record.task), 4)
    out.write_flag(record.due is not None)
    if record.due is not None:
        _time(out, record.due, ctx)
    if (record.lat is None) != (record.lon is None):
        raise LinkError("an order point needs both lat and lon")
    out.write_flag(record.lat is not None)
    if record.lat is not None and record.lon is not None:
        _point(out, record.lat, record.lon, ctx)
    if len(record.text.encode("utf-8")) > MAX_ORDER_TEXT_BYTES:
        raise LinkError(f"order text exceeds {MAX_ORDER_TEXT_BYTES} bytes")
    head, rest = _split_text(record.text)
    out.write_text(head, MAX_TEXT_BYTES)
    _fixed_bytes(out, record.signature, SIGNATURE_BYTES, "signature")
    _optional_text(out, record.ref, MAX_REF_BYTES)
    _optional_text(out, record.task_ref, MAX_REF_BYTES)
    _optional_text(out, rest, MAX_ORDER_TEXT_BYTES)


def read_order(src: BitReader, ctx: ChannelContext) -> Order:
    origin, order_id, to = _read_slot(src), src.read(16), _read_slot(src, broadcast=True)
    precedence = _enum(Precedence, src.read(2))
    task = _enum(TaskKind, src.read(4))
    due = _read_time(src, ctx) if src.read_flag() else None
    lat = lon = None
    if src.read_flag():
        lat, lon = _read_point(src, ctx)
    text = src.read_text(MAX_TEXT_BYTES)
    signature = _read_fixed_bytes(src, SIGNATURE_BYTES)
    ref = src.read_text(MAX_REF_BYTES) if _more(src) else ""
    task_ref = src.read_text(MAX_REF_BYTES) if _more(src) else ""
    if _more(src):
        text += src.read_text(MAX_ORDER_TEXT_BYTES)
        if len(text.encode("utf-8")) > MAX_ORDER_TEXT_BYTES:
            raise RadioFrameError(f"order text exceeds {MAX_ORDER_TEXT_BYTES} bytes")
    return Order(origin=origin, order_id=order_id, to=to, precedence=precedence, task=task,
                 due=due, lat=lat, lon=lon, text=text, signature=signature, ref=ref,
                 task_ref=task_ref)


# --- OrderStatus ---------------------------------------------------------------

def write_status(out: BitWriter, record: OrderStatus, ctx: ChannelContext) -> None:
    _slot(out, record.sender)
    _u16(out, record.order_id, "order id")
    out.write(OrderState(record.state), 3)
    _time(out, record.time, ctx)


def read_status(src: BitReader, ctx: ChannelContext) -> OrderStatus:
    sender, order_id = _read_slot(src), src.read(16)
    state = _enum(OrderState, src.read(3))
    return OrderStatus(sender=sender, order_id=order_id, state=state, time=_read_time(src, ctx))


# --- Announce ------------------------------------------------------------------

def write_announce(out: BitWriter, record: Announce, ctx: ChannelContext) -> None:
    _slot(out, record.slot)
    if not record.uid:
        raise LinkError("an Announce needs a uid")
    out.write_text(record.uid, MAX_UID_BYTES)
    for label in (record.callsign, record.team, record.role, record.cot_type):
        out.write_text(label, MAX_LABEL_BYTES)
    _fixed_bytes(out, record.public_key, PUBLIC_KEY_BYTES, "public key")


def read_announce(src: BitReader, ctx: ChannelContext) -> Announce:
    slot, uid = _read_slot(src), src.read_text(MAX_UID_BYTES)
    if not uid:
        raise RadioFrameError("Announce with an empty uid")
    callsign, team, role, cot_type = (src.read_text(MAX_LABEL_BYTES) for _ in range(4))
    return Announce(slot=slot, uid=uid, callsign=callsign, team=team, role=role,
                    cot_type=cot_type, public_key=_read_fixed_bytes(src, PUBLIC_KEY_BYTES))


WRITERS: dict[type, Callable[[BitWriter, Any, ChannelContext], None]] = {
    Text: write_chat, Report: write_report, Order: write_order, OrderStatus: write_status,
    Announce: write_announce,
}
#: Kind code (the 3 bits after the leading 1) -> reader.
READERS: dict[int, Callable[[BitReader, ChannelContext], Any]] = {
    1: read_chat, 2: read_report, 3: read_order, 4: read_status, 5: read_announce,
}
KIND_CODES: dict[type, int] = {Text: 1, Report: 2, Order: 3, OrderStatus: 4, Announce: 5}


# --- the bytes an order signature covers ---------------------------------------

SIGNING_DOMAIN = b"fieldc2/order/v1\x00"


def order_signing_bytes(order: Order, channel_id: bytes) -> bytes:
    """The canonical message an originator signs with Ed25519 for ``order``.

    Layout (big-endian, fixed order, no optional encoding ambiguity)::

        "fieldc2/order/v1\\0"                domain separation from other signed data
        len(channel_id):u8  channel_id      binds the order to one channel's key space
        origin:u8  order_id:u16  to:u8      who orders whom (to 255 = everyone)
        precedence:u8  task:u8
        due_flag:u8  due:i64                Unix seconds (absolute, not epoch-relative,
                                            so re-encoding on another channel keeps it)
        point_flag:u8  lat_i:i32  lon_i:i32 the point on the 1e-5 degree grid
        len(text):u16  text (UTF-8)

    Absent due or point are a 0 flag followed by zeros.  Values are taken
    after quantisation, so a signature made before encoding verifies after
    decoding.  The signature itself is not covered."""
    if len(channel_id) > 255:
        raise LinkError("channel id longer than 255 bytes")
    text = order.text.encode("utf-8")
    has_point = order.lat is not None and order.lon is not None
    lat_i = grid(order.lat) if order.lat is not None and has_point else 0
    lon_i = grid(order.lon) if order.lon is not None and has_point else 0
    try:
        return b"".join((
            SIGNING_DOMAIN, struct.pack(">B", len(channel_id)), channel_id,
            struct.pack(">BHBBB", order.origin, order.order_id, order.to,
                        int(order.precedence), int(order.task)),
            struct.pack(">Bq", order.due is not None, order.due or 0),
            struct.pack(">Bii", has_point, lat_i, lon_i),
            struct.pack(">H", len(text)), text,
        ))
    except struct.error as exc:
        raise LinkError(f"order field out of range: {exc}") from exc

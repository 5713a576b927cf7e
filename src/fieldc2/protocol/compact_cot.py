"""Compact radio records <-> the CoT events the server holds.

The mapping is lossless for the fields a record keeps, in both directions:
``from_cot(to_cot(r)) == r`` for every record (a ``Fix`` gets a fresh fix
number, see below), and ``to_cot(from_cot(e))`` equals ``e`` on the kept
fields after quantisation.

==============  ===============================  ======================================
record          CoT                               kept (everything else is dropped)
==============  ===============================  ======================================
Fix             PLI, type from the roster,        uid/callsign/group name+role/type via
                how ``m-g``                       the roster slot; time (1 s); lat/lon
                                                  (1e-5 deg, <= 0.79 m); hae (1 m);
                                                  course (5 deg); speed (0.5 m/s)
Text            GeoChat ``b-t-f`` (``__chat``,    sender and recipient (roster), room
                ``link``, ``remarks``,            ("All Chat Rooms" = none), text;
                ``marti/dest`` when directed)     FLASH: time, signature
                + ``<__fieldc2_flash>`` if FLASH
Report          marker, type per kind (below) +   sender (``link`` p-p), id, kind, time,
                ``<__fieldc2_report>``            lat/lon, remarks text, count, severity,
                + ``<__fieldc2_flash>`` if FLASH  FLASH, signature
Order           GeoChat ``b-t-f`` +               origin, id (``handle``; the server's
                ``<__fieldc2_order>``             id as ``id``), task id, recipient,
                                                  precedence, task kind, due, point,
                                                  text (2400 B), signature
OrderStatus     ``t-x-fieldc2-o-s`` +             sender (``by``), order id, state, time
                ``<__fieldc2_order_status>``
Announce        none (roster only)
==============  ===============================  ======================================

Dropped from every event: ``takv``, ``ce``/``le``, ``status`` (battery),
``precisionlocation``, contact endpoint, ``access``/``qos``/``opex``,
milliseconds of times, stale times (recomputed from named defaults), and
every detail element not named above.  A PLI's type, callsign and group
come from the roster, not the event.  Text longer than
:data:`~fieldc2.protocol.compact_records.MAX_TEXT_BYTES` (order text:
``MAX_ORDER_TEXT_BYTES``) is cut at a character boundary; characters XML
1.0 cannot carry are removed by ``cot_xml``.  Heights beyond -1000..31767 m
and speeds above 2048 m/s are dropped.  Order and report ids that are not
our decimal or uid forms are hashed to 16 bits (BLAKE2s), which is lossy for reports; an order keeps
the server's id and ``task`` (``ref``, ``task_ref``) because its signature
covers them, and the task kind travels as ``kind=``.

Marker types per report kind: spot, sitrep and need ``b-m-p-s-m`` (spot map
marker), clue ``b-m-p-s-p-i`` (point of interest), casualty ``b-r-f-h-c``
(ATAK's MEDEVAC), hazard ``a-u-G`` (unknown ground point).  Markers dropped by
TAK users become reports when their type is one of the three ``b-`` types;
their sender is the ``link`` parent if it is on the roster, else the relay.

Fix numbers are per-channel sequence numbers with no CoT field:
``from_cot`` allocates the next one for the track from ``ctx`` (so
``from_cot(to_cot(fix)) == fix`` up to ``fix_no``).  A PLI maps to a
:class:`Fix`, not a batch; :func:`to_cot_all` unpacks a ``PositionBatch``.
Chat and orders are placed at the sender's last fix heard on the channel
(else 0,0) and an order with a point at that point.
"""

from __future__ import annotations

import uuid
from xml.etree import ElementTree

from fieldc2.errors import LinkError
from fieldc2.model.cot import UNKNOWN_ERROR, Contact, Detail, Event, EventFacts, Group, Track
from fieldc2.model.radio import (
    BROADCAST,
    Fix,
    Order,
    OrderStatus,
    PositionBatch,
    Record,
    Report,
    Roster,
    Text,
)
from fieldc2.protocol.compact_context import ChannelContext
from fieldc2.protocol.compact_cot_detail import (
    ALL_ROOMS,
    chat_xml,
    elements,
    flash_from_cot,
    flash_xml,
    order_from_cot,
    order_status_xml,
    order_xml,
    remarks_text,
    report_from_cot,
    report_xml,
    status_from_cot,
)
from fieldc2.protocol.compact_geo import (
    HAE_BITS,
    HAE_OFFSET,
    MAX_SPEED_CODE,
    SPEED_STEP,
    quantise_fix,
)
from fieldc2.protocol.compact_records import MAX_LABEL_BYTES, MAX_TEXT_BYTES

__all__ = [
    "CHAT_STALE_MS", "ORDER_STATUS_TYPE", "POSITION_STALE_MS", "REPORT_STALE_MS", "from_cot",
    "to_cot", "to_cot_all",
]

#: A radio PLI arrives every 30 s to a few minutes; ten minutes of silence is
#: when a map should grey the track out (ATAK's own PLIs use 6 min 15 s).
POSITION_STALE_MS = 600_000
#: GeoChat stays a day, as ATAK sends it.
CHAT_STALE_MS = 86_400_000
#: Field reports stay on the map for one operational period pair (24 h).
REPORT_STALE_MS = 86_400_000
ORDER_STATUS_TYPE = "t-x-fieldc2-o-s"
PLI_HOW = "m-g"
HUMAN_HOW = "h-g-i-g-o"
_CHAT_NAMESPACE = uuid.UUID("5b1d7e2c-3f0a-4c61-9d6e-2a8f4b7c1e90")


def to_cot(record: Record | Fix, roster: Roster, ctx: ChannelContext, now_ms: int) -> Event | None:
    """The CoT event for one record; None when it has none or names unknown slots.

    A ``PositionBatch`` holds several events: use :func:`to_cot_all`."""
    match record:
        case Fix():
            return _fix_to_cot(record, roster)
        case Text():
            return _text_to_cot(record, roster, ctx, now_ms)
        case Report():
            return _report_to_cot(record, roster)
        case Order():
            return _order_to_cot(record, roster, ctx, now_ms)
        case OrderStatus():
            return _status_to_cot(record, roster)
        case PositionBatch():
            raise LinkError("a PositionBatch maps to several events: use to_cot_all")
        case _:
            return None


def to_cot_all(record: Record, roster: Roster, ctx: ChannelContext, now_ms: int) -> list[Event]:
    """Every event a record stands for (one per fix of a batch)."""
    items = record.fixes if isinstance(record, PositionBatch) else (record,)
    events = (to_cot(item, roster, ctx, now_ms) for item in items)
    return [event for event in events if event is not None]


def from_cot(event: Event, facts: EventFacts, roster: Roster,
             ctx: ChannelContext) -> Record | Fix | None:
    """The compact record for a CoT event; None when the radio does not carry it.

    Raises :class:`CotError` for a malformed fieldc2 detail element."""
    found = elements(event.detail.xml)
    if "__fieldc2_order" in found:
        return order_from_cot(event, facts, found, roster)
    if event.type == ORDER_STATUS_TYPE:
        return status_from_cot(found, roster)
    if event.type == "b-t-f":
        return _text_from_cot(event, facts, found, roster)
    entry = roster.by_uid(event.uid)
    if entry is not None and event.type.startswith("a-"):
        return _fix_from_cot(event, entry.slot, ctx)
    return report_from_cot(event, found, roster)


# --- positions -----------------------------------------------------------------

def _fix_to_cot(fix: Fix, roster: Roster) -> Event | None:
    entry = roster.by_slot(fix.track)
    if entry is None:
        return None
    motion = None
    if fix.course is not None and fix.speed is not None:
        motion = Track(speed=fix.speed, course=fix.course)
    detail = Detail(
        contact=Contact(callsign=entry.callsign) if entry.callsign else None,
        group=Group(name=entry.team, role=entry.role) if entry.team or entry.role else None,
        track=motion,
    )
    time = fix.time * 1000
    return Event(uid=entry.uid, type=entry.cot_type, how=PLI_HOW, time=time, start=time,
                 stale=time + POSITION_STALE_MS, lat=fix.lat, lon=fix.lon,
                 hae=UNKNOWN_ERROR if fix.hae is None else fix.hae, detail=detail)


def _fix_from_cot(event: Event, slot: int, ctx: ChannelContext) -> Fix:
    hae: float | None = event.hae
    if hae is not None and not -HAE_OFFSET <= round(hae) < (1 << HAE_BITS) - HAE_OFFSET:
        hae = None  # 9999999 (unknown) and heights the wire cannot carry
    course = speed = None
    track = event.detail.track
    if track is not None and 0 <= round(track.speed / SPEED_STEP) < MAX_SPEED_CODE:
        course, speed = track.course, track.speed
    fix = Fix(track=slot, fix_no=ctx.positions.allocate_fix_no(slot), time=event.time // 1000,
              lat=event.lat, lon=event.lon, hae=hae, course=course, speed=speed)
    return quantise_fix(fix)


# --- chat ----------------------------------------------------------------------

def _sender_point(slot: int, ctx: ChannelContext) -> tuple[float, float]:
    """Where a chat line is placed: its sender's newest fix, else 0,0 as ATAK allows."""
    return ctx.positions.latest_position(slot) or (0.0, 0.0)


def _text_to_cot(text: Text, roster: Roster, ctx: ChannelContext, now_ms: int) -> Event | None:
    sender = roster.by_slot(text.sender)
    recipient = roster.by_slot(text.to) if text.to != BROADCAST else None
    if sender is None or (text.to != BROADCAST and recipient is None):
        return None
    message_id = str(uuid.uuid5(_CHAT_NAMESPACE, f"{sender.uid}|{now_ms}|{text.text}"))
    xml, room_id = chat_xml(sender, recipient, text.room, text.text, message_id, now_ms)
    if text.flash:
        xml += flash_xml(text.signature, text.time)
    lat, lon = _sender_point(text.sender, ctx)
    return Event(uid=f"GeoChat.{sender.uid}.{room_id}.{message_id}", type="b-t-f",
                 how=HUMAN_HOW, time=now_ms, start=now_ms, stale=now_ms + CHAT_STALE_MS,
                 lat=lat, lon=lon, detail=Detail(xml=xml))


def _text_from_cot(event: Event, facts: EventFacts,
                   found: dict[str, ElementTree.Element], roster: Roster) -> Text | None:
    chat = found.get("__chat")
    if chat is None:
        return None
    group = chat.find("chatgrp")
    sender_uid = group.get("uid0", "") if group is not None else ""
    sender = roster.by_uid(sender_uid)
    if sender is None:
        return None
    room_id, room = chat.get("id", ""), chat.get("chatroom", "")
    recipient = roster.by_uid(room_id)
    if recipient is None and facts.dest_callsigns:
        recipient = roster.by_callsign(facts.dest_callsigns[0])
    if recipient is None and (facts.directed or room_id != room):
        return None  # directed to someone who is not on this channel
    text = remarks_text(found, MAX_TEXT_BYTES)
    flash, time, signature = flash_from_cot(found)
    if flash and time is None:
        time = event.time // 1000
    if recipient is not None:
        return Text(sender=sender.slot, to=recipient.slot, text=text, flash=flash, time=time,
                    signature=signature)
    room = "" if room == ALL_ROOMS else truncate(room, MAX_LABEL_BYTES)
    return Text(sender=sender.slot, text=text, room=room, flash=flash, time=time,
                signature=signature)


def truncate(text: str, limit: int) -> str:
    """Cut UTF-8 text to ``limit`` bytes at a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


# --- reports and orders --------------------------------------------------------

def _report_to_cot(report: Report, roster: Roster) -> Event | None:
    sender = roster.by_slot(report.sender)
    if sender is None:
        return None
    cot_type, xml = report_xml(report, sender)
    time = report.time * 1000
    return Event(uid=f"fieldc2.report.{sender.uid}.{report.report_id}", type=cot_type,
                 how=HUMAN_HOW, time=time, start=time, stale=time + REPORT_STALE_MS,
                 lat=report.lat, lon=report.lon,
                 detail=Detail(contact=Contact(callsign=f"{report.kind.name.title()} "
                                                        f"{report.report_id}"), xml=xml))


def _order_to_cot(order: Order, roster: Roster, ctx: ChannelContext,
                  now_ms: int) -> Event | None:
    origin = roster.by_slot(order.origin)
    recipient = roster.by_slot(order.to) if order.to != BROADCAST else None
    if origin is None or (order.to != BROADCAST and recipient is None):
        return None
    message_id = f"fieldc2.order.{origin.uid}.{order.order_id}"
    xml, room_id = chat_xml(origin, recipient, "", order.text, message_id, now_ms)
    lat, lon = _sender_point(order.origin, ctx)
    if order.lat is not None and order.lon is not None:
        lat, lon = order.lat, order.lon
    return Event(uid=f"GeoChat.{origin.uid}.{room_id}.{message_id}", type="b-t-f",
                 how=HUMAN_HOW, time=now_ms, start=now_ms, stale=now_ms + CHAT_STALE_MS,
                 lat=lat, lon=lon, detail=Detail(xml=xml + order_xml(order, origin.uid)))


def _status_to_cot(status: OrderStatus, roster: Roster) -> Event | None:
    sender = roster.by_slot(status.sender)
    if sender is None:
        return None
    time = status.time * 1000
    return Event(uid=f"fieldc2.order-status.{sender.uid}.{status.order_id}",
                 type=ORDER_STATUS_TYPE, how=HUMAN_HOW, time=time, start=time,
                 stale=time + CHAT_STALE_MS, detail=Detail(xml=order_status_xml(status, sender)))

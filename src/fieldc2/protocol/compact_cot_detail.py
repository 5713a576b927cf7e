"""CoT detail XML for compact records: GeoChat, markers, fieldc2 order elements.

Written the way ATAK writes GeoChat (``tests/corpus/geochat_*.xml``) so TAK
clients show radio chat and orders in their chat window; read back through
ElementTree over detail XML that :func:`fieldc2.protocol.cot_xml.parse_event`
has already validated (no DOCTYPE, no entities can reach here).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from xml.etree import ElementTree

from fieldc2.errors import CotError
from fieldc2.model.cot import Event, EventFacts
from fieldc2.model.precedence import Precedence
from fieldc2.model.radio import (
    BROADCAST,
    RELAY_SLOT,
    Order,
    OrderState,
    OrderStatus,
    Report,
    ReportKind,
    Roster,
    RosterEntry,
    TaskKind,
)
from fieldc2.protocol.compact_context import snap
from fieldc2.protocol.compact_records import (
    MAX_COUNT,
    MAX_ORDER_TEXT_BYTES,
    MAX_REF_BYTES,
    MAX_SEVERITY,
    MAX_TEXT_BYTES,
    SIGNATURE_BYTES,
)
from fieldc2.protocol.cot_xml import XML_INVALID, format_time, parse_time

ALL_ROOMS = "All Chat Rooms"
#: Marker type per report kind.  The kind also travels in ``__fieldc2_report``;
#: the type is what TAK clients draw, and lets markers they drop map back.
REPORT_TYPES: dict[ReportKind, str] = {
    ReportKind.SPOT: "b-m-p-s-m",
    ReportKind.CLUE: "b-m-p-s-p-i",
    ReportKind.CASUALTY: "b-r-f-h-c",
    ReportKind.HAZARD: "a-u-G",
    ReportKind.SITREP: "b-m-p-s-m",
    ReportKind.NEED: "b-m-p-s-m",
}
#: Marker types from TAK clients that become reports without a fieldc2 element.
#: Only ``b-`` (bits/markers): an ``a-u-G`` from elsewhere is a track, not a hazard.
KIND_BY_TYPE: dict[str, ReportKind] = {
    "b-m-p-s-m": ReportKind.SPOT,
    "b-m-p-s-p-i": ReportKind.CLUE,
    "b-r-f-h-c": ReportKind.CASUALTY,
}

_ATTR = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                       "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})
_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


def attr(value: str) -> str:
    return XML_INVALID.sub("", value.translate(_ATTR))


def content(value: str) -> str:
    return XML_INVALID.sub("", value.translate(_TEXT))


def elements(xml: str) -> dict[str, ElementTree.Element]:
    """The detail's top-level elements by tag (first of each)."""
    if not xml:
        return {}
    try:
        root = ElementTree.fromstring(f"<detail>{xml}</detail>")
    except ElementTree.ParseError as exc:
        raise CotError(f"detail XML: {exc}") from exc
    found: dict[str, ElementTree.Element] = {}
    for child in root:
        found.setdefault(child.tag, child)
    return found


def remarks_text(found: dict[str, ElementTree.Element], limit: int) -> str:
    remarks = found.get("remarks")
    text = "".join(remarks.itertext()) if remarks is not None else ""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def hash16(text: str) -> int:
    """A stable 16-bit id for a foreign identifier (lossy, documented)."""
    return int.from_bytes(hashlib.blake2s(text.encode("utf-8"), digest_size=2).digest(), "big")


def _is_id16(text: str) -> bool:
    """Our own decimal form of a 16-bit id (not a foreign or server id)."""
    return text.isascii() and text.isdigit() and int(text) < 1 << 16 and str(int(text)) == text


def _id16(text: str) -> int:
    return int(text) if _is_id16(text) else hash16(text)


def _seconds(text: str) -> int:
    return parse_time(text) // 1000


# --- GeoChat -------------------------------------------------------------------

def chat_xml(sender: RosterEntry, recipient: RosterEntry | None, room: str, text: str,
             message_id: str, now_ms: int) -> tuple[str, str]:
    """GeoChat detail (``__chat``, ``link``, ``remarks``, ``marti``) and the room id."""
    if recipient is not None:
        room_name, room_id = recipient.callsign or recipient.uid, recipient.uid
    else:
        room_name = room_id = room or ALL_ROOMS
    dest = (f'<marti><dest callsign="{attr(room_name)}"/></marti>'
            if recipient is not None else "")
    xml = (
        f'<__chat parent="RootContactGroup" groupOwner="false" messageId="{attr(message_id)}"'
        f' chatroom="{attr(room_name)}" id="{attr(room_id)}"'
        f' senderCallsign="{attr(sender.callsign)}">'
        f'<chatgrp uid0="{attr(sender.uid)}" uid1="{attr(room_id)}" id="{attr(room_id)}"/>'
        f'</__chat><link uid="{attr(sender.uid)}" type="{attr(sender.cot_type)}"'
        f' relation="p-p"/><remarks source="BAO.F.ATAK.{attr(sender.uid)}"'
        f' to="{attr(room_id)}" time="{format_time(now_ms)}">{content(text)}</remarks>{dest}'
    )
    return xml, room_id


# --- reports -------------------------------------------------------------------

def report_xml(report: Report, sender: RosterEntry) -> tuple[str, str]:
    """Marker type and detail for a report."""
    extra = "".join(
        f' {name}="{value}"' for name, value in (("count", report.count),
                                                 ("severity", report.severity))
        if value is not None)
    xml = (f'<link uid="{attr(sender.uid)}" type="{attr(sender.cot_type)}" relation="p-p"'
           f' parent_callsign="{attr(sender.callsign)}"/>'
           f"<remarks>{content(report.text)}</remarks>"
           f'<__fieldc2_report kind="{report.kind.name.lower()}" id="{report.report_id}"'
           f"{extra}/>")
    if report.flash:
        xml += flash_xml(report.signature, None)
    return REPORT_TYPES[report.kind], xml


def report_from_cot(event: Event, found: dict[str, ElementTree.Element],
                    roster: Roster) -> Report | None:
    own = found.get("__fieldc2_report")
    link = found.get("link")
    sender = roster.by_uid(link.get("uid", "")) if link is not None else None
    slot = sender.slot if sender is not None else RELAY_SLOT
    if own is None:
        kind = KIND_BY_TYPE.get(event.type)
        if kind is None:
            return None
        return Report(sender=slot, report_id=hash16(event.uid), kind=kind,
                      time=event.time // 1000, lat=snap(event.lat),
                      lon=snap(event.lon), text=remarks_text(found, MAX_TEXT_BYTES))
    try:
        kind = ReportKind[own.get("kind", "").upper()]
        count = int(own.attrib["count"]) if "count" in own.attrib else None
        severity = int(own.attrib["severity"]) if "severity" in own.attrib else None
    except (KeyError, ValueError) as exc:
        raise CotError(f"bad __fieldc2_report: {exc}") from exc
    if (count is not None and not 0 <= count < MAX_COUNT) or (
            severity is not None and not 0 <= severity <= MAX_SEVERITY):
        raise CotError("__fieldc2_report count or severity out of range")
    flash, _, signature = flash_from_cot(found)
    return Report(sender=slot, report_id=_id16(own.get("id", event.uid)), kind=kind,
                  time=event.time // 1000, lat=snap(event.lat), lon=snap(event.lon),
                  text=remarks_text(found, MAX_TEXT_BYTES), count=count, severity=severity,
                  flash=flash, signature=signature)


# --- orders --------------------------------------------------------------------

def order_xml(order: Order, origin_uid: str) -> str:
    """``<__fieldc2_order>`` as the DIL contract spells it (``kind`` = task kind).

    ``id`` is the command post's order id when the order has one (``ref``), and
    ``handle`` then keeps the 16-bit radio id; ``task`` is the server's task id."""
    ident = (f'id="{attr(order.ref)}" handle="{order.order_id}"' if order.ref
             else f'id="{order.order_id}"')
    parts = [f'<__fieldc2_order {ident} kind="{order.task.name.lower()}"'
             f' precedence="{order.precedence.name}"']
    if order.task_ref:
        parts.append(f' task="{attr(order.task_ref)}"')
    if order.due is not None:
        parts.append(f' due="{format_time(order.due * 1000)}"')
    if order.lat is not None and order.lon is not None:
        parts.append(f' lat="{order.lat!r}" lon="{order.lon!r}"')
    parts.append(f' origin="{attr(origin_uid)}"')
    if order.signature:
        parts.append(f' sig="{base64.b64encode(order.signature).decode()}"')
    return "".join(parts) + "/>"


def order_from_cot(event: Event, facts: EventFacts, found: dict[str, ElementTree.Element],
                   roster: Roster) -> Order | None:
    own = found["__fieldc2_order"]
    origin = roster.by_uid(own.get("origin", ""))
    chat = found.get("__chat")
    room_id = chat.get("id", ALL_ROOMS) if chat is not None else ALL_ROOMS
    recipient = roster.by_uid(room_id)
    if recipient is None and facts.dest_callsigns:
        recipient = roster.by_callsign(facts.dest_callsigns[0])
    if origin is None or (recipient is None and room_id != ALL_ROOMS):
        return None
    try:
        precedence = Precedence[own.get("precedence", "ROUTINE").upper()]
        task = TaskKind[own.get("kind", "other").upper()]
        lat = float(own.attrib["lat"]) if "lat" in own.attrib else None
        lon = float(own.attrib["lon"]) if "lon" in own.attrib else None
        signature = _signature(own)
        handle = int(own.attrib["handle"]) if "handle" in own.attrib else None
    except (KeyError, ValueError) as exc:
        raise CotError(f"bad __fieldc2_order: {exc}") from exc
    if (lat is None) != (lon is None) or (lat is not None and not (
            abs(lat) <= 90 and lon is not None and abs(lon) <= 180)):
        raise CotError("__fieldc2_order point is incomplete or off the globe")
    ident = own.get("id", event.uid)
    ref = "" if _is_id16(ident) else ident
    task_ref = own.get("task", "")
    if handle is not None and not 0 <= handle < 1 << 16:
        raise CotError("__fieldc2_order handle is not a 16-bit number")
    if len(ref.encode("utf-8")) > MAX_REF_BYTES or len(task_ref.encode("utf-8")) > MAX_REF_BYTES:
        raise CotError(f"__fieldc2_order id or task longer than {MAX_REF_BYTES} bytes")
    return Order(origin=origin.slot, order_id=handle if handle is not None else _id16(ident),
                 to=recipient.slot if recipient is not None else BROADCAST,
                 precedence=precedence, task=task,
                 due=_seconds(own.attrib["due"]) if "due" in own.attrib else None,
                 lat=None if lat is None else snap(lat),
                 lon=None if lon is None else snap(lon),
                 text=remarks_text(found, MAX_ORDER_TEXT_BYTES), signature=signature,
                 ref=ref, task_ref=task_ref)


def _signature(own: ElementTree.Element) -> bytes:
    """The ``sig`` attribute: empty, or a base64 64-byte Ed25519 signature."""
    try:
        signature = base64.b64decode(own.get("sig", "").encode("ascii"), validate=True)
    except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise CotError(f"bad <{own.tag}> sig: {exc}") from exc
    if signature and len(signature) != SIGNATURE_BYTES:
        raise CotError(f"<{own.tag}> sig is not a 64-byte Ed25519 signature")
    return signature


# --- FLASH ---------------------------------------------------------------------

FLASH_TAG = "__fieldc2_flash"


def flash_xml(signature: bytes, time: int | None) -> str:
    """``<__fieldc2_flash>`` of a FLASH text or report, as the radio brought it.

    The relay adds ``verified="true"`` when the signature checks out against its
    roster; an unverifiable FLASH goes up as an ordinary message with
    ``<__fieldc2_flash verified="false" reason=...>`` instead (see relay.py),
    which reads back as not FLASH."""
    parts = [f"<{FLASH_TAG}"]
    if time is not None:
        parts.append(f' time="{format_time(time * 1000)}"')
    if signature:
        parts.append(f' sig="{base64.b64encode(signature).decode()}"')
    return "".join(parts) + "/>"


def flash_from_cot(found: dict[str, ElementTree.Element]) -> tuple[bool, int | None, bytes]:
    """(flash, time, signature) from a detail's ``<__fieldc2_flash>``, if any."""
    own = found.get(FLASH_TAG)
    if own is None or own.get("verified") == "false":
        return False, None, b""
    time = _seconds(own.attrib["time"]) if "time" in own.attrib else None
    return True, time, _signature(own)


def order_status_xml(status: OrderStatus, sender: RosterEntry) -> str:
    return (f'<__fieldc2_order_status id="{status.order_id}"'
            f' state="{status.state.name.lower()}" by="{attr(sender.uid)}"'
            f' time="{format_time(status.time * 1000)}"/>')


def status_from_cot(found: dict[str, ElementTree.Element], roster: Roster) -> OrderStatus | None:
    own = found.get("__fieldc2_order_status")
    if own is None:
        raise CotError("t-x-fieldc2-o-s without <__fieldc2_order_status>")
    sender = roster.by_uid(own.get("by", ""))
    if sender is None:
        return None
    try:
        state = OrderState[own.get("state", "").upper()]
        return OrderStatus(sender=sender.slot, order_id=_id16(own.attrib["id"]), state=state,
                           time=_seconds(own.attrib["time"]))
    except KeyError as exc:
        raise CotError(f"bad __fieldc2_order_status: missing or unknown {exc}") from exc

"""The CoT a published plan sends, and reading what devices answer.

Sans-I/O: events in, values out.  What a team's devices get for one plan
(every event directed with ``<marti><dest uid=>`` to the team's devices, so
no other team sees it and it stays out of the shared picture):

- per task, a marker ATAK draws: a spot marker ``b-m-p-s-m`` for a point, a
  route ``b-m-r`` with ``<link point=>`` waypoints for a line, a drawn shape
  ``u-d-f`` with a closed ring of ``<link point=>`` vertices for an area;
- the team's path as a route ``b-m-r`` from its position through its tasks;
- per task and device, the order as a direct GeoChat ``b-t-f`` from the
  command post carrying ``<__fieldc2_order .../>`` (DIL contract, "Orders and
  order status").

What comes back (:func:`read_report`): ATAK's delivered and read receipts
(``b-t-f-d`` / ``b-t-f-r``, ``messageId`` = the order chat's message id),
GeoChat replies with a keyword (ACK, WILCO, STARTED, DONE, UNABLE, ...) and
fieldc2 nodes' status events ``t-x-fieldc2-o-s``.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

import msgspec

from fieldc2.errors import CotError
from fieldc2.model.cot import Event, EventFacts
from fieldc2.orders.model import Order, Signal, message_id
from fieldc2.plan.model import Geometry, LineString, Point, Polygon, Task, Team
from fieldc2.protocol.cot_xml import XML_INVALID, _hardened_parser, format_time, parse_event

ORDER_STATUS_TYPE = "t-x-fieldc2-o-s"
CHAT_TYPE = "b-t-f"
DELIVERED_RECEIPT = "b-t-f-d"
READ_RECEIPT = "b-t-f-r"
#: Longest reply text inspected for keywords: replies are a few words; a long
#: chat is conversation, not a status report.
MAX_REPLY_CHARS = 500
#: Most vertices drawn for one area or line: ATAK handles a few hundred
#: links per shape smoothly; a finer outline is simplified by striding.
MAX_VERTICES = 200
_ORDER_ID = re.compile(r"\bORD-[0-9A-F]{8}\b", re.IGNORECASE)
#: Reply keywords, strongest first: "UNABLE TO COMPLETE" is a failure, "ROGER,
#: STARTED" a start.  Matched as whole words, case-insensitively.
KEYWORDS: tuple[tuple[Signal, re.Pattern[str]], ...] = (
    (Signal.FAILED, re.compile(r"\b(UNABLE|FAILED|FAIL|CANNOT|CAN'?T|ABORT(ED)?)\b", re.I)),
    (Signal.DONE, re.compile(r"\b(DONE|COMPLETED?|FINISHED|CLEARED)\b", re.I)),
    (Signal.STARTED, re.compile(r"\b(STARTED|STARTING|ON SCENE|IN PROGRESS|EN ?ROUTE)\b",
                                re.I)),
    (Signal.ACKNOWLEDGED, re.compile(r"\b(ACK|ACKNOWLEDGED?|WILCO|ROGER|COPY)\b", re.I)),
)
_STATUS_STATES = {"received": Signal.DELIVERED, "delivered": Signal.DELIVERED,
                  "acknowledged": Signal.ACKNOWLEDGED, "in_progress": Signal.STARTED,
                  "done": Signal.DONE, "failed": Signal.FAILED}
_COLOR = "-256"  # ATAK argb for yellow: tasking stands out from team colours


class Sender(msgspec.Struct, frozen=True, kw_only=True):
    """The command post as the author of orders."""

    uid: str
    callsign: str


# --- what devices tell us ----------------------------------------------------------


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """A GeoChat receipt naming the order chat's message id."""

    message_id: str
    signal: Signal
    by: str


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """A chat with a status keyword; ``order_id`` when the text names one."""

    signal: Signal
    by: str
    text: str
    order_id: str | None = None


class StatusReport(msgspec.Struct, frozen=True, kw_only=True):
    """A fieldc2 node's ``t-x-fieldc2-o-s``."""

    order_id: str
    signal: Signal
    by: str
    at: int | None = None


Report = Receipt | Reply | StatusReport


def _text(value: str) -> str:
    clean = XML_INVALID.sub("", value)
    return escape(clean, {'"': "&quot;", "\n": "&#10;"})


def detail_elements(xml: str) -> list[tuple[str, dict[str, str], str]]:
    """Top-level detail elements as ``(name, attributes, text)``; nested ones are
    folded into their parent's attributes as ``child.attr`` (``chatgrp.uid0``)."""
    found: list[tuple[str, dict[str, str], list[str]]] = []
    depth = 0

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth == 2:
            found.append((name, dict(attrs), []))
        elif depth == 3 and found:
            found[-1][1].update({f"{name}.{k}": v for k, v in attrs.items()})

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1

    def text(data: str) -> None:
        if depth == 2 and found:
            found[-1][2].append(data)

    parser = _hardened_parser()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(b"<detail>" + xml.encode() + b"</detail>", True)
    except Exception as exc:  # expat errors and our CotErrors alike
        raise CotError(f"unreadable detail: {exc}") from exc
    return [(name, attrs, "".join(parts)) for name, attrs, parts in found]


def read_report(event: Event, facts: EventFacts, sender_uid: str, cp: Sender) -> Report | None:
    """What an incoming event says about orders, or None when it says nothing.

    ``sender_uid`` is the uid of the connection it came from (empty when it
    came from a relay or another instance); the uid in the event is used only
    then.  A chat counts as a reply only when it is addressed to the command
    post or names an order id, so "done" in a team's own chat closes nothing.
    """
    kind = event.type
    if kind not in (CHAT_TYPE, DELIVERED_RECEIPT, READ_RECEIPT, ORDER_STATUS_TYPE):
        return None
    elements = {name: (attrs, text) for name, attrs, text in
                reversed(detail_elements(event.detail.xml))}
    if kind == ORDER_STATUS_TYPE:
        return _status(elements, sender_uid)
    chat, _ = elements.get("__chat") or elements.get("__chatreceipt") or ({}, "")
    link, _ = elements.get("link", ({}, ""))
    by = sender_uid or chat.get("chatgrp.uid0") or link.get("uid", "")
    if not by:
        return None
    if kind != CHAT_TYPE:
        signal = Signal.DELIVERED if kind == DELIVERED_RECEIPT else Signal.ACKNOWLEDGED
        return Receipt(message_id=chat.get("messageId") or event.uid, signal=signal, by=by)
    text = elements.get("remarks", ({}, ""))[1][:MAX_REPLY_CHARS]
    named = _ORDER_ID.search(text)
    addressed = (cp.uid in facts.dest_uids or cp.callsign in facts.dest_callsigns
                 or chat.get("id") == cp.uid)
    if not (addressed or named):
        return None
    for signal, pattern in KEYWORDS:
        if pattern.search(text):
            order_id = named.group(0).upper() if named else None
            return Reply(signal=signal, by=by, text=text, order_id=order_id)
    return None


def _status(elements: dict[str, tuple[dict[str, str], str]], sender_uid: str
            ) -> StatusReport | None:
    attrs, _ = elements.get("__fieldc2_order_status", ({}, ""))
    signal = _STATUS_STATES.get(attrs.get("state", ""))
    by = attrs.get("by") or sender_uid
    if signal is None or not attrs.get("id") or not by:
        return None
    at = None
    if attrs.get("time"):
        from fieldc2.protocol.cot_xml import parse_time
        try:
            at = parse_time(attrs["time"]) // 1000
        except CotError:
            at = None
    return StatusReport(order_id=attrs["id"], signal=signal, by=by, at=at)


# --- what we send ------------------------------------------------------------------


def _dests(uids: tuple[str, ...]) -> str:
    return "<marti>" + "".join(f'<dest uid="{_text(u)}"/>' for u in uids) + "</marti>"


def _event(uid: str, cot_type: str, lat: float, lon: float, now_ms: int, stale_ms: int,
           detail: str, how: str = "h-e") -> tuple[Event, EventFacts]:
    t = format_time(now_ms)
    data = (f'<event version="2.0" uid="{_text(uid)}" type="{cot_type}" how="{how}" time="{t}"'
            f' start="{t}" stale="{format_time(stale_ms)}"><point lat="{lat:.7f}"'
            f' lon="{lon:.7f}" hae="9999999.0" ce="9999999.0" le="9999999.0"/>'
            f"<detail>{detail}</detail></event>").encode()
    return parse_event(data)


def _points(coords: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    stride = max(1, -(-len(coords) // MAX_VERTICES))
    kept = coords[::stride]
    return kept if kept[-1] == coords[-1] else (*kept, coords[-1])


def task_marker(task: Task, order: Order, now_ms: int, stale_ms: int
                ) -> tuple[Event, EventFacts]:
    """The task drawn on the team's map, labelled with its name."""
    label = _text(task.name or task.id)
    remarks = f"<remarks>{_text(order.text)}</remarks>"
    common = f'<contact callsign="{label}"/>{remarks}{_dests(order.recipients)}'
    uid = f"fieldc2.task.{task.id}"
    geometry: Geometry = task.geometry
    match geometry:
        case Point(coordinates=(lon, lat)):
            detail = (f'<color argb="{_COLOR}"/><usericon iconsetpath='
                      f'"COT_MAPPING_SPOTMAP/b-m-p-s-m/{_COLOR}"/>{common}')
            return _event(uid, "b-m-p-s-m", lat, lon, now_ms, stale_ms, detail)
        case LineString(coordinates=coords):
            return _route(uid, task.name or task.id, _points(coords), now_ms, stale_ms,
                          remarks + _dests(order.recipients))
        case Polygon(coordinates=rings):
            ring = _points(rings[0])
            if ring[0] != ring[-1]:
                ring = (*ring, ring[0])
            links = "".join(f'<link point="{lat:.7f},{lon:.7f}"/>' for lon, lat in ring)
            detail = (f'{links}<strokeColor value="{_COLOR}"/><strokeWeight value="3.0"/>'
                      f'<fillColor value="1627389696"/><labels_on value="true"/>{common}')
            lon0 = sum(c[0] for c in ring[:-1]) / (len(ring) - 1)
            lat0 = sum(c[1] for c in ring[:-1]) / (len(ring) - 1)
            return _event(uid, "u-d-f", lat0, lon0, now_ms, stale_ms, detail)
    raise CotError(f"task {task.id} has no drawable geometry")  # pragma: no cover


def _route(uid: str, name: str, coords: tuple[tuple[float, float], ...], now_ms: int,
           stale_ms: int, extra: str) -> tuple[Event, EventFacts]:
    links = []
    for index, (lon, lat) in enumerate(coords):
        kind = "b-m-p-w" if index in (0, len(coords) - 1) else "b-m-p-c"
        links.append(f'<link uid="{_text(uid)}.{index}" callsign="" type="{kind}"'
                     f' point="{lat:.7f},{lon:.7f}" relation="c"/>')
    detail = ("".join(links) + '<link_attr color="-256" method="Walking" direction="Infil"'
              ' routetype="Primary" order="Ascending Check Points"/>'
              f'<contact callsign="{_text(name)}"/>{extra}')
    lon0, lat0 = coords[0]
    return _event(uid, "b-m-r", lat0, lon0, now_ms, stale_ms, detail)


def team_route(team: Team, coords: tuple[tuple[float, float], ...], now_ms: int,
               stale_ms: int) -> tuple[Event, EventFacts]:
    """The team's path for the period: its position, then each task in order."""
    name = f"{team.callsign} plan"
    remarks = f"<remarks>Planned route of {_text(team.callsign)}</remarks>"
    return _route(f"fieldc2.route.{team.id}", name, _points(coords), now_ms, stale_ms,
                  remarks + _dests(team.tak_uids))


def track_parts(coords: tuple[tuple[float, float], ...]
                ) -> list[tuple[tuple[float, float], ...]]:
    """A search track in routes of at most MAX_VERTICES points, each starting
    where the last ended.  Never thinned: dropping points of a ladder
    pattern would cut its turns and the team would skip legs."""
    step = MAX_VERTICES - 1
    return [coords[i:i + MAX_VERTICES] for i in range(0, max(1, len(coords) - 1), step)]


def track_uid(task_id: str, part: int) -> str:
    return f"fieldc2.track.{task_id}.{part}"


def search_track(task: Task, order: Order, coords: tuple[tuple[float, float], ...],
                 now_ms: int, stale_ms: int) -> list[tuple[Event, EventFacts]]:
    """The search pattern to walk in a task's area, as routes the team's
    devices can navigate (one per MAX_VERTICES points)."""
    parts = track_parts(coords)
    out = []
    for n, part in enumerate(parts):
        name = f"{task.name or task.id} pattern" + (f" {n + 1}/{len(parts)}"
                                                    if len(parts) > 1 else "")
        remarks = (f"<remarks>Search pattern for {_text(task.id)}, tracks "
                   f"{task.sweep_width:g} m apart</remarks>")
        out.append(_route(track_uid(task.id, n), name, part, now_ms, stale_ms,
                          remarks + _dests(order.recipients)))
    return out


def order_chat(order: Order, recipient: str, recipient_callsign: str, cp: Sender,
               signature: str, now_ms: int, stale_ms: int) -> tuple[Event, EventFacts]:
    """The order as a direct GeoChat from the command post to one device.

    Shaped like ATAK's own direct chat (``GeoChat.<sender>.<room>.<message
    id>``, ``__chat`` with ``chatgrp``, ``remarks source=BAO.F.ATAK.<sender>``),
    so ATAK files it in the conversation with the command post and answers it
    with receipts naming the message id.
    """
    mid = message_id(order.id, recipient)
    t = format_time(now_ms)
    room = _text(recipient_callsign or recipient)
    r, o = _text(recipient), _text(cp.uid)
    detail = (
        f'<__chat parent="RootContactGroup" groupOwner="false" messageId="{mid}"'
        f' chatroom="{room}" id="{r}" senderCallsign="{_text(cp.callsign)}">'
        f'<chatgrp uid0="{o}" uid1="{r}" id="{r}"/></__chat>'
        f'<link uid="{o}" type="a-f-G-U-C" relation="p-p"/>'
        f'<remarks source="BAO.F.ATAK.{o}" to="{r}" time="{t}">{_text(order.text)}</remarks>'
        f'<__fieldc2_order id="{_text(order.id)}" task="{_text(order.task_id)}"'
        f' precedence="{_text(order.precedence)}" due="{format_time(order.due * 1000)}"'
        f' lat="{order.lat:.7f}" lon="{order.lon:.7f}" origin="{o}" sig="{signature}"/>'
        f'<marti><dest uid="{r}"/></marti>')
    return _event(f"GeoChat.{cp.uid}.{recipient}.{mid}", CHAT_TYPE, order.lat, order.lon,
                  now_ms, stale_ms, detail, how="h-g-i-g-o")


def presence(cp: Sender, lat: float, lon: float, recipients: tuple[str, ...], now_ms: int,
             stale_ms: int) -> tuple[Event, EventFacts]:
    """The command post as a contact, so ATAK lists it and a reply reaches it."""
    detail = (f'<contact callsign="{_text(cp.callsign)}" endpoint="*:-1:stcp"/>'
              f'<__group name="Command" role="HQ"/>{_dests(recipients)}')
    return _event(cp.uid, "a-f-G-U-C", lat, lon, now_ms, stale_ms, detail, how="h-g-i-g-o")


def text_chat(cp: Sender, text: str, mid: str, now_ms: int, stale_ms: int, *,
              to_uid: str = "", to_callsign: str = "") -> tuple[Event, EventFacts]:
    """A plain GeoChat from the command post: direct to one device when
    ``to_uid`` is given, otherwise to All Chat Rooms (sent to a group).

    Overdue alerts go this way rather than as an emergency (``b-a-o-*``):
    ATAK notifies of a chat with a sound and a banner, while the emergency
    types raise the 911 alarm, mean someone is in danger, and stay in every
    picture until cancelled.
    """
    t = format_time(now_ms)
    room = _text(to_callsign or to_uid) if to_uid else "All Chat Rooms"
    room_id = _text(to_uid) if to_uid else room
    o = _text(cp.uid)
    dest = f'<marti><dest uid="{room_id}"/></marti>' if to_uid else ""
    detail = (
        f'<__chat parent="RootContactGroup" groupOwner="false" messageId="{mid}"'
        f' chatroom="{room}" id="{room_id}" senderCallsign="{_text(cp.callsign)}">'
        f'<chatgrp uid0="{o}" uid1="{room_id}" id="{room_id}"/></__chat>'
        f'<link uid="{o}" type="a-f-G-U-C" relation="p-p"/>'
        f'<remarks source="BAO.F.ATAK.{o}" to="{room_id}" time="{t}">{_text(text)}</remarks>'
        f"{dest}")
    return _event(f"GeoChat.{cp.uid}.{to_uid or room}.{mid}", CHAT_TYPE, 0.0, 0.0, now_ms,
                  stale_ms, detail, how="h-g-i-g-o")


def delete_marker(uid: str, recipients: tuple[str, ...], now_ms: int
                  ) -> tuple[Event, EventFacts]:
    """ATAK's delete (``t-x-d-d`` linking to the item) for the given devices."""
    detail = (f'<link uid="{_text(uid)}" relation="none" type="none"/><__forcedelete/>'
              f"{_dests(recipients)}")
    return _event(f"fieldc2.delete.{uid}", "t-x-d-d", 0.0, 0.0, now_ms, now_ms + 20_000,
                  detail, how="h-g-i-g-o")

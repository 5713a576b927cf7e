"""CoT XML: hardened parsing into the model, and serialisation back.

The parser is expat driven directly, not a tree builder: one pass over the
bytes fills the model and the routing facts, and the detail elements that have
no typed field are sliced verbatim out of the input by byte offset, so unknown
detail survives untouched.

Hardening (the input comes from any device on the network):

- no DOCTYPE at all, hence no entity declarations, no billion laughs and no
  external entities; an undefined entity such as ``&xxe;`` is an expat error;
- expat never opens files or sockets by itself; parameter-entity parsing off;
- nesting deeper than ``MAX_DEPTH`` is refused as soon as it is seen;
- the size is bounded earlier, by the framer.

Every failure leaves as :class:`~fieldc2.errors.CotError`.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pyexpat import ExpatError, ParserCreate
from typing import Any

from fieldc2.errors import CotError
from fieldc2.model.cot import (
    NO_FACTS,
    Contact,
    Detail,
    Event,
    EventFacts,
    Group,
    PrecisionLocation,
    Status,
    Takv,
    Track,
)

#: Deepest element nesting accepted.  Real CoT is 4-6 deep (event/detail/
#: marti/dest, route link points); 32 leaves room for any client's extension
#: detail while refusing the deeply nested inputs that exhaust parsers.
MAX_DEPTH = 32

#: 9999-12-31T23:59:59.999Z: the last instant ISO-8601 (and datetime) can write.
MAX_TIME_MS = 253_402_300_799_999

_PARAM_ENTITY_PARSING_NEVER = 0

# Typed detail elements: name -> (model field, attributes that map losslessly).
_TYPED: dict[str, tuple[str, frozenset[str]]] = {
    "contact": ("contact", frozenset({"endpoint", "callsign"})),
    "__group": ("group", frozenset({"name", "role"})),
    "precisionlocation": ("precision_location", frozenset({"geopointsrc", "altsrc"})),
    "status": ("status", frozenset({"battery"})),
    "takv": ("takv", frozenset({"device", "platform", "os", "version"})),
    "track": ("track", frozenset({"speed", "course"})),
}


def parse_time(text: str) -> int:
    """Parse an ISO-8601 CoT time to integer milliseconds since the epoch."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CotError(
            f"bad time {text[:40]!r}: expected ISO-8601 like 2024-01-01T00:00:00Z") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ms = round(moment.timestamp() * 1000)
    if not 0 <= ms <= MAX_TIME_MS:
        raise CotError(f"time {text[:40]!r} is outside 1970-9999")
    return ms


def format_time(ms: int) -> str:
    """Write integer milliseconds as the ISO-8601 UTC form TAK clients send."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _finite(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise CotError(f"point {name}={text[:40]!r} is not a number") from exc
    if not math.isfinite(value):
        raise CotError(f"point {name}={text[:40]!r} is not finite")
    return value


def _typed_value(name: str, attrs: dict[str, str]) -> Any:
    """The typed model value for a detail element, or None to keep it as XML."""
    if any(not value for value in attrs.values()):
        return None  # an empty attribute would not survive protobuf's defaults
    if name == "status":
        battery = attrs.get("battery", "0")
        ok = battery.isascii() and battery.isdigit() and len(battery) < 10
        return Status(battery=int(battery)) if ok else None
    if name == "track":
        try:
            speed, course = float(attrs.get("speed", "0")), float(attrs.get("course", "0"))
        except ValueError:
            return None
        if not (math.isfinite(speed) and math.isfinite(course)):
            return None
        return Track(speed=speed, course=course)
    cls = {"contact": Contact, "__group": Group, "precisionlocation": PrecisionLocation,
           "takv": Takv}[name]
    return cls(**attrs)


class _EventBuilder:
    """Expat callbacks that fill one event.  Used once, then dropped."""

    def __init__(self, data: bytes, wrapped_detail: bool,
                 taken: frozenset[str] = frozenset()) -> None:
        self.data = data
        self.taken = taken
        self.in_detail = wrapped_detail
        self.seen_detail = False
        self.parser = ParserCreate("utf-8")
        self.parser.SetParamEntityParsing(_PARAM_ENTITY_PARSING_NEVER)
        self.parser.StartDoctypeDeclHandler = self._refuse_doctype
        self.parser.EntityDeclHandler = self._refuse_entity
        self.parser.ExternalEntityRefHandler = self._refuse_external
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.CharacterDataHandler = self._text
        self.parser.buffer_text = False
        self.depth = 0
        # In wrapped mode the root is <detail> (for a protobuf xmlDetail).
        self.detail_depth = 1 if wrapped_detail else 2
        self.event_attrs: dict[str, str] | None = None
        self.point_attrs: dict[str, str] | None = None
        self.typed: dict[str, Any] = {}
        self.child_starts: list[int] = []  # byte offsets of depth-3 children kept as XML
        self.child_kept: list[bool] = []
        self.detail_end = -1
        self.current_typed: tuple[str, dict[str, str]] | None = None
        self.dest_callsigns: list[str] = []
        self.dest_uids: list[str] = []
        self.link_uids: list[str] = []
        self.emergency_cancel = False
        self.in_marti = False
        self.callsign: str | None = None
        self.group: str | None = None
        self.role = ""

    @staticmethod
    def _refuse_doctype(*_: object) -> None:
        raise CotError("DOCTYPE is not allowed in CoT (no DTDs, no entities)")

    @staticmethod
    def _refuse_entity(*_: object) -> None:
        raise CotError("entity declarations are not allowed in CoT")

    @staticmethod
    def _refuse_external(*_: object) -> int:
        raise CotError("external entities are not allowed in CoT")

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        self.depth += 1
        depth = self.depth
        if depth > MAX_DEPTH:
            raise CotError(f"nesting deeper than {MAX_DEPTH} levels")
        if depth == 2 and self.detail_depth == 2 and name == "detail":
            if self.seen_detail:
                raise CotError("more than one <detail>")
            self.in_detail = self.seen_detail = True
        if depth == self.detail_depth + 1 and self.in_detail:
            self._detail_child(name, attrs)
        elif depth > self.detail_depth + 1 and self.in_detail:
            self._keep_typed_as_xml()  # a typed element with children stays XML
            if depth == self.detail_depth + 2 and self.in_marti and name == "dest":
                self._dest(attrs)
        elif depth == 1:
            if self.detail_depth == 1:
                return
            if name != "event":
                raise CotError(f"root element is <{name[:40]}>, expected <event>")
            self.event_attrs = attrs
        elif depth == 2 and name == "point":
            self.point_attrs = attrs

    def _detail_child(self, name: str, attrs: dict[str, str]) -> None:
        self._close_typed()
        self.in_marti = name == "marti"
        if name == "link" and "uid" in attrs:
            self.link_uids.append(attrs["uid"])
        elif name == "emergency" and attrs.get("cancel", "").lower() == "true":
            self.emergency_cancel = True
        elif name == "contact" and self.callsign is None:
            self.callsign = attrs.get("callsign", "")
        elif name == "__group" and self.group is None:
            self.group, self.role = attrs.get("name", ""), attrs.get("role", "")
        spec = _TYPED.get(name)
        if (spec is not None and spec[0] not in self.typed and spec[0] not in self.taken
                and attrs.keys() <= spec[1]):
            self.current_typed = (name, attrs)
            self.child_kept.append(False)
        else:
            self.child_kept.append(True)
        self.child_starts.append(self.parser.CurrentByteIndex)

    def _keep_typed_as_xml(self) -> None:
        if self.current_typed is not None:
            self.current_typed = None
            self.child_kept[-1] = True

    def _text(self, text: str) -> None:
        if self.current_typed is not None and self.depth > self.detail_depth and text.strip():
            self._keep_typed_as_xml()  # text inside a typed element has no protobuf field

    def _dest(self, attrs: dict[str, str]) -> None:
        if "callsign" in attrs:
            self.dest_callsigns.append(attrs["callsign"])
        if "uid" in attrs:
            self.dest_uids.append(attrs["uid"])

    def _close_typed(self) -> None:
        if self.current_typed is None:
            return
        name, attrs = self.current_typed
        self.current_typed = None
        value = _typed_value(name, attrs)
        if value is None:
            self.child_kept[-1] = True
        else:
            self.typed[_TYPED[name][0]] = value

    def _end(self, name: str) -> None:
        if self.depth == self.detail_depth and self.in_detail:
            self._close_typed()
            self.detail_end = self.parser.CurrentByteIndex
            self.in_detail = False
        self.depth -= 1

    def run(self) -> None:
        try:
            self.parser.Parse(self.data, True)
        except ExpatError as exc:
            raise CotError(f"malformed XML: {exc}") from exc
        except (RecursionError, MemoryError) as exc:  # pragma: no cover - defensive
            raise CotError("XML too complex") from exc

    def detail(self) -> Detail:
        pieces = []
        starts = self.child_starts
        for index, start in enumerate(starts):
            if self.child_kept[index]:
                end = starts[index + 1] if index + 1 < len(starts) else self.detail_end
                pieces.append(self.data[start:end].rstrip())
        joined = b"".join(pieces)
        if b"</event" in joined:
            raise CotError("'</event' inside detail would end the event early for stream readers")
        xml = joined.decode("utf-8") if pieces else ""
        return Detail(xml=xml, **self.typed) if (self.typed or xml) else _EMPTY_DETAIL

    def facts(self) -> EventFacts:
        if not (self.dest_callsigns or self.dest_uids or self.link_uids or self.emergency_cancel
                or self.callsign is not None or self.group is not None):
            return NO_FACTS
        return EventFacts(
            dest_callsigns=tuple(self.dest_callsigns),
            dest_uids=tuple(self.dest_uids),
            link_uids=tuple(self.link_uids),
            emergency_cancel=self.emergency_cancel,
            callsign=self.callsign,
            group=self.group,
            role=self.role,
        )


_EMPTY_DETAIL = Detail()


def parse_event(data: bytes) -> tuple[Event, EventFacts]:
    """Parse one ``<event>`` element (no XML declaration) into the model."""
    builder = _EventBuilder(data, wrapped_detail=False)
    builder.run()
    attrs = builder.event_attrs
    if attrs is None:  # pragma: no cover - expat refuses an empty document first
        raise CotError("no <event> element")
    try:
        uid, cot_type = attrs["uid"], attrs["type"]
        times = parse_time(attrs["time"]), parse_time(attrs["start"]), parse_time(attrs["stale"])
    except KeyError as exc:
        raise CotError(f"<event> lacks the required attribute {exc.args[0]!r}") from exc
    if not uid or not cot_type:
        raise CotError("<event> has an empty uid or type")
    point = builder.point_attrs or {}
    lat = _finite(point.get("lat", "0"), "lat")
    lon = _finite(point.get("lon", "0"), "lon")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise CotError(f"point lat={lat} lon={lon} is off the globe")
    event = Event(
        uid=uid,
        type=cot_type,
        how=attrs.get("how", ""),
        time=times[0],
        start=times[1],
        stale=times[2],
        lat=lat,
        lon=lon,
        hae=_finite(point.get("hae", "9999999.0"), "hae"),
        ce=_finite(point.get("ce", "9999999.0"), "ce"),
        le=_finite(point.get("le", "9999999.0"), "le"),
        access=attrs.get("access", ""),
        qos=attrs.get("qos", ""),
        opex=attrs.get("opex", ""),
        detail=builder.detail(),
    )
    return event, builder.facts()


def parse_detail_xml(xml: str, taken: frozenset[str] = frozenset()) -> tuple[Detail, EventFacts]:
    """Validate and read a protobuf ``xmlDetail`` string.

    It arrives from a peer and is later written inside XML sent to others, so
    it must be a well-formed sequence of elements: anything else (a stray
    ``</detail>``, an entity, a DOCTYPE) is refused rather than forwarded.
    """
    data = b"<detail>" + xml.encode("utf-8") + b"</detail>"
    builder = _EventBuilder(data, wrapped_detail=True, taken=taken)
    builder.run()
    return builder.detail(), builder.facts()


# --- serialisation -------------------------------------------------------------

_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;",
     "\t": "&#9;"}
)
#: Characters XML 1.0 cannot carry at all (protobuf strings may hold them).
XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _attr(value: str) -> str:
    value = value.translate(_ATTR_ESCAPES)
    return XML_INVALID.sub("", value) if XML_INVALID.search(value) else value


def _num(value: float) -> str:
    return repr(float(value))


def _typed_xml(detail: Detail) -> list[str]:
    out: list[str] = []
    for tag, value in (
        ("contact", detail.contact),
        ("__group", detail.group),
        ("precisionlocation", detail.precision_location),
        ("status", detail.status),
        ("takv", detail.takv),
        ("track", detail.track),
    ):
        if value is None:
            continue
        attrs = []
        for field in value.__struct_fields__:
            item = getattr(value, field)
            if isinstance(item, str):
                if item:
                    attrs.append(f' {field}="{_attr(item)}"')
            elif isinstance(item, int):
                attrs.append(f' {field}="{item}"')
            else:
                attrs.append(f' {field}="{_num(item)}"')
        out.append(f"<{tag}{''.join(attrs)}/>")
    return out


def serialize_event(event: Event) -> bytes:
    """Write the model as one ``<event>`` element, UTF-8, no declaration."""
    optional = "".join(
        f' {name}="{_attr(value)}"'
        for name, value in (("access", event.access), ("qos", event.qos), ("opex", event.opex))
        if value
    )
    how = f' how="{_attr(event.how)}"' if event.how else ""
    detail = event.detail
    inner = "".join(_typed_xml(detail)) + detail.xml
    return (
        f'<event version="2.0" uid="{_attr(event.uid)}" type="{_attr(event.type)}"{how}'
        f' time="{format_time(event.time)}" start="{format_time(event.start)}"'
        f' stale="{format_time(event.stale)}"{optional}>'
        f'<point lat="{_num(event.lat)}" lon="{_num(event.lon)}" hae="{_num(event.hae)}"'
        f' ce="{_num(event.ce)}" le="{_num(event.le)}"/>'
        f"<detail>{inner}</detail></event>"
    ).encode()

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
from pyexpat import ExpatError, ParserCreate, XMLParserType
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


_PLAIN_TYPED: dict[str, Any] = {
    "contact": Contact, "__group": Group, "precisionlocation": PrecisionLocation, "takv": Takv,
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
    if "" in attrs.values():
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
    return _PLAIN_TYPED[name](**attrs)


class _Scan:
    """What one expat pass collects; interpreted afterwards in one place."""

    __slots__ = ("children", "dests", "detail_end", "event_attrs", "point_attrs")

    def __init__(self) -> None:
        self.event_attrs: dict[str, str] | None = None
        self.point_attrs: dict[str, str] | None = None
        # Detail children: [name, attrs, byte offset, has children or text].
        self.children: list[list[Any]] = []
        self.dests: list[dict[str, str]] = []
        self.detail_end = -1


def _refuse_doctype(*_: object) -> None:
    raise CotError("DOCTYPE is not allowed in CoT (no DTDs, no entities)")


def _refuse_entity(*_: object) -> None:
    raise CotError("entity declarations are not allowed in CoT")


def _refuse_external(*_: object) -> int:
    raise CotError("external entities are not allowed in CoT")


def _hardened_parser() -> XMLParserType:
    """An expat parser that refuses DTDs and entities (every use goes here)."""
    parser = ParserCreate("utf-8")
    parser.SetParamEntityParsing(_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_entity
    parser.ExternalEntityRefHandler = _refuse_external
    parser.buffer_text = False
    return parser


def _parse(parser: XMLParserType, data: bytes, what: str) -> None:
    try:
        parser.Parse(data, True)
    except ExpatError as exc:
        raise CotError(f"malformed {what}: {exc}") from exc
    except (RecursionError, MemoryError) as exc:  # pragma: no cover - defensive
        raise CotError(f"{what} too complex") from exc


def _scan(data: bytes, wrapped_detail: bool) -> _Scan:
    """One hardened expat pass over an ``<event>`` (or a wrapped ``<detail>``).

    The callbacks are closures over locals and do as little as possible: they
    are the hot path of the server, called once per element of every event.
    """
    scan = _Scan()
    children = scan.children
    parser = _hardened_parser()
    child_depth = 2 if wrapped_detail else 3
    detail_depth = child_depth - 1
    depth = 0
    # 0: before <detail>, 1: inside it, 2: after it.
    in_detail = 1 if wrapped_detail else 0

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth, in_detail
        depth += 1
        if depth == child_depth:
            if in_detail == 1:
                children.append([name, attrs, parser.CurrentByteIndex, False])
        elif depth > child_depth:
            if depth > MAX_DEPTH:
                raise CotError(f"nesting deeper than {MAX_DEPTH} levels")
            if in_detail == 1:
                child = children[-1]
                child[3] = True  # a typed element with children stays XML
                if depth == child_depth + 1 and name == "dest" and child[0] == "marti":
                    scan.dests.append(attrs)
        elif depth == detail_depth:
            if wrapped_detail:
                return
            if name == "detail":
                if in_detail:
                    raise CotError("more than one <detail>")
                in_detail = 1
            elif name == "point":
                scan.point_attrs = attrs
        elif name != "event":
            raise CotError(f"root element is <{name[:40]}>, expected <event>")
        else:
            scan.event_attrs = attrs

    def end(name: str) -> None:
        nonlocal depth, in_detail
        if depth == detail_depth and in_detail == 1:
            in_detail = 2
            scan.detail_end = parser.CurrentByteIndex
        depth -= 1

    def text(data: str) -> None:
        if depth >= child_depth and in_detail == 1 and not data.isspace():
            children[-1][3] = True  # text inside a typed element has no protobuf field

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    _parse(parser, data, "XML")
    return scan


def _interpret(data: bytes, scan: _Scan, taken: frozenset[str]) -> tuple[Detail, EventFacts]:
    """Typed detail fields, verbatim XML for the rest, and the routing facts."""
    typed: dict[str, Any] = {}
    pieces: list[bytes] = []
    links: list[str] = []
    cancel = False
    callsign: str | None = None
    group: str | None = None
    role = ""
    children = scan.children
    for index, (name, attrs, start, complex_) in enumerate(children):
        if name == "contact":
            if callsign is None:
                callsign = attrs.get("callsign", "")
        elif name == "__group":
            if group is None:
                group, role = attrs.get("name", ""), attrs.get("role", "")
        elif name == "link":
            if "uid" in attrs:
                links.append(attrs["uid"])
        elif name == "emergency" and attrs.get("cancel", "").lower() == "true":
            cancel = True
        spec = _TYPED.get(name)
        value = None
        if (spec is not None and not complex_ and spec[0] not in typed
                and spec[0] not in taken and attrs.keys() <= spec[1]):
            value = _typed_value(name, attrs)
        if value is not None:
            typed[spec[0]] = value  # type: ignore[index]
        else:
            end = children[index + 1][2] if index + 1 < len(children) else scan.detail_end
            pieces.append(data[start:end].rstrip())
    joined = b"".join(pieces)
    if b"</event" in joined:
        raise CotError("'</event' inside detail would end the event early for stream readers")
    xml = joined.decode("utf-8") if pieces else ""
    detail = Detail(xml=xml, **typed) if (typed or xml) else _EMPTY_DETAIL
    dests = scan.dests
    if not (dests or links or cancel or callsign is not None or group is not None):
        return detail, NO_FACTS
    facts = EventFacts(
        dest_callsigns=tuple(d["callsign"] for d in dests if "callsign" in d),
        dest_uids=tuple(d["uid"] for d in dests if "uid" in d),
        link_uids=tuple(links),
        emergency_cancel=cancel,
        callsign=callsign,
        group=group,
        role=role,
    )
    return detail, facts


_EMPTY_DETAIL = Detail()
_NO_ATTRS: dict[str, str] = {}


def parse_event(data: bytes) -> tuple[Event, EventFacts]:
    """Parse one ``<event>`` element (no XML declaration) into the model."""
    scan = _scan(data, wrapped_detail=False)
    attrs = scan.event_attrs
    if attrs is None:  # pragma: no cover - expat refuses an empty document first
        raise CotError("no <event> element")
    try:
        uid, cot_type = attrs["uid"], attrs["type"]
        time_text, start_text = attrs["time"], attrs["start"]
        time = parse_time(time_text)
        # Clients almost always send start == time; parse it once.
        times = time, time if start_text == time_text else parse_time(start_text), \
            parse_time(attrs["stale"])
    except KeyError as exc:
        raise CotError(f"<event> lacks the required attribute {exc.args[0]!r}") from exc
    if not uid or not cot_type:
        raise CotError("<event> has an empty uid or type")
    detail, facts = _interpret(data, scan, frozenset())
    point = scan.point_attrs or _NO_ATTRS
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
        detail=detail,
    )
    return event, facts


def parse_auth(data: bytes) -> tuple[str, str, str]:
    """``<auth><cot username= password= uid=/></auth>`` -> (username, password, uid)."""
    found: dict[str, str] = {}
    depth = 0

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth == 1 and name != "auth":
            raise CotError(f"root element is <{name[:40]}>, expected <auth>")
        if depth > 2:
            raise CotError("<auth> holds nothing deeper than <cot/>")
        if depth == 2 and name == "cot":
            found.update(attrs)

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1

    parser = _hardened_parser()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    _parse(parser, data, "<auth>")
    if not found.get("username"):
        raise CotError("<auth> without <cot username=...>")
    return found["username"], found.get("password", ""), found.get("uid", "")


def parse_detail_xml(xml: str, taken: frozenset[str] = frozenset()) -> tuple[Detail, EventFacts]:
    """Validate and read a protobuf ``xmlDetail`` string.

    It arrives from a peer and is later written inside XML sent to others, so
    it must be a well-formed sequence of elements: anything else (a stray
    ``</detail>``, an entity, a DOCTYPE) is refused rather than forwarded.
    """
    data = b"<detail>" + xml.encode("utf-8") + b"</detail>"
    return _interpret(data, _scan(data, wrapped_detail=True), taken)


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

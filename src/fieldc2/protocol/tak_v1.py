"""TAK protocol v1: protobuf ``TakMessage`` payloads to and from the model.

The protobuf classes come from ``takproto``; the mapping is ours so that the
conversion back to XML (which takproto lacks) keeps every unknown detail
element: ``xmlDetail`` becomes ``Detail.xml`` verbatim, after validation.

Not carried by protobuf (this ``TakMessage`` schema has no field for them):
the XML event attributes ``caveat`` and ``releaseableTo``, and the XML
``version`` attribute.  They are dropped when an XML event is converted;
XML recipients of an XML sender still get the original bytes.
"""

from __future__ import annotations

import math

import msgspec
from google.protobuf.message import DecodeError
from takproto.proto import TakMessage

from fieldc2.errors import CotError, FramingError
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
from fieldc2.protocol.cot_xml import MAX_TIME_MS, XML_INVALID, parse_detail_xml

MAGIC = 0xBF
MESH_HEADER = b"\xbf\x01\xbf"
#: A protobuf varint never needs more than 10 bytes for a 64-bit length.
MAX_VARINT_BYTES = 10


def encode_varint(value: int) -> bytes:
    """Unsigned protobuf varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """Return ``(value, next_pos)``, or None when more bytes are needed."""
    value = shift = 0
    for index in range(pos, min(len(data), pos + MAX_VARINT_BYTES)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + 1
        shift += 7
    if len(data) - pos >= MAX_VARINT_BYTES:
        raise FramingError("TAK v1 length varint longer than 10 bytes")
    return None


def stream_frame(payload: bytes) -> bytes:
    """Frame a payload for a TAK v1 stream: 0xbf, varint length, payload."""
    return b"\xbf" + encode_varint(len(payload)) + payload


def mesh_frame(payload: bytes) -> bytes:
    """Frame a payload for a TAK v1 mesh datagram: 0xbf 0x01 0xbf, payload."""
    return MESH_HEADER + payload


def event_to_payload(event: Event) -> bytes:
    """Serialise the model as a ``TakMessage`` protobuf payload."""
    message = TakMessage()
    cot = message.cotEvent
    cot.type = event.type
    cot.uid = event.uid
    cot.how = event.how
    cot.access = event.access
    cot.qos = event.qos
    cot.opex = event.opex
    cot.sendTime = event.time
    cot.startTime = event.start
    cot.staleTime = event.stale
    cot.lat = event.lat
    cot.lon = event.lon
    cot.hae = event.hae
    cot.ce = event.ce
    cot.le = event.le
    _fill_detail(cot.detail, event.detail)
    data: bytes = message.SerializeToString()
    return data


def _fill_detail(target: object, detail: Detail) -> None:
    if detail.xml:
        target.xmlDetail = detail.xml  # type: ignore[attr-defined]
    for proto_name, value in (
        ("contact", detail.contact),
        ("group", detail.group),
        ("precisionLocation", detail.precision_location),
        ("status", detail.status),
        ("takv", detail.takv),
        ("track", detail.track),
    ):
        if value is None:
            continue
        sub = getattr(target, proto_name)
        sub.SetInParent()
        for field in value.__struct_fields__:
            setattr(sub, field, getattr(value, field))


def payload_to_event(payload: bytes) -> tuple[Event, EventFacts] | None:
    """Parse a ``TakMessage`` payload; None for a control-only message."""
    message = TakMessage()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise CotError(f"malformed TAK v1 protobuf: {exc}") from exc
    if not message.HasField("cotEvent"):
        return None
    cot = message.cotEvent
    if not cot.uid or not cot.type:
        raise CotError("TAK v1 event has an empty uid or type")
    if not (-90.0 <= cot.lat <= 90.0 and -180.0 <= cot.lon <= 180.0):
        raise CotError(f"point lat={cot.lat} lon={cot.lon} is off the globe")
    if not all(math.isfinite(v) for v in (cot.hae, cot.ce, cot.le)):
        raise CotError("point hae/ce/le is not finite")
    if max(cot.sendTime, cot.startTime, cot.staleTime) > MAX_TIME_MS:
        raise CotError("TAK v1 time beyond year 9999")
    texts = (cot.uid, cot.type, cot.how, cot.access, cot.qos, cot.opex)
    if any(XML_INVALID.search(text) for text in texts):
        raise CotError("TAK v1 string holds characters XML cannot carry")
    detail, facts = _read_detail(cot.detail) if cot.HasField("detail") else (Detail(), NO_FACTS)
    event = Event(
        uid=cot.uid,
        type=cot.type,
        how=cot.how,
        time=cot.sendTime,
        start=cot.startTime,
        stale=cot.staleTime,
        lat=cot.lat,
        lon=cot.lon,
        hae=cot.hae,
        ce=cot.ce,
        le=cot.le,
        access=cot.access,
        qos=cot.qos,
        opex=cot.opex,
        detail=detail,
    )
    return event, facts


def _read_detail(proto: object) -> tuple[Detail, EventFacts]:
    xml_detail: str = proto.xmlDetail  # type: ignore[attr-defined]
    has = proto.HasField  # type: ignore[attr-defined]
    taken = frozenset(f for f, n in (("contact", "contact"), ("group", "group"),
                      ("precision_location", "precisionLocation"), ("status", "status"),
                      ("takv", "takv"), ("track", "track")) if has(n))
    parsed, facts = parse_detail_xml(xml_detail, taken) if xml_detail else (Detail(), NO_FACTS)
    p = proto
    detail = Detail(
        contact=Contact(endpoint=p.contact.endpoint, callsign=p.contact.callsign)  # type: ignore[attr-defined]
        if has("contact") else parsed.contact,
        group=Group(name=p.group.name, role=p.group.role)  # type: ignore[attr-defined]
        if has("group") else parsed.group,
        precision_location=PrecisionLocation(
            geopointsrc=p.precisionLocation.geopointsrc,  # type: ignore[attr-defined]
            altsrc=p.precisionLocation.altsrc,  # type: ignore[attr-defined]
        ) if has("precisionLocation") else parsed.precision_location,
        status=Status(battery=p.status.battery)  # type: ignore[attr-defined]
        if has("status") else parsed.status,
        takv=Takv(device=p.takv.device, platform=p.takv.platform,  # type: ignore[attr-defined]
                  os=p.takv.os, version=p.takv.version)  # type: ignore[attr-defined]
        if has("takv") else parsed.takv,
        track=Track(speed=p.track.speed, course=p.track.course)  # type: ignore[attr-defined]
        if has("track") else parsed.track,
        xml=parsed.xml,
    )
    if detail.contact is not None and has("contact"):
        facts = msgspec.structs.replace(facts, callsign=detail.contact.callsign)
    if detail.group is not None and has("group"):
        facts = msgspec.structs.replace(facts, group=detail.group.name, role=detail.group.role)
    return detail, facts

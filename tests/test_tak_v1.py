"""TAK protocol v1: protobuf payloads, framing helpers, and takproto as a second opinion."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import takproto
from google.protobuf.internal.decoder import _DecodeVarint
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from takproto.proto import TakMessage

from fieldc2.errors import CotError, FramingError, ProtocolError
from fieldc2.model.cot import Contact, Detail, Event, EventFacts, Status, Track
from fieldc2.protocol.cot_xml import parse_detail_xml, parse_event, serialize_event
from fieldc2.protocol.framing import ProtoStreamFramer, XmlFramer
from fieldc2.protocol.tak_v1 import (
    MAX_VARINT_BYTES,
    MESH_HEADER,
    decode_varint,
    encode_varint,
    event_to_payload,
    mesh_frame,
    payload_to_event,
    stream_frame,
)
from tests.strategies import corpus_files, events

CORPUS = corpus_files()
CORPUS_IDS = [path.stem for path in CORPUS]
TYPED_TAGS = ("contact", "__group", "precisionlocation", "status", "takv", "track")
MAY_1_NOON = 1_714_564_800_000


def message(xml_detail: str = "", **fields: object) -> TakMessage:
    """A TakMessage with a valid event; keyword arguments override CotEvent fields."""
    msg = TakMessage()
    cot = msg.cotEvent
    cot.uid, cot.type, cot.how = "u-1", "a-f-G-U-C", "m-g"
    cot.sendTime = cot.startTime = MAY_1_NOON
    cot.staleTime = MAY_1_NOON + 60_000
    cot.lat, cot.lon, cot.hae, cot.ce, cot.le = 1.5, 2.5, 0.0, 9999999.0, 9999999.0
    for name, value in fields.items():
        setattr(cot, name, value)
    if xml_detail:
        cot.detail.xmlDetail = xml_detail
    return msg


def decode(msg: TakMessage) -> tuple[Event, EventFacts] | None:
    return payload_to_event(msg.SerializeToString())


# --- round trips ---------------------------------------------------------------------


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_payload_round_trip(case: tuple[Event, EventFacts]) -> None:
    event, facts = case
    assert payload_to_event(event_to_payload(event)) == (event, facts)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_xml_and_protobuf_agree(case: tuple[Event, EventFacts]) -> None:
    """Model -> XML -> model -> protobuf -> model -> XML changes nothing."""
    event, facts = case
    xml = serialize_event(event)
    via_xml = parse_event(xml)
    via_proto = payload_to_event(event_to_payload(via_xml[0]))
    assert via_proto == via_xml == (event, facts)
    assert via_proto is not None and serialize_event(via_proto[0]) == xml


@pytest.mark.parametrize("path", CORPUS, ids=CORPUS_IDS)
def test_corpus_xml_protobuf_xml_keeps_unknown_detail(path: Path) -> None:
    event, facts = parse_event(path.read_bytes())
    decoded = payload_to_event(event_to_payload(event))
    assert decoded == (event, facts)
    assert decoded is not None
    again, _ = parse_event(serialize_event(decoded[0]))
    assert again.detail.xml == event.detail.xml


def test_duplicate_typed_element_survives_protobuf() -> None:
    """A second <track> stays in xmlDetail; it must not vanish on the way back.

    XML -> model keeps it in Detail.xml; model -> protobuf puts it in
    xmlDetail next to the typed track; protobuf -> model must not let the
    xmlDetail copy be swallowed by the typed field.
    """
    data = (
        b'<event version="2.0" uid="u" type="a-f-G" time="2024-05-01T12:00:00Z"'
        b' start="2024-05-01T12:00:00Z" stale="2024-05-01T12:05:00Z">'
        b'<point lat="1" lon="2"/><detail><track speed="1.0" course="2.0"/>'
        b'<track speed="3.0" course="4.0"/></detail></event>'
    )
    event, facts = parse_event(data)
    assert event.detail.track == Track(speed=1.0, course=2.0)
    assert event.detail.xml == '<track speed="3.0" course="4.0"/>'
    assert payload_to_event(event_to_payload(event)) == (event, facts)


def test_typed_fields_with_empty_values_survive() -> None:
    event = Event(uid="u", type="t", time=1, start=1, stale=1,
                  detail=Detail(contact=Contact(), status=Status(battery=0), track=Track()))
    assert payload_to_event(event_to_payload(event)) == (event, EventFacts(callsign=""))


def test_control_only_message_is_not_an_event() -> None:
    msg = TakMessage()
    msg.takControl.minProtoVersion = 1
    msg.takControl.maxProtoVersion = 1
    assert payload_to_event(msg.SerializeToString()) is None
    assert payload_to_event(b"") is None


def test_facts_come_from_xml_detail() -> None:
    detail = '<link uid="x"/><marti><dest callsign="A"/><dest uid="B"/></marti>'
    decoded = decode(message(detail))
    assert decoded is not None
    assert decoded[1] == EventFacts(dest_callsigns=("A",), dest_uids=("B",), link_uids=("x",))


# --- takproto, an independent implementation -------------------------------------------


def _canonical(detail_xml: str) -> str:
    return ET.canonicalize(f"<d>{detail_xml}</d>")


@pytest.mark.parametrize("path", CORPUS, ids=CORPUS_IDS)
def test_takproto_stream_decodes_like_our_xml(path: Path) -> None:
    data = path.read_bytes()
    ours, our_facts = parse_event(data)
    framer = ProtoStreamFramer()
    framer.feed(bytes(takproto.xml2proto(data, takproto.TAKProtoVer.STREAM)))
    payload = framer.next_frame()
    assert payload is not None and framer.next_frame() is None
    decoded = payload_to_event(payload)
    assert decoded is not None
    theirs, their_facts = decoded
    assert (theirs.uid, theirs.type, theirs.how) == (ours.uid, ours.type, ours.how)
    assert (theirs.lat, theirs.lon, theirs.hae, theirs.ce, theirs.le) == (
        ours.lat, ours.lon, ours.hae, ours.ce, ours.le)
    assert abs(theirs.time - ours.time) <= 1  # takproto truncates, we round
    assert their_facts.callsign == our_facts.callsign
    assert their_facts == our_facts


# takproto types a <contact phone=...> or <status readiness=...> anyway and
# drops the attributes protobuf has no field for, so its xmlDetail lacks an
# element ours keeps verbatim; test_takproto_drops_what_protobuf_cannot_carry.
TAKPROTO_LOSSY = {
    "itak_self_report": 'phone="7205550147"',
    "marker_spot": "readiness='true'",
    "wintak_self_report": 'phone="800-867-5309"',
}


@pytest.mark.parametrize(
    "path", [p for p in CORPUS if p.stem not in TAKPROTO_LOSSY],
    ids=[stem for stem in CORPUS_IDS if stem not in TAKPROTO_LOSSY],
)
def test_takproto_xml_detail_matches_ours(path: Path) -> None:
    data = path.read_bytes()
    ours, _ = parse_event(data)
    tak = takproto.parse_proto(takproto.xml2proto(data, takproto.TAKProtoVer.MESH))
    assert _canonical(tak.cotEvent.detail.xmlDetail) == _canonical(ours.detail.xml)


@pytest.mark.parametrize("stem", sorted(TAKPROTO_LOSSY))
def test_takproto_drops_what_protobuf_cannot_carry(stem: str) -> None:
    data = next(p for p in CORPUS if p.stem == stem).read_bytes()
    ours, _ = parse_event(data)
    tak = takproto.parse_proto(takproto.xml2proto(data, takproto.TAKProtoVer.MESH))
    attribute = TAKPROTO_LOSSY[stem]
    assert attribute in ours.detail.xml
    assert attribute.split("=")[0] not in tak.cotEvent.detail.xmlDetail


def _assert_same_message(parsed: TakMessage, event: Event) -> None:
    cot = parsed.cotEvent
    assert (cot.uid, cot.type, cot.how) == (event.uid, event.type, event.how)
    assert (cot.sendTime, cot.startTime, cot.staleTime) == (event.time, event.start, event.stale)
    assert (cot.lat, cot.lon, cot.hae, cot.ce, cot.le) == (
        event.lat, event.lon, event.hae, event.ce, event.le)
    assert (cot.access, cot.qos, cot.opex) == (event.access, event.qos, event.opex)
    assert cot.detail.xmlDetail == event.detail.xml
    assert cot.detail.HasField("contact") == (event.detail.contact is not None)
    assert cot.detail.contact.callsign == event.callsign


@pytest.mark.parametrize("path", CORPUS, ids=CORPUS_IDS)
def test_takproto_parses_our_frames(path: Path) -> None:
    event, _ = parse_event(path.read_bytes())
    payload = event_to_payload(event)
    _assert_same_message(takproto.parse_proto(bytearray(stream_frame(payload))), event)
    _assert_same_message(takproto.parse_proto(bytearray(mesh_frame(payload))), event)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_takproto_parses_our_random_frames(case: tuple[Event, EventFacts]) -> None:
    event, _ = case
    _assert_same_message(takproto.parse_stream(bytearray(stream_frame(event_to_payload(event)))),
                         event)


# --- hostile xmlDetail ------------------------------------------------------------------

SPOOF = ('<event version="2.0" uid="spoof" type="a-h-G" time="2024-05-01T12:00:00Z"'
         ' start="2024-05-01T12:00:00Z" stale="2030-01-01T00:00:00Z"><point lat="0" lon="0"/>'
         "<detail>")
MALICIOUS_DETAIL = {
    "close-and-open-event": f"</detail></event>{SPOOF}",
    "close-detail": "<remarks/></detail><detail>",
    "stray-close": "</remarks>",
    "unclosed": "<remarks>",
    "undefined-entity": "<remarks>&xxe;</remarks>",
    "doctype": '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><remarks>&x;</remarks>',
    "xml-declaration": '<?xml version="1.0"?><remarks/>',
    "nul": "<remarks>\x00</remarks>",
    "duplicate-attribute": '<remarks a="1" a="2"/>',
    "too-deep": "<a>" * 40 + "</a>" * 40,
}


@pytest.mark.parametrize("detail", MALICIOUS_DETAIL.values(), ids=MALICIOUS_DETAIL.keys())
def test_malicious_xml_detail_is_refused(detail: str) -> None:
    with pytest.raises(CotError):
        decode(message(detail))


@settings(max_examples=200)
@given(st.text(max_size=80))
def test_accepted_xml_detail_cannot_inject(detail: str) -> None:
    """Whatever xmlDetail is accepted writes back as this one event and no other."""
    try:
        decoded = decode(message(detail))
    except CotError:
        return
    assert decoded is not None
    event, facts = decoded
    xml = serialize_event(event)
    assert xml.count(b"</event>") == 1
    assert parse_event(xml) == (event, facts)
    assert parse_detail_xml(event.detail.xml)[0].xml == event.detail.xml


SMUGGLED = (
    '<event version="2.0" uid="ANDROID-589520ccfcd20f01" type="t-x-d-d" how="h-g-i-g-o"'
    ' time="2024-05-01T12:00:00Z" start="2024-05-01T12:00:00Z" stale="2024-05-01T12:05:00Z">'
    '<point lat="0" lon="0"/><detail><remarks>'
)
SMUGGLERS = {
    "comment": f"<remarks><!--</event>{SMUGGLED}--></remarks>",
    "cdata": f"<remarks><![CDATA[</event>{SMUGGLED}]]></remarks>",
    "processing-instruction": f"<remarks><?x </event>{SMUGGLED}?></remarks>",
}


@pytest.mark.parametrize("detail", SMUGGLERS.values(), ids=SMUGGLERS.keys())
def test_xml_detail_cannot_smuggle_an_event_past_stream_framing(detail: str) -> None:
    """XML clients split the stream after every ``</event>`` (protocol.txt).

    A v1 peer's xmlDetail is written into the XML other clients receive, so a
    ``</event>`` hidden in a comment, CDATA section or processing instruction
    would end our event early and make the rest a second event of the
    peer's choosing, which the server itself never saw.
    """
    try:
        decoded = decode(message(detail))
    except CotError:
        return
    assert decoded is not None
    xml = serialize_event(decoded[0])
    receiver = XmlFramer()
    receiver.feed(xml)
    assert receiver.next_frame() == xml
    assert receiver.next_frame() is None


# --- point, times and strings a v1 peer may send -----------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"uid": ""},
        {"type": ""},
        {"lat": 90.0000001},
        {"lat": float("nan")},
        {"lon": -180.5},
        {"lon": float("inf")},
        {"hae": float("nan")},
        {"ce": float("inf")},
        {"le": float("-inf")},
    ],
    ids=repr,
)
def test_invalid_event_fields_refused(fields: dict[str, object]) -> None:
    with pytest.raises(CotError):
        decode(message(**fields))


@pytest.mark.parametrize("lat_lon", [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0)])
def test_point_on_the_edge_of_the_globe(lat_lon: tuple[float, float]) -> None:
    decoded = decode(message(lat=lat_lon[0], lon=lat_lon[1]))
    assert decoded is not None and (decoded[0].lat, decoded[0].lon) == lat_lon


@pytest.mark.parametrize(
    ("field", "value"),
    [("sendTime", 253_402_300_800_000), ("staleTime", 2**64 - 1)],  # year 10000; uint64 max
)
def test_accepted_v1_time_can_be_written_as_xml(field: str, value: int) -> None:
    """A time beyond year 9999 is either refused or still writable as CoT XML.

    Otherwise one v1 peer's event crashes serialisation for every XML peer.
    """
    try:
        decoded = decode(message(**{field: value}))
    except CotError:
        return
    assert decoded is not None
    serialize_event(decoded[0])


@pytest.mark.parametrize("uid", ["ANDROID-589520ccfcd20f01\x00", "\x01"])
def test_accepted_v1_uid_keeps_its_identity_in_xml(uid: str) -> None:
    """XML cannot carry control characters; a uid must not silently change.

    Stripping them would let a v1 peer impersonate another client's uid
    toward every XML client ("ANDROID-...\\x00" becomes "ANDROID-...").
    """
    try:
        decoded = decode(message(uid=uid))
    except CotError:
        return
    assert decoded is not None
    assert parse_event(serialize_event(decoded[0]))[0].uid == uid


# --- varints ---------------------------------------------------------------------------


@given(st.integers(0, 2**64 - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert len(encoded) <= MAX_VARINT_BYTES
    assert _DecodeVarint(encoded, 0) == (value, len(encoded))  # protobuf's own decoder
    assert decode_varint(b"\xbf" + encoded + b"tail", 1) == (value, 1 + len(encoded))
    for cut in range(len(encoded)):
        assert decode_varint(encoded[:cut], 0) is None


@pytest.mark.parametrize(("value", "encoded"),
                         [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"),
                          (300, b"\xac\x02"), (2**64 - 1, b"\xff" * 9 + b"\x01")])
def test_varint_known_values(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded


def test_varint_longer_than_ten_bytes_is_refused() -> None:
    assert decode_varint(b"\xff" * (MAX_VARINT_BYTES - 1), 0) is None
    with pytest.raises(FramingError):
        decode_varint(b"\xff" * MAX_VARINT_BYTES, 0)
    with pytest.raises(FramingError):
        decode_varint(b"\x00\xbf" + b"\x80" * 12, 2)


def test_frames() -> None:
    assert stream_frame(b"abc") == b"\xbf\x03abc"
    assert stream_frame(b"x" * 300)[:3] == b"\xbf\xac\x02"
    assert mesh_frame(b"abc") == MESH_HEADER + b"abc" == b"\xbf\x01\xbfabc"


# --- fuzzing: only ProtocolError escapes ----------------------------------------------------


@settings(max_examples=200)
@given(st.binary(max_size=256))
def test_fuzz_arbitrary_payload(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        payload_to_event(data)


_any_text = st.text(max_size=12)


@st.composite
def _tak_messages(draw: st.DrawFn) -> TakMessage:
    """Structurally valid TakMessages with arbitrary field values."""
    msg = TakMessage()
    cot = msg.cotEvent
    for name in ("uid", "type", "how", "access", "qos", "opex"):
        setattr(cot, name, draw(_any_text))
    for name in ("sendTime", "startTime", "staleTime"):
        setattr(cot, name, draw(st.integers(0, 2**64 - 1)))
    for name in ("lat", "lon", "hae", "ce", "le"):
        setattr(cot, name, draw(st.floats()))
    detail = cot.detail
    if draw(st.booleans()):
        detail.xmlDetail = draw(st.sampled_from(["", "<a/>", '<link uid="x"/>', "<b>t</b><c/>"]))
    if draw(st.booleans()):
        detail.contact.callsign = draw(_any_text)
        detail.contact.endpoint = draw(_any_text)
    if draw(st.booleans()):
        detail.status.battery = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        detail.track.speed = draw(st.floats())
        detail.track.course = draw(st.floats())
    if draw(st.booleans()):
        detail.takv.device = draw(_any_text)
    return msg


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(_tak_messages())
@example(message(staleTime=2**64 - 1))
@example(message(type="a-f-G\x1f"))
def test_fuzz_structured_payload(msg: TakMessage) -> None:
    """Only ProtocolError escapes, and an accepted event can be written as XML."""
    try:
        decoded = decode(msg)
    except ProtocolError:
        return
    assert decoded is not None
    event, _ = decoded
    again, _ = parse_event(serialize_event(event))
    assert (again.uid, again.type, again.time, again.start, again.stale) == (
        event.uid, event.type, event.time, event.start, event.stale)
    assert (again.lat, again.lon) == (event.lat, event.lon)

"""CoT XML codec: the corpus, round trips, routing facts and hostile input."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

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
from fieldc2.protocol.cot_xml import (
    MAX_DEPTH,
    format_time,
    parse_detail_xml,
    parse_event,
    parse_time,
    serialize_event,
)
from tests.strategies import CORPUS_DIR, corpus_files, event_bytes, events, times_ms, xml_only

CORPUS = corpus_files()
CORPUS_IDS = [path.stem for path in CORPUS]
VIPER = "ANDROID-589520ccfcd20f01"
BULLDOG = "ANDROID-0d2f5c1b7e3a9f44"
JENNY = "S-1-5-21-2720623347-3037847324-4167270909-1002"
MAY_1_NOON = 1_714_564_800_000  # 2024-05-01T12:00:00Z in ms

TYPED_TAGS = {
    "contact": "contact",
    "__group": "group",
    "precisionlocation": "precision_location",
    "status": "status",
    "takv": "takv",
    "track": "track",
}


def corpus(name: str) -> bytes:
    return (CORPUS_DIR / f"{name}.xml").read_bytes()


def make_event(detail: str = "", *, point: str = 'lat="1.5" lon="2.5"') -> bytes:
    """A minimal valid event around the given detail content."""
    return (
        f'<event version="2.0" uid="u-1" type="a-f-G-U-C" how="m-g"'
        f' time="2024-05-01T12:00:00Z" start="2024-05-01T12:00:00Z"'
        f' stale="2024-05-01T12:05:00Z"><point {point}/>'
        f"<detail>{detail}</detail></event>"
    ).encode()


# --- the corpus ---------------------------------------------------------------------


@pytest.mark.parametrize("path", CORPUS, ids=CORPUS_IDS)
def test_every_corpus_message_parses(path: Path) -> None:
    data = path.read_bytes()
    event, _ = parse_event(data)
    declared = re.search(rb"""\buid=["']([^"']+)["']""", data)
    assert declared is not None
    assert event.uid == declared.group(1).decode()
    # With or without the declaration the framer strips, the result is the same.
    assert parse_event(event_bytes(data)) == parse_event(data)


@pytest.mark.parametrize("path", CORPUS, ids=CORPUS_IDS)
def test_corpus_round_trips_through_serialize(path: Path) -> None:
    event, facts = parse_event(path.read_bytes())
    written = serialize_event(event)
    assert parse_event(written) == (event, facts)
    assert serialize_event(parse_event(written)[0]) == written


def _inner_detail(data: bytes) -> str:
    text = data.decode()
    match = re.search(r"<detail>(.*)</detail>", text, re.DOTALL)
    return match.group(1) if match else ""


@pytest.mark.parametrize("path", CORPUS, ids=CORPUS_IDS)
def test_corpus_unknown_detail_is_kept_byte_for_byte(path: Path) -> None:
    """Detail.xml is the original detail with only the typed elements cut out."""
    data = path.read_bytes()
    event, _ = parse_event(data)
    expected = _inner_detail(data)
    for tag, field in TYPED_TAGS.items():
        if getattr(event.detail, field) is not None:
            expected, cut = re.subn(rf"<{tag}\b[^>]*/>", "", expected, count=1)
            assert cut == 1, f"typed {tag} not found in the original"
    assert event.detail.xml == expected


def test_atak_self_report_fields() -> None:
    event, facts = parse_event(corpus("atak_self_report"))
    assert event == Event(
        uid=VIPER,
        type="a-f-G-U-C",
        how="m-g",
        time=MAY_1_NOON + 123,
        start=MAY_1_NOON + 123,
        stale=MAY_1_NOON + 375_123,
        lat=40.2568313,
        lon=-74.1195232,
        hae=22.139,
        ce=4.9,
        le=9999999.0,
        access="Undefined",
        detail=Detail(
            contact=Contact(endpoint="*:-1:stcp", callsign="VIPER"),
            group=Group(name="Cyan", role="Team Member"),
            precision_location=PrecisionLocation(geopointsrc="GPS", altsrc="GPS"),
            status=Status(battery=88),
            takv=Takv(device="SAMSUNG SM-G998U", platform="ATAK-CIV", os="34",
                      version="5.1.0.10 (2bd1f7e6).1714489520-CIV"),
            track=Track(speed=0.0, course=254.33198547363284),
            xml="<uid Droid='VIPER'/>",
        ),
    )
    assert event.callsign == "VIPER"
    assert facts == EventFacts(callsign="VIPER", group="Cyan", role="Team Member")
    assert not facts.directed


def test_wintak_self_report_fields() -> None:
    event, _ = parse_event(corpus("wintak_self_report"))
    detail = event.detail
    assert event.time == MAY_1_NOON + 2_370  # "12:00:02.37Z"
    assert detail.takv == Takv(device="Dell Inc. Latitude 5430 Rugged", platform="WinTAK-CIV",
                               os="Microsoft Windows 10 Enterprise", version="5.1.0.56")
    assert detail.group == Group(name="Cyan", role="Team Lead")
    assert detail.status == Status(battery=100)
    assert detail.track == Track(speed=0.0, course=0.0)
    assert detail.precision_location == PrecisionLocation(geopointsrc="USER", altsrc="DTED2")
    # phone= has no protobuf field, so the contact element is kept verbatim...
    assert detail.contact is None
    assert '<contact callsign="JENNY" endpoint="*:-1:stcp" phone="800-867-5309"/>' in detail.xml


@pytest.mark.parametrize(
    ("name", "callsign"),
    [("wintak_self_report", "JENNY"), ("itak_self_report", "HAWK")],
)
def test_callsign_of_contact_kept_as_xml(name: str, callsign: str) -> None:
    """...but the event still carries a callsign, and the facts say so.

    WinTAK and iTAK add phone= to <contact>.  Routing of directed messages
    (<marti><dest callsign=/>) depends on learning each client's callsign
    from its self-report.
    """
    _, facts = parse_event(corpus(name))
    assert facts.callsign == callsign


def test_itak_self_report_fields() -> None:
    event, _ = parse_event(corpus("itak_self_report"))
    assert (event.type, event.how, event.ce) == ("a-f-G-E-V-C", "m-g", 9999999.0)
    assert event.detail.group == Group(name="Yellow", role="Team Member")
    assert event.detail.takv == Takv(device="iPhone", platform="iTAK", os="17.4.1",
                                     version="2.10.2.631")
    assert event.detail.track == Track(speed=1.26, course=87.53142786)


# Routing facts of each corpus message.
FACTS = {
    "alert_911": EventFacts(link_uids=(VIPER,), callsign="VIPER-Alert"),
    "alert_cancel": EventFacts(link_uids=(VIPER,), emergency_cancel=True),
    "atak_self_report": EventFacts(callsign="VIPER", group="Cyan", role="Team Member"),
    "chat_delivered": EventFacts(dest_callsigns=("VIPER",), link_uids=(BULLDOG,)),
    "chat_read": EventFacts(dest_uids=(VIPER,), link_uids=(JENNY,)),
    "delete_marker": EventFacts(link_uids=("9405e320-9356-41c4-8449-f46990aa17f8",)),
    "drawing_shape": EventFacts(callsign="LZ Hotel"),
    "geochat_all_rooms": EventFacts(link_uids=(VIPER,)),
    "geochat_direct": EventFacts(dest_callsigns=("BULLDOG",), link_uids=(VIPER,)),
    "itak_self_report": EventFacts(callsign="HAWK", group="Yellow", role="Team Member"),
    "marker_spot": EventFacts(link_uids=(VIPER,), callsign="R 1"),
    "ping": NO_FACTS,
    "pytak_hello": NO_FACTS,
    "takp_request": NO_FACTS,
    "wintak_self_report": EventFacts(callsign="JENNY", group="Cyan", role="Team Lead"),
}


def test_facts_table_covers_the_corpus() -> None:
    assert set(FACTS) | {"route"} == set(CORPUS_IDS)


@pytest.mark.parametrize("name", sorted(FACTS))
def test_corpus_routing_facts(name: str) -> None:
    event, facts = parse_event(corpus(name))
    expected = FACTS[name]
    assert facts == expected
    assert facts.directed == bool(expected.dest_callsigns or expected.dest_uids)
    if event.detail.contact is not None:
        assert event.callsign == facts.callsign


def test_route_links_every_waypoint_in_order() -> None:
    data = corpus("route")
    event, facts = parse_event(data)
    uids = tuple(re.findall(r"<link uid='([^']+)'", data.decode()))
    assert len(uids) == 48
    assert facts.link_uids == uids
    assert not facts.directed and not facts.emergency_cancel
    assert event.callsign == facts.callsign == "Walking Route 5"
    assert "<__routeinfo><__navcues><__navcue " in event.detail.xml


def test_geochat_keeps_escaped_remarks_verbatim() -> None:
    event, _ = parse_event(corpus("geochat_direct"))
    assert ">Meet at the CCP &amp; bring the litter &lt;2 min&gt;</remarks>" in event.detail.xml


def test_delete_and_marker_details() -> None:
    delete, _ = parse_event(corpus("delete_marker"))
    assert delete.detail.xml.endswith("<__forcedelete/>")
    marker, _ = parse_event(corpus("marker_spot"))
    assert marker.detail.status is None  # <status readiness=/> is not a battery
    assert marker.detail.xml.startswith("<status readiness='true'/><archive/>")
    assert marker.detail.precision_location == PrecisionLocation(altsrc="DTED0")


def test_ping_and_pytak_hello() -> None:
    ping, _ = parse_event(corpus("ping"))
    assert ping.type == "t-x-c-t" and ping.detail == Detail()
    hello, facts = parse_event(corpus("pytak_hello"))
    assert (hello.uid, hello.type) == ("takPing", "t-x-d-d")
    assert facts.link_uids == ()  # a delete with nothing to delete
    # Microseconds are rounded to the millisecond.
    assert hello.time == MAY_1_NOON + 750_366


def test_takp_request_detail() -> None:
    event, _ = parse_event(corpus("takp_request"))
    assert event.detail.xml == '<TakControl><TakRequest version="1"/></TakControl>'


# --- facts and typed extraction on crafted input ----------------------------------------


def test_facts_only_from_top_level_elements() -> None:
    detail = (
        '<link uid="top"/>'
        '<shape><link uid="nested-style" relation="p-c"/></shape>'
        '<marti><dest callsign="A"/><dest uid="B"/><dest callsign="C" uid="D"/>'
        '<x><dest callsign="too-deep"/></x></marti>'
        '<other><dest callsign="not-marti"/></other>'
        '<emergency cancel="TRUE">x</emergency>'
    )
    _, facts = parse_event(make_event(detail))
    assert facts == EventFacts(
        dest_callsigns=("A", "C"), dest_uids=("B", "D"), link_uids=("top",),
        emergency_cancel=True,
    )
    assert facts.directed


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        ('<contact callsign="A" phone="1"/>', "attribute without a protobuf field"),
        ('<contact callsign="A"><extra/></contact>', "child element"),
        ('<contact callsign="A">text</contact>', "text content"),
        ('<contact callsign=""/>', "empty attribute"),
        ('<status battery="-1"/>', "negative battery"),
        ('<status battery="1234567890"/>', "ten digits"),
        ('<track speed="fast" course="1"/>', "non-numeric track"),
        ('<track speed="nan" course="1"/>', "non-finite track"),
    ],
)
def test_typed_element_that_cannot_map_losslessly_stays_xml(detail: str, reason: str) -> None:
    event, _ = parse_event(make_event(detail))
    assert event.detail.xml == detail, reason
    assert all(getattr(event.detail, f) is None for f in TYPED_TAGS.values())


def test_second_typed_element_stays_xml() -> None:
    event, _ = parse_event(make_event('<track speed="1.0"/><track speed="2.0"/>'))
    assert event.detail.track == Track(speed=1.0)
    assert event.detail.xml == '<track speed="2.0"/>'


def test_xinclude_is_not_expanded() -> None:
    detail = ('<xi:include xmlns:xi="http://www.w3.org/2001/XInclude"'
              ' href="/etc/passwd" parse="text"/>')
    event, _ = parse_event(make_event(detail))
    assert event.detail.xml == detail
    assert "root:" not in repr(event)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param('<detail><a/></detail><point lat="1" lon="2"/>', id="point-after-detail"),
        pytest.param('<point lat="1" lon="2"/><detail><a/></detail><x/>',
                     id="element-after-detail"),
        pytest.param('<point lat="1" lon="2"><q/></point><detail><a/></detail>',
                     id="child-of-point"),
        pytest.param('<point lat="1" lon="2"/><detail><a/></detail><detail><b/></detail>',
                     id="two-details"),
    ],
)
def test_detail_is_only_the_detail_element(body: str) -> None:
    """Whatever surrounds <detail>, Detail.xml holds only its children.

    Refusing such an event is acceptable; accepting it and writing out
    malformed XML to every other client is not.
    """
    data = (
        b'<event version="2.0" uid="u" type="a-f-G" time="2024-05-01T12:00:00Z"'
        b' start="2024-05-01T12:00:00Z" stale="2024-05-01T12:05:00Z">'
        + body.encode() + b"</event>"
    )
    try:
        event, facts = parse_event(data)
    except CotError:
        return
    assert "detail>" not in event.detail.xml and "<point" not in event.detail.xml
    parse_detail_xml(event.detail.xml)
    assert parse_event(serialize_event(event)) == (event, facts)


# --- time ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2024-05-01T12:00:00Z", MAY_1_NOON),
        ("2024-05-01T12:00:00.123Z", MAY_1_NOON + 123),
        ("2024-05-01T12:00:02.37Z", MAY_1_NOON + 2_370),
        ("2024-05-01T12:00:00.1234567Z", MAY_1_NOON + 123),  # WinTAK: 7 digits
        ("2024-05-01T12:00:00.0006Z", MAY_1_NOON + 1),  # rounded, not truncated
        ("2024-05-01T14:00:00+02:00", MAY_1_NOON),
        ("2024-05-01T12:00:00", MAY_1_NOON),  # no zone: UTC
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_parse_time(text: str, ms: int) -> None:
    assert parse_time(text) == ms


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01T00:00:00Z",
                                  "2024-05-01T25:00:00Z", "2024-05-01T12:00:00ZZ", "1714564800"])
def test_parse_time_rejects_garbage(text: str) -> None:
    with pytest.raises(CotError, match="bad time"):
        parse_time(text)


def test_format_time_writes_tak_form() -> None:
    assert format_time(MAY_1_NOON + 5) == "2024-05-01T12:00:00.005Z"
    assert format_time(0) == "1970-01-01T00:00:00.000Z"


@given(times_ms)
def test_time_round_trip(ms: int) -> None:
    assert parse_time(format_time(ms)) == ms


@pytest.mark.parametrize(
    "text",
    [
        "1969-12-31T23:59:59Z",  # before the epoch: no uint64 for protobuf
        "9999-12-31T23:59:59-10:00",  # year 10000 in UTC: datetime cannot write it
    ],
)
def test_accepted_time_can_be_written_again(text: str) -> None:
    """A time parse_time accepts must be writable in XML and in protobuf (uint64 ms).

    Otherwise an event accepted from one peer crashes the server when it is
    written for the next one.
    """
    try:
        ms = parse_time(text)
    except CotError:
        return
    assert ms >= 0
    assert parse_time(format_time(ms)) == ms


# --- round trips of random events ----------------------------------------------------


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_serialize_parse_round_trip(case: tuple[Event, EventFacts]) -> None:
    event, facts = case
    assert parse_event(serialize_event(event)) == (event, facts)


@settings(max_examples=200)
@given(events())
def test_detail_xml_round_trip(case: tuple[Event, EventFacts]) -> None:
    event, facts = case
    detail, detail_facts = parse_detail_xml(event.detail.xml)
    assert detail == Detail(xml=event.detail.xml)
    assert detail_facts == xml_only(facts)


# --- hostile input --------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE event [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
""" + make_event("<remarks>&lol9;</remarks>")

XXE_CASES = {
    "external-general-entity": b'<!DOCTYPE event [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    + make_event("<remarks>&xxe;</remarks>"),
    "external-entity-in-attribute-position": b'<!DOCTYPE event [<!ENTITY xxe SYSTEM'
    b' "/etc/passwd">]>' + make_event('<contact callsign="&xxe;"/>'),
    "parameter-entity": b'<!DOCTYPE event [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
    + make_event(),
    "external-dtd": b'<!DOCTYPE event SYSTEM "file:///etc/passwd">' + make_event(),
}


@pytest.mark.parametrize("data", XXE_CASES.values(), ids=XXE_CASES.keys())
def test_external_entities_never_read(data: bytes) -> None:
    with pytest.raises(CotError) as info:
        parse_event(data)
    chain = [info.value, info.value.__cause__, info.value.__context__]
    assert not any("root:" in str(exc) for exc in chain if exc is not None)


def test_billion_laughs_refused_at_once() -> None:
    started = time.perf_counter()
    with pytest.raises(CotError, match="DOCTYPE"):
        parse_event(BILLION_LAUGHS)
    assert time.perf_counter() - started < 0.5


def test_deep_nesting_refused_at_once() -> None:
    depth = 100_000
    data = make_event("<a>" * depth + "</a>" * depth)
    started = time.perf_counter()
    with pytest.raises(CotError, match="nesting"):
        parse_event(data)
    assert time.perf_counter() - started < 1.0


def test_nesting_limit_is_exact() -> None:
    inside_detail = MAX_DEPTH - 2  # <event> and <detail> are the first two levels
    ok = make_event("<a>" * inside_detail + "</a>" * inside_detail)
    assert parse_event(ok)[0].detail.xml.count("<a>") == inside_detail
    too_deep = make_event("<a>" * (inside_detail + 1) + "</a>" * (inside_detail + 1))
    with pytest.raises(CotError, match="nesting"):
        parse_event(too_deep)


GOOD = make_event()
HOSTILE = {
    "empty": b"",
    "whitespace": b"  \n",
    "not-xml": b"hello world",
    "truncated": GOOD[:-3],
    "undefined-entity": make_event("<remarks>&xxe;</remarks>"),
    "root-not-event": b'<auth><cot username="u" password="p" uid="x"/></auth>',
    "two-roots": GOOD + GOOD,
    "invalid-utf8": make_event("<remarks>caf\xe9</remarks>").replace(b"\xc3\xa9", b"\xe9"),
    "nul-byte": GOOD.replace(b"u-1", b"u\x00"),
    "bad-time": GOOD.replace(b'time="2024-05-01T12:00:00Z"', b'time="noon"'),
    "bad-stale": GOOD.replace(b'stale="2024-05-01T12:05:00Z"', b'stale="2024-02-30T00:00:00Z"'),
    "empty-uid": GOOD.replace(b'uid="u-1"', b'uid=""'),
    "empty-type": GOOD.replace(b'type="a-f-G-U-C"', b'type=""'),
    "lat-nan": make_event(point='lat="NaN" lon="0"'),
    "lon-inf": make_event(point='lat="0" lon="inf"'),
    "lat-out-of-range": make_event(point='lat="90.0001" lon="0"'),
    "lon-out-of-range": make_event(point='lat="0" lon="-180.5"'),
    "lat-overflow": make_event(point='lat="1e400" lon="0"'),
    "lat-text": make_event(point='lat="north" lon="0"'),
    "hae-nan": make_event(point='lat="0" lon="0" hae="nan"'),
    "ce-inf": make_event(point='lat="0" lon="0" ce="-Infinity"'),
    "le-empty": make_event(point='lat="0" lon="0" le=""'),
    "duplicate-attribute": GOOD.replace(b'uid="u-1"', b'uid="u-1" uid="u-2"'),
    "latin1-declared": b'<?xml version="1.0" encoding="ISO-8859-1"?>'
    + make_event("<remarks>x</remarks>").replace(b">x<", b">caf\xe9<"),
}
for _missing in (b"uid", b"type", b"time", b"start", b"stale"):
    HOSTILE[f"missing-{_missing.decode()}"] = re.sub(
        rb" " + _missing + rb'="[^"]*"', b"", GOOD, count=1
    )


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_raises_cot_error(data: bytes) -> None:
    with pytest.raises(CotError):
        parse_event(data)


@pytest.mark.parametrize("battery", ["\u00b2", "\u0663"], ids=["superscript-2", "arabic-3"])
def test_non_ascii_digit_battery(battery: str) -> None:
    """str.isdigit() accepts superscripts and other scripts' digits.

    The element must either be refused or kept verbatim; it must not crash
    with ValueError or be rewritten as an ASCII number.
    """
    detail = f'<status battery="{battery}"/>'
    try:
        event, _ = parse_event(make_event(detail))
    except CotError:
        return
    assert event.detail.status is None
    assert event.detail.xml == detail


def test_missing_point_defaults() -> None:
    data = GOOD.replace(b'<point lat="1.5" lon="2.5"/>', b"")
    event, _ = parse_event(data)
    assert (event.lat, event.lon, event.hae, event.ce, event.le) == (
        0.0, 0.0, 9999999.0, 9999999.0, 9999999.0)


# --- fuzzing: only CotError escapes ------------------------------------------------------


def _only_cot_error(data: bytes) -> tuple[Event, EventFacts] | None:
    try:
        return parse_event(data)
    except CotError:
        return None


@settings(max_examples=200)
@given(st.binary(max_size=512))
@example(b"<event")
@example(b"<?xml version='1.0' encoding='UTF-16'?><event/>")
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _only_cot_error(data)


_TOKENS = st.sampled_from([
    "<event ", "</event>", "<detail>", "</detail>", "<point ", "/>", ">", "<", "</", " ",
    'uid="x" ', 'type="a" ', 'time="2024-05-01T12:00:00Z" ', 'start="2024-05-01T12:00:00Z" ',
    'stale="2024-05-01T12:00:00Z" ', 'lat="1" ', 'lon="nan" ', "<contact ", 'callsign="c" ',
    "<status ", 'battery="\u0663" ', "<track ", 'speed="1e999" ', "<marti>", "</marti>",
    "<dest ", "<link ", "<emergency ", 'cancel="true"', "&amp;", "&bogus;", "&#0;", "&#x10FFFF;",
    "<!DOCTYPE e>", "<![CDATA[", "]]>", "<!--", "-->", "<?pi?>", "\x00", "\xff", '"', "'", "=",
])


@settings(max_examples=200)
@given(st.lists(_TOKENS, max_size=40))
def test_fuzz_xml_shaped_tokens(tokens: list[str]) -> None:
    _only_cot_error("".join(tokens).encode("utf-8", "surrogateescape"))


@st.composite
def _mutated_corpus(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)).read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if action == "insert":
            data[pos:pos] = chunk
        elif action == "delete":
            del data[pos : pos + len(chunk)]
        else:
            data[pos : pos + len(chunk)] = chunk
    return bytes(data)


@settings(max_examples=200)
@given(_mutated_corpus())
def test_fuzz_mutated_corpus(data: bytes) -> None:
    """Only CotError escapes, and whatever is accepted is written out faithfully."""
    parsed = _only_cot_error(data)
    if parsed is not None:
        event, facts = parsed
        assert parse_event(serialize_event(event)) == (event, facts)

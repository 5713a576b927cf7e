"""Compact records <-> CoT through real XML (serialize_event, then parse_event)."""

from __future__ import annotations

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldc2.errors import CotError, LinkError
from fieldc2.model.cot import UNKNOWN_ERROR, Event, EventFacts
from fieldc2.model.precedence import Precedence
from fieldc2.model.radio import (
    BROADCAST,
    Announce,
    Fix,
    Order,
    OrderState,
    OrderStatus,
    PositionBatch,
    Record,
    Report,
    ReportKind,
    Roster,
    RosterEntry,
    TaskKind,
    Text,
)
from fieldc2.protocol.compact import ChannelContext, decode, encode, order_signing_bytes
from fieldc2.protocol.compact_cot import from_cot, to_cot, to_cot_all
from fieldc2.protocol.compact_geo import quantise_fix
from fieldc2.protocol.cot_xml import parse_event, serialize_event
from tests.strategies import CORPUS_DIR, event_bytes, xml_chars
from tests.test_compact import EPOCH, LAT0, LON0, NOW, fixes, quantised, record_times

VIPER = "ANDROID-589520ccfcd20f01"
BULLDOG = "ANDROID-0d2f5c1b7e3a9f44"
NOW_MS = NOW * 1000 + 456
TEAM = 6  # slots 0..5 are on the roster


def roster() -> Roster:
    return Roster([
        RosterEntry(slot=0, uid="fieldc2-relay-1", callsign="RELAY", team="Command",
                    role="HQ", cot_type="a-f-G-U-C-I"),
        RosterEntry(slot=1, uid=VIPER, callsign="VIPER", team="Cyan", role="Team Member"),
        RosterEntry(slot=2, uid=BULLDOG, callsign="BULLDOG", team="Cyan", role="Team Lead"),
        RosterEntry(slot=3, uid="S-1-5-21-2720623347", callsign="JENNY", team="Red"),
        RosterEntry(slot=4, uid="truck-1", callsign="Truck 1", cot_type="a-f-G-E-V-C"),
        RosterEntry(slot=5, uid="dog-ünit", callsign="K9 <Rex> & co"),
    ])


def ctx() -> ChannelContext:
    return ChannelContext(EPOCH, LAT0, LON0)


def through_xml(event: Event) -> tuple[Event, EventFacts]:
    """What a TAK client or the server would hand back: serialise, parse."""
    return parse_event(serialize_event(event))


def round_trip(record: Record | Fix, channel: ChannelContext | None = None) -> object:
    channel = channel or ctx()
    event = to_cot(record, roster(), channel, NOW_MS)
    assert event is not None
    parsed, facts = through_xml(event)
    return from_cot(parsed, facts, roster(), channel)


# --- strategies over the roster ------------------------------------------------

members = st.integers(0, TEAM - 1)
cot_text = st.text(xml_chars, max_size=60).filter(lambda t: len(t.encode()) <= 200)
label = st.text(xml_chars, min_size=1, max_size=10).filter(
    lambda t: len(t.encode()) <= 32 and t != "All Chat Rooms")
points = st.tuples(st.floats(-90, 90), st.floats(-180, 180))

signatures = st.one_of(st.just(b""), st.binary(min_size=64, max_size=64))
#: (flash, time, signature) of a text: time and signature only on a FLASH.
text_flashes = st.one_of(st.just((False, None, b"")),
                         st.tuples(st.just(True), record_times, signatures))
cot_texts = st.one_of(
    st.builds(lambda s, to, text, f: Text(sender=s, to=to, text=text, flash=f[0], time=f[1],
                                          signature=f[2]),
              members, members, cot_text, text_flashes),
    st.builds(lambda s, room, text, f: Text(sender=s, room=room, text=text, flash=f[0],
                                            time=f[1], signature=f[2]),
              members, st.one_of(st.just(""), label), cot_text, text_flashes),
)
cot_reports = st.builds(
    lambda s, i, k, t, p, text, c, sev, f: quantised(Report(
        sender=s, report_id=i, kind=k, time=t, lat=p[0], lon=p[1], text=text, count=c,
        severity=sev, flash=f[0], signature=f[2])),
    members, st.integers(0, 65535), st.sampled_from(ReportKind), record_times, points, cot_text,
    st.one_of(st.none(), st.integers(0, 10**6)), st.one_of(st.none(), st.integers(0, 7)),
    text_flashes)
#: Server order and task ids: anything but our decimal form of a radio id.
refs = st.one_of(st.just(""), label.filter(lambda t: not t.isdigit()))
cot_order_text = st.one_of(cot_text, st.text(xml_chars, max_size=500).filter(
    lambda t: len(t.encode()) <= 2400))
cot_orders = st.builds(
    lambda o, i, to, prec, task, text, due, p, sig, ref, task_ref: quantised(Order(
        origin=o, order_id=i, to=to, precedence=prec, task=task, text=text, due=due,
        lat=None if p is None else p[0], lon=None if p is None else p[1], signature=sig,
        ref=ref, task_ref=task_ref)),
    members, st.integers(0, 65535), st.one_of(members, st.just(BROADCAST)),
    st.sampled_from(Precedence), st.sampled_from(TaskKind), cot_order_text,
    st.one_of(st.none(), record_times), st.one_of(st.none(), points), signatures, refs,
    refs)
cot_statuses = st.builds(
    lambda s, i, state, t: OrderStatus(sender=s, order_id=i, state=state, time=t),
    members, st.integers(0, 65535), st.sampled_from(OrderState), record_times)


@settings(max_examples=300)
@given(st.one_of(cot_texts, cot_reports, cot_orders, cot_statuses))
def test_records_survive_cot_xml(record: Record) -> None:
    assert round_trip(record) == record


@settings(max_examples=300)
@given(fixes(track=4))
def test_fixes_survive_cot_xml(fix: Fix) -> None:
    fix = quantise_fix(fix)
    channel = ctx()
    back = round_trip(fix, channel)
    # Only the fix number is new: it is a sequence number of the channel.
    assert back == msgspec.structs.replace(fix, fix_no=0)
    assert round_trip(fix, channel) == msgspec.structs.replace(fix, fix_no=1)


@settings(max_examples=100)
@given(st.one_of(cot_texts, cot_reports, cot_orders, cot_statuses))
def test_radio_bytes_survive_a_trip_through_the_server(record: Record) -> None:
    """radio -> CoT XML -> radio gives the same bytes back (relay both ways)."""
    data = encode(record, ctx())
    received = decode(data, ctx(), now=NOW)
    again = round_trip(received)
    assert encode(again, ctx()) == data  # type: ignore[arg-type]


# --- the corpus: what ATAK actually sends --------------------------------------

def corpus(name: str) -> tuple[Event, EventFacts]:
    return parse_event(event_bytes((CORPUS_DIR / f"{name}.xml").read_bytes()))


def test_atak_pli_keeps_its_fields() -> None:
    event, facts = corpus("atak_self_report")
    fix = from_cot(event, facts, roster(), ctx())
    assert isinstance(fix, Fix) and fix.track == 1
    back = to_cot(fix, roster(), ctx(), NOW_MS)
    assert back is not None
    assert (back.uid, back.type, back.how) == (event.uid, event.type, event.how)
    assert back.time == event.time // 1000 * 1000 == back.start
    assert abs(back.lat - event.lat) <= 0.5e-5 and abs(back.lon - event.lon) <= 0.5e-5
    assert abs(back.hae - event.hae) <= 0.5
    assert back.detail.track is not None and event.detail.track is not None
    assert abs(back.detail.track.course - event.detail.track.course) <= 2.5
    assert back.detail.track.speed == event.detail.track.speed
    assert back.callsign == "VIPER" and back.detail.group == event.detail.group
    assert back.detail.takv is None and back.ce == UNKNOWN_ERROR  # dropped, as documented


def test_pli_without_height_or_track() -> None:
    event, facts = corpus("atak_self_report")
    bare = msgspec.structs.replace(event, hae=UNKNOWN_ERROR,
                                   detail=msgspec.structs.replace(event.detail, track=None))
    fix = from_cot(bare, facts, roster(), ctx())
    assert isinstance(fix, Fix) and fix.hae is None and fix.course is None and fix.speed is None


def test_geochat_from_atak() -> None:
    event, facts = corpus("geochat_all_rooms")
    assert from_cot(event, facts, roster(), ctx()) == Text(
        sender=1, text="Radio check, all stations")
    event, facts = corpus("geochat_direct")
    direct = from_cot(event, facts, roster(), ctx())
    assert direct == Text(sender=1, to=2, text="Meet at the CCP & bring the litter <2 min>")
    back = to_cot(direct, roster(), ctx(), NOW_MS)
    assert back is not None
    parsed, back_facts = through_xml(back)
    assert back_facts.dest_callsigns == ("BULLDOG",) and parsed.type == "b-t-f"
    assert parsed.uid.startswith(f"GeoChat.{VIPER}.{BULLDOG}.")


def test_chat_is_placed_at_the_senders_last_fix() -> None:
    channel = ctx()
    fix = Fix(track=1, fix_no=0, time=NOW, lat=46.95, lon=7.45)
    decode(encode(PositionBatch((fix,)), ctx()), channel, now=NOW)
    event = to_cot(Text(sender=1, text="here"), roster(), channel, NOW_MS)
    assert event is not None and (event.lat, event.lon) == (46.95, 7.45)


def test_marker_from_atak_becomes_a_report() -> None:
    event, facts = corpus("marker_spot")
    report = from_cot(event, facts, roster(), ctx())
    assert isinstance(report, Report)
    assert (report.sender, report.kind, report.text) == (
        1, ReportKind.SPOT, "Vehicle staging, north lot. Gate code 4471")
    back = to_cot(report, roster(), ctx(), NOW_MS)
    assert back is not None and back.type == event.type
    assert back.time == event.time // 1000 * 1000
    assert abs(back.lat - event.lat) <= 0.5e-5 and abs(back.lon - event.lon) <= 0.5e-5


@pytest.mark.parametrize("name", ["ping", "chat_delivered", "route", "delete_marker",
                                  "drawing_shape", "takp_request", "alert_911"])
def test_events_the_radio_does_not_carry(name: str) -> None:
    try:
        event, facts = corpus(name)
    except FileNotFoundError:
        pytest.fail(f"corpus file {name} missing")
    assert from_cot(event, facts, roster(), ctx()) is None


def test_unknown_slots_and_announces_have_no_event() -> None:
    assert to_cot(Announce(slot=1, uid=VIPER), roster(), ctx(), NOW_MS) is None
    assert to_cot(Text(sender=9, text="x"), roster(), ctx(), NOW_MS) is None
    assert to_cot(Text(sender=1, to=9, text="x"), roster(), ctx(), NOW_MS) is None
    assert to_cot(Fix(track=9, fix_no=0, time=NOW, lat=0, lon=0), roster(), ctx(), 0) is None
    batch = PositionBatch((Fix(track=1, fix_no=0, time=NOW, lat=0, lon=0),
                           Fix(track=9, fix_no=0, time=NOW, lat=0, lon=0)))
    assert [e.uid for e in to_cot_all(batch, roster(), ctx(), NOW_MS)] == [VIPER]


# --- orders: the signature travels end to end ----------------------------------

def test_signed_order_verifies_after_radio_and_cot() -> None:
    key = Ed25519PrivateKey.generate()
    order = Order(origin=0, order_id=4711, to=2, precedence=Precedence.IMMEDIATE,
                  task=TaskKind.SEARCH, text="Search sector B4, report clues",
                  due=NOW + 7200, lat=46.9512, lon=7.4398)
    signed = msgspec.structs.replace(
        order, signature=key.sign(order_signing_bytes(order, b"lora-ch-1")))
    received = decode(encode(signed, ctx()), ctx(), now=NOW)
    event = to_cot(received, roster(), ctx(), NOW_MS)
    assert event is not None
    parsed, facts = through_xml(event)
    assert facts.dest_callsigns == ("BULLDOG",) and b"__fieldc2_order" in serialize_event(parsed)
    back = from_cot(parsed, facts, roster(), ctx())
    assert isinstance(back, Order)
    key.public_key().verify(back.signature, order_signing_bytes(back, b"lora-ch-1"))


def order_event(**attrs: str) -> tuple[Event, EventFacts]:
    fields = {"id": "5", "origin": "fieldc2-relay-1", **attrs}
    own = "".join(f' {k}="{v}"' for k, v in fields.items())
    xml = (f'<event version="2.0" uid="o" type="b-t-f" time="2024-05-01T12:00:00Z"'
           f' start="2024-05-01T12:00:00Z" stale="2024-05-02T12:00:00Z"><point lat="0"'
           f' lon="0"/><detail><__fieldc2_order{own}/><remarks>go</remarks></detail></event>')
    return parse_event(xml.encode())


def test_server_order_ids_and_defaults() -> None:
    event, facts = order_event(id="ORD-2024-0001", task="TASK-17")
    order = from_cot(event, facts, roster(), ctx())
    assert isinstance(order, Order) and order.to == BROADCAST and order.text == "go"
    assert order.precedence == Precedence.ROUTINE and order.task == TaskKind.OTHER
    assert 0 <= order.order_id < 65536
    assert (order.ref, order.task_ref) == ("ORD-2024-0001", "TASK-17")  # signed: kept
    again = from_cot(*order_event(id="ORD-2024-0001"), roster(), ctx())
    assert isinstance(again, Order) and again.order_id == order.order_id  # stable
    # the radio id can be given as handle; a plain decimal id is the radio id itself
    handled = from_cot(*order_event(id="ORD-2024-0001", handle="7"), roster(), ctx())
    assert isinstance(handled, Order) and handled.order_id == 7 and handled.ref
    plain = from_cot(*order_event(id="42"), roster(), ctx())
    assert isinstance(plain, Order) and (plain.order_id, plain.ref) == (42, "")


@pytest.mark.parametrize("attrs", [{"precedence": "URGENT"}, {"kind": "bake"}, {"sig": "!!"},
                                   {"sig": "AAAA"}, {"lat": "1"}, {"lat": "95", "lon": "0"},
                                   {"due": "yesterday"}, {"handle": "70000"},
                                   {"handle": "x"}, {"task": "T" * 65}])
def test_malformed_order_detail_is_a_cot_error(attrs: dict[str, str]) -> None:
    with pytest.raises(CotError):
        from_cot(*order_event(**attrs), roster(), ctx())


def test_order_status_needs_its_detail() -> None:
    event, facts = corpus("ping")
    bare = msgspec.structs.replace(event, type="t-x-fieldc2-o-s")
    with pytest.raises(CotError):
        from_cot(bare, facts, roster(), ctx())
    status = OrderStatus(sender=2, order_id=5, state=OrderState.DONE, time=NOW)
    cot = to_cot(status, roster(), ctx(), NOW_MS)
    assert cot is not None
    unknown = msgspec.structs.replace(cot, detail=msgspec.structs.replace(
        cot.detail, xml=cot.detail.xml.replace(BULLDOG, "not-on-radio")))
    assert from_cot(unknown, facts, roster(), ctx()) is None
    broken = msgspec.structs.replace(cot, detail=msgspec.structs.replace(
        cot.detail, xml=cot.detail.xml.replace("done", "finished")))
    with pytest.raises(CotError):
        from_cot(broken, facts, roster(), ctx())


def with_detail(event: Event, old: str, new: str) -> Event:
    xml = event.detail.xml
    assert old in xml
    return msgspec.structs.replace(
        event, detail=msgspec.structs.replace(event.detail, xml=xml.replace(old, new)))


def test_chat_edge_cases() -> None:
    event, facts = corpus("geochat_direct")
    by_callsign = with_detail(event, f"id='{BULLDOG}'", "id='some-other-id'")
    assert from_cot(by_callsign, facts, roster(), ctx()) == Text(
        sender=1, to=2, text="Meet at the CCP & bring the litter <2 min>")
    stranger = with_detail(event, "callsign='BULLDOG'", "callsign='NOBODY'")
    stranger = with_detail(stranger, f"id='{BULLDOG}'", "id='nobody'")
    _, stranger_facts = through_xml(stranger)
    assert from_cot(stranger, stranger_facts, roster(), ctx()) is None
    unknown_sender = with_detail(event, f"uid0='{VIPER}'", "uid0='someone-else'")
    assert from_cot(unknown_sender, facts, roster(), ctx()) is None
    no_chat = msgspec.structs.replace(event, detail=msgspec.structs.replace(
        event.detail, xml="<remarks>hi</remarks>"))
    assert from_cot(no_chat, facts, roster(), ctx()) is None
    with pytest.raises(LinkError):
        to_cot(PositionBatch(()), roster(), ctx(), NOW_MS)


def test_records_from_unknown_slots_have_no_event() -> None:
    report = Report(sender=9, report_id=1, kind=ReportKind.HAZARD, time=NOW, lat=0, lon=0)
    order = Order(origin=9, order_id=1, to=1, precedence=Precedence.FLASH, task=TaskKind.MOVE)
    status = OrderStatus(sender=9, order_id=1, state=OrderState.FAILED, time=NOW)
    for record in (report, order, status, msgspec.structs.replace(order, origin=1, to=9)):
        assert to_cot(record, roster(), ctx(), NOW_MS) is None


def test_orders_resolve_recipients_by_callsign_and_need_a_known_origin() -> None:
    order = Order(origin=0, order_id=9, to=2, precedence=Precedence.PRIORITY,
                  task=TaskKind.SUPPLY, text="water to CP")
    event = to_cot(order, roster(), ctx(), NOW_MS)
    assert event is not None
    parsed, facts = through_xml(with_detail(event, f'id="{BULLDOG}"', 'id="other"'))
    assert from_cot(parsed, facts, roster(), ctx()) == order
    unknown = with_detail(event, 'origin="fieldc2-relay-1"', 'origin="elsewhere"')
    assert from_cot(unknown, facts, roster(), ctx()) is None


def test_malformed_detail_and_report_elements_are_cot_errors() -> None:
    event, facts = corpus("marker_spot")
    broken = msgspec.structs.replace(event, detail=msgspec.structs.replace(
        event.detail, xml="<unclosed>"))
    with pytest.raises(CotError):
        from_cot(broken, facts, roster(), ctx())
    report = Report(sender=1, report_id=3, kind=ReportKind.CASUALTY, time=NOW, lat=1, lon=2,
                    count=2, severity=5)
    cot = to_cot(report, roster(), ctx(), NOW_MS)
    assert cot is not None
    for old, new in (('kind="casualty"', 'kind="ghost"'), ('count="2"', 'count="x"'),
                     ('severity="5"', 'severity="9"')):
        with pytest.raises(CotError):
            from_cot(with_detail(cot, old, new), facts, roster(), ctx())


def test_foreign_tracks_are_not_hazards() -> None:
    event, facts = corpus("marker_spot")
    track = msgspec.structs.replace(event, type="a-u-G")
    assert from_cot(track, facts, roster(), ctx()) is None
    clue = msgspec.structs.replace(event, type="b-m-p-s-p-i")
    report = from_cot(clue, facts, roster(), ctx())
    assert isinstance(report, Report) and report.kind == ReportKind.CLUE


def test_flash_marks_read_back() -> None:
    """The relay's verdict: verified FLASH stays FLASH, a demoted one is ordinary."""
    flash = Text(sender=1, text="man down", flash=True, time=NOW, signature=bytes(64))
    event = to_cot(flash, roster(), ctx(), NOW_MS)
    assert event is not None and "<__fieldc2_flash time=" in event.detail.xml
    verified = event.detail.xml.replace("<__fieldc2_flash", '<__fieldc2_flash verified="true"')
    parsed, facts = through_xml(msgspec.structs.replace(
        event, detail=msgspec.structs.replace(event.detail, xml=verified)))
    assert from_cot(parsed, facts, roster(), ctx()) == flash
    plain = to_cot(Text(sender=1, text="man down"), roster(), ctx(), NOW_MS)
    assert plain is not None and "__fieldc2_flash" not in plain.detail.xml
    demoted = plain.detail.xml + '<__fieldc2_flash verified="false" reason="signature"/>'
    parsed, facts = through_xml(msgspec.structs.replace(
        plain, detail=msgspec.structs.replace(plain.detail, xml=demoted)))
    assert from_cot(parsed, facts, roster(), ctx()) == Text(sender=1, text="man down")

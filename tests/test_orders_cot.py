"""Reading receipts, replies and status events; the CoT a plan sends."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fieldc2.errors import CotError
from fieldc2.model.cot import NO_FACTS, Detail, Event
from fieldc2.orders import cot
from fieldc2.orders.compose import compose
from fieldc2.orders.model import Signal, message_id
from fieldc2.protocol.cot_xml import XML_INVALID, parse_event
from tests.orders_helpers import incident, plan

CORPUS = Path(__file__).parent / "corpus"
CP = cot.Sender(uid="fieldc2-cp", callsign="COMMAND POST")


def corpus(name: str) -> bytes:
    data = (CORPUS / name).read_bytes()
    return data[data.index(b"<event"):]


def test_atak_delivered_receipt_names_the_message_and_reader() -> None:
    event, facts = parse_event(corpus("chat_delivered.xml"))
    report = cot.read_report(event, facts, "", CP)
    assert report == cot.Receipt(message_id="3d3f1c9a-52e4-4b1e-a0b2-7d9c6e8f1a24",
                                 signal=Signal.DELIVERED, by="ANDROID-0d2f5c1b7e3a9f44")


def test_wintak_read_receipt_acknowledges_and_the_connection_names_the_reader() -> None:
    event, facts = parse_event(corpus("chat_read.xml"))
    report = cot.read_report(event, facts, "S-conn", CP)
    assert report == cot.Receipt(message_id="3d3f1c9a-52e4-4b1e-a0b2-7d9c6e8f1a24",
                                 signal=Signal.ACKNOWLEDGED, by="S-conn")
    alone = cot.read_report(event, facts, "", CP)
    assert isinstance(alone, cot.Receipt)
    assert alone.by == "S-1-5-21-2720623347-3037847324-4167270909-1002"


def test_chat_between_devices_is_no_reply() -> None:
    event, facts = parse_event(corpus("geochat_direct.xml"))
    assert cot.read_report(event, facts, "ANDROID-589520ccfcd20f01", CP) is None
    for name in ("marker_spot.xml", "atak_self_report.xml", "alert_911.xml"):
        assert cot.read_report(*parse_event(corpus(name)), "x", CP) is None


@pytest.mark.parametrize(("text", "signal"), [
    ("ACK", Signal.ACKNOWLEDGED), ("wilco", Signal.ACKNOWLEDGED),
    ("Roger that", Signal.ACKNOWLEDGED),
    ("STARTED", Signal.STARTED), ("on scene now", Signal.STARTED),
    ("Done", Signal.DONE), ("complete, 2 found", Signal.DONE),
    ("UNABLE to complete", Signal.FAILED), ("roger, failed: bridge out", Signal.FAILED),
])
def test_reply_keywords(text: str, signal: Signal) -> None:
    data = corpus("geochat_direct.xml").replace(
        b"Meet at the CCP &amp; bring the litter &lt;2 min&gt;", text.encode()).replace(
        b"dest callsign='BULLDOG'", b"dest callsign='COMMAND POST'")
    report = cot.read_report(*parse_event(data), "ANDROID-589520ccfcd20f01", CP)
    assert report == cot.Reply(signal=signal, by="ANDROID-589520ccfcd20f01", text=text)


def test_reply_naming_an_order_counts_even_to_all_chat() -> None:
    data = corpus("geochat_all_rooms.xml")
    event, facts = parse_event(data)
    assert cot.read_report(event, facts, "dev", CP) is None
    named = data.replace(event.detail.xml.split("<remarks", 1)[1].split(">", 1)[1]
                         .split("</remarks")[0].encode(), b"done ord-1a2b3c4d")
    report = cot.read_report(*parse_event(named), "dev", CP)
    assert report == cot.Reply(signal=Signal.DONE, by="dev", text="done ord-1a2b3c4d",
                               order_id="ORD-1A2B3C4D")


def test_status_event_contract_shape() -> None:
    data = (b'<event version="2.0" uid="s1" type="t-x-fieldc2-o-s" how="h-g-i-g-o"'
            b' time="2027-01-15T08:00:00Z" start="2027-01-15T08:00:00Z"'
            b' stale="2027-01-15T08:10:00Z"><point lat="0" lon="0" hae="0" ce="0" le="0"/>'
            b'<detail><__fieldc2_order_status id="ORD-1A2B3C4D" state="in_progress"'
            b' by="RELAYED-DEV" time="2027-01-15T07:59:00Z"/></detail></event>')
    report = cot.read_report(*parse_event(data), "", CP)
    at = int(datetime(2027, 1, 15, 7, 59, tzinfo=UTC).timestamp())
    assert report == cot.StatusReport(order_id="ORD-1A2B3C4D", signal=Signal.STARTED,
                                      by="RELAYED-DEV", at=at)
    bad = data.replace(b'state="in_progress"', b'state="sleeping"')
    assert cot.read_report(*parse_event(bad), "", CP) is None


def test_built_events_are_valid_cot_and_directed() -> None:
    inc = incident({"a": ("dev1", "dev2")})
    orders, warnings = compose(inc, plan({"a": ("T1", "T2", "T3")}), now=1, origin=CP.uid)
    assert warnings == []
    for order in orders:
        marker, facts = cot.task_marker(inc.task(order.task_id), order, 1000, 2000)
        assert facts.dest_uids == ("dev1", "dev2")
        assert marker.uid == f"fieldc2.task.{order.task_id}"
    chat_event, facts = cot.order_chat(orders[0], "dev1", "ALPHA", CP, "c2ln", 1000, 2000)
    assert facts.dest_uids == ("dev1",)
    assert chat_event.uid == f"GeoChat.{CP.uid}.dev1.{message_id(orders[0].id, 'dev1')}"
    assert "__fieldc2_order" in chat_event.detail.xml
    # Our own chat, seen again by the observer, is not a reply from anyone but us.
    report = cot.read_report(chat_event, facts, "", CP)
    assert report is None or report.by == CP.uid


def test_teams_without_devices_are_warned_about() -> None:
    orders, warnings = compose(incident({"a": ()}), plan({"a": ("T1",)}), now=1, origin="o")
    assert orders == [] and "tak_uids" in warnings[0]


def test_unreadable_detail_is_a_cot_error() -> None:
    with pytest.raises(CotError):
        cot.detail_elements("<a>")
    assert cot.read_report(parse_event(corpus("ping.xml"))[0], NO_FACTS, "", CP) is None


@given(st.text(max_size=80).map(lambda s: XML_INVALID.sub("", s)))
def test_any_reply_text_reads_without_error(text: str) -> None:
    """Whatever a device types, reading it raises nothing; it is a reply only
    when a keyword is in it, and the strongest keyword wins."""
    detail = (f'<__chat id="{CP.uid}" chatroom="CP"><chatgrp uid0="dev" uid1="{CP.uid}"/>'
              f"</__chat><remarks>{escape(text)}</remarks>")
    event = Event(uid="GeoChat.dev.x.1", type="b-t-f", time=0, start=0, stale=1,
                  detail=Detail(xml=detail))
    report = cot.read_report(event, NO_FACTS, "dev", CP)
    matches = [signal for signal, pattern in cot.KEYWORDS if pattern.search(text)]
    if not matches:
        assert report is None
    else:
        assert isinstance(report, cot.Reply) and report.signal is matches[0]
        assert report.text == text


@given(st.binary(max_size=200))
def test_only_cot_errors_escape_the_detail_reader(data: bytes) -> None:
    with contextlib.suppress(CotError):
        cot.detail_elements(data.decode("utf-8", "replace"))


def test_long_search_tracks_are_split_not_thinned() -> None:
    coords = tuple((7.0 + i * 1e-4, 45.0 + (i % 2) * 1e-3) for i in range(450))
    parts = cot.track_parts(coords)
    assert [len(p) for p in parts] == [cot.MAX_VERTICES, cot.MAX_VERTICES, 52]
    assert parts[0][-1] == parts[1][0] and parts[1][-1] == parts[2][0]   # joined end to start
    rejoined = parts[0] + parts[1][1:] + parts[2][1:]
    assert rejoined == coords                                       # every turn kept
    assert cot.track_parts(coords[:2]) == [coords[:2]]

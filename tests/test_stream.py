"""CotStream: format detection, v1 negotiation, rejects and the state table."""

from __future__ import annotations

import itertools

import pytest
import takproto
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from fieldc2.errors import ProtocolError
from fieldc2.protocol.cot_xml import parse_event
from fieldc2.protocol.framing import XmlFramer
from fieldc2.protocol.stream import (
    _TRANSITIONS,
    MAX_PENDING_EVENTS,
    MAX_REJECTS,
    REJECT_WINDOW,
    Closing,
    CotStream,
    Format,
    Input,
    Received,
    Rejected,
    State,
    StreamEvent,
    Switched,
)
from fieldc2.protocol.tak_v1 import stream_frame
from tests.strategies import CORPUS_DIR, corpus_files, event_bytes

NOW = 1_714_564_800.0  # seconds; the stream never reads a clock of its own


def corpus(name: str) -> bytes:
    return (CORPUS_DIR / f"{name}.xml").read_bytes()


def v1(name: str) -> bytes:
    """A corpus message as another implementation (takproto) frames it for a stream."""
    return bytes(takproto.xml2proto(corpus(name), takproto.TAKProtoVer.STREAM))


def events_of(stream: CotStream) -> list[StreamEvent]:
    out = []
    while (event := stream.next_event()) is not None:
        out.append(event)
    return out


def sent_events(stream: CotStream) -> list[tuple[str, str]]:
    """(type, detail xml) of every control message the stream wants sent."""
    framer = XmlFramer()
    framer.feed(stream.data_to_send())
    out = []
    while (frame := framer.next_frame()) is not None:
        event, _ = parse_event(frame)
        out.append((event.type, event.detail.xml))
    return out


def takp_request(version: str, quote: str = '"') -> bytes:
    return corpus("takp_request").replace(
        b'<TakRequest version="1"/>', f"<TakRequest version={quote}{version}{quote}/>".encode()
    )


BAD_XML = b'<event version="2.0" uid="x" type="a-f-G"><point lat="0" lon="0"/></event>'


# --- detection and negotiation ------------------------------------------------------------


def test_xml_client_is_offered_v1_after_its_first_byte() -> None:
    stream = CotStream()
    stream.receive_data(b"<", NOW)
    assert stream.state is State.XML and stream.format is Format.XML
    offers = sent_events(stream)
    assert len(offers) == 1
    cot_type, detail = offers[0]
    assert cot_type == "t-x-takp-v"
    assert '<TakProtocolSupport version="1"/>' in detail
    assert events_of(stream) == []
    stream.receive_data(corpus("atak_self_report")[1:], NOW)
    assert stream.data_to_send() == b""  # offered at most once
    (received,) = events_of(stream)
    assert isinstance(received, Received)
    assert received.event.callsign == "VIPER"
    assert received.xml == event_bytes(corpus("atak_self_report"))


def test_offer_times_come_from_now() -> None:
    stream = CotStream()
    stream.receive_data(b"<", NOW)
    framer = XmlFramer()
    framer.feed(stream.data_to_send())
    frame = framer.next_frame()
    assert frame is not None
    offer, _ = parse_event(frame)
    assert offer.time == offer.start == int(NOW * 1000)
    assert offer.stale > offer.time


def test_no_offer_when_v1_is_disabled() -> None:
    stream = CotStream(offer_v1=False)
    stream.receive_data(corpus("takp_request"), NOW)
    assert sent_events(stream) == [
        ("t-x-takp-r", '<TakControl><TakResponse status="false"/></TakControl>')]
    assert stream.state is State.XML
    assert events_of(stream) == []


def test_v1_request_switches_both_directions() -> None:
    stream = CotStream()
    stream.receive_data(corpus("atak_self_report") + corpus("takp_request"), NOW)
    first, switched = events_of(stream)
    assert isinstance(first, Received) and first.event.uid == "ANDROID-589520ccfcd20f01"
    assert switched == Switched(Format.PROTO)
    assert [t for t, _ in sent_events(stream)] == ["t-x-takp-v", "t-x-takp-r"]
    assert stream.state is State.PROTO and stream.format is Format.PROTO

    stream.receive_data(v1("geochat_direct") + v1("atak_self_report"), NOW + 1)
    chat, report = events_of(stream)
    assert isinstance(chat, Received) and isinstance(report, Received)
    assert chat.xml is None and chat.payload is not None
    assert chat.event.type == "b-t-f"
    assert chat.facts.dest_callsigns == ("BULLDOG",)
    # takproto re-serialises unknown detail (<uid Droid="VIPER" />); the rest is equal.
    assert replace(report.event, detail=replace(report.event.detail, xml="")) == replace(
        first.event, detail=replace(first.event.detail, xml=""))


def test_response_to_v1_request_says_true() -> None:
    stream = CotStream()
    stream.receive_data(corpus("takp_request"), NOW)
    assert sent_events(stream)[-1] == (
        "t-x-takp-r", '<TakControl><TakResponse status="true"/></TakControl>')


def test_v1_frames_in_the_same_read_as_the_request() -> None:
    stream = CotStream()
    stream.receive_data(corpus("takp_request") + v1("alert_911") + v1("alert_cancel"), NOW)
    switched, alert, cancel = events_of(stream)
    assert switched == Switched(Format.PROTO)
    assert isinstance(alert, Received) and alert.event.type == "b-a-o-tbl"
    assert isinstance(cancel, Received) and cancel.facts.emergency_cancel


def test_v1_request_as_protocol_txt_writes_it() -> None:
    """protocol.txt (and ATAK, which writes XML with single quotes) sends
    ``<TakRequest version='1'/>``; that is the same request."""
    stream = CotStream()
    stream.receive_data(takp_request("1", quote="'"), NOW)
    assert events_of(stream) == [Switched(Format.PROTO)]
    assert sent_events(stream)[-1] == (
        "t-x-takp-r", '<TakControl><TakResponse status="true"/></TakControl>')


@pytest.mark.parametrize("version", ["2", "0", "10"])
def test_other_versions_are_declined_and_xml_goes_on(version: str) -> None:
    stream = CotStream()
    stream.receive_data(takp_request(version), NOW)
    assert sent_events(stream)[-1] == (
        "t-x-takp-r", '<TakControl><TakResponse status="false"/></TakControl>')
    assert stream.state is State.XML
    assert events_of(stream) == []
    stream.receive_data(corpus("ping"), NOW)
    (ping,) = events_of(stream)
    assert isinstance(ping, Received) and ping.event.type == "t-x-c-t"


def test_v1_client_without_negotiation() -> None:
    """pytak with TAK_PROTO=1 starts straight in v1 framing."""
    stream = CotStream()
    stream.receive_data(v1("pytak_hello") + v1("atak_self_report"), NOW)
    switched, hello, report = events_of(stream)
    assert switched == Switched(Format.PROTO)
    assert isinstance(hello, Received) and hello.event.uid == "takPing"
    assert isinstance(report, Received) and report.event.callsign == "VIPER"
    assert stream.data_to_send() == b""  # no offer to a v1 client


@pytest.mark.parametrize("first", [b"<", b"\xbf"])
def test_leading_whitespace_before_the_first_byte(first: bytes) -> None:
    stream = CotStream()
    stream.receive_data(b"\r\n ", NOW)
    assert stream.state is State.DETECT
    data = corpus("ping") if first == b"<" else v1("ping")
    stream.receive_data(b"\n" + data, NOW)
    assert [type(e) for e in events_of(stream) if not isinstance(e, Switched)] == [Received]


@settings(max_examples=100)
@given(st.binary(min_size=1, max_size=20).filter(
    lambda data: data.lstrip(b" \t\r\n")[:1] not in (b"", b"<", b"\xbf")))
def test_unknown_first_byte_closes(data: bytes) -> None:
    stream = CotStream()
    stream.receive_data(data, NOW)
    assert stream.state is State.CLOSED
    (closing,) = events_of(stream)
    assert isinstance(closing, Closing)
    stream.receive_data(corpus("ping"), NOW)
    assert events_of(stream) == []
    assert stream.data_to_send() == b""


# --- rejects --------------------------------------------------------------------------------


def test_a_bad_message_is_rejected_and_the_stream_goes_on() -> None:
    stream = CotStream()
    stream.receive_data(BAD_XML + corpus("ping"), NOW)
    rejected, ping = events_of(stream)
    assert isinstance(rejected, Rejected) and "time" in rejected.reason
    assert isinstance(ping, Received)
    assert stream.rejected_total == 1


def test_garbage_between_events_is_rejected_not_fatal() -> None:
    stream = CotStream()
    stream.receive_data(corpus("ping") + b"<auth><cot username='u'/></auth>" + corpus("ping"), NOW)
    kinds = [type(e) for e in events_of(stream)]
    assert kinds.count(Rejected) == 1 and Closing not in kinds
    assert kinds[0] is Received


def test_unparseable_battery_is_rejected_not_raised() -> None:
    """Bad input never raises out of the stream (str.isdigit() accepts '²')."""
    bad = corpus("atak_self_report").replace(b"battery='88'", "battery='\u00b2'".encode())
    stream = CotStream()
    stream.receive_data(bad + corpus("ping"), NOW)
    assert isinstance(events_of(stream)[-1], Received)


def test_more_than_max_rejects_within_the_window_closes() -> None:
    stream = CotStream()
    for index in range(MAX_REJECTS):
        stream.receive_data(BAD_XML, NOW + index * 0.1)
    assert all(isinstance(e, Rejected) for e in events_of(stream))
    assert stream.state is State.XML
    stream.receive_data(BAD_XML, NOW + REJECT_WINDOW - 1)
    rejected, closing = events_of(stream)
    assert isinstance(rejected, Rejected) and isinstance(closing, Closing)
    assert stream.state is State.CLOSED
    stream.receive_data(corpus("ping"), NOW + REJECT_WINDOW)
    assert events_of(stream) == []


def test_many_rejects_in_one_read_close() -> None:
    stream = CotStream()
    stream.receive_data(BAD_XML * (MAX_REJECTS + 5) + corpus("ping"), NOW)
    assert [type(e) for e in events_of(stream)] == [Rejected] * (MAX_REJECTS + 1) + [Closing]


def test_rejects_spread_over_time_do_not_close() -> None:
    stream = CotStream()
    spacing = REJECT_WINDOW / MAX_REJECTS * 1.01
    for index in range(3 * MAX_REJECTS):
        stream.receive_data(BAD_XML, NOW + index * spacing)
    out = events_of(stream)
    assert len(out) == 3 * MAX_REJECTS
    assert all(isinstance(e, Rejected) for e in out)
    assert stream.state is State.XML
    assert stream.rejected_total == 3 * MAX_REJECTS


def test_v1_rejects_count_too() -> None:
    stream = CotStream()
    junk = stream_frame(b"\x12\x05\x0a\x03abc")  # cotEvent without uid
    stream.receive_data(stream_frame(b"") + junk * (MAX_REJECTS + 1), NOW)
    out = events_of(stream)
    assert out[0] == Switched(Format.PROTO)
    assert [type(e) for e in out[1:]] == [Rejected] * (MAX_REJECTS + 1) + [Closing]


# --- fatal framing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\xbf" + b"\xff" * 10,  # varint longer than 10 bytes
        b"\xbf\xff\xff\xff\x7f",  # 256 MiB frame announced
        stream_frame(b"") + b"<event",  # XML after v1
    ],
    ids=["long-varint", "oversize", "bad-magic"],
)
def test_bad_v1_header_closes(data: bytes) -> None:
    stream = CotStream()
    stream.receive_data(data, NOW)
    out = events_of(stream)
    assert out[0] == Switched(Format.PROTO)
    assert isinstance(out[-1], Closing)
    assert stream.state is State.CLOSED


def test_xml_without_end_closes_once_hopeless() -> None:
    stream = CotStream()
    stream.receive_data(b"<event ", NOW)
    chunk = b"A" * (64 * 1024)
    for index in range(40):
        stream.receive_data(chunk, NOW + index)
        if stream.state is State.CLOSED:
            break
    out = events_of(stream)
    assert isinstance(out[-1], Closing)
    assert all(isinstance(e, Rejected) for e in out[:-1])


# --- queue limit ---------------------------------------------------------------------------


def test_pending_events_are_bounded_and_all_delivered() -> None:
    stream = CotStream()
    count = MAX_PENDING_EVENTS + 1000
    stream.receive_data(corpus("ping") * count, NOW)
    assert len(stream._events) <= MAX_PENDING_EVENTS
    delivered = events_of(stream)
    assert len(delivered) == count
    assert all(isinstance(e, Received) for e in delivered)


# --- the state table -------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "what"), list(itertools.product(State, Input)),
                         ids=lambda x: x.name)
def test_transition_table(state: State, what: Input) -> None:
    stream = CotStream()
    stream.state = state
    if (state, what) in _TRANSITIONS:
        stream._move(what)
        assert stream.state is _TRANSITIONS[(state, what)]
    else:
        with pytest.raises(ProtocolError):
            stream._move(what)
        assert stream.state is state


def test_closed_is_final() -> None:
    assert not any(state is State.CLOSED for state, _ in _TRANSITIONS)


# --- fuzzing ------------------------------------------------------------------------------

_CORPUS = [path.read_bytes() for path in corpus_files()]
_pieces = st.one_of(
    st.sampled_from(_CORPUS),
    st.sampled_from(_CORPUS).map(lambda data: bytes(
        takproto.xml2proto(data, takproto.TAKProtoVer.STREAM))),
    st.binary(max_size=40),
    st.just(BAD_XML),
)


@settings(max_examples=200)
@given(st.sampled_from([b"", b"<", b"\xbf", b" "]),
       st.lists(_pieces, max_size=8),
       st.lists(st.integers(1, 200), min_size=1, max_size=5))
def test_fuzz_stream_never_raises(first: bytes, pieces: list[bytes], sizes: list[int]) -> None:
    data = first + b"".join(pieces)
    stream = CotStream()
    out: list[StreamEvent] = []
    pos, now = 0, NOW
    for size in itertools.cycle(sizes):
        if pos >= len(data):
            break
        stream.receive_data(data[pos : pos + size], now)
        out += events_of(stream)
        pos, now = pos + size, now + 0.5
    assert all(isinstance(e, Received | Rejected | Switched | Closing) for e in out)
    closings = [i for i, e in enumerate(out) if isinstance(e, Closing)]
    assert closings in ([], [len(out) - 1])
    assert (stream.state is State.CLOSED) == bool(closings)


def test_offer_to_a_silent_peer_is_sent_once() -> None:
    stream = CotStream()
    stream.offer(NOW)
    assert [t for t, _ in sent_events(stream)] == ["t-x-takp-v"]
    stream.receive_data(corpus("ping"), NOW + 5)
    stream.offer(NOW + 10)
    assert stream.data_to_send() == b""
    assert stream.state is State.XML


def test_no_offer_to_a_v1_peer() -> None:
    stream = CotStream()
    stream.receive_data(v1("ping"), NOW)
    stream.offer(NOW + 5)
    assert stream.data_to_send() == b""

"""Stream framing: where one message ends, whatever the reads look like."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldc2.errors import FramingError, OversizeError
from fieldc2.protocol.cot_xml import parse_event
from fieldc2.protocol.framing import MAX_DISCARD, ProtoStreamFramer, XmlFramer
from fieldc2.protocol.tak_v1 import event_to_payload, stream_frame
from tests.strategies import corpus_files, event_bytes

Framer = XmlFramer | ProtoStreamFramer

CORPUS = [path.read_bytes() for path in corpus_files()]
EVENTS = [event_bytes(data) for data in CORPUS]
# Real clients differ in what comes between messages: nothing (as protocol.txt
# asks), a newline, CRLF, or stray whitespace.
SEPARATORS = [b"", b"\n", b"\r\n", b"  \n\t"]
XML_STREAM = b"".join(
    data + sep for data, sep in zip(CORPUS, itertools.cycle(SEPARATORS), strict=False)
)

PAYLOADS = [event_to_payload(parse_event(data)[0]) for data in CORPUS] + [b""]
PROTO_STREAM = b"".join(stream_frame(payload) for payload in PAYLOADS)


def drain(framer: Framer, limit: int = 10_000) -> list[bytes | type[Exception]]:
    """Every frame (or error class) available now, in order."""
    out: list[bytes | type[Exception]] = []
    for _ in range(limit):
        try:
            frame = framer.next_frame()
        except FramingError as exc:
            out.append(type(exc))
            if isinstance(framer, ProtoStreamFramer) or framer.hopeless:
                return out  # not resumable
            continue
        if frame is None:
            return out
        out.append(frame)
    raise AssertionError("framer never asked for more data")


def feed_all(framer: Framer, chunks: list[bytes]) -> list[bytes | type[Exception]]:
    out: list[bytes | type[Exception]] = []
    for chunk in chunks:
        framer.feed(chunk)
        out += drain(framer)
    return out


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, pos = [], 0
    for size in itertools.cycle(sizes):
        if pos >= len(data):
            return chunks
        chunks.append(data[pos : pos + size])
        pos += size
    raise AssertionError("unreachable")


def event_of_size(size: int) -> bytes:
    """A valid event of exactly ``size`` bytes."""
    head = (b'<event version="2.0" uid="big" type="b-m-r" time="2024-05-01T12:00:00Z"'
            b' start="2024-05-01T12:00:00Z" stale="2024-05-01T12:05:00Z">'
            b'<point lat="0" lon="0"/><detail><remarks>')
    tail = b"</remarks></detail></event>"
    return head + b"x" * (size - len(head) - len(tail)) + tail


# --- XML framing ----------------------------------------------------------------------


def test_xml_corpus_in_one_read() -> None:
    assert feed_all(XmlFramer(), [XML_STREAM]) == EVENTS


def test_xml_corpus_one_byte_at_a_time() -> None:
    assert feed_all(XmlFramer(), split(XML_STREAM, [1])) == EVENTS


def test_xml_split_at_every_byte_boundary() -> None:
    for cut in range(len(XML_STREAM) + 1):
        frames = feed_all(XmlFramer(), [XML_STREAM[:cut], XML_STREAM[cut:]])
        assert frames == EVENTS, f"split at byte {cut}"


@settings(max_examples=200)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=20))
def test_xml_random_chunking(sizes: list[int]) -> None:
    assert feed_all(XmlFramer(), split(XML_STREAM, sizes)) == EVENTS


@pytest.mark.parametrize(
    "prefix",
    [
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>',
        b"<?xml version='1.0' encoding='UTF-8' standalone='yes'?>\n",
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes" ?>\r\n',
        b'<?xml version="1.0"?>\n<?xml version="1.0"?>\n',
        b"\n\n  ",
    ],
)
def test_declarations_and_whitespace_before_each_event(prefix: bytes) -> None:
    stream = b"".join(prefix + event for event in EVENTS[:3])
    assert feed_all(XmlFramer(), [stream]) == EVENTS[:3]
    assert feed_all(XmlFramer(), split(stream, [7])) == EVENTS[:3]


def test_many_events_in_one_read() -> None:
    ping = EVENTS[CORPUS.index(next(d for d in CORPUS if b"t-x-c-t" in d))]
    assert feed_all(XmlFramer(), [ping * 5000]) == [ping] * 5000


def test_event_exactly_at_the_limit_is_accepted() -> None:
    limit = 4096
    event = event_of_size(limit)
    assert feed_all(XmlFramer(limit), [event]) == [event]
    assert feed_all(XmlFramer(limit), split(event, [100])) == [event]


def test_complete_oversize_event_is_skipped() -> None:
    limit = 4096
    big, good = event_of_size(limit + 1), EVENTS[0]
    assert feed_all(XmlFramer(limit), [big + good]) == [OversizeError, good]


def test_streamed_oversize_event_is_skipped_up_to_its_end() -> None:
    limit = 4096
    big, good = event_of_size(5 * limit), EVENTS[0]
    out = feed_all(XmlFramer(limit), split(big + good, [1000]))
    assert out == [OversizeError, good]


@pytest.mark.parametrize(
    "garbage",
    [
        b"garbage\x00\x01",
        b"<auth><cot username='viper' password='x' uid='ANDROID-589520ccfcd20f01'/></auth>",
    ],
    ids=["binary", "auth"],
)
def test_garbage_before_an_event_is_reported_and_the_event_framed(garbage: bytes) -> None:
    first, second = EVENTS[0], EVENTS[1]
    out = feed_all(XmlFramer(), [first + garbage + second])
    assert out == [first, FramingError, second]


def test_ten_megabytes_without_an_end_stays_bounded() -> None:
    chunk = 64 * 1024
    framer = XmlFramer()
    errors: list[type[Exception]] = []
    data = b"<event " + b"A" * (chunk - 7)
    for _ in range(10 * 1024 * 1024 // chunk):
        framer.feed(data)
        try:
            assert framer.next_frame() is None
        except FramingError as exc:
            errors.append(type(exc))
        assert len(framer._buf) <= framer.max_size + chunk
        data = b"A" * chunk
    assert framer.hopeless
    assert errors[0] is OversizeError
    assert FramingError in errors[1:]
    assert MAX_DISCARD < 10 * 1024 * 1024


def test_hopeless_only_after_max_discard() -> None:
    framer = XmlFramer(1024)
    framer.feed(b"<event " + b"A" * 2000)
    with pytest.raises(OversizeError):
        framer.next_frame()
    assert not framer.hopeless
    framer.feed(b"A" * (MAX_DISCARD // 2))
    assert framer.next_frame() is None
    assert not framer.hopeless
    framer.feed(b"A" * MAX_DISCARD)
    with pytest.raises(FramingError):
        framer.next_frame()
    assert framer.hopeless


def test_trickled_200k_event_is_linear() -> None:
    event = event_of_size(200 * 1024)
    framer = XmlFramer()
    started = time.perf_counter()
    frames = []
    for index in range(len(event)):
        framer.feed(event[index : index + 1])
        frame = framer.next_frame()
        if frame is not None:
            frames.append(frame)
    elapsed = time.perf_counter() - started
    assert frames == [event]
    assert elapsed < 1.0, f"{elapsed:.2f} s: scanning is not linear"


def test_pending_hands_over_unframed_bytes() -> None:
    framer = XmlFramer()
    framer.feed(EVENTS[0] + b"\xbf\x05hello")
    assert framer.next_frame() == EVENTS[0]
    assert framer.pending() == b"\xbf\x05hello"
    assert framer.pending() == b""
    assert framer.next_frame() is None


# --- TAK v1 stream framing ------------------------------------------------------------


def test_proto_corpus_in_one_read() -> None:
    assert feed_all(ProtoStreamFramer(), [PROTO_STREAM]) == PAYLOADS


def test_proto_one_byte_at_a_time() -> None:
    assert feed_all(ProtoStreamFramer(), split(PROTO_STREAM, [1])) == PAYLOADS


def test_proto_split_at_every_byte_boundary() -> None:
    for cut in range(len(PROTO_STREAM) + 1):
        frames = feed_all(ProtoStreamFramer(), [PROTO_STREAM[:cut], PROTO_STREAM[cut:]])
        assert frames == PAYLOADS, f"split at byte {cut}"


@settings(max_examples=200)
@given(st.lists(st.integers(1, 500), min_size=1, max_size=20))
def test_proto_random_chunking(sizes: list[int]) -> None:
    assert feed_all(ProtoStreamFramer(), split(PROTO_STREAM, sizes)) == PAYLOADS


def test_proto_bad_magic_after_a_good_frame() -> None:
    framer = ProtoStreamFramer()
    framer.feed(stream_frame(b"ok") + b"<event")
    assert framer.next_frame() == b"ok"
    with pytest.raises(FramingError, match="0x3c"):
        framer.next_frame()


def test_proto_oversize_is_refused_from_the_header_alone() -> None:
    framer = ProtoStreamFramer(max_size=1000)
    framer.feed(b"\xbf\xe9\x07")  # length 1001, no payload yet
    with pytest.raises(OversizeError):
        framer.next_frame()
    framer = ProtoStreamFramer(max_size=1000)
    framer.feed(b"\xbf\xe8\x07" + b"x" * 1000)  # exactly the limit
    assert framer.next_frame() == b"x" * 1000


def test_proto_overlong_varint_is_refused() -> None:
    framer = ProtoStreamFramer()
    framer.feed(b"\xbf" + b"\x80" * 9)
    assert framer.next_frame() is None  # could still end
    framer.feed(b"\x80")
    with pytest.raises(FramingError):
        framer.next_frame()


def test_proto_trickled_200k_payload_is_linear() -> None:
    payload = b"p" * (200 * 1024)
    data = stream_frame(payload)
    framer = ProtoStreamFramer()
    started = time.perf_counter()
    frames = []
    for index in range(len(data)):
        framer.feed(data[index : index + 1])
        frame = framer.next_frame()
        if frame is not None:
            frames.append(frame)
    elapsed = time.perf_counter() - started
    assert frames == [payload]
    assert elapsed < 1.0, f"{elapsed:.2f} s: framing is not linear"

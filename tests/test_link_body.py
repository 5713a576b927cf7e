"""The link body format: round trips, sizes per record kind, and fuzzing."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldc2.errors import RadioFrameError
from fieldc2.link.body import (
    ACK_TIME_MODULUS,
    SEQ_MODULUS,
    AckRecord,
    DataRecord,
    DigestRecord,
    FragmentRecord,
    Record,
    SkipRecord,
    decode_body,
    encode_body,
    record_size,
)
from fieldc2.link.endpoint import LinkEndpoint
from fieldc2.link.types import LinkConfig, Message
from fieldc2.model.precedence import Precedence

slots = st.integers(0, 254)
dests = st.integers(0, 255)
seqs = st.integers(0, SEQ_MODULUS - 1)
precs = st.integers(0, 3)
payloads = st.binary(max_size=60)

data_records = st.builds(DataRecord, precs, payloads, st.none() | seqs, st.none() | slots, dests)
fragment_records = st.integers(2, 255).flatmap(lambda count: st.builds(
    FragmentRecord, precs, payloads, st.integers(0, count - 1), st.just(count),
    seqs, st.just(True), st.none() | slots, dests) | st.builds(
    FragmentRecord, precs, payloads, st.integers(0, count - 1), st.just(count),
    st.integers(0, 255), st.just(False), st.none() | slots, dests))
ack_records = st.builds(AckRecord, slots, seqs, st.integers(0, (1 << 56) - 1))
digest_records = st.builds(
    DigestRecord,
    st.lists(st.tuples(slots, seqs), max_size=20).map(tuple),
    st.lists(st.tuples(slots, st.integers(0, 15), st.integers(0, ACK_TIME_MODULUS - 1)),
             max_size=30).map(tuple))
skip_records = st.builds(SkipRecord, slots, seqs)
records = data_records | fragment_records | ack_records | digest_records | skip_records


@settings(deadline=None)
@given(st.lists(records, min_size=1, max_size=8))
def test_any_body_round_trips(recs: list[Record]) -> None:
    body = encode_body(recs)
    assert decode_body(body) == recs
    sizes = [record_size(r, last=i == len(recs) - 1) for i, r in enumerate(recs)]
    assert len(body) == sum(sizes)


@settings(deadline=None)
@given(ack_records)
def test_ack_cumulative_and_bitmap_round_trip(ack: AckRecord) -> None:
    body = encode_body([ack])
    assert decode_body(body) == [ack]
    # kind + origin + 1-2 B cumulative seq + just enough bitmap bytes
    expected = 2 + (1 if ack.cum < 128 else 2) + (ack.bitmap.bit_length() + 7) // 8
    assert len(body) == expected


def test_bytes_per_record_kind() -> None:
    pos = b"\x00" * 6
    assert record_size(DataRecord(0, pos), last=True) == 7  # 1 B link overhead
    assert record_size(DataRecord(0, pos), last=False) == 8  # +1 B length
    assert record_size(DataRecord(2, pos, seq=5), last=True) == 8  # reliable, seq < 128
    assert record_size(DataRecord(2, pos, seq=500), last=True) == 9
    assert record_size(DataRecord(2, pos, seq=500, origin=3, dest=4), last=True) == 11
    assert record_size(FragmentRecord(1, pos, 0, 3, 7, True), last=True) == 10
    assert record_size(FragmentRecord(0, pos, 0, 3, 7, False), last=True) == 10
    assert record_size(AckRecord(3, 10, 0b101), last=True) == 4
    assert record_size(SkipRecord(3, 10), last=True) == 3
    digest = DigestRecord(((1, 10), (2, 300)), ((5, 3, 0), (6, 4, 4095), (7, 1, 77)))
    assert record_size(digest, last=True) == 1 + 1 + 2 + 3 + 1 + 3 * 3  # 3 B per track


def test_a_later_body_version_is_refused_not_misread() -> None:
    with pytest.raises(RadioFrameError, match="version 2"):
        decode_body(bytes([0x40 | 7 << 3 | 2]) + b"future")


@pytest.mark.parametrize("body", [b"", b"\x80", b"\x80\x05ab", b"\x20\x01", b"\x20\x01\x03\x03",
                                  b"\x40\x01", b"\x58", b"\x48\x05\x01\x02"])
def test_malformed_bodies_raise_radio_frame_error(body: bytes) -> None:
    with pytest.raises(RadioFrameError):
        decode_body(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_fuzz_decode_only_radio_frame_error_escapes(body: bytes) -> None:
    with contextlib.suppress(RadioFrameError):
        decode_body(body)


def _busy_endpoint() -> LinkEndpoint:
    ep = LinkEndpoint(LinkConfig(slot=0, forward=True), rng=random.Random(1))
    ep.submit(Message(Precedence.FLASH, b"x" * 100, reliable=True), 0.0)
    ep.set_track_fixes({1: (3, 30), 2: (4, 4000)})
    return ep


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.integers(0, 254))
def test_fuzz_receive_body_only_radio_frame_error_escapes(body: bytes, sender: int) -> None:
    ep = _busy_endpoint()
    try:
        ep.receive_body(sender, body, 1.0)
    except RadioFrameError:
        return
    ep.handle_timer(2.0)
    ep.next_body(2.0)


@settings(max_examples=120, deadline=None)
@given(st.lists(records, min_size=1, max_size=6), st.integers(0, 254))
def test_fuzz_receive_well_formed_records_never_crashes(recs: list[Record], sender: int) -> None:
    """Structurally valid but hostile records (wild seqs, fragments, acks)."""
    ep = _busy_endpoint()
    for now in (1.0, 2.0):
        try:
            ep.receive_body(sender, encode_body(recs), now)
        except RadioFrameError:
            return
    ep.handle_timer(3.0)
    ep.next_body(3.0)
    ep.snapshot()

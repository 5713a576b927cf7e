"""Fuzzing the compact decoder: whatever arrives, only RadioFrameError escapes.

Three feeds: arbitrary bytes, valid records with bits flipped, and valid
records cut short or extended.  The receiver holds fix history for a few
tracks, so the delta path (base lookup, height and time arithmetic) is
exercised too.  A decoded record must also be a well-formed value: its
fields are in range, so the relay can re-encode it.
"""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldc2.errors import LinkError, RadioFrameError
from fieldc2.model.radio import PositionBatch, Record
from fieldc2.protocol.compact import ChannelContext, decode, encode
from fieldc2.protocol.compact_bits import BitReader
from tests.test_compact import (
    EPOCH,
    LAT0,
    LON0,
    NOW,
    announces,
    fixes,
    orders,
    reports,
    statuses,
    texts,
    walker,
)


def _receiver() -> ChannelContext:
    """A receiver that already holds fixes 0..3 of tracks 0..7."""
    tx, rx = ChannelContext(EPOCH, LAT0, LON0), ChannelContext(EPOCH, LAT0, LON0)
    for number in range(4):
        batch = tuple(walker(track, number, NOW + 30 * number, 45, hae=500.0)
                      for track in range(8))
        decode(encode(PositionBatch(batch), tx), rx, now=NOW)
    return rx


_RECEIVER = _receiver()


def receiver() -> ChannelContext:
    """A fresh copy each time, so examples replay identically."""
    return copy.deepcopy(_RECEIVER)


def _sender() -> ChannelContext:
    tx = ChannelContext(EPOCH, LAT0, LON0)
    for number in range(4):
        encode(PositionBatch(tuple(walker(t, number, NOW + 30 * number, 45, hae=500.0)
                                   for t in range(8))), tx)
    for track in range(8):
        tx.positions.acknowledge(track, 3)
    return tx


_SENDER = _sender()


def sender() -> ChannelContext:
    return copy.deepcopy(_SENDER)


def decode_only_radio_errors(data: bytes) -> None:
    try:
        record = decode(data, receiver(), now=NOW)
    except RadioFrameError:
        return
    _check_well_formed(record)


def _check_well_formed(record: Record) -> None:
    """A decoded record re-encodes, unless a delta moved a height out of range."""
    try:
        encode(record, ChannelContext(EPOCH, LAT0, LON0))
    except LinkError as exc:
        assert isinstance(record, PositionBatch) and "height" in str(exc), exc


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    decode_only_radio_errors(data)


valid_records = st.one_of(
    st.lists(fixes(), min_size=1, max_size=5).map(lambda fs: PositionBatch(tuple(fs))),
    st.lists(st.integers(0, 7), min_size=1, max_size=8, unique=True).map(
        lambda tracks: PositionBatch(tuple(walker(t, 5, NOW + 150, 45, hae=480.0)
                                           for t in tracks))),
    texts, reports, orders, statuses, announces,
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(valid_records, st.lists(st.integers(0, 10_000), min_size=1, max_size=4))
def test_flipped_bits(record: Record, flips: list[int]) -> None:
    data = bytearray(encode(record, sender()))
    for flip in flips:
        index = flip % (len(data) * 8)
        data[index // 8] ^= 0x80 >> (index % 8)
    decode_only_radio_errors(bytes(data))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(valid_records, st.integers(0, 300), st.binary(max_size=8))
def test_truncated_and_extended(record: Record, cut: int, tail: bytes) -> None:
    data = encode(record, sender())
    decode_only_radio_errors(data[: cut % (len(data) + 1)])
    decode_only_radio_errors(data + tail)


@given(st.binary(max_size=64), st.lists(st.tuples(st.sampled_from("rsfe"), st.integers(0, 40))))
def test_bit_reader_only_raises_radio_errors(data: bytes, ops: list[tuple[str, int]]) -> None:
    src = BitReader(data)
    try:
        for op, width in ops:
            if op == "r":
                assert 0 <= src.read(width) < 1 << width
            elif op == "s":
                src.read_signed(max(1, width))
            elif op == "f":
                src.read_flag()
            else:
                assert src.read_eg(width % 9) >= 0
    except RadioFrameError:
        pass

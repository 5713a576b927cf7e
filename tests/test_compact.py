"""Compact radio encoding: round trips, quantisation error, deltas, sizes, roster."""

from __future__ import annotations

import msgspec
import pytest
from geographiclib.geodesic import Geodesic
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fieldc2.errors import ConfigError, LinkError, RadioFrameError
from fieldc2.model.precedence import Precedence
from fieldc2.model.radio import (
    BROADCAST,
    MAX_SLOTS,
    Announce,
    Fix,
    Order,
    OrderState,
    OrderStatus,
    PositionBatch,
    Report,
    ReportKind,
    Roster,
    RosterEntry,
    TaskKind,
    Text,
)
from fieldc2.protocol.compact import (
    MAX_ORDER_TEXT_BYTES,
    MAX_TEXT_BYTES,
    ChannelContext,
    decode,
    encode,
    encode_positions,
    encoded_size,
    order_signing_bytes,
)
from fieldc2.protocol.compact_bits import BitReader, BitWriter, unzigzag, zigzag
from fieldc2.protocol.compact_context import HISTORY_PER_TRACK
from fieldc2.protocol.compact_geo import TIME_WINDOW, nearest_time, quantise_fix
from fieldc2.protocol.compact_records import KIND_CODES, MAX_REF_BYTES, WRITERS

EPOCH = 1_760_000_000
NOW = EPOCH + 5 * 3600
LAT0, LON0 = 46.948, 7.447
#: Metres per degree of latitude, for building test tracks.
M_PER_DEG = 111_320.0


def pair() -> tuple[ChannelContext, ChannelContext]:
    """A sender's and a receiver's context on the same channel."""
    return ChannelContext(EPOCH, LAT0, LON0), ChannelContext(EPOCH, LAT0, LON0)


def moved(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    import math
    return (lat + north_m / M_PER_DEG,
            lon + east_m / (M_PER_DEG * math.cos(math.radians(lat))))


def error_m(a: Fix, b: Fix) -> float:
    result: float = Geodesic.WGS84.Inverse(a.lat, a.lon, b.lat, b.lon)["s12"]
    return result


# --- strategies ----------------------------------------------------------------

slots = st.integers(0, MAX_SLOTS - 1)
unicode_text = st.text(st.characters(codec="utf-8"), max_size=40).filter(
    lambda t: len(t.encode()) <= MAX_TEXT_BYTES)
labels = st.text(max_size=10).filter(lambda t: len(t.encode()) <= 32)
near_lat = st.floats(LAT0 - 0.5, LAT0 + 0.5)
near_lon = st.floats(LON0 - 0.7, LON0 + 0.7)
any_lat = st.floats(-90, 90)
any_lon = st.floats(-180, 180)
lats = st.one_of(near_lat, any_lat)
lons = st.one_of(near_lon, any_lon)
times = st.integers(NOW - TIME_WINDOW // 2, NOW + TIME_WINDOW // 2 - 1)
record_times = st.integers(EPOCH - 10**7, EPOCH + 10**8)
motions = st.one_of(st.none(), st.tuples(st.floats(-720, 720), st.floats(0, 2000)))
haes = st.one_of(st.none(), st.floats(-1000, 31767))


@st.composite
def fixes(draw: st.DrawFn, track: int | None = None) -> Fix:
    motion = draw(motions)
    return Fix(track=draw(slots) if track is None else track, fix_no=draw(st.integers(0, 15)),
               time=draw(times), lat=draw(lats), lon=draw(lons), hae=draw(haes),
               course=None if motion is None else motion[0],
               speed=None if motion is None else motion[1])


points = st.tuples(lats, lons)
signatures = st.one_of(st.just(b""), st.binary(min_size=64, max_size=64))
#: (flash, signature): a signature only on a FLASH record.
flashes = st.one_of(st.just((False, b"")), st.tuples(st.just(True), signatures))
texts = st.builds(
    lambda sender, to, text, room, flash, t: Text(
        sender=sender, to=to, text=text, room=room if to == BROADCAST else "", flash=flash[0],
        time=t if flash[0] else None, signature=flash[1]),
    slots, st.one_of(slots, st.just(BROADCAST)), unicode_text, labels, flashes, record_times)
reports = st.builds(
    lambda s, i, k, t, p, text, c, sev, flash: Report(
        sender=s, report_id=i, kind=k, time=t, lat=p[0], lon=p[1], text=text, count=c,
        severity=sev, flash=flash[0], signature=flash[1]),
    slots, st.integers(0, 65535), st.sampled_from(ReportKind), record_times, points,
    unicode_text, st.one_of(st.none(), st.integers(0, 10**6)),
    st.one_of(st.none(), st.integers(0, 7)), flashes)
refs = st.text(max_size=20).filter(lambda t: len(t.encode()) <= MAX_REF_BYTES)
#: Order texts up to the order limit (past the 200 bytes a v1 decoder reads).
order_texts = st.one_of(unicode_text, st.text(st.characters(codec="utf-8"), max_size=600)
                        .filter(lambda t: len(t.encode()) <= MAX_ORDER_TEXT_BYTES))
orders = st.builds(
    lambda o, i, to, prec, task, text, due, p, sig, ref, task_ref: Order(
        origin=o, order_id=i, to=to, precedence=prec, task=task, text=text, due=due,
        lat=None if p is None else p[0], lon=None if p is None else p[1], signature=sig,
        ref=ref, task_ref=task_ref),
    slots, st.integers(0, 65535), st.one_of(slots, st.just(BROADCAST)),
    st.sampled_from(Precedence), st.sampled_from(TaskKind), order_texts,
    st.one_of(st.none(), record_times), st.one_of(st.none(), points), signatures, refs, refs)
statuses = st.builds(
    lambda s, i, state, t: OrderStatus(sender=s, order_id=i, state=state, time=t),
    slots, st.integers(0, 65535), st.sampled_from(OrderState), record_times)
announces = st.builds(
    lambda slot, uid, cs, team, role, key: Announce(slot=slot, uid=uid, callsign=cs, team=team,
                                                    role=role, public_key=key),
    slots, st.text(min_size=1, max_size=40).filter(lambda t: len(t.encode()) <= 64),
    labels, labels, labels, st.one_of(st.just(b""), st.binary(min_size=32, max_size=32)))


def quantised(record: object) -> object:
    """What the wire delivers for a non-position record: points on the grid."""
    if isinstance(record, Report | Order) and record.lat is not None:
        assert record.lon is not None
        return msgspec.structs.replace(record, lat=round(record.lat * 1e5) / 1e5,
                                       lon=round(record.lon * 1e5) / 1e5)
    return record


# --- bits ----------------------------------------------------------------------

@given(st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 8))))
def test_exp_golomb_and_zigzag_round_trip(values: list[tuple[int, int]]) -> None:
    out = BitWriter()
    for value, k in values:
        out.write_eg(value, k)
        out.write_eg(zigzag(-value), k)
    src = BitReader(out.getvalue())
    for value, k in values:
        assert src.read_eg(k) == value
        assert unzigzag(src.read_eg(k)) == -value


def test_writer_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(LinkError):
        BitWriter().write(16, 4)
    with pytest.raises(LinkError):
        BitWriter().write_signed(-9, 4)
    with pytest.raises(RadioFrameError):
        BitReader(b"\x00").read(9)


# --- positions -----------------------------------------------------------------

@settings(max_examples=200)
@given(st.lists(fixes(), min_size=1, max_size=8, unique_by=lambda f: f.track))
def test_absolute_fixes_round_trip_within_a_metre(batch: list[Fix]) -> None:
    tx, rx = pair()
    data = encode(PositionBatch(tuple(batch)), tx)
    got = decode(data, rx, now=NOW)
    assert got == PositionBatch(tuple(quantise_fix(f) for f in batch))
    for sent, received in zip(batch, got.fixes, strict=True):
        assert error_m(sent, received) <= 1.0
        if sent.hae is not None:
            assert received.hae is not None and abs(received.hae - sent.hae) <= 0.5
        if sent.speed is not None:
            assert received.speed is not None and abs(received.speed - sent.speed) <= 0.25
            assert received.course is not None and sent.course is not None
            assert abs((received.course - sent.course + 180) % 360 - 180) <= 2.5
    # Decoded fixes are on the grid: encoding them again changes nothing.
    assert decode(encode(got, ChannelContext(EPOCH, LAT0, LON0)),
                  ChannelContext(EPOCH, LAT0, LON0), now=NOW) == got


@settings(max_examples=200)
@given(fixes(track=7), st.floats(-3000, 3000), st.floats(-3000, 3000), st.integers(0, 1800),
       haes, motions)
def test_delta_fixes_round_trip(first: Fix, north: float, east: float, dt: int,
                                hae: float | None, motion: tuple[float, float] | None) -> None:
    tx, rx = pair()
    decode(encode(PositionBatch((first,)), tx), rx, now=NOW)
    tx.positions.acknowledge(7, first.fix_no)
    lat, lon = moved(first.lat, first.lon, north, east)
    # A move the delta cannot hold (at a pole, 1 m east is 180 degrees of
    # longitude) is sent absolute, whose time is only unambiguous within half
    # a window of the receiver's clock: keep the second fix inside it.
    assume(first.time + dt < NOW + TIME_WINDOW // 2)
    second = Fix(track=7, fix_no=(first.fix_no + 1) % 16, time=first.time + dt,
                 lat=max(-90.0, min(90.0, lat)), lon=max(-180.0, min(180.0, lon)), hae=hae,
                 course=None if motion is None else motion[0],
                 speed=None if motion is None else motion[1])
    data = encode(PositionBatch((second,)), tx)
    assert decode(data, rx, now=NOW) == PositionBatch((quantise_fix(second),))
    assert error_m(second, quantise_fix(second)) <= 1.0


def walker(track: int, fix_no: int, time: int, step_m: float, **extra: float) -> Fix:
    lat, lon = moved(LAT0 + 0.01 * track, LON0, step_m * fix_no * 0.6, step_m * fix_no * 0.8)
    return Fix(track=track, fix_no=fix_no, time=time, lat=lat, lon=lon, **extra)


def test_delta_needs_the_base_and_says_so() -> None:
    tx, rx = pair()
    encode(PositionBatch((walker(3, 0, NOW, 45),)), tx)  # lost on the way
    tx.positions.acknowledge(3, 0)  # a stale digest claims otherwise
    data = encode(PositionBatch((walker(3, 1, NOW + 30, 45),)), tx)
    with pytest.raises(RadioFrameError, match="resolve"):
        decode(data, rx, now=NOW)


def test_batch_keeps_the_fixes_it_can_resolve() -> None:
    tx, rx = pair()
    decode(encode(PositionBatch((walker(1, 0, NOW, 45),)), tx), rx, now=NOW)
    encode(PositionBatch((walker(2, 0, NOW, 45),)), tx)  # never arrives
    tx.positions.acknowledge(1, 0)
    tx.positions.acknowledge(2, 0)
    batch = (walker(1, 1, NOW + 30, 45), walker(2, 1, NOW + 30, 45), walker(3, 0, NOW, 45))
    got = decode(encode(PositionBatch(batch), tx), rx, now=NOW)
    assert got == PositionBatch((quantise_fix(batch[0]), quantise_fix(batch[2])))
    assert rx.positions.latest_received(1) == 1 and rx.positions.latest_received(2) is None


def test_ack_is_forgotten_when_the_fix_number_is_reused() -> None:
    tx, _ = pair()
    for number in range(3):
        encode(PositionBatch((walker(4, number, NOW + 30 * number, 45),)), tx)
    tx.positions.acknowledge(4, 0)
    reused = walker(4, 0, NOW + 90, 45)
    encode(PositionBatch((reused,)), tx)
    assert tx.positions.base_for(walker(4, 1, NOW + 120, 45)) is None


def test_history_is_bounded_and_acks_outside_it_are_ignored() -> None:
    tx, rx = pair()
    for number in range(16):
        data = encode(PositionBatch((walker(5, number, NOW + 30 * number, 45),)), tx)
        decode(data, rx, now=NOW)
    oldest_held = 16 - HISTORY_PER_TRACK
    assert rx.positions.received_base(5, oldest_held - 1) is None
    assert rx.positions.received_base(5, oldest_held) is not None
    tx.positions.acknowledge(5, oldest_held - 1)  # evicted: ignored
    assert tx.positions.base_for(walker(5, 0, NOW + 480, 45)) is None
    tx.positions.acknowledge(5, oldest_held)
    assert tx.positions.base_for(walker(5, 0, NOW + 480, 45)) is not None


@given(st.integers(-10**8, 10**8), st.integers(-TIME_WINDOW // 2, TIME_WINDOW // 2 - 1))
def test_window_time_resolves_within_half_a_window(elapsed: int, skew: int) -> None:
    now = EPOCH + elapsed
    time = now + skew
    assert nearest_time((time - EPOCH) % TIME_WINDOW, EPOCH, now) == time


# --- sizes (these fail if the encoding grows) ----------------------------------

def _sizes(step_m: float, interval: int, **extra: float) -> tuple[int, int]:
    """(absolute, delta) bytes of one single-track batch for a mover."""
    tx, rx = pair()
    first = walker(9, 0, NOW, step_m, **extra)
    absolute = encode(PositionBatch((first,)), tx)
    decode(absolute, rx, now=NOW)
    tx.positions.acknowledge(9, 0)
    delta = encode(PositionBatch((walker(9, 1, NOW + interval, step_m, **extra),)), tx)
    assert decode(delta, rx, now=NOW).fixes[0].fix_no == 1  # type: ignore[union-attr]
    return len(absolute), len(delta)


def test_walker_delta_fits_six_bytes() -> None:
    # 1.5 m/s over 30 s: the <= 14 B authenticated report needs <= 6 B here.
    assert _sizes(45, 30) == (9, 6)
    assert _sizes(45, 30, hae=540.0)[1] <= 6  # hae unchanged costs 3 bits
    # Course and speed are coded as a change from the base: steady costs 4 bits.
    assert _sizes(45, 30, course=87.0, speed=1.5) == (10, 6)
    assert _sizes(45, 30, course=87.0, speed=1.5, hae=540.0)[1] <= 7


def test_turning_walker_costs_one_byte_more() -> None:
    tx, rx = pair()
    decode(encode(PositionBatch((walker(9, 0, NOW, 45, course=87.0, speed=1.5),)), tx), rx,
           now=NOW)
    tx.positions.acknowledge(9, 0)
    turned = walker(9, 1, NOW + 30, 45, course=117.0, speed=2.0)
    data = encode(PositionBatch((turned,)), tx)
    assert len(data) <= 7
    assert decode(data, rx, now=NOW) == PositionBatch((quantise_fix(turned),))


def test_vehicle_and_far_fixes() -> None:
    assert _sizes(450, 30) == (9, 6)  # 15 m/s over 30 s
    assert _sizes(450, 30, course=87.0, speed=15.0) == (11, 7)
    tx, _ = pair()
    far = Fix(track=1, fix_no=0, time=NOW, lat=-33.86, lon=151.21)
    assert len(encode(PositionBatch((far,)), tx)) == 11  # anywhere on Earth


def test_each_extra_delta_track_costs_at_most_six_bytes() -> None:
    for count in (2, 5, 10, 20):
        tx, rx = pair()
        firsts = tuple(walker(t, 0, NOW, 45) for t in range(count))
        decode(encode(PositionBatch(firsts), tx), rx, now=NOW)
        for track in range(count):
            tx.positions.acknowledge(track, 0)
        seconds = tuple(walker(t, 1, NOW + 30, 45) for t in range(count))
        data = encode(PositionBatch(seconds), tx)
        assert len(data) <= 6 + 6 * (count - 1) - (count - 1) // 2
        assert decode(data, rx, now=NOW) == PositionBatch(tuple(map(quantise_fix, seconds)))


def test_encode_positions_packs_what_fits_and_records_only_that() -> None:
    tx, rx = pair()
    batch = [walker(t, 0, NOW, 45) for t in range(10)]
    data, count = encode_positions(batch, tx, 30)
    assert 0 < count < 10 and len(data) <= 30
    assert decode(data, rx, now=NOW) == PositionBatch(tuple(map(quantise_fix, batch[:count])))
    tx.positions.acknowledge(count, 0)  # never sent: no base to ack
    assert tx.positions.base_for(walker(count, 1, NOW + 30, 45)) is None
    assert encode_positions(batch, tx, 3) == (b"", 0)


def test_encoded_size_matches_and_does_not_record() -> None:
    tx, _ = pair()
    batch = PositionBatch((walker(1, 0, NOW, 45), walker(2, 0, NOW, 45)))
    size = encoded_size(batch, tx)
    tx.positions.acknowledge(1, 0)
    assert tx.positions.base_for(walker(1, 1, NOW + 30, 45)) is None
    assert size == len(encode(batch, tx))
    order = Order(origin=0, order_id=1, to=3, precedence=Precedence.FLASH,
                  task=TaskKind.RESCUE, text="Casualty at the ford", signature=bytes(64))
    assert encoded_size(order, tx) == len(encode(order, tx))


# --- other records -------------------------------------------------------------

@settings(max_examples=200)
@given(st.one_of(texts, reports, orders, statuses, announces))
def test_records_round_trip(record: Text | Report | Order | OrderStatus | Announce) -> None:
    tx, rx = pair()
    assert decode(encode(record, tx), rx, now=NOW) == quantised(record)


@pytest.mark.parametrize("record", [
    Fix(track=255, fix_no=0, time=NOW, lat=0, lon=0),
    Fix(track=1, fix_no=0, time=NOW, lat=0, lon=0, course=10.0),
    Fix(track=1, fix_no=0, time=NOW, lat=0, lon=0, hae=40_000.0),
    Fix(track=1, fix_no=0, time=NOW, lat=float("nan"), lon=0),
    Text(sender=1, to=2, text="x", room="Cyan"),
    Text(sender=1, text="x" * (MAX_TEXT_BYTES + 1)),
    Order(origin=1, order_id=70_000, to=2, precedence=Precedence.ROUTINE, task=TaskKind.HOLD),
    Order(origin=1, order_id=1, to=2, precedence=Precedence.ROUTINE, task=TaskKind.HOLD,
          signature=b"short"),
    Order(origin=1, order_id=1, to=2, precedence=Precedence.ROUTINE, task=TaskKind.HOLD,
          lat=1.0),
    Announce(slot=1, uid=""),
])
def test_unencodable_records_are_local_misuse(record: object) -> None:
    tx, _ = pair()
    wrapped = PositionBatch((record,)) if isinstance(record, Fix) else record
    with pytest.raises(LinkError):
        encode(wrapped, tx)  # type: ignore[arg-type]


# --- the v1 layouts without the fields appended later (STYLE 15) -------------------

def encode_v1(record: Text | Report | Order, ctx: ChannelContext) -> bytes:
    """The record as an encoder from before the trailing fields wrote it: the new
    encoding cut after the v1 fields (they are a prefix), padded to a byte."""
    plain: Text | Report | Order
    if isinstance(record, Order):
        plain = msgspec.structs.replace(record, ref="", task_ref="")
    elif isinstance(record, Text):
        plain = msgspec.structs.replace(record, flash=False, time=None, signature=b"")
    else:
        plain = msgspec.structs.replace(record, flash=False, signature=b"")
    out = BitWriter()
    out.write(0b1000 | KIND_CODES[type(plain)], 4)
    WRITERS[type(plain)](out, plain, ctx)
    trailing = {Order: 3, Text: 1, Report: 1}[type(plain)]  # absent-flags of v2
    return cut_bits(out, out.bits - trailing)


def cut_bits(out: BitWriter, bits: int) -> bytes:
    value = int.from_bytes(out.getvalue(), "big") >> (-out.bits % 8 + out.bits - bits)
    pad = -bits % 8
    return (value << pad).to_bytes((bits + pad) // 8, "big")


@settings(max_examples=100)
@given(st.one_of(texts, reports, orders.filter(lambda o: len(o.text.encode()) <= 200)))
def test_records_of_a_v1_encoder_still_decode(record: Text | Report | Order) -> None:
    tx, rx = pair()
    old = decode(encode_v1(record, tx), rx, now=NOW)
    expected: object = quantised(record)
    if isinstance(record, Order):
        expected = msgspec.structs.replace(record, ref="", task_ref="")
    elif isinstance(record, Text):
        expected = msgspec.structs.replace(record, flash=False, time=None, signature=b"")
    else:
        expected = msgspec.structs.replace(record, flash=False, signature=b"")
    assert old == quantised(expected)


def test_a_v1_decoder_reads_the_head_of_a_long_order() -> None:
    """What an old decoder sees of a grown order: the v1 fields, text cut at 200 B."""
    text = "Gehen Sie über die Brücke " * 30  # 780 B with the umlauts
    order = Order(origin=200, order_id=7, to=3, precedence=Precedence.IMMEDIATE,
                  task=TaskKind.SEARCH, text=text, signature=bytes(range(64)),
                  ref="ORD-1A2B3C4D", task_ref="T1")
    tx, rx = pair()
    data = encode(order, tx)
    assert decode(data, rx, now=NOW) == order
    src = BitReader(data)
    assert src.read(4) == 0b1011
    v1 = read_order_v1(src, rx)
    assert v1.text == text.encode()[:200].decode("utf-8", "ignore") and len(v1.text) < 200
    assert v1.signature == order.signature and v1.ref == ""


def read_order_v1(src: BitReader, ctx: ChannelContext) -> Order:
    """A v1 order reader (the fields before ``ref``), ignoring what follows."""
    origin, order_id, to = src.read(8), src.read(16), src.read(8)
    precedence, task = Precedence(src.read(2)), TaskKind(src.read(4))
    assert not src.read_flag() and not src.read_flag()  # no due, no point here
    text = src.read_text(MAX_TEXT_BYTES)
    signature = src.read_bytes(64) if src.read_flag() else b""
    return Order(origin=origin, order_id=order_id, to=to, precedence=precedence, task=task,
                 text=text, signature=signature)


def test_grown_fields_are_checked() -> None:
    tx, _ = pair()
    with pytest.raises(LinkError, match="order text"):
        encode(Order(origin=1, order_id=1, to=2, precedence=Precedence.ROUTINE,
                     task=TaskKind.HOLD, text="x" * (MAX_ORDER_TEXT_BYTES + 1)), tx)
    with pytest.raises(LinkError, match="FLASH"):
        encode(Text(sender=1, text="x", signature=bytes(64)), tx)
    with pytest.raises(LinkError, match="time"):
        encode(Text(sender=1, text="x", flash=True), tx)
    with pytest.raises(LinkError):
        encode(Report(sender=1, report_id=1, kind=ReportKind.SPOT, time=NOW, lat=0, lon=0,
                      flash=True, signature=b"short"), tx)


def test_order_signing_bytes_bind_every_field() -> None:
    base = Order(origin=0, order_id=42, to=3, precedence=Precedence.IMMEDIATE,
                 task=TaskKind.SEARCH, text="Sector B4", due=NOW + 3600, lat=46.95, lon=7.45)
    signed = order_signing_bytes(base, b"chan-1")
    variants = [
        msgspec.structs.replace(base, origin=1), msgspec.structs.replace(base, order_id=43),
        msgspec.structs.replace(base, to=4), msgspec.structs.replace(base, to=BROADCAST),
        msgspec.structs.replace(base, precedence=Precedence.FLASH),
        msgspec.structs.replace(base, task=TaskKind.RESCUE),
        msgspec.structs.replace(base, text="Sector B5"),
        msgspec.structs.replace(base, due=NOW + 3601), msgspec.structs.replace(base, due=None),
        msgspec.structs.replace(base, lat=46.96), msgspec.structs.replace(base, lat=None,
                                                                          lon=None),
    ]
    assert all(order_signing_bytes(v, b"chan-1") != signed for v in variants)
    assert order_signing_bytes(base, b"chan-2") != signed
    # The signature is not signed, and the bytes survive the wire.
    with_sig = msgspec.structs.replace(base, signature=bytes(range(64)))
    assert order_signing_bytes(with_sig, b"chan-1") == signed
    tx, rx = pair()
    received = decode(encode(with_sig, tx), rx, now=NOW)
    assert order_signing_bytes(received, b"chan-1") == signed  # type: ignore[arg-type]


# --- roster --------------------------------------------------------------------

ROSTER_TOML = """
[[member]]
slot = 0
uid = "fieldc2-relay"
callsign = "RELAY"
public_key = "{key}"

[[member]]
slot = 1
uid = "ANDROID-589520ccfcd20f01"
callsign = "VIPER"
team = "Cyan"
role = "Team Member"
"""


def test_roster_loads_learns_and_stays_a_bijection() -> None:
    roster = Roster.from_toml(ROSTER_TOML.format(key="ab" * 32))
    assert roster.by_slot(0).public_key == bytes([0xAB]) * 32  # type: ignore[union-attr]
    assert roster.by_callsign("VIPER").slot == 1  # type: ignore[union-attr]
    learned = roster.learn(Announce(slot=5, uid="ANDROID-589520ccfcd20f01", callsign="VIPER"))
    assert roster.by_slot(1) is None and roster.by_uid(learned.uid) == learned
    assert roster.allocate("new-uid", callsign="NEW").slot == 1
    assert roster.allocate("new-uid").slot == 1
    assert [e.slot for e in roster] == [0, 1, 5]
    assert roster.by_slot(5).announce() == Announce(  # type: ignore[union-attr]
        slot=5, uid="ANDROID-589520ccfcd20f01", callsign="VIPER")


def test_roster_is_bounded_and_checks_its_file() -> None:
    roster = Roster()
    for index in range(MAX_SLOTS):
        roster.add(RosterEntry(slot=index, uid=f"u{index}"))
    with pytest.raises(ConfigError, match="full"):
        roster.allocate("one-too-many")
    for bad in ('[[member]]\nslot = 300\nuid = "x"', '[[member]]\nslot = 1\nuid = ""',
                '[[member]]\nslot = 1\nuid = "x"\npublic_key = "zz"', "member = 3", "[["):
        with pytest.raises(ConfigError):
            Roster.from_toml(bad)


def test_a_failed_batch_records_nothing_as_sent() -> None:
    tx, _ = pair()
    good, bad = walker(1, 0, NOW, 45), Fix(track=2, fix_no=0, time=NOW, lat=0, lon=0, hae=1e6)
    with pytest.raises(LinkError):
        encode(PositionBatch((good, bad)), tx)
    tx.positions.acknowledge(1, 0)
    assert tx.positions.base_for(walker(1, 1, NOW + 30, 45)) is None
    with pytest.raises(LinkError):
        encode(good, tx)  # type: ignore[arg-type]


@pytest.mark.parametrize("record", [
    PositionBatch(()),
    PositionBatch((Fix(track=1, fix_no=0, time=NOW, lat=0, lon=0, course=0.0, speed=5000.0),)),
    PositionBatch((Fix(track=1, fix_no=0, time=NOW, lat=91.0, lon=0),)),
    Text(sender=255, text="from everyone?"),
    Report(sender=1, report_id=1, kind=ReportKind.NEED, time=NOW, lat=0, lon=0, count=-1),
    Report(sender=1, report_id=1, kind=ReportKind.NEED, time=NOW, lat=0, lon=0, severity=8),
    Report(sender=1, report_id=1, kind=ReportKind.NEED, time=NOW, lat=0, lon=200.0),
])
def test_more_unencodable_records(record: object) -> None:
    with pytest.raises(LinkError):
        encode(record, pair()[0])  # type: ignore[arg-type]


def test_signing_bytes_refuse_what_they_cannot_write() -> None:
    order = Order(origin=1, order_id=1, to=2, precedence=Precedence.ROUTINE, task=TaskKind.HOLD)
    with pytest.raises(LinkError):
        order_signing_bytes(order, bytes(256))
    with pytest.raises(LinkError):
        order_signing_bytes(msgspec.structs.replace(order, origin=300), b"c")


def _bits(*fields: tuple[int, int]) -> bytes:
    out = BitWriter()
    for value, width in fields:
        out.write(value, width)
    return out.getvalue()


@pytest.mark.parametrize("data", [
    _bits((0, 1), (255, 8), (0, 4), (0, 2), (1, 1), (0, 1), (0, 17), (0, 18), (0, 14)),
    _bits((0b1010, 4), (1, 8), (1, 16), (0, 3), (0, 1), (0, 13), (0, 1), (0, 17), (0, 18),
          (1, 1), (0, 21), (1, 23), (0, 1), (0, 8)),  # count 2**21
    _bits((0b1100, 4), (1, 8), (1, 16), (0, 3)) + bytes(8),  # EG prefix never ends
    _bits((0b1110, 4)),
    _bits((0, 1)) + bytes(65 * 6),
])
def test_malformed_records_are_radio_frame_errors(data: bytes) -> None:
    with pytest.raises(RadioFrameError):
        decode(data, pair()[1], now=NOW)


def test_roster_len_and_key_check() -> None:
    roster = Roster([RosterEntry(slot=1, uid="a"), RosterEntry(slot=1, uid="b")])
    assert len(roster) == 1 and roster.by_uid("a") is None
    with pytest.raises(ConfigError, match="32 bytes"):
        roster.add(RosterEntry(slot=2, uid="c", public_key=b"short"))

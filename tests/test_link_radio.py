"""The radio glue: compact records -> link -> sealed frames and back, relay and node."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fieldc2.crypto.radio import FrameOpener, FrameSealer
from fieldc2.crypto.radio_keys import ChannelKey, MemoryCounterStore
from fieldc2.errors import FrameRejected, LinkError, RadioFrameError
from fieldc2.link.endpoint import LinkEndpoint
from fieldc2.link.profiles import LAN
from fieldc2.link.radio import MAX_ACK_AGE, RadioEndpoint, handling_of
from fieldc2.link.types import Acked, LinkConfig, PeerDigest
from fieldc2.model.precedence import Precedence
from fieldc2.model.radio import (
    Fix,
    Order,
    OrderState,
    OrderStatus,
    PositionBatch,
    Record,
    Report,
    ReportKind,
    TaskKind,
    Text,
)
from fieldc2.protocol.compact import ChannelContext, encode
from fieldc2.transport.radio import RadioAdapter
from fieldc2.transport.radio_station import RadioStation

EPOCH = 1_760_000_000
NOW = EPOCH + 3600
LAT0, LON0 = 46.948, 7.447


def radio(slot: int, key: ChannelKey, **config: object) -> RadioEndpoint:
    link = LinkEndpoint(LinkConfig(slot=slot, **config), rng=random.Random(slot))  # type: ignore[arg-type]
    return RadioEndpoint(link, FrameSealer(key, slot, MemoryCounterStore()), FrameOpener([key]),
                         ChannelContext(EPOCH, LAT0, LON0))


def exchange(a: RadioEndpoint, b: RadioEndpoint, now: float) -> tuple[list[Record], list[int]]:
    """Let both send what is due now; what each received, and frame sizes."""
    got: list[Record] = []
    sizes: list[int] = []
    for src, dst in ((a, b), (b, a)):
        while (frame := src.next_frame(now)) is not None:
            sizes.append(len(frame))
            records = dst.receive_frame(frame, now)
            if dst is b:
                got += records
    return got, sizes


def fix(n: int, north: float = 0.0) -> Fix:
    return Fix(track=1, fix_no=n, time=NOW + 30 * n, lat=LAT0 + 0.01 + north, lon=LON0 + 0.02)


def _encoded(f: Fix) -> bytes:
    return encode(PositionBatch((f,)), ChannelContext(EPOCH, LAT0, LON0))


def test_position_travels_in_one_small_authenticated_frame() -> None:
    key = ChannelKey.generate("ops")
    node, relay = radio(1, key), radio(0, key)
    node.submit_record(PositionBatch((fix(0),)), NOW)
    node.link.sync.last_digest = NOW  # no digest in this frame: measure the position alone
    frame = node.next_frame(NOW)
    assert frame is not None
    assert relay.receive_frame(frame, NOW) == [PositionBatch((fix(0),))]
    payload = len(_encoded(fix(0)))
    assert len(frame) == 7 + 1 + payload  # header+tag, 1 B link record, the fix


def test_relay_digest_acknowledges_fixes_so_later_ones_are_deltas() -> None:
    key = ChannelKey.generate("ops")
    node, relay = radio(1, key), radio(0, key)
    node.submit_record(PositionBatch((fix(0),)), NOW)
    absolute = len(node.link.outbox.queues[0][0].payload)
    exchange(node, relay, NOW)
    assert node.context.positions.base_for(fix(1)) is None
    for t in (NOW + 60, NOW + 120):  # the relay's digest carries track 1's fix number
        exchange(node, relay, t)
    assert node.context.positions.base_for(fix(1)) is not None
    node.submit_record(PositionBatch((fix(1, 0.0001),)), NOW + 150)
    delta = len(node.link.outbox.queues[0][0].payload)
    assert delta < absolute


def test_order_goes_reliably_to_its_team_and_status_comes_back() -> None:
    key = ChannelKey.generate("ops")
    node, relay = radio(1, key), radio(0, key)
    order = Order(origin=0, order_id=7, to=1, precedence=Precedence.FLASH, task=TaskKind.RESCUE,
                  text="casualty at the bridge")
    seq = relay.submit_record(order, NOW)
    assert handling_of(order).precedence == Precedence.FLASH
    got, _ = exchange(relay, node, NOW)
    assert got == [order]
    status = OrderStatus(sender=1, order_id=7, state=OrderState.RECEIVED, time=NOW)
    node.submit_record(status, NOW + 1)
    got, _ = exchange(node, relay, NOW + 5)
    assert got == [status]
    exchange(relay, node, NOW + 10)
    assert Acked(0, seq or 0, 1) in relay.drain_events()


def test_casualty_report_is_immediate_and_foreign_frames_are_rejected() -> None:
    report = Report(sender=1, report_id=3, kind=ReportKind.CASUALTY, time=NOW, lat=LAT0,
                    lon=LON0, text="2 injured")
    assert handling_of(report).precedence == Precedence.IMMEDIATE
    node = radio(1, ChannelKey.generate("ops"))
    stranger = radio(2, ChannelKey.generate("ops"))
    stranger.submit_record(report, NOW)
    frame = stranger.next_frame(NOW)
    assert frame is not None
    with pytest.raises(FrameRejected):
        node.receive_frame(frame, NOW)
    with pytest.raises(RadioFrameError):
        node.receive_frame(b"\x00", NOW)


def test_sealer_and_link_must_agree_on_the_slot() -> None:
    key = ChannelKey.generate("ops")
    link = LinkEndpoint(LinkConfig(slot=1), rng=random.Random(0))
    with pytest.raises(LinkError):
        RadioEndpoint(link, FrameSealer(key, 2, MemoryCounterStore()), FrameOpener([key]),
                      ChannelContext(EPOCH, LAT0, LON0))


def _deliver(src: RadioEndpoint, dst: RadioEndpoint, now: float) -> list[Record]:
    got: list[Record] = []
    while (frame := src.next_frame(now)) is not None:
        got += dst.receive_frame(frame, now)
    return got


def _drop(src: RadioEndpoint, now: float) -> None:
    while src.next_frame(now) is not None:
        pass


def _walk(node: RadioEndpoint, i: int) -> Fix:
    number = node.context.positions.allocate_fix_no(1)
    return Fix(track=1, fix_no=number, time=NOW + 30 * i, lat=LAT0 + i * 45 / 111_320,
               lon=LON0)


def test_a_stale_digest_naming_a_reused_fix_number_never_decodes_a_wrong_fix() -> None:
    """Regression (fix numbers wrap at 16): the relay acks fix #0, the node is
    cut off for 16 fixes and reuses #0, then the old digest arrives.  The ack
    names the fix by number *and* time, so the node does not delta against its
    new #0; before, the relay decoded fix 17 against its old #0 (wrong time and
    place)."""
    key = ChannelKey.generate("ops")
    relay, node = radio(0, key), radio(1, key)
    node.submit_record(PositionBatch((_walk(node, 0),)), NOW)
    assert _deliver(node, relay, NOW)
    stale = relay.next_frame(NOW + 5)  # the relay's digest acks fix #0
    assert stale is not None
    for i in range(1, 17):  # a partition: every frame of the node is lost
        node.submit_record(PositionBatch((_walk(node, i),)), NOW + 30 * i)
        _drop(node, NOW + 30 * i)
    node.receive_frame(stale, NOW + 30 * 16 + 5)  # the stale ack arrives after the heal
    sent = _walk(node, 17)
    assert sent.fix_no == 1
    node.submit_record(PositionBatch((sent,)), NOW + 30 * 17)
    (got,) = _deliver(node, relay, NOW + 30 * 17)
    assert isinstance(got, PositionBatch)
    assert (got.fixes[0].time, got.fixes[0].lat) == (sent.time, round(sent.lat, 5))
    assert relay.future_fixes == 0 and relay.record_errors == 0


def test_a_fresh_ack_still_lets_the_node_delta_code() -> None:
    key = ChannelKey.generate("ops")
    relay, node = radio(0, key), radio(1, key)
    node.submit_record(PositionBatch((_walk(node, 0),)), NOW)
    _deliver(node, relay, NOW)
    _deliver(relay, node, NOW + 5)  # digest: acks fix #0 by number and time
    assert node.drain_events() == [PeerDigest(0, {1: (0, (NOW) % 4096)})]
    assert node.last_sender == 0
    node.submit_record(PositionBatch((_walk(node, 1),)), NOW + 30)
    frame = node.next_frame(NOW + 30)
    assert frame is not None and len(frame) == 14  # a 6-byte delta, not a 9-byte box fix
    (got,) = relay.receive_frame(frame, NOW + 30)
    assert isinstance(got, PositionBatch) and got.fixes[0].time == NOW + 30


def test_field_nodes_digest_no_tracks_and_relays_only_fresh_ones() -> None:
    key = ChannelKey.generate("ops")
    relay, node, other = radio(0, key), radio(1, key), radio(2, key)
    other.submit_record(PositionBatch((Fix(track=2, fix_no=0, time=NOW, lat=LAT0, lon=LON0),)),
                        NOW)
    frame = other.next_frame(NOW)
    assert frame is not None
    node.receive_frame(frame, NOW)
    relay.receive_frame(frame, NOW)
    assert node.link.sync.tracks == {} and relay.link.sync.tracks == {2: (0, NOW % 4096)}
    late = Fix(track=3, fix_no=0, time=NOW, lat=LAT0, lon=LON0)
    other.submit_record(PositionBatch((late,)), NOW)
    relay.receive_frame(other.next_frame(NOW) or b"", NOW + MAX_ACK_AGE + 1)
    assert relay.link.sync.tracks == {}  # both too old to acknowledge


def test_a_fix_from_the_future_is_refused_and_forgotten() -> None:
    key = ChannelKey.generate("ops")
    relay, node = radio(0, key), radio(1, key)
    ahead = Fix(track=1, fix_no=0, time=NOW + 600, lat=LAT0, lon=LON0)
    node.submit_record(PositionBatch((ahead,)), NOW)
    assert _deliver(node, relay, NOW) == []
    assert relay.future_fixes == 1
    assert relay.context.positions.received_latest() == {}


def test_submit_record_at_an_explicit_precedence() -> None:
    key = ChannelKey.generate("ops")
    node = radio(1, key)
    text = Text(sender=1, to=0, text="man down")
    assert handling_of(text).precedence == Precedence.ROUTINE
    node.submit_record(text, NOW, precedence=Precedence.FLASH)
    (unit,) = node.link.outbox.units()
    assert (unit.precedence, unit.reliable, unit.dest) == (Precedence.FLASH, True, 0)


def test_order_status_goes_to_the_relay_only() -> None:
    key = ChannelKey.generate("ops")
    node = radio(1, key)
    node.submit_record(OrderStatus(sender=1, order_id=4, state=OrderState.ACKNOWLEDGED,
                                   time=NOW), NOW)
    (unit,) = node.link.outbox.units()
    assert unit.dest == 0


def test_snapshot_keeps_the_fix_history_so_a_restarted_relay_decodes_deltas() -> None:
    key = ChannelKey.generate("ops")
    relay, node = radio(0, key), radio(1, key)
    node.submit_record(PositionBatch((_walk(node, 0),)), NOW)
    _deliver(node, relay, NOW)
    _deliver(relay, node, NOW + 5)
    rebuilt, forgetful = radio(0, key), radio(0, key)
    rebuilt.restore(relay.snapshot())
    forgetful.link.restore(relay.link.snapshot())
    forgetful.opener.restore(relay.opener.snapshot())
    node.submit_record(PositionBatch((_walk(node, 1),)), NOW + 30)
    frame = node.next_frame(NOW + 30)
    assert frame is not None
    (got,) = rebuilt.receive_frame(frame, NOW + 30)
    assert isinstance(got, PositionBatch) and got.fixes[0].time == NOW + 30
    assert forgetful.receive_frame(frame, NOW + 30) == []  # the delta's base is gone
    assert forgetful.record_errors == 1
    with pytest.raises(LinkError):
        radio(0, key).restore(b"\x01junk")


class _Air(RadioAdapter):
    """An adapter that keeps what it is given: enough for a station that is never started."""

    async def _transmit(self, frame: bytes) -> None:
        pass

    async def _shutdown(self) -> None:
        pass


def test_radio_station_persists_the_fix_history(tmp_path: Path) -> None:
    key = ChannelKey.generate("ops")
    node = radio(1, key)

    def station() -> RadioStation:
        return RadioStation(_Air(mtu=237), keys=[key], slot=0, profile=LAN,
                            context=ChannelContext(EPOCH, LAT0, LON0),
                            on_record=lambda record, now: None, state_dir=tmp_path)

    relay = station()
    node.submit_record(PositionBatch((_walk(node, 0),)), NOW)
    relay.receive_frame(node.next_frame(NOW) or b"", NOW)
    relay.persist()
    relay.sealer.close()
    again = station()
    assert again.context.positions.received_latest()[1].time == NOW
    assert again.opener.own == 0

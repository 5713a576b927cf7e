"""The radio glue: compact records -> link -> sealed frames and back, relay and node."""

from __future__ import annotations

import random

import pytest

from fieldc2.crypto.radio import FrameOpener, FrameSealer
from fieldc2.crypto.radio_keys import ChannelKey, MemoryCounterStore
from fieldc2.errors import FrameRejected, LinkError, RadioFrameError
from fieldc2.link.endpoint import LinkEndpoint
from fieldc2.link.radio import RadioEndpoint, handling_of
from fieldc2.link.types import Acked, LinkConfig
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
)
from fieldc2.protocol.compact import ChannelContext, encode

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

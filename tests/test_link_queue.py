"""Precedence queues as a state machine: random submits, expiries, acks, sends."""

from __future__ import annotations

import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fieldc2.errors import LinkError
from fieldc2.link.body import AckRecord, DataRecord, FragmentRecord, decode_body, encode_body
from fieldc2.link.endpoint import LinkEndpoint
from fieldc2.link.outbox import MAX_QUEUED_UNITS
from fieldc2.link.types import LATEST_ONLY_TTL, LinkConfig, Message
from fieldc2.model.precedence import Precedence


class QueueMachine(RuleBasedStateMachine):
    """One sender; a model of what was submitted, checked against every body."""

    def __init__(self) -> None:
        super().__init__()
        # 40 B bodies: payloads over 35 B go as fragments of 33 B
        self.ep = LinkEndpoint(LinkConfig(slot=1, body_budget=40, rto=5.0),
                               rng=random.Random(0))
        self.now = 0.0
        self.n = 0
        self.expires: dict[bytes, float] = {}
        self.latest: dict[int, bytes] = {}

    @rule(prec=st.sampled_from(list(Precedence)), reliable=st.booleans(),
          key=st.none() | st.integers(0, 3), ttl=st.none() | st.floats(1.0, 50.0),
          size=st.integers(2, 12) | st.integers(40, 120))
    def submit(self, prec: Precedence, reliable: bool, key: int | None, ttl: float | None,
               size: int) -> None:
        self.n += 1
        payload = self.n.to_bytes(2, "big") + bytes(size - 2)
        self.ep.submit(Message(prec, payload, reliable, key, ttl), self.now)
        if ttl is None:
            ttl = LATEST_ONLY_TTL if key is not None and not reliable else 1e9
        self.expires[payload] = self.now + ttl
        if key is not None:
            self.latest[key] = payload

    @rule(dt=st.floats(0.1, 30.0))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.ep.handle_timer(self.now)

    @rule()
    def send(self) -> None:
        body = self.ep.next_body(self.now)
        if body is None:
            return
        data = [r for r in decode_body(body) if isinstance(r, DataRecord | FragmentRecord)]
        lowest = min((r.precedence for r in data), default=-1)
        for record in data:
            if isinstance(record, DataRecord):  # fragments: checked through the units
                assert self.expires[record.payload] > self.now, "sent after its TTL"
        waiting = [u.precedence for u in self.ep.outbox.eligible(self.now)
                   if u.expires > self.now]
        assert not data or max(waiting, default=-1) <= lowest, "a lower class passed a higher one"

    @rule(seq=st.integers(1, 40), bitmap=st.integers(0, 255))
    def ack(self, seq: int, bitmap: int) -> None:
        self.now += 0.1
        self.ep.receive_body(0, encode_body([AckRecord(1, seq, bitmap)]), self.now)
        covered = {s for s in range(1, seq + 1)} | {
            seq + 2 + i for i in range(8) if bitmap >> i & 1}
        for unit in self.ep.outbox.units():
            assert not (unit.reliable and not unit.reoffer and unit.seq in covered)

    @invariant()
    def coalescing_keeps_only_the_newest(self) -> None:
        for unit in self.ep.outbox.units():
            if unit.key is not None:
                assert unit.payload == self.latest[unit.key][unit.index * 33:][:33]  # type: ignore[index]

    @invariant()
    def nothing_expired_survives_a_timer(self) -> None:
        timer = self.ep.get_timer()
        assert timer is None or timer >= 0
        if timer is not None and timer > self.now:
            assert all(u.expires > self.now for u in self.ep.outbox.units())


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def _filled(budget: int = 40) -> LinkEndpoint:
    ep = LinkEndpoint(LinkConfig(slot=1, body_budget=budget), rng=random.Random(0))
    for i in range(MAX_QUEUED_UNITS):
        ep.submit(Message(Precedence.ROUTINE, i.to_bytes(2, "big"), coalesce_key=i), 0.0)
    return ep


def test_full_queue_drops_routine_positions_first_for_orders() -> None:
    ep = _filled()
    assert ep.submit(Message(Precedence.IMMEDIATE, b"order", reliable=True), 0.0) == 1
    assert ep.stats.dropped_overflow == 1
    assert len(ep.outbox) == MAX_QUEUED_UNITS


def test_full_queue_refuses_orders_loudly_and_drops_routine_quietly() -> None:
    ep = LinkEndpoint(LinkConfig(slot=1), rng=random.Random(0))
    for i in range(MAX_QUEUED_UNITS):
        ep.submit(Message(Precedence.PRIORITY, i.to_bytes(2, "big"), reliable=True), 0.0)
    with pytest.raises(LinkError, match="queue full"):
        ep.submit(Message(Precedence.FLASH, b"evacuate", reliable=True), 0.0)
    with pytest.raises(LinkError, match="queue full"):
        ep.submit(Message(Precedence.IMMEDIATE, b"unreliable but not routine"), 0.0)
    assert ep.submit(Message(Precedence.ROUTINE, b"pos", coalesce_key=9), 0.0) is None
    assert ep.stats.dropped_overflow == 1
    assert len(ep.outbox) == MAX_QUEUED_UNITS


def test_too_large_message_is_refused() -> None:
    ep = LinkEndpoint(LinkConfig(slot=1, body_budget=20), rng=random.Random(0))
    with pytest.raises(LinkError, match="too large"):
        ep.submit(Message(Precedence.ROUTINE, bytes(20 * 256)), 0.0)


def test_flash_preempts_a_half_sent_fragmented_message() -> None:
    ep = LinkEndpoint(LinkConfig(slot=1, body_budget=30, rto=100.0), rng=random.Random(0))
    ep.submit(Message(Precedence.ROUTINE, bytes(200), reliable=True), 0.0)
    first = ep.next_body(0.0)
    assert first is not None
    ep.submit(Message(Precedence.FLASH, b"FLASH now", reliable=True), 1.0)
    body = ep.next_body(1.0)
    assert body is not None
    data = [r for r in decode_body(body) if isinstance(r, DataRecord | FragmentRecord)]
    assert isinstance(data[0], DataRecord) and data[0].payload == b"FLASH now"
    assert all(r.precedence == Precedence.FLASH for r in data)


def test_newer_position_replaces_unsent_older_one() -> None:
    ep = LinkEndpoint(LinkConfig(slot=1), rng=random.Random(0))
    ep.submit(Message(Precedence.ROUTINE, b"old fix", coalesce_key=7), 0.0)
    ep.submit(Message(Precedence.IMMEDIATE, b"order", reliable=True), 0.0)
    ep.submit(Message(Precedence.ROUTINE, b"new fix", coalesce_key=7), 1.0)
    body = ep.next_body(1.0)
    assert body is not None
    payloads = [r.payload for r in decode_body(body) if isinstance(r, DataRecord)]
    assert payloads == [b"order", b"new fix"]
    assert ep.stats.coalesced == 1


def test_expired_positions_are_dropped_and_counted() -> None:
    ep = LinkEndpoint(LinkConfig(slot=1), rng=random.Random(0))
    ep.submit(Message(Precedence.ROUTINE, b"fix", coalesce_key=1), 0.0)
    assert ep.get_timer() == 0.0
    assert ep.handle_timer(LATEST_ONLY_TTL + 1) == []
    assert ep.next_body(LATEST_ONLY_TTL + 1) is None
    assert ep.stats.expired == 1

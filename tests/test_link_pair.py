"""Pairs and small groups of link endpoints over a lossy in-test pipe, virtual time.

:class:`Pipe` is the fake link (style rule 13): every body a node sends
reaches every other node unless the seeded random loses it; it may also be
duplicated (as a relay or a second radio path would) and delayed by a random
amount, which reorders.  The full network simulator lives in ``sim/``.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from fieldc2.link.endpoint import LinkEndpoint
from fieldc2.link.types import (
    DEFAULT_TTL,
    Acked,
    Delivered,
    Expired,
    LinkConfig,
    LinkEvent,
    Message,
)
from fieldc2.model.precedence import Precedence

ORDER = Precedence.IMMEDIATE


@dataclass
class Pipe:
    """A broadcast medium between endpoints with loss, duplication and delay."""

    nodes: dict[int, LinkEndpoint]
    rng: random.Random
    loss: float = 0.0
    dup: float = 0.0
    delay: tuple[float, float] = (0.05, 0.5)
    #: Slots that cannot hear each other (a partition), as frozenset pairs.
    cut: set[frozenset[int]] = field(default_factory=set)
    now: float = 0.0
    events: dict[int, list[LinkEvent]] = field(default_factory=dict)
    bytes_on_air: int = 0
    bodies: list[tuple[int, bytes]] = field(default_factory=list)
    _flight: list[tuple[float, int, int, int, bytes]] = field(default_factory=list)
    _n: int = 0

    def __post_init__(self) -> None:
        for slot in self.nodes:
            self.events.setdefault(slot, [])

    def delivered(self, slot: int) -> list[Delivered]:
        return [e for e in self.events[slot] if isinstance(e, Delivered)]

    def _send(self, sender: int, body: bytes) -> None:
        self.bytes_on_air += len(body)
        self.bodies.append((sender, body))
        for slot in self.nodes:
            if slot == sender or frozenset((slot, sender)) in self.cut:
                continue
            copies = 2 if self.rng.random() < self.dup else 1
            for _ in range(copies):
                if self.rng.random() < self.loss:
                    continue
                at = self.now + self.rng.uniform(*self.delay)
                self._n += 1
                heapq.heappush(self._flight, (at, self._n, sender, slot, body))

    def _idle_until(self) -> float:
        """Skip virtual time in which nothing can happen (keeps long runs fast)."""
        times = [t for t in (n.get_timer() for n in self.nodes.values()) if t is not None]
        if self._flight:
            times.append(self._flight[0][0])
        return min(times, default=float("inf"))

    def run(self, until: float, step: float = 0.5, per_step: int = 1) -> None:
        """Advance virtual time; each node may send ``per_step`` bodies per step."""
        while self.now < until:
            self.now = min(until, max(round(self.now + step, 6), self._idle_until()))
            while self._flight and self._flight[0][0] <= self.now:
                _, _, sender, slot, body = heapq.heappop(self._flight)
                self.events[slot] += self.nodes[slot].receive_body(sender, body, self.now)
            for slot, node in self.nodes.items():
                timer = node.get_timer()
                if timer is not None and timer <= self.now:
                    self.events[slot] += node.handle_timer(self.now)
                for _ in range(per_step):
                    out = node.next_body(self.now)
                    if out is None:
                        break
                    self._send(slot, out)


def endpoint(slot: int, seed: int = 1, **config: object) -> LinkEndpoint:
    return LinkEndpoint(LinkConfig(slot=slot, **config), rng=random.Random(seed))  # type: ignore[arg-type]


def test_one_unreliable_position_costs_one_byte_of_link_overhead() -> None:
    a = endpoint(1)
    a.submit(Message(Precedence.ROUTINE, b"\x01\x02\x03\x04\x05\x06", coalesce_key=1), 0.0)
    body = a.next_body(0.0)
    assert body == b"\x00\x01\x02\x03\x04\x05\x06"
    b = endpoint(0)
    events = b.receive_body(1, body, 0.1)
    assert events == [Delivered(1, b"\x01\x02\x03\x04\x05\x06", Precedence.ROUTINE, None, 255, 1)]


def test_each_additional_position_costs_at_most_two_bytes() -> None:
    a = endpoint(1)
    for track in range(5):
        a.submit(Message(Precedence.ROUTINE, bytes([track]) * 6, coalesce_key=track), 0.0)
    body = a.next_body(0.0)
    assert body is not None and len(body) == 7 + 4 * 8


def test_reliable_order_is_delivered_once_and_acked() -> None:
    pipe = Pipe({0: endpoint(0), 1: endpoint(1)}, random.Random(3))
    seq = pipe.nodes[0].submit(Message(ORDER, b"go north", reliable=True, dest=1), 0.0)
    pipe.run(60.0)
    assert [d.payload for d in pipe.delivered(1)] == [b"go north"]
    assert Acked(0, seq or 0, 1) in pipe.events[0]
    assert len(pipe.nodes[0].outbox) == 0


def test_reliable_messages_survive_heavy_loss_duplication_and_reordering() -> None:
    pipe = Pipe({0: endpoint(0, 5), 1: endpoint(1, 6)}, random.Random(7),
                loss=0.3, dup=0.2, delay=(0.1, 8.0))
    sent = [f"order {i}".encode() for i in range(40)]
    for i, payload in enumerate(sent):
        pipe.nodes[0].submit(Message(ORDER, payload, reliable=True), i * 1.0)
        pipe.run(i * 1.0 + 1.0)
    pipe.run(3600.0)
    got = pipe.delivered(1)
    assert [d.payload for d in got] == sent  # exactly once, in order
    assert [d.seq for d in got] == list(range(1, 41))
    assert len(pipe.nodes[0].outbox) == 0
    assert pipe.nodes[0].stats.retransmissions > 0


def test_unacked_reliable_message_expires_loudly_after_ttl() -> None:
    pipe = Pipe({0: endpoint(0), 1: endpoint(1)}, random.Random(1), loss=1.0)
    pipe.nodes[0].submit(Message(Precedence.FLASH, b"evacuate", reliable=True), 0.0)
    pipe.run(DEFAULT_TTL[Precedence.FLASH] + 100.0)
    assert Expired(0, 1, Precedence.FLASH) in pipe.events[0]
    assert pipe.nodes[0].stats.expired == 1
    sends = pipe.nodes[0].stats.data_records_sent
    assert 3 <= sends <= 4 + DEFAULT_TTL[Precedence.FLASH] / 600.0  # backoff, not a flood


def test_large_reliable_message_fragments_and_reassembles_under_loss() -> None:
    pipe = Pipe({0: endpoint(0, body_budget=40), 1: endpoint(1, body_budget=40)},
                random.Random(11), loss=0.3, delay=(0.1, 3.0))
    report = bytes(range(256)) * 2
    pipe.nodes[1].submit(Message(Precedence.PRIORITY, report, reliable=True), 0.0)
    pipe.nodes[1].submit(Message(Precedence.PRIORITY, b"after", reliable=True), 0.0)
    pipe.run(1800.0)
    assert [d.payload for d in pipe.delivered(0)] == [report, b"after"]
    assert pipe.delivered(0)[0].seq == 1
    assert len(pipe.nodes[1].outbox) == 0
    acked = [e for e in pipe.events[1] if isinstance(e, Acked)]
    assert sorted((a.seq, a.by) for a in acked) == [(1, 0), (17, 0)]  # one per message


def test_unreliable_fragmented_message_is_all_or_nothing() -> None:
    a, b = endpoint(1, body_budget=20), endpoint(0, body_budget=20)
    a.submit(Message(Precedence.ROUTINE, bytes(range(40))), 0.0)
    bodies = list(iter(lambda: a.next_body(0.0), None))
    assert len(bodies) == 4  # 13 B chunks: 20 B budget - 7 B largest fragment header
    for body in (bodies[3], bodies[0], bodies[2]):
        assert b.receive_body(1, body, 0.0) == []
    got = b.receive_body(1, bodies[1], 0.0)
    assert [d.payload for d in got if isinstance(d, Delivered)] == [bytes(range(40))]
    a.submit(Message(Precedence.ROUTINE, bytes(40)), 1.0)
    b.receive_body(1, a.next_body(1.0) or b"", 1.0)  # one fragment lost for good
    assert b.get_timer() == 121.0
    b.handle_timer(121.0)
    assert b.stats.reassembly_timeouts == 1 and b.get_timer() is None


def test_duplicated_and_replayed_reliable_bodies_deliver_once() -> None:
    a, b = endpoint(1), endpoint(0)
    a.submit(Message(ORDER, b"one", reliable=True), 0.0)
    a.submit(Message(ORDER, b"two", reliable=True), 0.0)
    body = a.next_body(0.0) or b""
    first = b.receive_body(1, body, 0.1)
    again = b.receive_body(1, body, 0.2)
    assert [d.payload for d in first if isinstance(d, Delivered)] == [b"one", b"two"]
    assert again == [] and b.stats.duplicates == 2


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 0.3), st.floats(0.0, 0.3))
def test_exactly_once_in_order_for_any_seed(seed: int, loss: float, dup: float) -> None:
    """Both directions at once, a fragmented message among them, random delays."""
    rng = random.Random(seed)
    pipe = Pipe({0: endpoint(0, rng.randrange(99), body_budget=30),
                 1: endpoint(1, rng.randrange(99), body_budget=30)},
                rng, loss=loss, dup=dup, delay=(0.1, 6.0))
    sent: dict[int, list[bytes]] = {0: [], 1: []}
    for i in range(12):
        for slot in (0, 1):
            payload = bytes([slot, i]) * (40 if i == 5 else 3)
            sent[slot].append(payload)
            pipe.nodes[slot].submit(Message(ORDER, payload, reliable=True), i * 3.0)
        pipe.run(i * 3.0 + 3.0)
    pipe.run(4000.0)
    assert [d.payload for d in pipe.delivered(0)] == sent[1]
    assert [d.payload for d in pipe.delivered(1)] == sent[0]


def test_a_burst_larger_than_the_receive_window_still_arrives_in_order() -> None:
    pipe = Pipe({0: endpoint(0, body_budget=240), 1: endpoint(1, body_budget=240)},
                random.Random(2), loss=0.2)
    sent = [i.to_bytes(2, "big") for i in range(150)]
    for payload in sent:
        pipe.nodes[1].submit(Message(Precedence.PRIORITY, payload, reliable=True), 0.0)
    pipe.run(1500.0)
    assert [d.payload for d in pipe.delivered(0)] == sent
    assert pipe.nodes[0].stats.out_of_window == 0

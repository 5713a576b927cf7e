"""Store-and-forward, anti-entropy, duty cycle and persistence, over the test pipe."""

from __future__ import annotations

import random

import pytest

from fieldc2.errors import LinkError
from fieldc2.link.body import DigestRecord, decode_body, encode_body
from fieldc2.link.custody import REOFFER_SPREAD
from fieldc2.link.endpoint import LinkEndpoint
from fieldc2.link.profiles import LORA_LONG_FAST, DutyCycle
from fieldc2.link.types import (
    FRAME_OVERHEAD,
    Acked,
    Delivered,
    LinkConfig,
    Message,
    PeerDigest,
    PeerHeard,
    Skipped,
)
from fieldc2.model.precedence import Precedence
from tests.test_link_pair import Pipe, endpoint

ORDER = Precedence.IMMEDIATE


def test_relay_takes_custody_and_forwards_to_a_node_out_of_range() -> None:
    pipe = Pipe({0: endpoint(0, forward=True), 1: endpoint(1, 2), 2: endpoint(2, 3)},
                random.Random(5), cut={frozenset((1, 2))})
    seq = pipe.nodes[1].submit(Message(ORDER, b"team 2: hold", reliable=True, dest=2), 0.0)
    pipe.run(120.0)
    assert [(d.origin, d.sender, d.payload) for d in pipe.delivered(2)] == [
        (1, 0, b"team 2: hold")]
    assert Acked(1, seq or 0, 0) in pipe.events[1]  # custody transferred to the relay
    assert Acked(1, seq or 0, 2) in pipe.events[0]  # the relay's copy reached team 2
    assert pipe.nodes[0].stats.custody_taken == 1
    assert pipe.delivered(0) == []  # not addressed to the relay
    assert all(len(n.outbox) == 0 for n in pipe.nodes.values())


def test_anti_entropy_catches_up_a_node_cut_off_for_n_messages() -> None:
    n = 12
    nodes = {s: endpoint(s, s + 10, forward=(s == 0)) for s in range(3)}
    pipe = Pipe(nodes, random.Random(9), loss=0.1)
    pipe.nodes[1].submit(Message(ORDER, b"before", reliable=True), 0.0)
    pipe.run(100.0)
    assert [d.payload for d in pipe.delivered(2)] == [b"before"]
    pipe.cut = {frozenset((0, 2)), frozenset((1, 2))}
    sent = [f"report {i:02d}".encode() for i in range(n)]
    for i, payload in enumerate(sent):
        pipe.nodes[1].submit(Message(Precedence.PRIORITY, payload, reliable=True), 100.0 + i)
    pipe.run(400.0)
    assert len(pipe.nodes[1].outbox) == 0  # the relay acked: custody moved on
    before = pipe.bytes_on_air
    reoffers = sum(node.stats.reoffers_sent for node in nodes.values())
    pipe.cut = set()
    pipe.run(1500.0)
    assert [d.payload for d in pipe.delivered(2)] == [b"before", *sent]
    used = pipe.bytes_on_air - before
    reoffered = sum(node.stats.reoffers_sent for node in nodes.values()) - reoffers
    assert n <= reoffered <= 3 * n  # only what was missing (two holders may both offer)
    assert used <= n * 40  # ~15 B per report re-offered, plus digests and acks
    assert all(len(node.outbox) == 0 for node in nodes.values())


def test_digests_are_suppressed_when_nothing_changes() -> None:
    pipe = Pipe({0: endpoint(0), 1: endpoint(1)}, random.Random(1))
    pipe.nodes[1].submit(Message(ORDER, b"x", reliable=True), 0.0)
    pipe.run(200.0)
    settled = pipe.nodes[1].stats.digests_sent + pipe.nodes[0].stats.digests_sent
    pipe.run(590.0)
    quiet = pipe.nodes[1].stats.digests_sent + pipe.nodes[0].stats.digests_sent
    assert quiet == settled
    pipe.run(1300.0)  # but a keepalive still goes every digest_keepalive
    assert pipe.nodes[1].stats.digests_sent + pipe.nodes[0].stats.digests_sent > quiet


def test_track_fixes_travel_in_digests_with_their_time_check() -> None:
    a, b = endpoint(1), endpoint(0)
    a.set_track_fixes({1: (5, 0), 7: (15, 4095), 9: (0, 1234)})
    body = a.next_body(0.0)
    assert body is not None
    assert decode_body(body) == [DigestRecord((), ((1, 5, 0), (7, 15, 4095), (9, 0, 1234)))]
    assert b.receive_body(1, body, 0.0) == [
        PeerDigest(1, {1: (5, 0), 7: (15, 4095), 9: (0, 1234)})]
    with pytest.raises(LinkError):
        a.set_track_fixes({1: (5, 4096)})


def test_abandoned_message_is_skipped_so_later_ones_are_not_blocked() -> None:
    a, b = endpoint(1), endpoint(0)
    a.submit(Message(ORDER, b"lost", reliable=True, ttl=10.0), 0.0)
    a.next_body(0.0)  # lost on the air
    a.submit(Message(ORDER, b"later", reliable=True), 1.0)
    assert b.receive_body(1, a.next_body(1.0) or b"", 1.0) == []  # held behind the gap
    assert a.handle_timer(20.0) != []  # "lost" expired: Expired event
    ack = b.next_body(20.0)
    assert ack is not None
    a.receive_body(0, ack, 20.0)
    skip = a.next_body(20.0)
    assert skip is not None
    events = b.receive_body(1, skip, 20.0)
    assert Skipped(1, 1) in events
    assert [e.payload for e in events if isinstance(e, Delivered)] == [b"later"]


def test_duty_cycle_is_never_exceeded_and_timer_says_when_to_send() -> None:
    window, limit = 60.0, 0.10
    duty = DutyCycle(limit, window)
    a = LinkEndpoint(LinkConfig.for_profile(1, LORA_LONG_FAST), rng=random.Random(1),
                     profile=LORA_LONG_FAST, duty=duty)
    for i in range(200):
        a.submit(Message(Precedence.ROUTINE, bytes(20), coalesce_key=None, ttl=1e6), 0.0)
        a.submit(Message(ORDER, i.to_bytes(2, "big") * 30, reliable=True), 0.0)
    sends: list[tuple[float, float]] = []
    now = 0.0
    while now < 600.0:
        body = a.next_body(now)
        if body is None:
            timer = a.get_timer()
            assert timer is not None and timer > now
            now = timer
            continue
        airtime = LORA_LONG_FAST.airtime(len(body) + FRAME_OVERHEAD)
        sends.append((now, airtime))
        now += airtime
    assert a.stats.duty_blocked > 0 and len(sends) > 20
    for start, airtime in sends:  # every window ending at a send's end stays within budget
        end = start + airtime
        used = sum(air for t, air in sends if end - window < t + air and t <= start)
        assert used <= limit * window + 1e-9
    total = sum(air for _, air in sends)
    assert total <= limit * (600.0 + window)


def test_snapshot_and_restore_mid_transfer_loses_nothing() -> None:
    pipe = Pipe({0: endpoint(0, 1), 1: endpoint(1, 2, body_budget=30)}, random.Random(4),
                loss=0.3, delay=(0.1, 3.0))
    sent = [bytes([i]) * (5 + 7 * i) for i in range(12)]  # some need fragments
    for payload in sent:
        pipe.nodes[1].submit(Message(ORDER, payload, reliable=True), 0.0)
    t = 0.0
    while not pipe.delivered(0) and t < 600.0:  # snapshot as soon as some have arrived
        t += 5.0
        pipe.run(t)
    assert 0 < len(pipe.delivered(0)) < len(sent)
    for slot, cfg in ((0, {}), (1, {"body_budget": 30})):
        fresh = endpoint(slot, 7 + slot, **cfg)
        fresh.restore(pipe.nodes[slot].snapshot())
        pipe.nodes[slot] = fresh
    pipe.run(3000.0)
    assert [d.payload for d in pipe.delivered(0)] == sent
    assert len(pipe.nodes[1].outbox) == 0


def test_restore_refuses_garbage() -> None:
    import pytest

    from fieldc2.errors import LinkError

    with pytest.raises(LinkError):
        endpoint(1).restore(b"\x00garbage")
    with pytest.raises(LinkError):
        endpoint(1).restore(encode_body([DigestRecord()]))


def test_relay_restart_keeps_custody_it_acknowledged() -> None:
    pipe = Pipe({0: endpoint(0, forward=True), 1: endpoint(1, 2), 2: endpoint(2, 3)},
                random.Random(8), cut={frozenset((1, 2)), frozenset((0, 2))})
    pipe.nodes[1].submit(Message(Precedence.FLASH, b"to team 2", reliable=True, dest=2), 0.0)
    pipe.run(30.0)
    assert len(pipe.nodes[1].outbox) == 0  # the relay took custody and acked
    relay = endpoint(0, 9, forward=True)
    relay.restore(pipe.nodes[0].snapshot())  # the relay restarts before team 2 is back
    pipe.nodes[0] = relay
    pipe.cut = {frozenset((1, 2))}
    pipe.run(300.0)
    assert [d.payload for d in pipe.delivered(2)] == [b"to team 2"]
    assert len(relay.outbox) == 0


def test_a_peer_heard_again_gets_its_backlog_without_waiting_out_the_backoff() -> None:
    node, relay = endpoint(1), endpoint(0)
    relay.submit(Message(Precedence.ROUTINE, b"pos", coalesce_key=0), 0.0)
    node.receive_body(0, relay.next_body(0.0) or b"", 0.0)  # first contact, then a partition
    node.submit(Message(ORDER, b"casualty", reliable=True, dest=0), 0.0)
    node.submit(Message(Precedence.ROUTINE, b"chat", reliable=True, dest=0), 0.0)
    t = 0.0
    for _ in range(20):  # retransmissions into the void: the backoff grows
        if min(u.next_try for u in node.outbox.units()) - t >= 150.0:
            break
        t = min(u.next_try for u in node.outbox.units())
        assert node.next_body(t) is not None
    assert min(u.next_try for u in node.outbox.units()) - t >= 150.0
    relay.submit(Message(Precedence.ROUTINE, b"pos", coalesce_key=0), t + 1.0)
    beacon = relay.next_body(t + 1.0)  # the relay is heard again
    assert beacon is not None
    events = node.receive_body(0, beacon, t + 1.0)
    assert [e for e in events if isinstance(e, PeerHeard)] == [PeerHeard(0, t + 1.0)]
    urgent, routine = (next(u for u in node.outbox.units() if u.precedence == p)
                       for p in (ORDER, Precedence.ROUTINE))
    assert urgent.next_try <= t + 1.0 + REOFFER_SPREAD * node.config.ack_delay
    assert routine.next_try <= t + 1.0 + node.config.rto  # spread over one rto


def test_only_custody_releases_a_field_nodes_broadcast() -> None:
    origin, other, relay = endpoint(1), endpoint(2), endpoint(0)
    origin.submit(Message(ORDER, b"contact report", reliable=True), 0.0)
    body = origin.next_body(0.0) or b""
    other.receive_body(1, body, 0.1)
    assert other.next_body(10.0) is None  # a field node does not ack another's broadcast
    relay.receive_body(1, body, 0.1)
    origin.receive_body(0, relay.next_body(10.0) or b"", 10.0)
    assert len(origin.outbox) == 0  # the relay's ack took custody


def test_a_field_node_is_pulled_by_the_hub_only_and_at_most_once_a_period() -> None:
    behind, peer, relay = endpoint(3), endpoint(2), endpoint(0)
    peer.submit(Message(ORDER, b"a", reliable=True), 0.0)
    relay.receive_body(2, peer.next_body(0.0) or b"", 0.0)
    period = behind.config.digest_period
    peer_digest = encode_body([DigestRecord(((2, 1),))])
    behind.receive_body(2, peer_digest, 1.0)
    assert behind.sync.nudge_at is None  # another field node's digest does not pull
    hub_digest = encode_body([DigestRecord(((2, 1),))])
    behind.receive_body(0, hub_digest, 2.0)
    assert behind.sync.nudge_at is not None
    behind.sync.sent(3.0)
    behind.receive_body(0, hub_digest, 4.0)
    assert behind.sync.nudge_at is None  # rate limited per hub
    behind.receive_body(0, hub_digest, 2.0 + period)
    assert behind.sync.nudge_at is not None

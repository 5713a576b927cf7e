"""Adaptive retransmission timeout: the estimator alone, then two endpoints on virtual time."""

from __future__ import annotations

import random
from collections.abc import Callable

import msgspec
import pytest

from fieldc2.errors import LinkError
from fieldc2.link.endpoint import SNAPSHOT_VERSION, LinkEndpoint
from fieldc2.link.profiles import LORA_LONG_FAST
from fieldc2.link.rtt import MAX_DOUBLINGS, MAX_PEERS, RttTable
from fieldc2.link.types import Acked, LinkConfig, Message
from fieldc2.model.precedence import Precedence
from tests.test_link_pair import Pipe, endpoint

FLASH = Precedence.FLASH


# -- the estimator -------------------------------------------------------------------


def test_no_sample_means_the_configured_timeout_within_the_ceiling() -> None:
    table = RttTable()
    assert table.rto(0, default=50.0, floor=10.0, ceiling=600.0) == 50.0
    assert table.rto(0, default=50.0, floor=10.0, ceiling=40.0) == 40.0


def test_samples_follow_rfc_6298() -> None:
    table = RttTable()
    table.sample(0, 6.0)
    assert (table.peers[0].srtt, table.peers[0].rttvar) == (6.0, 3.0)
    assert table.rto(0, default=50.0, floor=1.0, ceiling=600.0) == 18.0  # 6 + 4 * 3
    table.sample(0, 10.0)
    # rttvar = 3/4 * 3 + 1/4 * |6 - 10| = 3.25; srtt = 7/8 * 6 + 1/8 * 10 = 6.5
    assert (table.peers[0].srtt, table.peers[0].rttvar) == (6.5, 3.25)
    for _ in range(60):
        table.sample(0, 6.0)
    assert table.rto(0, default=50.0, floor=1.0, ceiling=600.0) == pytest.approx(6.0, abs=0.1)
    assert 1 not in table.peers  # per peer


def test_the_timeout_is_clamped_to_floor_and_ceiling() -> None:
    table = RttTable()
    table.sample(0, 1.0)  # rto 3 s
    table.sample(1, 400.0)  # rto 1200 s
    assert table.rto(0, default=50.0, floor=9.0, ceiling=600.0) == 9.0
    assert table.rto(1, default=50.0, floor=9.0, ceiling=600.0) == 600.0


def test_absurd_samples_are_ignored_and_the_table_is_bounded() -> None:
    table = RttTable()
    table.sample(0, -1.0)
    table.sample(0, 1e9)
    assert table.peers == {}
    for peer in range(MAX_PEERS + 10):
        table.sample(peer, 5.0)
    assert len(table.peers) == MAX_PEERS
    assert 0 not in table.peers and MAX_PEERS + 9 in table.peers  # oldest forgotten


def test_timeouts_back_off_the_peer_until_a_fresh_sample() -> None:
    table = RttTable()
    table.timed_out(0, 2)
    assert table.level(0) == 0  # nothing to back off from: the fixed timeout applies
    table.sample(0, 6.0)
    table.timed_out(0, 2)
    table.timed_out(0, 1)
    assert table.level(0) == 2
    table.timed_out(0, 99)
    assert table.level(0) == MAX_DOUBLINGS
    table.sample(0, 6.0)
    assert table.level(0) == 0


# -- two endpoints, driven by hand --------------------------------------------------


def lora(slot: int, seed: int, **overrides: object) -> LinkEndpoint:
    config = LinkConfig.for_profile(slot, LORA_LONG_FAST, jitter=0.0, **overrides)
    return LinkEndpoint(config, rng=random.Random(seed), profile=LORA_LONG_FAST)


Drop = Callable[[int, bytes], bool]


def run(nodes: dict[int, LinkEndpoint], start: float, until: float, drop: Drop,
        sends: list[tuple[float, int, bytes]], step: float = 0.1) -> None:
    """Every body reaches the other nodes at once unless ``drop`` says it is lost."""
    now = start
    while now < until:
        for slot, node in nodes.items():
            node.handle_timer(now)
            while (body := node.next_body(now)) is not None:
                sends.append((now, slot, body))
                if drop(slot, body):
                    continue
                for other, peer in nodes.items():
                    if other != slot:
                        peer.receive_body(slot, body, now)
        now = round(now + step, 6)


def never(_slot: int, _body: bytes) -> bool:
    return False


def test_an_acked_unit_sent_once_gives_a_sample_of_its_round_trip() -> None:
    node, relay = lora(1, 1), lora(0, 2)
    node.submit(Message(FLASH, b"contact", reliable=True), 0.0)
    sends: list[tuple[float, int, bytes]] = []
    run({1: node, 0: relay}, 0.0, 30.0, never, sends)
    assert len(node.outbox) == 0
    ack_at = next(t for t, slot, _ in sends if slot == 0)
    assert node.rtt.peers[0].srtt == pytest.approx(ack_at)  # sent at 0
    assert relay.config.ack_delay <= ack_at <= relay.config.ack_delay + 0.2


def test_karns_rule_a_retransmitted_unit_gives_no_sample() -> None:
    node, relay = lora(1, 1), lora(0, 2)
    node.submit(Message(FLASH, b"contact", reliable=True), 0.0)
    first = node.next_body(0.0)
    assert first is not None  # lost
    sends: list[tuple[float, int, bytes]] = []
    run({1: node, 0: relay}, 0.1, 200.0, never, sends)
    assert len(node.outbox) == 0 and node.stats.retransmissions == 1
    assert node.rtt.peers == {}


def test_backoff_doubles_from_the_adaptive_timeout_up_to_the_ceiling() -> None:
    node = lora(1, 1)
    node.rtt.sample(0, 6.0)  # rto 18 s, above the floor of ~10 s
    node.submit(Message(FLASH, b"contact", reliable=True), 0.0)
    gaps, now = [], 0.0
    for _ in range(8):
        assert node.next_body(now) is not None
        unit = next(node.outbox.units())
        gaps.append(round(unit.next_try - now, 6))
        now = unit.next_try
    assert gaps == [18.0, 36.0, 72.0, 144.0, 288.0, 576.0, 600.0, 600.0]


def test_a_new_unit_to_a_peer_that_timed_out_starts_backed_off() -> None:
    """RFC 6298 5.5-5.7: after a healed partition the quiet channel's estimate
    is stale; a new unit waits the backed-off timeout, not the short one."""
    node = lora(1, 1)
    node.rtt.sample(0, 6.0)  # rto 18 s
    node.submit(Message(FLASH, b"first", reliable=True), 0.0)
    assert node.next_body(0.0) is not None
    assert node.next_body(18.0) is not None  # timed out once: the peer is at 36 s
    node.submit(Message(FLASH, b"second", reliable=True), 20.0)
    assert node.next_body(20.0) is not None
    second = [u for u in node.outbox.units() if u.payload == b"second"]
    assert second[0].next_try == pytest.approx(20.0 + 36.0)


def test_the_floor_covers_the_acks_wait_and_both_frames() -> None:
    node = lora(1, 1)
    node.rtt.sample(0, 0.1)  # an impossible round trip: the floor wins
    node.submit(Message(FLASH, b"contact", reliable=True), 0.0)
    body = node.next_body(0.0)
    assert body is not None
    gap = next(node.outbox.units()).next_try
    ack_delay = node.config.ack_delay
    assert gap >= ack_delay + LORA_LONG_FAST.airtime(len(body) + 7)
    assert gap < node.config.rto / 2  # yet far below the fixed timeout


def test_a_lost_flash_is_resent_within_round_trip_time_on_a_quiet_link() -> None:
    """Acks of a few earlier orders teach the node the round trip (~5 s); the
    FLASH lost on its first try goes again within ~15 s, not after the fixed
    ~50 s timeout, and is delivered and acked."""
    node, relay = lora(1, 1), lora(0, 2)
    sends: list[tuple[float, int, bytes]] = []
    for i in range(4):
        node.submit(Message(Precedence.IMMEDIATE, b"order %d" % i, reliable=True), i * 20.0)
        run({1: node, 0: relay}, i * 20.0, i * 20.0 + 20.0, never, sends)
    assert len(node.outbox) == 0 and 0 in node.rtt.peers
    lost: list[float] = []

    def first_flash_lost(slot: int, body: bytes) -> bool:
        if slot == 1 and b"evacuate" in body and not lost:
            lost.append(1.0)
            return True
        return False

    node.submit(Message(FLASH, b"evacuate", reliable=True), 100.0)
    sends.clear()
    run({1: node, 0: relay}, 100.0, 200.0, first_flash_lost, sends)
    tries = [t for t, slot, body in sends if slot == 1 and b"evacuate" in body]
    assert len(tries) == 2
    assert tries[1] - tries[0] < 15.0 < node.config.rto
    assert len(node.outbox) == 0


def test_fixed_timeout_applies_until_the_first_sample() -> None:
    node = lora(1, 1)
    node.submit(Message(FLASH, b"contact", reliable=True), 0.0)
    assert node.next_body(0.0) is not None
    assert next(node.outbox.units()).next_try == pytest.approx(node.config.rto)


# -- persistence --------------------------------------------------------------------


def test_snapshot_keeps_the_estimates() -> None:
    node = lora(1, 1)
    node.rtt.sample(0, 6.0)
    node.rtt.sample(255, 9.0)
    fresh = lora(1, 3)
    fresh.restore(node.snapshot())
    assert fresh.rtt.peers == node.rtt.peers
    assert msgspec.msgpack.decode(node.snapshot())["version"] == SNAPSHOT_VERSION == 3


def test_a_version_2_snapshot_restores_without_estimates() -> None:
    node = lora(1, 1)
    node.submit(Message(FLASH, b"contact", reliable=True), 0.0)
    node.rtt.sample(0, 6.0)
    old = msgspec.msgpack.decode(node.snapshot())
    del old["rtt"]
    for unit in old["units"]:
        del unit["sent_at"]
    old["version"] = 2
    fresh = lora(1, 3)
    fresh.restore(msgspec.msgpack.encode(old))
    assert fresh.rtt.peers == {} and len(fresh.outbox) == 1


def test_an_unknown_snapshot_version_is_refused() -> None:
    old = msgspec.msgpack.decode(lora(1, 1).snapshot())
    for version in (1, 4):
        old["version"] = version
        with pytest.raises(LinkError, match=f"version {version} not supported"):
            lora(1, 3).restore(msgspec.msgpack.encode(old))


def test_reliable_traffic_still_arrives_exactly_once_with_adaptive_timeouts() -> None:
    """A lossy reordering pipe: early retransmissions must not duplicate anything."""
    pipe = Pipe({0: endpoint(0, 5), 1: endpoint(1, 6)}, random.Random(9),
                loss=0.3, dup=0.1, delay=(0.1, 4.0))
    sent = [b"order %d" % i for i in range(30)]
    for i, payload in enumerate(sent):
        pipe.nodes[1].submit(Message(FLASH, payload, reliable=True), i * 2.0)
        pipe.run(i * 2.0 + 2.0)
    pipe.run(2400.0)
    assert [d.payload for d in pipe.delivered(0)] == sent
    assert 0 in pipe.nodes[1].rtt.peers
    assert sum(isinstance(e, Acked) for e in pipe.events[1]) == len(sent)

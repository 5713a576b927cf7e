"""The virtual clock and the seeded network simulator."""

from __future__ import annotations

import itertools
import time
from dataclasses import replace

import pytest

from fieldc2.errors import LinkError
from fieldc2.link.profiles import (
    IRIDIUM_SBD,
    LAN,
    LORA_LONG_FAST,
    SATELLITE_IP,
    LinkProfile,
)
from fieldc2.sim.clock import VirtualClock
from fieldc2.sim.medium import MAX_PORT_QUEUE, Port
from fieldc2.sim.network import Delivery, Network


class Inbox:
    """Records what one node hears."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, bytes]] = []

    def __call__(self, frame: bytes, now: float) -> None:
        self.frames.append((now, frame))


def mesh(seed: int, n: int, prof: LinkProfile = LORA_LONG_FAST, *, loss: float = 0.0,
         duplicate: float = 0.0, jitter: float = 0.0, contention_slots: int = 0,
         ) -> tuple[VirtualClock, Network, list[Port], list[Inbox]]:
    clock = VirtualClock()
    net = Network(clock, seed)
    net.add_channel("mesh", prof, loss=loss, duplicate=duplicate, jitter=jitter,
                    contention_slots=contention_slots)
    inboxes = [Inbox() for _ in range(n)]
    ports = [net.attach(f"n{i}", "mesh", inboxes[i]) for i in range(n)]
    return clock, net, ports, inboxes


def beacon(clock: VirtualClock, port: Port, every: float, size: int, until: float,
           start: float = 0.0) -> None:
    """``port`` sends a numbered frame of ``size`` bytes every ``every`` seconds."""
    count = [0]

    def tick() -> None:
        count[0] += 1
        port.send(count[0].to_bytes(4, "big") + bytes(size - 4))
        if clock.now() + every < until:
            clock.call_later(every, tick)

    clock.call_at(start, tick)


# --- virtual clock -------------------------------------------------------------------


def test_clock_runs_in_time_then_sequence_order() -> None:
    clock = VirtualClock(100.0)
    seen: list[tuple[float, str]] = []
    clock.call_at(105.0, lambda: seen.append((clock.now(), "b")))
    clock.call_at(101.0, lambda: seen.append((clock.now(), "a")))
    clock.call_at(105.0, lambda: seen.append((clock.now(), "c")))
    clock.call_later(2.0, lambda: clock.call_later(0.0, lambda: seen.append((102.0, "d"))))
    cancelled = clock.call_at(103.0, lambda: seen.append((103.0, "x")))
    cancelled.cancel()
    assert clock.run_until(104.0) == 3  # a, the scheduler of d, and d itself
    assert clock.now() == 104.0
    clock.advance(10.0)
    assert seen == [(101.0, "a"), (102.0, "d"), (105.0, "b"), (105.0, "c")]
    assert clock.now() == 114.0 and clock.next_time() == float("inf")
    with pytest.raises(LinkError):
        clock.run_until(50.0)


def test_clock_run_while_stops_at_condition_or_limit() -> None:
    clock = VirtualClock()
    hits: list[float] = []

    def periodic() -> None:
        hits.append(clock.now())
        clock.call_later(10.0, periodic)

    clock.call_at(0.0, periodic)
    assert clock.run_while(lambda: len(hits) < 3, limit=100.0) is False
    assert clock.now() == 20.0
    assert clock.run_while(lambda: len(hits) < 100, limit=55.0) is True
    assert clock.now() == 55.0 and hits[-1] == 50.0


def test_past_times_run_now_not_earlier() -> None:
    clock = VirtualClock(10.0)
    seen: list[float] = []
    clock.call_at(3.0, lambda: seen.append(clock.now()))
    clock.step()
    assert seen == [10.0]


# --- determinism and impairments -------------------------------------------------------


def run_chaos(seed: int) -> list[Delivery]:
    clock, net, ports, _ = mesh(seed, 6, loss=0.2, duplicate=0.1, jitter=3.0)
    for i, port in enumerate(ports):
        beacon(clock, port, every=7.0 + i, size=30, until=600.0, start=i * 0.5)
    clock.run_until(700.0)
    return net.deliveries


def test_same_seed_same_run_different_seed_different_run() -> None:
    first = run_chaos(42)
    assert len(first) > 500
    assert run_chaos(42) == first
    assert run_chaos(43) != first


def test_loss_rate_is_close_over_10k_frames() -> None:
    clock, _, (tx, rx), (_, inbox) = mesh(7, 2, LAN, loss=0.25)
    left = [10_000]

    def supply(port: Port, now: float) -> bytes | None:
        if not left[0]:
            return None
        left[0] -= 1
        return b"x" * 100

    tx.on_idle = supply
    tx.wake()
    clock.run_until(60.0)
    assert tx.stats.sent == 10_000
    assert rx.stats.lost + rx.stats.received == 10_000
    # 4 standard deviations of a binomial(10 000, 0.25) is 0.0173.
    assert abs(rx.stats.lost / 10_000 - 0.25) < 0.0173
    assert len(inbox.frames) == rx.stats.received


def test_duplication_and_reordering() -> None:
    clock, _, (tx, rx), (_, inbox) = mesh(3, 2, LAN, duplicate=0.2, jitter=0.5)
    beacon(clock, tx, every=0.01, size=8, until=50.0)
    clock.run_until(60.0)
    sent = tx.stats.sent
    assert rx.stats.duplicated == len(inbox.frames) - sent
    assert abs(rx.stats.duplicated / sent - 0.2) < 0.04
    numbers = [int.from_bytes(f[:4], "big") for _, f in inbox.frames]
    assert numbers != sorted(numbers)  # jitter of 0.5 s on 10 ms spacing reorders
    assert set(numbers) == set(range(1, sent + 1))


def test_partition_blocks_exactly_its_interval() -> None:
    clock, net, ports, _ = mesh(1, 3, LAN)
    net.partition(["n0"], ["n1"], 30.0, 60.0)
    net.isolate("n2", 100.0, 110.0)
    beacon(clock, ports[0], every=10.0, size=10, until=150.0)
    clock.run_until(200.0)
    starts = {t.seq: t.start for t in net.transmissions}
    heard = {r: sorted(starts[d.seq] for d in net.deliveries if d.receiver == r)
             for r in ("n1", "n2")}
    every = [10.0 * k for k in range(15)]
    assert heard["n1"] == [t for t in every if not 30.0 <= t < 60.0]
    assert heard["n2"] == [t for t in every if not 100.0 <= t < 110.0]
    assert ports[1].stats.blocked == 3 and ports[2].stats.blocked == 1


def test_partition_side_b_none_cuts_everyone_else_on_one_channel() -> None:
    clock, net, ports, inboxes = mesh(1, 3, LAN)
    net.partition(["n0", "n1"], None, 0.0, channel="mesh")
    net.partition(["n0"], ["n1"], 0.0, channel="elsewhere")  # other channel: no effect
    ports[0].send(b"hello")
    ports[2].send(b"world")
    clock.run_until(1.0)
    assert [f for _, f in inboxes[1].frames] == [b"hello"]
    assert inboxes[2].frames == [] and inboxes[0].frames == []


# --- the medium ------------------------------------------------------------------------


def test_half_duplex_transmissions_never_overlap() -> None:
    unregulated = replace(LORA_LONG_FAST, duty_cycle=None)
    clock, net, ports, inboxes = mesh(5, 8, unregulated)
    for port in ports:  # 8 greedy nodes offering far more than the channel carries
        port.on_idle = lambda port, now: bytes(59)
        port.wake()
    clock.run_until(300.0)
    txs = sorted(net.transmissions, key=lambda t: t.start)
    assert len(txs) == int(300.0 / unregulated.airtime(59)) + 1
    assert all(b.start >= a.end for a, b in itertools.pairwise(txs))
    assert net.channels["mesh"].utilisation(clock.now()) > 0.99
    assert sum(p.transmitting for p in ports) == 1
    assert all(p.stats.sent > 25 for p in ports)  # every contender got turns (~55 each)
    # Nobody hears itself; everybody else hears every frame that is off the air.
    done = [t for t in txs if t.end <= clock.now()]
    for inbox, port in zip(inboxes, ports, strict=True):
        assert len(inbox.frames) == sum(t.sender != port.node_id for t in done)


def test_collisions_when_switched_on() -> None:
    unregulated = replace(LORA_LONG_FAST, duty_cycle=None)
    clock, net, ports, inboxes = mesh(8, 4, unregulated, contention_slots=4)
    net.partition(["n3"], ["n1"], 0.0)  # n3 hears only n0 and n2
    for port in ports[:3]:
        port.on_idle = lambda port, now: bytes(20)
        port.wake()
    clock.run_until(600.0)
    txs = net.transmissions
    hit = [t for t in txs if t.collided]
    assert 0 < len(hit) < len(txs)
    by_start: dict[float, list[str]] = {}
    for t in txs:
        by_start.setdefault(t.start, []).append(t.sender)
    # n3 hears a group of simultaneous starts only if exactly one of it is audible to it.
    audible = [[x for x in group if x != "n1"] for group in by_start.values()]
    assert len(inboxes[3].frames) == sum(len(g) == 1 for g in audible)
    assert ports[3].stats.collided == sum(len(g) for g in audible if len(g) > 1)
    assert ports[3].stats.blocked == sum(g.count("n1") for g in by_start.values())
    # Overlaps happen only between frames that started together.
    ordered = sorted(by_start)
    ends = {t.start: t.end for t in txs}
    assert all(b >= ends[a] for a, b in itertools.pairwise(ordered))


def test_every_simultaneous_start_collides_with_one_slot() -> None:
    clock, net, ports, inboxes = mesh(8, 3, LORA_LONG_FAST, contention_slots=1)
    ports[0].send(b"a")
    ports[1].send(b"b")
    clock.run_until(10.0)
    assert [t.collided for t in net.transmissions] == [True, True]
    assert inboxes[2].frames == [] and ports[2].stats.collided == 2
    assert inboxes[0].frames == [] and inboxes[1].frames == []  # half duplex: busy sending
    with pytest.raises(LinkError, match="half-duplex"):
        net.add_channel("ip", LAN, contention_slots=4)


def test_full_duplex_link_lets_both_sides_send_at_once() -> None:
    clock = VirtualClock()
    net = Network(clock, 1)
    net.add_link("sat", SATELLITE_IP)
    up, down = Inbox(), Inbox()
    field = net.attach("relay", "sat", down)
    ground = net.attach("server", "sat", up, downlink=True)
    field.send(bytes(1400))
    ground.send(bytes(1400))
    clock.run_until(5.0)
    a, b = net.transmissions
    assert a.start == b.start == 0.0  # overlapping: one medium per direction
    for inbox in (up, down):
        (t, _), = inbox.frames
        assert a.end + 0.5 <= t <= a.end + 0.6
    with pytest.raises(LinkError, match="full"):
        net.attach("third", "sat", Inbox())


def test_iridium_mtu_is_asymmetric() -> None:
    clock = VirtualClock()
    net = Network(clock, 9)
    net.add_link("sbd", IRIDIUM_SBD)
    server_inbox = Inbox()
    field = net.attach("relay", "sbd", Inbox())
    ground = net.attach("server", "sbd", server_inbox, downlink=True)
    assert (field.mtu, ground.mtu) == (340, 270)
    field.send(bytes(340))
    ground.send(bytes(270))
    with pytest.raises(LinkError, match="MTU"):
        ground.send(bytes(271))
    with pytest.raises(LinkError, match="MTU"):
        field.send(bytes(341))
    clock.run_until(100.0)
    first, second = net.transmissions  # half-duplex modem: one session after the other
    assert second.start >= first.end
    (mo,) = [t for t in net.transmissions if t.sender == "relay"]
    (t, frame), = server_inbox.frames
    assert len(frame) == 340
    assert mo.end + 5.0 <= t <= mo.end + 20.0


def test_pull_model_decides_at_the_moment_of_transmission() -> None:
    """A FLASH message offered while the channel is busy overtakes an older ROUTINE one."""
    clock, net, (sender, other), (_, heard) = mesh(2, 2, LORA_LONG_FAST)
    backlog: list[tuple[int, bytes]] = []
    asked: list[float] = []

    def supply(port: Port, now: float) -> bytes | None:
        asked.append(now)
        if not backlog:
            return None
        backlog.sort(reverse=True)
        return backlog.pop(0)[1]

    sender.on_idle = supply
    other.send(bytes(200))  # occupies the channel for ~1.8 s from t=0
    clock.run_until(0.5)
    backlog.append((0, b"routine"))
    sender.wake()
    clock.run_until(1.0)
    backlog.append((3, b"FLASH"))
    sender.wake()
    clock.run_until(10.0)
    busy_end = net.transmissions[0].end
    assert asked[0] == busy_end  # first asked exactly when the channel freed
    assert [t.sender for t in net.transmissions] == ["n1", "n0", "n0"]
    assert [f for _, f in heard.frames] == [b"FLASH", b"routine"]
    assert len(asked) == 3  # two frames, then None ends the pull


def test_port_limits_are_enforced() -> None:
    clock, net, (a, b), _ = mesh(1, 2, LORA_LONG_FAST)
    for _ in range(MAX_PORT_QUEUE):
        a.send(b"x")
    with pytest.raises(LinkError, match="queue full"):
        a.send(b"x")
    with pytest.raises(LinkError):
        a.send(b"")
    with pytest.raises(LinkError):
        b.wake()  # no on_idle to pull from
    with pytest.raises(LinkError, match="already attached"):
        net.attach("n0", "mesh", Inbox())
    b.on_idle = lambda port, now: bytes(238)  # larger than the MTU: local misuse
    b.wake()
    with pytest.raises(LinkError, match="MTU"):
        clock.run_until(60.0)


def test_duty_cycle_is_honoured_by_the_radio() -> None:
    clock, net, (tx, _), _ = mesh(4, 2, LORA_LONG_FAST)
    tx.on_idle = lambda port, now: bytes(59)  # a greedy link layer
    tx.wake()
    clock.run_until(2 * 3600.0)
    assert tx.stats.duty_deferrals > 0
    ends = [(t.start, t.end) for t in net.transmissions]
    for k in range(0, 7200, 300):
        lo, hi = float(k), k + 3600.0
        on_air = sum(max(0.0, min(e, hi) - max(s, lo)) for s, e in ends)
        assert on_air <= 360.0 + 1e-6
    assert tx.stats.airtime == pytest.approx(2 * 360.0, rel=0.01)


def test_statistics_add_up() -> None:
    clock, net, ports, _ = mesh(11, 4, LORA_LONG_FAST, loss=0.3)
    for i, port in enumerate(ports):
        beacon(clock, port, every=30.0, size=40, until=600.0, start=i * 3.0)
    clock.run_until(700.0)
    sent = sum(p.stats.sent for p in ports)
    assert sent == 4 * 20 == len(net.transmissions)
    heard = sum(p.stats.received + p.stats.lost for p in ports)
    assert heard == sent * 3
    total = net.node_stats("n0")
    assert total.airtime == pytest.approx(20 * LORA_LONG_FAST.airtime(40))
    util = net.channels["mesh"].utilisation(700.0)
    assert util == pytest.approx(80 * LORA_LONG_FAST.airtime(40) / 700.0)


def test_one_simulated_hour_of_21_nodes_runs_fast() -> None:
    started = time.perf_counter()
    clock, net, ports, inboxes = mesh(2024, 21, LORA_LONG_FAST, loss=0.1, jitter=0.3)
    for i, port in enumerate(ports):
        beacon(clock, port, every=30.0, size=59, until=3600.0, start=i * 1.4)
    clock.run_until(3600.0)
    wall = time.perf_counter() - started
    assert len(net.transmissions) == 21 * 120
    assert sum(len(i.frames) for i in inboxes) > 21 * 120 * 20 * 0.85
    assert wall < 2.0, f"one simulated hour took {wall:.2f} s of wall time"

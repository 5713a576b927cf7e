"""A seeded network simulator on virtual time: shared radio channels and point-to-point links.

Nodes attach to a :class:`Channel` and get a :class:`~fieldc2.sim.medium.Port`.
A channel is a broadcast medium: every other attached node that can hear the
sender receives each frame (a point-to-point link is a channel of two ports,
where the ground side sends with the profile's downlink MTU).  On a
half-duplex profile (radio, Iridium) one transmission occupies the whole
channel for :meth:`~fieldc2.link.profiles.LinkProfile.airtime`, so
transmissions never overlap; on a full-duplex profile (IP) each port has its
own medium.  Frames arrive ``airtime + latency + jitter`` after they start.

Impairments, all drawn from one ``random.Random(seed)`` in a fixed order so a
seed reproduces a run exactly: i.i.d. loss per receiver, duplication (a second
copy with its own latency), reordering (random ``jitter`` on top of the
profile's latency range) and scheduled partitions.

Collisions are off by default: channel access is an ideal CSMA, where one
waiting port is chosen at random when the medium frees and transmits alone.
``contention_slots=n`` switches on a slotted-CSMA model: waiting ports draw
one of ``n`` backoff slots and those drawing the same lowest slot collide.
Hidden terminals and the capture effect are not modelled; partitions and
``loss`` stand in for them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import msgspec

from fieldc2.errors import LinkError
from fieldc2.link.profiles import LinkProfile
from fieldc2.sim.clock import VirtualClock
from fieldc2.sim.medium import IdleCallback, Medium, Port, PortStats, ReceiveCallback

#: Ports on one channel.  A Meshtastic mesh is usable up to a few dozen nodes
#: per channel; beyond this a scenario is almost certainly mis-written.
MAX_PORTS_PER_CHANNEL = 256
#: Records kept in each of the delivery and transmission logs.  A one-hour,
#: 21-node exercise writes ~60 000; past the limit logging stops and
#: ``log_overflow`` counts what was not written.
MAX_LOG = 2_000_000


class Transmission(msgspec.Struct, frozen=True):
    """One frame on the air: who sent how much, from when to when."""

    seq: int
    channel: str
    sender: str
    start: float
    end: float
    size: int
    collided: bool = False
    """Another frame started at the same instant; receivers hearing both lost both."""


class Delivery(msgspec.Struct, frozen=True):
    """One copy of transmission ``seq`` handed to ``receiver`` at ``time``."""

    time: float
    seq: int
    channel: str
    sender: str
    receiver: str
    size: int
    duplicate: bool


class Partition(msgspec.Struct, frozen=True):
    """Between ``start`` (inclusive) and ``end`` (exclusive) the two sides cannot
    hear each other.  ``side_b`` None means everyone not in ``side_a``."""

    start: float
    end: float
    side_a: frozenset[str]
    side_b: frozenset[str] | None = None
    channel: str | None = None

    def blocks(self, sender: str, receiver: str, t: float, channel: str) -> bool:
        if not self.start <= t < self.end or self.channel not in (None, channel):
            return False
        a = self.side_a
        if self.side_b is None:
            return (sender in a) != (receiver in a)
        b = self.side_b
        return (sender in a and receiver in b) or (sender in b and receiver in a)


class Channel:
    """One medium shared by the ports attached to it, with its impairments."""

    def __init__(self, net: Network, name: str, profile: LinkProfile, *, loss: float,
                 duplicate: float, jitter: float, max_ports: int,
                 contention_slots: int) -> None:
        if not (0.0 <= loss <= 1.0 and 0.0 <= duplicate <= 1.0 and jitter >= 0.0):
            raise LinkError(f"channel {name!r}: loss/duplicate in [0, 1], jitter >= 0")
        if contention_slots < 0 or (contention_slots and not profile.half_duplex):
            raise LinkError(f"channel {name!r}: collisions need a half-duplex profile")
        self.net = net
        self.name = name
        self.profile = profile
        self.loss = loss
        self.duplicate = duplicate
        self.jitter = jitter
        self.max_ports = max_ports
        self.contention_slots = contention_slots
        """0: ideal access, no collisions; n: slotted CSMA with n backoff slots."""
        self.ports: list[Port] = []
        self.airtime = 0.0
        """Total seconds of transmission on this channel."""
        self.created = net.clock.now()
        self._shared = Medium(self) if profile.half_duplex else None

    def utilisation(self, now: float) -> float:
        """Fraction of time the channel was busy since it was created (per medium)."""
        elapsed = now - self.created
        media = 1 if self._shared is not None else max(1, len(self.ports))
        return self.airtime / (elapsed * media) if elapsed > 0 else 0.0

    def _medium_for_new_port(self) -> Medium:
        return self._shared if self._shared is not None else Medium(self)

    def _transmit(self, starting: list[tuple[Port, bytes]], start: float) -> float:
        """Put frames on the air now (several: a collision); return when the last ends."""
        net = self.net
        ends = []
        for sender, frame in starting:
            airtime = self.profile.airtime(len(frame))
            ends.append(start + airtime)
            self.airtime += airtime
            sender.stats.sent += 1
            sender.stats.sent_bytes += len(frame)
            sender.stats.airtime += airtime
            if sender.duty is not None:
                sender.duty.record(airtime, start)
            net._log_transmission(Transmission(net._next_seq(), self.name, sender.node_id,
                                               start, start + airtime, len(frame),
                                               collided=len(starting) > 1))
        first_seq = net._seq - len(starting) + 1
        senders = {sender for sender, _ in starting}
        for port in self.ports:
            if port in senders:
                continue
            audible = [(i, s, f) for i, (s, f) in enumerate(starting)
                       if self._audible(s, port, start)]
            if len(audible) > 1:
                port.stats.collided += len(audible)
            elif audible:
                i, sender, frame = audible[0]
                self._copy_to(port, sender, frame, first_seq + i, ends[i])
        return max(ends)

    def _audible(self, sender: Port, port: Port, start: float) -> bool:
        if self.net.can_hear(sender.node_id, port.node_id, start, self.name):
            return True
        port.stats.blocked += 1
        return False

    def _copy_to(self, port: Port, sender: Port, frame: bytes, seq: int, end: float) -> None:
        """Decide, with the seeded generator, whether and when ``port`` hears ``frame``."""
        net = self.net
        rng = net.rng
        if self.loss and rng.random() < self.loss:
            port.stats.lost += 1
            return
        net.clock.call_at(end + self._delay(rng), net._deliver, port, sender, frame, seq,
                          False)
        if self.duplicate and rng.random() < self.duplicate:
            net.clock.call_at(end + self._delay(rng), net._deliver, port, sender, frame,
                              seq, True)

    def _delay(self, rng: random.Random) -> float:
        lo, hi = self.profile.latency
        delay = lo if hi == lo else rng.uniform(lo, hi)
        return delay + rng.uniform(0.0, self.jitter) if self.jitter else delay


class Network:
    """Channels, ports, partitions, statistics and logs of one simulated run."""

    def __init__(self, clock: VirtualClock, seed: int, *, log: bool = True) -> None:
        self.clock = clock
        self.rng = random.Random(seed)
        self.channels: dict[str, Channel] = {}
        self.partitions: list[Partition] = []
        self.transmissions: list[Transmission] = []
        self.deliveries: list[Delivery] = []
        self.log_overflow = 0
        self._log = log
        self._seq = 0

    def add_channel(self, name: str, profile: LinkProfile, *, loss: float = 0.0,
                    duplicate: float = 0.0, jitter: float = 0.0,
                    max_ports: int = MAX_PORTS_PER_CHANNEL,
                    contention_slots: int = 0) -> Channel:
        """A broadcast channel (a radio net) with the given impairments.

        ``contention_slots`` > 0 switches collisions on (see the module docstring)."""
        if name in self.channels:
            raise LinkError(f"channel {name!r} exists already")
        channel = Channel(self, name, profile, loss=loss, duplicate=duplicate,
                          jitter=jitter, max_ports=max_ports,
                          contention_slots=contention_slots)
        self.channels[name] = channel
        return channel

    def add_link(self, name: str, profile: LinkProfile, *, loss: float = 0.0,
                 duplicate: float = 0.0, jitter: float = 0.0) -> Channel:
        """A point-to-point link: two ports; attach the ground end with ``downlink=True``."""
        return self.add_channel(name, profile, loss=loss, duplicate=duplicate,
                                jitter=jitter, max_ports=2)

    def attach(self, node_id: str, channel: str, on_receive: ReceiveCallback, *,
               on_idle: IdleCallback | None = None, downlink: bool = False) -> Port:
        """Attach ``node_id`` to ``channel``; frames it hears go to ``on_receive(frame, now)``.

        ``on_idle(port, now) -> bytes | None`` makes the port pull-driven: after
        :meth:`Port.wake`, it is called at the moment the port may transmit.
        ``downlink`` marks the ground end of a link (sends with ``mtu_down``)."""
        try:
            chan = self.channels[channel]
        except KeyError:
            raise LinkError(f"no channel {channel!r}") from None
        if len(chan.ports) >= chan.max_ports:
            raise LinkError(f"channel {channel!r} is full ({chan.max_ports} ports)")
        if any(p.node_id == node_id for p in chan.ports):
            raise LinkError(f"{node_id!r} is already attached to {channel!r}")
        port = Port(chan, chan._medium_for_new_port(), node_id, on_receive,
                    on_idle=on_idle, downlink=downlink)
        chan.ports.append(port)
        return port

    def partition(self, side_a: Iterable[str], side_b: Iterable[str] | None, start: float,
                  end: float = math.inf, *, channel: str | None = None) -> None:
        """From ``start`` to ``end`` the sides cannot hear each other (None: everyone else).

        The test is made when a transmission starts; a frame already on the
        air when the partition begins is still heard."""
        if end < start:
            raise LinkError(f"partition ends ({end}) before it starts ({start})")
        b = None if side_b is None else frozenset(side_b)
        self.partitions.append(Partition(start, end, frozenset(side_a), b, channel))

    def isolate(self, node_id: str, start: float, end: float = math.inf, *,
                channel: str | None = None) -> None:
        """Cut ``node_id`` off: it hears nobody and nobody hears it."""
        self.partition([node_id], None, start, end, channel=channel)

    def can_hear(self, sender: str, receiver: str, t: float, channel: str) -> bool:
        """Whether a transmission from ``sender`` starting at ``t`` can reach ``receiver``."""
        return not any(p.blocks(sender, receiver, t, channel) for p in self.partitions)

    def ports(self, node_id: str) -> list[Port]:
        """Every port of ``node_id``, in channel creation order."""
        return [p for c in self.channels.values() for p in c.ports if p.node_id == node_id]

    def node_stats(self, node_id: str) -> PortStats:
        """Counters of ``node_id`` summed over all its ports."""
        total = PortStats()
        for port in self.ports(node_id):
            total.add(port.stats)
        return total

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _log_transmission(self, record: Transmission) -> None:
        if self._log and len(self.transmissions) < MAX_LOG:
            self.transmissions.append(record)
        elif self._log:
            self.log_overflow += 1

    def _deliver(self, port: Port, sender: Port, frame: bytes, seq: int,
                 duplicate: bool) -> None:
        now = self.clock.now()
        port.stats.received += 1
        if duplicate:
            port.stats.duplicated += 1
        if self._log and len(self.deliveries) < MAX_LOG:
            self.deliveries.append(Delivery(now, seq, port.channel.name, sender.node_id,
                                            port.node_id, len(frame), duplicate))
        elif self._log:
            self.log_overflow += 1
        port.on_receive(frame, now)

"""Outgoing units in four precedence queues, with TTL, coalescing and custody.

A *unit* is what one link record carries: a whole message or one fragment.
Reliable units stay queued after they are sent (custody) until an ack
releases them or their TTL runs out; unreliable ones leave when sent.
Selection is strict precedence: a class is only looked at when no unit of a
higher class is waiting to be sent now, so a FLASH submitted behind a
half-sent ROUTINE file goes in the very next body.

Overflow policy (style rule 11): when the queue is full, unsent unreliable
units of the lowest class go first (positions are latest-only anyway); a
message that finds nothing lower to evict is refused with
:class:`~fieldc2.errors.LinkError` (loud), except unreliable ROUTINE, which
is dropped and counted.  Reliable units are never evicted once accepted.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from fieldc2.errors import LinkError
from fieldc2.link.body import BROADCAST
from fieldc2.link.types import CoalesceKey, LinkStats
from fieldc2.model.precedence import Precedence

#: Units queued at once.  One hour of a 10 % LoRa LongFast duty cycle carries
#: about 700 full bodies; more queued than that would expire before it airs.
MAX_QUEUED_UNITS = 512
#: Payload bytes queued at once, the same hour of airtime in bytes (~32 KiB).
MAX_QUEUED_BYTES = 32 * 1024


class Unit(msgspec.Struct):
    """One record's worth of outgoing traffic (mutable: attempts, acks)."""

    precedence: int
    origin: int
    dest: int
    payload: bytes
    reliable: bool
    expires: float
    seq: int = 0
    """Per-origin seq (reliable) or message id (unreliable fragment)."""
    index: int = 0
    count: int = 1
    """1 for a whole message, else the number of fragments."""
    key: CoalesceKey | None = None
    sent: int = 0
    next_try: float = 0.0
    sent_at: float = 0.0
    """When it was last transmitted: the start of an RTT sample (``link.rtt``)."""
    acked_by: list[int] = []
    reoffer: bool = False
    """A one-shot anti-entropy copy: not in custody, leaves when sent."""


class Outbox:
    """Four FIFO queues, one per precedence; see the module docstring."""

    def __init__(self, stats: LinkStats, *, max_units: int = MAX_QUEUED_UNITS,
                 max_bytes: int = MAX_QUEUED_BYTES) -> None:
        self.queues: list[list[Unit]] = [[] for _ in Precedence]
        self.stats = stats
        self.max_units = max_units
        self.max_bytes = max_bytes
        self._bytes = 0

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues)

    def units(self) -> Iterator[Unit]:
        """Every unit, highest class first, FIFO within a class."""
        for q in reversed(self.queues):
            yield from q

    def admit(self, units: list[Unit], precedence: Precedence) -> bool:
        """Make room for ``units``; False if they are ROUTINE unreliable and dropped.

        Raises LinkError when a message that must not be dropped finds no room."""
        need_units, need_bytes = len(units), sum(len(u.payload) for u in units)
        if need_units > self.max_units or need_bytes > self.max_bytes:
            raise LinkError(f"message of {need_bytes} B exceeds the whole queue")
        while (len(self) + need_units > self.max_units
               or self._bytes + need_bytes > self.max_bytes):
            victim = self._eviction_victim(precedence)
            if victim is None:
                if precedence == Precedence.ROUTINE and not units[0].reliable:
                    self.stats.dropped_overflow += 1
                    return False
                raise LinkError(f"link queue full: {precedence.name} message refused")
            self.remove(victim)
            self.stats.dropped_overflow += 1
        return True

    def _eviction_victim(self, precedence: int) -> Unit | None:
        for q in self.queues[: precedence + 1]:
            for unit in q:
                if not unit.reliable and unit.sent == 0:
                    return unit
        return None

    def push(self, unit: Unit) -> None:
        self.queues[unit.precedence].append(unit)
        self._bytes += len(unit.payload)

    def remove(self, unit: Unit) -> None:
        self.queues[unit.precedence].remove(unit)
        self._bytes -= len(unit.payload)

    def supersede(self, origin: int, key: CoalesceKey) -> list[Unit]:
        """Remove every not-yet-acked unit of ``origin`` with ``key``; return them.

        Latest-only: a sent fragment's siblings go too (the receiver's partial
        times out); reliable victims are returned so the caller can abandon them."""
        gone = [u for u in self.units() if u.key == key and u.origin == origin]
        for unit in gone:
            self.remove(unit)
        self.stats.coalesced += len({(u.seq, u.reliable) for u in gone})
        return gone

    def expire(self, now: float) -> list[Unit]:
        """Remove and return every unit whose TTL has run out."""
        gone = [u for u in self.units() if u.expires <= now]
        for unit in gone:
            self.remove(unit)
        return gone

    def eligible(self, now: float) -> Iterator[Unit]:
        """Units that may go now, highest class first, FIFO within a class."""
        for unit in self.units():
            if unit.next_try <= now:
                yield unit

    def release(self, origin: int, covered: set[int], acker: int,
                custodians: frozenset[int], peers: frozenset[int]) -> list[Unit]:
        """Apply an ack from ``acker`` covering ``covered`` seqs of ``origin``.

        A unit is released when its destination acked, when a custodian acked
        (custody transfer), or for a broadcast when every expected peer has;
        where custodians exist and no peers are listed, only custody releases
        a broadcast (another field node's ack does not make it reach the relay)."""
        done: list[Unit] = []
        for unit in list(self.units()):
            if not unit.reliable or unit.reoffer or unit.origin != origin:
                continue
            if unit.seq not in covered:
                continue
            if acker not in unit.acked_by:
                unit.acked_by.append(acker)
            everyone = (peers or not custodians) and peers <= {*unit.acked_by, unit.origin}
            if acker == unit.dest or acker in custodians or (unit.dest == BROADCAST
                                                             and everyone):
                self.remove(unit)
                done.append(unit)
        return done

    def next_event_time(self) -> float | None:
        """Earliest retry or expiry among queued units."""
        times = [min(u.next_try, u.expires) for u in self.units()]
        return min(times, default=None)

"""Custody: acks in and out, releases, expiry, store-and-forward, SKIPs, re-offers.

A mixin of :class:`~fieldc2.link.endpoint.LinkEndpoint`, split out to keep the
endpoint readable.  An ack from a peer releases the units it covers when the
peer is their destination or a custodian (custody transfer: the relay now
answers for them); a forwarding endpoint (``LinkConfig.forward``) acks what it
receives for others and keeps it until the next hop acks it.
"""

from __future__ import annotations

import random

import msgspec

from fieldc2.errors import LinkError
from fieldc2.link.body import BROADCAST, AckRecord
from fieldc2.link.inbox import MAX_WINDOW, Inbox, unwrap
from fieldc2.link.outbox import Outbox, Unit
from fieldc2.link.rtt import RttTable
from fieldc2.link.sync import Sync
from fieldc2.link.types import Acked, Expired, LinkConfig, LinkEvent, LinkStats
from fieldc2.model.precedence import Precedence

#: SKIP records waiting to be sent.  Each answers one peer waiting for one
#: abandoned seq; the same peer asks again with its next ack if one is dropped.
MAX_PENDING_SKIPS = 32
#: Re-offers wait a random 0..this many ack delays, so that when several nodes
#: hold what a peer lacks, the first to send suppresses the others (NORM-style).
REOFFER_SPREAD = 4.0


class Custody:
    """Ack, expiry and forwarding logic over the endpoint's queues."""

    config: LinkConfig
    slot: int
    stats: LinkStats
    outbox: Outbox
    inbox: Inbox
    sync: Sync
    _next_seq: dict[int, int]
    _skips: dict[tuple[int, int], None]
    _ack_due: dict[int, float]
    _events: list[LinkEvent]
    _rng: random.Random
    rtt: RttTable

    def _ref(self, origin: int) -> int | None:  # pragma: no cover - defined by the endpoint
        raise NotImplementedError

    def _ack_record(self, origin: int) -> AckRecord | None:
        stream = self.inbox.streams.get(origin)
        if stream is None:
            return None
        return AckRecord(origin, stream.cum, stream.bitmap())

    def _on_ack(self, sender: int, record: AckRecord, now: float) -> list[LinkEvent]:
        ref = self._ref(record.origin)
        if ref is None:
            return []
        cum = unwrap(record.cum, ref)
        held = {cum + 2 + i for i in range(record.bitmap.bit_length()) if record.bitmap >> i & 1}
        return self._apply_ack(sender, record.origin, cum, held, now, offer=False)

    def _rtt_peer(self, unit: Unit) -> int:
        """Whose acks time ``unit``'s retransmission: a custodian's when there
        is one (custody transfer), else its destination's, else any peer's
        (``BROADCAST`` stands for whoever acks a broadcast first)."""
        others = self.config.custodians - {self.slot}
        if others:
            return min(others)
        return unit.dest

    def _sample_rtt(self, released: list[Unit], now: float) -> None:
        """Karn's rule: only a unit sent exactly once times its ack."""
        for unit in released:
            if unit.sent == 1 and not unit.reoffer:
                self.rtt.sample(self._rtt_peer(unit), now - unit.sent_at)

    def _apply_ack(self, sender: int, origin: int, cum: int, held: set[int], now: float, *,
                   offer: bool) -> list[LinkEvent]:
        """``sender`` holds ``origin``'s stream up to ``cum`` plus ``held`` (an ack,
        or a digest entry, which is a cumulative ack too)."""
        covered = {u.seq for u in self.outbox.units()
                   if u.origin == origin and u.reliable and (u.seq <= cum or u.seq in held)}
        released = self.outbox.release(origin, covered, sender,
                                       self.config.custodians - {self.slot},
                                       self.config.peers - {self.slot})
        if not offer:  # an ack record; a digest's cumulative ack waits a digest period
            self._sample_rtt(released, now)
        self._peer_view(sender, origin, cum, held, now, offer=offer)
        return self._acked(released, sender)

    def _acked(self, released: list[Unit], by: int) -> list[LinkEvent]:
        """One Acked per message whose last outstanding unit was just released."""
        events: list[LinkEvent] = []
        firsts = sorted({(u.origin, u.seq - u.index, u.count) for u in released})
        for origin, first, count in firsts:
            if not any(u.origin == origin and first <= u.seq < first + count and u.reliable
                       and not u.reoffer for u in self.outbox.units()):
                events.append(Acked(origin, first, by))
        return events

    def _peer_view(self, peer: int, origin: int, peer_cum: int, held: set[int], now: float, *,
                   offer: bool) -> None:
        """React to what ``peer`` holds of ``origin``: SKIPs, and re-offers from history."""
        queued = {(u.origin, u.seq) for u in self.outbox.units() if u.reliable}
        gone = self.sync.skips_for(origin, peer_cum, held)
        if origin in self._next_seq:  # our own stream: what we can no longer provide
            top = min(self._next_seq[origin], peer_cum + 1 + MAX_WINDOW)
            gone += [s for s in range(peer_cum + 1, top) if s not in held
                     and (origin, s) not in queued and (origin, s) not in self.sync.history]
        for seq in gone:
            if len(self._skips) < MAX_PENDING_SKIPS:
                self._skips[(origin, seq)] = None
        if not offer or not (self.sync.hub or origin in self._next_seq):
            return  # a field node re-offers its own traffic only (sync docstring)
        spread = self._rng.uniform(0, REOFFER_SPREAD * self.config.ack_delay)
        for unit in self.sync.missing(peer, origin, peer_cum, now):
            if (unit.origin, unit.seq) in queued:
                continue  # in custody here: retransmission already covers it
            copy = msgspec.structs.replace(unit, reoffer=True, sent=0, next_try=now + spread,
                                           acked_by=[])
            self._push_if_room(copy)

    def _push_if_room(self, unit: Unit) -> bool:
        try:
            admitted = self.outbox.admit([unit], Precedence(unit.precedence))
        except LinkError:
            admitted = False
        if admitted:
            self.outbox.push(unit)
        return admitted

    def _take_custody(self, unit: Unit) -> None:
        """Store-and-forward: keep a copy of traffic for others until its next hop acks."""
        if not self.config.forward or unit.dest in (BROADCAST, self.slot, *self._next_seq):
            return
        copy = msgspec.structs.replace(unit, sent=0, next_try=0.0, acked_by=[])
        if self._push_if_room(copy):
            self.stats.custody_taken += 1

    def _expire(self, now: float) -> None:
        """Drop expired units; a reliable one is abandoned and reported once."""
        reported: set[tuple[int, int, bool]] = set()
        for unit in self.outbox.expire(now):
            if unit.reoffer:
                continue
            first = unit.seq - unit.index if unit.reliable else unit.seq
            if unit.reliable:
                self.sync.abandon(unit.origin, unit.seq)
            key = (unit.origin, first, unit.reliable)
            if unit.count > 1 and key in reported:
                continue
            reported.add(key)
            self.stats.expired += 1
            if unit.reliable:
                self._events.append(Expired(unit.origin, first, Precedence(unit.precedence)))

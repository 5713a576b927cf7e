"""Receiving: one authenticated body in, link events out (a mixin of the endpoint).

Every record of a body is validated before any is applied, so a malformed
body raises :class:`~fieldc2.errors.RadioFrameError` and changes nothing;
deliveries of earlier records are never lost to a later record's error.
"""

from __future__ import annotations

from fieldc2.errors import RadioFrameError
from fieldc2.link.body import (
    BROADCAST,
    AckRecord,
    DataRecord,
    DigestRecord,
    FragmentRecord,
    Record,
    SkipRecord,
    decode_body,
)
from fieldc2.link.custody import REOFFER_SPREAD, Custody
from fieldc2.link.inbox import JOIN_LOOKBACK, Held, unwrap
from fieldc2.link.outbox import Unit
from fieldc2.link.types import Delivered, LinkEvent, PeerDigest, PeerHeard, Skipped
from fieldc2.model.precedence import Precedence


class Receiver(Custody):
    """The receive path of :class:`~fieldc2.link.endpoint.LinkEndpoint`."""

    def _drain(self) -> list[LinkEvent]:
        events, self._events = self._events, []
        return events

    def receive_body(self, sender: int, body: bytes, now: float) -> list[LinkEvent]:
        """Apply one authenticated body from ``sender``; the resulting events.

        Raises RadioFrameError (and changes nothing) when the body is malformed."""
        if not 0 <= sender < BROADCAST or sender == self.slot:
            raise RadioFrameError(f"sender {sender} is not a peer's slot")
        records = decode_body(body)
        for record in records:
            _check(record)
        silent = self.sync.heard(sender, now)
        if silent is not None and silent > self.config.rto:  # back, not first contact
            self._events.append(PeerHeard(sender, silent))
            self._hurry(sender, now)
        events = self._drain()
        for record in records:
            events += self._on_record(sender, record, now)
        return events

    def _hurry(self, peer: int, now: float) -> None:
        """``peer`` is back after a silence longer than the first retransmission
        timeout (a healed partition): what it would take over goes again soon
        instead of waiting out a backoff grown during the silence (up to
        ``max_rto``).  FLASH and IMMEDIATE go within a few ack delays; the
        lower classes are spread over one retransmission timeout, so that a
        relay heard again by twenty nodes is not answered by all their
        backlogs at once, ahead of the positions that rebuild its picture."""
        urgent = REOFFER_SPREAD * self.config.ack_delay
        for unit in self.outbox.units():
            takes_it = unit.dest in (peer, BROADCAST) or peer in self.config.custodians
            if unit.reliable and not unit.reoffer and takes_it and unit.sent:
                spread = urgent if unit.precedence >= Precedence.IMMEDIATE else self.config.rto
                unit.sent = min(unit.sent, 1)
                unit.next_try = min(unit.next_try, now + self._rng.uniform(0, spread))

    def _on_record(self, sender: int, record: Record, now: float) -> list[LinkEvent]:
        match record:
            case DataRecord(origin=origin) | FragmentRecord(origin=origin):
                origin = sender if origin is None else origin
                self._overheard(origin, record, now)
                if origin in self._next_seq or origin == self.slot:
                    return []  # our own traffic, echoed by a relay or a re-offer
                return self._on_data(sender, origin, record, now)
            case AckRecord():
                return self._on_ack(sender, record, now)
            case DigestRecord():
                return self._on_digest(sender, record, now)
            case SkipRecord(origin=origin, seq=seq):
                ref = self._ref(origin)
                if ref is None or not self.inbox.skip(origin, unwrap(seq, ref)):
                    return []
                return self._advance(origin)
        return []  # pragma: no cover

    def _overheard(self, origin: int, record: DataRecord | FragmentRecord, now: float) -> None:
        """Someone sent this reliable unit: do not re-offer it ourselves (suppression)."""
        ref = self._ref(origin)
        unreliable = record.seq is None or (isinstance(record, FragmentRecord)
                                            and not record.reliable)
        if ref is None or record.seq is None or unreliable:
            return
        seq = unwrap(record.seq, ref)
        self.sync.overheard(origin, seq, now)
        for unit in [u for u in self.outbox.units() if u.reoffer and u.origin == origin
                     and u.seq == seq]:
            self.outbox.remove(unit)

    def _on_data(self, sender: int, origin: int, record: DataRecord | FragmentRecord,
                 now: float) -> list[LinkEvent]:
        if isinstance(record, DataRecord) and record.seq is None:
            return self._deliver(origin, record.payload, record.precedence, None,
                                 record.dest, sender)
        if isinstance(record, FragmentRecord) and not record.reliable:
            whole = self.inbox.fragment(origin, record.seq, record.index, record.count,
                                        record.chunk, now)
            if whole is None:
                return []
            return self._deliver(origin, whole, record.precedence, None, record.dest, sender)
        return self._on_reliable(sender, origin, record, now)

    def _on_reliable(self, sender: int, origin: int, record: DataRecord | FragmentRecord,
                     now: float) -> list[LinkEvent]:
        if isinstance(record, DataRecord):
            held = Held(record.precedence, record.dest, sender, record.payload)
        else:
            held = Held(record.precedence, record.dest, sender, record.chunk,
                        record.index, record.count)
        assert record.seq is not None
        seq, new = self.inbox.accept(origin, record.seq, held)
        if origin not in self.inbox.streams:
            return []
        if self._acks(sender, record.dest):
            self._ack_due.setdefault(origin, now + self.config.ack_delay)
        if not new:
            return []
        unit = Unit(held.precedence, origin, held.dest, held.payload or b"", True,
                    now + self.config.ttl[Precedence(held.precedence)], seq,
                    held.index, held.count)
        self.sync.remember(unit)
        self._take_custody(unit)
        return self._advance(origin)

    def _acks(self, sender: int, dest: int) -> bool:
        """Whether a reliable unit from ``sender`` to ``dest`` is acknowledged here.

        What is addressed to us, and what we forward, always.  A broadcast only
        where an ack means something: at a hub (custody), when a custodian sent
        it (it waits for acks), or when this node is one of the ``peers`` every
        broadcast must reach.  A field node's ack of another field node's
        broadcast would release nothing (only custody does, outbox.release)."""
        if dest == self.slot or self.config.forward:
            return True
        if dest != BROADCAST:
            return False
        return (self.sync.hub or sender in self.config.custodians
                or self.slot in self.config.peers)

    def _advance(self, origin: int) -> list[LinkEvent]:
        ready, skipped = self.inbox.advance(origin)
        events: list[LinkEvent] = [Skipped(origin, seq) for seq in skipped]
        for r in ready:
            events += self._deliver(origin, r.payload, r.held.precedence, r.seq, r.held.dest,
                                    r.held.sender)
        return events

    def _deliver(self, origin: int, payload: bytes, precedence: int, seq: int | None,
                 dest: int, sender: int) -> list[LinkEvent]:
        if dest not in (BROADCAST, self.slot) and dest not in self._next_seq:
            return []
        self.stats.delivered += 1
        return [Delivered(origin, payload, Precedence(precedence), seq, dest, sender)]

    def _on_digest(self, sender: int, record: DigestRecord, now: float) -> list[LinkEvent]:
        events: list[LinkEvent] = []
        listed = set()
        for origin, wire in record.origins:
            listed.add(origin)
            if origin not in self._next_seq and origin != self.slot:
                self.inbox.stream(origin, wire + 1)  # first news of it: join its stream
            ref = self._ref(origin)
            if ref is None:
                continue
            peer_cum = unwrap(wire, ref)
            if peer_cum > ref and origin not in self._next_seq:
                self.sync.peer_ahead(sender, origin, peer_cum, now)  # tell it what we lack
            events += self._apply_ack(sender, origin, peer_cum, set(), now, offer=True)
        # a field node's digest lists only some origins (endpoint._digest_origins);
        # a hub's lists all, and a field node lists the hubs' own
        complete = self.sync.hub or sender in self.config.custodians
        for origin in self._next_seq.keys() - listed - {sender} if complete else ():
            # the peer never heard of us: it would join our stream this far back
            joined = max(0, self._next_seq[origin] - 1 - JOIN_LOOKBACK)
            self._peer_view(sender, origin, joined, set(), now, offer=True)
        if record.tracks:
            events.append(PeerDigest(sender, {t: (n, time) for t, n, time in record.tracks}))
        return events


def _check(record: Record) -> None:
    """Refuse values a well-formed peer never sends, before anything is applied."""
    match record:
        case DataRecord(origin=origin) | FragmentRecord(origin=origin):
            bad = origin == BROADCAST
        case AckRecord(origin=origin) | SkipRecord(origin=origin):
            bad = origin == BROADCAST
        case DigestRecord(origins=origins):
            bad = any(o == BROADCAST for o, _ in origins)
        case _:  # pragma: no cover
            bad = True
    if bad:
        raise RadioFrameError("slot 255 cannot originate traffic")

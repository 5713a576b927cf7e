"""Glue for relays, nodes and the simulator: records in, sealed frames out, and back.

:class:`RadioEndpoint` stacks the three sans-I/O layers of the contract
(``docs/dil.md``)::

    compact records  --protocol.compact-->  payload bytes
    payload bytes    --LinkEndpoint------->  body bytes     (queues, custody, digests)
    body bytes       --FrameSealer/Opener->  frame bytes    (AES-CCM, 4 B tag)

How each record kind travels is the table :data:`HANDLING`: positions are
unreliable, latest-only per track and split into one link record per fix (so
each is superseded on its own, and each extra fix in a body costs its delta
plus at most 2 B); orders, reports, texts and order statuses are reliable.
The link's digests carry this node's per-track latest received fix numbers,
and a digest from an ``ack_from`` peer (the relay) acknowledges fixes, which
is what lets later fixes be delta-coded.  Time is an argument throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

from fieldc2.crypto.radio import FrameOpener, FrameSealer
from fieldc2.errors import LinkError, RadioFrameError
from fieldc2.link.endpoint import LinkEndpoint
from fieldc2.link.types import Delivered, LinkEvent, Message, PeerDigest
from fieldc2.model.precedence import Precedence
from fieldc2.model.radio import (
    BROADCAST,
    RELAY_SLOT,
    Announce,
    Order,
    OrderStatus,
    PositionBatch,
    Record,
    Report,
    ReportKind,
    Text,
)
from fieldc2.protocol import compact
from fieldc2.protocol.compact import ChannelContext

#: Link events (acks, expiries, skips) kept for the caller to drain; the
#: oldest go first if nobody drains them, they are informational.
MAX_PENDING_EVENTS = 1024


@dataclass(frozen=True)
class Handling:
    """How one record kind crosses the link."""

    precedence: Precedence
    reliable: bool


#: Record kind -> handling.  Orders take their own precedence; a casualty
#: report goes IMMEDIATE (see :func:`handling_of`).
HANDLING: dict[type, Handling] = {
    PositionBatch: Handling(Precedence.ROUTINE, reliable=False),
    Announce: Handling(Precedence.ROUTINE, reliable=False),
    Text: Handling(Precedence.ROUTINE, reliable=True),
    Report: Handling(Precedence.PRIORITY, reliable=True),
    OrderStatus: Handling(Precedence.PRIORITY, reliable=True),
    Order: Handling(Precedence.IMMEDIATE, reliable=True),
}


def handling_of(record: Record) -> Handling:
    """The :class:`Handling` of ``record``; LinkError for a kind the link cannot carry."""
    base = HANDLING.get(type(record))
    if base is None:
        raise LinkError(f"{type(record).__name__} is not a radio record")
    match record:
        case Order(precedence=precedence):
            return Handling(Precedence(precedence), reliable=True)
        case Report(kind=ReportKind.CASUALTY):
            return Handling(Precedence.IMMEDIATE, reliable=True)
    return base


def _dest(record: Record) -> int:
    match record:
        case Order(to=to) | Text(to=to):
            return to
    return BROADCAST


class RadioEndpoint:
    """One node on one radio channel: compact codec + link layer + frame security."""

    def __init__(self, link: LinkEndpoint, sealer: FrameSealer, opener: FrameOpener,
                 context: ChannelContext, *, ack_from: frozenset[int] | None = None) -> None:
        if sealer.sender != link.slot:
            raise LinkError(f"sealer sends as {sealer.sender}, link is slot {link.slot}")
        self.link = link
        self.sealer = sealer
        self.opener = opener
        self.context = context
        self.ack_from = (ack_from if ack_from is not None
                         else frozenset() if link.slot == RELAY_SLOT else frozenset({RELAY_SLOT}))
        """Peers whose digests acknowledge our fixes (the relay, for a field node)."""
        self.record_errors = 0
        """Delivered payloads that did not decode (a delta base we lack, a bad record)."""
        self._events: list[LinkEvent] = []
        self._fixes: dict[int, int] = {}

    def submit_record(self, record: Record, now: float) -> int | None:
        """Queue ``record``; its link sequence number if reliable (see LinkEndpoint.submit)."""
        handling = handling_of(record)
        if isinstance(record, PositionBatch):
            for fix in record.fixes:
                payload = compact.encode(PositionBatch((fix,)), self.context)
                self.link.submit(Message(handling.precedence, payload, coalesce_key=("pos",
                                         fix.track)), now)
            return None
        key = ("announce", record.slot) if isinstance(record, Announce) else None
        payload = compact.encode(record, self.context)
        return self.link.submit(Message(handling.precedence, payload, handling.reliable,
                                        key, dest=_dest(record)), now)

    def next_frame(self, now: float) -> bytes | None:
        """The sealed frame to transmit now, or None (see LinkEndpoint.next_body)."""
        budget = min(self.link.config.body_budget, self.sealer.max_body)
        body = self.link.next_body(now, budget)
        return None if body is None else self.sealer.seal(body)

    def receive_frame(self, frame: bytes, now: float) -> list[Record]:
        """Records carried by ``frame``, each once.  FrameRejected / RadioFrameError
        when the frame itself is bad; a bad record inside is counted and skipped."""
        opened = self.opener.open(frame, now)
        return self._records(self.link.receive_body(opened.sender, opened.body, now), now)

    def get_timer(self) -> float | None:
        return self.link.get_timer()

    def handle_timer(self, now: float) -> None:
        self._keep(self.link.handle_timer(now))

    def drain_events(self) -> list[LinkEvent]:
        """Acks, expiries and skips since the last call (order tracking uses them)."""
        events, self._events = self._events, []
        return events

    def _records(self, events: list[LinkEvent], now: float) -> list[Record]:
        records: list[Record] = []
        for event in events:
            match event:
                case Delivered(payload=payload):
                    record = self._decode(payload, now)
                    if record is not None:
                        records.append(record)
                case PeerDigest(peer=peer, tracks=tracks) if peer in self.ack_from:
                    for track, fix_no in tracks.items():
                        self.context.positions.acknowledge(track, fix_no)
                case _:
                    self._keep([event])
        return records

    def _decode(self, payload: bytes, now: float) -> Record | None:
        try:
            record = compact.decode(payload, self.context, now=now)
        except RadioFrameError:
            self.record_errors += 1
            return None
        if isinstance(record, PositionBatch):
            self._fixes.update((fix.track, fix.fix_no) for fix in record.fixes
                               if 0 <= fix.track < BROADCAST and 0 <= fix.fix_no <= 15)
            self.link.set_track_fixes(self._fixes)
        return record

    def _keep(self, events: list[LinkEvent]) -> None:
        self._events += events
        del self._events[:-MAX_PENDING_EVENTS]


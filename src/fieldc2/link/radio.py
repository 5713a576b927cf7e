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
A relay's digests (``advertise_tracks``) carry, per track, the latest fix
it received, named by fix number and time modulo 4096 s, if younger than
:data:`MAX_ACK_AGE`; a digest from an ``ack_from`` peer (the relay)
acknowledges those fixes, which is what lets later fixes be delta-coded, and
the sender takes an ack only for the very fix it names (fix numbers wrap at
16: see :mod:`fieldc2.protocol.compact_context`).  Field nodes' digests carry
no tracks: nobody acks against them.  Order statuses go to the relay, not to
everybody (only the command post follows orders).  Time is an argument
throughout; :meth:`RadioEndpoint.snapshot` covers the link, the opener and
the fix history, so a restarted relay keeps decoding the nodes' deltas.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

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
from fieldc2.protocol.compact_context import ACK_TIME_MODULUS

#: Link events (acks, expiries, skips) kept for the caller to drain; the
#: oldest go first if nobody drains them, they are informational.
MAX_PENDING_EVENTS = 1024
#: A relay acknowledges (digests) a track's fix only while it is at most this
#: old, seconds: the sender never deltas against an older base anyway
#: (compact_context.MAX_DELTA_AGE), and a younger fix can share its number and
#: time residue with no other fix (4096 s apart), so no ack is ambiguous.
MAX_ACK_AGE = 1800.0
#: A decoded fix this far in the receiver's future, seconds, is refused and
#: forgotten: only a wrong delta base (or a wrong clock) makes one.
MAX_FIX_AHEAD = 60.0
#: Version of :meth:`RadioEndpoint.snapshot`'s format.
SNAPSHOT_VERSION = 1


class _Snapshot(msgspec.Struct):
    version: int
    link: bytes
    opener: bytes
    positions: bytes


@dataclass(frozen=True)
class Handling:
    """How one record kind crosses the link."""

    precedence: Precedence
    reliable: bool


#: Record kind -> handling.  Orders take their own precedence; a FLASH text
#: or report (``flash``, signed by its sender) goes FLASH, a casualty report
#: IMMEDIATE (see :func:`handling_of`).
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
        case Text(flash=True) | Report(flash=True):
            return Handling(Precedence.FLASH, reliable=True)
        case Report(kind=ReportKind.CASUALTY):
            return Handling(Precedence.IMMEDIATE, reliable=True)
    return base


def _dest(record: Record) -> int:
    match record:
        case Order(to=to) | Text(to=to):
            return to
        case OrderStatus():
            return RELAY_SLOT  # the command post follows orders; no node chases them
    return BROADCAST


class RadioEndpoint:
    """One node on one radio channel: compact codec + link layer + frame security."""

    def __init__(self, link: LinkEndpoint, sealer: FrameSealer, opener: FrameOpener,
                 context: ChannelContext, *, ack_from: frozenset[int] | None = None,
                 advertise_tracks: bool | None = None) -> None:
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
        self.advertise_tracks = (link.slot in link.config.custodians
                                 if advertise_tracks is None else advertise_tracks)
        """Whether this node's digests acknowledge fixes (the relay, a custodian)."""
        self.last_sender: int | None = None
        """Authenticated sender of the last frame :meth:`receive_frame` accepted."""
        self.future_fixes = 0
        """Fixes refused because they lay in this node's future (:data:`MAX_FIX_AHEAD`)."""
        self._events: list[LinkEvent] = []

    def submit_record(self, record: Record, now: float, *,
                      precedence: Precedence | None = None) -> int | None:
        """Queue ``record``; its link sequence number if reliable (see LinkEndpoint.submit).

        ``precedence`` overrides the class :data:`HANDLING` gives the kind (a
        FLASH report, an IMMEDIATE text); reliability stays the kind's."""
        handling = handling_of(record)
        if precedence is not None:
            handling = Handling(Precedence(precedence), handling.reliable)
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
        self.last_sender = opened.sender
        return self._records(self.link.receive_body(opened.sender, opened.body, now), now)

    def get_timer(self) -> float | None:
        return self.link.get_timer()

    def handle_timer(self, now: float) -> None:
        self._keep(self.link.handle_timer(now))

    def drain_events(self) -> list[LinkEvent]:
        """Link events since the last call: acks, expiries and skips (order
        tracking uses them), peers heard after a silence, peers' digests."""
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
                case PeerDigest(peer=peer, tracks=tracks):
                    if peer in self.ack_from:
                        for track, (fix_no, time) in tracks.items():
                            self.context.positions.acknowledge(track, fix_no, time)
                    self._keep([event])
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
            return self._positions(record, now)
        return record

    def _positions(self, batch: PositionBatch, now: float) -> PositionBatch | None:
        """Refuse fixes from the future; refresh the tracks this node acknowledges."""
        future = [fix for fix in batch.fixes if fix.time > now + MAX_FIX_AHEAD]
        for fix in future:
            self.context.positions.forget_received(fix.track, fix.fix_no)
        self.future_fixes += len(future)
        if self.advertise_tracks:
            self.link.set_track_fixes({
                track: (fix.fix_no, fix.time % ACK_TIME_MODULUS)
                for track, fix in self.context.positions.received_latest().items()
                if 0 <= track < BROADCAST and fix.time >= now - MAX_ACK_AGE})
        fixes = tuple(fix for fix in batch.fixes if fix.time <= now + MAX_FIX_AHEAD)
        return PositionBatch(fixes) if fixes else None

    def snapshot(self) -> bytes:
        """Link, opener and fix history together, for :meth:`restore` after a restart."""
        return msgspec.msgpack.encode(_Snapshot(SNAPSHOT_VERSION, self.link.snapshot(),
                                                self.opener.snapshot(),
                                                self.context.positions.snapshot()))

    def restore(self, data: bytes) -> None:
        """Load a :meth:`snapshot` into this freshly built endpoint.  LinkError if unreadable."""
        try:
            snap = msgspec.msgpack.decode(data, type=_Snapshot)
        except msgspec.DecodeError as exc:
            raise LinkError(f"radio snapshot unreadable: {exc}") from exc
        if snap.version != SNAPSHOT_VERSION:
            raise LinkError(f"radio snapshot version {snap.version} not supported")
        self.link.restore(snap.link)
        self.opener.restore(snap.opener)
        try:
            self.context.positions.restore(snap.positions)
        except RadioFrameError as exc:
            raise LinkError(str(exc)) from exc

    def _keep(self, events: list[LinkEvent]) -> None:
        self._events += events
        del self._events[:-MAX_PENDING_EVENTS]


"""Fan-out: each event encoded once per wire format, batched per tick.

Within one tick the events for one audience are joined into one shared
buffer per wire format; every recipient gets that buffer in one write, or,
if it sent some of those events itself, the buffer with its own events cut
out.  Nothing is serialised per recipient.

A recipient whose transport is full is *slow*: it stops receiving writes and
collects a :class:`Backlog` instead, latest-only per uid for positions and a
bounded queue for everything else (chat, alerts, deletes, orders).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Protocol

from fieldc2.model.cot import Event, EventFacts
from fieldc2.protocol.cot_xml import serialize_event
from fieldc2.protocol.stream import Format
from fieldc2.protocol.tak_v1 import event_to_payload, mesh_frame, stream_frame
from fieldc2.router import GroupKey, Peer

_PROTO = Format.PROTO  # a plain name: Enum member lookup is slow on 3.11


class Outgoing:
    """One routed event with its encodings, each made at most once."""

    __slots__ = ("_frame", "_payload", "_xml", "event", "facts", "key", "sender")

    def __init__(
        self, event: Event, facts: EventFacts, key: GroupKey, sender: int,
        xml: bytes | None = None, payload: bytes | None = None,
    ) -> None:
        self.event = event
        self.facts = facts
        self.key = key
        self.sender = sender
        self._xml = xml
        self._payload = payload
        self._frame: bytes | None = None

    def xml(self) -> bytes:
        if self._xml is None:
            self._xml = serialize_event(self.event)
        return self._xml

    def payload(self) -> bytes:
        if self._payload is None:
            self._payload = event_to_payload(self.event)
        return self._payload

    def frame(self) -> bytes:
        """The TAK v1 stream frame."""
        if self._frame is None:
            self._frame = stream_frame(self.payload())
        return self._frame

    def mesh(self) -> bytes:
        return mesh_frame(self.payload())

    def encoded(self, fmt: Format) -> bytes:
        return self.frame() if fmt is _PROTO else self.xml()

    @property
    def latest_only(self) -> bool:
        """Positions may be coalesced: only the newest per uid matters."""
        return self.event.type.startswith("a-") and not self.facts.directed


class Recipient(Protocol):
    """What fan-out needs from a connected client."""

    id: int
    groups: GroupKey
    events_out: int

    @property
    def format(self) -> Format: ...

    @property
    def wants_items(self) -> bool:
        """True for a slow client (it backlogs) or a per-datagram sink (mesh)."""

    def write(self, data: bytes) -> None: ...

    def take_items(self, items: Iterable[Outgoing]) -> None: ...


class Backlog:
    """What a slow client will be sent once it catches up.  Bounded."""

    __slots__ = ("limit", "others", "positions")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.positions: dict[str, Outgoing] = {}
        self.others: deque[Outgoing] = deque()

    def add(self, item: Outgoing) -> bool:
        """Hold an item; False when the non-position queue is over its limit."""
        if item.latest_only:
            self.positions.pop(item.event.uid, None)
            self.positions[item.event.uid] = item
            return True
        self.others.append(item)
        return len(self.others) <= self.limit

    def drain(self) -> list[Outgoing]:
        items = list(self.others)
        items.extend(self.positions.values())
        self.others.clear()
        self.positions.clear()
        return items

    def __len__(self) -> int:
        return len(self.positions) + len(self.others)


class _Bucket:
    __slots__ = ("items", "senders")

    def __init__(self) -> None:
        self.items: list[Outgoing] = []
        self.senders: set[int] = set()


def _without(parts: Sequence[bytes], items: Sequence[Outgoing], sender: int) -> bytes:
    return b"".join(p for p, item in zip(parts, items, strict=True) if item.sender != sender)


class TickBatch:
    """Events collected during one tick, grouped by audience."""

    def __init__(self) -> None:
        self._buckets: dict[GroupKey, _Bucket] = {}

    def add(self, item: Outgoing) -> None:
        bucket = self._buckets.get(item.key)
        if bucket is None:
            bucket = self._buckets[item.key] = _Bucket()
        bucket.items.append(item)
        bucket.senders.add(item.sender)

    def __bool__(self) -> bool:
        return bool(self._buckets)

    def take(self) -> dict[GroupKey, _Bucket]:
        buckets, self._buckets = self._buckets, {}
        return buckets


def deliver_bucket(items: list[Outgoing], senders: set[int],
                   recipients: Sequence[Peer]) -> int:
    """Write one audience's events to each of its recipients; return deliveries."""
    shared: dict[Format, tuple[list[bytes], bytes]] = {}
    delivered = 0
    for peer in recipients:
        recipient: Recipient = peer  # type: ignore[assignment]
        rid = recipient.id
        own = rid in senders
        if recipient.wants_items:
            recipient.take_items(i for i in items if i.sender != rid)
            continue
        fmt = recipient.format
        encoded = shared.get(fmt)
        if encoded is None:
            parts = [item.encoded(fmt) for item in items]
            encoded = shared[fmt] = (parts, b"".join(parts))
        if own:
            data = _without(encoded[0], items, rid)
            if data:
                recipient.write(data)
                count = sum(1 for i in items if i.sender != rid)
                recipient.events_out += count
                delivered += count
        else:
            recipient.write(encoded[1])
            recipient.events_out += len(items)
            delivered += len(items)
    return delivered

"""The Store interface every backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

EntryId = tuple[str, tuple[str, ...]]
"""A latest-state entry: ``(uid, sorted groups of its audience)``.  The same
uid seen by two disjoint audiences is two entries, so no group can overwrite
or delete what another sees."""


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event as persisted: format-neutral XML plus what queries need."""

    uid: str
    type: str
    time: int
    """Event time, ms since the epoch."""
    stale: int
    """Stale time, ms since the epoch."""
    received: int
    """When the server received it, ms since the epoch."""
    groups: tuple[str, ...]
    """The audience it was routed to."""
    xml: bytes
    """The event as CoT XML."""
    current: bool = True
    """True when it is also the uid's latest state (part of the picture)."""


class Store(Protocol):
    """Latest state per uid plus an append-only history.

    Writes come in batches, one per fan-out tick, so a backend can make each
    batch one transaction.
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, events: Sequence[StoredEvent], deleted: Sequence[EntryId]) -> None:
        """Append ``events`` to the history, make the ``current`` ones the
        latest state of their ``(uid, groups)``, and remove the ``deleted``
        ``(uid, groups)`` entries from the latest state — all at once."""

    async def latest(self, now_ms: int) -> list[StoredEvent]:
        """The latest state of every entry that is not stale at ``now_ms``,
        plus emergency alerts (``b-a-o-*``), which stay until cancelled."""

    async def history(
        self, *, uid: str | None = None, since_ms: int = 0, limit: int = 1000
    ) -> list[StoredEvent]:
        """History in receive order, oldest first."""

    async def expire(self, now_ms: int, history_before_ms: int) -> int:
        """Drop stale latest state (not alerts) and history received before
        ``history_before_ms``; return how many rows went."""

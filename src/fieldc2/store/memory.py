"""In-memory store: real, complete, and gone when the process ends."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fieldc2.config import StoreConfig
from fieldc2.store.base import EntryId, StoredEvent

ALERT_PREFIX = "b-a-o-"


class MemoryStore:
    """A Store held in dicts and a list."""

    def __init__(self, config: StoreConfig | None = None, data_dir: Path | None = None) -> None:
        self._latest: dict[EntryId, StoredEvent] = {}
        self._history: list[StoredEvent] = []

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def write(self, events: Sequence[StoredEvent], deleted: Sequence[EntryId]) -> None:
        for event in events:
            self._history.append(event)
            if event.current:
                self._latest[(event.uid, event.groups)] = event
        for entry in deleted:
            self._latest.pop(entry, None)

    async def latest(self, now_ms: int) -> list[StoredEvent]:
        return [
            e for e in self._latest.values()
            if e.stale > now_ms or e.type.startswith(ALERT_PREFIX)
        ]

    async def history(
        self, *, uid: str | None = None, since_ms: int = 0, limit: int = 1000
    ) -> list[StoredEvent]:
        rows = [e for e in self._history if e.received >= since_ms and uid in (None, e.uid)]
        return rows[:limit]

    async def expire(self, now_ms: int, history_before_ms: int) -> int:
        stale = [
            entry for entry, e in self._latest.items()
            if e.stale <= now_ms and not e.type.startswith(ALERT_PREFIX)
        ]
        for entry in stale:
            del self._latest[entry]
        kept = [e for e in self._history if e.received >= history_before_ms]
        dropped = len(self._history) - len(kept)
        self._history = kept
        return len(stale) + dropped

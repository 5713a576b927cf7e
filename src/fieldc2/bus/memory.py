"""In-process bus: real publish/subscribe between instances in one process."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from fieldc2.bus.base import BusMessage
from fieldc2.config import BusConfig

#: Messages held for one subscriber.  At one batch per fan-out tick (10/s)
#: this is ~100 s of traffic: enough to ride out a stall, small enough that a
#: dead subscriber cannot grow without bound.
SUBSCRIBER_QUEUE_LIMIT = 1000


class MemorySubscription:
    def __init__(self, bus: MemoryBus, subject: str) -> None:
        self._bus = bus
        self.subject = subject
        self._queue: deque[BusMessage] = deque(maxlen=SUBSCRIBER_QUEUE_LIMIT)
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def _offer(self, message: BusMessage) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(message)
        self._ready.set()

    async def __aiter__(self) -> AsyncIterator[BusMessage]:
        while not self._closed:
            while self._queue:
                yield self._queue.popleft()
            self._ready.clear()
            await self._ready.wait()

    async def close(self) -> None:
        self._closed = True
        self._ready.set()
        self._bus._unsubscribe(self)


class MemoryBus:
    """A Bus whose subscribers live in this process."""

    def __init__(self, config: BusConfig | None = None) -> None:
        self._subs: dict[str, list[MemorySubscription]] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        for subs in list(self._subs.values()):
            for sub in list(subs):
                await sub.close()

    async def publish(self, subject: str, origin: str, data: bytes) -> None:
        message = BusMessage(subject, origin, data)
        for sub in self._subs.get(subject, ()):
            sub._offer(message)

    def has_listeners(self, subject: str, origin: str) -> bool:
        # Every command post subscribes once; more than one means another
        # instance shares this bus.
        return len(self._subs.get(subject, ())) > 1

    async def subscribe(self, subject: str) -> MemorySubscription:
        sub = MemorySubscription(self, subject)
        self._subs.setdefault(subject, []).append(sub)
        return sub

    def _unsubscribe(self, sub: MemorySubscription) -> None:
        subs = self._subs.get(sub.subject, [])
        if sub in subs:
            subs.remove(sub)

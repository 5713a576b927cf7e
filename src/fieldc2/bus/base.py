"""The Bus interface every backend implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import msgspec


class BusMessage(msgspec.Struct, frozen=True):
    """One message on a subject, with the id of the instance that sent it."""

    subject: str
    origin: str
    data: bytes


class Subscription(Protocol):
    """An open subscription: iterate it for messages, close it when done."""

    def __aiter__(self) -> AsyncIterator[BusMessage]: ...

    async def close(self) -> None: ...


class Bus(Protocol):
    """Publish/subscribe between server instances.

    Delivery is at-most-once to a subscriber that falls behind: a bus never
    blocks a publisher, it drops the oldest messages for the slow subscriber
    and counts them (``dropped``).  The picture self-heals from the next
    position report; orders carry their own acknowledgement.
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, subject: str, origin: str, data: bytes) -> None: ...

    async def subscribe(self, subject: str) -> Subscription: ...

    def has_listeners(self, subject: str, origin: str) -> bool:
        """Whether anyone but ``origin`` may receive ``subject``.  A networked
        bus cannot know and says True; the memory bus knows, and lets a lone
        instance skip encoding for nobody."""

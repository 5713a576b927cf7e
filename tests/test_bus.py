"""The in-memory bus, and two command posts federated through it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fieldc2.bus.memory import SUBSCRIBER_QUEUE_LIMIT, MemoryBus
from fieldc2.server import CommandPost
from fieldc2.sim.units import self_report
from fieldc2.store.memory import MemoryStore
from tests.conftest import eventually, make_config


async def test_publish_reaches_every_subscriber_in_order() -> None:
    bus = MemoryBus()
    one, two = await bus.subscribe("s"), await bus.subscribe("s")
    other = await bus.subscribe("other")
    for i in range(3):
        await bus.publish("s", "node", bytes([i]))
    for sub in (one, two):
        it = sub.__aiter__()
        got = [(await asyncio.wait_for(it.__anext__(), 1)).data for _ in range(3)]
        assert got == [b"\x00", b"\x01", b"\x02"]
    assert not other._queue
    await bus.close()


async def test_a_slow_subscriber_loses_the_oldest_not_the_publisher() -> None:
    bus = MemoryBus()
    sub = await bus.subscribe("s")
    for i in range(SUBSCRIBER_QUEUE_LIMIT + 5):
        await bus.publish("s", "n", i.to_bytes(4, "big"))
    assert sub.dropped == 5
    first = await asyncio.wait_for(sub.__aiter__().__anext__(), 1)
    assert int.from_bytes(first.data, "big") == 5


async def test_two_command_posts_share_a_picture_over_the_bus(tmp_path: Path) -> None:
    bus = MemoryBus()
    a = CommandPost(make_config(tmp_path / "a"), store=MemoryStore(), bus=bus)
    b = CommandPost(make_config(tmp_path / "b"), store=MemoryStore(), bus=bus)
    async with a, b:
        ra, wa = await asyncio.open_connection("127.0.0.1", a.tcp_port)
        rb, wb = await asyncio.open_connection("127.0.0.1", b.tcp_port)
        wa.write(self_report("UNIT-A", "ALPHA", 47.0, 11.0))
        wb.write(self_report("UNIT-B", "BRAVO", 47.1, 11.1))
        received = {"a": b"", "b": b""}

        async def pump(name: str, reader: asyncio.StreamReader) -> None:
            while data := await reader.read(65536):
                received[name] += data

        tasks = [asyncio.create_task(pump("a", ra)), asyncio.create_task(pump("b", rb))]
        await eventually(lambda: b'uid="UNIT-B"' in received["a"]
                         and b'uid="UNIT-A"' in received["b"])
        # Each side got the other's event once, and never its own back.
        assert b'uid="UNIT-A"' not in received["a"]
        assert received["b"].count(b'uid="UNIT-A"') == 1
        for t in tasks:
            t.cancel()
        wa.close()
        wb.close()


def test_unknown_and_unavailable_backends_say_what_to_do() -> None:
    import pytest

    from fieldc2.bus import open_bus
    from fieldc2.config import BusConfig
    from fieldc2.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown bus backend 'kafka'; choose one of"):
        open_bus(BusConfig(backend="kafka"))
    with pytest.raises(ConfigError, match="bus backend 'nats' is not available"):
        open_bus(BusConfig(backend="nats"))

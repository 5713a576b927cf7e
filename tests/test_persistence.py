"""The picture and the history survive a restart on the same SQLite data dir."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from fieldc2.server import CommandPost
from fieldc2.sim.units import chat
from tests.conftest import make_config
from tests.test_interop import SETTLE, XmlClient, clients_of, cot, emergency, parse_xml

DB_NAME = "fieldc2.sqlite3"


def journal_mode(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        mode: str = db.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        db.close()
    return mode


async def test_restart_restores_the_non_stale_picture(tmp_path: Path) -> None:
    short_stale = 1.0
    async with CommandPost(make_config(tmp_path)) as first, clients_of(first) as connect:
        unit = await connect("UNIT")
        witness = await connect("WITNESS")
        assert isinstance(unit, XmlClient) and isinstance(witness, XmlClient)
        await unit.report(group="Cyan")
        await witness.report(group="Cyan")
        await unit.send(cot("marker-keep", "a-h-G", lat=1.0))
        await unit.send(cot("marker-keep", "a-h-G", lat=2.0))
        await unit.send(cot("marker-short", "a-u-G", lat=3.0, stale=short_stale))
        short_sent = time.monotonic()
        await unit.send(emergency("unit-9-1-1", unit.uid, "UNIT", stale=short_stale))
        talk = chat(unit.uid, "UNIT", "before the restart")
        await unit.send(talk)
        await witness.expect_uid(parse_xml(talk).uid)
        await asyncio.sleep(SETTLE)  # a few ticks: the store writer has run
        assert (tmp_path / f"{DB_NAME}-wal").exists(), "no write-ahead log while running"
        assert journal_mode(tmp_path / DB_NAME) == "wal"
    assert journal_mode(tmp_path / DB_NAME) == "wal"  # WAL mode is persistent

    await asyncio.sleep(max(0.0, short_stale + 0.2 - (time.monotonic() - short_sent)))
    async with CommandPost(make_config(tmp_path)) as second, clients_of(second) as connect:
        joiner = await connect("JOINER")
        await joiner.report(group="Cyan")
        keep = await joiner.expect_uid("marker-keep")
        assert keep.lat == 2.0
        await joiner.expect_uid(unit.uid)
        await joiner.expect_uid(witness.uid)
        await joiner.expect_uid("unit-9-1-1", "b-a-o-tbl")  # alerts outlive their stale
        await asyncio.sleep(SETTLE)
        assert [m.lat for m in joiner.of("marker-keep")] == [2.0]
        assert not joiner.of("marker-short"), "a stale item came back after the restart"
        assert not joiner.of(parse_xml(talk).uid), "chat was replayed as picture"

        outsider = await connect("OUTSIDER")
        await outsider.report(group="Red")
        await asyncio.sleep(SETTLE)
        assert not outsider.uids() & {"marker-keep", unit.uid}, "restored groups were lost"

        history = await second.store.history()
        uids = [event.uid for event in history]
        assert uids.count("marker-keep") == 2
        for uid in (unit.uid, witness.uid, "marker-short", "unit-9-1-1", parse_xml(talk).uid):
            assert uid in uids, f"{uid} missing from the history"
        assert b'lat="1' in next(e.xml for e in history if e.uid == "marker-keep")

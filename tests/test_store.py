"""Store conformance: every backend must pass these."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fieldc2.config import StoreConfig
from fieldc2.errors import ConfigError
from fieldc2.store import Store, StoredEvent, open_store

NOW = 1_800_000_000_000


def rec(uid: str, *, t: int = NOW, stale: int = NOW + 60_000, cot_type: str = "a-f-G-U-C",
        current: bool = True, received: int | None = None) -> StoredEvent:
    return StoredEvent(uid=uid, type=cot_type, time=t, stale=stale,
                       received=t if received is None else received, groups=("Cyan", "Red"),
                       xml=f'<event uid="{uid}" t="{t}"/>'.encode(), current=current)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend = open_store(StoreConfig(backend=request.param), tmp_path)
    await backend.open()
    yield backend
    await backend.close()


async def test_latest_is_the_newest_current_event_per_uid(store: Store) -> None:
    await store.write([rec("a", t=NOW), rec("b", t=NOW)], [])
    await store.write([rec("a", t=NOW + 1000)], [])
    latest = {e.uid: e for e in await store.latest(NOW)}
    assert set(latest) == {"a", "b"}
    assert latest["a"].time == NOW + 1000
    assert latest["a"].groups == ("Cyan", "Red")
    assert latest["a"].xml == f'<event uid="a" t="{NOW + 1000}"/>'.encode()


async def test_non_current_events_go_to_history_only(store: Store) -> None:
    await store.write([rec("chat", cot_type="b-t-f", current=False)], [])
    assert await store.latest(NOW) == []
    assert [e.uid for e in await store.history()] == ["chat"]


async def test_stale_state_is_not_returned_and_expires(store: Store) -> None:
    await store.write([rec("old", stale=NOW - 1), rec("live")], [])
    assert [e.uid for e in await store.latest(NOW)] == ["live"]
    await store.expire(NOW, history_before_ms=0)
    assert [e.uid for e in await store.latest(0)] == ["live"]


async def test_alerts_survive_their_stale_time_until_deleted(store: Store) -> None:
    await store.write([rec("911", cot_type="b-a-o-tbl", stale=NOW - 1)], [])
    await store.expire(NOW, history_before_ms=0)
    assert [e.uid for e in await store.latest(NOW)] == ["911"]
    await store.write([], [("911", ("Cyan", "Red"))])
    assert await store.latest(NOW) == []


async def test_delete_removes_latest_but_keeps_history(store: Store) -> None:
    await store.write([rec("a"), rec("b")], [])
    await store.write([rec("del", cot_type="t-x-d-d", current=False)],
                      [("a", ("Cyan", "Red")), ("b", ("Blue",))])
    assert [e.uid for e in await store.latest(NOW)] == ["b"]
    assert [e.uid for e in await store.history()] == ["a", "b", "del"]


async def test_history_filters_and_retention(store: Store) -> None:
    await store.write([rec("a", received=NOW - 10_000), rec("b", received=NOW),
                       rec("a", t=NOW + 1, received=NOW + 5)], [])
    assert [e.received for e in await store.history(uid="a")] == [NOW - 10_000, NOW + 5]
    assert [e.uid for e in await store.history(since_ms=NOW)] == ["b", "a"]
    assert len(await store.history(limit=2)) == 2
    removed = await store.expire(NOW - 100_000, history_before_ms=NOW)
    assert removed == 1
    assert [e.received for e in await store.history()] == [NOW, NOW + 5]


async def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    first = open_store(StoreConfig(), tmp_path)
    await first.open()
    await first.write([rec("a")], [])
    await first.close()
    second = open_store(StoreConfig(), tmp_path)
    await second.open()
    try:
        assert [e.uid for e in await second.latest(NOW)] == ["a"]
        assert (tmp_path / "fieldc2.sqlite3").exists()
    finally:
        await second.close()


async def test_the_same_uid_in_two_audiences_is_two_entries(store: Store) -> None:
    cyan = StoredEvent(uid="x", type="a-f-G", time=NOW, stale=NOW + 1000, received=NOW,
                       groups=("Cyan",), xml=b"<cyan/>")
    red = StoredEvent(uid="x", type="a-f-G", time=NOW, stale=NOW + 1000, received=NOW,
                      groups=("Red",), xml=b"<red/>")
    await store.write([cyan, red], [])
    assert sorted(e.xml for e in await store.latest(NOW)) == [b"<cyan/>", b"<red/>"]
    await store.write([], [("x", ("Red",))])
    assert [e.xml for e in await store.latest(NOW)] == [b"<cyan/>"]


def test_unknown_backend_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown store backend 'mongo'"):
        open_store(StoreConfig(backend="mongo"), tmp_path)

"""SQLite store, the default: one file in the data dir, WAL mode.

All database work runs on one dedicated thread that owns the connection, so
the event loop never waits on the disk and SQLite never sees two writers.
Each ``write`` is one transaction (one fan-out tick), which keeps the cost
per event to a few microseconds even with hundreds of events a second.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from fieldc2.config import StoreConfig
from fieldc2.errors import BackendError
from fieldc2.store.base import EntryId, StoredEvent

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS latest (
    uid TEXT NOT NULL, type TEXT NOT NULL, time INTEGER NOT NULL,
    stale INTEGER NOT NULL, received INTEGER NOT NULL, groups TEXT NOT NULL,
    xml BLOB NOT NULL, PRIMARY KEY (uid, groups));
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL, type TEXT NOT NULL,
    time INTEGER NOT NULL, stale INTEGER NOT NULL, received INTEGER NOT NULL,
    groups TEXT NOT NULL, xml BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS history_received ON history (received);
CREATE INDEX IF NOT EXISTS history_uid ON history (uid, received);
"""
_COLUMNS = "uid, type, time, stale, received, groups, xml"
_T = TypeVar("_T")


def _groups(groups: tuple[str, ...]) -> str:
    return msgspec.json.encode(list(groups)).decode()


def _row(event: StoredEvent) -> tuple[Any, ...]:
    groups = _groups(event.groups)
    return (event.uid, event.type, event.time, event.stale, event.received, groups, event.xml)


def _event(row: tuple[Any, ...], current: bool) -> StoredEvent:
    uid, cot_type, time, stale, received, groups, xml = row
    return StoredEvent(uid=uid, type=cot_type, time=time, stale=stale, received=received,
                       groups=tuple(msgspec.json.decode(groups)), xml=bytes(xml), current=current)


class SqliteStore:
    """A Store in one SQLite file."""

    def __init__(self, config: StoreConfig, data_dir: Path) -> None:
        self.path = Path(config.url) if config.url else data_dir / "fieldc2.sqlite3"
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._executor is None:
            raise BackendError("the SQLite store is not open")
        def call() -> _T:
            assert self._db is not None
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                raise BackendError(f"SQLite {self.path}: {exc}") from exc
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fieldc2-sqlite")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._connect)

    def _connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if version is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(version[0]) > SCHEMA_VERSION:
                raise BackendError(
                    f"{self.path} was written by a newer fieldc2 (schema {version[0]}); upgrade"
                )
        except (sqlite3.Error, OSError) as exc:
            raise BackendError(f"cannot open SQLite database {self.path}: {exc}") from exc
        self._db = db

    async def close(self) -> None:
        if self._executor is None:
            return
        def shut(db: sqlite3.Connection) -> None:
            db.close()
        await self._run(shut)
        self._executor.shutdown(wait=True)
        self._executor = None
        self._db = None

    async def write(self, events: Sequence[StoredEvent], deleted: Sequence[EntryId]) -> None:
        rows = [_row(e) for e in events]
        current = [_row(e) for e in events if e.current]
        gone = [(uid, _groups(groups)) for uid, groups in deleted]
        def tx(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                db.executemany(f"INSERT INTO history ({_COLUMNS}) VALUES (?,?,?,?,?,?,?)", rows)
                db.executemany(
                    f"INSERT OR REPLACE INTO latest ({_COLUMNS}) VALUES (?,?,?,?,?,?,?)", current)
                db.executemany("DELETE FROM latest WHERE uid = ? AND groups = ?", gone)
        await self._run(tx)

    async def latest(self, now_ms: int) -> list[StoredEvent]:
        def query(db: sqlite3.Connection) -> list[StoredEvent]:
            cur = db.execute(
                f"SELECT {_COLUMNS} FROM latest WHERE stale > ? OR type LIKE 'b-a-o-%'"
                " ORDER BY received", (now_ms,))
            return [_event(r, True) for r in cur]
        return await self._run(query)

    async def history(
        self, *, uid: str | None = None, since_ms: int = 0, limit: int = 1000
    ) -> list[StoredEvent]:
        def query(db: sqlite3.Connection) -> list[StoredEvent]:
            sql = f"SELECT {_COLUMNS} FROM history WHERE received >= ?"
            args: list[Any] = [since_ms]
            if uid is not None:
                sql += " AND uid = ?"
                args.append(uid)
            cur = db.execute(sql + " ORDER BY id LIMIT ?", [*args, limit])
            return [_event(r, False) for r in cur]
        return await self._run(query)

    async def expire(self, now_ms: int, history_before_ms: int) -> int:
        def tx(db: sqlite3.Connection) -> int:
            with db:
                db.execute("BEGIN")
                a = db.execute(
                    "DELETE FROM latest WHERE stale <= ? AND type NOT LIKE 'b-a-o-%'", (now_ms,))
                b = db.execute("DELETE FROM history WHERE received < ?", (history_before_ms,))
                return a.rowcount + b.rowcount
        return await self._run(tx)

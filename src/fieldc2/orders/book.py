"""The order book: every order, each recipient's state and its history.

One SQLite file in the data directory (``orders.db``), so orders and their
states survive a restart.  Calls are synchronous and small (one short
transaction per state change, WAL with ``synchronous=NORMAL``: no fsync per
commit): a command post sees a few state changes a second at most, so they
run on the event loop rather than paying a thread hop each.

Time is always an argument: :meth:`OrderBook.due_alerts` takes ``now``, so
the overdue check is tested without waiting.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import TracebackType

import msgspec

from fieldc2.errors import BackendError
from fieldc2.orders import lifecycle
from fieldc2.orders.model import (
    UNACKNOWLEDGED,
    Order,
    OrderState,
    OrderStatus,
    Overdue,
    RecipientState,
    Signal,
    Transition,
    message_id,
)

BOOK_NAME = "orders.db"
#: Longest note (a reply's text) kept with a transition: a status reply is a
#: few words; this keeps a chatty device from growing the book.
MAX_NOTE = 500
#: Most orders listed by :meth:`OrderBook.status`: several operational
#: periods of a large incident; older ones stay in the file.
MAX_LISTED = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY, team TEXT NOT NULL, task TEXT NOT NULL, issued INTEGER NOT NULL,
    body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS recipients (
    order_id TEXT NOT NULL, recipient TEXT NOT NULL, state TEXT NOT NULL,
    updated INTEGER NOT NULL, alerted INTEGER NOT NULL DEFAULT 0, message_id TEXT NOT NULL,
    PRIMARY KEY (order_id, recipient));
CREATE INDEX IF NOT EXISTS recipients_message ON recipients (message_id);
CREATE INDEX IF NOT EXISTS recipients_recipient ON recipients (recipient);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY, order_id TEXT NOT NULL, recipient TEXT NOT NULL,
    before TEXT, after TEXT NOT NULL, signal TEXT NOT NULL, at INTEGER NOT NULL,
    source TEXT NOT NULL, note TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS transitions_order ON transitions (order_id, id);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
_OPEN = tuple(s.value for s in OrderState if not s.terminal)
_decode_order = msgspec.json.Decoder(Order).decode


class OrderBook:
    """Orders and per-recipient states in one SQLite file."""

    def __init__(self, path: Path, *, ack_timeout: float) -> None:
        self.path = path
        self.ack_timeout = ack_timeout
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise BackendError(f"order book {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> OrderBook:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _write(self, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        try:
            with self._db:
                self._db.execute("BEGIN")
                for sql, args in statements:
                    self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise BackendError(f"order book {self.path}: {exc}") from exc

    # --- orders ----------------------------------------------------------------

    def add(self, order: Order, now: int) -> list[Transition]:
        """Store a new order, every recipient ``issued``."""
        writes: list[tuple[str, tuple[object, ...]]] = [(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
            (order.id, order.team_id, order.task_id, order.issued, msgspec.json.encode(order)))]
        made = []
        for uid in order.recipients:
            writes.append(("INSERT INTO recipients VALUES (?, ?, ?, ?, 0, ?)",
                           (order.id, uid, OrderState.ISSUED.value, now,
                            message_id(order.id, uid))))
            change = Transition(order_id=order.id, recipient=uid, before=None,
                                after=OrderState.ISSUED, signal="publish", at=now,
                                source="publish")
            writes.append(_transition_row(change))
            made.append(change)
        self._write(writes)
        return made

    def order(self, order_id: str) -> Order | None:
        row = self._db.execute("SELECT body FROM orders WHERE id = ?", (order_id,)).fetchone()
        return _decode_order(row[0]) if row else None

    def recipients(self, order_id: str) -> tuple[RecipientState, ...]:
        rows = self._db.execute(
            "SELECT order_id, recipient, state, updated, alerted FROM recipients"
            " WHERE order_id = ? ORDER BY recipient", (order_id,)).fetchall()
        return tuple(_recipient(row) for row in rows)

    def apply(self, order_id: str, recipient: str, signal: Signal, now: int, *,
              source: str, note: str = "") -> Transition | None:
        """Move one recipient by the table; None when nothing changed.

        Unknown orders and recipients, and pairs missing from the table
        (repeats, late receipts, anything after done), change nothing.
        """
        row = self._db.execute(
            "SELECT state FROM recipients WHERE order_id = ? AND recipient = ?",
            (order_id, recipient)).fetchone()
        if row is None:
            return None
        before = OrderState(row[0])
        after = lifecycle.step(before, signal)
        if after is None:
            return None
        change = Transition(order_id=order_id, recipient=recipient, before=before, after=after,
                            signal=signal.value, at=now, source=source, note=note[:MAX_NOTE])
        self._write([
            ("UPDATE recipients SET state = ?, updated = ? WHERE order_id = ? AND recipient = ?",
             (after.value, now, order_id, recipient)),
            _transition_row(change)])
        return change

    def find_message(self, mid: str) -> tuple[str, str] | None:
        """The (order id, recipient) a GeoChat message id belongs to."""
        row = self._db.execute("SELECT order_id, recipient FROM recipients WHERE message_id = ?",
                               (mid,)).fetchone()
        return (row[0], row[1]) if row else None

    def latest_open(self, recipient: str) -> str | None:
        """The most recently issued order this device has not finished."""
        marks = ",".join("?" * len(_OPEN))
        row = self._db.execute(
            "SELECT r.order_id FROM recipients r JOIN orders o ON o.id = r.order_id"
            f" WHERE r.recipient = ? AND r.state IN ({marks})"
            " ORDER BY o.issued DESC, o.rowid DESC LIMIT 1", (recipient, *_OPEN)).fetchone()
        return row[0] if row else None

    def undelivered(self, recipient: str) -> list[Order]:
        """Orders still ``issued`` for this device (to send when it appears)."""
        rows = self._db.execute(
            "SELECT o.body FROM recipients r JOIN orders o ON o.id = r.order_id"
            " WHERE r.recipient = ? AND r.state = ? ORDER BY o.issued, o.rowid",
            (recipient, OrderState.ISSUED.value)).fetchall()
        return [_decode_order(row[0]) for row in rows]

    def open_orders(self) -> list[OrderStatus]:
        """Orders some device has not finished, oldest first."""
        marks = ",".join("?" * len(_OPEN))
        rows = self._db.execute(
            "SELECT DISTINCT o.id, o.issued, o.rowid FROM orders o JOIN recipients r"
            f" ON o.id = r.order_id WHERE r.state IN ({marks}) ORDER BY o.issued, o.rowid",
            _OPEN).fetchall()
        return [s for row in rows for s in self.status(row[0])]

    def due_alerts(self, now: int) -> list[Overdue]:
        """Recipients past the acknowledgement timeout, each reported once."""
        cutoff = now - self.ack_timeout
        marks = ",".join("?" * len(UNACKNOWLEDGED))
        rows = self._db.execute(
            "SELECT o.body, r.recipient, r.state, o.issued FROM recipients r"
            " JOIN orders o ON o.id = r.order_id"
            f" WHERE r.alerted = 0 AND r.state IN ({marks}) AND o.issued <= ?"
            " ORDER BY o.issued, o.rowid, r.recipient",
            (*(s.value for s in UNACKNOWLEDGED), cutoff)).fetchall()
        found = [Overdue(order=_decode_order(body), recipient=uid, state=OrderState(state),
                         since=issued) for body, uid, state, issued in rows]
        self._write([("UPDATE recipients SET alerted = 1 WHERE order_id = ? AND recipient = ?",
                      (o.order.id, o.recipient)) for o in found])
        return found

    # --- views -----------------------------------------------------------------

    def status(self, order_id: str | None = None) -> list[OrderStatus]:
        """Orders with each recipient's state, newest first."""
        if order_id is not None:
            rows = self._db.execute("SELECT body FROM orders WHERE id = ?",
                                    (order_id,)).fetchall()
        else:
            rows = self._db.execute("SELECT body FROM orders ORDER BY issued DESC, rowid DESC"
                                    " LIMIT ?", (MAX_LISTED,)).fetchall()
        orders = [_decode_order(row[0]) for row in rows]
        return [OrderStatus(order=o, recipients=self.recipients(o.id)) for o in orders]

    def history(self, order_id: str) -> list[Transition]:
        rows = self._db.execute(
            "SELECT order_id, recipient, before, after, signal, at, source, note"
            " FROM transitions WHERE order_id = ? ORDER BY id", (order_id,)).fetchall()
        return [_transition(row) for row in rows]

    def activity(self, team_id: str) -> list[tuple[int, str]]:
        """The team's order history as ICS 214 activity lines ``(epoch s, text)``."""
        rows = self._db.execute(
            "SELECT t.at, t.order_id, o.task, t.recipient, t.after, t.source, t.note"
            " FROM transitions t JOIN orders o ON o.id = t.order_id"
            " WHERE o.team = ? ORDER BY t.at, t.id", (team_id,)).fetchall()
        out = []
        for at, oid, task, uid, after, source, note in rows:
            if source == "publish":
                text = f"Order {oid} issued for task {task} to {uid}"
            else:
                text = f"Order {oid} (task {task}): {uid} {after.replace('_', ' ')} ({source})"
            if note:
                text += f': "{note}"'
            out.append((int(at), text))
        return out

    # --- the planner's state ---------------------------------------------------

    def put_state(self, key: str, value: bytes) -> None:
        """Keep a named blob (the current incident and plan) across restarts."""
        self._write([("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value))])

    def get_state(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None


def _transition_row(t: Transition) -> tuple[str, tuple[object, ...]]:
    return ("INSERT INTO transitions (order_id, recipient, before, after, signal, at, source,"
            " note) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (t.order_id, t.recipient, t.before.value if t.before else None, t.after.value,
             t.signal, t.at, t.source, t.note))


def _recipient(row: tuple[object, ...]) -> RecipientState:
    order_id, recipient, state, updated, alerted = row
    return RecipientState(order_id=str(order_id), recipient=str(recipient),
                          state=OrderState(str(state)), updated=int(str(updated)),
                          alerted=bool(alerted))


def _transition(row: tuple[object, ...]) -> Transition:
    order_id, recipient, before, after, signal, at, source, note = row
    return Transition(order_id=str(order_id), recipient=str(recipient),
                      before=OrderState(str(before)) if before else None,
                      after=OrderState(str(after)), signal=str(signal), at=int(str(at)),
                      source=str(source), note=str(note))

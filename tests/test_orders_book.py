"""The order book: persistence, message ids, overdue detection on given times."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldc2.errors import BackendError
from fieldc2.orders.book import OrderBook
from fieldc2.orders.model import Order, OrderState, Signal, message_id

T = 1_800_000_000


def order(oid: str, issued: int = T, recipients: tuple[str, ...] = ("d1", "d2")) -> Order:
    return Order(id=oid, task_id=f"task-{oid}", team_id="alpha", text=f"do {oid}",
                 recipients=recipients, issued=issued, due=issued + 600, lat=45.0, lon=7.0)


def test_overdue_is_reported_once_per_recipient_at_the_given_time(tmp_path: Path) -> None:
    with OrderBook(tmp_path / "o.db", ack_timeout=300) as book:
        book.add(order("ORD-00000001"), T)
        book.add(order("ORD-00000002", issued=T + 200), T + 200)
        book.apply("ORD-00000001", "d1", Signal.WRITTEN, T + 1, source="written")
        book.apply("ORD-00000001", "d2", Signal.ACKNOWLEDGED, T + 2, source="receipt")
        assert book.due_alerts(T + 299) == []
        due = book.due_alerts(T + 300)
        assert [(d.order.id, d.recipient, d.state) for d in due] == [
            ("ORD-00000001", "d1", OrderState.DELIVERED)]
        assert book.due_alerts(T + 400) == []
        assert {(d.order.id, d.recipient) for d in book.due_alerts(T + 10_000)} == {
            ("ORD-00000002", "d1"), ("ORD-00000002", "d2")}


def test_state_history_and_messages_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with OrderBook(path, ack_timeout=300) as book:
        book.add(order("ORD-0000000A"), T)
        assert book.apply("ORD-0000000A", "d1", Signal.STARTED, T + 5, source="reply",
                          note="on scene") is not None
        assert book.apply("ORD-0000000A", "d1", Signal.ACKNOWLEDGED, T + 6,
                          source="receipt") is None, "moved backwards"
        assert book.apply("ORD-0000000A", "nobody", Signal.DONE, T + 6, source="x") is None
        book.put_state("k", b"v")
    with OrderBook(path, ack_timeout=300) as book:
        assert book.order("ORD-0000000A") == order("ORD-0000000A")
        assert book.find_message(message_id("ORD-0000000A", "d2")) == ("ORD-0000000A", "d2")
        assert book.find_message("unknown") is None
        (status,) = book.status()
        assert {r.recipient: r.state for r in status.recipients} == {
            "d1": OrderState.IN_PROGRESS, "d2": OrderState.ISSUED}
        assert status.state is OrderState.ISSUED
        assert [h.after for h in book.history("ORD-0000000A")] == [
            OrderState.ISSUED, OrderState.ISSUED, OrderState.IN_PROGRESS]
        assert book.latest_open("d1") == "ORD-0000000A"
        assert book.get_state("k") == b"v"
        activity = book.activity("alpha")
        assert activity[-1] == (T + 5, 'Order ORD-0000000A (task task-ORD-0000000A): d1 '
                                       'in progress (reply): "on scene"')
        assert book.activity("nobody") == []


def test_latest_open_skips_finished_orders(tmp_path: Path) -> None:
    with OrderBook(tmp_path / "o.db", ack_timeout=300) as book:
        book.add(order("ORD-00000001"), T)
        book.add(order("ORD-00000002", issued=T + 10), T + 10)
        assert book.latest_open("d1") == "ORD-00000002"
        book.apply("ORD-00000002", "d1", Signal.DONE, T + 20, source="reply")
        assert book.latest_open("d1") == "ORD-00000001"
        assert [o.id for o in book.undelivered("d1")] == ["ORD-00000001"]


def test_an_unusable_file_is_a_backend_error(tmp_path: Path) -> None:
    (tmp_path / "o.db").mkdir()
    with pytest.raises(BackendError, match=r"o\.db"):
        OrderBook(tmp_path / "o.db", ack_timeout=1)

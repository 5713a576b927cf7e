"""Orders end to end: a real command post, real pytak clients over TCP.

A published plan reaches the team's devices as markers, a route and signed
GeoChat orders; receipts, replies and status events move each device's
state; silence raises the overdue alert; it all survives a restart.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fieldc2.audit import AuditLog, verify
from fieldc2.config import Config, OrdersConfig
from fieldc2.orders.model import Order, OrderState
from fieldc2.orders.service import OrderService
from fieldc2.orders.sign import verify as verify_signature
from fieldc2.plan.model import TaskDone, TaskFailed, TaskStarted
from fieldc2.server import CommandPost
from fieldc2.sim.units import chat
from tests.conftest import eventually, make_config
from tests.orders_helpers import incident, plan
from tests.test_interop import (
    SETTLE,
    Client,
    Connect,
    Msg,
    clients_of,
    cot,
    iso,
    read_receipt,
)

ACK_TIMEOUT = 60.0


def config(data_dir: Path) -> Config:
    return dataclasses.replace(make_config(data_dir), orders=OrdersConfig(
        ack_timeout=ACK_TIMEOUT, alert_groups=("Cyan",)))


@pytest.fixture
async def post(tmp_path: Path) -> AsyncIterator[CommandPost]:
    async with CommandPost(config(tmp_path)) as running:
        yield running


def orders_of(post: CommandPost) -> OrderService:
    service = post.orders
    assert isinstance(service, OrderService)
    return service


async def joined(post: CommandPost, connect: Connect, name: str) -> Client:
    client = await connect(name)
    await client.report()
    await eventually(lambda: client.uid in post.endpoints)
    return client


def state(post: CommandPost, order: Order, uid: str) -> OrderState:
    (status,) = orders_of(post).status(order.id)
    return next(r.state for r in status.recipients if r.recipient == uid)


async def becomes(post: CommandPost, order: Order, uid: str, wanted: OrderState) -> None:
    await eventually(lambda: state(post, order, uid) is wanted)


def order_chats(client: Client) -> list[Msg]:
    return [m for m in client.types("b-t-f") if m.detail.find("__fieldc2_order") is not None]


async def test_assignment_arrives_and_a_read_receipt_acknowledges(post: CommandPost) -> None:
    service = orders_of(post)
    async with clients_of(post) as connect:
        alpha = await joined(post, connect, "ALPHA")
        other = await joined(post, connect, "OTHER")
        result = service.publish(incident({"a": (alpha.uid,), "b": (other.uid,)}),
                                 plan({"a": ("T1", "T2", "T3")}))
        assert [o.task_id for o in result.orders] == ["T1", "T2", "T3"]
        first = result.orders[0]

        marker = await alpha.expect_uid("fieldc2.task.T1", "b-m-p-s-m")
        assert marker.callsign == "Hiker at the hut"
        assert first.id in (marker.detail.findtext("remarks") or "")
        line = await alpha.expect_uid("fieldc2.task.T2", "b-m-r")
        assert len([x for x in line.detail.findall("link") if x.get("point")]) == 3
        area = await alpha.expect_uid("fieldc2.task.T3", "u-d-f")
        ring = [x.get("point") for x in area.detail.findall("link")]
        assert len(ring) == 5 and ring[0] == ring[-1]
        path = await alpha.expect_uid("fieldc2.route.a", "b-m-r")
        assert len(path.detail.findall("link")) >= 4
        await alpha.expect_uid(service.sender.uid)  # the command post as a contact
        await eventually(lambda: len(order_chats(alpha)) == 3)

        chat_msg = order_chats(alpha)[0]
        tag = chat_msg.detail.find("__fieldc2_order")
        assert tag is not None and tag.get("id") == first.id and tag.get("task") == "T1"
        assert tag.get("precedence") == "IMMEDIATE"  # priority 3
        assert tag.get("origin") == service.sender.uid
        assert chat_msg.detail.findtext("remarks") == first.text
        key, sig = service.signer.public_key, tag.get("sig", "")
        assert verify_signature(key, service.sender.uid, first, alpha.uid, sig)
        assert not verify_signature(key, service.sender.uid, first, other.uid, sig)
        assert not verify_signature(key, "someone-else", first, alpha.uid, sig)
        assert base64.b64decode(tag.get("sig", ""))  # well-formed
        # Written to ALPHA's connection: delivered without any receipt.
        await becomes(post, first, alpha.uid, OrderState.DELIVERED)

        await alpha.send(read_receipt(alpha, chat_msg.uid, service.sender.uid))
        await becomes(post, first, alpha.uid, OrderState.ACKNOWLEDGED)
        assert state(post, result.orders[1], alpha.uid) is OrderState.DELIVERED
        await asyncio.sleep(SETTLE)
        assert not other.types("b-t-f") and not other.of("fieldc2.task.T1"), \
            "team a's orders reached team b"

    await service.flush_audit()
    assert verify(post.config.data_dir / "audit.log").ok
    with AuditLog(post.config.data_dir / "audit.log") as log:
        assert log.last is not None
    text = (post.config.data_dir / "audit.log").read_text()
    assert text.count('"order_issued"') == 3
    assert '"after":"acknowledged"' in text


async def test_silence_raises_one_overdue_alert(post: CommandPost) -> None:
    service = orders_of(post)
    async with clients_of(post) as connect:
        quiet = await joined(post, connect, "QUIET")
        answers = await joined(post, connect, "ANSWERS")
        watcher = await joined(post, connect, "WATCHER")  # the command post's staff, group Cyan
        result = service.publish(incident({"q": (quiet.uid,), "a": (answers.uid,)}),
                                 plan({"q": ("T1",), "a": ("T2",)}))
        q_order, a_order = result.orders
        await eventually(lambda: len(order_chats(answers)) == 1)
        await answers.send(chat(answers.uid, "ANSWERS", "wilco",
                                to_callsign=service.sender.callsign))
        await becomes(post, a_order, answers.uid, OrderState.ACKNOWLEDGED)

        now = post.clock()
        assert service.check_overdue(now + ACK_TIMEOUT - 5) == []
        due = service.check_overdue(now + ACK_TIMEOUT + 1)
        assert [(d.order.id, d.recipient) for d in due] == [(q_order.id, quiet.uid)]
        assert due[0].state is OrderState.DELIVERED
        alert = await watcher.expect(
            lambda m: m.type == "b-t-f" and "OVERDUE" in (m.detail.findtext("remarks") or ""),
            "the overdue alert")
        assert q_order.id in (alert.detail.findtext("remarks") or "")
        assert service.check_overdue(now + 10 * ACK_TIMEOUT) == [], "alerted twice"
        (status,) = service.status(q_order.id)
        assert status.recipients[0].alerted
    await service.flush_audit()
    assert '"order_overdue"' in (post.config.data_dir / "audit.log").read_text()


async def test_text_replies_drive_the_lifecycle(post: CommandPost) -> None:
    service = orders_of(post)
    cp = service.sender.callsign
    async with clients_of(post) as connect:
        alpha = await joined(post, connect, "ALPHA")
        mate = await joined(post, connect, "MATE")
        result = service.publish(incident({"a": (alpha.uid, mate.uid)}),
                                 plan({"a": ("T1", "T2")}))
        t1, t2 = result.orders
        await eventually(lambda: len(order_chats(alpha)) == 2)
        # "done" in the team's own chat, naming no order, closes nothing.
        await alpha.send(chat(alpha.uid, "ALPHA", "done with lunch"))
        await alpha.send(chat(alpha.uid, "ALPHA", "Roger", to_callsign=cp))
        await becomes(post, t2, alpha.uid, OrderState.ACKNOWLEDGED)  # the latest open one
        assert state(post, t1, alpha.uid) is OrderState.DELIVERED
        await alpha.send(chat(alpha.uid, "ALPHA", f"on scene {t1.id.lower()}", to_callsign=cp))
        await becomes(post, t1, alpha.uid, OrderState.IN_PROGRESS)
        await alpha.send(chat(alpha.uid, "ALPHA", f"{t1.id} COMPLETE, one patient",
                              to_callsign=cp))
        await becomes(post, t1, alpha.uid, OrderState.DONE)
        await alpha.send(chat(alpha.uid, "ALPHA", f"ack {t1.id}", to_callsign=cp))
        await mate.send(chat(mate.uid, "MATE", "unable, trail washed out", to_callsign=cp))
        await becomes(post, t2, mate.uid, OrderState.FAILED)
        assert state(post, t1, alpha.uid) is OrderState.DONE, "moved backwards"
        assert state(post, t1, mate.uid) is OrderState.DELIVERED
        changes = service.take_changes()
        at = [c.at for c in changes]  # type: ignore[union-attr]
        assert changes == [TaskStarted(task_id="T1", team_id="a", at=at[0]),
                           TaskDone(task_id="T1", at=at[1], team_id="a"),
                           TaskFailed(task_id="T2", team_id="a", at=at[2])]
        await alpha.send(chat(alpha.uid, "ALPHA", f"{t2.id} unable too", to_callsign=cp))
        await becomes(post, t2, alpha.uid, OrderState.FAILED)
        assert service.take_changes() == [], "a second device's UNABLE is not a new change"
        history = orders_of(post).book.history(t1.id)
        assert [h.after for h in history if h.recipient == alpha.uid] == [
            OrderState.ISSUED, OrderState.DELIVERED, OrderState.IN_PROGRESS, OrderState.DONE]
        log = service.activity("a")
        assert any("COMPLETE, one patient" in text for _, text in log)
        assert [t for t, _ in log] == sorted(t for t, _ in log)


def status_event(sender: Client, order_id: str, state_name: str, by: str = "") -> bytes:
    element = ET.Element("__fieldc2_order_status", id=order_id, state=state_name,
                         by=by or sender.uid, time=iso())
    return cot(f"{sender.uid}-status-{order_id}", "t-x-fieldc2-o-s", how="h-g-i-g-o",
               stale=60, children=[element])


async def test_fieldc2_status_events_drive_the_lifecycle(post: CommandPost) -> None:
    service = orders_of(post)
    async with clients_of(post) as connect:
        node = await joined(post, connect, "NODE")
        (order,) = service.publish(incident({"n": (node.uid,)}), plan({"n": ("T3",)})).orders
        await eventually(lambda: len(order_chats(node)) == 1)
        track = await node.expect_uid("fieldc2.track.T3.0")    # the pattern to walk in T3
        turns = [link.get("point") for link in track.detail.findall("link")]
        assert track.type == "b-m-r" and len(turns) > 20 and len(set(turns)) == len(turns)
        await node.send(status_event(node, order.id, "in_progress"))
        await becomes(post, order, node.uid, OrderState.IN_PROGRESS)
        await node.send(status_event(node, order.id, "done"))
        await becomes(post, order, node.uid, OrderState.DONE)
        await node.send(status_event(node, order.id, "received"))
        await node.send(status_event(node, order.id, "failed"))
        await node.send(status_event(node, "ORD-00000000", "done"))  # unknown: ignored
        await node.send(cot("barrier", "a-u-G"))
        await asyncio.sleep(SETTLE)
        assert state(post, order, node.uid) is OrderState.DONE
        assert [type(c).__name__ for c in service.take_changes()] == ["TaskStarted", "TaskDone"]


async def test_orders_survive_a_restart_and_reach_late_devices(tmp_path: Path) -> None:
    late_uid = "LATE-device-1"
    async with CommandPost(config(tmp_path)) as post, clients_of(post) as connect:
        alpha = await joined(post, connect, "ALPHA")
        result = orders_of(post).publish(incident({"a": (alpha.uid, late_uid)}),
                                         plan({"a": ("T1",)}))
        (order,) = result.orders
        await eventually(lambda: len(order_chats(alpha)) == 1)
        await alpha.send(read_receipt(alpha, order_chats(alpha)[0].uid,
                                      orders_of(post).sender.uid))
        await becomes(post, order, alpha.uid, OrderState.ACKNOWLEDGED)
        assert state(post, order, late_uid) is OrderState.ISSUED
        public_key = orders_of(post).signer.public_key

    async with CommandPost(config(tmp_path)) as post, clients_of(post) as connect:
        service = orders_of(post)
        assert service.signer.public_key == public_key, "a new signing key after restart"
        assert state(post, order, alpha.uid) is OrderState.ACKNOWLEDGED
        assert state(post, order, late_uid) is OrderState.ISSUED
        late = await connect("LATE", uid=late_uid)
        await late.report()
        await late.expect(lambda m: m.type == "b-t-f", "its waiting order")
        await late.expect_uid("fieldc2.task.T1", "b-m-p-s-m")
        await becomes(post, order, late_uid, OrderState.DELIVERED)
        await late.send(chat(late_uid, "LATE", "wilco", to_callsign=service.sender.callsign))
        await becomes(post, order, late_uid, OrderState.ACKNOWLEDGED)


async def test_a_new_plan_supersedes_open_orders(post: CommandPost) -> None:
    service = orders_of(post)
    cp = service.sender.callsign
    async with clients_of(post) as connect:
        alpha = await joined(post, connect, "ALPHA")
        bravo = await joined(post, connect, "BRAVO")
        inc = incident({"a": (alpha.uid,), "b": (bravo.uid,)})
        first = service.publish(inc, plan({"a": ("T1", "T2", "T3")}))
        t1, t2, t3 = first.orders
        await eventually(lambda: len(order_chats(alpha)) == 3)
        await alpha.send(chat(alpha.uid, "ALPHA", f"{t1.id} started", to_callsign=cp))
        await becomes(post, t1, alpha.uid, OrderState.IN_PROGRESS)

        # Re-planned: ALPHA keeps T1 (under way) and T3, T2 goes to BRAVO.
        second = service.publish(inc, plan({"a": ("T1", "T3"), "b": ("T2",)}))
        assert second.kept == (t1.id,)
        assert sorted((o.team_id, o.task_id) for o in second.orders) == [("a", "T3"),
                                                                         ("b", "T2")]
        assert state(post, t1, alpha.uid) is OrderState.IN_PROGRESS
        assert state(post, t2, alpha.uid) is OrderState.CANCELLED
        assert state(post, t3, alpha.uid) is OrderState.CANCELLED
        await bravo.expect(lambda m: m.type == "b-t-f", "T2's new order")
        await bravo.expect_uid("fieldc2.task.T2")
        notice = await alpha.expect(
            lambda m: f"{t2.id} CANCELLED" in (m.detail.findtext("remarks") or ""),
            "the cancellation of T2")
        assert "reassigned to b" in (notice.detail.findtext("remarks") or "")
        removed = await alpha.expect(lambda m: m.type == "t-x-d-d", "T2's marker removed")
        link_el = removed.detail.find("link")
        assert link_el is not None and link_el.get("uid") == "fieldc2.task.T2"
        await alpha.expect(
            lambda m: f"{t3.id} CANCELLED" in (m.detail.findtext("remarks") or ""),
            "the old T3 order withdrawn")
        await asyncio.sleep(SETTLE)
        deletes = [m.detail.find("link") for m in alpha.types("t-x-d-d")]
        assert [d.get("uid") for d in deletes if d is not None] == ["fieldc2.task.T2"], \
            "a marker ALPHA still needs was removed"
        # A late receipt for a cancelled order changes nothing.
        await alpha.send(read_receipt(alpha, order_chats(alpha)[1].uid, service.sender.uid))
        await alpha.send(cot("barrier", "a-u-G"))
        await asyncio.sleep(SETTLE)
        assert state(post, t2, alpha.uid) is OrderState.CANCELLED


async def test_a_tak_v1_device_gets_its_order_in_protobuf(post: CommandPost) -> None:
    service = orders_of(post)
    async with clients_of(post) as connect:
        device = await connect("VICTOR", kind="v1", negotiate=True)
        await device.report()
        await eventually(lambda: device.uid in post.endpoints)
        (order,) = service.publish(incident({"v": (device.uid,)}), plan({"v": ("T2",)})).orders
        received = await device.expect(lambda m: m.detail.find("__fieldc2_order") is not None,
                                       "the order as a v1 frame")
        assert received.detail.findtext("remarks") == order.text
        await becomes(post, order, device.uid, OrderState.DELIVERED)
        await device.send(read_receipt(device, received.uid, service.sender.uid))
        await becomes(post, order, device.uid, OrderState.ACKNOWLEDGED)


async def test_a_reassigned_search_area_loses_its_track_too(post: CommandPost) -> None:
    service = orders_of(post)
    async with clients_of(post) as connect:
        alpha = await joined(post, connect, "ALPHA")
        bravo = await joined(post, connect, "BRAVO")
        inc = incident({"a": (alpha.uid,), "b": (bravo.uid,)})
        (first,) = service.publish(inc, plan({"a": ("T3",)})).orders
        await alpha.expect_uid("fieldc2.track.T3.0")
        await becomes(post, first, alpha.uid, OrderState.DELIVERED)
        service.publish(inc, plan({"b": ("T3",)}))
        await bravo.expect_uid("fieldc2.track.T3.0")
        await eventually(lambda: len(alpha.types("t-x-d-d")) == 2)
        deleted = {m.detail.find("link").get("uid")  # type: ignore[union-attr]
                   for m in alpha.types("t-x-d-d")}
        assert deleted == {"fieldc2.task.T3", "fieldc2.track.T3.0"}

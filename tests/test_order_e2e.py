"""One signature end to end: the command post signs, the relay passes it, the node checks.

A real command post (``post`` fixture) publishes a real plan with
``post.orders.publish``; a relay carries it onto a UDP "radio" on localhost
and a node (``fieldc2 node``'s core) shows it VERIFIED against the command
post's key from its roster file, or NOT VERIFIED when the order was tampered
with on the way or the roster holds another key.  The node's ``ack`` and
``status ... done`` move the server's order book.  FLASH goes the other way:
a node's signed ``flash`` reaches the server marked verified by the relay;
one with a bad signature is counted and arrives marked unverified.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldc2.crypto.signing import Signer, public_key_bytes
from fieldc2.link.profiles import profile
from fieldc2.model.radio import OrderState as RadioOrderState
from fieldc2.model.radio import OrderStatus, Report, ReportKind, Roster, RosterEntry, Text
from fieldc2.node import Node, NodeCore, NodeSettings
from fieldc2.orders.model import Order, OrderState
from fieldc2.orders.service import OrderService
from fieldc2.orders.sign import STREAM_CHANNEL_ID, sign_flash
from fieldc2.plan.model import Incident
from fieldc2.protocol.compact import ChannelContext
from fieldc2.protocol.compact_cot_detail import hash16
from fieldc2.protocol.cot_xml import format_time
from fieldc2.relay import Relay, RelaySettings
from fieldc2.server import CommandPost
from fieldc2.transport.gnss import file_fixes
from fieldc2.transport.radio_station import RadioStation, RecordSink
from fieldc2.transport.radio_udp import UdpRadio

from .conftest import eventually
from .orders_helpers import incident, plan
from .test_node import CHANNEL_ID, KEY
from .test_relay import EPOCH, FIXTURES, NODE_CALL, NODE_UID, CotClient, free_port

CP_SLOT = 200
NODE_KEY = Ed25519PrivateKey.generate()
#: Long enough that the order text crosses the 200 bytes a v1 decoder reads.
INSTRUCTIONS = ("Approach from the north ridge; the hut's door faces east. Two hikers, one "
                "with a suspected ankle fracture; keep them warm and wait for the litter "
                "team before moving anyone. Radio check every 30 minutes on the team channel.")


def orders_of(post: CommandPost) -> OrderService:
    service = post.orders
    assert isinstance(service, OrderService)
    return service


def channel_roster(post: CommandPost, cp_key: bytes | None = None) -> Roster:
    """The roster file both ends load: the command post's key is the node's trust anchor."""
    service = orders_of(post)
    return Roster([
        RosterEntry(slot=0, uid="relay-1", callsign="RELAY"),
        RosterEntry(slot=3, uid=NODE_UID, callsign=NODE_CALL, team="Cyan",
                    public_key=public_key_bytes(NODE_KEY.public_key())),
        RosterEntry(slot=CP_SLOT, uid=service.sender.uid, callsign="CP",
                    public_key=cp_key or service.signer.public_key),
    ])


def long_incident() -> Incident:
    base = incident({"a": (NODE_UID,)})
    tasks = tuple(msgspec.structs.replace(t, instructions=INSTRUCTIONS) if t.id == "T1" else t
                  for t in base.tasks)
    return msgspec.structs.replace(base, tasks=tasks)


class Rig:
    """A relay (slot 0) and a node (slot 3) on two UDP sockets, around a real post."""

    def __init__(self, tmp_path: Path, post: CommandPost) -> None:
        self.tmp_path, self.post = tmp_path, post
        self.relay_port, self.node_port = free_port(), free_port()
        self.shown: list[str] = []

    def ctx(self) -> ChannelContext:
        return ChannelContext(EPOCH, 46.95, 7.45)

    @contextlib.asynccontextmanager
    async def relay(self) -> AsyncIterator[Relay]:
        radio = await UdpRadio.open("127.0.0.1", self.relay_port,
                                    peers=[f"127.0.0.1:{self.node_port}"])

        def factory(on_record: RecordSink, app_state: Callable[[], bytes]) -> RadioStation:
            return RadioStation(radio, keys=[KEY], slot=0, profile=profile("lan"),
                                context=self.ctx(), on_record=on_record,
                                state_dir=self.tmp_path / "relay", app_state=app_state)

        settings = RelaySettings(port=self.post.tcp_port, uid="relay-1", callsign="RELAY")
        async with Relay(settings, channel_roster(self.post), factory) as relay:
            yield relay

    @contextlib.asynccontextmanager
    async def node(self, roster: Roster) -> AsyncIterator[Node]:
        radio = await UdpRadio.open("127.0.0.1", self.node_port,
                                    peers=[f"127.0.0.1:{self.relay_port}"])

        def factory(on_record: RecordSink) -> RadioStation:
            return RadioStation(radio, keys=[KEY], slot=3, profile=profile("lan"),
                                context=self.ctx(), on_record=on_record,
                                state_dir=self.tmp_path / "node")

        signer = Signer(NODE_KEY, channel_id=STREAM_CHANNEL_ID, originator=NODE_UID)
        core = NodeCore(NodeSettings(slot=3, channel_id=CHANNEL_ID, report_interval=1.0),
                        roster, signer)
        async with Node(core, factory, show=self.shown.append) as node:
            node.follow_gnss(file_fixes(FIXTURES / "ublox_m8_gn_walk.nmea", pace=20))
            # its positions make the relay open the node's own connection to the post
            await eventually(lambda: NODE_UID in self.post.endpoints, 10)
            yield node

    def order_lines(self, order_id: str) -> list[str]:
        return [line for line in self.shown if line.startswith(f"ORDER {order_id} ")]


def state(post: CommandPost, order: Order) -> OrderState:
    (status,) = orders_of(post).status(order.id)
    return next(r.state for r in status.recipients if r.recipient == NODE_UID)


def forged(order: Order, signature: str, cp_uid: str) -> bytes:
    """The command post's order to the node with one bit of the text flipped, its
    real signature kept, sent by a client that claims to be the command post."""
    text = chr(ord(order.text[0]) ^ 1) + order.text[1:]
    now_ms = int(time.time() * 1000)
    t, stale = format_time(now_ms), format_time(now_ms + 3_600_000)
    return (
        f'<event version="2.0" uid="GeoChat.{cp_uid}.{NODE_UID}.forged" type="b-t-f"'
        f' how="h-g-i-g-o" time="{t}" start="{t}" stale="{stale}">'
        '<point lat="45.01" lon="7.01" hae="0" ce="9999999" le="9999999"/><detail>'
        f'<__chat parent="RootContactGroup" groupOwner="false" chatroom="{NODE_CALL}"'
        f' id="{NODE_UID}" senderCallsign="CP"><chatgrp uid0="{cp_uid}" uid1="{NODE_UID}"'
        f' id="{NODE_UID}"/></__chat><link uid="{cp_uid}" type="a-f-G-U-C" relation="p-p"/>'
        f'<remarks to="{NODE_UID}" time="{t}">{text}</remarks>'
        f'<marti><dest callsign="{NODE_CALL}"/></marti>'
        f'<__fieldc2_order id="{order.id}" handle="777" task="{order.task_id}"'
        f' precedence="{order.precedence}" due="{format_time(order.due * 1000)}"'
        f' lat="{order.lat:.7f}" lon="{order.lon:.7f}" origin="{cp_uid}" sig="{signature}"/>'
        "</detail></event>").encode()


async def test_published_order_is_verified_on_the_node_and_its_answers_move_the_book(
        post: CommandPost, tmp_path: Path) -> None:
    service = orders_of(post)
    rig = Rig(tmp_path, post)
    async with rig.relay(), rig.node(channel_roster(post)) as node:
        result = service.publish(long_incident(), plan({"a": ("T1",)}))
        (order,) = result.orders
        assert len(order.text.encode()) > 200  # crosses the radio in the grown field
        await eventually(lambda: bool(rig.order_lines(order.id)), 10)
        (line,) = rig.order_lines(order.id)
        assert f"(signed by {service.sender.uid}, signature verified): {order.text}" in line
        assert f"  at {order.lat:.5f},{order.lon:.5f}" in rig.shown
        assert order.lat == round(order.lat, 5)  # quantised by the post before signing

        node.command(f"ack {order.id}")
        await eventually(lambda: state(post, order) is OrderState.ACKNOWLEDGED, 10)
        node.command(f"status {order.id.lower()} done")
        await eventually(lambda: state(post, order) is OrderState.DONE, 10)

        # a client pretending to be the command post: same order, one bit of text flipped
        mallory = await CotClient.connect(post.tcp_port, "ANDROID-mallory", "MALLORY")
        try:
            mallory.send(forged(order, service.signer.sign(order, NODE_UID), service.sender.uid))
            await eventually(lambda: len(rig.order_lines(order.id)) == 2, 10)
        finally:
            await mallory.close()
        tampered = rig.order_lines(order.id)[1]
        assert "NOT VERIFIED" in tampered and "signature verified" not in tampered
        assert state(post, order) is OrderState.DONE  # nothing the forgery did moved the book
        (answer,), _ = node.core.on_command(f"ack {order.id}", time.time())
        assert isinstance(answer, OrderStatus) and answer.order_id == hash16(order.id)
        assert answer.state is RadioOrderState.ACKNOWLEDGED  # for the verified one


async def test_an_order_checked_against_another_key_is_not_verified(
        post: CommandPost, tmp_path: Path) -> None:
    service = orders_of(post)
    wrong = public_key_bytes(Ed25519PrivateKey.generate().public_key())
    rig = Rig(tmp_path, post)
    async with rig.relay(), rig.node(channel_roster(post, cp_key=wrong)):
        (order,) = service.publish(incident({"a": (NODE_UID,)}), plan({"a": ("T3",)})).orders
        await eventually(lambda: bool(rig.order_lines(order.id)), 10)
        (line,) = rig.order_lines(order.id)
        assert "NOT VERIFIED" in line and "signature verified" not in line
        assert order.text in line  # still shown, flagged


async def test_flash_reaches_the_post_verified_and_a_bad_one_is_counted(
        post: CommandPost, tmp_path: Path) -> None:
    rig = Rig(tmp_path, post)
    watcher = await CotClient.connect(post.tcp_port, "ANDROID-watch", "WATCH")

    def chat(text: str) -> str | None:
        found = watcher.find(lambda e: e.type == "b-t-f" and text in e.detail.xml)
        return found.detail.xml if found is not None else None

    try:
        async with rig.relay() as relay, rig.node(channel_roster(post)) as node:
            assert node.command("flash casualty at the ford, need winch") == "FLASH sent"
            await eventually(lambda: chat("need winch") is not None, 10)
            xml = chat("need winch") or ""
            assert '<__fieldc2_flash verified="true"' in xml and "sig=" in xml
            assert (relay.flash_verified, relay.flash_unverified) == (1, 0)

            # the same signed FLASH heard twice (a replay), and one signed 2 h ago
            (again,), _ = node.core.on_command("flash bridge is down", time.time())
            old = Text(sender=3, text="rockfall on the path", flash=True,
                       time=int(time.time()) - 7200)
            assert node.core.signer is not None
            stale = msgspec.structs.replace(old, signature=sign_flash(node.core.signer, old))
            for record in (again, again, stale):
                node.station.submit(record)
            await eventually(lambda: chat("rockfall on the path") is not None, 10)
            await eventually(lambda: relay.flash_unverified == 2, 10)
            assert relay.flash_verified == 2
            replays = [e.detail.xml for e, _ in watcher.events
                       if e.type == "b-t-f" and "bridge is down" in e.detail.xml]
            assert any('verified="true"' in xml for xml in replays)
            assert any('verified="false" reason="replay"' in xml for xml in replays)
            assert 'verified="false" reason="stale"' in (chat("rockfall on the path") or "")

            # a FLASH report (a casualty marker) signed the same way
            casualty = Report(sender=3, report_id=9, kind=ReportKind.CASUALTY,
                              time=int(time.time()), lat=46.951, lon=7.452,
                              text="femur fracture", count=1, flash=True)
            node.station.submit(msgspec.structs.replace(
                casualty, signature=sign_flash(node.core.signer, casualty)))
            await eventually(lambda: watcher.find(
                lambda e: e.uid.endswith(".9") and "femur" in e.detail.xml) is not None, 10)
            marker = watcher.find(lambda e: e.uid.endswith(".9") and "femur" in e.detail.xml)
            assert marker is not None and marker.type == "b-r-f-h-c"
            assert '<__fieldc2_flash verified="true"' in marker.detail.xml
            assert relay.flash_verified == 3

            # the node signs with a key that is not the one in the relay's roster
            node.core.signer = Signer(Ed25519PrivateKey.generate(),
                                      channel_id=STREAM_CHANNEL_ID, originator=NODE_UID)
            node.command("flash second casualty")
            await eventually(lambda: chat("second casualty") is not None, 10)
            xml = chat("second casualty") or ""
            assert '<__fieldc2_flash verified="false" reason="signature"/>' in xml
            assert 'verified="true"' not in xml
            assert (relay.flash_verified, relay.flash_unverified) == (3, 3)
    finally:
        await watcher.close()

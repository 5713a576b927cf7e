"""``fieldc2 node``: the sans-I/O core, then a node over UDP against a bare station."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldc2.crypto.radio_keys import ChannelKey
from fieldc2.crypto.signing import Signer, public_key_bytes
from fieldc2.gnss import Fix as GnssFix
from fieldc2.link.profiles import profile
from fieldc2.link.radio import handling_of
from fieldc2.model.precedence import Precedence
from fieldc2.model.radio import (
    BROADCAST,
    Announce,
    Order,
    OrderState,
    OrderStatus,
    PositionBatch,
    Record,
    Report,
    ReportKind,
    Roster,
    RosterEntry,
    TaskKind,
    Text,
)
from fieldc2.node import NODE_KEY_FILE, Node, NodeCore, NodeSettings
from fieldc2.orders.sign import (
    STREAM_CHANNEL_ID,
    fields_of_compact,
    flash_signing_bytes,
    signing_bytes,
    verify_signed,
)
from fieldc2.protocol.compact import ChannelContext, order_signing_bytes
from fieldc2.transport.gnss import file_fixes
from fieldc2.transport.radio_station import RadioStation, RecordSink
from fieldc2.transport.radio_udp import UdpRadio

from .conftest import eventually

FIXTURES = Path(__file__).parent / "fixtures" / "nmea"
KEY = ChannelKey.from_passphrase("sar-test", "correct horse battery staple")
CHANNEL_ID = KEY.channel_id
HQ_KEY = Ed25519PrivateKey.generate()
NOW = 1_773_567_000.0


def roster() -> Roster:
    return Roster([
        RosterEntry(slot=0, uid="relay-1", callsign="RELAY"),
        RosterEntry(slot=3, uid="ANDROID-node3", callsign="ALPHA-3", team="Cyan"),
        RosterEntry(slot=4, uid="ANDROID-node4", callsign="BRAVO-4", team="Cyan"),
        RosterEntry(slot=200, uid="HQ-1", callsign="HQ",
                    public_key=public_key_bytes(HQ_KEY.public_key())),
    ])


def signed(order: Order, key: Ed25519PrivateKey = HQ_KEY, uid: str = "HQ-1") -> Order:
    signer = Signer(key, channel_id=CHANNEL_ID, originator=uid)
    sig = signer.sign(order_signing_bytes(order, CHANNEL_ID.to_bytes(2, "big")))
    return Order(**{**{f: getattr(order, f) for f in order.__struct_fields__}, "signature": sig})


ORDER = Order(origin=200, order_id=4242, to=3, precedence=Precedence.IMMEDIATE,
              task=TaskKind.SEARCH, text="Search sector B2 to the river", due=1_773_570_600,
              lat=46.95, lon=7.45)


def gfix(lat: float, lon: float, t: float = NOW) -> GnssFix:
    return GnssFix(time_of_day=t % 86400, time=t, lat=lat, lon=lon, alt=540.0, speed=1.4,
                   course=80.0, satellites=9, hdop=0.9, talker="GN")


def core(**settings: float) -> NodeCore:
    return NodeCore(NodeSettings(slot=3, channel_id=CHANNEL_ID, **settings), roster())


def test_position_at_interval_and_on_movement() -> None:
    node = core(report_interval=60, move_threshold=25, min_interval=5)
    first = node.on_fix(gfix(46.95, 7.45), NOW)
    assert isinstance(first, PositionBatch)
    [fix] = first.fixes
    assert (fix.track, fix.fix_no, fix.time, fix.hae, fix.speed) == (3, 0, int(NOW), 540.0, 1.4)
    assert node.on_fix(gfix(46.95001, 7.45), NOW + 10) is None  # 1 m, 10 s: nothing due
    assert node.on_fix(gfix(46.9503, 7.45), NOW + 3) is None  # 33 m but too soon
    moved = node.on_fix(gfix(46.9503, 7.45), NOW + 6)  # 33 m after 6 s
    assert isinstance(moved, PositionBatch) and moved.fixes[0].fix_no == 1
    assert node.on_fix(gfix(46.9503, 7.45), NOW + 30) is None
    assert node.on_fix(gfix(46.9503, 7.45), NOW + 66) is not None  # the interval


def test_signed_order_is_shown_verified_and_received_is_sent() -> None:
    node = core()
    out, lines = node.on_record(signed(ORDER), NOW)
    assert "ORDER 4242 [IMMEDIATE] search from HQ (signed by HQ-1, signature verified)" in lines[0]
    assert any("46.95000,7.45000" in line for line in lines)
    assert out == [OrderStatus(sender=3, order_id=4242, state=OrderState.RECEIVED,
                               time=int(NOW))]
    assert handling_of(out[0]).reliable
    assert node.on_record(signed(ORDER), NOW + 1) == ([], [])  # a repeat is shown once


@pytest.mark.parametrize("order", [
    ORDER,  # unsigned
    Order(**{**{f: getattr(signed(ORDER), f) for f in ORDER.__struct_fields__},
             "text": "Search sector B3"}),  # text changed after signing
    signed(ORDER, Ed25519PrivateKey.generate()),  # someone else's key
])
def test_unverifiable_orders_are_flagged(order: Order) -> None:
    node = core()
    _, lines = node.on_record(order, NOW)
    assert "NOT VERIFIED" in lines[0] and "signature verified" not in lines[0]
    # Answering it needs the operator's explicit confirmation: a forged order
    # must not make the command post believe its real order was acknowledged.
    out, message = node.on_command(f"ack {order.order_id}", NOW)
    assert out == [] and "NOT VERIFIED" in message and "ack!" in message
    assert node.on_command(f"status {order.order_id} done", NOW)[0] == []
    out, _ = node.on_command(f"ack! {order.order_id}", NOW)
    assert isinstance(out[0], OrderStatus) and out[0].state == OrderState.ACKNOWLEDGED
    out, _ = node.on_command(f"status! {order.order_id} done", NOW)
    assert isinstance(out[0], OrderStatus) and out[0].state == OrderState.DONE


def test_orders_to_others_are_not_shown() -> None:
    node = core()
    other = Order(**{**{f: getattr(ORDER, f) for f in ORDER.__struct_fields__}, "to": 4})
    assert node.on_record(signed(other), NOW) == ([], [])
    assert node.on_record(Text(sender=4, to=0, text="x"), NOW) == ([], [])


def test_commands() -> None:
    node = core()
    out, message = node.on_command("ack 4242", NOW)
    assert out == [] and "no order" in message
    node.on_record(signed(ORDER), NOW)
    out, message = node.on_command("ack 4242", NOW + 5)
    assert out == [OrderStatus(sender=3, order_id=4242, state=OrderState.ACKNOWLEDGED,
                               time=int(NOW) + 5)]
    out, _ = node.on_command("status 4242 done", NOW + 9)
    assert isinstance(out[0], OrderStatus) and out[0].state == OrderState.DONE
    assert "state must be" in node.on_command("status 4242 finished", NOW)[1]
    out, _ = node.on_command("say @BRAVO-4 meet at the bridge", NOW)
    assert out == [Text(sender=3, to=4, text="meet at the bridge")]
    out, _ = node.on_command("say all clear here", NOW)
    assert out == [Text(sender=3, to=BROADCAST, text="all clear here")]
    assert "nobody called" in node.on_command("say @NOBODY hi", NOW)[1]
    assert "no GNSS fix" in node.on_command("report hazard rockfall", NOW)[1]
    node.on_fix(gfix(46.951, 7.451), NOW)
    out, _ = node.on_command("report casualty one injured, conscious", NOW)
    [report] = out
    assert isinstance(report, Report) and report.kind == ReportKind.CASUALTY
    assert report.text == "one injured, conscious" and (report.lat, report.lon) == (46.951, 7.451)
    assert handling_of(report).precedence == Precedence.IMMEDIATE
    assert "unknown command" in node.on_command("dance", NOW)[1]
    assert node.on_command("help", NOW)[1].startswith("commands:")


# --- a node on UDP against a bare station in slot 0 -------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_node_over_udp(tmp_path: Path) -> None:
    pa, pb = free_port(), free_port()
    ctx = ChannelContext(int(NOW) - 3600, 46.95, 7.45)
    heard: list[tuple[int, Record]] = []
    peer_radio = await UdpRadio.open("127.0.0.1", pa, peers=[f"127.0.0.1:{pb}"])
    peer = RadioStation(peer_radio, keys=[KEY], slot=0, profile=profile("lan"),
                        context=ctx, on_record=lambda r, now: heard.append((0, r)))
    node_radio = await UdpRadio.open("127.0.0.1", pb, peers=[f"127.0.0.1:{pa}"])
    shown: list[str] = []

    def factory(on_record: RecordSink) -> RadioStation:
        return RadioStation(node_radio, keys=[KEY], slot=3, profile=profile("lan"),
                            context=ChannelContext(int(NOW) - 3600, 46.95, 7.45),
                            on_record=on_record, state_dir=tmp_path / "node")

    peer.start()
    try:
        async with Node(core(), factory, show=shown.append) as node:
            node.follow_gnss(file_fixes(FIXTURES / "ublox_m8_gn_walk.nmea", pace=0))
            await eventually(lambda: any(isinstance(r, PositionBatch) for _, r in heard))
            fix = next(r for _, r in heard if isinstance(r, PositionBatch)).fixes[0]
            assert fix.track == 3 and abs(fix.lat - 46.94809) < 1e-4
            assert any(getattr(r, "uid", "") == "ANDROID-node3" for _, r in heard)  # Announce
            peer.submit(signed(ORDER))
            await eventually(lambda: any("ORDER 4242" in line for line in shown))
            assert "signature verified" in shown[0]
            assert "acknowledged sent" in node.command("ack 4242").replace("4242: ", "")
            await eventually(lambda: any(
                isinstance(r, OrderStatus) and r.state == OrderState.ACKNOWLEDGED
                for _, r in heard))
            states = [r.state for _, r in heard if isinstance(r, OrderStatus)]
            assert states == [OrderState.RECEIVED, OrderState.ACKNOWLEDGED]
    finally:
        await peer.close()
    assert (tmp_path / "node" / "station.state").exists()


async def test_stdin_style_commands_are_followed() -> None:
    async def lines() -> AsyncIterator[str]:
        yield "say hello\n"

    pa, pb = free_port(), free_port()
    heard: list[Record] = []
    peer = RadioStation(await UdpRadio.open("127.0.0.1", pa, peers=[f"127.0.0.1:{pb}"]),
                        keys=[KEY], slot=0, profile=profile("lan"),
                        context=ChannelContext(int(NOW), 46.95, 7.45),
                        on_record=lambda r, now: heard.append(r))
    node_radio = await UdpRadio.open("127.0.0.1", pb, peers=[f"127.0.0.1:{pa}"])
    shown: list[str] = []
    peer.start()
    try:
        async with Node(core(), lambda sink: RadioStation(
                node_radio, keys=[KEY], slot=3, profile=profile("lan"),
                context=ChannelContext(int(NOW), 46.95, 7.45), on_record=sink),
                show=shown.append) as node:
            node.follow_commands(lines())
            await eventually(lambda: Text(sender=3, text="hello") in heard)
            assert shown == ["sent"]
    finally:
        await peer.close()
    await asyncio.sleep(0)


async def test_node_command_line(tmp_path: Path) -> None:
    """``fieldc2 node`` as a process: GNSS from a file, commands on stdin, orders on stdout."""
    pa, pb = free_port(), free_port()
    heard: list[Record] = []
    peer = RadioStation(await UdpRadio.open("127.0.0.1", pa, peers=[f"127.0.0.1:{pb}"]),
                        keys=[KEY], slot=0, profile=profile("lan"),
                        context=ChannelContext(int(NOW), 46.95, 7.45),
                        on_record=lambda r, now: heard.append(r))
    (tmp_path / "sar.chan").write_text(KEY.export() + "\n")
    (tmp_path / "roster.toml").write_text("".join(
        f'[[member]]\nslot = {e.slot}\nuid = "{e.uid}"\ncallsign = "{e.callsign}"\n'
        f'public_key = "{e.public_key.hex()}"\n' for e in roster()))
    (tmp_path / "node.toml").write_text(f"""
[channel]
name = "sar-test"
key_file = "sar.chan"
profile = "lan"
epoch = {int(NOW)}
lat0 = 46.95
lon0 = 7.45
roster = "roster.toml"
[radio]
adapter = "udp://127.0.0.1:{pb}?peer=127.0.0.1:{pa}"
[node]
slot = 3
gnss = "file://{FIXTURES / 'ublox_m8_gn_walk.nmea'}?pace=5"
state_dir = "state"
""")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fieldc2.relay_cli", "node", "--config",
        str(tmp_path / "node.toml"), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    peer.start()
    try:
        key_line = await asyncio.wait_for(process.stdout.readline(), 10)
        assert key_line.startswith(b"node key (roster public_key of slot 3): ")
        public = bytes.fromhex(key_line.split(b": ")[1].decode().strip())
        key_file = tmp_path / "state" / NODE_KEY_FILE
        assert key_file.stat().st_mode & 0o777 == 0o600
        banner = await asyncio.wait_for(process.stdout.readline(), 10)
        assert banner.startswith(b"node 3 on udp://")
        process.stdin.write(b"say hello from the field\n")
        await eventually(lambda: Text(sender=3, text="hello from the field") in heard, 10)
        process.stdin.write(b"flash man down at the ford\n")
        await eventually(lambda: any(isinstance(r, Text) and r.flash for r in heard), 10)
        flash = next(r for r in heard if isinstance(r, Text) and r.flash)
        assert flash.text == "man down at the ford" and flash.time is not None
        assert verify_signed(public, "ANDROID-node3", flash_signing_bytes(flash),
                             flash.signature)
        await eventually(lambda: any(isinstance(r, PositionBatch) for r in heard), 10)
        peer.submit(signed(ORDER))
        line = await asyncio.wait_for(process.stdout.readline(), 10)
        while not line.startswith(b"ORDER"):
            line = await asyncio.wait_for(process.stdout.readline(), 10)
        assert b"signature verified" in line
    finally:
        process.send_signal(signal.SIGINT)  # a clean stop persists the state
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
        await peer.close()
    assert process.returncode == 0, stderr.decode()
    assert (tmp_path / "state" / "station.state").exists()


# --- orders of the command post, FLASH --------------------------------------------

def cp_order(**changes: object) -> Order:
    """ORDER as the relay brings a command-post order: ``ref``, ``task_ref`` and the
    command post's signature over orders.sign's fields for ANDROID-node3."""
    order = msgspec.structs.replace(ORDER, ref="ORD-1A2B3C4D", task_ref="T1")
    fields = fields_of_compact(order, "ANDROID-node3")
    assert fields is not None
    signer = Signer(HQ_KEY, channel_id=STREAM_CHANNEL_ID, originator="HQ-1")
    signed_order = msgspec.structs.replace(order, signature=signer.sign(signing_bytes(fields)))
    return msgspec.structs.replace(signed_order, **changes)


def test_command_post_order_is_verified_and_answered_by_its_id() -> None:
    node = core()
    _, lines = node.on_record(cp_order(), NOW)
    assert lines[0].startswith("ORDER ORD-1A2B3C4D [IMMEDIATE] search from HQ (signed by HQ-1, "
                               "signature verified)")
    assert "  reply: ack ORD-1A2B3C4D | status ORD-1A2B3C4D in_progress|done|failed" in lines
    out, message = node.on_command("ack ord-1a2b3c4d", NOW)
    assert out == [OrderStatus(sender=3, order_id=4242, state=OrderState.ACKNOWLEDGED,
                               time=int(NOW))]
    assert message == "order ORD-1A2B3C4D: acknowledged sent"
    assert node.on_command("status 4242 done", NOW)[0][0].state == OrderState.DONE  # type: ignore[union-attr]
    assert node.on_command("ack ORD-FFFFFFFF", NOW)[1].startswith("error: no order")
    # a forged copy: same radio id is never shown nor stored; another radio id is shown
    # NOT VERIFIED, and the operator's "ack ORD-..." still means the verified one
    assert node.on_record(cp_order(text="Go home"), NOW) == ([], [])
    assert node.orders[4242].text == ORDER.text
    _, lines = node.on_record(cp_order(text="Go home", order_id=777), NOW)
    assert lines[0].startswith("ORDER ORD-1A2B3C4D") and "NOT VERIFIED" in lines[0]
    assert node.on_command("ack ORD-1A2B3C4D", NOW)[0][0].order_id == 4242  # type: ignore[union-attr]


@pytest.mark.parametrize("changes", [
    {"task_ref": "T2"}, {"ref": "ORD-1A2B3C4E"}, {"due": ORDER.due + 60},  # type: ignore[operator]
    {"lat": 46.95001}, {"text": "Search sector B3 to the river"}, {"to": 4},
    {"due": None}, {"origin": 4},
])
def test_command_post_order_changed_on_the_way_is_not_verified(changes: dict[str, object]
                                                                ) -> None:
    node = NodeCore(NodeSettings(slot=changes.get("to", 3), channel_id=CHANNEL_ID),  # type: ignore[arg-type]
                    roster())
    _, lines = node.on_record(cp_order(**changes), NOW)
    assert "NOT VERIFIED" in lines[0]


def test_announce_cannot_move_a_signer_in_the_roster_file() -> None:
    node = core()
    node.on_record(Announce(slot=200, uid="EVIL-1", callsign="HQ"), NOW)
    node.on_record(Announce(slot=9, uid="ANDROID-node9", callsign="CHARLIE-9"), NOW)
    assert node.roster.by_slot(200).uid == "HQ-1"  # type: ignore[union-attr]
    assert node.roster.by_slot(9).callsign == "CHARLIE-9"  # type: ignore[union-attr]
    assert "signature verified" in node.on_record(cp_order(), NOW)[1][0]


def test_flash_is_signed_with_the_node_key_and_goes_first() -> None:
    assert core().on_command("flash man down", NOW)[1].startswith("error: this node has no")
    key = Ed25519PrivateKey.generate()
    node = NodeCore(NodeSettings(slot=3, channel_id=CHANNEL_ID), roster(),
                    Signer(key, channel_id=STREAM_CHANNEL_ID, originator="ANDROID-node3"))
    (text,), message = node.on_command("flash man down at the ford", NOW)
    assert message == "FLASH sent" and isinstance(text, Text)
    assert (text.flash, text.time, text.to) == (True, int(NOW), BROADCAST)
    assert handling_of(text).precedence == Precedence.FLASH and handling_of(text).reliable
    public = public_key_bytes(key.public_key())
    assert verify_signed(public, "ANDROID-node3", flash_signing_bytes(text), text.signature)
    moved = msgspec.structs.replace(text, text="man down at the bridge")
    assert not verify_signed(public, "ANDROID-node3", flash_signing_bytes(moved), text.signature)
    assert node.on_command("flash", NOW)[1].startswith("error: usage")
    report = Report(sender=3, report_id=1, kind=ReportKind.CASUALTY, time=int(NOW), lat=1.0,
                    lon=2.0, flash=True)
    assert handling_of(report).precedence == Precedence.FLASH

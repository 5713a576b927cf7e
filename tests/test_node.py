"""``fieldc2 node``: the sans-I/O core, then a node over UDP against a bare station."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

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
from fieldc2.node import Node, NodeCore, NodeSettings
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
        banner = await asyncio.wait_for(process.stdout.readline(), 10)
        assert banner.startswith(b"node 3 on udp://")
        process.stdin.write(b"say hello from the field\n")
        await eventually(lambda: Text(sender=3, text="hello from the field") in heard, 10)
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

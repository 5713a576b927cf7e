"""``fieldc2 relay`` against a real command post, with nodes on UDP radio adapters.

Everything is real except the air: the command post (``post`` fixture), TCP
CoT clients, two UDP "radios" on localhost, the link layer, frame security
and the compact codec.  The restart test kills a relay process with SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from fieldc2 import relay_cli
from fieldc2.crypto.radio_keys import ChannelKey, key_document
from fieldc2.crypto.signing import Signer
from fieldc2.errors import ConfigError
from fieldc2.link.profiles import profile
from fieldc2.model.cot import Event, EventFacts
from fieldc2.model.radio import Order
from fieldc2.node import Node, NodeCore, NodeSettings
from fieldc2.orders.sign import STREAM_CHANNEL_ID, fields_of_compact, signing_bytes
from fieldc2.protocol.compact import ChannelContext
from fieldc2.protocol.compact_cot_detail import hash16
from fieldc2.protocol.cot_xml import format_time, parse_event
from fieldc2.protocol.framing import XmlFramer
from fieldc2.relay import Relay, RelaySettings, RelayState
from fieldc2.server import CommandPost
from fieldc2.sim.units import chat, self_report
from fieldc2.transport.gnss import file_fixes
from fieldc2.transport.radio_station import STATE_FILE, RadioStation, RecordSink, StationState
from fieldc2.transport.radio_udp import UdpRadio
from fieldc2.users import UserStore

from .conftest import eventually, make_config
from .test_node import CHANNEL_ID, HQ_KEY, KEY, ORDER, roster

FIXTURES = Path(__file__).parent / "fixtures" / "nmea"
NODE_UID, NODE_CALL = "ANDROID-node3", "ALPHA-3"
EPOCH = 1_773_500_000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class CotClient:
    """A TAK-like TCP client: says who it is, collects every event it is sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.events: list[tuple[Event, EventFacts]] = []
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, port: int, uid: str, callsign: str) -> CotClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        client.send(self_report(uid, callsign, 46.96, 7.46, group="Cyan"))
        return client

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def _read(self) -> None:
        framer = XmlFramer()
        while data := await self.reader.read(65536):
            framer.feed(data)
            while (frame := framer.next_frame()) is not None:
                self.events.append(parse_event(frame))

    def find(self, match: Callable[[Event], bool]) -> Event | None:
        return next((e for e, _ in self.events if match(e)), None)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def order_cot(order: Order, order_id: str, now: float) -> bytes:
    """The order as the command post sends it (DIL contract): GeoChat + __fieldc2_order."""
    t = format_time(int(now * 1000))
    stale = format_time(int(now * 1000) + 3_600_000)
    sig = base64.b64encode(order.signature).decode()
    return (
        f'<event version="2.0" uid="GeoChat.HQ-1.{NODE_UID}.{order_id}" type="b-t-f"'
        f' how="h-g-i-g-o" time="{t}" start="{t}" stale="{stale}">'
        '<point lat="46.95" lon="7.45" hae="0" ce="9999999" le="9999999"/><detail>'
        f'<__chat parent="RootContactGroup" groupOwner="false" chatroom="{NODE_CALL}"'
        f' id="{NODE_UID}" senderCallsign="HQ"><chatgrp uid0="HQ-1" uid1="{NODE_UID}"'
        f' id="{NODE_UID}"/></__chat><link uid="HQ-1" type="a-f-G-U-C" relation="p-p"/>'
        f'<remarks source="BAO.F.ATAK.HQ-1" to="{NODE_UID}" time="{t}">{order.text}</remarks>'
        f'<marti><dest callsign="{NODE_CALL}"/></marti>'
        f'<__fieldc2_order id="{order_id}" task="T-7" kind="search" precedence="IMMEDIATE"'
        f' due="{format_time((order.due or 0) * 1000)}" lat="{order.lat}" lon="{order.lon}"'
        f' origin="HQ-1" sig="{sig}"/></detail></event>'
    ).encode()


def server_order(order_id: str) -> Order:
    """ORDER as the relay will put it on the radio (16-bit id, the server's id as
    ``ref``), signed by HQ-1 as the command post signs (orders.sign, channel 0)."""
    fields = {f: getattr(ORDER, f) for f in ORDER.__struct_fields__}
    order = Order(**{**fields, "order_id": hash16(order_id), "ref": order_id,
                     "task_ref": "T-7"})
    signed_fields = fields_of_compact(order, NODE_UID)
    assert signed_fields is not None
    signer = Signer(HQ_KEY, channel_id=STREAM_CHANNEL_ID, originator="HQ-1")
    return msgspec.structs.replace(order, signature=signer.sign(signing_bytes(signed_fields)))


class Rig:
    """A relay (slot 0) and a node (slot 3) on two UDP sockets, and a post."""

    def __init__(self, tmp_path: Path, post_port: int) -> None:
        self.tmp_path = tmp_path
        self.post_port = post_port
        self.relay_port, self.node_port = free_port(), free_port()
        self.shown: list[str] = []
        self.tls: tuple[Path, Path, Path] | None = None

    def ctx(self) -> ChannelContext:
        return ChannelContext(EPOCH, 46.95, 7.45)

    @contextlib.asynccontextmanager
    async def relay(self, port: int | None = None) -> AsyncIterator[Relay]:
        radio = await UdpRadio.open("127.0.0.1", self.relay_port,
                                    peers=[f"127.0.0.1:{self.node_port}"])

        def factory(on_record: RecordSink, app_state: Callable[[], bytes]) -> RadioStation:
            return RadioStation(radio, keys=[KEY], slot=0, profile=profile("lan"),
                                context=self.ctx(), on_record=on_record,
                                state_dir=self.tmp_path / "relay", app_state=app_state)

        settings = RelaySettings(port=port or self.post_port, uid="relay-1", callsign="RELAY",
                                 position_interval=0.5, tls=self.tls)
        async with Relay(settings, roster(), factory) as relay:
            yield relay

    @contextlib.asynccontextmanager
    async def node(self) -> AsyncIterator[Node]:
        radio = await UdpRadio.open("127.0.0.1", self.node_port,
                                    peers=[f"127.0.0.1:{self.relay_port}"])

        def factory(on_record: RecordSink) -> RadioStation:
            return RadioStation(radio, keys=[KEY], slot=3, profile=profile("lan"),
                                context=self.ctx(), on_record=on_record,
                                state_dir=self.tmp_path / "node")

        core = NodeCore(NodeSettings(slot=3, channel_id=CHANNEL_ID, report_interval=1.0),
                        roster())
        async with Node(core, factory, show=self.shown.append) as node:
            yield node


async def test_node_position_reaches_the_picture_and_a_tcp_client(
        post: CommandPost, tmp_path: Path) -> None:
    rig = Rig(tmp_path, post.tcp_port)
    watcher = await CotClient.connect(post.tcp_port, "ANDROID-watch", "WATCH")
    try:
        async with rig.relay() as relay, rig.node() as node:
            node.follow_gnss(file_fixes(FIXTURES / "ublox_m8_gn_walk.nmea", pace=20))
            await eventually(lambda: watcher.find(lambda e: e.uid == NODE_UID) is not None, 10)
            pli = watcher.find(lambda e: e.uid == NODE_UID)
            assert pli is not None and pli.type == "a-f-G-U-C" and pli.how == "m-g"
            assert pli.callsign == NODE_CALL
            assert abs(pli.lat - 46.9481) < 2e-4 and abs(pli.lon - 7.4475) < 2e-4
            assert pli.hae == 540.0
            # the watcher's own position goes down the radio to the node's side
            watcher.send(self_report("ANDROID-watch", "WATCH", 46.97, 7.47, group="Cyan"))
            await eventually(lambda: relay.roster.by_uid("ANDROID-watch") is not None, 5)
            entry = relay.roster.by_uid("ANDROID-watch")
            assert entry is not None and entry.callsign == "WATCH" and entry.team == "Cyan"
            positions = node.station.context.positions
            await eventually(lambda: positions.latest_position(entry.slot) is not None, 5)
            lat, lon = positions.latest_position(entry.slot) or (0, 0)
            assert abs(lat - 46.97) < 1e-5 and abs(lon - 7.47) < 1e-5
            assert node.core.roster.by_slot(entry.slot) == entry  # learned from the Announce
            # the node's own position is not echoed back down to it
            assert positions.latest_position(3) is None
    finally:
        await watcher.close()


async def test_order_reaches_the_node_and_its_ack_comes_back(
        post: CommandPost, tmp_path: Path) -> None:
    rig = Rig(tmp_path, post.tcp_port)
    hq = await CotClient.connect(post.tcp_port, "HQ-1", "HQ")
    try:
        async with rig.relay(), rig.node() as node:
            node.follow_gnss(file_fixes(FIXTURES / "ublox_m8_gn_walk.nmea", pace=20))
            await eventually(lambda: hq.find(lambda e: e.uid == NODE_UID) is not None, 10)
            order = server_order("ORD-0042")
            hq.send(order_cot(order, "ORD-0042", time.time()))
            await eventually(lambda: any("ORDER" in line for line in rig.shown), 10)
            assert "ORDER ORD-0042 [IMMEDIATE] search from HQ (signed by HQ-1, " \
                   "signature verified): Search sector B2 to the river" in rig.shown[0]
            node.command("ack ord-0042")

            def status(state: str) -> Event | None:
                return hq.find(lambda e: e.type == "t-x-fieldc2-o-s"
                               and f'state="{state}"' in e.detail.xml)

            await eventually(lambda: status("acknowledged") is not None, 10)
            ack = status("acknowledged")
            assert ack is not None and 'id="ORD-0042"' in ack.detail.xml  # the server's id
            assert f'by="{NODE_UID}"' in ack.detail.xml
            assert status("received") is not None

            # chat both ways: to the node by callsign, and from the node to all
            hq.send(chat("HQ-1", "HQ", "bring the thermal camera", to_callsign=NODE_CALL))
            await eventually(lambda: any(line.startswith("MSG HQ (to you)") for line in rig.shown))
            assert "MSG HQ (to you): bring the thermal camera" in rig.shown
            node.command("say on our way")
            await eventually(lambda: hq.find(
                lambda e: e.type == "b-t-f" and "on our way" in e.detail.xml) is not None, 10)
            said = hq.find(lambda e: e.type == "b-t-f" and "on our way" in e.detail.xml)
            assert said is not None and f'uid0="{NODE_UID}"' in said.detail.xml
    finally:
        await hq.close()


# --- a relay process killed mid-exercise ---------------------------------------------

def relay_files(tmp_path: Path, rig: Rig) -> Path:
    members = "".join(
        f'[[member]]\nslot = {e.slot}\nuid = "{e.uid}"\ncallsign = "{e.callsign}"\n'
        f'team = "{e.team}"\npublic_key = "{e.public_key.hex()}"\n\n' for e in roster())
    (tmp_path / "roster.toml").write_text(members)
    (tmp_path / "passphrase").write_text("correct horse battery staple\n")
    config = tmp_path / "relay.toml"
    config.write_text(f"""
[channel]
name = "sar-test"
passphrase_file = "passphrase"
profile = "lan"
epoch = {EPOCH}
lat0 = 46.95
lon0 = 7.45
roster = "roster.toml"

[radio]
adapter = "udp://127.0.0.1:{rig.relay_port}?peer=127.0.0.1:{rig.node_port}"

[relay]
state_dir = "relay"
uid = "relay-1"
callsign = "RELAY"
position_interval = 0.5
""")
    return config


def start_relay(config: Path, server_port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fieldc2.relay_cli", "relay", "--config", str(config),
         "--server", f"127.0.0.1:{server_port}", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill(process: subprocess.Popen[bytes]) -> str:
    """SIGKILL: no clean shutdown, no last persist; what it logged."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert process.stderr is not None
    with process.stderr:
        return process.stderr.read().decode()


def relay_saved(tmp_path: Path) -> dict[str, list[str]]:
    """What the relay process has persisted: uplink item keys, devices with a hello."""
    path = tmp_path / "relay" / STATE_FILE
    if not path.exists():
        return {"uplink": [], "hellos": []}
    state = msgspec.msgpack.decode(path.read_bytes(), type=StationState)
    app = msgspec.msgpack.decode(state.app, type=RelayState) if state.app else RelayState()
    return {"uplink": [key for key, _, _ in app.uplink], "hellos": [u for u, _ in app.hellos]}


def node_reliable_queued(node: Node) -> int:
    return sum(1 for unit in node.station.endpoint.outbox.units() if unit.reliable)


async def test_relay_killed_mid_exercise_loses_nothing_it_accepted(
        post: CommandPost, tmp_path: Path) -> None:
    rig = Rig(tmp_path, post.tcp_port)
    config = relay_files(tmp_path, rig)
    hq = await CotClient.connect(post.tcp_port, "HQ-1", "HQ")
    nowhere = free_port()  # the post is unreachable at first
    relay = start_relay(config, nowhere)
    try:
        # 1. uplink: the relay takes custody of a report while the post is unreachable
        async with rig.node() as node:
            node.follow_gnss(file_fixes(FIXTURES / "ublox_m8_gn_walk.nmea", pace=20))
            await eventually(lambda: node.core.last_fix is not None, 10)  # a report needs one
            assert node.command("report hazard rockfall on the east path").endswith("sent")
            await eventually(lambda: node_reliable_queued(node) == 0, 15)  # custody taken
            # and a position, which names the node's connection to the post: the first
            # ones may have gone out before the relay process listened (unreliable)
            await eventually(lambda: NODE_UID in relay_saved(tmp_path)["hellos"], 15)
        stderr = kill(relay)
        assert "Traceback" not in stderr, stderr
        assert hq.find(lambda e: e.uid.startswith("fieldc2.report.")) is None

        # 2. the restarted relay reaches the post and delivers what it had accepted
        relay = start_relay(config, post.tcp_port)
        await eventually(lambda: hq.find(lambda e: e.uid.startswith("fieldc2.report."))
                         is not None, 15)
        report = hq.find(lambda e: e.uid.startswith("fieldc2.report."))
        assert report is not None and "rockfall on the east path" in report.detail.xml
        await eventually(lambda: hq.find(lambda e: e.uid == NODE_UID) is not None, 15)

        # 3. downlink: an order accepted while the node is off the air, then a kill
        order = server_order("ORD-0077")
        hq.send(order_cot(order, "ORD-0077", time.time()))
        state = tmp_path / "relay" / "station.state"
        before = state.stat().st_mtime_ns
        await eventually(lambda: state.stat().st_mtime_ns != before, 10)
        await asyncio.sleep(0.5)  # let it try to send to the silent node once or twice
        stderr = kill(relay)
        assert "Traceback" not in stderr, stderr

        # 4. the restarted relay still has it: the node gets it and its ack comes back
        relay = start_relay(config, post.tcp_port)
        async with rig.node() as node:
            await eventually(lambda: any("ORDER" in line for line in rig.shown), 20)
            assert rig.shown[0].startswith("ORDER ORD-0077 [IMMEDIATE]")
            assert "signature verified" in rig.shown[0]
            node.command(f"status {order.order_id} in_progress")  # the radio id works too
            await eventually(lambda: hq.find(
                lambda e: e.type == "t-x-fieldc2-o-s" and 'state="in_progress"' in e.detail.xml
                and 'id="ORD-0077"' in e.detail.xml) is not None, 15)
    finally:
        kill(relay)
        await hq.close()


async def test_relay_over_mutual_tls(tmp_path: Path) -> None:
    """The relay as a TLS client with a certificate from the post's own CA."""
    async with CommandPost(make_config(tmp_path / "post", tls=True)) as post:
        paths = post.ca.write_client("relay-1", now=dt.datetime.now(dt.UTC))
        # over TLS the post takes groups from the certificate's account, not from __group
        UserStore(tmp_path / "post" / "users.json").add("relay-1", ("Cyan",), "member", None)
        rig = Rig(tmp_path, post.tls_port)
        rig.tls = (paths["cert"], paths["key"], post.ca.cert_path)
        watcher = await CotClient.connect(post.tcp_port, "ANDROID-watch", "WATCH")
        try:
            async with rig.relay(), rig.node() as node:
                node.follow_gnss(file_fixes(FIXTURES / "ublox_m8_gn_walk.nmea", pace=20))
                await eventually(lambda: watcher.find(lambda e: e.uid == NODE_UID) is not None,
                                 10)
            identities = {c.identity for c in post.clients.values()}
            assert identities <= {"relay-1", ""}
        finally:
            await watcher.close()


# --- configuration -------------------------------------------------------------------

def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fieldc2")
    relay_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


def test_channel_keys_from_every_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = ChannelKey.generate("sar-test", epoch=2)
    (tmp_path / "k.chan").write_text(
        ChannelKey.generate("sar-test", epoch=1).export() + "\n" + key.export() + "\n")
    (tmp_path / "k.json").write_bytes(key_document(key))
    from_chan = relay_cli.load_keys("sar-test", key_file=tmp_path / "k.chan",
                                    passphrase_file=None)
    assert [k.epoch for k in from_chan] == [1, 2] and from_chan[-1].aead_key == key.aead_key
    assert relay_cli.load_keys("sar-test", key_file=tmp_path / "k.json",
                               passphrase_file=None)[0].aead_key == key.aead_key
    monkeypatch.setenv(relay_cli.PASSPHRASE_ENV, "correct horse battery staple")
    [derived] = relay_cli.load_keys("sar-test", key_file=None, passphrase_file=None)
    assert derived.aead_key == KEY.aead_key
    monkeypatch.delenv(relay_cli.PASSPHRASE_ENV)
    with pytest.raises(ConfigError, match="no channel key"):
        relay_cli.load_keys("sar-test", key_file=None, passphrase_file=None)
    (tmp_path / "empty.chan").write_text("\n")
    with pytest.raises(ConfigError):
        relay_cli.load_keys("sar-test", key_file=tmp_path / "empty.chan", passphrase_file=None)


def test_relay_configuration_file_and_flags(tmp_path: Path) -> None:
    rig = Rig(tmp_path, 8087)
    config = relay_files(tmp_path, rig)
    args = parsed("relay", "--config", str(config), "--server", "10.0.0.1:8089",
                  "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem")
    data = relay_cli.load_toml(config)
    channel = relay_cli.channel_settings(args, data, tmp_path)
    assert channel.profile.name == "lan" and channel.epoch == EPOCH
    assert channel.roster.by_slot(200) == roster().by_slot(200)
    assert channel.keys[-1].aead_key == KEY.aead_key
    settings = relay_cli.relay_settings(args, data["relay"], tmp_path)
    assert (settings.host, settings.port, settings.uid) == ("10.0.0.1", 8089, "relay-1")
    assert settings.position_interval == 0.5
    assert settings.tls == (tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem")
    for bad in (["--server", "nohost"], ["--tls-cert", "c.pem"]):
        with pytest.raises(ConfigError):
            relay_cli.relay_settings(parsed("relay", *bad), {}, tmp_path)
    with pytest.raises(ConfigError, match="adapter"):
        relay_cli.channel_settings(parsed("relay", "--channel", "x"), {}, tmp_path)
    assert relay_cli.main(["relay", "--config", str(tmp_path / "missing.toml")]) == 2

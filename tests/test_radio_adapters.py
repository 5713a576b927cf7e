"""Radio adapters: the KISS/AX.25 codec, UDP, KISS through two real Direwolf
modems (AFSK 1200 Bd audio piped between them), KISS serial over a pty, and
Meshtastic through the real Python API minus the hardware."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldc2.errors import ConfigError, FramingError, LinkError, ProtocolError
from fieldc2.protocol.kiss import (
    AX25_HEADER,
    FEND,
    MAX_KISS_FRAME,
    KissDecoder,
    KissFrame,
    ax25_ui,
    kiss_encode,
    parse_ax25_ui,
)
from fieldc2.transport.radio import MAX_RX_FRAMES, open_adapter
from fieldc2.transport.radio_kiss import KissRadio
from fieldc2.transport.radio_udp import UdpRadio

from .conftest import eventually, skip_unless_ci


def frames_of(decoder: KissDecoder) -> list[KissFrame]:
    out: list[KissFrame] = []
    while True:
        try:
            frame = decoder.next_frame()
        except FramingError:
            continue
        if frame is None:
            return out
        out.append(frame)


# --- KISS and AX.25 codec ---------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=300), st.integers(0, 15)), max_size=8),
       st.integers(1, 64))
def test_kiss_round_trip_in_any_chunking(items: list[tuple[bytes, int]], chunk: int) -> None:
    stream = b"".join(kiss_encode(data, port=port) for data, port in items)
    decoder = KissDecoder()
    for i in range(0, len(stream), chunk):
        decoder.receive_data(stream[i:i + chunk])
    assert frames_of(decoder) == [KissFrame(data, port=port) for data, port in items]


def test_kiss_escapes_and_idle_fill() -> None:
    encoded = kiss_encode(bytes([0xC0, 0xDB, 0x01]))
    assert encoded == bytes([0xC0, 0x00, 0xDB, 0xDC, 0xDB, 0xDD, 0x01, 0xC0])
    decoder = KissDecoder()
    decoder.receive_data(b"noise" + bytes([FEND, FEND, FEND]) + encoded)
    assert frames_of(decoder) == [KissFrame(bytes([0xC0, 0xDB, 0x01]))]


def test_kiss_bad_escape_costs_one_frame() -> None:
    decoder = KissDecoder()
    decoder.receive_data(bytes([FEND, 0x00, 0xDB, 0x41, 0x42, FEND]) + kiss_encode(b"ok"))
    with pytest.raises(FramingError, match="FESC"):
        decoder.next_frame()
    assert decoder.next_frame() == KissFrame(b"ok")
    decoder.receive_data(kiss_encode(b"x" * (MAX_KISS_FRAME + 1)) + kiss_encode(b"next"))
    with pytest.raises(FramingError, match="longer"):
        decoder.next_frame()
    assert decoder.next_frame() == KissFrame(b"next")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=200),
                          st.sampled_from([bytes([FEND]), bytes([0xDB]), bytes([0xDB, 0xDC])])),
                max_size=20))
def test_kiss_and_ax25_fuzz_only_protocol_errors(chunks: list[bytes]) -> None:
    decoder = KissDecoder()
    for chunk in chunks:
        decoder.receive_data(chunk)
        while True:
            try:
                frame = decoder.next_frame()
            except ProtocolError:
                continue
            if frame is None:
                break
            with contextlib.suppress(ProtocolError):
                parse_ax25_ui(frame.data)


def test_ax25_ui_layout_and_overhead() -> None:
    frame = ax25_ui("FLDC2", "DL1ABC-7", b"\x01\x02")
    assert len(frame) == AX25_HEADER + 2 == 18
    assert frame[:7] == bytes(c << 1 for c in b"FLDC2 ") + b"\xe0"  # C bit, SSID 0
    assert frame[7:14] == bytes(c << 1 for c in b"DL1ABC") + bytes([0x60 | 7 << 1 | 1])
    assert frame[14:16] == b"\x03\xf0"
    ui = parse_ax25_ui(frame)
    assert (ui.destination, ui.source, ui.info, ui.pid) == ("FLDC2", "DL1ABC-7", b"\x01\x02", 0xF0)


def test_ax25_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        ax25_ui("TOOLONGCALL", "N0CALL", b"")
    with pytest.raises(ConfigError):
        ax25_ui("FLDC2", "N0CALL-16", b"")
    with pytest.raises(FramingError):
        parse_ax25_ui(b"short")
    i_frame = bytearray(ax25_ui("FLDC2", "N0CALL", b"x"))
    i_frame[14] = 0x00  # an I frame, connected mode
    with pytest.raises(FramingError, match="UI"):
        parse_ax25_ui(bytes(i_frame))


# --- UDP ----------------------------------------------------------------------

def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_udp_pair_and_mtu() -> None:
    pa, pb = free_port(), free_port()
    a = await open_adapter(f"udp://127.0.0.1:{pa}?peer=127.0.0.1:{pb}&mtu=64")
    b = await open_adapter(f"udp://127.0.0.1:{pb}?peer=127.0.0.1:{pa}&mtu=64")
    async with a, b:
        assert isinstance(a, UdpRadio) and a.mtu == 64
        await a.send(b"\x00hello")
        assert await asyncio.wait_for(b.receive(), 2) == b"\x00hello"
        await b.send(b"back")
        assert await asyncio.wait_for(anext(a), 2) == b"back"
        with pytest.raises(LinkError, match="MTU"):
            await a.send(bytes(65))
    with pytest.raises(LinkError):
        await a.send(b"closed")
    assert [f async for f in b] == []  # iteration ends once closed


async def test_udp_overflow_drops_oldest() -> None:
    pa, pb = free_port(), free_port()
    a = await UdpRadio.open("127.0.0.1", pa, peers=[f"127.0.0.1:{pb}"])
    b = await UdpRadio.open("127.0.0.1", pb, peers=[f"127.0.0.1:{pa}"])
    async with a, b:
        for i in range(MAX_RX_FRAMES + 10):
            await a.send(i.to_bytes(2, "big"))
            if i % 32 == 0:
                await asyncio.sleep(0.005)  # let the kernel's socket buffer drain into ours
        deadline = time.monotonic() + 2
        while b.stats.received < MAX_RX_FRAMES + 10 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert b.stats.dropped == 10
        assert await b.receive() == (10).to_bytes(2, "big")


async def test_adapter_urls_are_checked() -> None:
    for url in ("tcp://x:1", "udp://127.0.0.1", f"udp://127.0.0.1:{free_port()}",
                "udp://127.0.0.1:1?peer=nope", "udp://127.0.0.1:99999"):
        with pytest.raises(ConfigError):
            await open_adapter(url)
    with pytest.raises(ConfigError):
        await open_adapter(f"kiss+tcp://127.0.0.1:{free_port(socket.SOCK_STREAM)}")


# --- KISS over a pty (a serial TNC) ------------------------------------------

async def test_kiss_serial_over_a_pty() -> None:
    controller, device = os.openpty()
    tty.setraw(device)
    tty.setraw(controller)
    try:
        radio = await open_adapter(
            f"kiss+serial://{os.ttyname(device)}?baud=9600&mycall=DL1ABC-7&dest=FLDC2")
        async with radio:
            await radio.send(b"\xc0up")
            await asyncio.sleep(0.05)
            written = os.read(controller, 1024)
            decoder = KissDecoder()
            decoder.receive_data(written)
            [sent] = frames_of(decoder)
            assert parse_ax25_ui(sent.data).info == b"\xc0up"
            # the TNC hears: someone else's APRS beacon, garbage, then our frame
            os.write(controller, kiss_encode(ax25_ui("APRS", "N0CALL", b"!4903.50N/07201.75W-"))
                     + bytes([FEND, 0x00, 0xDB, 0x00, FEND])
                     + kiss_encode(ax25_ui("FLDC2", "DL2XYZ", b"\x07down")))
            assert await asyncio.wait_for(radio.receive(), 2) == b"\x07down"
            assert radio.stats.dropped == 1 and radio.stats.errors == 1
    finally:
        os.close(controller)
        os.close(device)


# --- KISS through two Direwolf software modems --------------------------------

ASOUNDRC = """pcm.tx_a {{
  type file
  slave {{ pcm "null" }}
  file "{a}"
  format "raw"
}}
pcm.tx_b {{
  type file
  slave {{ pcm "null" }}
  file "{b}"
  format "raw"
}}
"""
DIREWOLF_CONF = """ADEVICE stdin {output}
ARATE 48000
ACHANNELS 1
CHANNEL 0
MYCALL {call}
MODEM 1200
TXDELAY 30
FULLDUP ON
AGWPORT 0
KISSPORT {port}
"""


def direwolf_port() -> int:
    """A free TCP port Direwolf accepts: it refuses ports above 49151 (the
    registered range), where the kernel's ephemeral ports usually lie."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 49152)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@pytest.fixture
def direwolf_pair(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """Two Direwolf TNCs on one simulated channel: each one's AFSK audio (raw
    16-bit 48 kHz, written by ALSA's file plugin) goes through a FIFO into the
    other's demodulator (stdin).  Returns their KISS TCP ports (A, B).

    Audio only flows while a TNC transmits, so a receiver never hears the
    silence after a frame and its carrier detect would stay "busy" for ever;
    ``FULLDUP ON`` lets each TNC transmit without waiting for a clear channel."""
    if shutil.which("direwolf") is None:
        skip_unless_ci("direwolf is not installed")
    air = {name: tmp_path / f"air_{name}.raw" for name in "ab"}
    for fifo in air.values():
        os.mkfifo(fifo)
    (tmp_path / ".asoundrc").write_text(ASOUNDRC.format(**air))
    ports = {"a": direwolf_port(), "b": direwolf_port()}
    env = {**os.environ, "HOME": str(tmp_path)}  # ALSA reads ~/.asoundrc
    procs = []
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in "ab"}  # noqa: SIM115
    for name, other, call in (("a", "b", "N0CALL-1"), ("b", "a", "N0CALL-2")):
        (tmp_path / f"{name}.conf").write_text(
            DIREWOLF_CONF.format(output=f"tx_{name}", call=call, port=ports[name]))
        # <> opens the FIFO read-write: neither side blocks waiting for the other.
        procs.append(subprocess.Popen(
            f"exec direwolf -c {name}.conf -t 0 -q hd -r 48000 - <> {air[other]}", shell=True,
            cwd=tmp_path, env=env, stdout=logs[name], stderr=subprocess.STDOUT))
    try:
        yield ports["a"], ports["b"]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs.values():
            log.close()


async def connect_kiss(port: int, call: str) -> KissRadio:
    deadline = time.monotonic() + 10
    while True:
        try:
            return await KissRadio.open_tcp("127.0.0.1", port, mycall=call, destination="FLDC2")
        except ConfigError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_kiss_tcp_through_two_direwolf_modems(direwolf_pair: tuple[int, int]) -> None:
    a = await connect_kiss(direwolf_pair[0], "N0CALL-1")
    b = await connect_kiss(direwolf_pair[1], "N0CALL-2")
    async with a, b:
        await asyncio.sleep(0.2)
        frame = bytes(range(64)) + bytes([0xC0, 0xDB, 0xC0])  # every KISS special byte
        await a.send(frame)
        assert await asyncio.wait_for(b.receive(), 10) == frame
        other = KissRadio(mycall="N0CALL-1", destination="APRS", on_frame=None)
        other._writer = a._writer  # same TNC, another destination: B must ignore it
        await other.send(b"not for fieldc2")
        await a.send(b"second")
        assert await asyncio.wait_for(b.receive(), 10) == b"second"
        assert b.stats.dropped == 1 and b.stats.errors == 0


# --- Meshtastic: the real Python API, no hardware -----------------------------

@pytest.fixture
def mesh_interface() -> Iterator[Any]:
    from meshtastic.mesh_interface import MeshInterface

    class CapturingInterface(MeshInterface):  # type: ignore[misc]
        """The library's interface with the serial/TCP stream replaced by a list."""

        def __init__(self) -> None:
            super().__init__(noProto=False)
            self.nodes: dict[str, Any] = {}  # as after the node sent its database
            self.nodesByNum: dict[int, Any] = {}
            self.sent: list[Any] = []
            self.lock = threading.Lock()

        def _sendToRadioImpl(self, toRadio: Any) -> None:
            with self.lock:
                self.sent.append(toRadio)

        def close(self) -> None:
            pass

    yield CapturingInterface()


async def test_meshtastic_private_app_round_trip(mesh_interface: Any) -> None:
    from meshtastic.protobuf import mesh_pb2, portnums_pb2

    from fieldc2.transport.radio_meshtastic import (
        DATA_PAYLOAD_LEN,
        PRIVATE_APP,
        MeshtasticRadio,
        frame_from_packet,
        packet_for_frame,
    )

    assert portnums_pb2.PortNum.PRIVATE_APP == PRIVATE_APP
    assert mesh_pb2.Constants.DATA_PAYLOAD_LEN == DATA_PAYLOAD_LEN
    radio = MeshtasticRadio(mesh_interface, channel=0, on_frame=None,
                            loop=asyncio.get_running_loop())
    async with radio:
        await radio.send(b"\x01\x02sealed")
        [to_radio] = mesh_interface.sent
        packet = to_radio.packet
        assert packet.decoded.portnum == PRIVATE_APP and packet.decoded.payload == b"\x01\x02sealed"
        assert packet.to == 0xFFFFFFFF and not packet.want_ack
        # the same packet as another node would hear it, through the library's own path
        heard = mesh_pb2.MeshPacket()
        heard.CopyFrom(packet)
        setattr(heard, "from", 0x1234ABCD)
        mesh_interface._handlePacketFromRadio(heard)
        assert await asyncio.wait_for(radio.receive(), 5) == b"\x01\x02sealed"
        # text messages and other channels are not ours
        text = mesh_pb2.MeshPacket()
        setattr(text, "from", 0x1234ABCD)
        text.decoded.portnum = portnums_pb2.PortNum.TEXT_MESSAGE_APP
        text.decoded.payload = b"hi"
        assert frame_from_packet({"decoded": {"portnum": "TEXT_MESSAGE_APP",
                                              "payload": b"hi"}}) is None
        assert frame_from_packet({"channel": 1, "decoded": {"portnum": "PRIVATE_APP",
                                                            "payload": b"x"}}) is None
        mesh_interface._handlePacketFromRadio(text)
        await asyncio.sleep(0.2)
        assert radio._rx.empty()
        built = packet_for_frame(b"abc", channel=2)
        assert built.channel == 2 and built.decoded.portnum == PRIVATE_APP
        with pytest.raises(LinkError):
            packet_for_frame(bytes(DATA_PAYLOAD_LEN + 1))


async def test_order_and_ack_between_stations_over_afsk(direwolf_pair: tuple[int, int],
                                                        tmp_path: Path) -> None:
    """The whole radio stack (codec, link layer, AES-CCM) over two Direwolf modems:
    a signed order from slot 0 reaches a node, whose acknowledgement comes back."""
    from fieldc2.link.profiles import profile
    from fieldc2.model.radio import OrderState, OrderStatus, Record
    from fieldc2.node import Node, NodeCore, NodeSettings
    from fieldc2.protocol.compact import ChannelContext
    from fieldc2.transport.radio_station import RadioStation, RecordSink

    from .test_node import CHANNEL_ID, KEY, NOW, ORDER, roster, signed

    a = await connect_kiss(direwolf_pair[0], "N0CALL-1")
    b = await connect_kiss(direwolf_pair[1], "N0CALL-2")
    vhf = profile("vhf-ax25-1200")
    heard: list[Record] = []
    relay = RadioStation(a, keys=[KEY], slot=0, profile=vhf,
                         context=ChannelContext(int(NOW), 46.95, 7.45),
                         on_record=lambda r, now: heard.append(r))
    shown: list[str] = []

    def factory(sink: RecordSink) -> RadioStation:
        return RadioStation(b, keys=[KEY], slot=3, profile=vhf,
                            context=ChannelContext(int(NOW), 46.95, 7.45), on_record=sink,
                            state_dir=tmp_path / "node")

    relay.start()
    try:
        async with Node(NodeCore(NodeSettings(slot=3, channel_id=CHANNEL_ID), roster()),
                        factory, show=shown.append) as node:
            relay.submit(signed(ORDER))
            await eventually(lambda: any("signature verified" in line for line in shown), 20)
            node.command(f"ack {ORDER.order_id}")
            await eventually(lambda: any(
                isinstance(r, OrderStatus) and r.state == OrderState.ACKNOWLEDGED
                and r.order_id == ORDER.order_id for r in heard), 20)
        assert relay.rejected == {} and a.stats.errors == b.stats.errors == 0
    finally:
        await relay.close()


async def test_kiss_tcp_reconnects_to_a_restarted_tnc() -> None:
    """A TNC that drops the connection (Direwolf restarted) is reconnected to."""
    heard: list[bytes] = []
    connections: list[asyncio.StreamWriter] = []

    async def tnc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        if len(connections) == 1:
            heard.append(await reader.read(1024))
            writer.close()  # the TNC goes away after one frame
            return
        writer.write(kiss_encode(ax25_ui("FLDC2", "DL2XYZ", b"after the restart")))
        heard.append(await reader.read(1024))

    server = await asyncio.start_server(tnc, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        radio = await KissRadio.open_tcp("127.0.0.1", port, mycall="DL1ABC", destination="FLDC2")
        async with radio:
            await radio.send(b"first")
            await eventually(lambda: len(connections) == 2, 5)
            assert await asyncio.wait_for(radio.receive(), 5) == b"after the restart"
            await radio.send(b"second")
            await eventually(lambda: len(heard) == 2, 5)
        decoded = []
        for data in heard:
            decoder = KissDecoder()
            decoder.receive_data(data)
            decoded += [parse_ax25_ui(f.data).info for f in frames_of(decoder)]
        assert decoded == [b"first", b"second"]
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()

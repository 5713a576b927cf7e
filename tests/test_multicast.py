"""Mesh SA over UDP multicast (239.2.3.1) bridged to stream clients, on loopback.

Loopback multicast needs the group joined on 127.0.0.1 and IP_MULTICAST_IF set
to 127.0.0.1 (the ``lo`` interface has no MULTICAST flag, but Linux delivers
there once both are set).  Whether this host allows it is found out by trying:
the test skips only when the OS refuses or nothing loops back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import takproto

from fieldc2.config import MulticastConfig
from fieldc2.server import CommandPost
from tests.conftest import make_config, skip_unless_ci
from tests.test_interop import SETTLE, TIMEOUT, XmlClient, clients_of, cot, parse_v1, parse_xml

GROUP = "239.2.3.1"
LOOPBACK = "127.0.0.1"
MESH_HEADER = b"\xbf\x01\xbf"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
    return port


def mesh_socket(port: int) -> socket.socket:
    """A mesh peer's socket: bound to the port, member of the group on loopback."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("", port))
        loopback = socket.inet_aton(LOOPBACK)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                        socket.inet_aton(GROUP) + loopback)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, loopback)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    except OSError:
        sock.close()
        raise
    return sock


def loopback_multicast_refusal() -> str | None:
    """Why loopback multicast does not work here, or None when it does."""
    port = free_udp_port()
    try:
        with contextlib.ExitStack() as stack:
            sender = stack.enter_context(mesh_socket(port))
            listener = stack.enter_context(mesh_socket(port))
            listener.settimeout(1.0)
            sender.sendto(b"fieldc2 multicast probe", (GROUP, port))
            data = listener.recv(100)
    except TimeoutError:
        return (f"a datagram sent to {GROUP}:{port} via IP_MULTICAST_IF {LOOPBACK} "
                "did not loop back within 1 s")
    except OSError as exc:
        return f"the OS refused loopback multicast ({GROUP} on {LOOPBACK}): {exc}"
    if data != b"fieldc2 multicast probe":
        return f"loopback multicast returned {data!r}"
    return None


@contextlib.contextmanager
def mesh_peer(port: int) -> Iterator[socket.socket]:
    sock = mesh_socket(port)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def carries(data: bytes, uid: str) -> bool:
    """Whether a mesh datagram (TAK v1 or XML) carries the event ``uid``."""
    if data.startswith(MESH_HEADER):
        message = parse_v1(data[len(MESH_HEADER):])
        return message is not None and message.uid == uid
    start = data.find(b"<event")
    return start >= 0 and parse_xml(data[start:]).uid == uid


class MeshListener:
    """Everything a mesh peer hears, except the datagrams it sent itself."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent: set[bytes] = set()
        self.heard: list[bytes] = []

    def send(self, data: bytes, port: int) -> None:
        self.sent.add(data)
        self.sock.sendto(data, (GROUP, port))

    async def hear(self, uid: str) -> bytes:
        loop = asyncio.get_running_loop()

        async def until() -> bytes:
            while True:
                for data in self.heard:
                    if carries(data, uid):
                        return data
                data = await loop.sock_recv(self.sock, 65536)
                if data not in self.sent:  # our own datagrams loop back
                    self.heard.append(data)

        try:
            return await asyncio.wait_for(until(), TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"no datagram for {uid} in {self.heard}") from None

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                data = self.sock.recv(65536)
                if data not in self.sent:
                    self.heard.append(data)


async def test_mesh_and_stream_clients_see_each_other(tmp_path: Path) -> None:
    refusal = loopback_multicast_refusal()
    if refusal is not None:
        skip_unless_ci(refusal)
    port = free_udp_port()
    config = dataclasses.replace(
        make_config(tmp_path),
        multicast=MulticastConfig(enabled=True, port=port, interface=LOOPBACK))
    tag = uuid.uuid4().hex[:8]
    with mesh_peer(port) as sock:
        peer = MeshListener(sock)
        async with CommandPost(config) as post, clients_of(post) as connect:
            stream = await connect("STREAM")
            assert isinstance(stream, XmlClient)
            await stream.report(group=None)  # no team: the default group, shared with the mesh

            v1_uid, xml_uid = f"mesh-v1-{tag}", f"mesh-xml-{tag}"
            datagram_v1 = bytes(takproto.xml2proto(
                cot(v1_uid, callsign="MESHV1", lat=48.1), takproto.TAKProtoVer.MESH))
            assert datagram_v1.startswith(MESH_HEADER)
            peer.send(datagram_v1, port)
            peer.send(cot(xml_uid, callsign="MESHXML", lat=48.2), port)

            from_v1 = await stream.expect_uid(v1_uid)
            assert from_v1.callsign == "MESHV1" and from_v1.lat == 48.1
            from_xml = await stream.expect_uid(xml_uid)
            assert from_xml.callsign == "MESHXML" and from_xml.lat == 48.2

            marker = f"stream-marker-{tag}"
            await stream.send(cot(marker, "a-h-G", lat=48.3))
            heard = await peer.hear(marker)
            assert heard.startswith(MESH_HEADER), "the server's default mesh format is v1"
            message = parse_v1(heard[len(MESH_HEADER):])
            assert message is not None and message.lat == 48.3
            await peer.hear(stream.uid)  # its self-report went to the mesh too

            await asyncio.sleep(SETTLE)
            peer.drain()
            echoes = [d for d in peer.heard if carries(d, v1_uid) or carries(d, xml_uid)]
            assert not echoes, f"the bridge re-sent mesh events to the mesh: {echoes}"
            assert post.stats.received >= 4

"""Mesh SA over UDP multicast (239.2.3.1:6969), bridged to the command post.

Each datagram carries one event, TAK v1 mesh (``bf 01 bf`` + protobuf) or
XML.  Events heard on the mesh join the server's picture in the default
group; server events in that group go out on the mesh.  The bridge's own
datagrams come back to it through multicast loopback and are recognised by
content and ignored, so nothing circulates.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import struct
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from fieldc2.config import MulticastConfig
from fieldc2.errors import ProtocolError
from fieldc2.fanout import Outgoing
from fieldc2.protocol.cot_xml import parse_event
from fieldc2.protocol.tak_v1 import MESH_HEADER, payload_to_event
from fieldc2.router import GroupKey

if TYPE_CHECKING:
    from fieldc2.server import CommandPost

log = logging.getLogger("fieldc2.mesh")

#: Digests of datagrams we sent recently, to drop our own looped-back copies.
#: One tick rarely sends more than a few hundred.
RECENT_SENT = 1024
#: Largest datagram sent: IPv4 UDP maximum payload.
MAX_DATAGRAM = 65507


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


class MeshBridge(asyncio.DatagramProtocol):
    """Receives and sends mesh SA for one command post."""

    def __init__(self, post: CommandPost, config: MulticastConfig, peer_id: int) -> None:
        self.post = post
        self.config = config
        self.id = peer_id
        self.key: GroupKey = post.router.default_key
        self.transport: asyncio.DatagramTransport | None = None
        self._recent: deque[bytes] = deque(maxlen=RECENT_SENT)
        self._recent_set: set[bytes] = set()
        self.received = self.sent = self.rejected = 0

    def _socket(self) -> socket.socket:
        cfg = self.config
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("", cfg.port))
        iface = socket.inet_aton(cfg.interface)
        mreq = socket.inet_aton(cfg.group) + iface
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, struct.pack("b", cfg.ttl))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, iface)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sock.setblocking(False)
        return sock

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, sock=self._socket())
        log.info("mesh SA on %s:%d", self.config.group, self.config.port)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if _digest(data) in self._recent_set:
            return
        try:
            if data.startswith(MESH_HEADER):
                decoded = payload_to_event(data[len(MESH_HEADER):])
                if decoded is None:
                    return  # a TakControl announcement
                event, facts = decoded
                self.post.inject_event(event, facts, self.key, sender=self.id,
                                       payload=data[len(MESH_HEADER):])
            else:
                start = data.find(b"<event")
                if start < 0:
                    raise ProtocolError("datagram is neither TAK v1 mesh nor CoT XML")
                frame = data[start:].rstrip()
                event, facts = parse_event(frame)
                self.post.inject_event(event, facts, self.key, sender=self.id, xml=frame)
        except ProtocolError as exc:
            self.rejected += 1
            log.warning("mesh datagram from %s dropped: %s", addr, exc)
            return
        self.received += 1

    def forward(self, items: Sequence[Outgoing], key: GroupKey) -> None:
        """Send server events of the mesh's group to the mesh."""
        if not self.config.send or self.transport is None or key.isdisjoint(self.key):
            return
        target = (self.config.group, self.config.port)
        for item in items:
            if item.sender == self.id:
                continue
            data = item.mesh() if self.config.format == "proto" else item.xml()
            if len(data) > MAX_DATAGRAM:
                continue
            self._remember(_digest(data))
            self.transport.sendto(data, target)
            self.sent += 1

    def _remember(self, digest: bytes) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(digest)
        self._recent_set.add(digest)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

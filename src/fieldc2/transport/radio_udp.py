"""A radio link made of UDP datagrams: one frame per datagram.

For bench tests, for IP radios (mesh Wi-Fi, MANET radios that bridge
Ethernet) and for the simulator's real-socket mode.  Frames go to every
``peer``, to the subnet broadcast address, or to a multicast group when the
bound host is one (the group is then joined and the port shared).  A
datagram from our own unicast address is not delivered back; our own
multicast frames may loop back and are discarded by the frame layer, which
knows its own sender id.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

from fieldc2.errors import ConfigError, LinkError
from fieldc2.transport.radio import FrameCallback, RadioAdapter

Address = tuple[str, int]


def parse_peer(text: str) -> Address:
    """``host:port`` (``[v6]:port`` for IPv6) as an address tuple."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"peer {text!r} is not host:port")
    return host.strip("[]"), int(port)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.radio: UdpRadio | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self.radio is not None:
            self.radio._heard(data, addr)

    def error_received(self, exc: Exception) -> None:
        if self.radio is not None:  # ICMP port unreachable from a peer that is down
            self.radio.stats.errors += 1


class UdpRadio(RadioAdapter):
    """UDP datagrams standing in for a radio channel."""

    #: The default MTU is LoRa's (Meshtastic's 237 B): bench tests over UDP
    #: then exercise the same fragmentation a real radio would.
    DEFAULT_MTU = 237

    def __init__(self, transport: asyncio.DatagramTransport, targets: list[Address], *,
                 mtu: int, on_frame: FrameCallback | None) -> None:
        super().__init__(mtu=mtu, on_frame=on_frame)
        self._transport = transport
        self.targets = targets
        self.local: Address = transport.get_extra_info("sockname")[:2]

    @classmethod
    async def open(cls, host: str, port: int, *, peers: list[str] | None = None,
                   broadcast: bool = False, mtu: int = DEFAULT_MTU,
                   on_frame: FrameCallback | None = None) -> UdpRadio:
        targets = [parse_peer(p) for p in peers or ()]
        multicast = _is_multicast(host)
        if broadcast:
            targets.append(("255.255.255.255", port))
        if multicast:
            targets.append((host, port))
        if not targets:
            raise ConfigError("a UDP radio needs peer=host:port, broadcast=1 or a multicast "
                              "group to send to")
        sock = _socket(host, port, broadcast=broadcast, multicast=multicast)
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(_Protocol, sock=sock)
        radio = cls(transport, targets, mtu=mtu, on_frame=on_frame)
        protocol.radio = radio
        return radio

    def _heard(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if addr[:2] == self.local:
            return
        self._deliver(data)

    async def _transmit(self, frame: bytes) -> None:
        if self._transport.is_closing():
            raise LinkError("UDP radio socket is closed")
        for target in self.targets:
            self._transport.sendto(frame, target)

    async def _shutdown(self) -> None:
        self._transport.close()


def _is_multicast(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_multicast
    except ValueError:
        return False


def _socket(host: str, port: int, *, broadcast: bool, multicast: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if multicast:
            sock.bind(("", port))
            membership = struct.pack("4s4s", socket.inet_aton(host), socket.inet_aton("0.0.0.0"))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        else:
            sock.bind((host, port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot open UDP radio on {host}:{port}: {exc}") from exc
    return sock

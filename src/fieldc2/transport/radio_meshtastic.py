"""A Meshtastic node as a radio adapter (the ``fieldc2[meshtastic]`` extra).

Our frames travel as ``PRIVATE_APP`` (port 256) payloads, broadcast on one
channel, without Meshtastic's own ACKs: the link layer above does custody
acknowledgement end to end, and a mesh ACK per frame would double the
airtime.  The Meshtastic channel key still applies on the air; our frames are
sealed anyway (:mod:`fieldc2.crypto.radio`), so a shared default channel key
costs nothing but privacy of the 16 B Meshtastic header.

The Python API calls back from its own threads (pubsub
``meshtastic.receive``); frames are handed to the event loop with
``call_soon_threadsafe``.  The pure halves (:func:`frame_from_packet`,
:func:`packet_for_frame`) work on the library's real protobufs and are what
the tests exercise; hardware is needed for the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from fieldc2.errors import ConfigError, LinkError, MissingExtraError
from fieldc2.transport.radio import FrameCallback, RadioAdapter

#: ``PortNum.PRIVATE_APP``: the port Meshtastic reserves for private applications.
PRIVATE_APP = 256
#: ``Constants.DATA_PAYLOAD_LEN``: the largest payload a Meshtastic packet carries.
DATA_PAYLOAD_LEN = 233
#: The pubsub topic the Python API publishes received packets under.
TOPIC = "meshtastic.receive"


def _require() -> Any:
    try:
        import meshtastic
        from meshtastic.protobuf import mesh_pb2, portnums_pb2  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            "the Meshtastic adapter needs the meshtastic package: "
            "pip install 'fieldc2[meshtastic]'") from exc
    return meshtastic


def frame_from_packet(packet: Mapping[str, Any], channel: int = 0) -> bytes | None:
    """Our frame from a packet dict as ``meshtastic.receive`` publishes it.

    None for every other packet (positions, text, telemetry, other channels).
    """
    decoded = packet.get("decoded")
    if not isinstance(decoded, Mapping):
        return None
    if decoded.get("portnum") not in ("PRIVATE_APP", PRIVATE_APP):
        return None
    if int(packet.get("channel", 0) or 0) != channel:
        return None
    payload = decoded.get("payload")
    return bytes(payload) if isinstance(payload, (bytes, bytearray)) and payload else None


def packet_for_frame(frame: bytes, channel: int = 0) -> Any:
    """The ``MeshPacket`` protobuf that carries ``frame`` (what ``sendData`` builds)."""
    _require()
    from meshtastic.protobuf import mesh_pb2

    if len(frame) > DATA_PAYLOAD_LEN:
        raise LinkError(f"frame of {len(frame)} B exceeds Meshtastic's {DATA_PAYLOAD_LEN} B")
    packet = mesh_pb2.MeshPacket()
    packet.channel = channel
    packet.decoded.portnum = PRIVATE_APP
    packet.decoded.payload = frame
    packet.to = 0xFFFFFFFF
    return packet


class MeshtasticRadio(RadioAdapter):
    """Frames as PRIVATE_APP broadcasts through a Meshtastic node."""

    def __init__(self, interface: Any, *, channel: int, on_frame: FrameCallback | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(mtu=DATA_PAYLOAD_LEN, on_frame=on_frame)
        self.interface = interface
        self.channel = channel
        self._loop = loop
        from pubsub import pub

        pub.subscribe(self._on_receive, TOPIC)

    @classmethod
    async def open(cls, kind: str, target: str, *, channel: int = 0,
                   on_frame: FrameCallback | None = None) -> MeshtasticRadio:
        """Connect to a node over ``serial`` (a device path) or ``tcp`` (a host)."""
        _require()
        try:
            if kind == "serial":
                from meshtastic.serial_interface import SerialInterface

                interface = await asyncio.to_thread(SerialInterface, target or None)
            else:
                from meshtastic.tcp_interface import TCPInterface

                interface = await asyncio.to_thread(TCPInterface, target)
        except Exception as exc:  # the library raises bare Exception and SystemExit-free errors
            raise ConfigError(f"cannot open the Meshtastic node {target!r}: {exc}") from exc
        return cls(interface, channel=channel, on_frame=on_frame,
                   loop=asyncio.get_running_loop())

    def _on_receive(self, packet: Mapping[str, Any], interface: Any = None) -> None:
        """pubsub callback, on a Meshtastic thread."""
        if interface is not self.interface:
            return
        frame = frame_from_packet(packet, self.channel)
        if frame is not None:
            self._loop.call_soon_threadsafe(self._deliver, frame)

    async def _transmit(self, frame: bytes) -> None:
        try:
            await asyncio.to_thread(
                self.interface.sendData, frame, portNum=PRIVATE_APP, wantAck=False,
                channelIndex=self.channel)
        except Exception as exc:
            raise LinkError(f"Meshtastic send failed: {exc}") from exc

    async def _shutdown(self) -> None:
        from pubsub import pub

        with contextlib.suppress(Exception):
            pub.unsubscribe(self._on_receive, TOPIC)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.interface.close)

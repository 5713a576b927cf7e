"""Radio adapters: the thin shells that put sealed frames on a real link.

An adapter knows nothing of what a frame holds: the link layer and the frame
sealer above it (``fieldc2.link``, ``fieldc2.crypto.radio``) made it, and the
adapter only moves opaque bytes.  Every adapter has the same small surface:

- ``await adapter.send(frame)``: one frame, at most ``adapter.mtu`` bytes;
- ``async for frame in adapter`` (or ``await adapter.receive()``, or the
  ``on_frame`` callback) for frames heard;
- ``await adapter.close()``, or use it as an ``async with`` block.

Backends are chosen by URL and imported lazily (Meshtastic needs the
``fieldc2[meshtastic]`` extra):

=================================================  ===========================
``udp://0.0.0.0:7700?peer=10.0.0.2:7700``          UDP datagrams; ``peer`` may
                                                   repeat; ``broadcast=1``
                                                   or a multicast group host
``kiss+tcp://127.0.0.1:8001?mycall=N0CALL-1``      a KISS TCP port (Direwolf)
``kiss+serial:///dev/ttyUSB0?baud=9600``           a KISS TNC on a serial line
``meshtastic+serial:///dev/ttyACM0``               a Meshtastic node over USB
``meshtastic+tcp://192.168.1.20``                  a Meshtastic node over Wi-Fi
=================================================  ===========================
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from fieldc2.errors import ConfigError, LinkError

#: Frames heard but not yet taken by the link layer.  A LoRa channel carries
#: a few frames per second at most; a consumer this far behind is stuck, and
#: the oldest frames go first (the link layer retransmits what matters).
MAX_RX_FRAMES = 256

FrameCallback = Callable[[bytes], None]


@dataclass
class AdapterStats:
    sent: int = 0
    received: int = 0
    dropped: int = 0
    """Frames heard but discarded: queue overflow, or not ours (wrong port/address)."""
    errors: int = 0
    """Undecodable input from the device (bad KISS, non-UI AX.25...)."""


class RadioAdapter(abc.ABC):
    """One radio link as seen by fieldc2: send frames, hear frames."""

    mtu: int
    """Largest frame this link carries in one transmission."""

    def __init__(self, *, mtu: int, on_frame: FrameCallback | None = None) -> None:
        self.mtu = mtu
        self.on_frame = on_frame
        self.stats = AdapterStats()
        self._rx: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closed = False

    @property
    def name(self) -> str:
        return type(self).__name__

    async def send(self, frame: bytes) -> None:
        """Transmit one frame; LinkError when it is too long or the link is down."""
        if self._closed:
            raise LinkError(f"{self.name} is closed")
        if len(frame) > self.mtu:
            raise LinkError(f"{self.name}: frame of {len(frame)} B exceeds the MTU {self.mtu}")
        await self._transmit(frame)
        self.stats.sent += 1

    @abc.abstractmethod
    async def _transmit(self, frame: bytes) -> None: ...

    @abc.abstractmethod
    async def _shutdown(self) -> None: ...

    def _deliver(self, frame: bytes) -> None:
        """Called by the backend for every frame heard (on the event loop)."""
        if self._closed or not frame:
            return
        self.stats.received += 1
        if self.on_frame is not None:
            self.on_frame(frame)
            return
        if self._rx.qsize() >= MAX_RX_FRAMES:
            self._rx.get_nowait()
            self.stats.dropped += 1
        self._rx.put_nowait(frame)

    async def receive(self) -> bytes:
        """The next frame heard; LinkError once the adapter is closed."""
        frame = await self._rx.get()
        if frame is None:
            self._rx.put_nowait(None)  # wake every other waiter too
            raise LinkError(f"{self.name} is closed")
        return frame

    def __aiter__(self) -> RadioAdapter:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.receive()
        except LinkError:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._rx.put_nowait(None)
        await self._shutdown()

    async def __aenter__(self) -> RadioAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _query(url: str) -> tuple[str, str, int | None, str, dict[str, list[str]]]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad port in radio URL {url!r}") from exc
    return parts.scheme, parts.hostname or "", port, parts.path, parse_qs(parts.query)


def _one(query: dict[str, list[str]], key: str, default: str) -> str:
    return query.get(key, [default])[-1]


def _int(query: dict[str, list[str]], key: str, default: int) -> int:
    try:
        return int(_one(query, key, str(default)))
    except ValueError as exc:
        raise ConfigError(f"radio URL option {key} must be a number") from exc


async def open_adapter(url: str, *, on_frame: FrameCallback | None = None) -> RadioAdapter:
    """Open the adapter a URL names (see the module docstring)."""
    scheme, host, port, path, query = _query(url)
    if scheme == "udp":
        from fieldc2.transport.radio_udp import UdpRadio

        if port is None:
            raise ConfigError(f"{url!r}: a UDP radio needs a port")
        return await UdpRadio.open(
            host or "0.0.0.0", port, peers=query.get("peer", []),
            broadcast=_one(query, "broadcast", "0") in ("1", "true", "yes"),
            mtu=_int(query, "mtu", UdpRadio.DEFAULT_MTU), on_frame=on_frame)
    if scheme in ("kiss+tcp", "kiss+serial"):
        from fieldc2.transport.radio_kiss import KissRadio

        calls = {"mycall": _one(query, "mycall", "N0CALL"),
                 "destination": _one(query, "dest", "FLDC2")}
        if scheme == "kiss+tcp":
            return await KissRadio.open_tcp(host or "127.0.0.1", port or 8001,
                                            on_frame=on_frame, **calls)
        return await KissRadio.open_serial(path, baud=_int(query, "baud", 9600),
                                           on_frame=on_frame, **calls)
    if scheme in ("meshtastic+serial", "meshtastic+tcp"):
        from fieldc2.transport.radio_meshtastic import MeshtasticRadio

        target = path if scheme == "meshtastic+serial" else host
        return await MeshtasticRadio.open(scheme.split("+")[1], target,
                                          channel=_int(query, "channel", 0), on_frame=on_frame)
    raise ConfigError(f"unknown radio adapter {url!r}: use udp://, kiss+tcp://, "
                      "kiss+serial://, meshtastic+serial:// or meshtastic+tcp://")

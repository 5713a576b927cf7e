"""Where GNSS fixes come from: a serial receiver, a recorded file, or UDP.

Thin asyncio shells around :class:`fieldc2.gnss.NmeaDecoder`; each is an
async iterator of :class:`~fieldc2.gnss.Fix`.  Chosen by URL:

- ``serial:///dev/ttyACM0?baud=9600`` a receiver on a serial port (pyserial);
- ``file:///path/track.nmea?pace=1`` a recording, replayed at real pace
  (``pace=1``), faster (``pace=10``) or as fast as possible (``pace=0``);
- ``udp://0.0.0.0:10110`` datagrams of sentences, as phones' "NMEA over UDP"
  apps and gpsd relays send them (10110 is the customary NMEA-over-IP port).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from fieldc2.errors import ConfigError, LinkError
from fieldc2.gnss import Fix, NmeaDecoder

#: Bytes read from a serial port or file per call: a second of NMEA at
#: 115200 baud is about 11 KiB, so this keeps up with any receiver.
READ_SIZE = 4096
#: Datagrams waiting for the decoder.  Receivers send a few per second; more
#: than this means the consumer stalled and old positions are worthless.
MAX_DATAGRAMS = 256
#: Longest pause honoured while replaying a file at real pace: a recording
#: with a gap (receiver unplugged) should not stall a demo for an hour.
MAX_REPLAY_GAP = 10.0
DEFAULT_BAUD = 9600


def _drain(decoder: NmeaDecoder) -> list[Fix]:
    fixes = []
    while (fix := decoder.next_fix()) is not None:
        fixes.append(fix)
    return fixes


async def file_fixes(path: Path, *, pace: float = 1.0) -> AsyncGenerator[Fix, None]:
    """Replay a recording; ``pace`` 1 is real time, 0 as fast as possible."""
    if pace < 0:
        raise ConfigError("pace must be 0 (as fast as possible) or more")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read NMEA file {path}: {exc}") from exc
    decoder = NmeaDecoder()
    decoder.receive_data(data)
    decoder.flush()
    previous: float | None = None
    for fix in _drain(decoder):
        if pace > 0 and previous is not None:
            gap = (fix.time_of_day - previous) % 86_400.0
            await asyncio.sleep(min(gap, MAX_REPLAY_GAP) / pace)
        previous = fix.time_of_day
        yield fix


async def serial_fixes(port: str, *, baud: int = DEFAULT_BAUD) -> AsyncGenerator[Fix, None]:
    """Fixes from a receiver on a serial port (or a pty standing in for one)."""
    import serial

    try:
        device = serial.Serial(port, baudrate=baud, timeout=0)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise ConfigError(f"cannot open GNSS serial port {port}: {exc}") from exc
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(device.fileno(), readable.set)
    decoder = NmeaDecoder()
    try:
        while True:
            await readable.wait()
            readable.clear()
            try:
                data = device.read(READ_SIZE)
            except (serial.SerialException, OSError) as exc:
                raise LinkError(f"GNSS serial port {port} failed: {exc}") from exc
            decoder.receive_data(data)
            for fix in _drain(decoder):
                yield fix
    finally:
        loop.remove_reader(device.fileno())
        device.close()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_DATAGRAMS)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self.queue.full():
            self.queue.get_nowait()  # the oldest sentences are the least useful
        self.queue.put_nowait(data)


async def udp_fixes(host: str, port: int) -> AsyncGenerator[Fix, None]:
    """Fixes from datagrams of NMEA sentences (one or several lines each)."""
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            _Datagrams, local_addr=(host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen for NMEA on udp {host}:{port}: {exc}") from exc
    decoder = NmeaDecoder()
    try:
        while True:
            data = await protocol.queue.get()
            decoder.receive_data(data if data.endswith(b"\n") else data + b"\r\n")
            for fix in _drain(decoder):
                yield fix
    finally:
        transport.close()


def open_gnss(url: str) -> AsyncGenerator[Fix, None]:
    """The fix source a URL names (see the module docstring)."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    try:
        if parts.scheme == "file":
            return file_fixes(Path(parts.path), pace=float(query.get("pace", "1")))
        if parts.scheme == "serial":
            return serial_fixes(parts.path, baud=int(query.get("baud", DEFAULT_BAUD)))
        if parts.scheme == "udp":
            return udp_fixes(parts.hostname or "0.0.0.0", parts.port or 10110)
    except ValueError as exc:
        raise ConfigError(f"bad GNSS source {url!r}: {exc}") from exc
    raise ConfigError(f"unknown GNSS source {url!r}: use file://, serial:// or udp://")

"""A KISS TNC as a radio adapter: Direwolf's TCP port, or a TNC on a serial line.

Each fieldc2 frame goes out as the information field of an AX.25 UI frame
from ``mycall`` to ``destination`` (see :mod:`fieldc2.protocol.kiss` for the
16 B of overhead).  Frames heard that are not UI frames addressed to
``destination`` (APRS beacons, other stations' traffic on a shared channel)
are counted as dropped and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fieldc2.errors import ConfigError, LinkError, ProtocolError
from fieldc2.protocol.kiss import (
    AX25_HEADER,
    KissDecoder,
    ax25_ui,
    kiss_encode,
    parse_ax25_ui,
)
from fieldc2.transport.radio import FrameCallback, RadioAdapter

log = logging.getLogger("fieldc2.radio.kiss")
#: AX.25's default maximum information field (N1): what every TNC accepts.
AX25_MAX_INFO = 256
#: Bytes read per call from the TNC.
READ_SIZE = 4096
#: Reconnect backoff to a KISS TCP port, first wait and ceiling, seconds.
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 30.0


class KissRadio(RadioAdapter):
    """Frames in AX.25 UI frames through a KISS TNC."""

    def __init__(self, *, mycall: str, destination: str, on_frame: FrameCallback | None,
                 port: int = 0) -> None:
        super().__init__(mtu=AX25_MAX_INFO, on_frame=on_frame)
        ax25_ui(destination, mycall, b"")  # ConfigError now for a bad callsign
        self.mycall, self.destination, self.port = mycall.upper(), destination.upper(), port
        self._decoder = KissDecoder()
        self._writer: asyncio.StreamWriter | None = None
        self._serial: object | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.overhead = AX25_HEADER

    @classmethod
    async def open_tcp(cls, host: str, port: int, *, mycall: str, destination: str,
                       on_frame: FrameCallback | None = None) -> KissRadio:
        """Connect to a KISS TCP port (Direwolf listens on 8001).

        The first connection must succeed (a wrong address is a configuration
        error); later losses are retried with backoff while the link layer
        above retransmits what matters."""
        radio = cls(mycall=mycall, destination=destination, on_frame=on_frame)
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            raise ConfigError(f"cannot reach the KISS TNC at {host}:{port}: {exc}") from exc
        radio._writer = writer
        radio._reader_task = asyncio.create_task(radio._tcp_loop(host, port, reader))
        return radio

    @classmethod
    async def open_serial(cls, path: str, *, baud: int, mycall: str, destination: str,
                          on_frame: FrameCallback | None = None) -> KissRadio:
        """Open a TNC on a serial port (or a pty standing in for one)."""
        import serial

        radio = cls(mycall=mycall, destination=destination, on_frame=on_frame)
        try:
            device = serial.Serial(path, baudrate=baud, timeout=0, write_timeout=5)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ConfigError(f"cannot open the KISS TNC on {path}: {exc}") from exc
        radio._serial = device
        asyncio.get_running_loop().add_reader(device.fileno(), radio._read_serial)
        return radio

    # --- receiving ----------------------------------------------------------

    async def _tcp_loop(self, host: str, port: int, reader: asyncio.StreamReader) -> None:
        delay = RECONNECT_FIRST
        while True:
            with contextlib.suppress(OSError):
                while data := await reader.read(READ_SIZE):
                    self.receive_bytes(data)
            log.warning("lost the KISS TNC at %s:%d; reconnecting", host, port)
            lost, self._writer = self._writer, None
            if lost is not None:
                lost.close()
            self._decoder = KissDecoder()  # a half-received frame is gone with the connection
            while True:
                await asyncio.sleep(delay)
                try:
                    reader, self._writer = await asyncio.open_connection(host, port)
                except OSError:
                    delay = min(delay * 2, RECONNECT_MAX)
                    continue
                delay = RECONNECT_FIRST
                log.info("KISS TNC at %s:%d is back", host, port)
                break

    def _read_serial(self) -> None:
        import serial

        assert isinstance(self._serial, serial.Serial)
        try:
            data = self._serial.read(READ_SIZE)
        except (serial.SerialException, OSError) as exc:
            log.warning("KISS serial port failed: %s", exc)
            asyncio.get_running_loop().remove_reader(self._serial.fileno())
            self._rx.put_nowait(None)
            return
        self.receive_bytes(data)

    def receive_bytes(self, data: bytes) -> None:
        """Bytes from the TNC: decode KISS and AX.25, deliver our frames."""
        self._decoder.receive_data(data)
        while True:
            try:
                frame = self._decoder.next_frame()
                if frame is None:
                    return
                if frame.command != 0 or frame.port != self.port:
                    continue  # TNC parameter echoes, other radio ports
                ui = parse_ax25_ui(frame.data)
            except ProtocolError as exc:
                self.stats.errors += 1
                log.debug("undecodable frame from the TNC: %s", exc)
                continue
            if ui.destination != self.destination or ui.source == self.mycall:
                self.stats.dropped += 1
                continue
            self._deliver(ui.info)

    # --- sending --------------------------------------------------------------

    async def _transmit(self, frame: bytes) -> None:
        data = kiss_encode(ax25_ui(self.destination, self.mycall, frame), port=self.port)
        if self._serial is None:
            if self._writer is None or self._writer.is_closing():
                raise LinkError("the KISS TNC connection is down (reconnecting)")
            self._writer.write(data)
            try:
                await self._writer.drain()
            except OSError as exc:
                raise LinkError(f"the KISS TNC connection failed: {exc}") from exc
            return
        import serial

        assert isinstance(self._serial, serial.Serial)
        try:
            await asyncio.to_thread(self._serial.write, data)
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"writing to the KISS TNC failed: {exc}") from exc

    async def _shutdown(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._serial is not None:
            import serial

            assert isinstance(self._serial, serial.Serial)
            with contextlib.suppress(OSError, ValueError):
                asyncio.get_running_loop().remove_reader(self._serial.fileno())
            self._serial.close()

"""KISS framing and minimal AX.25 UI frames, sans-I/O.

A KISS TNC (Direwolf, a hardware TNC, a radio with a built-in one) takes
frames over a serial line or TCP, delimited by ``FEND`` with ``FESC``
escaping (K3MC and KA9Q, "The KISS TNC", 1986).  On the air the TNC sends
AX.25: it adds flags, bit stuffing and the 2-byte FCS, but the frame it is
handed must already be AX.25, or a real TNC and every receiver drop it.  So
a fieldc2 radio frame travels as the information field of an AX.25 UI frame:

====================  =====  ===============================================
field                 bytes  note
====================  =====  ===============================================
destination address   7      callsign shifted left one bit + SSID byte
source address        7      idem; its low bit ends the address field
control               1      0x03, UI (unnumbered information)
PID                   1      0xF0, no layer 3
information           n      the fieldc2 frame, unchanged
FCS                   2      added and checked by the TNC, not seen here
====================  =====  ===============================================

That is **16 B** of overhead over KISS and **18 B** on the air (plus 7 B per
digipeater, which fieldc2 does not use), on top of the frame's own 7 B.
"""

from __future__ import annotations

import re
from collections import deque

import msgspec

from fieldc2.errors import ConfigError, FramingError

FEND, FESC, TFEND, TFESC = 0xC0, 0xDB, 0xDC, 0xDD
CMD_DATA = 0x00
#: Largest unescaped KISS frame accepted.  AX.25 allows a 256-byte information
#: field (N1) plus 16 B of header and up to 8 digipeaters of 7 B; 1024 leaves
#: room for TNCs configured with a larger PACLEN and refuses runaway input.
MAX_KISS_FRAME = 1024
#: Frames decoded but not yet taken: one read from a TCP KISS port holds a
#: handful; the shell drains after every read.
MAX_PENDING_FRAMES = 256
AX25_UI = 0x03
AX25_PID_NO_L3 = 0xF0
AX25_HEADER = 16
"""Bytes AX.25 adds in the KISS frame (two addresses, control, PID)."""
AX25_FCS = 2
#: Digipeater addresses accepted in a received frame (AX.25 2.2 allows 8).
MAX_DIGIPEATERS = 8
_CALLSIGN = re.compile(r"^([A-Z0-9]{1,6})(?:-(\d{1,2}))?$")


class KissFrame(msgspec.Struct, frozen=True):
    """One KISS frame: the TNC port (0-15), the command (0 = data) and data."""

    data: bytes
    port: int = 0
    command: int = CMD_DATA


class Ax25Ui(msgspec.Struct, frozen=True):
    """A received UI frame: addresses as ``CALL-SSID`` text, and its payload."""

    destination: str
    source: str
    info: bytes
    digipeaters: tuple[str, ...] = ()
    pid: int = AX25_PID_NO_L3


def kiss_encode(data: bytes, *, port: int = 0, command: int = CMD_DATA) -> bytes:
    """``data`` as one KISS frame."""
    if not 0 <= port <= 15 or not 0 <= command <= 15:
        raise ConfigError("KISS port and command are 4-bit numbers")
    # The type byte is escaped too: port 12 with command 0 is 0xC0, a FEND.
    raw = bytes([port << 4 | command]) + data
    escaped = raw.replace(bytes([FESC]), bytes([FESC, TFESC])).replace(
        bytes([FEND]), bytes([FESC, TFEND]))
    return bytes([FEND]) + escaped + bytes([FEND])


class KissDecoder:
    """Split a byte stream from a TNC into :class:`KissFrame` values.

    ``next_frame`` raises :class:`FramingError` for a frame that was
    delimited but cannot be used (bad escape, too long); the next call goes on
    with the following frame, so one line error costs one frame.
    """

    def __init__(self, max_frame: int = MAX_KISS_FRAME) -> None:
        self._max = max_frame
        self._current = bytearray()
        self._escape = False
        self._broken = ""
        self._in_frame = False
        self._ready: deque[KissFrame | FramingError] = deque(maxlen=MAX_PENDING_FRAMES)

    def receive_data(self, data: bytes) -> None:
        for byte in data:
            if byte == FEND:
                self._end()
            elif self._in_frame:
                self._take(byte)
            # bytes before the first FEND are line noise: ignored

    def _take(self, byte: int) -> None:
        if self._broken:
            return
        if self._escape:
            self._escape = False
            if byte not in (TFEND, TFESC):
                self._broken = f"FESC followed by 0x{byte:02x}"
                return
            byte = FEND if byte == TFEND else FESC
        elif byte == FESC:
            self._escape = True
            return
        if len(self._current) >= self._max + 1:
            self._broken = f"frame longer than {self._max} bytes"
            return
        self._current.append(byte)

    def _end(self) -> None:
        body, broken = bytes(self._current), self._broken
        self._current.clear()
        self._broken, self._in_frame = "", True
        if self._escape and not broken:
            broken = "frame ends inside an escape"
        self._escape = False
        if broken:
            self._ready.append(FramingError(f"KISS: {broken}"))
        elif body:  # FEND FEND is idle fill, not an empty frame
            self._ready.append(KissFrame(body[1:], port=body[0] >> 4, command=body[0] & 0x0F))

    def next_frame(self) -> KissFrame | None:
        """The next complete frame, or None when more data is needed."""
        if not self._ready:
            return None
        item = self._ready.popleft()
        if isinstance(item, FramingError):
            raise item
        return item


def _address(callsign: str, *, last: bool, command: bool) -> bytes:
    match = _CALLSIGN.match(callsign.upper())
    if match is None or int(match.group(2) or 0) > 15:
        raise ConfigError(f"{callsign!r} is not an AX.25 callsign (1-6 letters/digits, SSID 0-15)")
    call = match.group(1).ljust(6)
    ssid = int(match.group(2) or 0)
    return bytes(ord(c) << 1 for c in call) + bytes(
        [(0x80 if command else 0) | 0x60 | ssid << 1 | (1 if last else 0)])


def ax25_ui(destination: str, source: str, info: bytes) -> bytes:
    """A UI command frame carrying ``info`` (without FCS: the TNC adds it)."""
    return (_address(destination, last=False, command=True)
            + _address(source, last=True, command=False)
            + bytes([AX25_UI, AX25_PID_NO_L3]) + info)


def _callsign(field: bytes) -> str:
    if any(b & 1 for b in field[:6]):
        raise FramingError("AX.25 address with the extension bit set inside a callsign")
    call = bytes(b >> 1 for b in field[:6]).decode("ascii", "replace").rstrip()
    ssid = field[6] >> 1 & 0x0F
    return f"{call}-{ssid}" if ssid else call


def parse_ax25_ui(frame: bytes) -> Ax25Ui:
    """Decode a UI frame; FramingError for anything else (I/S frames, junk)."""
    addresses: list[str] = []
    offset = 0
    while True:
        field = frame[offset:offset + 7]
        if len(field) < 7:
            raise FramingError("AX.25 frame ends inside its address field")
        addresses.append(_callsign(field))
        offset += 7
        if field[6] & 1:
            break
        if len(addresses) >= 2 + MAX_DIGIPEATERS:
            raise FramingError("AX.25 address field longer than 10 addresses")
    if len(addresses) < 2:
        raise FramingError("AX.25 frame with a single address")
    if len(frame) < offset + 2 or frame[offset] & 0xEF != AX25_UI:
        raise FramingError("not an AX.25 UI frame")
    return Ax25Ui(addresses[0], addresses[1], frame[offset + 2:],
                  digipeaters=tuple(addresses[2:]), pid=frame[offset + 1])

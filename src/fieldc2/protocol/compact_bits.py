"""Bit packing for the compact radio encoding.

Fields are written most significant bit first and the record is padded with
zero bits to a whole byte.  Besides fixed-width fields there are Exp-Golomb
codes of order *k* (``write_eg``): a value ``v`` costs ``2*floor(log2(v/2**k + 1)) + 1 + k``
bits, so small typical values (a 30 s interval, a 2 m height change) take a
few bits and rare large ones still encode.  Signed values are zigzag-mapped
first (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...).

Every read past the end, and every over-long Exp-Golomb prefix, raises
:class:`~fieldc2.errors.RadioFrameError`; nothing else escapes a reader.
"""

from __future__ import annotations

from fieldc2.errors import LinkError, RadioFrameError

#: Longest Exp-Golomb zero prefix a reader accepts.  40 covers every value
#: any field needs (times of centuries in seconds); a longer run of zeros can
#: only be garbage, and refusing it keeps decoded integers small.
MAX_EG_PREFIX = 40


def zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -((value + 1) >> 1)


class BitWriter:
    """Accumulates fields into one integer; ``getvalue()`` pads to bytes."""

    __slots__ = ("_acc", "_bits")

    def __init__(self) -> None:
        self._acc = 0
        self._bits = 0

    @property
    def bits(self) -> int:
        return self._bits

    def write(self, value: int, width: int) -> None:
        if not 0 <= value < (1 << width):
            raise LinkError(f"value {value} does not fit {width} bits")
        self._acc = (self._acc << width) | value
        self._bits += width

    def write_signed(self, value: int, width: int) -> None:
        """Two's complement in ``width`` bits."""
        half = 1 << (width - 1)
        if not -half <= value < half:
            raise LinkError(f"value {value} does not fit {width} signed bits")
        self.write(value & ((1 << width) - 1), width)

    def write_flag(self, flag: bool) -> None:
        self.write(1 if flag else 0, 1)

    def write_eg(self, value: int, k: int) -> None:
        if value < 0:
            raise LinkError(f"Exp-Golomb value {value} is negative")
        shifted = value + (1 << k)
        length = shifted.bit_length()
        self.write(0, length - 1 - k)
        self.write(shifted, length)

    def write_bytes(self, data: bytes) -> None:
        for byte in data:
            self.write(byte, 8)

    def write_text(self, text: str, limit: int) -> None:
        """UTF-8 with an 8-bit (limit < 256) or 16-bit byte length in front."""
        data = text.encode("utf-8")
        if len(data) > limit:
            raise LinkError(f"text of {len(data)} bytes exceeds the {limit}-byte limit")
        self.write(len(data), 8 if limit < 256 else 16)
        self.write_bytes(data)

    def extend(self, other: BitWriter) -> None:
        self._acc = (self._acc << other._bits) | other._acc
        self._bits += other._bits

    def getvalue(self) -> bytes:
        pad = -self._bits % 8
        return (self._acc << pad).to_bytes((self._bits + pad) // 8, "big")


class BitReader:
    """Reads fields back; every overrun is a RadioFrameError."""

    __slots__ = ("_acc", "_pos", "_total")

    def __init__(self, data: bytes) -> None:
        self._acc = int.from_bytes(data, "big")
        self._total = len(data) * 8
        self._pos = 0

    @property
    def remaining(self) -> int:
        return self._total - self._pos

    def read(self, width: int) -> int:
        if width > self.remaining:
            raise RadioFrameError("compact record truncated")
        self._pos += width
        return (self._acc >> (self._total - self._pos)) & ((1 << width) - 1)

    def read_signed(self, width: int) -> int:
        value = self.read(width)
        return value - (1 << width) if value >> (width - 1) else value

    def read_flag(self) -> bool:
        return self.read(1) == 1

    def read_eg(self, k: int) -> int:
        zeros = 0
        while self.read(1) == 0:
            zeros += 1
            if zeros > MAX_EG_PREFIX:
                raise RadioFrameError("Exp-Golomb prefix too long")
        rest = self.read(zeros + k)
        return ((1 << (zeros + k)) | rest) - (1 << k)

    def read_bytes(self, count: int) -> bytes:
        return self.read(count * 8).to_bytes(count, "big") if count else b""

    def read_text(self, limit: int) -> str:
        length = self.read(8 if limit < 256 else 16)
        if length > limit:
            raise RadioFrameError(f"text length {length} exceeds the {limit}-byte limit")
        try:
            return self.read_bytes(length).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RadioFrameError("text is not valid UTF-8") from exc

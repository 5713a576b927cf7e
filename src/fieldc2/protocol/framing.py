"""Splitting byte streams into messages: CoT XML and TAK v1 stream framing.

Both framers are sans-I/O: ``feed(data)`` then ``next_frame()`` until it
returns None.  Neither ever holds more than its limit: memory per connection
is bounded whatever a peer sends.
"""

from __future__ import annotations

from fieldc2.errors import FramingError, OversizeError
from fieldc2.protocol.tak_v1 import decode_varint

#: Largest CoT event accepted, in bytes.  An ATAK self-report is ~0.7 KB; a
#: route with a few hundred waypoints or a large drawing reaches ~100 KB.
#: Data packages travel over HTTP, never in the stream.
DEFAULT_MAX_EVENT_SIZE = 256 * 1024

#: Bytes discarded while hunting for the end of an oversize or garbled event
#: before the connection is judged to be sending garbage and closed.
MAX_DISCARD = 1024 * 1024

_END = b"</event>"
_DECL_END = b"?>"
_WHITESPACE = b" \t\r\n"


class XmlFramer:
    """Split a CoT XML stream after each ``</event>``.

    Tolerates an ``<?xml ...?>`` declaration before every event, events split
    across reads, many events in one read, and whitespace between events.
    Text before an event that is not a declaration is reported as an error and
    skipped; an event larger than ``max_size`` is reported and skipped up to
    its ``</event>``.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._discarding = False
        self._discarded = 0
        # Where the next search for </event> starts, so that a peer trickling
        # bytes one at a time costs linear, not quadratic, time.
        self._scan_from = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def leading_element(self, tag: bytes) -> bytes | None:
        """Remove and return a complete ``<tag>...</tag>`` at the front.

        Declarations and whitespace before it are dropped with it.  Returns
        None when the buffer does not start with that element or it is not
        complete yet.  Used for the ``<auth>`` message a TAK client sends
        before any event on a server that requires a login.
        """
        buf = self._buf
        start = 0
        while True:
            while start < len(buf) and buf[start] in _WHITESPACE:
                start += 1
            if buf.startswith(b"<?", start):
                close = buf.find(_DECL_END, start)
                if close < 0:
                    return None
                start = close + 2
                continue
            break
        opening = b"<" + tag
        if not buf.startswith(opening, start):
            return None
        closing = b"</" + tag + b">"
        end = buf.find(closing, start, start + self.max_size)
        if end < 0:
            return None
        end += len(closing)
        element = bytes(buf[start:end])
        del buf[:end]
        self._scan_from = 0
        return element

    def pending(self) -> bytes:
        """Bytes held but not yet framed (handed over on a protocol switch)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def next_frame(self) -> bytes | None:
        """The next complete ``<event>...</event>``, or None if more is needed.

        Raises :class:`OversizeError` or :class:`FramingError` for input that
        was dropped; calling again continues after it.
        """
        buf = self._buf
        if self._discarding:
            return self._resync()
        end = buf.find(_END, self._scan_from)
        if end < 0:
            self._scan_from = max(0, len(buf) - len(_END) + 1)
            if len(buf) > self.max_size:
                self._start_discarding()
                raise OversizeError(f"no </event> within {self.max_size} bytes; skipping")
            return None
        self._scan_from = 0
        end += len(_END)
        if end > self.max_size:
            del buf[:end]
            raise OversizeError(f"event of {end} bytes exceeds the {self.max_size}-byte limit")
        start = buf.find(b"<event", 0, end)
        prefix = bytes(buf[: start if start >= 0 else end])
        if not _only_declarations(prefix):
            del buf[: len(prefix)]
            raise FramingError(f"skipped {len(prefix)} bytes of non-event data: {prefix[:40]!r}")
        frame = bytes(buf[start:end])
        del buf[:end]
        return frame

    def _start_discarding(self) -> None:
        self._scan_from = 0
        self._discarding = True
        self._discarded = len(self._buf)
        del self._buf[: -(len(_END) - 1)]  # keep a possible partial </event>

    def _resync(self) -> bytes | None:
        buf = self._buf
        end = buf.find(_END)
        if end < 0:
            keep = len(_END) - 1
            self._discarded += max(0, len(buf) - keep)
            del buf[:-keep]
            if self._discarded > MAX_DISCARD:
                raise FramingError(f"{self._discarded} bytes without a usable event; giving up")
            return None
        del buf[: end + len(_END)]
        self._discarding = False
        self._discarded = 0
        return self.next_frame()

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished event held (0 while discarding or idle)."""
        return 0 if self._discarding else len(self._buf.strip(_WHITESPACE))

    @property
    def hopeless(self) -> bool:
        """True once discarding has gone past ``MAX_DISCARD``."""
        return self._discarded > MAX_DISCARD


def _only_declarations(prefix: bytes) -> bool:
    rest = prefix.strip(_WHITESPACE)
    while rest.startswith(b"<?"):
        close = rest.find(_DECL_END)
        if close < 0:
            return False
        rest = rest[close + 2 :].lstrip(_WHITESPACE)
    return not rest


class ProtoStreamFramer:
    """Split a TAK v1 stream: ``0xbf``, varint length, protobuf payload.

    The stream cannot be resynchronised after a bad header, so a header error
    is fatal for the connection (the caller closes it).
    """

    def __init__(self, max_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self) -> bytes | None:
        buf = self._buf
        if not buf:
            return None
        if buf[0] != 0xBF:
            raise FramingError(f"TAK v1 frame starts with 0x{buf[0]:02x}, expected 0xbf")
        header = decode_varint(buf, 1)
        if header is None:
            return None
        length, start = header
        if length > self.max_size:
            raise OversizeError(f"TAK v1 frame of {length} bytes exceeds {self.max_size}")
        end = start + length
        if len(buf) < end:
            return None
        payload = bytes(buf[start:end])
        del buf[:end]
        return payload

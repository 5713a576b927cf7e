"""One CoT stream connection, sans-I/O: bytes in, stream events out.

The format is detected from the first byte (``<`` for XML, ``0xbf`` for TAK
protocol v1), because real clients do not always negotiate: pytak with
``TAK_PROTO=1`` starts straight in v1.  An XML client is offered v1 with
``t-x-takp-v``; its ``t-x-takp-q`` request is answered with ``t-x-takp-r`` and
both directions switch.  The state machine is the table ``_TRANSITIONS``; a
pair missing from it is a protocol error.

Bad input never raises out of here: a message that cannot be used becomes a
:class:`Rejected` event (the shell logs it), and a peer that keeps sending
garbage gets a :class:`Closing` event (the shell closes it).
"""

from __future__ import annotations

import enum
import re
from collections import deque

import msgspec

from fieldc2 import __version__
from fieldc2.errors import FramingError, ProtocolError
from fieldc2.model.cot import Event, EventFacts
from fieldc2.protocol.cot_xml import format_time, parse_auth, parse_event
from fieldc2.protocol.framing import DEFAULT_MAX_EVENT_SIZE, ProtoStreamFramer, XmlFramer
from fieldc2.protocol.tak_v1 import payload_to_event

#: Messages a peer may get wrong within ``REJECT_WINDOW`` seconds before it is
#: disconnected.  A healthy client sends none; a buggy plug-in may send a few.
MAX_REJECTS = 20
REJECT_WINDOW = 60.0
#: Parsed events waiting for the shell to drain.  One read of 256 KiB of tiny
#: events can produce this many; the shell drains after every read.
MAX_PENDING_EVENTS = 4096


class Format(enum.Enum):
    XML = "xml"
    PROTO = "proto"


class State(enum.Enum):
    DETECT = "detect"
    XML = "xml"
    PROTO = "proto"
    CLOSED = "closed"


class Input(enum.Enum):
    XML_BYTE = "first byte <"
    V1_BYTE = "first byte 0xbf"
    OTHER_BYTE = "first byte unrecognised"
    V1_REQUEST = "t-x-takp-q for version 1"
    FATAL = "unrecoverable input"


# Plain names for the hot paths: Enum member lookup on the class is slow on
# Python 3.11 and these run for every message and every recipient.
_DETECT, _XML, _PROTO, _CLOSED = State.DETECT, State.XML, State.PROTO, State.CLOSED
_FORMAT_OF = {State.DETECT: Format.XML, State.XML: Format.XML, State.PROTO: Format.PROTO,
              State.CLOSED: Format.XML}

# (state, input) -> next state.
_TRANSITIONS: dict[tuple[State, Input], State] = {
    (State.DETECT, Input.XML_BYTE): State.XML,
    (State.DETECT, Input.V1_BYTE): State.PROTO,
    (State.DETECT, Input.OTHER_BYTE): State.CLOSED,
    (State.DETECT, Input.FATAL): State.CLOSED,
    (State.XML, Input.V1_REQUEST): State.PROTO,
    (State.XML, Input.FATAL): State.CLOSED,
    (State.PROTO, Input.FATAL): State.CLOSED,
}


class Received(msgspec.Struct, frozen=True, tag=True):
    """A valid event, with the wire bytes it came in so they can be reused."""

    event: Event
    facts: EventFacts
    xml: bytes | None = None
    payload: bytes | None = None


class Rejected(msgspec.Struct, frozen=True, tag=True):
    """One message was dropped; the connection goes on."""

    reason: str


class Switched(msgspec.Struct, frozen=True, tag=True):
    """Both directions now use this format."""

    format: Format


class LoginRequested(msgspec.Struct, frozen=True, tag=True):
    """The client sent ``<auth>`` before its first event."""

    username: str
    password: str = msgspec.field(default="")
    uid: str = ""

    def __repr__(self) -> str:  # never put a password in a log line
        return f"LoginRequested(username={self.username!r}, uid={self.uid!r})"


class Closing(msgspec.Struct, frozen=True, tag=True):
    """The peer is misbehaving beyond repair; close the connection."""

    reason: str


StreamEvent = Received | Rejected | Switched | LoginRequested | Closing

_TAK_REQUEST = re.compile(r"""<TakRequest\b[^>]*\bversion\s*=\s*["'](\d+)["']""")


def control_event(cot_type: str, uid: str, detail: str, now: float) -> bytes:
    """A server control message (takp-v, takp-r, pong) as XML bytes."""
    ms = int(now * 1000)
    return (
        f'<event version="2.0" uid="{uid}" type="{cot_type}" how="h-g-i-g-o"'
        f' time="{format_time(ms)}" start="{format_time(ms)}" stale="{format_time(ms + 60_000)}">'
        '<point lat="0.0" lon="0.0" hae="0.0" ce="9999999.0" le="9999999.0"/>'
        f"<detail>{detail}</detail></event>"
    ).encode()


class CotStream:
    """Server side of one TAK client stream."""

    def __init__(self, *, offer_v1: bool = True, max_event_size: int = DEFAULT_MAX_EVENT_SIZE):
        self._state = State.DETECT
        #: The format the peer expects to receive; follows the state.
        self.format = Format.XML
        self.offer_v1 = offer_v1
        self._max = max_event_size
        self._xml = XmlFramer(max_event_size)
        self._proto: ProtoStreamFramer | None = None
        self._events: deque[StreamEvent] = deque()
        self._outgoing = bytearray()
        self._rejects: deque[float] = deque(maxlen=MAX_REJECTS + 1)
        self.rejected_total = 0
        self._now = 0.0
        self._offered = False
        self._first_message = True

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        self._state = value
        self.format = _FORMAT_OF[value]

    def _move(self, what: Input) -> None:
        key = (self.state, what)
        if key not in _TRANSITIONS:
            raise ProtocolError(f"{what.value} is not valid in state {self.state.value}")
        self.state = _TRANSITIONS[key]

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes read from the socket; then drain with next_event()."""
        if self._state is _CLOSED or not data:
            return
        self._now = now
        if self._state is _DETECT:
            data = data.lstrip(b" \t\r\n")
            self._detect(data, now)
            if self._state not in (_XML, _PROTO):
                return
        if self._state is _XML:
            self._xml.feed(data)
            self._drain_xml(now)
        elif self._proto is not None:
            self._proto.feed(data)
            self._drain_proto(now)

    def _detect(self, data: bytes, now: float) -> None:
        first = data.lstrip(b" \t\r\n")[:1]
        if not first:
            return
        if first == b"<":
            self._move(Input.XML_BYTE)
            self.offer(now)
        elif first == b"\xbf":
            self._move(Input.V1_BYTE)
            self._proto = ProtoStreamFramer(self._max)
            self._events.append(Switched(Format.PROTO))
        else:
            self._move(Input.OTHER_BYTE)
            self._events.append(Closing(f"unrecognised protocol, first byte {first!r}"))

    def offer(self, now: float) -> None:
        """Offer TAK v1 (``t-x-takp-v``), once, unless the peer already speaks it.

        Sent when an XML peer first speaks, or by the shell to a peer that has
        stayed silent for a while (it is then most likely an XML client
        waiting for the offer; a v1 client would have spoken first).
        """
        if not self.offer_v1 or self._offered or self._state not in (_DETECT, _XML):
            return
        self._offered = True
        self._outgoing += control_event(
            "t-x-takp-v", "protouid",
            '<TakControl><TakProtocolSupport version="1"/>'
            f'<TakServerVersionInfo serverVersion="fieldc2 {__version__}" apiVersion="3"/>'
            "</TakControl>", now)

    def _drain_xml(self, now: float) -> None:
        if self._first_message:
            self._take_login(now)
        while self._state is _XML and len(self._events) < MAX_PENDING_EVENTS:
            try:
                frame = self._xml.next_frame()
            except FramingError as exc:
                if self._xml.hopeless:
                    self._fatal(str(exc))
                    return
                self._reject(str(exc), now)
                continue
            if frame is None:
                return
            self._first_message = False
            try:
                event, facts = parse_event(frame)
            except ProtocolError as exc:
                self._reject(str(exc), now)
                continue
            if event.type == "t-x-takp-q":
                self._negotiate(event, now)
            else:
                self._events.append(Received(event, facts, xml=frame))

    def _take_login(self, now: float) -> None:
        """An ``<auth>`` message may come first, before any event."""
        element = self._xml.leading_element(b"auth")
        if element is None:
            return
        self._first_message = False
        try:
            username, password, uid = parse_auth(element)
        except ProtocolError as exc:
            self._reject(str(exc), now)
            return
        self._events.append(LoginRequested(username, password, uid))

    def _negotiate(self, request: Event, now: float) -> None:
        match = _TAK_REQUEST.search(request.detail.xml)
        accept = self.offer_v1 and match is not None and match.group(1) == "1"
        self._outgoing += control_event(
            "t-x-takp-r", "protouid",
            f'<TakControl><TakResponse status="{str(accept).lower()}"/></TakControl>', now)
        if accept:
            self._move(Input.V1_REQUEST)
            self._proto = ProtoStreamFramer(self._max)
            self._events.append(Switched(Format.PROTO))
            leftover = self._xml.pending()
            if leftover:
                self._proto.feed(leftover)
                self._drain_proto(now)

    def _drain_proto(self, now: float) -> None:
        assert self._proto is not None
        while self._state is _PROTO and len(self._events) < MAX_PENDING_EVENTS:
            try:
                payload = self._proto.next_frame()
            except FramingError as exc:
                self._fatal(str(exc))
                return
            if payload is None:
                return
            try:
                decoded = payload_to_event(payload)
            except ProtocolError as exc:
                self._reject(str(exc), now)
                continue
            if decoded is not None:
                self._events.append(Received(decoded[0], decoded[1], payload=payload))

    def _reject(self, reason: str, now: float) -> None:
        self.rejected_total += 1
        self._events.append(Rejected(reason))
        self._rejects.append(now)
        if len(self._rejects) > MAX_REJECTS and now - self._rejects[0] < REJECT_WINDOW:
            self._fatal(f"more than {MAX_REJECTS} bad messages within {REJECT_WINDOW:.0f} s")

    def _fatal(self, reason: str) -> None:
        self._move(Input.FATAL)
        self._events.append(Closing(reason))

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished message held when the connection ends."""
        if self._state is _XML:
            return self._xml.buffered
        if self._state is _PROTO and self._proto is not None:
            return self._proto.buffered
        return 0

    def next_event(self) -> StreamEvent | None:
        """The next stream event, or None when more data is needed."""
        if not self._events:
            # A single read may hold more than MAX_PENDING_EVENTS messages;
            # the rest stay framed-but-unparsed until drained here.
            if self._state is _XML:
                self._drain_xml(self._now)
            elif self._state is _PROTO and self._proto is not None:
                self._drain_proto(self._now)
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        """Control bytes the protocol itself must send (negotiation)."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

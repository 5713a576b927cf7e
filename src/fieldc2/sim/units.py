"""Simulated field units: real TCP clients that speak CoT XML like ATAK does.

A :class:`FieldUnit` connects to a command post, sends an ATAK-shaped
self-report every ``interval`` seconds, and reads what the server sends it
the way a device does: the stream is split with the server's own
:class:`~fieldc2.protocol.framing.XmlFramer` and every event parsed with
:func:`~fieldc2.protocol.cot_xml.parse_event`.  What a unit does with those
events, where it is and what it says back is its :class:`Behaviour`:

- :class:`SquareWalk` walks an expanding square around a point and ignores
  what it receives (background traffic for ``fieldc2 demo``);
- :class:`fieldc2.sim.teams.TeamMember` follows the orders it is sent.

Behaviours are sans-I/O and take the time as an argument; the unit is the
thin shell that moves bytes.  The CoT builders here (:func:`self_report`,
:func:`chat`, :func:`direct_chat`, :func:`receipt`) are what tests use to
talk to a server like a device would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol
from xml.sax.saxutils import escape

from fieldc2.errors import ProtocolError
from fieldc2.model.cot import Event, EventFacts
from fieldc2.protocol.cot_xml import format_time, parse_event
from fieldc2.protocol.framing import XmlFramer

log = logging.getLogger("fieldc2.sim")

_METRES_PER_DEGREE = 111_320.0

#: How often a unit looks for messages its behaviour has due: receipts and
#: replies follow an order by a second or more, so a tenth of that is prompt.
TICK_S = 0.1
#: Bytes read from the socket at once.
READ_CHUNK = 65_536
#: Messages a unit holds for sending (chat the demo makes it say, replies
#: its behaviour produced).  A unit sends them every tick; more than this
#: waiting means the connection is stuck, and the oldest are dropped.
MAX_OUTBOX = 256


def _attr(value: str) -> str:
    return escape(value, {'"': "&quot;"})


def self_report(uid: str, callsign: str, lat: float, lon: float, *, group: str = "Cyan",
                course: float = 0.0, speed: float = 0.0, battery: int = 90,
                now: float | None = None, stale_s: float = 120.0) -> bytes:
    """An ATAK-style self position report."""
    ms = int((time.time() if now is None else now) * 1000)
    t = format_time(ms)
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<event version="2.0" uid="{uid}" type="a-f-G-U-C" how="m-g" time="{t}" start="{t}"'
        f' stale="{format_time(ms + int(stale_s * 1000))}">'
        f'<point lat="{lat:.7f}" lon="{lon:.7f}" hae="312.0" ce="4.9" le="9999999.0"/>'
        '<detail><takv device="fieldc2 sim" platform="fieldc2" os="linux" version="0.1"/>'
        f'<contact callsign="{callsign}" endpoint="*:-1:stcp"/><uid Droid="{callsign}"/>'
        '<precisionlocation altsrc="GPS" geopointsrc="GPS"/>'
        f'<__group role="Team Member" name="{group}"/><status battery="{battery}"/>'
        f'<track course="{course:.1f}" speed="{speed:.1f}"/></detail></event>'
    ).encode()


def chat(sender_uid: str, sender_callsign: str, text: str, *, to_callsign: str = "",
         now: float | None = None) -> bytes:
    """A GeoChat message; directed when ``to_callsign`` is given."""
    ms = int((time.time() if now is None else now) * 1000)
    t = format_time(ms)
    room = to_callsign or "All Chat Rooms"
    msg_id = f"{random.getrandbits(64):016x}"
    dest = f'<marti><dest callsign="{to_callsign}"/></marti>' if to_callsign else ""
    return (
        f'<event version="2.0" uid="GeoChat.{sender_uid}.{room}.{msg_id}" type="b-t-f"'
        f' how="h-g-i-g-o" time="{t}" start="{t}" stale="{format_time(ms + 86_400_000)}">'
        '<point lat="0.0" lon="0.0" hae="9999999.0" ce="9999999.0" le="9999999.0"/>'
        f'<detail><__chat parent="RootContactGroup" groupOwner="false" chatroom="{room}"'
        f' id="{room}" senderCallsign="{sender_callsign}"><chatgrp uid0="{sender_uid}"'
        f' uid1="{room}" id="{room}"/></__chat><link uid="{sender_uid}" type="a-f-G-U-C"'
        f' relation="p-p"/><remarks source="BAO.F.ATAK.{sender_uid}" to="{room}"'
        f' time="{t}">{text}</remarks>{dest}</detail></event>'
    ).encode()


def direct_chat(sender_uid: str, sender_callsign: str, text: str, *, to_uid: str,
                to_callsign: str, message_id: str, now: float) -> bytes:
    """A direct GeoChat to one contact, as ATAK writes it (room = the contact)."""
    ms = int(now * 1000)
    t = format_time(ms)
    me, peer, room = _attr(sender_uid), _attr(to_uid), _attr(to_callsign or to_uid)
    return (
        f'<event version="2.0" uid="GeoChat.{me}.{peer}.{_attr(message_id)}" type="b-t-f"'
        f' how="h-g-i-g-o" time="{t}" start="{t}" stale="{format_time(ms + 86_400_000)}">'
        '<point lat="0.0" lon="0.0" hae="9999999.0" ce="9999999.0" le="9999999.0"/>'
        f'<detail><__chat parent="RootContactGroup" groupOwner="false"'
        f' messageId="{_attr(message_id)}" chatroom="{room}" id="{peer}"'
        f' senderCallsign="{_attr(sender_callsign)}"><chatgrp uid0="{me}" uid1="{peer}"'
        f' id="{peer}"/></__chat><link uid="{me}" type="a-f-G-U-C" relation="p-p"/>'
        f'<remarks source="BAO.F.ATAK.{me}" to="{peer}" time="{t}">{escape(text)}</remarks>'
        f'<marti><dest uid="{peer}"/></marti></detail></event>'
    ).encode()


def receipt(read: bool, sender_uid: str, sender_callsign: str, message_id: str, *,
            to_uid: str, now: float) -> bytes:
    """ATAK's delivered (``b-t-f-d``) or read (``b-t-f-r``) receipt for a chat,
    naming its message id and sent back to the chat's author only."""
    ms = int(now * 1000)
    t = format_time(ms)
    kind = "b-t-f-r" if read else "b-t-f-d"
    me, peer, mid = _attr(sender_uid), _attr(to_uid), _attr(message_id)
    return (
        f'<event version="2.0" uid="{mid}" type="{kind}" how="h-g-i-g-o" time="{t}"'
        f' start="{t}" stale="{format_time(ms + 86_400_000)}">'
        '<point lat="0.0" lon="0.0" hae="9999999.0" ce="9999999.0" le="9999999.0"/>'
        f'<detail><__chatreceipt parent="RootContactGroup" groupOwner="false"'
        f' messageId="{mid}" chatroom="{_attr(sender_callsign)}" id="{peer}"'
        f' senderCallsign="{_attr(sender_callsign)}"><chatgrp uid0="{me}" uid1="{peer}"'
        f' id="{peer}"/></__chatreceipt><link uid="{me}" type="a-f-G-U-C" relation="p-p"/>'
        f'<marti><dest uid="{peer}"/></marti></detail></event>'
    ).encode()


class Fix(NamedTuple):
    """Where a unit is: degrees, course in degrees, speed in m/s."""

    lat: float
    lon: float
    course: float = 0.0
    speed: float = 0.0


class Behaviour(Protocol):
    """What a simulated device does; ``now`` is wall-clock seconds."""

    def fix(self, now: float) -> Fix:
        """Its position at ``now``."""
        ...

    def receive(self, event: Event, facts: EventFacts, now: float) -> None:
        """An event the server sent it."""
        ...

    def due(self, now: float) -> list[bytes]:
        """CoT it has to send by ``now`` (receipts, replies)."""
        ...


@dataclass
class SquareWalk:
    """An expanding-square search around a point (legs 30 m, 30 m, 60 m, 60 m...)."""

    base_lat: float
    base_lon: float
    speed: float = 1.4
    """Walking pace, metres per second."""
    _last: float | None = None
    _leg: int = 0
    _heading: float = field(default_factory=lambda: random.uniform(0, 360))
    _x: float = 0.0
    _y: float = 0.0
    _leg_left: float = 30.0

    def fix(self, now: float) -> Fix:
        dt = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        distance = self.speed * dt
        while distance > 0:
            move = min(distance, self._leg_left)
            rad = math.radians(self._heading)
            self._x += move * math.sin(rad)
            self._y += move * math.cos(rad)
            distance -= move
            self._leg_left -= move
            if self._leg_left <= 0:
                self._leg += 1
                self._heading = (self._heading + 90) % 360
                self._leg_left = 30.0 * (self._leg // 2 + 1)
        lat = self.base_lat + self._y / _METRES_PER_DEGREE
        lon = self.base_lon + self._x / (_METRES_PER_DEGREE * math.cos(math.radians(lat)))
        return Fix(lat, lon, self._heading, self.speed)

    def receive(self, event: Event, facts: EventFacts, now: float) -> None:
        """A walker reads nothing it is sent."""

    def due(self, now: float) -> list[bytes]:
        return []


@dataclass
class FieldUnit:
    """One simulated device: a TCP connection, a self-report loop, a reader."""

    uid: str
    callsign: str
    behaviour: Behaviour
    group: str = "Cyan"
    interval: float = 1.0
    """Seconds between self-reports (ATAK's default dynamic rate is 1-5 s)."""
    received_bytes: int = 0
    received_events: int = 0
    rejected: int = 0
    """Received messages that did not frame or parse."""
    sent: int = 0
    """Self-reports sent."""
    outbox: list[bytes] = field(default_factory=list)
    """Extra messages (chat, alerts) sent at the next tick."""

    def say(self, message: bytes) -> None:
        """Queue a message, dropping the oldest past ``MAX_OUTBOX``."""
        self.outbox.append(message)
        del self.outbox[:-MAX_OUTBOX]

    def report(self, now: float) -> bytes:
        fix = self.behaviour.fix(now)
        battery = max(5, 100 - self.sent // 60)
        return self_report(self.uid, self.callsign, fix.lat, fix.lon, group=self.group,
                           course=fix.course, speed=fix.speed, battery=battery, now=now)

    async def run(self, host: str, port: int, stop: asyncio.Event) -> None:
        """Connect, report until ``stop`` is set, then disconnect."""
        reader, writer = await asyncio.open_connection(host, port)
        drain = asyncio.create_task(self._read(reader))
        next_report = 0.0
        try:
            while not stop.is_set():
                now = time.time()
                for message in self.behaviour.due(now):
                    self.say(message)
                if now >= next_report:
                    self.outbox.insert(0, self.report(now))
                    self.sent += 1
                    next_report = now + self.interval
                if self.outbox:
                    writer.write(b"".join(self.outbox))
                    self.outbox.clear()
                    await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), TICK_S)
        finally:
            drain.cancel()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        framer = XmlFramer()
        while data := await reader.read(READ_CHUNK):
            self.received_bytes += len(data)
            framer.feed(data)
            while True:
                try:
                    frame = framer.next_frame()
                    if frame is None:
                        break
                    event, facts = parse_event(frame)
                    self.received_events += 1
                    self.behaviour.receive(event, facts, time.time())
                except ProtocolError as exc:
                    self.rejected += 1
                    log.debug("%s: dropped a message from the server: %s", self.uid, exc)

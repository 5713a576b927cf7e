"""Simulated field units: real TCP clients that report like ATAK does.

Each unit connects to a command post, sends an ATAK-shaped self-report every
``interval`` seconds while walking a search pattern around a base point, and
reads (and counts) what it receives.  Used by ``fieldc2 demo`` and the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field

from fieldc2.protocol.cot_xml import format_time

_METRES_PER_DEGREE = 111_320.0


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


@dataclass
class FieldUnit:
    """One simulated team member walking an expanding square."""

    uid: str
    callsign: str
    base_lat: float
    base_lon: float
    group: str = "Cyan"
    speed: float = 1.4
    """Walking pace, metres per second."""
    interval: float = 1.0
    received_bytes: int = 0
    received_events: int = 0
    sent: int = 0
    _leg: int = 0
    _heading: float = field(default_factory=lambda: random.uniform(0, 360))
    _x: float = 0.0
    _y: float = 0.0
    _leg_left: float = 30.0
    outbox: list[bytes] = field(default_factory=list)
    """Extra messages (chat, alerts) sent with the next report."""

    def step(self, dt: float) -> tuple[float, float]:
        """Advance along an expanding square (legs 30 m, 30 m, 60 m, 60 m...)."""
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
        return lat, lon

    def report(self) -> bytes:
        lat, lon = self.step(self.interval)
        battery = max(5, 100 - self.sent // 60)
        return self_report(self.uid, self.callsign, lat, lon, group=self.group,
                           course=self._heading, speed=self.speed, battery=battery)

    async def run(self, host: str, port: int, stop: asyncio.Event) -> None:
        """Connect, report until ``stop`` is set, then disconnect."""
        reader, writer = await asyncio.open_connection(host, port)
        drain = asyncio.create_task(self._read(reader))
        try:
            while not stop.is_set():
                writer.write(self.report() + b"".join(self.outbox))
                self.outbox.clear()
                self.sent += 1
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
        finally:
            drain.cancel()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(65536):
            self.received_bytes += len(data)
            self.received_events += data.count(b"</event>")

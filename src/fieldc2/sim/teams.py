"""A simulated team member's device that follows the orders it is sent.

:class:`TeamMember` is a :class:`~fieldc2.sim.units.Behaviour`: sans-I/O,
wall-clock time passed in, CoT in and out.  It knows only what a team on
the ground knows: its own position and walking speed, and what arrived on
its device -- the order chats (``<__fieldc2_order>`` with the task, its
entry point and planned start; the text with the planned finish) and the
task markers drawn on its map.  With them it does what a team does:

1. an order arrives: after a short delay the device sends a delivered
   receipt, a little later a read receipt (the order is acknowledged);
2. the team walks to its read orders one after the other, earliest planned
   start first, at its speed on scenario time (:class:`ScenarioClock`);
3. at a task it waits for the planned start if early, replies ``STARTED``,
   works through the task's shape (along a line, in lanes over an area) for
   the planned work time, and replies ``DONE``;
4. a ``CANCELLED`` chat naming an order drops it.

A *silent* member never answers and never moves: the phone in a pocket that
makes the command post's overdue-acknowledgement alert fire.
"""

from __future__ import annotations

import enum
import itertools
import math
import random
import re
from dataclasses import dataclass, field

from fieldc2.errors import CotError
from fieldc2.model.cot import Event, EventFacts
from fieldc2.orders.cot import CHAT_TYPE, detail_elements
from fieldc2.plan.geo import Coord
from fieldc2.protocol.cot_xml import parse_time
from fieldc2.sim.units import Fix, direct_chat, receipt

_METRES_PER_DEGREE = 111_320.0
_FINISH = re.compile(r"\bStart (\d\d):(\d\d)Z, finish (\d\d):(\d\d)Z")
_ORDER_ID = re.compile(r"\bORD-[0-9A-F]{8}\b")
_MARKER_PREFIX = "fieldc2.task."
AREA_TYPE = "u-d-f"

#: Orders one device takes in (open and done).  A team gets a few per
#: operational period; a runaway sender must not grow the simulation without
#: bound.  Messages waiting to be sent are at most four per order.
MAX_ORDERS = 200
#: Vertices kept per task shape (the command post sends at most 200).
MAX_SHAPE_POINTS = 400
#: Scenario seconds of work assumed when an order's text gives no finish.
DEFAULT_WORK_S = 600
#: Lanes walked over an area: enough to look like a sweep on the map.
AREA_LANES = 6


class ScenarioClock:
    """Scenario time from wall-clock time: frozen at ``origin`` until
    :meth:`start`, then running ``speedup`` times faster than the wall clock."""

    def __init__(self, origin: float, speedup: float) -> None:
        self.origin = origin
        self.speedup = speedup
        self.started: float | None = None

    def start(self, now: float) -> None:
        if self.started is None:
            self.started = now

    def __call__(self, now: float) -> float:
        if self.started is None:
            return self.origin
        return self.origin + max(0.0, now - self.started) * self.speedup


@dataclass(frozen=True)
class Assigned:
    """An order as the device understood it."""

    order_id: str
    task_id: str
    message_id: str
    author_uid: str
    author_callsign: str
    entry: Coord
    due: float
    """Planned start of work, epoch seconds (scenario time)."""
    work_s: float


@dataclass(frozen=True)
class Shape:
    """A task as drawn on the device's map: a line's or an area's vertices."""

    area: bool
    points: tuple[Coord, ...]


class Phase(enum.Enum):
    IDLE = "idle"
    TRAVEL = "travel"
    WAIT = "wait"
    WORK = "work"


def _metres(a: Coord, b: Coord) -> float:
    """Equirectangular distance: exact enough within an incident's few km."""
    dx = (b[0] - a[0]) * _METRES_PER_DEGREE * math.cos(math.radians((a[1] + b[1]) / 2))
    return math.hypot(dx, (b[1] - a[1]) * _METRES_PER_DEGREE)


def _bearing(a: Coord, b: Coord) -> float:
    dx = (b[0] - a[0]) * math.cos(math.radians((a[1] + b[1]) / 2))
    return math.degrees(math.atan2(dx, b[1] - a[1])) % 360


def _lerp(a: Coord, b: Coord, f: float) -> Coord:
    return (a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f)


def walk(path: list[Coord], fraction: float) -> tuple[list[Coord], Coord]:
    """The vertices passed and the point reached ``fraction`` (0..1) of the
    way along a polyline."""
    pairs = list(itertools.pairwise(path))
    legs = [_metres(a, b) for a, b in pairs]
    left = max(0.0, min(1.0, fraction)) * sum(legs)
    for index, ((a, b), leg) in enumerate(zip(pairs, legs, strict=True)):
        if left <= leg and leg > 0:
            return path[:index + 1], _lerp(a, b, left / leg)
        left -= leg
    return path[:-1], path[-1]


def sweep(ring: list[Coord], centre: Coord) -> list[Coord]:
    """Lanes over an area's bounding box, from and back to its centre."""
    lons = [c[0] for c in ring]
    lats = [c[1] for c in ring]
    path = [centre]
    for lane in range(AREA_LANES):
        lat = min(lats) + (max(lats) - min(lats)) * (lane + 0.5) / AREA_LANES
        ends = [(min(lons), lat), (max(lons), lat)]
        path += ends if lane % 2 == 0 else ends[::-1]
    return [*path, centre]


def _work_seconds(text: str) -> float:
    """Planned work time from "Start HH:MMZ, finish HH:MMZ" in the order text."""
    found = _FINISH.search(text)
    if found is None:
        return DEFAULT_WORK_S
    h0, m0, h1, m1 = (int(g) for g in found.groups())
    return float(((h1 * 60 + m1) - (h0 * 60 + m0)) % 1440 * 60)


@dataclass
class TeamMember:
    """One device of a team, following its orders (see the module docstring)."""

    uid: str
    callsign: str
    position: Coord
    """(lon, lat) now."""
    speed: float
    """Travel speed in m/s (scenario time)."""
    clock: ScenarioClock
    rng: random.Random = field(default_factory=random.Random)
    silent: bool = False
    receipt_delay: tuple[float, float] = (0.5, 3.0)
    """Wall-clock seconds before each receipt: the time a person takes to look."""
    orders: dict[str, Assigned] = field(default_factory=dict)
    """Read orders not yet done, by order id."""
    done: list[str] = field(default_factory=list)
    shapes: dict[str, Shape] = field(default_factory=dict)
    worked: dict[str, list[Coord]] = field(default_factory=dict)
    """Task id -> the pattern walked on it (whole for done tasks)."""
    phase: Phase = Phase.IDLE
    current: Assigned | None = None
    _outgoing: list[tuple[float, bytes]] = field(default_factory=list)
    _unread: dict[str, tuple[float, Assigned]] = field(default_factory=dict)
    _t: float | None = None
    _work_start: float = 0.0
    _path: list[Coord] = field(default_factory=list)
    _course: float = 0.0
    _moving: float = 0.0

    # --- what arrives --------------------------------------------------------

    def receive(self, event: Event, facts: EventFacts, now: float) -> None:
        """Take in a task marker or an order (or cancellation) chat; raises
        :class:`CotError` for one whose fields make no sense."""
        try:
            if event.uid.startswith(_MARKER_PREFIX):
                self._marker(event)
            elif event.type == CHAT_TYPE and self.uid in facts.dest_uids and not self.silent:
                self._chat(event, now)
        except (ValueError, KeyError) as exc:
            raise CotError(f"unusable {event.type} {event.uid!r}: {exc}") from exc

    def _marker(self, event: Event) -> None:
        points: list[Coord] = []
        for name, attrs, _ in detail_elements(event.detail.xml):
            if name == "link" and "point" in attrs:
                lat, lon = (float(v) for v in attrs["point"].split(",")[:2])
                points.append((lon, lat))
        task_id = event.uid[len(_MARKER_PREFIX):]
        self.shapes[task_id] = Shape(area=event.type == AREA_TYPE,
                                     points=tuple(points[:MAX_SHAPE_POINTS]))

    def _chat(self, event: Event, now: float) -> None:
        elements = {name: (attrs, text) for name, attrs, text in
                    detail_elements(event.detail.xml)}
        chat, _ = elements.get("__chat", ({}, ""))
        text = elements.get("remarks", ({}, ""))[1]
        order = elements.get("__fieldc2_order", ({}, ""))[0]
        if not order:
            self._cancelled(text)
            return
        oid = order.get("id", "")
        mid = chat.get("messageId") or event.uid.rsplit(".", 1)[-1]
        known = len(self.orders) + len(self._unread) + len(self.done)
        if (not oid or oid in self.orders or oid in self._unread or oid in self.done
                or known >= MAX_ORDERS):
            return
        assigned = Assigned(
            order_id=oid, task_id=order.get("task", ""), message_id=mid,
            author_uid=chat.get("chatgrp.uid0", ""),
            author_callsign=chat.get("senderCallsign", ""),
            entry=(float(order.get("lon", event.lon)), float(order.get("lat", event.lat))),
            due=parse_time(order["due"]) / 1000 if order.get("due") else self.clock(now),
            work_s=_work_seconds(text))
        delivered = now + self.rng.uniform(*self.receipt_delay)
        read = delivered + self.rng.uniform(*self.receipt_delay)
        self._send_at(delivered, receipt(False, self.uid, self.callsign, mid,
                                         to_uid=assigned.author_uid, now=delivered))
        self._unread[oid] = (read, assigned)

    def _cancelled(self, text: str) -> None:
        if "CANCELLED" not in text.upper():
            return
        for oid in _ORDER_ID.findall(text):
            self.orders.pop(oid, None)
            self._unread.pop(oid, None)
            if self.current is not None and self.current.order_id == oid:
                self.current, self.phase = None, Phase.IDLE

    def _send_at(self, when: float, message: bytes) -> None:
        self._outgoing.append((when, message))

    def _reply(self, order: Assigned, word: str, now: float) -> None:
        mid = f"{self.rng.getrandbits(128):032x}"
        self._send_at(now, direct_chat(self.uid, self.callsign, f"{word} {order.order_id}",
                                       to_uid=order.author_uid,
                                       to_callsign=order.author_callsign,
                                       message_id=mid, now=now))

    # --- what it sends -------------------------------------------------------

    def due(self, now: float) -> list[bytes]:
        self._advance(now)
        ready = [m for t, m in self._outgoing if t <= now]
        self._outgoing = [(t, m) for t, m in self._outgoing if t > now]
        return ready

    def fix(self, now: float) -> Fix:
        self._advance(now)
        lon, lat = self.position
        return Fix(lat, lon, self._course, self._moving)

    # --- walking the route ---------------------------------------------------

    def _read_orders(self, now: float) -> None:
        for oid, (when, assigned) in list(self._unread.items()):
            if when <= now:
                del self._unread[oid]
                self._send_at(when, receipt(True, self.uid, self.callsign,
                                            assigned.message_id, to_uid=assigned.author_uid,
                                            now=when))
                self.orders[oid] = assigned
                self._reconsider()

    def _reconsider(self) -> None:
        """A newly read order that starts earlier comes first, unless work began."""
        if self.current is None or self.phase not in (Phase.TRAVEL, Phase.WAIT):
            return
        first = min(self.orders.values(), key=lambda o: (o.due, o.order_id))
        if first is not self.current:
            self.current, self.phase = None, Phase.IDLE

    def _advance(self, now: float) -> None:
        """Move the scenario on to ``clock(now)``, phase by phase."""
        self._read_orders(now)
        target = self.clock(now)
        if self._t is not None and target <= self._t:
            return  # asked twice at one moment: keep the course and speed
        t = self.clock.origin if self._t is None else self._t
        self._moving = 0.0
        while t < target:
            match self.phase:
                case Phase.IDLE:
                    t = self._next(t, target)
                case Phase.TRAVEL:
                    t = self._travel(t, target)
                case Phase.WAIT:
                    t = self._wait(t, target, now)
                case Phase.WORK:
                    t = self._work(t, target, now)
        self._t = target

    def _next(self, t: float, target: float) -> float:
        if not self.orders:
            return target
        self.current = min(self.orders.values(), key=lambda o: (o.due, o.order_id))
        self.phase = Phase.TRAVEL
        return t

    def _travel(self, t: float, target: float) -> float:
        assert self.current is not None
        goal = self.current.entry
        distance = _metres(self.position, goal)
        if distance > 0:
            self._course = _bearing(self.position, goal)
            self._moving = self.speed
        need = distance / self.speed
        if t + need <= target:
            self.position, self.phase = goal, Phase.WAIT
            return t + need
        self.position = _lerp(self.position, goal, (target - t) * self.speed / distance)
        return target

    def _wait(self, t: float, target: float, now: float) -> float:
        assert self.current is not None
        if t < self.current.due:
            return min(self.current.due, target)
        self._reply(self.current, "STARTED", now)
        self.phase, self._work_start = Phase.WORK, t
        self._path = self._work_path(self.current)
        return t

    def _work(self, t: float, target: float, now: float) -> float:
        assert self.current is not None
        order, end = self.current, self._work_start + self.current.work_s
        if end <= target:
            self.position = self._path[-1]
            if len(self._path) >= 2 and len(self.worked) < MAX_ORDERS:
                self.worked[order.task_id] = self._path
            self._reply(order, "DONE", now)
            self.orders.pop(order.order_id, None)
            self.done.append(order.order_id)
            self.current, self.phase = None, Phase.IDLE
            return end
        before = self.position
        _, self.position = walk(self._path, (target - self._work_start) / max(order.work_s, 1))
        if self.position != before:
            self._course = _bearing(before, self.position)
            self._moving = _metres(before, self.position) / max(target - t, 1e-9)
        return target

    def walked(self) -> dict[str, list[Coord]]:
        """Task id -> the pattern walked so far, the task in hand up to here."""
        walked = dict(self.worked)
        if (self.phase is Phase.WORK and self.current is not None and self._t is not None
                and len(self._path) >= 2):
            passed, here = walk(self._path,
                                (self._t - self._work_start) / max(self.current.work_s, 1))
            walked[self.current.task_id] = [*passed, here]
        return walked

    def _work_path(self, order: Assigned) -> list[Coord]:
        shape = self.shapes.get(order.task_id)
        if shape is None or len(shape.points) < 2:
            return [order.entry]
        if shape.area:
            return sweep(list(shape.points), order.entry)
        return [order.entry, *shape.points[1:]]

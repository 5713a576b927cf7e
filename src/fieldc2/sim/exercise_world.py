"""Ground truth of a simulated exercise: where every field node really is.

Walkers move on a flat local grid (metres east/north of the operations-area
origin) with a seeded random walk: a heading that drifts a little every leg
and a walking pace.  Position is a pure function of time, so the picture a
relay holds can be compared with the truth at any instant without recording
a trajectory.  Legs are fixed-length in time so ``position(t)`` is a lookup
plus one interpolation.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass

#: Metres per degree of latitude (spherical Earth; the error is far below 1 m
#: over an operations area of a few km, and both sides use the same formula).
METRES_PER_DEGREE = 111_320.0
#: Seconds per walking leg: the heading changes this often.
LEG_SECONDS = 60.0
#: Largest heading change between legs, degrees: searchers sweep, not zigzag.
MAX_TURN = 45.0
#: Radius around the origin where walkers start, metres.
START_RADIUS = 2000.0


@dataclass(frozen=True)
class Leg:
    start: float
    x: float
    y: float
    heading: float
    """Degrees true."""
    speed: float
    """Metres per second."""


class Walker:
    """One field node's true track, precomputed leg by leg for ``duration``."""

    def __init__(self, rng: random.Random, duration: float) -> None:
        angle, radius = rng.uniform(0, 2 * math.pi), START_RADIUS * math.sqrt(rng.random())
        x, y = radius * math.cos(angle), radius * math.sin(angle)
        heading, speed = rng.uniform(0, 360), rng.uniform(1.0, 1.6)
        self.legs: list[Leg] = []
        t = 0.0
        while t <= duration + LEG_SECONDS:
            self.legs.append(Leg(t, x, y, heading, speed))
            rad = math.radians(heading)
            x += speed * LEG_SECONDS * math.sin(rad)
            y += speed * LEG_SECONDS * math.cos(rad)
            heading = (heading + rng.uniform(-MAX_TURN, MAX_TURN)) % 360
            speed = min(1.8, max(0.6, speed + rng.uniform(-0.2, 0.2)))
            t += LEG_SECONDS
        self._starts = [leg.start for leg in self.legs]

    def leg_at(self, t: float) -> Leg:
        return self.legs[max(0, bisect.bisect_right(self._starts, t) - 1)]

    def xy(self, t: float) -> tuple[float, float]:
        """Metres east and north of the origin at exercise time ``t``."""
        leg = self.leg_at(t)
        d = leg.speed * (t - leg.start)
        rad = math.radians(leg.heading)
        return leg.x + d * math.sin(rad), leg.y + d * math.cos(rad)


@dataclass(frozen=True)
class Area:
    """The operations-area origin shared by the channel and the truth."""

    lat0: float
    lon0: float

    def to_latlon(self, x: float, y: float) -> tuple[float, float]:
        lat = self.lat0 + y / METRES_PER_DEGREE
        lon = self.lon0 + x / (METRES_PER_DEGREE * math.cos(math.radians(self.lat0)))
        return lat, lon

    def distance(self, a: tuple[float, float], b: tuple[float, float]) -> float:
        """Metres between two (lat, lon) points; equirectangular, fine at km scale."""
        dy = (a[0] - b[0]) * METRES_PER_DEGREE
        dx = (a[1] - b[1]) * METRES_PER_DEGREE * math.cos(math.radians(self.lat0))
        return math.hypot(dx, dy)

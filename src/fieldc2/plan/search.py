"""IAMSAR search patterns and POA/POD bookkeeping.

Patterns (IAMSAR Vol. III section 12) are laid out in metres on a local
azimuthal equidistant plane (``geo.LocalProjection``) about the datum or the
area's centroid, then returned as (lon, lat) waypoints.  Within 10 km of the
origin the plane distorts distances by less than one part per million.

- expanding square (SS): legs S, S, 2S, 2S, 3S, ... turning 90 degrees;
- sector (VS): three equilateral triangles of side R about the datum,
  120-degree turns, nine legs, back at the datum; optionally a second
  pattern rotated 30 degrees;
- parallel track (PS): legs along the area's major axis, S apart, the first
  S/2 inside the edge, turns S/2 inside the ends;
- creeping line (CS): the same ladder with legs along the minor axis,
  advancing along the major axis.

The area patterns assume a convex segment: on a concave one a leg spans from
its first to its last crossing of the boundary and may cross the notch.

Bookkeeping (Koopman): coverage C = W L / A, POD = 1 - exp(-C), cumulative
POD = 1 - prod(1 - POD_i), POS = POA x POD, and after an unsuccessful search
POA_i' = POA_i (1 - POD_i) / (1 - sum POS).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from fieldc2.errors import PlanError
from fieldc2.plan.geo import Coord, LocalProjection, centroid

PatternKind = Literal["expanding_square", "sector", "parallel_track", "creeping_line"]
XY = tuple[float, float]

MAX_LEGS = 10_000
"""Refuse patterns with more legs: a spacing that small for the area is a
unit mistake (km for m), and the waypoint list would swamp a GPS unit."""


class Pattern(msgspec.Struct, frozen=True, kw_only=True):
    """A search track: waypoints to follow in order, with its size."""

    kind: PatternKind
    waypoints: tuple[Coord, ...]
    spacing_m: float
    """Track spacing S (or the sector radius R)."""
    legs: int
    """Straight segments between consecutive waypoints."""
    length_m: float
    """Total track length L."""

    def duration_s(self, speed: float) -> float:
        """Time to fly, sail or walk the track at ``speed`` m/s."""
        return self.length_m / speed


def _pattern(kind: PatternKind, proj: LocalProjection, xy: Sequence[XY],
             spacing: float) -> Pattern:
    if len(xy) - 1 > MAX_LEGS:
        raise PlanError(f"{kind}: more than {MAX_LEGS} legs; check the spacing's unit")
    length = sum(math.dist(a, b) for a, b in itertools.pairwise(xy))
    return Pattern(kind=kind, waypoints=tuple(proj.to_lonlat(p) for p in xy),
                   spacing_m=spacing, legs=len(xy) - 1, length_m=length)


def _heading(course_deg: float) -> XY:
    rad = math.radians(course_deg)
    return (math.sin(rad), math.cos(rad))


def _check_positive(**values: float) -> None:
    for name, v in values.items():
        if not (v > 0 and math.isfinite(v)):
            raise PlanError(f"{name} must be a positive number of metres, got {v!r}")


def expanding_square(datum: Coord, spacing: float, legs: int, *,
                     first_course: float = 0.0, turn_right: bool = True) -> Pattern:
    """SS from ``datum``: first leg on ``first_course`` (into the wind), legs
    S, S, 2S, 2S, ...; ``legs`` straight legs in all."""
    _check_positive(spacing=spacing)
    if not 1 <= legs <= MAX_LEGS:
        raise PlanError(f"expanding square needs 1..{MAX_LEGS} legs, got {legs}")
    turn = 90.0 if turn_right else -90.0
    pts: list[XY] = [(0.0, 0.0)]
    for i in range(legs):
        dx, dy = _heading(first_course + i * turn)
        length = (i // 2 + 1) * spacing
        x, y = pts[-1]
        pts.append((x + dx * length, y + dy * length))
    return _pattern("expanding_square", LocalProjection(datum), pts, spacing)


def legs_to_cover(radius: float, spacing: float) -> int:
    """Fewest expanding-square legs whose track reaches ``radius`` metres from
    the datum on all four sides."""
    _check_positive(radius=radius, spacing=spacing)
    x = y = 0.0
    bounds = [0.0, 0.0, 0.0, 0.0]                  # east, west, north, south
    for i in range(MAX_LEGS):
        dx, dy = _heading(i * 90.0)
        x, y = x + dx * (i // 2 + 1) * spacing, y + dy * (i // 2 + 1) * spacing
        bounds = [max(bounds[0], x), max(bounds[1], -x), max(bounds[2], y), max(bounds[3], -y)]
        if min(bounds) >= radius:
            return i + 1
    raise PlanError(f"radius {radius} m needs more than {MAX_LEGS} legs at spacing {spacing} m")


def sector(datum: Coord, radius: float, *, first_course: float = 0.0,
           second: bool = False) -> Pattern:
    """VS about ``datum``: 9 legs of length R, 120-degree right turns; with
    ``second``, a second pattern rotated 30 degrees follows (18 legs)."""
    _check_positive(radius=radius)
    pts: list[XY] = [(0.0, 0.0)]
    for offset in (0.0, 30.0) if second else (0.0,):
        course = first_course + offset
        for _ in range(9):
            dx, dy = _heading(course)
            x, y = pts[-1]
            pts.append((x + dx * radius, y + dy * radius))
            at_datum = math.hypot(*pts[-1]) < radius * 1e-6
            course += 0.0 if at_datum else 120.0
            if at_datum:
                pts[-1] = (0.0, 0.0)
    return _pattern("sector", LocalProjection(datum), pts, radius)


def _ring_xy(area: Sequence[Coord]) -> tuple[LocalProjection, list[XY]]:
    if len(area) < 3:
        raise PlanError("a search area needs at least three vertices")
    proj = LocalProjection(centroid(area))
    ring = list(area)
    if ring[0] == ring[-1]:
        ring = ring[:-1]
    return proj, [proj.to_xy(c) for c in ring]


def major_axis(ring: Sequence[XY]) -> float:
    """Bearing (degrees, 0..180) of the long side of the minimum-area
    bounding rectangle; a hull edge always bounds that rectangle."""
    best: tuple[float, float] = (math.inf, 0.0)
    for a, b in zip(ring, [*ring[1:], ring[0]], strict=True):
        if a == b:
            continue
        ang = math.atan2(b[0] - a[0], b[1] - a[1])
        u, v = _heading(math.degrees(ang)), _heading(math.degrees(ang) + 90)
        along = [p[0] * u[0] + p[1] * u[1] for p in ring]
        across = [p[0] * v[0] + p[1] * v[1] for p in ring]
        la, lc = max(along) - min(along), max(across) - min(across)
        bearing = math.degrees(ang) if la >= lc else math.degrees(ang) + 90
        if la * lc < best[0]:
            best = (la * lc, bearing % 180.0)
    return best[1]


def _crossings(ring: Sequence[XY], u: XY, v: XY, offset: float) -> list[float]:
    """Along-track (u) positions where the line {p . v = offset} meets the ring."""
    out = []
    for a, b in zip(ring, [*ring[1:], ring[0]], strict=True):
        da, db = a[0] * v[0] + a[1] * v[1] - offset, b[0] * v[0] + b[1] * v[1] - offset
        if (da < 0) != (db < 0):
            t = da / (da - db)
            p = (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))
            out.append(p[0] * u[0] + p[1] * u[1])
    return out


def _ladder(kind: PatternKind, area: Sequence[Coord], spacing: float,
            leg_bearing: float | None, across: bool) -> Pattern:
    """Back-and-forth legs on ``leg_bearing``, S apart, S/2 inside the edges."""
    _check_positive(spacing=spacing)
    proj, ring = _ring_xy(area)
    bearing = major_axis(ring) if leg_bearing is None else leg_bearing
    bearing += 90.0 if across and leg_bearing is None else 0.0
    u, v = _heading(bearing), _heading(bearing + 90.0)
    lo = min(p[0] * v[0] + p[1] * v[1] for p in ring)
    hi = max(p[0] * v[0] + p[1] * v[1] for p in ring)
    if (hi - lo) / spacing > MAX_LEGS:
        raise PlanError(f"{kind}: more than {MAX_LEGS} legs; check the spacing's unit")
    offsets = [lo + spacing / 2 + i * spacing
               for i in range(int((hi - lo) / spacing + 1e-9))] or [(lo + hi) / 2]
    pts: list[XY] = []
    forward = True
    for offset in offsets:
        xs = _crossings(ring, u, v, offset)
        if len(xs) < 2:
            continue
        a, b = min(xs) + spacing / 2, max(xs) - spacing / 2
        if a > b:                              # shorter than S: one point mid-way
            a = b = (min(xs) + max(xs)) / 2
        ends = [(a, offset), (b, offset)] if forward else [(b, offset), (a, offset)]
        pts += [(s * u[0] + o * v[0], s * u[1] + o * v[1]) for s, o in ends]
        forward = not forward
    return _pattern(kind, proj, pts, spacing)


def parallel_track(area: Sequence[Coord], spacing: float,
                   leg_bearing: float | None = None) -> Pattern:
    """PS over the outer ring ``area``: legs along the major axis (or
    ``leg_bearing`` degrees true), S apart."""
    return _ladder("parallel_track", area, spacing, leg_bearing, across=False)


def creeping_line(area: Sequence[Coord], spacing: float,
                  leg_bearing: float | None = None) -> Pattern:
    """CS over ``area``: legs across the major axis, advancing along it."""
    return _ladder("creeping_line", area, spacing, leg_bearing, across=True)


# --- POA / POD bookkeeping -------------------------------------------------

def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise PlanError(f"{name} must be a probability in [0, 1], got {p!r}")


def coverage(sweep_width: float, track_length: float, area: float) -> float:
    """C = W L / A (all metres / square metres)."""
    _check_positive(area=area)
    return sweep_width * track_length / area


def pod(coverage_factor: float) -> float:
    """POD = 1 - exp(-C): the exponential (random search) detection function."""
    return 1.0 - math.exp(-coverage_factor)


def cumulative_pod(pods: Sequence[float]) -> float:
    """1 - prod(1 - POD_i) over independent searches of one segment."""
    miss = 1.0
    for i, p in enumerate(pods):
        _check_probability(f"POD[{i}]", p)
        miss *= 1.0 - p
    return 1.0 - miss


def bridge_pod(current: float, goal: float) -> float:
    """The POD the next search needs to lift ``current`` to ``goal``."""
    _check_probability("current POD", current)
    _check_probability("goal POD", goal)
    if current >= goal:
        return 0.0
    return 1.0 - (1.0 - goal) / (1.0 - current)


def pos(poa: float, pod_value: float) -> float:
    """Probability of success POS = POA x POD."""
    _check_probability("POA", poa)
    _check_probability("POD", pod_value)
    return poa * pod_value


def renormalise_poa(poa: Mapping[str, float], pods: Mapping[str, float]) -> dict[str, float]:
    """POA per segment after unsuccessful searches with ``pods`` (segments not
    searched have POD 0): POA_i' = POA_i (1 - POD_i) / (1 - sum POS).

    Include a rest-of-world segment in ``poa`` so that the POAs sum to 1."""
    total = sum(poa.values())
    if abs(total - 1.0) > 1e-6:
        raise PlanError(f"POAs must sum to 1 (include rest of world), got {total:.6f}")
    for seg in pods:
        if seg not in poa:
            raise PlanError(f"POD given for unknown segment {seg!r}")
    found = sum(pos(poa[s], pods.get(s, 0.0)) for s in poa)
    if found >= 1.0:
        raise PlanError("the searches cover all probability: nothing left to renormalise")
    return {s: p * (1.0 - pods.get(s, 0.0)) / (1.0 - found) for s, p in poa.items()}

"""IAMSAR pattern geometry and POA/POD arithmetic."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldc2.errors import PlanError
from fieldc2.plan.geo import LocalProjection, centroid, distance_m, polygon_area_m2
from fieldc2.plan.search import (
    bridge_pod,
    coverage,
    creeping_line,
    cumulative_pod,
    expanding_square,
    legs_to_cover,
    parallel_track,
    pod,
    pos,
    renormalise_poa,
    sector,
)

DATUM = (7.91, 46.79)


def xy_path(waypoints: tuple[tuple[float, float], ...], origin: tuple[float, float]
            ) -> list[tuple[float, float]]:
    proj = LocalProjection(origin)
    return [proj.to_xy(c) for c in waypoints]


def legs(xy: list[tuple[float, float]]) -> list[float]:
    return [math.dist(a, b) for a, b in itertools.pairwise(xy)]


def bearing(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.degrees(math.atan2(b[0] - a[0], b[1] - a[1])) % 360


def test_expanding_square_legs_grow_s_s_2s_2s() -> None:
    p = expanding_square(DATUM, 100.0, 9, first_course=270.0)
    xy = xy_path(p.waypoints, DATUM)
    assert legs(xy) == pytest.approx([100, 100, 200, 200, 300, 300, 400, 400, 500], abs=0.01)
    courses = [bearing(a, b) for a, b in itertools.pairwise(xy)]
    assert courses[:5] == pytest.approx([270, 0, 90, 180, 270], abs=0.01)
    assert p.legs == 9 and p.length_m == pytest.approx(2500)
    assert p.waypoints[0] == pytest.approx(DATUM)
    left = expanding_square(DATUM, 100.0, 3, turn_right=False)
    turns = [bearing(a, b) for a, b in zip(xy_path(left.waypoints, DATUM), xy_path(
        left.waypoints, DATUM)[1:], strict=False)]
    assert turns == pytest.approx([0, 270, 180], abs=0.01)


def test_legs_to_cover_reaches_the_radius() -> None:
    n = legs_to_cover(450.0, 100.0)
    xy = xy_path(expanding_square(DATUM, 100.0, n).waypoints, DATUM)
    reach = min(max(x for x, _ in xy), -min(x for x, _ in xy),
                max(y for _, y in xy), -min(y for _, y in xy))
    assert reach >= 450.0 - 0.01
    xy_short = xy_path(expanding_square(DATUM, 100.0, n - 1).waypoints, DATUM)
    assert min(max(x for x, _ in xy_short), -min(x for x, _ in xy_short),
               max(y for _, y in xy_short), -min(y for _, y in xy_short)) < 450.0


def test_sector_is_three_triangles_back_at_datum() -> None:
    p = sector(DATUM, 500.0, first_course=45.0)
    xy = xy_path(p.waypoints, DATUM)
    assert p.legs == 9 and legs(xy) == pytest.approx([500.0] * 9, abs=0.01)
    for i in (3, 6, 9):
        assert math.hypot(*xy[i]) < 0.01
    assert bearing(xy[0], xy[1]) == pytest.approx(45.0, abs=0.01)
    assert bearing(xy[1], xy[2]) == pytest.approx(165.0, abs=0.01)   # 120 degrees right
    two = sector(DATUM, 500.0, second=True)
    xy2 = xy_path(two.waypoints, DATUM)
    assert two.legs == 18 and bearing(xy2[9], xy2[10]) == pytest.approx(30.0, abs=0.01)


def rectangle(width: float, height: float, rotation: float) -> tuple[tuple[float, float], ...]:
    proj = LocalProjection(DATUM)
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    corners = [(-width / 2, -height / 2), (width / 2, -height / 2), (width / 2, height / 2),
               (-width / 2, height / 2)]
    ring = [proj.to_lonlat((x * c - y * s, x * s + y * c)) for x, y in corners]
    return (*ring, ring[0])


def inside(p: tuple[float, float], ring: list[tuple[float, float]], tol: float) -> bool:
    """Convex ring, counter-clockwise or not: within ``tol`` metres of all edges."""
    signs = []
    for a, b in zip(ring, [*ring[1:], ring[0]], strict=True):
        edge = math.dist(a, b)
        cross = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
        signs.append(cross / edge)
    return all(s >= -tol for s in signs) or all(s <= tol for s in signs)


@settings(max_examples=25, deadline=None)
@given(width=st.floats(300, 3000), height=st.floats(300, 3000),
       rotation=st.floats(0, 180), spacing=st.floats(30, 150),
       creeping=st.booleans())
def test_ladders_stay_inside_with_exact_spacing(width: float, height: float,
                                                rotation: float, spacing: float,
                                                creeping: bool) -> None:
    area = rectangle(width, height, rotation)
    make = creeping_line if creeping else parallel_track
    p = make(area, spacing)
    origin = centroid(area)
    ring = xy_path(area[:-1], origin)
    xy = xy_path(p.waypoints, origin)
    assert all(inside(q, ring, tol=0.05) for q in xy)
    search_legs = [(xy[i], xy[i + 1]) for i in range(0, len(xy) - 1, 2)]
    cross_legs = [(xy[i], xy[i + 1]) for i in range(1, len(xy) - 1, 2)]
    assert all(math.dist(a, b) == pytest.approx(spacing, rel=1e-3) for a, b in cross_legs)
    long_side, short_side = max(width, height), min(width, height)
    along, across = (short_side, long_side) if creeping else (long_side, short_side)
    for a, b in search_legs:
        assert math.dist(a, b) == pytest.approx(along - spacing, rel=2e-3, abs=0.5)
    assert len(search_legs) == max(1, int(across / spacing + 1e-9))
    assert p.legs == len(xy) - 1
    assert p.length_m == pytest.approx(sum(legs(xy)), rel=1e-6)


def test_parallel_track_first_leg_half_spacing_inside() -> None:
    area = rectangle(2000, 1000, 0)                 # long side east-west
    p = parallel_track(area, 100)
    xy = xy_path(p.waypoints, centroid(area))
    assert xy[0][1] == pytest.approx(-450, abs=0.5) or xy[0][1] == pytest.approx(450, abs=0.5)
    assert bearing(xy[0], xy[1]) % 180 == pytest.approx(90, abs=0.01)
    assert p.legs == 19 and p.length_m == pytest.approx(10 * 1900 + 9 * 100, rel=1e-3)
    c = creeping_line(area, 100)
    cxy = xy_path(c.waypoints, centroid(area))
    assert abs(math.sin(math.radians(bearing(cxy[0], cxy[1])))) < 1e-4   # north-south
    assert c.duration_s(2.0) == pytest.approx(c.length_m / 2.0)


def test_coverage_gives_the_expected_pod_in_the_area() -> None:
    area = rectangle(2000, 1000, 0)
    p = parallel_track(area, 50)
    a = polygon_area_m2([area])
    assert a == pytest.approx(2_000_000, rel=1e-3)
    c = coverage(50, p.length_m, a)
    assert c == pytest.approx(1.0, abs=0.05)          # S = W gives C about 1
    assert pod(c) == pytest.approx(1 - math.exp(-c))


def test_pod_arithmetic_by_hand() -> None:
    assert coverage(20, 5000, 1_000_000) == pytest.approx(0.1)
    assert pod(1.0) == pytest.approx(0.6321205588)
    assert pod(0.0) == 0.0
    assert cumulative_pod([0.5, 0.5]) == pytest.approx(0.75)
    assert cumulative_pod([0.3, 0.4, 0.5]) == pytest.approx(1 - 0.7 * 0.6 * 0.5)
    assert cumulative_pod([]) == 0.0
    assert bridge_pod(0.5, 0.75) == pytest.approx(0.5)
    assert bridge_pod(0.8, 0.75) == 0.0
    assert cumulative_pod([0.5, bridge_pod(0.5, 0.9)]) == pytest.approx(0.9)
    assert pos(0.3, 0.5) == pytest.approx(0.15)


def test_poa_renormalised_after_an_unsuccessful_search() -> None:
    poa = {"A": 0.5, "B": 0.3, "ROW": 0.2}
    after = renormalise_poa(poa, {"A": 0.6})
    assert after["A"] == pytest.approx(0.2 / 0.7)
    assert after["B"] == pytest.approx(0.3 / 0.7)
    assert after["ROW"] == pytest.approx(0.2 / 0.7)
    assert sum(after.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("call", [
    lambda: renormalise_poa({"A": 0.5}, {}),
    lambda: renormalise_poa({"A": 1.0}, {"B": 0.5}),
    lambda: renormalise_poa({"A": 1.0}, {"A": 1.0}),
    lambda: cumulative_pod([1.5]),
    lambda: bridge_pod(-0.1, 0.5),
    lambda: pos(0.5, 2.0),
    lambda: expanding_square(DATUM, -5, 4),
    lambda: expanding_square(DATUM, 100, 0),
    lambda: parallel_track(rectangle(1000, 1000, 0), 0.01),
    lambda: parallel_track(((7.9, 46.7), (7.91, 46.7)), 50),
    lambda: coverage(10, 10, 0),
])
def test_bad_inputs_are_plan_errors(call: object) -> None:
    with pytest.raises(PlanError):
        call()  # type: ignore[operator]


def test_local_projection_round_trip_and_distance() -> None:
    proj = LocalProjection(DATUM)
    far = (7.99, 46.84)
    x, y = proj.to_xy(far)
    assert proj.to_lonlat((x, y)) == pytest.approx(far, abs=1e-9)
    assert math.hypot(x, y) == pytest.approx(distance_m(DATUM, far), rel=5e-3)

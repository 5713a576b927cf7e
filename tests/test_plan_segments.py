"""Search tracks for the tasks, and the POA/POD books per segment."""

from __future__ import annotations

import math

import msgspec
import pytest

from fieldc2.errors import PlanError
from fieldc2.plan.geo import LocalProjection
from fieldc2.plan.model import (
    Incident,
    OperationalPeriod,
    Point,
    Polygon,
    Task,
    Team,
    geometry_size,
)
from fieldc2.plan.segments import REST_OF_WORLD, segment_books, task_pattern, tracks_for

T0 = 1_800_000_000


def square(lon: float, lat: float, size: float = 0.01) -> Polygon:
    ring = ((lon, lat), (lon + size, lat), (lon + size, lat + size * 0.5),
            (lon, lat + size * 0.5), (lon, lat))
    return Polygon(coordinates=(ring,))


def area(tid: str, lon: float, **kw: object) -> Task:
    return Task(id=tid, kind="search_area", geometry=square(lon, 45.0), **kw)  # type: ignore[arg-type]


def make(*tasks: Task) -> Incident:
    team = Team(id="a", position=(7.0, 45.0), shift_start=T0, shift_end=T0 + 3600)
    return Incident(name="x", period=OperationalPeriod(id="1", start=T0, end=T0 + 3600),
                    tasks=tasks, teams=(team,))


def test_area_tracks_are_spaced_one_sweep_width_and_fit_the_work_time() -> None:
    task = area("A", 7.0, sweep_width=40.0)
    pattern = task_pattern(task)
    assert pattern is not None and pattern.kind == "parallel_track"
    assert pattern.spacing_m == 40.0
    # The planner's work time assumes a track of area / sweep width.
    assert pattern.length_m == pytest.approx(geometry_size(task.geometry) / 40.0, rel=0.1)
    proj = LocalProjection((7.005, 45.0025))
    xy = [proj.to_xy(c) for c in pattern.waypoints]
    assert isinstance(task.geometry, Polygon)
    corners = [proj.to_xy(c) for c in task.geometry.coordinates[0]]
    for x, y in xy:                                           # every waypoint inside the area
        assert min(c[0] for c in corners) < x < max(c[0] for c in corners)
        assert min(c[1] for c in corners) < y < max(c[1] for c in corners)
    creeping = task_pattern(msgspec.structs.replace(task, pattern="creeping_line"))
    assert creeping is not None and creeping.kind == "creeping_line"
    assert creeping.legs > pattern.legs          # legs across the long axis: more, shorter


def test_tracks_for_active_search_areas_only() -> None:
    inc = make(area("A", 7.0), area("B", 7.1, status="done"),
               area("C", 7.2, sweep_width=0.01),              # refused: far too many legs
               Task(id="P", kind="point", geometry=Point(coordinates=(7.3, 45.0))))
    tracks = tracks_for(inc)
    assert list(tracks) == ["A"]
    assert tracks["A"][0] != tracks["A"][-1] and len(tracks["A"]) >= 4


def test_books_count_searches_and_renormalise_poa() -> None:
    inc = make(area("S1", 7.0, poa=0.4, status="done"), area("S2", 7.1, poa=0.3),
               area("S1b", 7.0, segment="S1", status="done"), area("S3", 7.2))
    books, rest = segment_books(inc)
    by = {b.segment: b for b in books}
    assert set(by) == {"S1", "S2", "S3"} and by["S1"].task_ids == ("S1", "S1b")
    one = by["S1"].searches[0]
    assert one.coverage == pytest.approx(1.0, rel=0.1)       # W L / A with L ~ A / W
    assert one.pod == pytest.approx(1 - math.exp(-one.coverage))
    miss = (1 - by["S1"].searches[0].pod) * (1 - by["S1"].searches[1].pod)
    assert by["S1"].cumulative_pod == pytest.approx(1 - miss)
    found = 0.4 * (1 - miss)
    assert by["S1"].pos == pytest.approx(found)
    assert by["S1"].poa_now == pytest.approx(0.4 * miss / (1 - found))
    assert by["S2"].poa_now == pytest.approx(0.3 / (1 - found))
    assert rest == pytest.approx(0.3 / (1 - found))
    assert by["S3"].poa is None and by["S3"].poa_now is None
    assert by["S1"].poa_now + by["S2"].poa_now + rest == pytest.approx(1.0)  # type: ignore[operator]
    # A search reported (not yet re-planned) counts too.
    later, _ = segment_books(inc, done={"S2"})
    assert next(b for b in later if b.segment == "S2").cumulative_pod > 0.5


def test_books_refuse_impossible_poas() -> None:
    with pytest.raises(PlanError, match=r"sum to 1\.100"):
        segment_books(make(area("S1", 7.0, poa=0.6), area("S2", 7.1, poa=0.5)))
    with pytest.raises(PlanError, match=REST_OF_WORLD):
        segment_books(make(area("S1", 7.0, poa=0.6, segment=REST_OF_WORLD)))
    assert segment_books(make()) == ([], None)

"""Travel times: straight line and over a small OSM road/trail extract."""

from __future__ import annotations

import math
from pathlib import Path

import osmium
import pytest

from fieldc2.errors import PlanError
from fieldc2.plan.geo import distance_m, line_length_m, polygon_area_m2
from fieldc2.plan.model import Incident, OperationalPeriod, Point, Task, Team
from fieldc2.plan.solver import solve, validate
from fieldc2.plan.travel import HIGHWAY_SPEED_CAP_MPS, RoadGraph, StraightLine

T0 = 1_781_416_800

# A square of ways: 1-2-3 is a track, 3-4 a footpath, 5-6 a road nowhere
# near (unconnected), 1-4 a building outline (not a highway: ignored).
OSM = """<?xml version="1.0" encoding="UTF-8"?>
<osm version="0.6" generator="fieldc2 tests">
  <node id="1" lat="47.0000" lon="8.0000"/>
  <node id="2" lat="47.0000" lon="8.0100"/>
  <node id="3" lat="47.0100" lon="8.0100"/>
  <node id="4" lat="47.0100" lon="8.0000"/>
  <node id="5" lat="47.0500" lon="8.0500"/>
  <node id="6" lat="47.0500" lon="8.0600"/>
  <way id="10"><nd ref="1"/><nd ref="2"/><nd ref="3"/><tag k="highway" v="track"/></way>
  <way id="11"><nd ref="3"/><nd ref="4"/><tag k="highway" v="path"/></way>
  <way id="12"><nd ref="5"/><nd ref="6"/><tag k="highway" v="secondary"/></way>
  <way id="13"><nd ref="1"/><nd ref="4"/><tag k="building" v="yes"/></way>
</osm>
"""

N1, N2, N3, N4 = (8.0, 47.0), (8.01, 47.0), (8.01, 47.01), (8.0, 47.01)


def hav(a: tuple[float, float], b: tuple[float, float]) -> float:
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


@pytest.fixture
def graph(tmp_path: Path) -> RoadGraph:
    path = tmp_path / "area.osm"
    path.write_text(OSM)
    return RoadGraph.from_osm(path)


def test_only_highways_become_edges(graph: RoadGraph) -> None:
    assert graph.graph.number_of_nodes() == 6
    assert graph.graph.number_of_edges() == 4                 # 1-2, 2-3, 3-4, 5-6
    assert not graph.graph.has_edge(1, 4)


def test_path_lengths_and_times_follow_the_ways(graph: RoadGraph) -> None:
    track = hav(N1, N2) + hav(N2, N3)
    path = hav(N3, N4)
    d = graph.distance_matrix([N1], [N4, N3])
    assert d[0, 0] == pytest.approx(track + path, rel=1e-9)   # around, not the 1-4 shortcut
    assert d[0, 1] == pytest.approx(track, rel=1e-9)
    car = graph.duration_matrix([N1], [N4], 15.0)[0, 0]
    expect = track / HIGHWAY_SPEED_CAP_MPS["track"] + path / HIGHWAY_SPEED_CAP_MPS["path"]
    assert car == math.ceil(expect)
    walker = graph.duration_matrix([N1], [N4], 1.2)[0, 0]
    assert walker == math.ceil((track + path) / 1.2)


def test_off_graph_points_walk_to_the_nearest_node(graph: RoadGraph) -> None:
    near = (8.0, 46.999)                                      # 111 m south of node 1
    d = graph.distance_matrix([near], [N2])[0, 0]
    assert d == pytest.approx(hav(near, N1) + hav(N1, N2), rel=1e-9)


def test_unconnected_points_fall_back_to_the_straight_line(graph: RoadGraph) -> None:
    far = (8.05, 47.05)
    assert graph.distance_matrix([N1], [far])[0, 0] == pytest.approx(hav(N1, far), rel=1e-9)


def test_pbf_extract_reads_the_same(graph: RoadGraph, tmp_path: Path) -> None:
    src = tmp_path / "area.osm"
    src.write_text(OSM)
    pbf = tmp_path / "area.osm.pbf"
    writer = osmium.SimpleWriter(str(pbf))
    for obj in osmium.FileProcessor(str(src)):
        if isinstance(obj, osmium.osm.Node):
            writer.add_node(obj)
        elif isinstance(obj, osmium.osm.Way):
            writer.add_way(obj)
    writer.close()
    again = RoadGraph.from_osm(pbf)
    assert sorted(again.graph.edges) == sorted(graph.graph.edges)


def test_bad_extracts_are_plan_errors(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="not found"):
        RoadGraph.from_osm(tmp_path / "none.osm")
    empty = tmp_path / "empty.osm"
    empty.write_text(OSM.replace('k="highway"', 'k="natural"'))
    with pytest.raises(PlanError, match="no highway"):
        RoadGraph.from_osm(empty)
    junk = tmp_path / "junk.osm"
    junk.write_text("<osm><node id=")
    with pytest.raises(PlanError):
        RoadGraph.from_osm(junk)


def test_solver_plans_on_the_graph(graph: RoadGraph) -> None:
    inc = Incident(
        name="graph", period=OperationalPeriod(id="1", start=T0, end=T0 + 8 * 3600),
        teams=(Team(id="A", position=N1, speed=1.2, shift_start=T0, shift_end=T0 + 4 * 3600),),
        tasks=(Task(id="hut", kind="point", geometry=Point(coordinates=N4), duration=300),))
    plan = solve(inc, time_limit=0.1, travel=graph)
    visit = plan.assignments["hut"]
    on_graph = graph.duration_matrix([N1], [N4], 1.2)[0, 0]
    assert visit.arrival == T0 + on_graph
    assert validate(plan, inc, graph) == []
    assert validate(plan, inc, StraightLine()) == []          # the road is longer
    straight = solve(inc, time_limit=0.1)
    assert straight.assignments["hut"].arrival < visit.arrival


def test_geo_lengths_and_areas() -> None:
    assert distance_m(N1, N2) == pytest.approx(hav(N1, N2))
    assert line_length_m([N1, N2, N3]) == pytest.approx(hav(N1, N2) + hav(N2, N3), rel=5e-3)
    square = [N1, N2, N3, N4, N1]
    assert polygon_area_m2([square]) == pytest.approx(hav(N1, N2) * hav(N2, N3), rel=5e-3)
    with pytest.raises(PlanError):
        StraightLine(detour=0.5)

"""Travel distances and times between points, straight-line or over a road graph.

The solver asks a ``TravelModel`` for two matrices over the same points:
distances in metres (the objective) and durations in whole seconds for one
team speed (the timeline).  Durations are rounded *up* so that a timeline
built from them is never optimistic.

- ``StraightLine`` (the default) uses the great-circle distance, optionally
  stretched by a detour factor for terrain.
- ``RoadGraph`` reads an OSM extract (``.osm`` / ``.osm.pbf``, via osmium) into
  a networkx graph of highways.  A point is snapped to its nearest graph node,
  and the access leg to that node is walked cross-country at the team's speed.
  Each edge takes ``length / min(team speed, highway speed cap)``, so a fast
  vehicle is slowed on tracks and paths while a walker walks everywhere.
  Points whose nodes are not connected fall back to the straight line.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fieldc2.errors import PlanError
from fieldc2.plan.geo import Coord, distance_matrix_m

HIGHWAY_SPEED_CAP_MPS: dict[str, float] = {
    "motorway": 33.0, "trunk": 25.0, "primary": 22.0, "secondary": 20.0,
    "tertiary": 17.0, "unclassified": 14.0, "residential": 8.0, "service": 6.0,
    "living_street": 3.0, "track": 6.0, "path": 1.5, "footway": 1.5,
    "bridleway": 1.5, "cycleway": 5.0, "steps": 0.5, "pedestrian": 1.5,
}
"""Top speed on each OSM highway class (m/s): typical rural limits for roads,
a careful 4x4 on tracks, walking pace on paths.  Unknown classes use 5 m/s."""

_DEFAULT_CAP_MPS = 5.0

MAX_GRAPH_NODES = 2_000_000
"""Refuse larger extracts: Python Dijkstra over more nodes than this per team
speed would take minutes, longer than any re-planning budget."""


class TravelModel(Protocol):
    """What the solver needs from a travel model."""

    def distance_matrix(self, src: Sequence[Coord], dst: Sequence[Coord]) -> np.ndarray:
        """Metres from every ``src`` to every ``dst``."""
        ...

    def duration_matrix(self, src: Sequence[Coord], dst: Sequence[Coord],
                        speed: float) -> np.ndarray:
        """Whole seconds (rounded up, int64) for a team moving at ``speed`` m/s."""
        ...


def _seconds(metres_over_speed: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.ceil(metres_over_speed - 1e-9).astype(np.int64)
    return out


class StraightLine:
    """Great-circle distance times a detour factor (1.0 = as the crow flies)."""

    def __init__(self, detour: float = 1.0) -> None:
        if not (detour >= 1.0 and math.isfinite(detour)):
            raise PlanError(f"detour factor must be >= 1, got {detour}")
        self.detour = detour

    def distance_matrix(self, src: Sequence[Coord], dst: Sequence[Coord]) -> np.ndarray:
        """Metres from every ``src`` to every ``dst``."""
        out: np.ndarray = distance_matrix_m(src, dst) * self.detour
        return out

    def duration_matrix(self, src: Sequence[Coord], dst: Sequence[Coord],
                        speed: float) -> np.ndarray:
        """Whole seconds at ``speed`` m/s."""
        return _seconds(self.distance_matrix(src, dst) / speed)


class RoadGraph:
    """Shortest paths over an OSM highway graph (networkx), by travel time."""

    def __init__(self, graph: Any) -> None:
        """``graph``: an undirected networkx graph whose nodes carry ``lon``/``lat``
        and whose edges carry ``length`` (m) and ``highway`` (OSM class)."""
        if graph.number_of_nodes() == 0:
            raise PlanError("road graph has no nodes")
        self.graph = graph
        self._nodes = list(graph.nodes)
        self._coords = np.array([(graph.nodes[n]["lon"], graph.nodes[n]["lat"])
                                 for n in self._nodes], dtype=float)

    @classmethod
    def from_osm(cls, path: str | Path) -> RoadGraph:
        """Read the highways of an OSM extract (.osm XML or .osm.pbf)."""
        return cls(_read_osm(Path(path)))

    def snap(self, point: Coord) -> tuple[Any, float]:
        """The nearest graph node to ``point`` and the distance to it (m)."""
        d = distance_matrix_m([point], self._coords)[0]
        i = int(np.argmin(d))
        return self._nodes[i], float(d[i])

    def distance_matrix(self, src: Sequence[Coord], dst: Sequence[Coord]) -> np.ndarray:
        """Metres along the fastest path for a walker (edge weight = length)."""
        return self._matrix(src, dst, speed=None)

    def duration_matrix(self, src: Sequence[Coord], dst: Sequence[Coord],
                        speed: float) -> np.ndarray:
        """Whole seconds along the fastest path for a team at ``speed`` m/s."""
        return _seconds(self._matrix(src, dst, speed=speed))

    def _matrix(self, src: Sequence[Coord], dst: Sequence[Coord],
                speed: float | None) -> np.ndarray:
        """Metres (speed None) or seconds on the graph, access legs included."""
        import networkx as nx

        def weight(_u: Any, _v: Any, e: dict[str, Any]) -> float:
            if speed is None:
                return float(e["length"])
            cap = HIGHWAY_SPEED_CAP_MPS.get(e.get("highway", ""), _DEFAULT_CAP_MPS)
            return float(e["length"]) / min(speed, cap)

        per_m = 1.0 if speed is None else 1.0 / speed
        s_snap = [self.snap(p) for p in src]
        d_snap = [self.snap(p) for p in dst]
        direct = distance_matrix_m(src, dst) * per_m
        out = np.empty((len(src), len(dst)), dtype=float)
        cache: dict[Any, dict[Any, float]] = {}
        for i, (s_node, s_off) in enumerate(s_snap):
            if s_node not in cache:
                cache[s_node] = nx.single_source_dijkstra_path_length(
                    self.graph, s_node, weight=weight)
            reach = cache[s_node]
            for j, (d_node, d_off) in enumerate(d_snap):
                on_graph = reach.get(d_node)
                if on_graph is None:
                    out[i, j] = direct[i, j]
                else:
                    out[i, j] = s_off * per_m + on_graph + d_off * per_m
        return out


def _read_osm(path: Path) -> Any:
    """Highway ways of an OSM file as a networkx graph (edge length in metres)."""
    import networkx as nx
    import osmium

    if not path.is_file():
        raise PlanError(f"{path}: OSM file not found")
    graph = nx.Graph()
    try:
        fp = osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY)
        for way in fp.with_locations():
            if not isinstance(way, osmium.osm.Way):
                continue
            highway = way.tags.get("highway")
            if highway is None:
                continue
            pts = [(n.ref, n.lon, n.lat) for n in way.nodes if n.location.valid()]
            for (a, alon, alat), (b, blon, blat) in itertools.pairwise(pts):
                graph.add_node(a, lon=alon, lat=alat)
                graph.add_node(b, lon=blon, lat=blat)
                length = float(distance_matrix_m([(alon, alat)], [(blon, blat)])[0, 0])
                graph.add_edge(a, b, length=length, highway=highway)
            if graph.number_of_nodes() > MAX_GRAPH_NODES:
                raise PlanError(f"{path}: more than {MAX_GRAPH_NODES} road nodes; "
                                "cut a smaller extract around the incident")
    except (RuntimeError, ValueError) as exc:
        raise PlanError(f"{path}: cannot read OSM data: {exc}") from exc
    if graph.number_of_nodes() == 0:
        raise PlanError(f"{path}: no highway ways found")
    return graph

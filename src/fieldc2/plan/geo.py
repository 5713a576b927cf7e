"""Distances, lengths, areas and a local tangent-plane projection on WGS84.

Coordinates are ``(lon, lat)`` tuples in degrees, GeoJSON order, everywhere in
``fieldc2.plan``.

Accuracy, and why each method was chosen:

- ``distance_m`` is the haversine great-circle distance on a sphere of the
  mean Earth radius.  It is vectorisable (a 250 x 250 travel matrix takes a few
  milliseconds), and its error against the WGS84 geodesic is below 0.5 %,
  far below the uncertainty of a walking speed.
- ``LocalProjection`` is an azimuthal equidistant projection about an origin
  computed with geographiclib geodesics: distance and azimuth from the origin
  are exact on the ellipsoid; distances between two other points are distorted
  by about (d/R)^2 / 6, i.e. below 1e-6 within 10 km of the origin.  Search
  patterns (a few km across) are laid out in this plane.
- ``polygon_area_m2`` and ``line_length_m`` use geographiclib's exact
  ellipsoidal polygon area and geodesic lengths.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from geographiclib.geodesic import Geodesic

from fieldc2.errors import PlanError

Coord = tuple[float, float]
"""``(lon, lat)`` in degrees, GeoJSON order."""

EARTH_RADIUS_M = 6_371_008.8
"""Mean Earth radius (IUGG), the sphere used by the haversine distance."""

_WGS84 = Geodesic.WGS84


def check_coord(coord: Coord, where: str) -> None:
    """Raise PlanError unless ``coord`` is a finite (lon, lat) in range."""
    lon, lat = coord
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise PlanError(f"{where}: coordinate {coord!r} is not finite")
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise PlanError(f"{where}: coordinate {coord!r} is out of range (lon, lat order)")


def distance_m(a: Coord, b: Coord) -> float:
    """Great-circle distance in metres between two (lon, lat) points."""
    return float(distance_matrix_m([a], [b])[0, 0])


def distance_matrix_m(src: Sequence[Coord] | np.ndarray,
                      dst: Sequence[Coord] | np.ndarray) -> np.ndarray:
    """Haversine distances in metres, shape ``(len(src), len(dst))``."""
    a = np.radians(np.asarray(src, dtype=float).reshape(-1, 2))
    b = np.radians(np.asarray(dst, dtype=float).reshape(-1, 2))
    lon1, lat1 = a[:, 0:1], a[:, 1:2]
    lon2, lat2 = b[:, 0][None, :], b[:, 1][None, :]
    h = (np.sin((lat2 - lat1) / 2) ** 2
         + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2)
    result: np.ndarray = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    return result


def line_length_m(coords: Sequence[Coord]) -> float:
    """Length in metres of a polyline along WGS84 geodesics."""
    total = 0.0
    for (lon1, lat1), (lon2, lat2) in itertools.pairwise(coords):
        total += float(_WGS84.Inverse(lat1, lon1, lat2, lon2)["s12"])
    return total


def ring_area_m2(ring: Sequence[Coord]) -> float:
    """Unsigned area in m^2 of one closed or open ring on the WGS84 ellipsoid."""
    poly = _WGS84.Polygon()
    pts = list(ring)
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts = pts[:-1]
    for lon, lat in pts:
        poly.AddPoint(lat, lon)
    _, _, area = poly.Compute(False, True)
    return abs(float(area))


def polygon_area_m2(rings: Sequence[Sequence[Coord]]) -> float:
    """Area in m^2 of a GeoJSON polygon: the outer ring minus its holes."""
    if not rings:
        return 0.0
    outer = ring_area_m2(rings[0])
    return max(0.0, outer - sum(ring_area_m2(hole) for hole in rings[1:]))


def centroid(coords: Sequence[Coord]) -> Coord:
    """Mean of the vertices (closing vertex counted once); fine for small areas."""
    pts = list(coords)
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts = pts[:-1]
    if not pts:
        raise PlanError("centroid of an empty coordinate list")
    lon = sum(p[0] for p in pts) / len(pts)
    lat = sum(p[1] for p in pts) / len(pts)
    return (lon, lat)


class LocalProjection:
    """Metres east/north of an origin <-> (lon, lat); azimuthal equidistant.

    Exact (ellipsoidal) for the distance and bearing from the origin; see the
    module docstring for the distortion between other points."""

    def __init__(self, origin: Coord) -> None:
        check_coord(origin, "projection origin")
        self.origin = origin

    def to_xy(self, coord: Coord) -> tuple[float, float]:
        """(east, north) metres of ``coord`` from the origin."""
        lon0, lat0 = self.origin
        g = _WGS84.Inverse(lat0, lon0, coord[1], coord[0])
        s, azi = float(g["s12"]), math.radians(float(g["azi1"]))
        return (s * math.sin(azi), s * math.cos(azi))

    def to_lonlat(self, xy: tuple[float, float]) -> Coord:
        """(lon, lat) of the point ``xy`` metres (east, north) from the origin."""
        x, y = xy
        s = math.hypot(x, y)
        lon0, lat0 = self.origin
        if s == 0.0:
            return (lon0, lat0)
        azi = math.degrees(math.atan2(x, y))
        g = _WGS84.Direct(lat0, lon0, azi, s)
        return (float(g["lon2"]), float(g["lat2"]))

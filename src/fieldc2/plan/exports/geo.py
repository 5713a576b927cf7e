"""The plan on a map: GeoJSON for web maps and GIS, KML for Google Earth and
CalTopo, GPX for handheld GPS units (see :mod:`fieldc2.plan.exports.gpx`).

What each carries, and why:

- **Tasks** with their own geometry (point, line, area) and the planned team
  and times, so a map shows who goes where and when.
- **Routes** as one line per team from its start through each task's entry
  and exit point, in order: the walking order at a glance.  A team with no
  work has no route line, only its start point.
- **Search-pattern tracks**, when given (task id -> waypoints, e.g. from
  ``fieldc2.plan.search``), because the pattern is what a team actually walks
  inside an area.

GeoJSON follows RFC 7946: (lon, lat) WGS84 positions, polygon rings closed
and wound counterclockwise (holes clockwise), and simplestyle properties
(``stroke``, ``fill``, ``marker-color``) that geojson.io and GitHub render.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

import simplekml

from fieldc2.plan.exports.common import (
    UNASSIGNED_COLOUR,
    check_plan,
    iso,
    route_line,
    team_colours,
)
from fieldc2.plan.exports.gpx import to_gpx
from fieldc2.plan.geo import Coord
from fieldc2.plan.model import (
    Assignment,
    Geometry,
    Incident,
    LineString,
    Plan,
    Point,
    Polygon,
    Task,
)

Tracks = Mapping[str, Sequence[Coord]]
"""Search-pattern tracks: task id -> the waypoints the team walks."""

__all__ = ["Tracks", "geometry_json", "to_geojson", "to_gpx", "to_kml"]


def _signed_area(ring: Sequence[Coord]) -> float:
    """Shoelace sum in degrees²: positive when counterclockwise."""
    return sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in itertools.pairwise(ring))


def _ring(ring: Sequence[Coord], ccw: bool) -> list[list[float]]:
    """A closed ring in the winding RFC 7946 asks for."""
    pts = list(ring)
    if pts[0] != pts[-1]:
        pts.append(pts[0])
    if (_signed_area(pts) > 0) != ccw:
        pts.reverse()
    return [[lon, lat] for lon, lat in pts]


def geometry_json(geometry: Geometry) -> dict[str, Any]:
    """An RFC 7946 geometry object for a model geometry."""
    match geometry:
        case Point(coordinates=(lon, lat)):
            return {"type": "Point", "coordinates": [lon, lat]}
        case LineString(coordinates=cs):
            return {"type": "LineString", "coordinates": [[lon, lat] for lon, lat in cs]}
        case Polygon(coordinates=rings):
            return {"type": "Polygon",
                    "coordinates": [_ring(r, ccw=(i == 0)) for i, r in enumerate(rings)]}


def _feature(fid: str, geometry: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "id": fid, "geometry": geometry, "properties": props}


def _line(coords: Sequence[Coord]) -> dict[str, Any]:
    return {"type": "LineString", "coordinates": [[lon, lat] for lon, lat in coords]}


def _task_props(task: Task, incident: Incident, assigned: dict[str, Assignment],
                reasons: dict[str, str], colours: dict[str, str]) -> dict[str, Any]:
    a = assigned.get(task.id)
    reason = reasons.get(task.id)
    colour = colours[a.team_id] if a else UNASSIGNED_COLOUR
    props: dict[str, Any] = {
        "layer": "task", "task_id": task.id, "name": task.name, "task_kind": task.kind,
        "priority": task.priority, "capabilities": sorted(task.capabilities),
        "division": task.division, "status": task.status, "instructions": task.instructions,
        "team_id": a.team_id if a else None,
        "team": incident.team(a.team_id).callsign if a else None,
        "arrival": iso(a.arrival) if a else None, "start": iso(a.start) if a else None,
        "end": iso(a.end) if a else None, "unassigned_reason": reason,
        "stroke": colour, "stroke-width": 2, "fill": colour, "fill-opacity": 0.25,
        "marker-color": colour,
    }
    return props


def to_geojson(incident: Incident, plan: Plan, *,
               tracks: Tracks | None = None) -> dict[str, Any]:
    """The plan as an RFC 7946 FeatureCollection (a JSON-ready dict)."""
    check_plan(incident, plan)
    colours = team_colours(incident)
    assigned = plan.assignments
    reasons: dict[str, str] = {u.task_id: u.reason for u in plan.unassigned}
    features = [_feature(f"task/{t.id}", geometry_json(t.geometry),
                         _task_props(t, incident, assigned, reasons, colours))
                for t in incident.tasks if t.id in assigned or t.id in reasons]
    for team in incident.teams:
        start = geometry_json(Point(coordinates=team.position))
        features.append(_feature(f"team/{team.id}", start, {
            "layer": "team", "team_id": team.id, "callsign": team.callsign,
            "members": list(team.members), "shift_start": iso(team.shift_start),
            "shift_end": iso(team.shift_end), "marker-color": colours[team.id]}))
    for route in plan.routes:
        line = route_line(incident, route)
        if len(line) >= 2:
            features.append(_feature(f"route/{route.team_id}", _line(line), {
                "layer": "route", "team_id": route.team_id,
                "callsign": incident.team(route.team_id).callsign,
                "task_ids": list(route.task_ids), "depart": iso(route.depart),
                "end": iso(route.end), "distance_m": route.distance_m,
                "stroke": colours[route.team_id], "stroke-width": 3}))
    assigned = plan.assignments
    for task_id, coords in (tracks or {}).items():
        if len(coords) >= 2:
            team_id = assigned[task_id].team_id if task_id in assigned else None
            features.append(_feature(f"track/{task_id}", _line(coords), {
                "layer": "track", "task_id": task_id, "team_id": team_id,
                "stroke": colours[team_id] if team_id else UNASSIGNED_COLOUR,
                "stroke-width": 1}))
    return {"type": "FeatureCollection", "name": incident.name, "features": features}


def _kml_colour(hex_rgb: str, alpha: int = 0xFF) -> str:
    """``#rrggbb`` -> KML ``aabbggrr``."""
    r, g, b = hex_rgb[1:3], hex_rgb[3:5], hex_rgb[5:7]
    return f"{alpha:02x}{b}{g}{r}".lower()


def _kml_style(hex_rgb: str) -> simplekml.Style:
    style = simplekml.Style()
    style.linestyle.color = _kml_colour(hex_rgb)
    style.linestyle.width = 3
    style.polystyle.color = _kml_colour(hex_rgb, 0x50)
    style.iconstyle.color = _kml_colour(hex_rgb)
    return style


def to_kml(incident: Incident, plan: Plan, *, tracks: Tracks | None = None) -> bytes:
    """The plan as KML 2.2 (UTF-8): folders of tasks, routes, teams and
    tracks, styled per team (grey for unassigned tasks), with time spans so
    Google Earth's time slider replays the plan."""
    check_plan(incident, plan)
    kml = simplekml.Kml(name=escape(incident.name))
    kml.parsetext(parse=False)  # we escape ourselves: simplekml does not, reliably
    colours = team_colours(incident)
    styles = {team_id: _kml_style(c) for team_id, c in colours.items()}
    grey = _kml_style(UNASSIGNED_COLOUR)
    assigned = plan.assignments
    left_out = {u.task_id for u in plan.unassigned}
    folder = kml.newfolder(name="Tasks")
    for task in incident.tasks:
        a = assigned.get(task.id)
        if a is None and task.id not in left_out:
            continue
        mark = _kml_geometry(folder, task)
        mark.style = styles[a.team_id] if a else grey
        who = incident.team(a.team_id).callsign if a else "UNASSIGNED"
        mark.description = escape(f"{task.name} ({task.kind}, priority {task.priority}) - {who}"
                                  + (f"\n{task.instructions}" if task.instructions else ""))
        if a:
            mark.timespan.begin, mark.timespan.end = iso(a.start), iso(a.end)
    _kml_teams(kml, incident, plan, styles, tracks or {})
    return str(kml.kml()).encode("utf-8")


def _kml_geometry(folder: simplekml.Folder, task: Task) -> Any:
    name = escape(task.id)
    match task.geometry:
        case Point(coordinates=c):
            return folder.newpoint(name=name, coords=[c])
        case LineString(coordinates=cs):
            return folder.newlinestring(name=name, coords=list(cs))
        case Polygon(coordinates=rings):
            return folder.newpolygon(name=name, outerboundaryis=list(rings[0]),
                                     innerboundaryis=[list(r) for r in rings[1:]])


def _kml_teams(kml: simplekml.Kml, incident: Incident, plan: Plan,
               styles: dict[str, simplekml.Style], tracks: Tracks) -> None:
    routes = kml.newfolder(name="Routes")
    for route in plan.routes:
        line = route_line(incident, route)
        if len(line) >= 2:
            callsign = incident.team(route.team_id).callsign
            ls = routes.newlinestring(name=escape(callsign), coords=line,
                                      description=escape(" > ".join(route.task_ids)))
            ls.style = styles[route.team_id]
    teams = kml.newfolder(name="Teams")
    for team in incident.teams:
        pt = teams.newpoint(name=escape(team.callsign), coords=[team.position],
                            description=escape(", ".join(team.members)))
        pt.style = styles[team.id]
    if tracks:
        folder = kml.newfolder(name="Search tracks")
        assigned = plan.assignments
        for task_id, coords in tracks.items():
            if len(coords) >= 2:
                ls = folder.newlinestring(name=escape(f"{task_id} pattern"), coords=list(coords))
                if task_id in assigned:
                    ls.style = styles[assigned[task_id].team_id]

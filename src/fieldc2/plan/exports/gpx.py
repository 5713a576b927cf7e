"""GPX 1.1 for handheld GPS units: a route per team, a waypoint per task, and
a track per search pattern.

Written for the lowest common denominator of field units (older Garmin eTrex
and GPSMAP still in SAR caches): routes are split into parts of at most
``MAX_ROUTE_POINTS`` points, waypoint names are the short task ids (units
truncate long names), and everything else goes into ``<desc>``/``<cmt>``.
Export one team's file with ``team_id`` to load onto that team's units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import gpxpy.gpx

from fieldc2.errors import PlanError
from fieldc2.plan.exports.common import (
    check_plan,
    fmt_span,
    route_line,
    task_index,
)
from fieldc2.plan.geo import Coord
from fieldc2.plan.model import Incident, Plan, Route, entry_point, exit_point

MAX_ROUTE_POINTS = 250
"""Garmin handhelds (GPSMAP 6x/eTrex 2x and older) take at most 250 points per
route and drop or refuse the rest; longer routes are split into parts."""


def to_gpx(incident: Incident, plan: Plan, *, team_id: str | None = None,
           tracks: Mapping[str, Sequence[Coord]] | None = None) -> bytes:
    """GPX 1.1 (UTF-8) of the whole plan, or of one team's tasks and route."""
    check_plan(incident, plan)
    if team_id is not None and plan.route(team_id) is None:
        raise PlanError(f"plan has no route for team {team_id!r}")
    routes = [r for r in plan.routes if team_id is None or r.team_id == team_id]
    gpx = gpxpy.gpx.GPX()
    gpx.creator = "fieldc2"
    gpx.name = incident.name if team_id is None else (
        f"{incident.name} - {incident.team(team_id).callsign}")
    task_ids = [t for r in routes for t in r.task_ids]
    if team_id is None:
        task_ids += [u.task_id for u in plan.unassigned]
    _waypoints(gpx, incident, plan, task_ids)
    for route in routes:
        gpx.routes.extend(_routes(incident, route))
    wanted = set(task_ids)
    for task_id, coords in (tracks or {}).items():
        if task_id in wanted and len(coords) >= 2:
            gpx.tracks.append(_track(f"{task_id} pattern", coords))
    return gpx.to_xml(version="1.1").encode("utf-8")


def _waypoints(gpx: gpxpy.gpx.GPX, incident: Incident, plan: Plan,
               task_ids: Sequence[str]) -> None:
    """One waypoint per task, at the point where work starts."""
    tasks, assigned = task_index(incident), plan.assignments
    for task_id in task_ids:
        task = tasks[task_id]
        lon, lat = entry_point(task.geometry)
        a = assigned.get(task_id)
        when = (f"{incident.team(a.team_id).callsign} {fmt_span(a.start, a.end)}"
                if a else "UNASSIGNED")
        gpx.waypoints.append(gpxpy.gpx.GPXWaypoint(
            latitude=lat, longitude=lon, name=task.id, comment=task.name,
            description=f"{task.name} ({task.kind}, priority {task.priority}) {when}"
                        + (f". {task.instructions}" if task.instructions else ""),
            type=task.kind, symbol="Flag, Red" if a is None else "Flag, Blue"))


def _routes(incident: Incident, route: Route) -> list[gpxpy.gpx.GPXRoute]:
    """The team's route, in parts of at most MAX_ROUTE_POINTS points; parts
    share their joining point so the line stays continuous."""
    line = route_line(incident, route)
    if len(line) < 2:
        return []
    names = _point_names(incident, route, line)
    callsign = incident.team(route.team_id).callsign
    step = MAX_ROUTE_POINTS - 1
    starts = range(0, len(line) - 1, step)
    out: list[gpxpy.gpx.GPXRoute] = []
    for part, i in enumerate(starts, 1):
        name = callsign if len(starts) == 1 else f"{callsign} {part}/{len(starts)}"
        r = gpxpy.gpx.GPXRoute(name=name, description=" > ".join(route.task_ids))
        for (lon, lat), pname in zip(line[i:i + MAX_ROUTE_POINTS],
                                     names[i:i + MAX_ROUTE_POINTS], strict=True):
            r.points.append(gpxpy.gpx.GPXRoutePoint(latitude=lat, longitude=lon, name=pname))
        out.append(r)
    return out


def _point_names(incident: Incident, route: Route, line: list[Coord]) -> list[str]:
    """START, then the task id at its entry and ``id-END`` at a distinct exit
    (mirrors the de-duplication in ``route_line``)."""
    tasks = task_index(incident)
    names = ["START"]
    last = line[0]
    for v in route.visits:
        g = tasks[v.task_id].geometry
        for c, label in ((entry_point(g), v.task_id), (exit_point(g), f"{v.task_id}-END")):
            if c != last:
                names.append(label)
                last = c
    return names


def _track(name: str, coords: Sequence[Coord]) -> gpxpy.gpx.GPXTrack:
    track = gpxpy.gpx.GPXTrack(name=name)
    segment = gpxpy.gpx.GPXTrackSegment()
    segment.points.extend(gpxpy.gpx.GPXTrackPoint(latitude=lat, longitude=lon)
                          for lon, lat in coords)
    track.segments.append(segment)
    return track

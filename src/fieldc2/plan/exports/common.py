"""What every export shares: lookups that fail loudly, formats staff can read,
team colours, and the line a team walks.

Formats printed for people use UTC with a ``Z`` suffix (the convention of
radio logs and aviation) and decimal degrees with a hemisphere letter
(``46.55123 N, 7.98456 E``): five decimals are about a metre, and decimal
degrees are what every handheld GPS and phone app accepts without a datum
or grid question.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from fieldc2.errors import PlanError
from fieldc2.plan.geo import Coord, line_length_m, polygon_area_m2
from fieldc2.plan.model import (
    Incident,
    LineString,
    Plan,
    Polygon,
    Route,
    Task,
    Team,
    entry_point,
    exit_point,
)

Activity = Sequence[tuple[int, str]]
"""Time-stamped notable activities of one team: ``(epoch s, text)``."""

ActivitySource = Mapping[str, Activity] | Callable[[str], Activity]
"""Per-team activity: a mapping team id -> entries, or a function such as
``OrderBook.activity``."""

# Colour-blind-safe, print-safe team colours (Okabe-Ito, then Tableau 10); a
# team keeps its colour across the Gantt chart, KML and GeoJSON.
TEAM_COLOURS: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
    "#000000", "#4E79A7", "#F28E2B", "#59A14F", "#E15759", "#76B7B2", "#EDC948",
    "#B07AA1", "#FF9DA7", "#9C755F", "#BAB0AC",
)

KIND_COLOURS: dict[str, str] = {
    "search_area": "#4E79A7", "search_line": "#76B7B2", "point": "#59A14F",
    "rescue": "#E15759", "supply": "#F28E2B", "transport": "#B07AA1",
}

UNASSIGNED_COLOUR = "#808080"


def task_index(incident: Incident) -> dict[str, Task]:
    """Task id -> task."""
    return {t.id: t for t in incident.tasks}


def team_index(incident: Incident) -> dict[str, Team]:
    """Team id -> team."""
    return {t.id: t for t in incident.teams}


def team_colours(incident: Incident) -> dict[str, str]:
    """Team id -> ``#rrggbb``, by the team's order in the incident."""
    return {t.id: TEAM_COLOURS[i % len(TEAM_COLOURS)] for i, t in enumerate(incident.teams)}


def check_plan(incident: Incident, plan: Plan) -> None:
    """Raise PlanError when the plan names a task or team the incident lacks.

    Exports are often made from a stored plan and an edited incident; a
    mismatch must be a clear error, not a KeyError deep inside a PDF writer."""
    tasks, teams = task_index(incident), team_index(incident)
    for route in plan.routes:
        if route.team_id not in teams:
            raise PlanError(f"plan route for unknown team {route.team_id!r}")
        for v in route.visits:
            if v.task_id not in tasks:
                raise PlanError(f"plan visit to unknown task {v.task_id!r}")
    for u in plan.unassigned:
        if u.task_id not in tasks:
            raise PlanError(f"plan leaves out unknown task {u.task_id!r}")


def route_line(incident: Incident, route: Route) -> list[Coord]:
    """The team's start, then each task's entry and exit point, in order,
    without consecutive repeats."""
    team = incident.team(route.team_id)
    tasks = task_index(incident)
    line: list[Coord] = [team.position]
    for v in route.visits:
        geometry = tasks[v.task_id].geometry
        for c in (entry_point(geometry), exit_point(geometry)):
            if c != line[-1]:
                line.append(c)
    return line


def fmt_time(t: int) -> str:
    """``2026-11-22 14:05Z``."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%MZ")


def fmt_date(t: int) -> str:
    """``2026-11-22``."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def fmt_clock(t: int) -> str:
    """``14:05Z``."""
    return datetime.fromtimestamp(t, UTC).strftime("%H:%MZ")


def fmt_span(start: int, end: int) -> str:
    """``14:05-15:40Z`` within a day, full stamps when the span crosses one."""
    if fmt_date(start) == fmt_date(end):
        return f"{fmt_clock(start)[:-1]}-{fmt_clock(end)}"
    return f"{fmt_time(start)} - {fmt_time(end)}"


def iso(t: int) -> str:
    """RFC 3339 UTC, for machine-readable properties."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_coord(coord: Coord) -> str:
    """``46.55123 N, 7.98456 E``."""
    lon, lat = coord
    ns = "N" if lat >= 0 else "S"
    ew = "E" if lon >= 0 else "W"
    return f"{abs(lat):.5f} {ns}, {abs(lon):.5f} {ew}"


def describe_location(task: Task) -> str:
    """Where the task is, in words a team leader can act on."""
    g = task.geometry
    if isinstance(g, Polygon):
        km2 = polygon_area_m2(g.coordinates) / 1e6
        return f"area {km2:.2f} km², centre {fmt_coord(entry_point(g))}"
    if isinstance(g, LineString):
        km = line_length_m(g.coordinates) / 1000
        return (f"line {km:.2f} km from {fmt_coord(g.coordinates[0])} "
                f"to {fmt_coord(g.coordinates[-1])}")
    return fmt_coord(g.coordinates)


def activity_of(source: ActivitySource | None, team_id: str) -> list[tuple[int, str]]:
    """A team's activity entries, oldest first."""
    if source is None:
        return []
    entries = source.get(team_id, ()) if isinstance(source, Mapping) else source(team_id)
    return sorted(entries, key=lambda e: e[0])


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """A file-name-safe form of an id (ids come from incident files)."""
    return _UNSAFE.sub("_", text).strip("._") or "unnamed"

"""The planning vocabulary: tasks, teams, incidents, plans and changes.

Everything here is a frozen msgspec value so that plans can be compared,
hashed into caches, sent over the API and stored unchanged.

Conventions (the whole ``fieldc2.plan`` package follows them):

- **Coordinates** are ``(lon, lat)`` degree tuples, GeoJSON order; geometries
  are GeoJSON ``Point`` / ``LineString`` / ``Polygon`` objects and convert
  from GeoJSON dicts with ``msgspec.convert``.
- **Times** are integer seconds since the Unix epoch, UTC.  Integers because
  the solver works on integer seconds and because a planning resolution below
  one second means nothing for field teams.
- **Durations** are integer seconds; **distances** metres; **speeds** m/s.
- A task's time window ``[earliest, latest]`` bounds the *start of work* on it
  (the convention of VRPTW solvers): work may start no earlier than
  ``earliest`` and no later than ``latest``.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import msgspec

from fieldc2.plan.geo import Coord, centroid, line_length_m, polygon_area_m2

TaskKind = Literal["search_area", "search_line", "point", "rescue", "supply", "transport"]
TASK_KINDS: tuple[TaskKind, ...] = (
    "search_area", "search_line", "point", "rescue", "supply", "transport")

SearchPatternKind = Literal["parallel_track", "creeping_line"]

TaskStatus = Literal["planned", "in_progress", "done", "cancelled"]
TeamStatus = Literal["available", "delayed", "out"]

UnassignedReason = Literal[
    "capability",    # no (available) team has every required capability
    "time_window",   # no team can reach the task inside its window
    "shift",         # the work does not fit in any team's shift
    "capacity",      # the demand exceeds every capable team's capacity
    "precedence",    # a predecessor is not served before this task
    "team_out",      # every team that could do it is out
    "dropped",       # feasible on its own, but left out for better tasks
]

DEFAULT_SWEEP_WIDTH_M = 20.0
"""Effective sweep width for a ground search when a task gives none: a
mid-range value for a line of searchers in open woodland.  Set it per task."""

MAX_PRIORITY = 100
"""Largest accepted task priority; bounds the solver's prizes and penalties."""

DEFAULT_SPEED_MPS = 1.2
"""Walking pace of a loaded ground team on trails."""


class Point(msgspec.Struct, frozen=True, tag_field="type", tag="Point"):
    """A GeoJSON Point."""

    coordinates: Coord


class LineString(msgspec.Struct, frozen=True, tag_field="type", tag="LineString"):
    """A GeoJSON LineString: a route or track line to search along."""

    coordinates: tuple[Coord, ...]


class Polygon(msgspec.Struct, frozen=True, tag_field="type", tag="Polygon"):
    """A GeoJSON Polygon: outer ring first, then holes."""

    coordinates: tuple[tuple[Coord, ...], ...]


Geometry = Point | LineString | Polygon


def entry_point(geometry: Geometry) -> Coord:
    """Where a team starts work: the point, the first vertex of a line, or the
    centroid of an area (its pattern starts and ends near the middle)."""
    match geometry:
        case Point(coordinates=c):
            return c
        case LineString(coordinates=cs):
            return cs[0]
        case Polygon(coordinates=rings):
            return centroid(rings[0])


def exit_point(geometry: Geometry) -> Coord:
    """Where a team ends work: a line's last vertex, otherwise the entry point."""
    if isinstance(geometry, LineString):
        return geometry.coordinates[-1]
    return entry_point(geometry)


GEOMETRY_CACHE_SIZE = 4096
"""Geometries whose size is remembered: a few incidents' worth of segments.
The solver asks once per team and task; geodesic areas are slow to repeat."""


@functools.lru_cache(maxsize=GEOMETRY_CACHE_SIZE)
def geometry_size(geometry: Geometry) -> float:
    """Area in m^2 of a polygon, length in m of a line, 0 for a point."""
    if isinstance(geometry, Polygon):
        return polygon_area_m2(geometry.coordinates)
    if isinstance(geometry, LineString):
        return line_length_m(geometry.coordinates)
    return 0.0


class Task(msgspec.Struct, frozen=True, kw_only=True):
    """One piece of work for one team: a segment, a rescue, a delivery."""

    id: str
    kind: TaskKind
    geometry: Geometry
    name: str = ""
    duration: int | None = None
    """Work time in seconds.  When None it is derived per team: area /
    (sweep width x search speed) for areas, length / speed for lines, 0 else."""
    sweep_width: float = DEFAULT_SWEEP_WIDTH_M
    """Effective sweep width W (metres) for search tasks."""
    earliest: int | None = None
    """Earliest start of work, epoch seconds; None = start of the period."""
    latest: int | None = None
    """Latest start of work, epoch seconds; None = no limit within the period."""
    capabilities: frozenset[str] = frozenset()
    """Every one of these must be held by the team (boat, medic, k9, 4x4...)."""
    priority: int = 1
    """Larger is more important; >= 1."""
    precedence: tuple[str, ...] = ()
    """Ids of tasks that must be completed before this one starts."""
    demand: int = 0
    """Units a supply task delivers, counted against the team's capacity."""
    division: str = ""
    """ICS division or group the task belongs to (for ICS 204 sheets)."""
    instructions: str = ""
    status: TaskStatus = "planned"
    poa: float | None = None
    """Probability of area for a search segment, when tracked."""
    excluded_teams: frozenset[str] = frozenset()
    """Teams that reported they cannot do this task (``TaskFailed``): the
    planner offers it to the others only."""
    segment: str = ""
    """Search segment this task searches (POA/POD books); "" = its own id.
    Tasks sharing a segment are repeat searches of one area."""
    pattern: SearchPatternKind = "parallel_track"
    """Track laid out for a ``search_area``, spaced one sweep width apart."""

    def allows(self, team: Team) -> bool:
        """Whether ``team`` may do this task: every capability, not excluded."""
        return self.capabilities <= team.capabilities and team.id not in self.excluded_teams

    def work_seconds(self, team: Team) -> int:
        """How long ``team`` needs on this task (seconds, rounded up)."""
        if self.duration is not None:
            return self.duration
        speed = team.search_speed(self.kind)
        if isinstance(self.geometry, Polygon) and self.kind == "search_area":
            return math.ceil(geometry_size(self.geometry) / (self.sweep_width * speed))
        if isinstance(self.geometry, LineString):
            return math.ceil(geometry_size(self.geometry) / speed)
        return 0


class Team(msgspec.Struct, frozen=True, kw_only=True):
    """A team or vehicle that can be tasked as one unit."""

    id: str
    name: str = ""
    """Callsign used on the radio and in orders."""
    members: tuple[str, ...] = ()
    capabilities: frozenset[str] = frozenset()
    speed: float = DEFAULT_SPEED_MPS
    """Travel speed in m/s between tasks (on foot, or by road for vehicles)."""
    search_speeds: dict[str, float] = msgspec.field(default_factory=dict)
    """Optional work speed per task kind (m/s), e.g. {"search_area": 0.5}."""
    position: Coord
    """Where the team starts.  Solving through the server replaces it with the
    position its devices last reported (``fieldc2.plan.live``)."""
    shift_start: int
    shift_end: int
    capacity: int = 0
    """Supply units the team can carry in one route."""
    tak_uids: tuple[str, ...] = ()
    """CoT uids of the team's devices, for sending orders."""
    status: TeamStatus = "available"
    available_from: int | None = None
    """When a delayed team can start (epoch seconds); None = shift start."""

    @property
    def callsign(self) -> str:
        """The name on the radio: ``name``, or the id when unnamed."""
        return self.name or self.id

    def search_speed(self, kind: str) -> float:
        """Work speed for a task kind: the per-kind value, else travel speed."""
        return self.search_speeds.get(kind, self.speed)

    def start_time(self) -> int:
        """First moment the team can leave its position."""
        if self.available_from is None:
            return self.shift_start
        return max(self.shift_start, self.available_from)


class OperationalPeriod(msgspec.Struct, frozen=True, kw_only=True):
    """The span one plan covers (an ICS operational period)."""

    id: str
    start: int
    end: int


class Incident(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the planner needs: the period, the tasks, the teams."""

    name: str
    period: OperationalPeriod
    tasks: tuple[Task, ...] = ()
    teams: tuple[Team, ...] = ()
    staging: Coord | None = None
    """Incident base / staging area, for display and as a default position."""
    description: str = ""

    def task(self, task_id: str) -> Task:
        """The task with this id (KeyError when absent)."""
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)

    def team(self, team_id: str) -> Team:
        """The team with this id (KeyError when absent)."""
        for t in self.teams:
            if t.id == team_id:
                return t
        raise KeyError(team_id)


class Visit(msgspec.Struct, frozen=True, kw_only=True):
    """One task on a team's route, with its timeline (epoch seconds)."""

    task_id: str
    arrival: int
    """When the team reaches the task (may wait until ``start``)."""
    start: int
    end: int
    travel_s: int = 0
    """Travel time from the previous stop."""
    distance_m: float = 0.0
    """Travel distance from the previous stop."""
    fixed: bool = False
    """Kept from the previous plan because the team is already working on it."""


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """A team's ordered tasks for the period."""

    team_id: str
    depart: int
    """When the team leaves its start position."""
    visits: tuple[Visit, ...] = ()
    distance_m: float = 0.0
    load: int = 0
    """Total supply demand carried."""

    @property
    def task_ids(self) -> tuple[str, ...]:
        """Task ids in visiting order."""
        return tuple(v.task_id for v in self.visits)

    @property
    def end(self) -> int:
        """When the team finishes its last task (``depart`` if idle)."""
        return self.visits[-1].end if self.visits else self.depart


class Assignment(msgspec.Struct, frozen=True, kw_only=True):
    """Task -> team with its planned times, as orders and exports want it."""

    task_id: str
    team_id: str
    arrival: int
    start: int
    end: int


class Unassigned(msgspec.Struct, frozen=True, kw_only=True):
    """A task the plan leaves out, and why."""

    task_id: str
    reason: UnassignedReason
    detail: str = ""


class LivePosition(msgspec.Struct, frozen=True, kw_only=True):
    """A team start taken from a device's latest report, not the incident file."""

    team_id: str
    uid: str
    """The device whose report was used."""
    position: Coord
    at: int
    """When the device reported it (epoch seconds)."""


class SolverStats(msgspec.Struct, frozen=True, kw_only=True):
    """How the plan was computed."""

    runtime: float = 0.0
    """Wall-clock seconds spent in the solver."""
    iterations: int = 0
    seed: int = 0
    time_limit: float = 0.0
    repairs: int = 0
    """Solver rounds re-run to repair precedence or verification failures."""


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """The planner's answer for one operational period."""

    incident: str
    period: OperationalPeriod
    routes: tuple[Route, ...] = ()
    """One route per team that is not out, idle teams with no visits."""
    unassigned: tuple[Unassigned, ...] = ()
    objective: float = 0.0
    """Solver objective: travel metres plus priority prizes left uncollected."""
    stats: SolverStats = SolverStats()
    live_positions: tuple[LivePosition, ...] = ()
    """Teams whose start came from their devices' live position (the others
    started from the incident's position)."""

    @property
    def assignments(self) -> dict[str, Assignment]:
        """Task id -> assignment, for every served task."""
        out: dict[str, Assignment] = {}
        for route in self.routes:
            for v in route.visits:
                out[v.task_id] = Assignment(task_id=v.task_id, team_id=route.team_id,
                                            arrival=v.arrival, start=v.start, end=v.end)
        return out

    def route(self, team_id: str) -> Route | None:
        """The route of a team, or None when the plan has no route for it."""
        for r in self.routes:
            if r.team_id == team_id:
                return r
        return None


# Changes that trigger re-planning (see plan/replan.py).  Times are epoch s.

class TaskAdded(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A new task appeared (a new clue, a new request)."""

    task: Task


class TaskCancelled(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A task is no longer wanted."""

    task_id: str


class TaskDone(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A task was reported done (possibly earlier than planned)."""

    task_id: str
    at: int
    team_id: str | None = None
    """The team that did it: it is free from ``at`` at the task's exit point.
    None = the team the previous plan assigned (re-planning fills it in)."""


class TaskStarted(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A team reported starting a task; it is kept fixed from then on."""

    task_id: str
    team_id: str
    at: int


class TaskFailed(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A team reported it cannot do a task (UNABLE, FAILED): the task goes back
    to the pool for the other teams, and that team is free from ``at``."""

    task_id: str
    team_id: str
    at: int


class TeamDelayed(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A team can only start later, possibly from another position."""

    team_id: str
    available_from: int
    position: Coord | None = None


class TeamOut(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A team is out of service for the rest of the period."""

    team_id: str


Change = (TaskAdded | TaskCancelled | TaskDone | TaskStarted | TaskFailed | TeamDelayed
          | TeamOut)

"""The incident's search tracks and its POA/POD books, per segment.

Tracks: every active ``search_area`` task gets its pattern (``Task.pattern``,
parallel track by default) spaced one sweep width apart, so that the track a
team walks is the one its work time was planned for (area / sweep width).
The exports draw them, and a team's GPX file carries them.

Books: a segment is searched by every task naming it (``Task.segment``, or
the task's own id).  Each task done without a find is one search with
coverage C = W L / A (L the task's track length) and POD = 1 - exp(-C); the
segment's cumulative POD combines them, and the POAs of all segments with a
POA (plus the rest of the world, 1 - their sum) are renormalised after the
unsuccessful searches (see ``fieldc2.plan.search``).
"""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from fieldc2.errors import PlanError
from fieldc2.plan.geo import Coord
from fieldc2.plan.model import Incident, Polygon, Task, geometry_size
from fieldc2.plan.search import (
    Pattern,
    coverage,
    creeping_line,
    cumulative_pod,
    parallel_track,
    pod,
    renormalise_poa,
)

ACTIVE = ("planned", "in_progress")
#: Name of the segment holding the probability outside every segment.
REST_OF_WORLD = "rest_of_world"


def task_pattern(task: Task) -> Pattern | None:
    """The track for a search area task, or None for other tasks.

    Raises PlanError when the pattern is refused (more legs than a GPS takes:
    the sweep width's unit is probably wrong)."""
    if task.kind != "search_area" or not isinstance(task.geometry, Polygon):
        return None
    layout = creeping_line if task.pattern == "creeping_line" else parallel_track
    return layout(task.geometry.coordinates[0], task.sweep_width)


def tracks_for(incident: Incident, statuses: Collection[str] = ACTIVE
               ) -> dict[str, tuple[Coord, ...]]:
    """Task id -> track waypoints for the search areas with these statuses.
    A task whose pattern is refused has no track (its area is still shown)."""
    out: dict[str, tuple[Coord, ...]] = {}
    for task in incident.tasks:
        if task.status not in statuses:
            continue
        try:
            pattern = task_pattern(task)
        except PlanError:
            continue
        if pattern is not None and len(pattern.waypoints) >= 2:
            out[task.id] = pattern.waypoints
    return out


class Search(msgspec.Struct, frozen=True, kw_only=True):
    """One finished search of a segment, without a find."""

    task_id: str
    coverage: float
    pod: float


class SegmentBook(msgspec.Struct, frozen=True, kw_only=True):
    """What is known of one search segment."""

    segment: str
    task_ids: tuple[str, ...]
    area_m2: float
    poa: float | None
    """Initial probability of area (from its tasks), None when not given."""
    searches: tuple[Search, ...] = ()
    cumulative_pod: float = 0.0
    pos: float | None = None
    """Cumulative probability of success so far, POA x cumulative POD."""
    poa_now: float | None = None
    """POA renormalised after the unsuccessful searches."""


def _search(task: Task) -> Search:
    area = geometry_size(task.geometry)
    try:
        pattern = task_pattern(task)
    except PlanError:
        pattern = None
    length = pattern.length_m if pattern is not None else area / task.sweep_width
    c = coverage(task.sweep_width, length, area)
    return Search(task_id=task.id, coverage=c, pod=pod(c))


def segment_books(incident: Incident, done: Collection[str] = ()
                  ) -> tuple[list[SegmentBook], float | None]:
    """Each segment's books, and the rest of the world's POA now (None when
    no segment has a POA).  ``done`` adds task ids reported done but not yet
    in the incident (changes not yet re-planned)."""
    groups: dict[str, list[Task]] = {}
    for task in incident.tasks:
        if task.kind == "search_area" and isinstance(task.geometry, Polygon):
            groups.setdefault(task.segment or task.id, []).append(task)
    books: list[SegmentBook] = []
    for name, tasks in groups.items():
        searches = tuple(_search(t) for t in tasks if t.status == "done" or t.id in done)
        poa = next((t.poa for t in tasks if t.poa is not None), None)
        cum = cumulative_pod([s.pod for s in searches])
        books.append(SegmentBook(
            segment=name, task_ids=tuple(t.id for t in tasks),
            area_m2=geometry_size(tasks[0].geometry), poa=poa, searches=searches,
            cumulative_pod=cum, pos=poa * cum if poa is not None else None))
    return _renormalised(books)


def _renormalised(books: list[SegmentBook]) -> tuple[list[SegmentBook], float | None]:
    poa = {b.segment: b.poa for b in books if b.poa is not None}
    if not poa:
        return books, None
    rest = 1.0 - sum(poa.values())
    if rest < -1e-6:
        raise PlanError(f"the segments' POAs sum to {1 - rest:.3f}, over 1; correct the "
                        "tasks' 'poa' fields")
    if REST_OF_WORLD in poa:
        raise PlanError(f"no segment may be named {REST_OF_WORLD!r}")
    now = renormalise_poa({**poa, REST_OF_WORLD: max(rest, 0.0)},
                          {b.segment: b.cumulative_pod for b in books if b.poa is not None})
    out = [msgspec.structs.replace(b, poa_now=now[b.segment]) if b.poa is not None else b
           for b in books]
    return out, now[REST_OF_WORLD]

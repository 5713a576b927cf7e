"""Timelines, repair and the independent plan checker.

The solver's routes are turned into timelines here, waiting for cross-team
predecessors (PyVRP knows nothing of precedence).  Whatever still breaks a
constraint is dropped with a reason, repeatedly, until the routes are clean:
dropping a visit only moves later visits earlier, so this ends.

``validate_plan`` shares no code with the repair on purpose: it recomputes
travel and work times from the raw incident, so a bug in the matrices or the
timeline shows up as a violation instead of being confirmed by itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fieldc2.errors import PlanError
from fieldc2.plan.geo import Coord, check_coord
from fieldc2.plan.model import (
    MAX_PRIORITY,
    Geometry,
    Incident,
    LineString,
    Plan,
    Point,
    Polygon,
    Route,
    SolverStats,
    Task,
    Team,
    UnassignedReason,
    Visit,
    entry_point,
    exit_point,
)
from fieldc2.plan.travel import TravelModel

if TYPE_CHECKING:
    from fieldc2.plan.solver import Problem

Stop = tuple[int, int, int, int]
"""One timed visit, relative seconds: (task column j, arrival, start, end)."""


@dataclass
class Repaired:
    """Clean routes, their timelines, and what was dropped on the way."""

    routes: dict[str, list[str]]
    timeline: dict[str, list[Stop]]
    dropped: dict[str, UnassignedReason] = field(default_factory=dict)
    waited: dict[str, int] = field(default_factory=dict)
    """Successor task id -> relative end of the predecessor it waited for."""
    score: tuple[int, int] = (0, 0)
    """(uncollected prize, travel metres): smaller is better."""

    def tightened(self, p: Problem) -> bool:
        """Split each waited-for precedence at the time E the predecessor ended:
        the successor starts no earlier than E, the predecessor no later than
        E minus its shortest work time.  The current timeline still fits, and
        the order is now forced even on one route.  True when anything changed."""
        changed = False
        col = {t.id: j for j, t in enumerate(p.tasks)}
        for task_id, rel in self.waited.items():
            if p.min_start.get(task_id, 0) < rel:
                p.min_start[task_id] = rel
                changed = True
            for q in p.tasks[col[task_id]].precedence:
                if q not in col or not p.allowed[:, col[q]].any():
                    continue
                latest = rel - int(p.work[p.allowed[:, col[q]], col[q]].min())
                if latest < p.max_start.get(q, p.horizon):
                    p.max_start[q] = latest
                    changed = True
        return changed


def split_precedence(p: Problem, timeline: Mapping[str, list[Stop]]) -> None:
    """Fix every served precedence pair of a timeline at the predecessor's end
    E, as ``Repaired.tightened`` does, so that a solve warm-started from it
    keeps the order (PyVRP alone would not)."""
    ends = {p.tasks[s[0]].id: s[3] for stops in timeline.values() for s in stops}
    col = {t.id: j for j, t in enumerate(p.tasks)}
    for task_id in ends:
        for q in p.tasks[col[task_id]].precedence:
            if q not in ends:
                continue
            e = ends[q]
            p.min_start[task_id] = max(p.min_start.get(task_id, 0), e)
            work = int(p.work[p.allowed[:, col[q]], col[q]].min())
            p.max_start[q] = min(p.max_start.get(q, p.horizon), e - work)


def has_precedence(p: Problem) -> bool:
    """True when some planned task has a predecessor."""
    return any(t.precedence for t in p.tasks)


def _route_timeline(p: Problem, k: int, cols: list[int],
                    pred_end: Mapping[str, int]) -> tuple[list[Stop], dict[str, int]]:
    """Timed stops of team k over task columns, waiting for predecessors."""
    n_t = len(p.teams)
    t, prev, prev_work = p.team_window(k)[0], 1 + k, 0
    stops: list[Stop] = []
    waited: dict[str, int] = {}
    for j in cols:
        task = p.tasks[j]
        arrival = t + int(p.dur[k][prev, 1 + n_t + j]) - prev_work
        early, _ = p.task_window(j)
        start = max(arrival, early)
        need = max((pred_end.get(q, 0) for q in task.precedence), default=0)
        if need > start:
            waited[task.id] = need
            start = need
        prev_work = int(p.work[k, j])
        t, prev = start + prev_work, 1 + n_t + j
        stops.append((j, arrival, start, t))
    return stops, waited


def _timelines(p: Problem, cols: dict[int, list[int]]
               ) -> tuple[dict[int, list[Stop]], dict[str, int], bool]:
    """All routes' timelines at a fixed point of predecessor end times."""
    pred_end: dict[str, int] = {}
    for _ in range(len(p.tasks) + 2):
        out: dict[int, list[Stop]] = {}
        waited: dict[str, int] = {}
        for k, js in cols.items():
            out[k], w = _route_timeline(p, k, js, pred_end)
            waited.update(w)
        ends = {p.tasks[s[0]].id: s[3] for stops in out.values() for s in stops}
        if ends == pred_end:
            return out, waited, True
        pred_end = ends
    return out, waited, False


def _violations(p: Problem, tl: dict[int, list[Stop]], waited: Mapping[str, int],
                converged: bool) -> dict[str, UnassignedReason]:
    """Task id -> reason for the first broken visit of each route.

    Only the first per route: dropping it moves the later visits earlier,
    which may cure them.  Without a fixed point (a precedence cycle through
    the route orders) the latest-starting successor goes first."""
    done = {t.id for t in p.incident.tasks if t.status == "done"}
    served = {p.tasks[s[0]].id: s for stops in tl.values() for s in stops}
    if not converged:
        succ = [s for s in served.values() if p.tasks[s[0]].precedence]
        return {p.tasks[max(succ, key=lambda s: s[2])[0]].id: "precedence"}
    bad: dict[str, UnassignedReason] = {}
    for k, stops in tl.items():
        end, load = p.team_window(k)[1], 0
        pushed: str | None = None       # the last visit that waited for a predecessor
        for j, _arr, start, fin in stops:
            task = p.tasks[j]
            load += task.demand
            reason = _broken(p, j, start, fin, end, load > p.teams[k].capacity,
                             served, done, task.id in waited)
            if reason in ("time_window", "shift") and pushed is not None:
                bad[pushed] = "precedence"          # its wait made this one late
                break
            if reason is not None:
                bad[task.id] = reason
                break
            pushed = task.id if task.id in waited else pushed
    return bad


def _broken(p: Problem, j: int, start: int, fin: int, shift_end: int, over: bool,
            served: Mapping[str, Stop], done: set[str], pushed: bool
            ) -> UnassignedReason | None:
    """The constraint one timed visit breaks, if any."""
    task = p.tasks[j]
    if any(q not in done and (q not in served or served[q][3] > start)
           for q in task.precedence):
        return "precedence"
    if start > p.task_window(j)[1]:
        split = task.id in p.min_start or task.id in p.max_start
        return "precedence" if pushed or split else "time_window"
    if fin > shift_end:
        return "precedence" if pushed else "shift"
    return "capacity" if over else None


def repair(p: Problem, routes: Mapping[str, list[str]]) -> Repaired:
    """Drop violating visits until every route's timeline is clean."""
    col = {t.id: j for j, t in enumerate(p.tasks)}
    idx = {t.id: k for k, t in enumerate(p.teams)}
    cols = {idx[team]: [col[i] for i in ids if i in col and p.allowed[idx[team], col[i]]]
            for team, ids in routes.items() if team in idx}
    dropped: dict[str, UnassignedReason] = {}
    for js in cols.values():                 # a successor before its predecessor
        pos = {p.tasks[j].id: n for n, j in enumerate(js)}
        for n, j in enumerate(js):
            if any(pos.get(q, -1) > n for q in p.tasks[j].precedence):
                dropped[p.tasks[j].id] = "precedence"
    cols = {k: [j for j in js if p.tasks[j].id not in dropped] for k, js in cols.items()}
    while True:
        tl, waited, converged = _timelines(p, cols)
        bad = _violations(p, tl, waited, converged)
        if not bad:
            break
        dropped.update(bad)
        cols = {k: [j for j in js if p.tasks[j].id not in bad] for k, js in cols.items()}
    ids = {p.teams[k].id: [p.tasks[j].id for j in js] for k, js in cols.items()}
    timeline = {p.teams[k].id: stops for k, stops in tl.items()}
    for task_id, reason in dropped.items():
        succ_preds = p.tasks[col[task_id]].precedence
        if reason == "precedence":
            ends = [s[3] for st in tl.values() for s in st if p.tasks[s[0]].id in succ_preds]
            if ends:
                waited[task_id] = max(ends)
    return Repaired(ids, timeline, dropped, waited, _score(p, cols))


def _score(p: Problem, cols: Mapping[int, list[int]]) -> tuple[int, int]:
    from fieldc2.plan.solver import PRIZE_PER_PRIORITY

    served = {j for js in cols.values() for j in js}
    lost = sum(t.priority for j, t in enumerate(p.tasks) if j not in served)
    n_t = len(p.teams)
    metres = 0
    for k, js in cols.items():
        prev = 1 + k
        for j in js:
            metres += int(p.base[prev - 1, n_t + j])
            prev = 1 + n_t + j
    return lost * PRIZE_PER_PRIORITY, metres


def assemble_plan(p: Problem, best: Repaired, stats: SolverStats,
                  fixed: Mapping[str, Visit]) -> Plan:
    """The Plan value: absolute times, idle teams, reasons, objective."""
    from fieldc2.plan.solver import PRIZE_PER_PRIORITY, unassigned_reason

    col = {t.id: j for j, t in enumerate(p.tasks)}
    n_t = len(p.teams)
    routes = []
    for k, team in enumerate(p.teams):
        visits = [fixed[team.id]] if team.id in fixed else []
        prev, metres = 1 + k, 0.0
        for j, arrival, start, end in best.timeline.get(team.id, []):
            leg = float(p.base[prev - 1, n_t + j])
            travel_s = arrival - (visits[-1].end - p.t0 if visits else p.team_window(k)[0])
            visits.append(Visit(task_id=p.tasks[j].id, arrival=p.t0 + arrival,
                                start=p.t0 + start, end=p.t0 + end,
                                travel_s=travel_s, distance_m=leg))
            metres += leg
            prev = 1 + n_t + j
        depart = visits[0].start if team.id in fixed else p.t0 + p.team_window(k)[0]
        load = sum(p.tasks[col[v.task_id]].demand for v in visits if v.task_id in col)
        routes.append(Route(team_id=team.id, depart=depart, visits=tuple(visits),
                            distance_m=metres, load=load))
    served = {v.task_id for r in routes for v in r.visits}
    unassigned = tuple(unassigned_reason(p, j, best.dropped)
                       for j, t in enumerate(p.tasks) if t.id not in served)
    lost = sum(t.priority for t in p.tasks if t.id not in served)
    objective = sum(r.distance_m for r in routes) + lost * PRIZE_PER_PRIORITY
    return Plan(incident=p.incident.name, period=p.incident.period, routes=tuple(routes),
                unassigned=unassigned, objective=objective, stats=stats)


def validate_plan(plan: Plan, incident: Incident, travel: TravelModel) -> list[str]:
    """Every broken constraint as a sentence; empty when the plan is sound."""
    return [msg for _, msg in plan_violations(plan, incident, travel)]


def plan_violations(plan: Plan, incident: Incident, travel: TravelModel
                    ) -> list[tuple[str, str]]:
    """(task id to blame, sentence) per broken constraint; "" blames no task."""
    tasks = {t.id: t for t in incident.tasks}
    legs = _leg_times(plan, incident, travel)
    errors: list[tuple[str, str]] = []
    served: dict[str, Visit] = {}
    for route in plan.routes:
        errors += _check_route(route, incident, legs, served)
    for task_id, visit in served.items():
        if visit.fixed:
            continue
        for q in tasks[task_id].precedence:
            pred = tasks.get(q)
            if pred is not None and pred.status == "done":
                continue
            if q not in served:
                errors.append((task_id, f"{task_id}: predecessor {q} is not served"))
            elif served[q].end > visit.start:
                errors.append((task_id, f"{task_id}: starts at {visit.start} before "
                                        f"predecessor {q} ends at {served[q].end}"))
    listed = [u.task_id for u in plan.unassigned]
    if len(set(listed)) != len(listed):
        errors.append(("", "a task is listed as unassigned twice"))
    for task_id in sorted(set(listed) & served.keys()):
        errors.append((task_id, f"{task_id}: both assigned and unassigned"))
    for task in incident.tasks:
        if task.status in ("planned", "in_progress") and task.id not in served \
                and task.id not in listed:
            errors.append(("", f"{task.id}: neither assigned nor listed as unassigned"))
    return errors


def _walk(route: Route, incident: Incident) -> Iterator[tuple[Visit, Task, Coord]]:
    """Each known visit of a route with the place the team comes from."""
    tasks = {t.id: t for t in incident.tasks}
    where = incident.team(route.team_id).position
    for v in route.visits:
        task = tasks.get(v.task_id)
        if task is None:
            continue
        yield v, task, where
        where = exit_point(task.geometry)


def _leg_times(plan: Plan, incident: Incident, travel: TravelModel
               ) -> dict[tuple[str, int], int]:
    """Travel seconds of every leg, one matrix call per team speed (a road
    graph then runs one shortest-path search per distinct start point)."""
    teams = {t.id: t for t in incident.teams}
    by_speed: dict[float, list[tuple[str, int, Coord, Coord]]] = {}
    for route in plan.routes:
        team = teams.get(route.team_id)
        if team is None:
            continue
        for n, (_v, task, where) in enumerate(_walk(route, incident)):
            by_speed.setdefault(team.speed, []).append(
                (route.team_id, n, where, entry_point(task.geometry)))
    out: dict[tuple[str, int], int] = {}
    for speed, legs in by_speed.items():
        src = sorted({leg[2] for leg in legs})
        dst = sorted({leg[3] for leg in legs})
        m = travel.duration_matrix(src, dst, speed)
        si, di = {c: i for i, c in enumerate(src)}, {c: i for i, c in enumerate(dst)}
        for team_id, n, a, b in legs:
            out[team_id, n] = int(m[si[a], di[b]])
    return out


def _check_route(route: Route, incident: Incident, legs: Mapping[tuple[str, int], int],
                 served: dict[str, Visit]) -> list[tuple[str, str]]:
    """Constraint violations of one team's route; records its visits in ``served``."""
    teams = {t.id: t for t in incident.teams}
    team = teams.get(route.team_id)
    if team is None:
        return [("", f"route for unknown team {route.team_id}")]
    errs: list[tuple[str, str]] = []
    known = {t.id for t in incident.tasks}
    errs += [(v.task_id, f"{team.id}: unknown task {v.task_id}")
             for v in route.visits if v.task_id not in known]
    if team.status == "out" and any(not v.fixed for v in route.visits):
        errs.append(("", f"{team.id}: team is out but has tasks"))
    now = max(team.start_time(), incident.period.start)
    end_of_shift = min(team.shift_end, incident.period.end)
    load, planned_seen, last = 0, False, ""
    for n, (v, task, _where) in enumerate(_walk(route, incident)):
        tag, key = f"{team.id}/{task.id}", task.id
        if v.task_id in served:
            errs.append((key, f"{tag}: visited twice"))
            continue
        served[v.task_id] = v
        if task.status not in ("planned", "in_progress"):
            errs.append((key, f"{tag}: task is {task.status}"))
        if not task.capabilities <= team.capabilities:
            errs.append((key, f"{tag}: lacks {sorted(task.capabilities - team.capabilities)}"))
        if team.id in task.excluded_teams and not v.fixed:
            errs.append((key, f"{tag}: the team reported it cannot do this task"))
        load += task.demand
        if v.fixed:
            if planned_seen:
                errs.append((key, f"{tag}: fixed visit after a planned one"))
            now = v.end
            continue
        planned_seen, last = True, key
        errs += [(key, f"{tag}: {msg}") for msg in _timing(v, task, team, now + legs[
            team.id, n], end_of_shift)]
        now = v.end
    if load > team.capacity:
        errs.append((last, f"{team.id}: load {load} exceeds capacity {team.capacity}"))
    return errs


def _timing(v: Visit, task: Task, team: Team, earliest_arrival: int,
            end_of_shift: int) -> list[str]:
    """Timeline errors of one visit, given when the team could be there."""
    errs = []
    if v.arrival < earliest_arrival:
        errs.append(f"arrives at {v.arrival}, cannot before {earliest_arrival}")
    if v.start < v.arrival or (task.earliest is not None and v.start < task.earliest):
        errs.append(f"starts at {v.start}, before arrival or window")
    if task.latest is not None and v.start > task.latest:
        errs.append(f"starts at {v.start}, after latest {task.latest}")
    if v.end < v.start + task.work_seconds(team):
        errs.append("ends before its work time has passed")
    if v.end > end_of_shift:
        errs.append(f"ends at {v.end}, after shift/period end {end_of_shift}")
    return errs


def check_incident(incident: Incident, source: str = "incident") -> None:
    """Raise PlanError on the first definition error: ids, geometry, numbers,
    windows, shifts, precedence (unknown ids and cycles)."""
    if incident.period.end <= incident.period.start:
        raise PlanError(f"{source}: period ends before it starts")
    if incident.staging is not None:
        check_coord(incident.staging, f"{source}: staging")
    _unique([t.id for t in incident.tasks], f"{source}: task")
    _unique([t.id for t in incident.teams], f"{source}: team")
    for task in incident.tasks:
        _check_task(task, f"{source}: task {task.id!r}")
    for team in incident.teams:
        _check_team(team, f"{source}: team {team.id!r}")
    _check_precedence(incident, source)


def _unique(ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if not i:
            raise PlanError(f"{what} with an empty id")
        if i in seen:
            raise PlanError(f"{what} id {i!r} appears twice")
        seen.add(i)


def _check_task(task: Task, where: str) -> None:
    _check_geometry(task.geometry, f"{where}: field 'geometry'")
    need = {"search_area": Polygon, "search_line": LineString}.get(task.kind)
    if need is not None and not isinstance(task.geometry, need):
        raise PlanError(f"{where}: field 'geometry': a {task.kind} needs a {need.__name__}")
    if not 1 <= task.priority <= MAX_PRIORITY:
        raise PlanError(f"{where}: field 'priority': must be 1..{MAX_PRIORITY}, "
                        f"got {task.priority}")
    for name, value in (("duration", task.duration), ("demand", task.demand)):
        if value is not None and value < 0:
            raise PlanError(f"{where}: field {name!r}: must not be negative, got {value}")
    if not task.sweep_width > 0:
        raise PlanError(f"{where}: field 'sweep_width': must be positive")
    if task.earliest is not None and task.latest is not None and task.latest < task.earliest:
        raise PlanError(f"{where}: field 'latest': before 'earliest'")
    if task.poa is not None and not 0.0 <= task.poa <= 1.0:
        raise PlanError(f"{where}: field 'poa': must be in [0, 1], got {task.poa}")


def _check_geometry(geometry: Geometry, where: str) -> None:
    match geometry:
        case Point(coordinates=c):
            check_coord(c, where)
        case LineString(coordinates=cs):
            if len(cs) < 2:
                raise PlanError(f"{where}: a LineString needs at least two positions")
            for c in cs:
                check_coord(c, where)
        case Polygon(coordinates=rings):
            if not rings or len(set(rings[0])) < 3:
                raise PlanError(f"{where}: a Polygon needs a ring of three or more positions")
            for ring in rings:
                for c in ring:
                    check_coord(c, where)


def _check_team(team: Team, where: str) -> None:
    check_coord(team.position, f"{where}: field 'position'")
    speeds = [("speed", team.speed)] + [(f"search_speeds.{k}", v)
                                        for k, v in team.search_speeds.items()]
    for name, value in speeds:
        if not value > 0:
            raise PlanError(f"{where}: field {name!r}: must be a positive speed in m/s")
    if team.shift_end <= team.shift_start:
        raise PlanError(f"{where}: field 'shift_end': not after 'shift_start'")
    if team.capacity < 0:
        raise PlanError(f"{where}: field 'capacity': must not be negative")


def _check_precedence(incident: Incident, source: str) -> None:
    ids = {t.id for t in incident.tasks}
    succ = {t.id: t.precedence for t in incident.tasks}
    for task in incident.tasks:
        for q in task.precedence:
            if q not in ids or q == task.id:
                raise PlanError(f"{source}: task {task.id!r}: field 'precedence': "
                                f"{q!r} is not another task")
    state: dict[str, int] = {}                      # 1 = on the path, 2 = done

    def visit(tid: str) -> None:
        stack = [(tid, iter(succ[tid]))]
        state[tid] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                raise PlanError(f"{source}: task {nxt!r}: field 'precedence': "
                                f"cycle through {node!r}")
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))

    for tid in succ:
        if tid not in state:
            visit(tid)

"""Re-planning after a change, keeping what teams are doing and what they were told.

A re-plan differs from a fresh plan in three ways:

- tasks in progress stay with their team: the visit is copied unchanged
  (``fixed=True``) and the team is planned onwards from that task's end and
  exit point;
- moving a task to another team costs ``reassign_penalty`` metres, and the
  solver is warm-started from the previous routes, so the new plan differs
  from the old one only where the change makes it worthwhile (orders already
  sent stay valid);
- the report says how many assignments changed, for the operator's attention.

``now`` (epoch seconds), when given, stops any team from being planned to
start in the past.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec

from fieldc2.errors import PlanError
from fieldc2.plan.model import (
    Change,
    Incident,
    Plan,
    TaskAdded,
    TaskCancelled,
    TaskDone,
    TaskFailed,
    TaskStarted,
    Team,
    TeamDelayed,
    TeamOut,
    Visit,
    exit_point,
)
from fieldc2.plan.solver import FINISH_S, build_problem, solve_problem, with_budget
from fieldc2.plan.travel import StraightLine, TravelModel

DEFAULT_REPLAN_S = 2.0
"""Time budget of a re-plan: short enough to run on every radio report."""

REASSIGN_PENALTY_M = 20_000
"""Cost of moving a task to another team, in metres of travel: a re-plan moves
an assignment only to save more than 20 km of travel, but never leaves a task
undone to avoid a move (one priority point is worth 100 km)."""


class ReplanReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a re-plan changed, relative to the previous plan."""

    kept: int
    """Previously assigned tasks still with the same team."""
    changed: int
    """Previously assigned, still active tasks now with another team or none."""
    added: int
    """Tasks assigned now that had no team before (new or previously left out)."""
    changed_tasks: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    """Tasks in progress kept with their team."""
    runtime: float = 0.0


def _replace_task(incident: Incident, task_id: str, **changes: object) -> Incident:
    try:
        incident.task(task_id)
    except KeyError:
        raise PlanError(f"change refers to unknown task {task_id!r}") from None
    tasks = tuple(msgspec.structs.replace(t, **changes) if t.id == task_id else t
                  for t in incident.tasks)
    return msgspec.structs.replace(incident, tasks=tasks)


def _replace_team(incident: Incident, team_id: str, **changes: object) -> Incident:
    try:
        incident.team(team_id)
    except KeyError:
        raise PlanError(f"change refers to unknown team {team_id!r}") from None
    teams = tuple(msgspec.structs.replace(t, **changes) if t.id == team_id else t
                  for t in incident.teams)
    return msgspec.structs.replace(incident, teams=teams)


def apply_change(incident: Incident, change: Change) -> Incident:
    """The incident after one change (statuses, new tasks, team availability)."""
    match change:
        case TaskAdded(task=task):
            if any(t.id == task.id for t in incident.tasks):
                raise PlanError(f"task {task.id!r} already exists")
            return msgspec.structs.replace(incident, tasks=(*incident.tasks, task))
        case TaskCancelled(task_id=tid):
            return _replace_task(incident, tid, status="cancelled")
        case TaskDone(task_id=tid, at=at, team_id=team_id):
            incident = _replace_task(incident, tid, status="done")
            if team_id is None:
                return incident
            team = _team(incident, team_id)
            return _replace_team(incident, team_id, position=exit_point(
                incident.task(tid).geometry), available_from=max(at, team.start_time()))
        case TaskStarted(task_id=tid, team_id=team_id):
            _team(incident, team_id)
            return _replace_task(incident, tid, status="in_progress")
        case TaskFailed(task_id=tid, team_id=team_id, at=at):
            return _task_failed(incident, tid, team_id, at)
        case TeamDelayed(team_id=team_id, available_from=at, position=pos):
            team = _team(incident, team_id)
            return _replace_team(incident, team_id, status="delayed", available_from=at,
                                 position=pos if pos is not None else team.position)
        case TeamOut(team_id=team_id):
            return _replace_team(incident, team_id, status="out")
    raise PlanError(f"unknown change {change!r}")  # pragma: no cover


def _task_failed(incident: Incident, task_id: str, team_id: str, at: int) -> Incident:
    """The task back in the pool for every other team; the team free from
    ``at``.  Its position stays: an UNABLE may come before the team set out,
    and the server moves the team to its live position when it has one."""
    team = _team(incident, team_id)
    try:
        task = incident.task(task_id)
    except KeyError:
        raise PlanError(f"change refers to unknown task {task_id!r}") from None
    if task.status in ("done", "cancelled"):
        return incident                 # a late UNABLE for finished work changes nothing
    incident = _replace_task(incident, task_id, status="planned",
                             excluded_teams=task.excluded_teams | {team_id})
    return _replace_team(incident, team_id, available_from=max(at, team.start_time()))


def _team(incident: Incident, team_id: str) -> Team:
    try:
        return incident.team(team_id)
    except KeyError:
        raise PlanError(f"change refers to unknown team {team_id!r}") from None


def _fixed_visits(incident: Incident, previous: Plan, changes: Sequence[Change]
                  ) -> dict[str, Visit]:
    """Team id -> the in-progress visit it keeps (team not out)."""
    started = {c.task_id: c for c in changes if isinstance(c, TaskStarted)}
    before = previous.assignments
    fixed: dict[str, Visit] = {}
    for task in incident.tasks:
        if task.status != "in_progress":
            continue
        if task.id in started:
            c = started[task.id]
            team = _team(incident, c.team_id)
            end = c.at + task.work_seconds(team)
            visit = Visit(task_id=task.id, arrival=c.at, start=c.at, end=end, fixed=True)
            team_id = c.team_id
        elif task.id in before:
            a = before[task.id]
            team_id = a.team_id
            visit = Visit(task_id=task.id, arrival=a.arrival, start=a.start, end=a.end,
                          fixed=True)
        else:
            continue
        if _team(incident, team_id).status != "out" and team_id not in fixed:
            fixed[team_id] = visit
    return fixed


def _working_incident(incident: Incident, fixed: dict[str, Visit],
                      now: int | None) -> Incident:
    """What the solver sees: fixed tasks removed, their teams moved past them,
    orphaned in-progress tasks planned again, nobody starting before ``now``."""
    fixed_ids = {v.task_id for v in fixed.values()}
    tasks = tuple(msgspec.structs.replace(t, status="planned")
                  if t.status == "in_progress" and t.id not in fixed_ids else t
                  for t in incident.tasks)
    teams: list[Team] = []
    for team in incident.teams:
        pos, avail, cap = team.position, team.available_from, team.capacity
        if team.id in fixed:
            v = fixed[team.id]
            task = incident.task(v.task_id)
            pos, avail = exit_point(task.geometry), max(v.end, avail or v.end)
            cap = max(0, cap - task.demand)    # what it carries for the task in hand
        if now is not None:
            avail = max(now, avail if avail is not None else now)
        teams.append(msgspec.structs.replace(team, position=pos, available_from=avail,
                                             capacity=cap))
    return msgspec.structs.replace(incident, tasks=tasks, teams=tuple(teams))


def replan(incident: Incident, previous: Plan, change: Change | Sequence[Change], *,
           time_limit: float = DEFAULT_REPLAN_S, now: int | None = None, seed: int = 0,
           travel: TravelModel | None = None,
           reassign_penalty: int = REASSIGN_PENALTY_M) -> tuple[Plan, ReplanReport]:
    """A new plan after ``change``, as close to ``previous`` as is worthwhile.

    ``incident`` is the state before the change; the returned plan is valid
    for ``updated_incident(incident, change, previous)``."""
    started = time.perf_counter()
    changes = [change] if not isinstance(change, Sequence) else list(change)
    updated = updated_incident(incident, changes, previous)
    fixed = _fixed_visits(updated, previous, changes)
    working = _working_incident(updated, fixed, now)
    fixed_ids = {v.task_id for v in fixed.values()}
    affinity = {tid: a.team_id for tid, a in previous.assignments.items()
                if tid not in fixed_ids}
    p = build_problem(working, travel or StraightLine(), affinity, reassign_penalty)
    warm = {r.team_id: [t for t in r.task_ids if t not in fixed_ids] for r in previous.routes}
    left = max(0.0, time_limit - (time.perf_counter() - started)
               - min(FINISH_S, 0.2 * time_limit))
    plan = solve_problem(p, time_limit=left, seed=seed, initial=warm, fixed=fixed)
    plan = with_budget(msgspec.structs.replace(plan, incident=updated.name), time_limit,
                       time.perf_counter() - started)
    report = compare(previous, plan, updated, tuple(sorted(fixed_ids)),
                     time.perf_counter() - started)
    return plan, report


def updated_incident(incident: Incident, change: Change | Sequence[Change],
                     previous: Plan | None = None) -> Incident:
    """``incident`` with every change applied in order; a ``TaskDone`` without
    a team is credited to the team ``previous`` assigned the task to."""
    changes = [change] if not isinstance(change, Sequence) else list(change)
    before = previous.assignments if previous is not None else {}
    for c in changes:
        if isinstance(c, TaskDone) and c.team_id is None and c.task_id in before:
            c = msgspec.structs.replace(c, team_id=before[c.task_id].team_id)
        incident = apply_change(incident, c)
    return incident


def compare(previous: Plan, plan: Plan, incident: Incident, fixed: tuple[str, ...] = (),
            runtime: float = 0.0) -> ReplanReport:
    """Count kept, changed and added assignments between two plans."""
    active = {t.id for t in incident.tasks if t.status in ("planned", "in_progress")}
    old = {k: a.team_id for k, a in previous.assignments.items() if k in active}
    new = {k: a.team_id for k, a in plan.assignments.items()}
    changed = tuple(sorted(k for k, team in old.items() if new.get(k) != team))
    added = sum(1 for k in new if k not in old)
    return ReplanReport(kept=len(old) - len(changed), changed=len(changed), added=added,
                        changed_tasks=changed, fixed=fixed, runtime=runtime)


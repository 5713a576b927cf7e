"""Assign tasks to teams and order them: a prize-collecting VRPTW solved by PyVRP.

How the incident maps onto PyVRP (0.14):

- one vehicle type and one routing *profile* per team: the team's own start
  depot at its position, its shift as the vehicle time window, its capacity;
- one optional client (``required=False``) per task with prize
  ``priority x PRIZE_PER_PRIORITY``, so an infeasible or low-value task is
  dropped instead of making the problem infeasible;
- the work time depends on the team (search speed), so it is folded into the
  team's duration matrix on the edges *leaving* a task (client service
  duration 0): service starts at arrival, as the time window requires;
- routes are open: every team ends at a dummy depot reached at no cost once
  its last task is done, which must be before its shift ends;
- a team that may not do a task (capability, capacity, cannot reach it in
  time) gets prohibitive distance and duration on every edge into it.

Precedence is not native in PyVRP.  The timeline is recomputed here, waiting
for predecessors (``check.timeline``); tasks that still break a constraint are
dropped with a reason, and the solver is re-run with the successors' windows
tightened while time is left.  Every returned plan passes ``validate``, an
independent checker that recomputes the timeline from the raw incident.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import pyvrp
from pyvrp.exceptions import PenaltyBoundWarning
from pyvrp.stop import StoppingCriterion

from fieldc2.errors import PlanError
from fieldc2.plan.model import (
    MAX_PRIORITY,
    Incident,
    Plan,
    SolverStats,
    Task,
    Team,
    Unassigned,
    UnassignedReason,
    Visit,
    entry_point,
    exit_point,
)
from fieldc2.plan.travel import StraightLine, TravelModel

if TYPE_CHECKING:
    from fieldc2.plan.check import Repaired

PRIZE_PER_PRIORITY = 100_000
"""Prize (in metres of travel) for one priority point: 100 km, more than any
detour within an incident, so the solver first maximises the served priority
and only then minimises travel."""

MAX_PENALTY = 2.0 * MAX_PRIORITY * PRIZE_PER_PRIORITY
"""PyVRP's ceiling on the penalty per second of lateness or unit of excess
load.  Its default (1e5) is below one task's prize, which lets the search
settle on infeasible solutions that collect more prizes; this ceiling makes
one second late cost more than any prize."""

FORBIDDEN = 100_000_000
"""Distance (m) and duration (s) of an edge a team may not take: longer than
any operational period (3 years), and small enough that FORBIDDEN x
MAX_PENALTY summed over a few hundred visits stays inside int64."""

MAX_REPAIR_ROUNDS = 3
"""Re-solves with tightened windows to repair precedence; each one halves the
remaining budget, and more than three rarely recovered another task."""

FIRST_SOLVE_SHARE = 0.6
"""Share of the time limit for the first solve when precedence needs repair."""

MIN_ROUND_S = 0.05
"""Below this remaining budget another solve cannot improve anything."""

MAX_VERIFY_ROUNDS = 3
"""Attempts to drop tasks the final check blames; one should always do."""

FINISH_S = 0.1
"""Kept back from a caller's time limit for the work after the search stops
(timelines, the final check, reasons) and for its last iteration overrunning;
measured at 0.05-0.08 s for 200 tasks x 30 teams on a loaded 2-core machine."""

PROGRESS_INTERVAL_S = 0.1
"""Minimum spacing of progress callbacks: a progress bar needs no more."""

Progress = Callable[[float, float], None]


@dataclass
class Problem:
    """The incident reduced to what the solver needs, times relative to ``t0``."""

    incident: Incident
    travel: TravelModel
    tasks: list[Task]
    teams: list[Team]
    t0: int
    horizon: int
    # per team k: (1 + T + N) square matrices over [end, starts..., tasks...]
    dist: list[np.ndarray] = field(default_factory=list)
    dur: list[np.ndarray] = field(default_factory=list)
    profiles: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    """Distinct (distance, duration) matrices; teams alike share one."""
    profile_of: list[int] = field(default_factory=list)
    """Team k's index into ``profiles``."""
    base: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    """Metres from [starts..., task exits...] to [starts..., task entries...]."""
    work: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    allowed: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))
    first_leg: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    """Seconds from each team's start to each task, whether allowed or not."""
    min_start: dict[str, int] = field(default_factory=dict)
    """Extra earliest starts (relative) that repair precedence."""
    max_start: dict[str, int] = field(default_factory=dict)
    """Extra latest starts (relative) that repair precedence."""

    def team_window(self, k: int) -> tuple[int, int]:
        """Relative (start, end) of team k's usable shift within the period."""
        team = self.teams[k]
        start = max(team.start_time(), self.incident.period.start) - self.t0
        end = min(team.shift_end, self.incident.period.end) - self.t0
        return start, end

    def task_window(self, j: int, repaired: bool = True) -> tuple[int, int]:
        """Relative (earliest, latest) start of task j; ``repaired`` includes
        the limits added to repair precedence."""
        task = self.tasks[j]
        early = 0 if task.earliest is None else max(0, task.earliest - self.t0)
        late = self.horizon if task.latest is None else min(self.horizon, task.latest - self.t0)
        if not repaired:
            return early, late
        early = max(early, self.min_start.get(task.id, 0))
        return early, min(late, self.max_start.get(task.id, late))


def build_problem(incident: Incident, travel: TravelModel,
                  affinity: Mapping[str, str] | None = None,
                  reassign_penalty: int = 0) -> Problem:
    """Matrices and feasibility for the planned tasks and the teams not out.

    ``affinity`` maps task id -> previous team; other teams pay
    ``reassign_penalty`` metres to take that task (re-planning stability)."""
    tasks = [t for t in incident.tasks if t.status == "planned"]
    teams = [t for t in incident.teams if t.status != "out"]
    t0 = incident.period.start
    p = Problem(incident, travel, tasks, teams, t0, incident.period.end - t0)
    n_t, n = len(teams), len(tasks)
    src = [t.position for t in teams] + [exit_point(t.geometry) for t in tasks]
    dst = [t.position for t in teams] + [entry_point(t.geometry) for t in tasks]
    if src:
        p.base = np.rint(travel.distance_matrix(src, dst)).astype(np.int64)
    p.work = np.array([[task.work_seconds(team) for task in tasks] for team in teams],
                      dtype=np.int64).reshape(n_t, n)
    p.allowed = np.zeros((n_t, n), dtype=bool)
    p.first_leg = np.zeros((n_t, n), dtype=np.int64)
    by_speed: dict[float, np.ndarray] = {}
    shared: dict[tuple[object, ...], int] = {}
    for k, team in enumerate(teams):
        if team.speed not in by_speed:
            by_speed[team.speed] = travel.duration_matrix(src, dst, team.speed)
        p.first_leg[k] = by_speed[team.speed][k, n_t:]
        fit = np.array([t.allows(team) and t.demand <= team.capacity for t in tasks],
                       dtype=bool)
        p.allowed[k] = [fit[j] and _single_visit_ok(p, k, j, int(p.first_leg[k, j]))
                        for j in range(n)]
        moved = np.array([affinity is not None and affinity.get(t.id, team.id) != team.id
                          for t in tasks], dtype=bool)
        # Teams alike in speed, work times, fit and penalties share one profile:
        # PyVRP's search slows with every profile it has to keep.
        key = (team.speed, p.work[k].tobytes(), fit.tobytes(), moved.tobytes())
        if key not in shared:
            shared[key] = len(p.profiles)
            p.profiles.append(_matrices(p, by_speed[team.speed], p.work[k], fit,
                                        moved.astype(np.int64) * reassign_penalty))
        p.profile_of.append(shared[key])
        p.dist.append(p.profiles[shared[key]][0])
        p.dur.append(p.profiles[shared[key]][1])
    return p


def _matrices(p: Problem, travel_s: np.ndarray, work: np.ndarray, fit: np.ndarray,
              penalty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance and duration matrices of one profile over [end, starts, tasks]."""
    n_t = len(p.teams)
    size = 1 + travel_s.shape[0]
    dist = np.zeros((size, size), dtype=np.int64)
    dur = np.zeros_like(dist)
    dist[1:, 1:] = p.base
    dur[1:, 1:] = travel_s
    dur[1 + n_t:, :] += work[:, None]          # work folded into the leaving edges
    dist[0, :] = dur[0, :] = FORBIDDEN          # nothing leaves the end depot
    dist[:, 0] = 0
    cols = 1 + n_t + np.flatnonzero(~fit)
    dist[:, cols] = dur[:, cols] = FORBIDDEN    # lacks a capability or the capacity
    dist[:, 1 + n_t:] += penalty[None, :]       # re-planning: another team had it
    np.fill_diagonal(dist, 0)                  # PyVRP requires zero diagonals;
    np.fill_diagonal(dur, 0)                   # a task is never visited twice
    return dist, dur


def _single_visit_ok(p: Problem, k: int, j: int, travel_s: int) -> bool:
    """Could team k do task j alone, straight from its start?"""
    team, task = p.teams[k], p.tasks[j]
    if not task.allows(team) or task.demand > team.capacity:
        return False
    start, end = p.team_window(k)
    early, late = p.task_window(j, repaired=False)
    begin = max(start + travel_s, early)
    return begin <= late and begin + int(p.work[k, j]) <= end


def to_pyvrp(p: Problem) -> pyvrp.ProblemData:
    """The PyVRP problem data for ``p`` (requires at least one team and task)."""
    n_t = len(p.teams)
    origin = p.incident.staging or p.teams[0].position
    locs = [pyvrp.Location(origin[0], origin[1], name="end")]
    locs += [pyvrp.Location(t.position[0], t.position[1], name=t.id) for t in p.teams]
    for t in p.tasks:
        x, y = entry_point(t.geometry)
        locs.append(pyvrp.Location(x, y, name=t.id))
    depots = [pyvrp.Depot(i) for i in range(n_t + 1)]
    vtypes = []
    for k, team in enumerate(p.teams):
        start, end = p.team_window(k)
        vtypes.append(pyvrp.VehicleType(
            1, capacity=[team.capacity], start_depot=1 + k, end_depot=0,
            tw_early=start, tw_late=max(start, end), profile=p.profile_of[k], name=team.id))
    clients = []
    for j, task in enumerate(p.tasks):
        early, late = p.task_window(j)
        prize = min(task.priority, MAX_PRIORITY) * PRIZE_PER_PRIORITY
        clients.append(pyvrp.Client(
            1 + n_t + j, delivery=[task.demand], tw_early=early, tw_late=max(early, late),
            prize=prize, required=False, name=task.id))
    matrices: Any = ([m[0] for m in p.profiles], [m[1] for m in p.profiles])
    return pyvrp.ProblemData(locs, clients, depots, vtypes, *matrices)


class _Stop:
    """Stopping criterion: a time limit, reporting progress on the way.

    The clock starts when the criterion is made, not at its first call, so
    PyVRP's set-up (neighbourhoods, the initial local search) counts too."""

    def __init__(self, limit: float, progress: Progress | None, offset: float) -> None:
        self.limit, self.progress, self.offset = limit, progress, offset
        self.start = time.perf_counter()
        self.last = -PROGRESS_INTERVAL_S

    def __call__(self, best_cost: int) -> bool:
        elapsed = time.perf_counter() - self.start
        if self.progress is not None and elapsed - self.last >= PROGRESS_INTERVAL_S:
            self.last = elapsed
            self.progress(self.offset + elapsed, float(best_cost))
        return elapsed >= self.limit


def _warm_start(p: Problem, data: pyvrp.ProblemData,
                routes: Mapping[str, list[str]]) -> pyvrp.Solution | None:
    """A PyVRP solution from team -> task ids, keeping only allowed visits."""
    col = {t.id: j for j, t in enumerate(p.tasks)}
    out = []
    for k, team in enumerate(p.teams):
        idxs = [col[i] for i in routes.get(team.id, []) if i in col and p.allowed[k, col[i]]]
        if idxs:
            out.append(pyvrp.Route(data, idxs, k))
    try:
        return pyvrp.Solution(data, out)
    except (RuntimeError, ValueError):
        return None


def run_pyvrp(p: Problem, limit: float, seed: int, progress: Progress | None,
              offset: float, initial: Mapping[str, list[str]] | None
              ) -> tuple[dict[str, list[str]], int]:
    """Solve ``p`` once; team id -> ordered task ids, and the iteration count."""
    if not p.teams or not p.tasks or not p.allowed.any():
        return {}, 0
    stop: StoppingCriterion = _Stop(limit, progress, offset)
    data = to_pyvrp(p)
    init = _warm_start(p, data, initial) if initial else None
    if init is None:
        # The empty plan is feasible (every task is optional) and costs nothing
        # to make; PyVRP's default, a random plan improved by an exhaustive
        # local search, took longer than a 2 s budget at 200 tasks x 30 teams.
        init = pyvrp.Solution(data, [])
    params = pyvrp.SolveParams(penalty=pyvrp.PenaltyParams(max_penalty=MAX_PENALTY))
    with warnings.catch_warnings():
        # Expected while the penalties adapt to our prize scale; not a fault.
        warnings.simplefilter("ignore", PenaltyBoundWarning)
        res = pyvrp.solve(data, stop=stop, seed=seed, collect_stats=False,
                          params=params, initial_solution=init)
    routes: dict[str, list[str]] = {}
    for r in res.best.routes():
        team = p.teams[r.vehicle_type()]
        routes[team.id] = [p.tasks[a.idx].id for a in r
                           if a.type == pyvrp.ActivityType.CLIENT]
    return routes, int(res.num_iterations)


def solve(incident: Incident, *, time_limit: float, seed: int = 0,
          progress: Progress | None = None, initial: Plan | None = None,
          travel: TravelModel | None = None) -> Plan:
    """The best plan found within ``time_limit`` seconds; never infeasible.

    ``time_limit`` covers building the travel matrices too.
    ``progress(elapsed_s, best_cost)`` is called about every 0.1 s.  ``initial``
    warm-starts the solver from a previous plan's routes."""
    started = time.perf_counter()
    warm = {r.team_id: list(r.task_ids) for r in initial.routes} if initial else None
    p = build_problem(incident, travel or StraightLine())
    left = max(0.0, time_limit - (time.perf_counter() - started)
               - min(FINISH_S, 0.2 * time_limit))
    plan = solve_problem(p, time_limit=left, seed=seed, progress=progress, initial=warm)
    return with_budget(plan, time_limit, time.perf_counter() - started)


def with_budget(plan: Plan, time_limit: float, runtime: float) -> Plan:
    """The plan with its stats covering the whole call, matrices included."""
    stats = msgspec.structs.replace(plan.stats, time_limit=time_limit, runtime=runtime)
    return msgspec.structs.replace(plan, stats=stats)


def solve_problem(p: Problem, *, time_limit: float, seed: int = 0,
                  progress: Progress | None = None,
                  initial: Mapping[str, list[str]] | None = None,
                  fixed: Mapping[str, Visit] | None = None) -> Plan:
    """Solve, repair precedence, verify; ``fixed`` visits are prepended as is."""
    from fieldc2.plan.check import has_precedence, repair, split_precedence

    started = time.perf_counter()
    needs_repair = has_precedence(p)
    warm = repair(p, initial) if initial else None
    if warm is not None and needs_repair:
        split_precedence(p, warm.timeline)
    first = time_limit * (FIRST_SOLVE_SHARE if needs_repair else 1.0)
    routes, iters = run_pyvrp(p, first, seed, progress, 0.0, warm.routes if warm else None)
    best = repair(p, routes)
    if warm is not None:            # never worse than the warm start after repair
        best = min(warm, best, key=lambda r: r.score)
    rounds = 0
    while needs_repair and rounds < MAX_REPAIR_ROUNDS:
        left = time_limit - (time.perf_counter() - started)
        if left <= MIN_ROUND_S:
            break
        # With tightened windows the solver can repair; without, the rest of
        # the budget goes on improving the current best from a warm start.
        last = not best.tightened(p) or rounds == MAX_REPAIR_ROUNDS - 1
        rounds += 1
        routes, more = run_pyvrp(p, left if last else left / 2, seed + rounds, progress,
                                 time.perf_counter() - started, best.routes)
        iters += more
        best = min(best, repair(p, routes), key=lambda r: r.score)
        if last:
            break
    stats = SolverStats(runtime=time.perf_counter() - started, iterations=iters,
                        seed=seed, time_limit=time_limit, repairs=rounds)
    return verified(p, best, stats, fixed or {})


def verified(p: Problem, best: Repaired, stats: SolverStats,
             fixed: Mapping[str, Visit]) -> Plan:
    """The plan, after the independent checker found nothing wrong with it.

    Should the checker disagree with the repair (a bug), the tasks it blames
    are dropped and the rest re-timed; a fault it cannot pin on a task
    stops here rather than reach a team as an order."""
    from fieldc2.plan.check import assemble_plan, plan_violations, repair

    fixed_ids = {v.task_id for v in fixed.values()}
    for _ in range(MAX_VERIFY_ROUNDS):
        plan = assemble_plan(p, best, stats, fixed)
        errors = plan_violations(plan, p.incident, p.travel)
        if not errors:
            return plan
        blamed = {key for key, _ in errors if key and key not in fixed_ids}
        if not blamed:
            break
        kept = {team: [t for t in ids if t not in blamed] for team, ids in best.routes.items()}
        reason: UnassignedReason = "dropped"
        dropped = best.dropped | dict.fromkeys(blamed, reason)
        best = repair(p, kept)
        best.dropped.update(dropped)
    raise PlanError(f"plan failed verification: {'; '.join(m for _, m in errors[:5])}")


def unassigned_reason(p: Problem, j: int, dropped: Mapping[str, UnassignedReason]
                      ) -> Unassigned:
    """Why task j is not in the plan: the first rule it fails, in order."""
    task = p.tasks[j]
    all_teams = p.incident.teams
    capable = [t for t in all_teams if task.capabilities <= t.capabilities]
    missing = sorted(task.capabilities - set().union(*(t.capabilities for t in all_teams)))
    if not capable:
        what = ", ".join(missing) if missing else "all of " + ", ".join(sorted(task.capabilities))
        return Unassigned(task_id=task.id, reason="capability", detail=f"no team has {what}")
    capable = [t for t in capable if task.allows(t)]
    if not capable:
        return Unassigned(task_id=task.id, reason="capability", detail="every capable team "
                          f"reported it cannot do it ({', '.join(sorted(task.excluded_teams))})")
    if all(t.status == "out" for t in capable):
        return Unassigned(task_id=task.id, reason="team_out",
                          detail="every capable team is out")
    ks = [k for k, t in enumerate(p.teams) if task.allows(t)]
    ks = [k for k in ks if p.teams[k].capacity >= task.demand]
    if not ks:
        return Unassigned(task_id=task.id, reason="capacity",
                          detail=f"demand {task.demand} exceeds every capable team's capacity")
    late = p.task_window(j, repaired=False)[1]
    reach = [k for k in ks if p.team_window(k)[0] + int(p.first_leg[k, j]) <= late]
    if not reach:
        return Unassigned(task_id=task.id, reason="time_window",
                          detail="no capable team can arrive before its latest start")
    if not p.allowed[ks, j].any():
        return Unassigned(task_id=task.id, reason="shift",
                          detail="the work does not fit in any capable team's shift")
    if task.id in dropped:
        return Unassigned(task_id=task.id, reason=dropped[task.id],
                          detail="dropped while repairing the timeline")
    return Unassigned(task_id=task.id, reason="dropped",
                      detail="left out for higher-priority or nearer tasks")


def validate(plan: Plan, incident: Incident, travel: TravelModel | None = None) -> list[str]:
    """Every constraint the plan breaks, recomputed from the raw incident.

    Checks capabilities, team status, time windows, shift and period ends,
    capacity, precedence, timelines (travel and work times), and that every
    planned task is either assigned once or listed as unassigned."""
    from fieldc2.plan.check import validate_plan

    return validate_plan(plan, incident, travel or StraightLine())

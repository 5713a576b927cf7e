"""The planner never returns a plan that breaks a hard constraint.

Random incidents come from Hypothesis; every returned plan is checked twice:
by ``validate`` and by a recomputation here from the raw incident with its
own haversine, so that a shared bug in the package cannot hide itself.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldc2.plan.incident import load_incident
from fieldc2.plan.model import (
    Incident,
    LineString,
    OperationalPeriod,
    Plan,
    Point,
    Polygon,
    Task,
    TaskKind,
    Team,
    Visit,
)
from fieldc2.plan.solver import solve, validate

T0 = 1_781_416_800  # 2026-06-14T06:00:00Z
HOUR = 3600
CAPS = ("boat", "medic", "k9", "4x4", "drone")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "incident.yaml"


def haversine(a: tuple[float, float], b: tuple[float, float]) -> float:
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


coord = st.tuples(st.floats(8.0, 8.08), st.floats(47.0, 47.06))


@st.composite
def tasks(draw: st.DrawFn, i: int, n: int) -> Task:
    kind: TaskKind = draw(st.sampled_from(
        ["point", "rescue", "supply", "search_line", "search_area"]))
    c = draw(coord)
    if kind == "search_line":
        geom: Point | LineString | Polygon = LineString(coordinates=(c, draw(coord)))
    elif kind == "search_area":
        d = draw(st.floats(0.001, 0.004))
        ring = (c, (c[0] + d, c[1]), (c[0] + d, c[1] + d), (c[0], c[1] + d), c)
        geom = Polygon(coordinates=(ring,))
    else:
        geom = Point(coordinates=c)
    earliest = draw(st.none() | st.integers(T0, T0 + 6 * HOUR))
    latest = draw(st.none() | st.integers(0, 4 * HOUR))
    preds = draw(st.lists(st.integers(0, i - 1), max_size=2, unique=True)) if i else []
    return Task(
        id=f"K{i}", kind=kind, geometry=geom,
        duration=draw(st.none() | st.integers(0, 2 * HOUR)) if kind not in (
            "search_line", "search_area") else None,
        sweep_width=draw(st.floats(20, 80)),
        earliest=earliest,
        latest=None if latest is None else (earliest or T0) + latest,
        capabilities=frozenset(draw(st.lists(st.sampled_from(CAPS), max_size=2))),
        priority=draw(st.integers(1, 5)),
        precedence=tuple(f"K{j}" for j in preds),
        demand=draw(st.integers(0, 4)) if kind == "supply" else 0,
    )


@st.composite
def teams(draw: st.DrawFn, k: int) -> Team:
    start = T0 + draw(st.integers(0, 3 * HOUR))
    return Team(
        id=f"M{k}", position=draw(coord),
        capabilities=frozenset(draw(st.lists(st.sampled_from(CAPS), max_size=3))),
        speed=draw(st.sampled_from([1.0, 1.4, 8.0])),
        search_speeds=draw(st.sampled_from([{}, {"search_area": 0.5}])),
        shift_start=start, shift_end=start + draw(st.integers(HOUR // 2, 10 * HOUR)),
        capacity=draw(st.integers(0, 8)),
        status=draw(st.sampled_from(["available", "available", "available", "out"])),
    )


@st.composite
def incidents(draw: st.DrawFn) -> Incident:
    n = draw(st.integers(1, 12))
    m = draw(st.integers(1, 4))
    return Incident(
        name="random", period=OperationalPeriod(id="OP1", start=T0, end=T0 + 12 * HOUR),
        tasks=tuple(draw(tasks(i, n)) for i in range(n)),
        teams=tuple(draw(teams(k)) for k in range(m)))


def recompute_violations(plan: Plan, inc: Incident) -> list[str]:
    """The test's own check, sharing nothing with fieldc2.plan.check."""
    tasks_by_id = {t.id: t for t in inc.tasks}
    teams_by_id = {t.id: t for t in inc.teams}
    out: list[str] = []
    ends: dict[str, int] = {}
    starts: dict[str, int] = {}
    for route in plan.routes:
        team = teams_by_id[route.team_id]
        if route.visits and team.status == "out":
            out.append(f"out team {team.id} has tasks")
        t = max(team.shift_start, team.available_from or 0, inc.period.start)
        here = team.position
        load = 0
        for v in route.visits:
            task = tasks_by_id[v.task_id]
            g = task.geometry
            entry = (g.coordinates if isinstance(g, Point) else g.coordinates[0]
                     if isinstance(g, LineString) else
                     tuple(sum(p[i] for p in g.coordinates[0][:-1]) / 4 for i in (0, 1)))
            exit_ = g.coordinates[-1] if isinstance(g, LineString) else entry
            load += task.demand
            starts[v.task_id], ends[v.task_id] = v.start, v.end
            if v.fixed:                      # already under way: only what follows counts
                t, here = v.end, exit_  # type: ignore[assignment]
                continue
            travel = haversine(here, entry) / team.speed  # type: ignore[arg-type]
            if v.arrival < t + travel - 1:
                out.append(f"{v.task_id}: arrives too early for the distance")
            if not task.capabilities <= team.capabilities:
                out.append(f"{v.task_id}: capability")
            if task.earliest is not None and v.start < task.earliest:
                out.append(f"{v.task_id}: before window")
            if task.latest is not None and v.start > task.latest:
                out.append(f"{v.task_id}: after window")
            if v.end > min(team.shift_end, inc.period.end):
                out.append(f"{v.task_id}: after shift end")
            if v.start < v.arrival or v.end < v.start:
                out.append(f"{v.task_id}: timeline order")
            t, here = v.end, exit_  # type: ignore[assignment]
        if load > team.capacity:
            out.append(f"{team.id}: capacity")
    fixed = {v.task_id for r in plan.routes for v in r.visits if v.fixed}
    for tid, start in starts.items():
        for q in tasks_by_id[tid].precedence:
            if tid in fixed or tasks_by_id[q].status == "done":
                continue
            if q not in ends or ends[q] > start:
                out.append(f"{tid}: precedence on {q}")
    return out


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(incidents())
def test_random_plans_break_no_constraint(inc: Incident) -> None:
    plan = solve(inc, time_limit=0.2, seed=1)
    assert validate(plan, inc) == []
    assert recompute_violations(plan, inc) == []
    served = set(plan.assignments)
    unserved = {u.task_id for u in plan.unassigned}
    assert served | unserved == {t.id for t in inc.tasks}
    assert not served & unserved
    for u in plan.unassigned:
        assert u.reason and u.detail
    for route in plan.routes:
        team = inc.team(route.team_id)
        assert team.status != "out"


def small_incident(**team_kw: object) -> Incident:
    team = Team(id="A", position=(8.0, 47.0), shift_start=T0, shift_end=T0 + 4 * HOUR,
                capabilities=frozenset({"medic"}), capacity=3)
    team = msgspec.structs.replace(team, **team_kw)
    here = Point(coordinates=(8.001, 47.0))
    far = Point(coordinates=(8.5, 47.0))  # 38 km: 9 h on foot
    return Incident(
        name="small", period=OperationalPeriod(id="1", start=T0, end=T0 + 12 * HOUR),
        teams=(team,),
        tasks=(
            Task(id="ok", kind="point", geometry=here, duration=600, priority=3),
            Task(id="boat", kind="rescue", geometry=here, capabilities=frozenset({"boat"})),
            Task(id="heavy", kind="supply", geometry=here, demand=5),
            Task(id="late", kind="point", geometry=far, latest=T0 + HOUR),
            Task(id="long", kind="point", geometry=here, duration=5 * HOUR),
            Task(id="after", kind="point", geometry=here, precedence=("boat",)),
        ))


def test_unserved_tasks_carry_the_right_reason() -> None:
    plan = solve(small_incident(), time_limit=0.2)
    reasons = {u.task_id: u.reason for u in plan.unassigned}
    assert reasons == {"boat": "capability", "heavy": "capacity", "late": "time_window",
                       "long": "shift", "after": "precedence"}
    assert "boat" in next(u.detail for u in plan.unassigned if u.task_id == "boat")
    assert list(plan.assignments) == ["ok"]
    assert validate(plan, small_incident()) == []


def test_team_out_reason_and_no_route() -> None:
    inc = small_incident(status="out", capabilities=frozenset({"boat"}))
    plan = solve(inc, time_limit=0.1)
    assert plan.routes == ()
    assert {u.reason for u in plan.unassigned if u.task_id == "boat"} == {"team_out"}


def test_precedence_within_one_team_is_ordered() -> None:
    here = Point(coordinates=(8.001, 47.0))
    inc = Incident(
        name="chain", period=OperationalPeriod(id="1", start=T0, end=T0 + 12 * HOUR),
        teams=(Team(id="A", position=(8.0, 47.0), shift_start=T0, shift_end=T0 + 8 * HOUR),),
        tasks=(Task(id="c", kind="point", geometry=here, duration=600, precedence=("b",)),
               Task(id="b", kind="point", geometry=here, duration=600, precedence=("a",)),
               Task(id="a", kind="point", geometry=Point(coordinates=(8.02, 47.0)),
                    duration=600)))
    plan = solve(inc, time_limit=0.5)
    route = plan.route("A")
    assert route is not None and route.task_ids == ("a", "b", "c")
    assert validate(plan, inc) == []


def test_validate_catches_a_broken_plan() -> None:
    inc = small_incident()
    plan = solve(inc, time_limit=0.1)
    route = plan.routes[0]
    bad = Visit(task_id="boat", arrival=T0, start=T0, end=T0 + 1)
    early = msgspec.structs.replace(route.visits[0], arrival=T0, start=T0)
    broken = msgspec.structs.replace(plan, routes=(
        msgspec.structs.replace(route, visits=(early, bad)),))
    errors = validate(broken, inc)
    assert any("lacks ['boat']" in e for e in errors)
    assert any("both assigned and unassigned" in e for e in errors)
    assert any("ok: arrives" in e for e in errors)


def test_example_incident_plan_and_progress() -> None:
    inc = load_incident(EXAMPLE)
    seen: list[tuple[float, float]] = []
    plan = solve(inc, time_limit=0.6, progress=lambda e, c: seen.append((e, c)))
    assert validate(plan, inc) == []
    assert {u.task_id: u.reason for u in plan.unassigned} == {"W1": "capability"}
    assert len(seen) >= 2 and seen[-1][0] <= 0.7
    assert all(b[0] >= a[0] for a, b in itertools.pairwise(seen))
    assert plan.stats.iterations > 0 and plan.stats.runtime <= 0.8


def test_warm_start_keeps_an_optimal_plan() -> None:
    inc = load_incident(EXAMPLE)
    first = solve(inc, time_limit=0.5)
    again = solve(inc, time_limit=0.1, initial=first, seed=7)
    assert again.objective <= first.objective + 1e-6
    assert validate(again, inc) == []


@pytest.mark.parametrize("n", [0, 1])
def test_empty_inputs_give_empty_plans(n: int) -> None:
    inc = small_incident()
    inc = msgspec.structs.replace(inc, tasks=inc.tasks[:n], teams=())
    plan = solve(inc, time_limit=0.1)
    assert plan.routes == () and len(plan.unassigned) == n


def test_final_check_drops_what_it_blames() -> None:
    from fieldc2.plan.check import Repaired
    from fieldc2.plan.model import SolverStats
    from fieldc2.plan.solver import build_problem, verified
    from fieldc2.plan.travel import StraightLine

    inc = small_incident()
    p = build_problem(inc, StraightLine())
    j = [t.id for t in p.tasks].index("boat")
    smuggled = Repaired(routes={"A": ["boat"]}, timeline={"A": [(j, 10, 10, 10)]})
    plan = verified(p, smuggled, SolverStats(), {})
    assert "boat" not in plan.assignments
    assert {u.task_id: u.reason for u in plan.unassigned}["boat"] == "capability"
    assert validate(plan, inc) == []

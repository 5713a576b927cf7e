"""Re-planning keeps work in hand and changes little."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldc2.errors import PlanError
from fieldc2.plan.incident import load_incident, synthetic_incident
from fieldc2.plan.model import (
    Change,
    Incident,
    Plan,
    Point,
    Task,
    TaskAdded,
    TaskCancelled,
    TaskDone,
    TaskFailed,
    TaskStarted,
    TeamDelayed,
    TeamOut,
)
from fieldc2.plan.replan import compare, replan, updated_incident
from fieldc2.plan.solver import solve, validate
from tests.test_plan_solver import incidents, recompute_violations

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "incident.yaml"


@pytest.fixture(scope="module")
def example() -> tuple[Incident, Plan]:
    inc = load_incident(EXAMPLE)
    return inc, solve(inc, time_limit=0.5, seed=3)


def busiest(plan: Plan) -> str:
    return max(plan.routes, key=lambda r: len(r.visits)).team_id


def test_in_progress_task_stays_fixed(example: tuple[Incident, Plan]) -> None:
    inc, plan = example
    team = busiest(plan)
    route = plan.route(team)
    assert route is not None
    first = route.visits[0]
    started = TaskStarted(task_id=first.task_id, team_id=team, at=first.start)
    other = next(r.team_id for r in plan.routes if r.team_id != team)
    change: list[Change] = [started, TeamDelayed(team_id=other,
                                                 available_from=first.start + 3600)]
    new, report = replan(inc, plan, change, time_limit=0.5)
    kept = new.route(team)
    assert kept is not None and kept.visits[0].fixed
    assert (kept.visits[0].task_id, kept.visits[0].start, kept.visits[0].end) == (
        first.task_id, first.start, first.end)
    assert report.fixed == (first.task_id,)
    assert validate(new, updated_incident(inc, change, plan)) == []
    delayed = new.route(other)
    assert delayed is not None
    assert all(v.start >= first.start + 3600 for v in delayed.visits)


def test_team_out_hands_its_tasks_on(example: tuple[Incident, Plan]) -> None:
    inc, plan = example
    team = busiest(plan)
    route = plan.route(team)
    assert route is not None
    new, report = replan(inc, plan, TeamOut(team_id=team), time_limit=0.5)
    assert new.route(team) is None
    moved = set(route.task_ids)
    assert set(report.changed_tasks) == moved
    assert report.changed == len(moved)
    assert report.kept == len(plan.assignments) - len(moved)
    assert validate(new, updated_incident(inc, TeamOut(team_id=team))) == []


def test_cancelled_and_done_tasks_leave_the_plan(example: tuple[Incident, Plan]) -> None:
    inc, plan = example
    team = busiest(plan)
    route = plan.route(team)
    assert route is not None
    done, gone = route.visits[0], route.visits[1]
    change: list[Change] = [TaskDone(task_id=done.task_id, at=done.end - 60),
                            TaskCancelled(task_id=gone.task_id)]
    new, _ = replan(inc, plan, change, time_limit=0.4)
    assert done.task_id not in new.assignments and gone.task_id not in new.assignments
    assert {done.task_id, gone.task_id}.isdisjoint(u.task_id for u in new.unassigned)
    updated = updated_incident(inc, change, plan)
    assert updated.team(team).available_from == done.end - 60   # freed early, there
    assert validate(new, updated) == []


def test_failed_task_goes_to_another_team_never_back(example: tuple[Incident, Plan]) -> None:
    inc, plan = example
    ground = [t.id for t in inc.teams if "ground" in t.capabilities]
    task_id, a = next((k, a) for k, a in plan.assignments.items()
                      if a.team_id in ground and not inc.task(k).capabilities - {"ground"})
    failed = TaskFailed(task_id=task_id, team_id=a.team_id, at=a.start + 300)
    started = TaskStarted(task_id=task_id, team_id=a.team_id, at=a.start)
    new, report = replan(inc, plan, [started, failed], time_limit=0.5)
    after = updated_incident(inc, [started, failed], plan)
    assert after.task(task_id).status == "planned"
    assert after.task(task_id).excluded_teams == {a.team_id}
    assert after.team(a.team_id).available_from == a.start + 300
    assert new.assignments[task_id].team_id != a.team_id      # another ground team took it
    assert task_id in report.changed_tasks and task_id not in report.fixed
    assert validate(new, after) == []
    # Every team able to do it says UNABLE: it is left out, and the reason says why.
    for team_id in ground:
        after = updated_incident(after, TaskFailed(task_id=task_id, team_id=team_id,
                                                   at=a.start + 600))
    again, _ = replan(after, new, [], time_limit=0.3)
    (left,) = [u for u in again.unassigned if u.task_id == task_id]
    assert left.reason == "capability" and "cannot do it" in left.detail
    assert validate(again, after) == []
    # A late UNABLE for finished work changes nothing.
    done = updated_incident(inc, TaskDone(task_id=task_id, at=a.end), plan)
    assert updated_incident(done, TaskFailed(task_id=task_id, team_id=a.team_id,
                                             at=a.end + 60)) == done


def test_replan_changes_fewer_assignments_than_a_fresh_plan() -> None:
    inc = synthetic_incident(40, 8, seed=11)
    plan = solve(inc, time_limit=1.0, seed=1)
    urgent = Task(id="NEW", kind="rescue", geometry=Point(coordinates=(7.95, 46.81)),
                  duration=1200, priority=5, capabilities=frozenset({"medic"}))
    change = TaskAdded(task=urgent)
    new, report = replan(inc, plan, change, time_limit=1.0, seed=2)
    updated = updated_incident(inc, change)
    fresh = compare(plan, solve(updated, time_limit=1.0, seed=2), updated)
    assert validate(new, updated) == []
    assert report.changed < fresh.changed
    assert report.changed <= 5
    assert report.runtime <= 1.2


def test_default_budget_is_kept_at_incident_size() -> None:
    inc = synthetic_incident(120, 20, seed=5)
    plan = solve(inc, time_limit=1.0)
    out = next(r.team_id for r in plan.routes if r.visits)
    _, report = replan(inc, plan, TeamOut(team_id=out))
    assert report.runtime <= 2.1


def test_now_stops_planning_in_the_past(example: tuple[Incident, Plan]) -> None:
    inc, plan = example
    now = inc.period.start + 2 * 3600
    new, _ = replan(inc, plan, TaskCancelled(task_id="W1"), time_limit=0.3, now=now)
    assert all(v.start >= now for r in new.routes for v in r.visits)


@pytest.mark.parametrize("change", [
    TaskCancelled(task_id="nope"),
    TeamOut(team_id="nope"),
    TaskFailed(task_id="nope", team_id="nope", at=0),
    TaskAdded(task=Task(id="S1", kind="point", geometry=Point(coordinates=(7.9, 46.8)))),
])
def test_bad_changes_are_plan_errors(example: tuple[Incident, Plan], change: object) -> None:
    inc, plan = example
    with pytest.raises(PlanError):
        replan(inc, plan, change, time_limit=0.1)  # type: ignore[arg-type]


@st.composite
def change_for(draw: st.DrawFn, inc: Incident, plan: Plan) -> object:
    options = ["out", "cancel", "add", "delay", "fail"]
    busy = [r for r in plan.routes if r.visits]
    if busy:
        options.append("start")
    pick = draw(st.sampled_from(options))
    team = draw(st.sampled_from(inc.teams))
    task = draw(st.sampled_from(inc.tasks))
    if pick == "out":
        return TeamOut(team_id=team.id)
    if pick == "cancel":
        return TaskCancelled(task_id=task.id)
    if pick == "fail":
        return TaskFailed(task_id=task.id, team_id=team.id, at=team.shift_start + 600)
    if pick == "delay":
        return TeamDelayed(team_id=team.id, available_from=team.shift_start + 3600,
                           position=(8.03, 47.03))
    if pick == "start":
        route = draw(st.sampled_from(busy))
        v = route.visits[0]
        return [TaskStarted(task_id=v.task_id, team_id=route.team_id, at=v.start),
                TaskAdded(task=Task(id="NEW", kind="point",
                                    geometry=Point(coordinates=(8.02, 47.02)), duration=600))]
    return TaskAdded(task=Task(id="NEW", kind="rescue", geometry=Point(coordinates=(8.01, 47.01)),
                               duration=900, priority=5, precedence=(task.id,)))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), inc=incidents())
def test_random_replans_stay_valid(data: st.DataObject, inc: Incident) -> None:
    plan = solve(inc, time_limit=0.1)
    change = data.draw(change_for(inc, plan))
    new, report = replan(inc, plan, change, time_limit=0.15)  # type: ignore[arg-type]
    after = updated_incident(inc, change, plan)  # type: ignore[arg-type]
    assert validate(new, after) == []
    assert recompute_violations(new, after) == []
    for task_id, a in new.assignments.items():
        assert a.team_id not in after.task(task_id).excluded_teams
    for fixed in report.fixed:
        before = plan.assignments.get(fixed)
        now = new.assignments[fixed]
        assert before is None or before.team_id == now.team_id

#!/usr/bin/env python3
"""Incident-sized planning: solve N tasks x M teams, then re-plan after one change.

The incident is ``fieldc2.plan.incident.synthetic_incident`` (seeded): point,
rescue, supply and small area tasks in an 8 km square, ground teams on foot
with k9/medic mixed in, one team in five a 4x4 with capacity; 30 % of tasks
have a 3-hour window, 5 % a predecessor.  For each time limit the full
``solve`` is timed (travel matrices, PyVRP, precedence repair, verification);
then three single changes are re-planned with the default 2 s budget, and the
same change is also planned from scratch to show how many assignments a
re-plan saves from changing.

Usage::

    .venv/bin/python bench/planning.py                       # 200 x 30, limits 2 5 9
    .venv/bin/python bench/planning.py --tasks 500 --teams 60 --limits 10
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from fieldc2.plan.incident import synthetic_incident
from fieldc2.plan.model import Incident, Plan, Point, Task, TaskAdded, TeamDelayed, TeamOut
from fieldc2.plan.replan import DEFAULT_REPLAN_S, compare, replan, updated_incident
from fieldc2.plan.solver import solve, validate


def served_priority(plan: Plan, inc: Incident) -> int:
    return sum(inc.task(t).priority for t in plan.assignments)


def changes(inc: Incident, plan: Plan) -> list[tuple[str, object]]:
    busy = max(plan.routes, key=lambda r: len(r.visits))
    first = busy.visits[0]
    urgent = Task(id="NEW", kind="rescue", geometry=Point(coordinates=(7.95, 46.81)),
                  duration=1800, priority=5, capabilities=frozenset({"medic"}))
    return [
        ("task added (priority 5 rescue)", TaskAdded(task=urgent)),
        (f"team {busy.team_id} out", TeamOut(team_id=busy.team_id)),
        (f"team {busy.team_id} delayed 1 h", TeamDelayed(team_id=busy.team_id,
                                                         available_from=first.start + 3600)),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--teams", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limits", type=float, nargs="+", default=[2.0, 5.0, 9.0],
                    help="solve time limits (s) to measure")
    ap.add_argument("--replan", type=float, default=DEFAULT_REPLAN_S)
    args = ap.parse_args(argv)
    inc = synthetic_incident(args.tasks, args.teams, seed=args.seed)
    total = sum(t.priority for t in inc.tasks)
    load = os.getloadavg()
    print(f"{inc.name}: {len(inc.tasks)} tasks (priority sum {total}), {len(inc.teams)} teams; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print("| time limit s | wall s | iterations | served | priority served | "
          "travel km | objective | violations |")
    print("|---|---|---|---|---|---|---|---|")
    plan = None
    for limit in args.limits:
        started = time.perf_counter()
        plan = solve(inc, time_limit=limit, seed=args.seed)
        wall = time.perf_counter() - started
        km = sum(r.distance_m for r in plan.routes) / 1000
        print(f"| {limit:g} | {wall:.2f} | {plan.stats.iterations} | "
              f"{len(plan.assignments)}/{len(inc.tasks)} | {served_priority(plan, inc)}/{total} | "
              f"{km:.1f} | {plan.objective:.0f} | {len(validate(plan, inc))} |")
    assert plan is not None
    print(f"\nRe-plan from the {args.limits[-1]:g} s plan, budget {args.replan:g} s:\n")
    print("| change | wall s | changed | kept | added | objective | "
          "fresh plan changed | violations |")
    print("|---|---|---|---|---|---|---|---|")
    for label, change in changes(inc, plan):
        started = time.perf_counter()
        new, rep = replan(inc, plan, change, time_limit=args.replan,  # type: ignore[arg-type]
                          seed=args.seed)
        wall = time.perf_counter() - started
        after = updated_incident(inc, change, plan)  # type: ignore[arg-type]
        fresh = compare(plan, solve(after, time_limit=args.replan, seed=args.seed), after)
        print(f"| {label} | {wall:.2f} | {rep.changed} | {rep.kept} | {rep.added} | "
              f"{new.objective:.0f} | {fresh.changed} | {len(validate(new, after))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

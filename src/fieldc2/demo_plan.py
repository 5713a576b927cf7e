"""The planning half of ``fieldc2 demo``: the example incident, moved to today,
solved with a progress bar, published as orders, exported at the end.

Kept apart from :mod:`fieldc2.demo` (the actors and the loop) and
:mod:`fieldc2.demo_view` (the screen) so each stays small.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fieldc2.errors import ConfigError
from fieldc2.orders.model import OrderState, OrderStatus
from fieldc2.orders.service import OrderService, PublishResult
from fieldc2.plan.geo import Coord
from fieldc2.plan.incident import load_incident
from fieldc2.plan.model import Incident, Plan
from fieldc2.plan.solver import solve

log = logging.getLogger("fieldc2.demo")

#: The example incident shipped with the sources (``make demo`` runs from them).
EXAMPLE_INCIDENT = Path(__file__).resolve().parents[2] / "examples" / "incident.yaml"


def find_incident(path: Path | None) -> Incident:
    """The incident file asked for, or the shipped example."""
    chosen = path or EXAMPLE_INCIDENT
    if path is None and not chosen.exists():
        raise ConfigError(f"the example incident {chosen} is missing (an installed copy "
                          "without the sources); give one with --incident FILE")
    return load_incident(chosen)


def rebase(incident: Incident, start: int) -> Incident:
    """The incident with every time moved so that its period starts at ``start``:
    the example is written for a fixed day, the demo plays it today."""
    shift = start - incident.period.start

    def moved(t: int | None) -> int | None:
        return None if t is None else t + shift

    replace = msgspec.structs.replace
    tasks = tuple(replace(t, earliest=moved(t.earliest), latest=moved(t.latest))
                  for t in incident.tasks)
    teams = tuple(replace(t, shift_start=t.shift_start + shift, shift_end=t.shift_end + shift,
                          available_from=moved(t.available_from)) for t in incident.teams)
    period = replace(incident.period, start=incident.period.start + shift,
                     end=incident.period.end + shift)
    return replace(incident, period=period, tasks=tasks, teams=teams)


async def solve_visibly(incident: Incident, time_limit: float, seed: int,
                        console: Console | None) -> Plan:
    """Solve in a worker thread (the command post keeps serving meanwhile),
    with a progress bar on ``console`` when there is one."""
    if console is None:
        return await asyncio.to_thread(solve, incident, time_limit=time_limit, seed=seed)
    columns = (TextColumn(f"planning [b]{incident.name}[/b]"), BarColumn(),
               TimeElapsedColumn(), TextColumn("of {task.total:.0f} s   best {task.fields[best]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        job = bar.add_task("solve", total=time_limit, best="-")

        def progress(elapsed: float, best: float) -> None:
            bar.update(job, completed=min(elapsed, time_limit), best=f"{best:,.0f}")

        plan = await asyncio.to_thread(solve, incident, time_limit=time_limit, seed=seed,
                                       progress=progress)
        bar.update(job, completed=time_limit)
    return plan


def plan_summary(incident: Incident, plan: Plan, published: PublishResult | None) -> str:
    """One paragraph: what was planned, what was left out, what was not sent."""
    served = sum(len(r.visits) for r in plan.routes)
    text = (f"{incident.name}: {served} of {len(incident.tasks)} tasks planned for "
            f"{sum(1 for r in plan.routes if r.visits)} teams "
            f"(solver {plan.stats.runtime:.1f} s, {plan.stats.iterations} iterations)")
    for item in plan.unassigned:
        text += f"; {item.task_id} left out ({item.reason}: {item.detail})"
    if published is not None:
        text += f"\n{published.plan_id}: {len(published.orders)} orders published"
        for warning in published.warnings:
            text += f"; {warning}"
    return text


def withdraw_earlier(orders: OrderService, incident: Incident) -> int:
    """Cancel the orders an earlier run left open (publishing an empty plan
    supersedes them), so that a run starts clean: the devices are new, and an
    old order they never heard of would otherwise stay open or be kept."""
    left = len(orders.book.open_orders())
    if left:
        log.info("withdrawing %d open order(s) of an earlier run", left)
        orders.publish(incident, Plan(incident=incident.name, period=incident.period),
                       actor="demo")
    return left


def silent_team(incident: Incident, plan: Plan, asked: str | None) -> str | None:
    """The team whose devices will never answer: ``asked``, or the last team
    with devices and work (in the example, the 4x4 whose tasks start late)."""
    if asked is not None:
        return asked
    working = [t.id for t in incident.teams
               if t.tak_uids and (r := plan.route(t.id)) is not None and r.visits]
    return working[-1] if len(working) > 1 else None


def current_orders(orders: OrderService, plan_id: str) -> list[OrderStatus]:
    """This demo's orders, in planned order of start."""
    mine = [s for s in orders.status() if s.order.plan == plan_id]
    return sorted(mine, key=lambda s: (s.order.team_id, s.order.due))


def tally(statuses: Sequence[OrderStatus]) -> dict[str, int]:
    """Recipients per state, plus ``overdue`` for alerts raised."""
    counts: dict[str, int] = {}
    for status in statuses:
        for r in status.recipients:
            counts[r.state.value] = counts.get(r.state.value, 0) + 1
            if r.alerted:
                counts["overdue"] = counts.get("overdue", 0) + 1
    order = [s.value for s in OrderState] + ["overdue"]
    return {k: counts[k] for k in order if k in counts}


async def write_exports(incident: Incident, plan: Plan, out_dir: Path,
                        activity: Mapping[str, list[tuple[int, str]]],
                        tracks: Mapping[str, Sequence[Coord]]) -> list[Path]:
    """Every export of the plan (ICS 204/214, timeline, GeoJSON, KML, GPX),
    written in a worker thread: matplotlib and fpdf2 take a few seconds."""
    from fieldc2.plan.exports import export_all

    # fpdf2's font subsetting logs every table it prunes at INFO: noise here.
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    walked = {task: list(coords) for task, coords in tracks.items() if len(coords) >= 2}
    return await asyncio.to_thread(export_all, incident, plan, out_dir,
                                   activity=dict(activity), tracks=walked)

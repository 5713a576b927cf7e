"""From a plan to orders: one order per served task, text a team can act on.

Sans-I/O and deterministic but for the order ids (passed in via ``new_id``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fieldc2.model.precedence import Precedence
from fieldc2.orders.model import Order, new_order_id
from fieldc2.plan.geo import Coord
from fieldc2.plan.model import Incident, Plan, Route, Task, Team, Visit, entry_point, exit_point
from fieldc2.protocol.compact_geo import quantise_point

#: Task priority from which an order goes IMMEDIATE (priorities are >= 1,
#: larger is more important).  FLASH is kept for emergencies, never planned.
IMMEDIATE_FROM_PRIORITY = 3
#: Longest order text: ATAK shows a GeoChat in full, but a radio link carries
#: it in a few frames; the instructions are cut beyond this.
MAX_ORDER_TEXT = 600

_KIND_WORDS = {"search_area": "Search area", "search_line": "Search along",
               "point": "Go to", "rescue": "Rescue at", "supply": "Deliver to",
               "transport": "Transport at"}


def _clock(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%MZ")


def precedence_of(task: Task) -> Precedence:
    """IMMEDIATE for high-priority tasks, PRIORITY for the rest."""
    if task.priority >= IMMEDIATE_FROM_PRIORITY:
        return Precedence.IMMEDIATE
    return Precedence.PRIORITY


def order_text(order_id: str, task: Task, team: Team, visit: Visit) -> str:
    """What the team reads: what, where (by name), when, and how to answer."""
    what = f"{_KIND_WORDS.get(task.kind, 'Task')} {task.name or task.id}"
    lon, lat = entry_point(task.geometry)
    text = (f"{order_id} {precedence_of(task).name} to {team.callsign}: {what} "
            f"({lat:.5f}, {lon:.5f}). Start {_clock(visit.start)}, "
            f"finish {_clock(visit.end)}.")
    if task.instructions:
        text += f" {task.instructions.strip()}"
    tail = f" Reply ACK, STARTED, DONE or UNABLE with {order_id}."
    return text[:MAX_ORDER_TEXT - len(tail)] + tail


def compose(incident: Incident, plan: Plan, *, now: int, origin: str, plan_id: str = "",
            keep: frozenset[str] = frozenset(),
            new_id: Callable[[], str] = new_order_id) -> tuple[list[Order], list[str]]:
    """Orders for every served task of a team with devices, and warnings for
    what cannot be ordered (teams without ``tak_uids``).  Tasks in ``keep``
    already have a live order with the same team and get no new one."""
    orders: list[Order] = []
    warnings: list[str] = []
    for route in plan.routes:
        if not route.visits:
            continue
        team = incident.team(route.team_id)
        if not team.tak_uids:
            warnings.append(f"team {team.id} has no tak_uids: its {len(route.visits)} "
                            "task(s) were not sent; add its device uids and publish again")
            continue
        for visit in route.visits:
            if visit.task_id in keep:
                continue
            task = incident.task(visit.task_id)
            oid = new_id()
            # on the radio's grid, so a node rebuilds the signed bytes from the compact Order
            lon, lat = entry_point(task.geometry)
            lat, lon = quantise_point(lat, lon)
            orders.append(Order(
                id=oid, task_id=task.id, team_id=team.id,
                text=order_text(oid, task, team, visit), recipients=team.tak_uids,
                issued=now, due=visit.start, lat=lat, lon=lon,
                precedence=precedence_of(task).name, origin=origin, plan=plan_id))
    return orders, warnings


def route_coords(incident: Incident, route: Route) -> tuple[Coord, ...]:
    """The team's path: its position, then entry and exit of each task."""
    team = incident.team(route.team_id)
    coords: list[Coord] = [team.position]
    for visit in route.visits:
        geometry = incident.task(visit.task_id).geometry
        for point in (entry_point(geometry), exit_point(geometry)):
            if point != coords[-1]:
                coords.append(point)
    return tuple(coords)

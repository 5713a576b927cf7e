"""A small incident and a hand-made plan for the order tests (no solver:
the orders, not the optimisation, are under test)."""

from __future__ import annotations

from fieldc2.plan.model import (
    Incident,
    LineString,
    OperationalPeriod,
    Plan,
    Point,
    Polygon,
    Route,
    Task,
    Team,
    Visit,
)

T0 = 1_800_000_000


def incident(devices: dict[str, tuple[str, ...]]) -> Incident:
    """Three tasks (point, line, area) and one team per ``devices`` entry."""
    tasks = (
        Task(id="T1", kind="rescue", name="Hiker at the hut", priority=3,
             geometry=Point(coordinates=(7.01, 45.01)), instructions="Bring the litter."),
        Task(id="T2", kind="search_line", name="Trail 5",
             geometry=LineString(coordinates=((7.02, 45.02), (7.03, 45.025), (7.04, 45.03)))),
        Task(id="T3", kind="search_area", name="Sector B",
             geometry=Polygon(coordinates=(((7.05, 45.05), (7.06, 45.05), (7.06, 45.06),
                                            (7.05, 45.06), (7.05, 45.05)),))),
    )
    teams = tuple(Team(id=tid, name=tid.upper(), position=(7.0, 45.0), shift_start=T0,
                       shift_end=T0 + 8 * 3600, tak_uids=uids)
                  for tid, uids in devices.items())
    return Incident(name="Test incident", tasks=tasks, teams=teams,
                    period=OperationalPeriod(id="OP1", start=T0, end=T0 + 8 * 3600))


def plan(routes: dict[str, tuple[str, ...]]) -> Plan:
    """A plan giving each team its tasks in order, 30 min apart."""
    built = []
    for team_id, task_ids in routes.items():
        visits = tuple(Visit(task_id=t, arrival=T0 + 1800 * i, start=T0 + 1800 * i,
                             end=T0 + 1800 * i + 1200) for i, t in enumerate(task_ids, 1))
        built.append(Route(team_id=team_id, depart=T0, visits=visits))
    return Plan(incident="Test incident",
                period=OperationalPeriod(id="OP1", start=T0, end=T0 + 8 * 3600),
                routes=tuple(built))

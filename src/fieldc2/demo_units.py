"""The simulated devices of ``fieldc2 demo``: the incident's teams, and walkers.

Every device is a real TCP client (:class:`~fieldc2.sim.units.FieldUnit`);
team devices follow their orders (:class:`~fieldc2.sim.teams.TeamMember`),
walkers search expanding squares and chat now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random

from fieldc2.plan.model import Incident
from fieldc2.sim.teams import ScenarioClock, TeamMember
from fieldc2.sim.units import FieldUnit, SquareWalk, chat

CALLSIGNS = ["ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL",
             "INDIA", "JULIET", "KILO", "LIMA"]
BASE = (47.2692, 11.4041)  # Innsbruck: where walkers go when nothing is planned
_METRES_PER_DEGREE = 111_320.0
#: Metres between the devices of one team at the start, so that their
#: markers do not sit on top of each other.
DEVICE_SPACING_M = 8.0
#: Wall-clock seconds between walkers' All-Chat messages: some chat, not a flood.
CHAT_INTERVAL_S = 12.0
#: Degrees around the centre that walkers start in (about a kilometre).
WALKER_SPREAD_DEG = 0.01


def _offset(lon: float, lat: float, east_m: float) -> tuple[float, float]:
    return lon + east_m / (_METRES_PER_DEGREE * math.cos(math.radians(lat))), lat


def team_units(incident: Incident | None, scenario: ScenarioClock | None, seed: int,
               receipt_delay: tuple[float, float]
               ) -> tuple[dict[str, list[TeamMember]], list[FieldUnit]]:
    """One order-following device per ``tak_uids`` entry of every team
    (team id -> its members, and the units to run)."""
    members: dict[str, list[TeamMember]] = {}
    units: list[FieldUnit] = []
    if incident is None or scenario is None:
        return members, units
    for team in incident.teams:
        for i, uid in enumerate(team.tak_uids):
            callsign = team.callsign if len(team.tak_uids) == 1 else f"{team.callsign}-{i + 1}"
            member = TeamMember(uid=uid, callsign=callsign, speed=team.speed,
                                position=_offset(*team.position, i * DEVICE_SPACING_M),
                                clock=scenario, rng=random.Random(f"{seed}/{uid}"),
                                receipt_delay=receipt_delay)
            members.setdefault(team.id, []).append(member)
            units.append(FieldUnit(uid=uid, callsign=callsign, behaviour=member))
    return members, units


def walkers(count: int, incident: Incident | None) -> list[FieldUnit]:
    """Background units walking expanding squares near the incident's staging
    area (or Innsbruck), with callsigns no team of the incident uses."""
    lat, lon = BASE
    taken: set[str] = set()
    if incident is not None:
        taken = {t.callsign for t in incident.teams}
        centre = incident.staging or (incident.teams[0].position if incident.teams else None)
        if centre is not None:
            lon, lat = centre
    names = [c for c in CALLSIGNS if c not in taken] or CALLSIGNS
    return [FieldUnit(uid=f"SIM-{names[i % len(names)]}-{i}",
                      callsign=names[i % len(names)] + ("" if i < len(names) else str(i)),
                      behaviour=SquareWalk(
                          lat + random.uniform(-WALKER_SPREAD_DEG, WALKER_SPREAD_DEG),
                          lon + random.uniform(-WALKER_SPREAD_DEG, WALKER_SPREAD_DEG)),
                      group="Cyan" if i % 3 else "Red")
            for i in range(count)]


async def chatter(units: list[FieldUnit], stop: asyncio.Event) -> None:
    """Every so often a walker sends an All-Chat message, like a real team."""
    lines = ["Sector 3 searched, nothing found", "Moving to checkpoint", "Need water resupply",
             "Trail blocked by rockfall", "Subject's backpack found"]
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CHAT_INTERVAL_S)
        if stop.is_set() or not units:
            return
        unit = random.choice(units)
        unit.say(chat(unit.uid, unit.callsign, random.choice(lines)))

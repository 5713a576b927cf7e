"""Team starts from the devices' live positions.

A file's team position is where the team was when someone wrote the file; the
server knows where the team's devices last reported.  Before solving or
re-planning through the server, each team whose devices (``Team.tak_uids``)
reported recently starts from the newest of those reports, and the plan says
so (``Plan.live_positions``), so that the command post can tell a live start
from a typed one.

Sans-I/O: the command post's picture is read by the caller
(``fieldc2.api.plan_api``) and handed in as :class:`Fix` values with ``now``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import msgspec

from fieldc2.plan.geo import Coord, distance_m
from fieldc2.plan.model import Incident, LivePosition, Plan, Team

LIVE_MAX_AGE_S = 1800
"""Oldest report used as a team's start: a team on foot covers about 2 km in
30 minutes, so an older fix is no better than the planned position; radio
nodes on a slow mesh still report well within it."""

CLOCK_SKEW_S = 300
"""Reports timed this far in the future are still taken (phone clocks drift);
beyond it the report's time is not trusted and the fix is ignored."""

MOVED_WARNING_M = 500.0
"""Publishing a plan whose team start is this far from the team's live
position warns the planner: the route's first leg would be wrong."""


class Fix(msgspec.Struct, frozen=True, kw_only=True):
    """One device's reported position."""

    uid: str
    position: Coord
    at: int
    """Report time, epoch seconds."""


def usable(lat: float, lon: float) -> bool:
    """A real position: in range, finite, and not (0, 0), which TAK devices
    send when they have no fix."""
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return False
    return -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0 and (lat, lon) != (0.0, 0.0)


def newest_fixes(fixes: Iterable[Fix]) -> dict[str, Fix]:
    """uid -> its newest fix (a device may appear once per audience)."""
    out: dict[str, Fix] = {}
    for fix in fixes:
        if fix.uid not in out or fix.at > out[fix.uid].at:
            out[fix.uid] = fix
    return out


def team_fix(team: Team, fixes: Mapping[str, Fix], now: int,
             max_age: int = LIVE_MAX_AGE_S) -> Fix | None:
    """The newest recent fix of any of the team's devices."""
    found = [fixes[u] for u in team.tak_uids if u in fixes]
    recent = [f for f in found if now - max_age <= f.at <= now + CLOCK_SKEW_S]
    return max(recent, key=lambda f: f.at, default=None)


def with_live_positions(incident: Incident, fixes: Mapping[str, Fix], now: int,
                        max_age: int = LIVE_MAX_AGE_S
                        ) -> tuple[Incident, tuple[LivePosition, ...]]:
    """``incident`` with each team that has a recent fix starting there, and
    the starts used.  A team was at its fix at the fix's time, so it is not
    planned to leave from there any earlier (within its shift)."""
    teams: list[Team] = []
    used: list[LivePosition] = []
    for team in incident.teams:
        fix = team_fix(team, fixes, now, max_age) if team.status != "out" else None
        if fix is None:
            teams.append(team)
            continue
        at = min(fix.at, team.shift_end)
        avail = at if at > team.start_time() else team.available_from
        teams.append(msgspec.structs.replace(team, position=fix.position, available_from=avail))
        used.append(LivePosition(team_id=team.id, uid=fix.uid, position=fix.position,
                                 at=fix.at))
    return msgspec.structs.replace(incident, teams=tuple(teams)), tuple(used)


def moved_teams(incident: Incident, plan: Plan, fixes: Mapping[str, Fix], now: int,
                max_age: int = LIVE_MAX_AGE_S) -> list[str]:
    """Warnings for planned teams whose live position is far from the start
    the plan assumed: that plan was made without their live positions."""
    live = {p.team_id for p in plan.live_positions}
    out: list[str] = []
    for route in plan.routes:
        if not route.visits or route.team_id in live:
            continue
        team = incident.team(route.team_id)
        fix = team_fix(team, fixes, now, max_age)
        if fix is None:
            continue
        off = distance_m(team.position, fix.position)
        if off > MOVED_WARNING_M:
            out.append(f"team {team.id} ({team.callsign}) reported {off / 1000:.1f} km from "
                       "the plan's start; solve on the server (POST /api/plan/solve) to "
                       "plan from live positions")
    return out

"""Team starts from live positions: which reports count, and what they change."""

from __future__ import annotations

import msgspec

from fieldc2.plan.live import (
    CLOCK_SKEW_S,
    LIVE_MAX_AGE_S,
    Fix,
    moved_teams,
    newest_fixes,
    usable,
    with_live_positions,
)
from fieldc2.plan.model import LivePosition
from tests.orders_helpers import T0, incident, plan

NOW = T0 + 3600


def fix(uid: str, at: int, where: tuple[float, float] = (7.2, 45.2)) -> Fix:
    return Fix(uid=uid, position=where, at=at)


def test_no_fix_and_bad_positions_are_not_used() -> None:
    assert usable(45.0, 7.0)
    assert not usable(0.0, 0.0)                      # TAK's "no GPS fix"
    assert not usable(91.0, 7.0) and not usable(45.0, 181.0)
    assert not usable(float("nan"), 7.0)


def test_newest_report_of_any_team_device_wins() -> None:
    found = newest_fixes([fix("a1", NOW - 50, (7.1, 45.1)), fix("a1", NOW - 90),
                          fix("a2", NOW - 10, (7.3, 45.3)), fix("a2", NOW - 20)])
    assert found["a1"].position == (7.1, 45.1) and found["a2"].position == (7.3, 45.3)
    inc = incident({"a": ("a1", "a2"), "b": ("b1",), "c": ()})
    moved, used = with_live_positions(inc, found, NOW)
    assert used == (LivePosition(team_id="a", uid="a2", position=(7.3, 45.3), at=NOW - 10),)
    assert moved.team("a").position == (7.3, 45.3)
    assert moved.team("a").available_from == NOW - 10     # was there then, not before
    assert moved.team("b") == inc.team("b") and moved.team("c") == inc.team("c")


def test_old_future_and_out_teams_keep_the_file_position() -> None:
    inc = incident({"a": ("a1",), "b": ("b1",), "c": ("c1",), "d": ("d1",)})
    inc = msgspec.structs.replace(inc, teams=tuple(
        msgspec.structs.replace(t, status="out") if t.id == "c" else t for t in inc.teams))
    fixes = {"a1": fix("a1", NOW - LIVE_MAX_AGE_S - 1), "b1": fix("b1", NOW + CLOCK_SKEW_S + 1),
             "c1": fix("c1", NOW), "d1": fix("d1", NOW + CLOCK_SKEW_S)}
    moved, used = with_live_positions(inc, fixes, NOW)
    assert [u.team_id for u in used] == ["d"]
    assert all(moved.team(t) == inc.team(t) for t in "abc")
    # A report from before the shift starts moves the team but not its start time.
    early, _ = with_live_positions(inc, {"a1": fix("a1", T0 - 60)}, T0)
    assert early.team("a").position == (7.2, 45.2) and early.team("a").available_from is None


def test_publishing_an_offline_plan_warns_about_moved_teams() -> None:
    inc = incident({"a": ("a1",), "b": ("b1",)})
    made = plan({"a": ("T1",), "b": ("T2",)})
    near = fix("b1", NOW, (7.001, 45.001))                # ~140 m: not worth a word
    warnings = moved_teams(inc, made, {"a1": fix("a1", NOW), "b1": near}, NOW)
    assert len(warnings) == 1 and "team a" in warnings[0] and "27.2 km" in warnings[0]
    live = msgspec.structs.replace(made, live_positions=(
        LivePosition(team_id="a", uid="a1", position=(7.2, 45.2), at=NOW),))
    assert moved_teams(inc, live, {"a1": fix("a1", NOW)}, NOW) == []

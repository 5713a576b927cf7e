"""``fieldc2 demo`` end to end, and the order-following team device on its own.

The scenario test runs the real demo (command post, TCP units, the solver,
orders, exports) for a few seconds on fast scenario time.  The device tests
feed a :class:`TeamMember` the CoT the order service really sends and read
what it answers with the order service's own parser.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldc2.demo import DemoOptions, run_demo
from fieldc2.demo_plan import EXAMPLE_INCIDENT, rebase
from fieldc2.errors import CotError
from fieldc2.model.cot import Event, EventFacts
from fieldc2.orders import cot
from fieldc2.orders.compose import compose
from fieldc2.orders.model import Order, OrderState, Signal, message_id
from fieldc2.plan.incident import load_incident
from fieldc2.plan.model import Incident
from fieldc2.protocol.cot_xml import parse_event, serialize_event
from fieldc2.sim.teams import Phase, ScenarioClock, TeamMember
from tests.conftest import make_config
from tests.orders_helpers import T0, incident, plan

CP = cot.Sender(uid="fieldc2-test", callsign="COMMAND POST")
UID = "ANDROID-t1"
STALE_MS = (T0 + 86_400) * 1000


# --- the demo, end to end ------------------------------------------------------------


async def test_demo_plans_publishes_and_follows_orders(tmp_path: Path) -> None:
    options = DemoOptions(units=5, duration=8.0, live=False, speedup=400.0, solve_time=1.0,
                          ack_timeout=2.0, receipt_delay=(0.1, 0.4))
    result = await run_demo(make_config(tmp_path), options)

    assert result.plan is not None and result.plan_id.startswith("PLAN-")
    assert result.silent_team == "T3"  # the last team with devices and work
    by_team: dict[str, list[tuple[OrderState, bool]]] = {}
    for status in result.orders:
        assert status.order.plan == result.plan_id
        by_team.setdefault(status.order.team_id, []).extend(
            (r.state, r.alerted) for r in status.recipients)
    assert set(by_team) == {"T1", "T2", "T3"}  # T4 has no devices: nothing sent
    for team in ("T1", "T2"):  # answering teams acknowledged everything, on time
        assert all(s.rank >= OrderState.ACKNOWLEDGED.rank and not alerted
                   for s, alerted in by_team[team]), by_team[team]
    answered = by_team["T1"] + by_team["T2"]
    assert any(s is OrderState.DONE for s, _ in answered), answered
    assert any(s is OrderState.IN_PROGRESS for s, _ in answered) or \
        sum(s is OrderState.DONE for s, _ in answered) >= 2
    # The silent team's device got its orders but never answered: overdue.
    assert by_team["T3"] and all(s is OrderState.DELIVERED and alerted
                                 for s, alerted in by_team["T3"]), by_team["T3"]

    names = {p.name for p in result.exports}
    assert {"ics204.pdf", "ics214_T1.pdf", "timeline.png", "plan.geojson", "plan.kml",
            "plan.gpx", "team_T1.gpx"} <= names
    for path in result.exports:
        assert path.parent == tmp_path / "exports" and path.stat().st_size > 0, path
    assert (tmp_path / "exports" / "ics204.pdf").read_bytes().startswith(b"%PDF")
    geojson = json.loads((tmp_path / "exports" / "plan.geojson").read_text())
    walked = [f for f in geojson["features"] if f["properties"].get("layer") == "track"]
    assert walked, "the patterns the teams walked are in the export"


def test_example_incident_plays_today() -> None:
    example = load_incident(EXAMPLE_INCIDENT)
    moved = rebase(example, 1_900_000_020)
    shift = 1_900_000_020 - example.period.start
    assert moved.period.end - moved.period.start == example.period.end - example.period.start
    assert [t.shift_end - shift for t in moved.teams] == [t.shift_end for t in example.teams]
    assert [t.latest and t.latest - shift for t in moved.tasks] == \
        [t.latest for t in example.tasks]
    assert [u for t in moved.teams for u in t.tak_uids] == \
        ["ANDROID-a1f3c2", "ANDROID-a1f3c3", "ANDROID-b77e01", "ANDROID-c0ffee"]


# --- one device following its orders --------------------------------------------------


def _orders(inc: Incident) -> list[Order]:
    routes: dict[str, tuple[str, ...]] = {"t1": ("T1", "T2", "T3")}
    orders, warnings = compose(inc, plan(routes), now=T0, origin=CP.uid, plan_id="PLAN-1")
    assert not warnings
    return orders


def _member(clock: ScenarioClock, *, silent: bool = False) -> TeamMember:
    return TeamMember(uid=UID, callsign="T1", position=(7.0, 45.0), speed=50.0, clock=clock,
                      rng=random.Random(1), silent=silent, receipt_delay=(1.0, 2.0))


def _send(member: TeamMember, pair: tuple[Event, EventFacts], now: float) -> None:
    """Through the wire format, so the member parses what a device gets."""
    event, facts = parse_event(serialize_event(pair[0]))
    member.receive(event, facts, now)


def _publish(member: TeamMember, inc: Incident, orders: list[Order], now: float) -> None:
    for order in orders:
        _send(member, cot.task_marker(inc.task(order.task_id), order, 0, STALE_MS), now)
    for order in orders:
        _send(member, cot.order_chat(order, UID, "T1", CP, "sig", 0, STALE_MS), now)


def _reports(messages: list[bytes]) -> list[cot.Report]:
    found = []
    for data in messages:
        event, facts = parse_event(data)
        report = cot.read_report(event, facts, UID, CP)
        assert report is not None, data
        found.append(report)
    return found


def test_member_receipts_then_route_with_started_and_done() -> None:
    inc = incident({"t1": (UID,)})
    orders = _orders(inc)
    clock = ScenarioClock(origin=T0, speedup=100.0)
    member = _member(clock)
    _publish(member, inc, orders, now=0.0)
    assert member.due(0.5) == []  # nobody looks at a phone that fast
    receipts = _reports(member.due(5.0))
    mids = {message_id(o.id, UID) for o in orders}
    assert Counter(r.signal for r in receipts if isinstance(r, cot.Receipt)) == \
        {Signal.DELIVERED: 3, Signal.ACKNOWLEDGED: 3}
    assert {r.message_id for r in receipts if isinstance(r, cot.Receipt)} == mids
    assert member.fix(5.0)[:2] == (45.0, 7.0)  # read, but scenario time has not started

    clock.start(10.0)
    replies: list[cot.Report] = []
    positions = []
    for step in range(1, 400):
        now = 10.0 + step * 0.5
        replies += _reports(member.due(now))
        positions.append(member.fix(now))
    said = [(r.signal, r.order_id) for r in replies if isinstance(r, cot.Reply)]
    expected = [(signal, o.id) for o in orders for signal in (Signal.STARTED, Signal.DONE)]
    assert said == expected  # in route order, each started before done
    assert member.phase is Phase.IDLE and member.done == [o.id for o in orders]
    assert max(p.speed for p in positions) > 0 and len({p[:2] for p in positions}) > 50
    assert set(member.walked()) == {"T2", "T3"}  # the line and the area (not the point)
    assert member.walked()["T2"][-1] == (7.04, 45.03)  # ended at the line's far end


def test_member_drops_a_cancelled_order_and_silent_member_says_nothing() -> None:
    inc = incident({"t1": (UID,)})
    orders = _orders(inc)
    clock = ScenarioClock(origin=T0, speedup=100.0)
    member = _member(clock)
    _publish(member, inc, orders, now=0.0)
    member.due(5.0)
    cancel = cot.text_chat(CP, f"{orders[0].id} CANCELLED: superseded. Do not start it.",
                           "m-1", 0, STALE_MS, to_uid=UID, to_callsign="T1")
    _send(member, cancel, 6.0)
    clock.start(10.0)
    replies = [r for now in range(11, 400) for r in _reports(member.due(float(now)))]
    assert {r.order_id for r in replies if isinstance(r, cot.Reply)} == \
        {o.id for o in orders[1:]}

    quiet = _member(ScenarioClock(origin=T0, speedup=100.0), silent=True)
    _publish(quiet, inc, orders, now=0.0)
    quiet.clock.start(1.0)
    assert [m for now in range(0, 200) for m in quiet.due(float(now))] == []
    assert quiet.fix(200.0)[:2] == (45.0, 7.0)


def test_member_turns_to_an_earlier_order_read_while_walking() -> None:
    inc = incident({"t1": (UID,)})
    orders = _orders(inc)
    clock = ScenarioClock(origin=T0, speedup=20.0)
    clock.start(0.0)
    member = _member(clock)
    _publish(member, inc, orders[2:], now=0.0)  # the last task's order comes first
    member.due(4.0)
    assert member.phase is Phase.TRAVEL and member.current is not None
    assert member.current.order_id == orders[2].id
    _publish(member, inc, orders[:2], now=4.0)
    replies = [r for now in range(5, 2000) for r in _reports(member.due(now / 2))]
    said = [(r.signal, r.order_id) for r in replies if isinstance(r, cot.Reply)]
    assert said == [(signal, o.id) for o in orders for signal in (Signal.STARTED, Signal.DONE)]


def test_member_refuses_an_order_with_nonsense_fields() -> None:
    inc = incident({"t1": (UID,)})
    order = _orders(inc)[0]
    member = _member(ScenarioClock(origin=T0, speedup=100.0))
    event, _ = cot.order_chat(order, UID, "T1", CP, "sig", 0, STALE_MS)
    broken = serialize_event(event).replace(f'lat="{order.lat:.7f}"'.encode(), b'lat="north"')
    assert broken != serialize_event(event)
    with pytest.raises(CotError, match="unusable b-t-f"):
        member.receive(*parse_event(broken), 0.0)
    assert member.due(10.0) == [] and not member.orders


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.floats(min_value=0.05, max_value=60.0), min_size=1, max_size=60),
       arrivals=st.permutations(range(3)))
def test_member_route_does_not_depend_on_tick_size_or_arrival_order(
        steps: list[float], arrivals: list[int]) -> None:
    """However coarse the ticks and in whatever order the orders arrive, each
    task is started once and done once, in the planned order."""
    inc = incident({"t1": (UID,)})
    orders = _orders(inc)
    clock = ScenarioClock(origin=T0, speedup=100.0)
    member = _member(clock)
    _publish(member, inc, [orders[i] for i in arrivals], now=0.0)
    clock.start(5.0)
    now, replies = 5.0, []
    for step in [*steps, 10_000.0, 10_000.0]:
        now += step
        replies += [r for r in _reports(member.due(now)) if isinstance(r, cot.Reply)]
    said = [(r.signal, r.order_id) for r in replies]
    assert said == [(signal, o.id) for o in orders for signal in (Signal.STARTED, Signal.DONE)]

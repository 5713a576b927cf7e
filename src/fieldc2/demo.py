"""``fieldc2 demo``: the product's main job end to end, in one asyncio program.

1. A command post starts on the embedded defaults.
2. Simulated field teams connect over TCP: one TAK-like client per device
   uid in the incident (``examples/incident.yaml``), plus background walkers.
3. The incident, moved to today, is planned by the real solver (progress bar).
4. The plan is published: every team's devices get their orders as GeoChat.
5. The teams answer like field teams (:mod:`fieldc2.sim.teams`): receipts,
   then they walk their route on accelerated scenario time, reporting STARTED
   and DONE; one team never answers, so the overdue alert fires.
6. The live view shows the orders per device, the clients and the traffic;
   at the end the exports (ICS 204/214, timeline, GeoJSON/KML/GPX) are
   written to ``<data_dir>/exports``.

More actors (e.g. radio nodes through a relay) join through
:func:`start_extra_actors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.logging import RichHandler

from fieldc2.config import Config
from fieldc2.demo_plan import (
    current_orders,
    find_incident,
    plan_summary,
    rebase,
    silent_team,
    solve_visibly,
    tally,
    withdraw_earlier,
    write_exports,
)
from fieldc2.demo_units import chatter, team_units, walkers
from fieldc2.demo_view import view
from fieldc2.orders.model import OrderStatus
from fieldc2.plan.model import Incident, Plan
from fieldc2.server import CommandPost
from fieldc2.sim.teams import ScenarioClock, TeamMember
from fieldc2.sim.units import FieldUnit

#: Seconds between summary lines without the live view.
SUMMARY_INTERVAL_S = 5.0
#: Longest wait between overdue checks in the demo: the ack timeout is short
#: there, so the alert should follow it closely.
DEMO_CHECK_INTERVAL_S = 1.0
#: Longest wait for the simulated units to connect before planning starts.
CONNECT_WAIT_S = 5.0
_ORDER_ID = re.compile(r"\bORD-[0-9A-F]{8}\b")
log = logging.getLogger("fieldc2.demo")


@dataclass(frozen=True)
class DemoOptions:
    """What ``fieldc2 demo`` runs (each field is a command-line flag)."""

    units: int = 6
    """Simulated devices in all: the incident's team devices, then walkers."""
    duration: float = 0.0
    """Stop after this many seconds; 0 = until Ctrl+C."""
    live: bool = True
    """Rich live view; otherwise a summary line every few seconds."""
    incident: Path | None = None
    """Incident file; None = ``examples/incident.yaml``."""
    plan: bool = True
    """Plan, publish and follow orders; False = only units reporting."""
    speedup: float = 60.0
    """Scenario seconds per wall-clock second for the teams' work."""
    solve_time: float = 3.0
    """Solver time limit, seconds (the example needs less than a second)."""
    ack_timeout: float = 20.0
    """Wall-clock seconds before an unacknowledged order raises the alert."""
    seed: int = 0
    receipt_delay: tuple[float, float] = (0.5, 3.0)
    """Range of a device's delay (wall-clock s) before each receipt."""
    silent_team: str | None = None
    """Team whose devices never answer; None = the last team with work."""


@dataclass
class DemoResult:
    """What a demo run did (for the tests and the closing lines)."""

    plan: Plan | None = None
    plan_id: str = ""
    silent_team: str | None = None
    orders: list[OrderStatus] = field(default_factory=list)
    exports: list[Path] = field(default_factory=list)


@dataclass
class DemoContext:
    """What extra actors get: the running post, the stop signal, the scenario."""

    post: CommandPost
    stop: asyncio.Event
    incident: Incident | None
    scenario: ScenarioClock | None
    units: list[FieldUnit]
    claimed: set[str] = field(default_factory=set)
    """Device uids an extra actor runs itself: no TCP unit is started for them."""


ActorFactory = Callable[[DemoContext], Awaitable[list["asyncio.Task[None]"]]]
"""Starts more simulated actors; they must end soon after ``ctx.stop`` is set."""


async def start_extra_actors(ctx: DemoContext,
                             factories: Sequence[ActorFactory]) -> list[asyncio.Task[None]]:
    """The seam for actors beyond the TCP field units (the radio segment:
    LoRa nodes through a relay).  Each factory starts its own tasks."""
    tasks: list[asyncio.Task[None]] = []
    for factory in factories:
        tasks += await factory(ctx)
    return tasks


@contextlib.contextmanager
def _logging_to(console: Console | None) -> Iterator[None]:
    """Log lines go above the live view instead of tearing through it."""
    if console is None:
        yield
        return
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [RichHandler(console=console, show_path=False)]
    try:
        yield
    finally:
        root.handlers = saved


def _demo_config(config: Config, options: DemoOptions) -> Config:
    orders = dataclasses.replace(
        config.orders, ack_timeout=options.ack_timeout,
        check_interval=min(config.orders.check_interval, DEMO_CHECK_INTERVAL_S))
    return dataclasses.replace(config, orders=orders)


class _Scene:
    """The running demo's state that the screen and the end need."""

    def __init__(self, post: CommandPost, incident: Incident | None,
                 scenario: ScenarioClock | None) -> None:
        self.post = post
        self.incident = incident
        self.scenario = scenario
        self.started = time.monotonic()
        self.summary = ""
        self.result = DemoResult()
        self.names: dict[str, str] = {}
        """Team and task ids -> names, for the screen."""
        if incident is not None:
            self.names = {t.id: t.callsign for t in incident.teams}
            self.names.update({t.id: t.name for t in incident.tasks})

    def orders(self) -> list[OrderStatus]:
        if self.post.orders is None or not self.result.plan_id:
            return []
        return current_orders(self.post.orders, self.result.plan_id)

    def render(self) -> Group:
        return view(self.post, self.started, scenario=self.scenario, summary=self.summary,
                    statuses=self.orders(), names=self.names)

    def line(self) -> str:
        post = self.post
        text = (f"clients={len(post.clients)} received={post.stats.received} "
                f"delivered={post.stats.delivered} picture={len(post.picture)}")
        if self.result.plan_id:
            counts = tally(self.orders())
            text += " orders=" + ",".join(f"{k}:{v}" for k, v in counts.items())
        return text


async def _plan_and_publish(scene: _Scene, members: dict[str, list[TeamMember]],
                            options: DemoOptions, console: Console | None) -> None:
    incident, post, scenario = scene.incident, scene.post, scene.scenario
    assert incident is not None and post.orders is not None and scenario is not None
    plan = await solve_visibly(incident, options.solve_time, options.seed, console)
    silent = silent_team(incident, plan, options.silent_team)
    for member in members.get(silent or "", []):
        member.silent = True
    published = post.orders.publish(incident, plan, actor="demo")
    scenario.start(time.time())
    scene.result.plan, scene.result.plan_id = plan, published.plan_id
    scene.result.silent_team = silent
    scene.summary = plan_summary(incident, plan, published)
    if silent is not None:
        scene.summary += (f"\n{incident.team(silent).callsign} ({silent}) never answers: "
                          f"its orders go overdue after {options.ack_timeout:g} s")
    if console is None:
        print(scene.summary, flush=True)


async def _watch(scene: _Scene, stop: asyncio.Event, console: Console | None) -> None:
    if console is None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SUMMARY_INTERVAL_S)
            print(scene.line(), flush=True)
        return
    with Live(scene.render(), console=console, refresh_per_second=2, screen=False) as live:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            live.update(scene.render())


async def _finish(scene: _Scene, members: dict[str, list[TeamMember]],
                  console: Console | None) -> None:
    """Collect the orders and write the exports while the order book is open."""
    incident, plan, orders = scene.incident, scene.result.plan, scene.post.orders
    if incident is None or plan is None or orders is None:
        return
    scene.result.orders = scene.orders()
    # The order book outlives a run: the ICS 214 tells of this run's orders
    # only, on the scenario's clock (the plan's), not the wall clock.
    mine = {s.order.id for s in scene.result.orders}
    when = scene.scenario or float
    activity = {t.id: [(int(when(at)), text) for at, text in orders.activity(t.id)
                       if set(_ORDER_ID.findall(text)) & mine] for t in incident.teams}
    tracks = {task: coords for team in members.values() if team
              for task, coords in team[0].walked().items()}
    out = scene.post.config.data_dir / "exports"
    scene.result.exports = await write_exports(incident, plan, out, activity, tracks)
    write = console.print if console is not None else print
    counts = tally(scene.result.orders)
    write("orders at the end: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    write(f"exports written to {out}:")
    for path in scene.result.exports:
        write(f"  {path}")


async def _connected(post: CommandPost, count: int, stop: asyncio.Event) -> None:
    """Wait (briefly) until the units are connected: orders then find them
    online, as at an incident where the phones are on before the plan is."""
    deadline = time.monotonic() + CONNECT_WAIT_S
    while len(post.clients) < count and time.monotonic() < deadline and not stop.is_set():
        await asyncio.sleep(0.05)


async def _actors(post: CommandPost, scene: _Scene, options: DemoOptions,
                  stop: asyncio.Event, extra_actors: Sequence[ActorFactory]
                  ) -> tuple[dict[str, list[TeamMember]], list[asyncio.Task[None]]]:
    """Start every simulated device and extra actor; team id -> its members."""
    members, fleet = team_units(scene.incident, scene.scenario, options.seed,
                                options.receipt_delay)
    background = walkers(max(0, options.units - len(fleet)), scene.incident)
    fleet += background
    ctx = DemoContext(post, stop, scene.incident, scene.scenario, fleet)
    tasks = await start_extra_actors(ctx, extra_actors)
    fleet = [u for u in fleet if u.uid not in ctx.claimed]
    tasks += [asyncio.create_task(u.run(post.config.bind, post.tcp_port, stop)) for u in fleet]
    tasks.append(asyncio.create_task(chatter(background, stop)))
    await _connected(post, len(fleet), stop)
    return members, tasks


async def run_demo(config: Config, options: DemoOptions | None = None, *,
                   extra_actors: Sequence[ActorFactory] = ()) -> DemoResult:
    """Run the demo until ``options.duration`` passes or SIGINT/SIGTERM."""
    options = options or DemoOptions()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    timer = loop.call_later(options.duration, stop.set) if options.duration else None
    incident = None
    if options.plan:
        incident = rebase(find_incident(options.incident), int(time.time()) // 60 * 60)
        config = _demo_config(config, options)
    scenario = ScenarioClock(incident.period.start, options.speedup) if incident else None
    console = Console() if options.live else None
    try:
        with _logging_to(console):
            async with CommandPost(config) as post:
                if incident is not None and post.orders is not None:
                    withdraw_earlier(post.orders, incident)
                scene = _Scene(post, incident, scenario)
                members, tasks = await _actors(post, scene, options, stop, extra_actors)
                if incident is not None:
                    await _plan_and_publish(scene, members, options, console)
                await _watch(scene, stop, console)
                await asyncio.gather(*tasks, return_exceptions=True)
                await _finish(scene, members, console)
                return scene.result
    finally:
        if timer is not None:
            timer.cancel()
        for sig in signals:
            loop.remove_signal_handler(sig)


async def demo_main(config: Config, options: DemoOptions) -> None:
    """``fieldc2 demo`` (the result is for tests)."""
    await run_demo(config, options)

"""``fieldc2 demo``: a command post, simulated field units, and a live view."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time

from rich.console import Console, Group
from rich.live import Live
from rich.logging import RichHandler
from rich.panel import Panel
from rich.table import Table

from fieldc2.config import Config
from fieldc2.protocol.cot_xml import format_time
from fieldc2.server import CommandPost
from fieldc2.sim.units import FieldUnit, chat

CALLSIGNS = ["ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL",
             "INDIA", "JULIET", "KILO", "LIMA"]
BASE = (47.2692, 11.4041)  # Innsbruck: a mountain rescue area


def _view(post: CommandPost, started: float) -> Group:
    elapsed = max(time.monotonic() - started, 1e-6)
    stats = post.stats
    header = (
        f"[b]fieldc2 command post[/b]  CoT TCP {post.config.bind}:{post.tcp_port}   "
        f"Marti {'https' if post.ca is not None else 'http'}://{post.config.bind}:"
        f"{post.http_port}/Marti/api/version\n"
        f"clients {len(post.clients)}   picture {len(post.picture)}   "
        f"received {stats.received} ({stats.received / elapsed:.1f}/s)   "
        f"delivered {stats.delivered} ({stats.delivered / elapsed:.1f}/s)   "
        "[dim]Ctrl+C stops[/dim]"
    )
    clients = Table(title="Connected clients", expand=True)
    for column in ("callsign", "uid", "address", "format", "groups", "in", "out", "last seen"):
        clients.add_column(column)
    now = time.time()
    for c in sorted(post.client_list(), key=lambda c: c.callsign or c.uid):
        clients.add_row(c.callsign or "-", c.uid or "-", c.addr, c.format.value,
                        ",".join(sorted(c.groups)), str(c.events_in), str(c.events_out),
                        f"{now - c.last_seen:.1f} s ago")
    events = Table(title="Recent events", expand=True)
    for column in ("time", "type", "uid", "from", "where / what"):
        events.add_column(column)
    for item in list(post.recent)[-10:]:
        e = item.event
        what = f"{e.lat:.5f}, {e.lon:.5f}" if e.type.startswith("a-") else e.detail.xml[-60:]
        sender = post.clients.get(item.sender)
        events.add_row(format_time(e.time)[11:19], e.type, e.uid[:28],
                       sender.callsign if sender else "-", what)
    return Group(Panel(header), clients, events)


async def _chatter(units: list[FieldUnit], post: CommandPost, stop: asyncio.Event) -> None:
    """Every so often one unit sends an All-Chat message, like a real team."""
    lines = ["Sector 3 searched, nothing found", "Moving to checkpoint", "Need water resupply",
             "Trail blocked by rockfall", "Subject's backpack found"]
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 12.0)
        if stop.is_set() or not units:
            return
        unit = random.choice(units)
        unit.outbox.append(chat(unit.uid, unit.callsign, random.choice(lines)))


async def _live(post: CommandPost, started: float, stop: asyncio.Event,
                console: Console) -> None:
    with Live(_view(post, started), console=console, refresh_per_second=2,
              screen=False) as view:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            view.update(_view(post, started))


async def run_demo(config: Config, *, units: int, duration: float, live: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with CommandPost(config) as post:
        fleet = [
            FieldUnit(uid=f"SIM-{CALLSIGNS[i % len(CALLSIGNS)]}-{i}",
                      callsign=CALLSIGNS[i % len(CALLSIGNS)] + ("" if i < 12 else str(i)),
                      base_lat=BASE[0] + random.uniform(-0.01, 0.01),
                      base_lon=BASE[1] + random.uniform(-0.01, 0.01),
                      group="Cyan" if i % 3 else "Red")
            for i in range(units)
        ]
        tasks = [asyncio.create_task(u.run(config.bind, post.tcp_port, stop)) for u in fleet]
        tasks.append(asyncio.create_task(_chatter(fleet, post, stop)))
        if duration:
            loop.call_later(duration, stop.set)
        started = time.monotonic()
        if live:
            console = Console()
            # Log lines go above the live view instead of tearing through it.
            root = logging.getLogger()
            saved = root.handlers[:]
            root.handlers = [RichHandler(console=console, show_path=False)]
            try:
                await _live(post, started, stop, console)
            finally:
                root.handlers = saved
        else:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 5.0)
                print(f"clients={len(post.clients)} received={post.stats.received} "
                      f"delivered={post.stats.delivered} picture={len(post.picture)}", flush=True)
        await asyncio.gather(*tasks, return_exceptions=True)

"""The screen of ``fieldc2 demo``: the command post, its orders, its clients.

Pure rendering: everything shown is read from the running
:class:`~fieldc2.server.CommandPost` and its order book at call time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fieldc2.orders.model import OrderState, OrderStatus
from fieldc2.protocol.cot_xml import format_time
from fieldc2.server import CommandPost
from fieldc2.sim.teams import ScenarioClock

#: Recent events listed under the orders; the orders matter more on screen.
RECENT_ROWS = 8

#: Characters of an event's text shown in the recent-events table.
MAX_WHAT = 80
_REMARKS = re.compile(r"<remarks[^>]*>([^<]*)</remarks>")

_STATE_STYLE = {
    OrderState.ISSUED: "dim", OrderState.DELIVERED: "yellow",
    OrderState.ACKNOWLEDGED: "cyan", OrderState.IN_PROGRESS: "bold blue",
    OrderState.DONE: "bold green", OrderState.FAILED: "bold red",
    OrderState.CANCELLED: "strike dim",
}


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%MZ")


def header(post: CommandPost, started: float, scenario: ScenarioClock | None,
           summary: str) -> Panel:
    elapsed = max(time.monotonic() - started, 1e-6)
    stats = post.stats
    text = (
        f"[b]fieldc2 command post[/b]  CoT TCP {post.config.bind}:{post.tcp_port}   "
        f"Marti {'https' if post.ca is not None else 'http'}://{post.config.bind}:"
        f"{post.http_port}/Marti/api/version\n"
        f"clients {len(post.clients)}   picture {len(post.picture)}   "
        f"received {stats.received} ({stats.received / elapsed:.1f}/s)   "
        f"delivered {stats.delivered} ({stats.delivered / elapsed:.1f}/s)   "
        "[dim]Ctrl+C stops[/dim]"
    )
    if scenario is not None:
        text += (f"\nscenario time [b]{_clock(scenario(time.time()))}[/b] "
                 f"(x{scenario.speedup:g})   {summary}")
    return Panel(text)


def _recipient(post: CommandPost, uid: str, state: OrderState, alerted: bool) -> Text:
    endpoint = post.endpoints.get(uid)
    who = endpoint.callsign if endpoint is not None and endpoint.callsign else uid
    cell = Text(f"{who} ")
    cell.append(state.value, style=_STATE_STYLE[state])
    if alerted:
        cell.append(" OVERDUE", style="bold white on red")
    return cell


def orders_table(post: CommandPost, statuses: Sequence[OrderStatus],
                 names: Mapping[str, str]) -> Table:
    """One row per order; ``names`` gives team and task ids a readable name."""
    table = Table(title="Orders (state per device)", expand=True)
    for column in ("order", "team", "task", "start", "devices"):
        table.add_column(column, no_wrap=column not in ("task", "devices"))
    for status in statuses:
        order = status.order
        cells = Text(", ").join(_recipient(post, r.recipient, r.state, r.alerted)
                                for r in status.recipients)
        task = f"{order.task_id} {names.get(order.task_id, '')}".strip()
        table.add_row(order.id, names.get(order.team_id, order.team_id), task,
                      _clock(order.due), cells)
    return table


def clients_table(post: CommandPost) -> Table:
    clients = Table(title="Connected clients", expand=True)
    for column in ("callsign", "uid", "address", "format", "groups", "in", "out", "last seen"):
        clients.add_column(column)
    now = time.time()
    for c in sorted(post.client_list(), key=lambda c: c.callsign or c.uid):
        clients.add_row(c.callsign or "-", c.uid or "-", c.addr, c.format.value,
                        ",".join(sorted(c.groups)), str(c.events_in), str(c.events_out),
                        f"{now - c.last_seen:.1f} s ago")
    return clients


def _what(detail: str) -> str:
    """A chat's text, or the end of any other detail."""
    found = _REMARKS.search(detail)
    return found.group(1)[:MAX_WHAT] if found else detail[-MAX_WHAT:]


def events_table(post: CommandPost) -> Table:
    events = Table(title="Recent events", expand=True)
    for column in ("time", "type", "uid", "from", "where / what"):
        events.add_column(column)
    for item in list(post.recent)[-RECENT_ROWS:]:
        e = item.event
        what = f"{e.lat:.5f}, {e.lon:.5f}" if e.type.startswith("a-") else _what(e.detail.xml)
        sender = post.clients.get(item.sender)
        events.add_row(format_time(e.time)[11:19], e.type, e.uid[:28],
                       sender.callsign if sender else "-", what)
    return events


def view(post: CommandPost, started: float, *, scenario: ScenarioClock | None = None,
         summary: str = "", statuses: Sequence[OrderStatus] = (),
         names: Mapping[str, str] | None = None) -> Group:
    """The whole screen; the orders panel only once a plan is published."""
    parts: list[Panel | Table] = [header(post, started, scenario, summary)]
    if statuses:
        parts.append(orders_table(post, statuses, names or {}))
    parts += [clients_table(post), events_table(post)]
    return Group(*parts)

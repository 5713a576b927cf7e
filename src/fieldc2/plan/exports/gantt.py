"""The plan's timeline as a Gantt chart (PNG or SVG), for the briefing wall.

One row per team, in the incident's order; per visit a thin hatched bar for
the travel to it, a dotted line for waiting, and a solid bar for the work,
coloured by task kind (or priority) and labelled with the task id where it
fits.  Red ticks mark each team's shift start and end, dashed lines the
operational period; tasks left out are listed under the chart with the
reason.  The figure grows with the number of teams and unassigned tasks, so
30 teams and 200 tasks stay readable (about a third of an inch per row).

Rendering uses matplotlib's object API with the Agg canvas: no pyplot, no
global figure state, no display; safe to call from a server thread.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from typing import Literal

from matplotlib import colormaps, rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fieldc2.plan.exports.common import (
    KIND_COLOURS,
    check_plan,
    fmt_clock,
    fmt_time,
    task_index,
    team_colours,
)
from fieldc2.plan.model import Incident, Plan, Task, Visit

ROW_IN = 0.34
"""Height of one team's row: fits a 7 pt label inside a bar, keeps 30 teams
on about 10 inches."""

HEADER_IN = 1.3
"""Title, legend and time axis."""

UNASSIGNED_LINE_IN = 0.17
UNASSIGNED_COLUMNS = 3

TICK_STEPS_S = (900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_TICKS = 16
"""At most this many time ticks: labels of 14 inches of axis must not touch."""

MIN_BAR_PX = 4.0
"""A task with no work time (a check at a point) still shows as a sliver."""

LABEL_PX_PER_CHAR = 5.5
"""Rough width of a 7 pt character at 100 dpi, to decide if a label fits."""


def gantt_size(incident: Incident, plan: Plan, width_in: float = 14.0) -> tuple[float, float]:
    """(width, height) of the figure in inches."""
    rows = max(1, len(incident.teams))
    listed = math.ceil(len(plan.unassigned) / UNASSIGNED_COLUMNS)
    below = (0.4 + listed * UNASSIGNED_LINE_IN) if plan.unassigned else 0.0
    return (width_in, HEADER_IN + 0.6 + rows * ROW_IN + below)


def gantt(plan: Plan, incident: Incident, fmt: Literal["png", "svg"] = "png", *,
          color_by: Literal["kind", "priority"] = "kind", width_in: float = 14.0,
          dpi: int = 100) -> bytes:
    """The timeline as PNG or SVG bytes (size: :func:`gantt_size` x dpi)."""
    check_plan(incident, plan)
    w, h = gantt_size(incident, plan, width_in)
    fig = Figure(figsize=(w, h), dpi=dpi)
    FigureCanvasAgg(fig)
    chart_h = len(incident.teams or [None]) * ROW_IN
    bottom = h - HEADER_IN - chart_h
    ax = fig.add_axes((1.6 / w, bottom / h, (w - 1.9) / w, chart_h / h))
    _draw(ax, plan, incident, color_by, axes_px=(w - 1.9) * dpi)
    fig.suptitle(f"{incident.name} - operational period {plan.period.id}: "
                 f"{fmt_time(plan.period.start)} to {fmt_time(plan.period.end)}",
                 y=1 - 0.12 / h, fontsize=11, fontweight="bold")
    _legend(fig, plan, incident, color_by, h)
    _unassigned(fig, plan, incident, (bottom - 0.45) / h, h)
    buf = io.BytesIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "fieldc2"}), \
            warnings.catch_warnings():
        # A name in a script DejaVu lacks (CJK) renders as boxes; that must
        # not fail the whole export.
        warnings.filterwarnings("ignore", message="Glyph .* missing", category=UserWarning)
        fig.savefig(buf, format=fmt, dpi=dpi, metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def _colour(task: Task, color_by: str, prio: Normalize) -> str:
    if color_by == "priority":
        return to_hex(colormaps["YlOrRd"](0.25 + 0.75 * float(prio(task.priority))))
    return KIND_COLOURS.get(task.kind, "#999999")


def _draw(ax: Axes, plan: Plan, incident: Incident, color_by: str, axes_px: float) -> None:
    """Bars go in one collection per team and kind of bar (``broken_barh``):
    a patch per bar made 30 x 200 charts take seconds to build."""
    tasks = task_index(incident)
    prios = [t.priority for t in incident.tasks] or [1]
    prio = Normalize(min(prios), max(max(prios), min(prios) + 1))
    colours = team_colours(incident)
    t0, t1 = _time_span(plan, incident)
    px_per_s = axes_px / (t1 - t0)
    rows = range(len(incident.teams))
    ax.broken_barh([(t0, t1 - t0)], (-0.5, max(1, len(rows))), facecolors="white", zorder=0)
    for row, team in enumerate(incident.teams):
        if row % 2:
            ax.broken_barh([(t0, t1 - t0)], (row - 0.5, 1), facecolors="#f4f4f4", zorder=0)
        ax.broken_barh([(team.shift_start, team.shift_end - team.shift_start)],
                       (row - 0.45, 0.9), facecolors=colours[team.id], alpha=0.08, zorder=1)
        route = plan.route(team.id)
        _visits(ax, row, route.visits if route else (), tasks, color_by, prio, px_per_s)
    edges = [(e, row) for row, t in enumerate(incident.teams)
             for e in (t.shift_start, t.shift_end)]
    ax.vlines([e for e, _ in edges], [r - 0.45 for _, r in edges],
              [r + 0.45 for _, r in edges], colors="#c00000", lw=1.6, zorder=4)
    for edge in (plan.period.start, plan.period.end):
        ax.axvline(edge, color="black", ls="--", lw=1, zorder=5)
    ax.set_xlim(t0, t1)
    ax.set_ylim(max(1, len(rows)) - 0.5, -0.5)
    ax.set_yticks(rows, [t.callsign if t.callsign == t.id else f"{t.callsign} ({t.id})"
                         for t in incident.teams], fontsize=8)
    ticks = _ticks(t0, t1)
    ax.set_xticks(ticks, [fmt_clock(t) for t in ticks], fontsize=8)
    ax.xaxis.tick_top()
    ax.grid(axis="x", color="#cccccc", lw=0.5, zorder=0.5)


def _visits(ax: Axes, y: int, visits: Sequence[Visit], tasks: dict[str, Task],
            color_by: str, prio: Normalize, px_per_s: float) -> None:
    travel = [(v.arrival - v.travel_s, v.travel_s) for v in visits if v.travel_s > 0]
    if travel:
        ax.broken_barh(travel, (y - 0.11, 0.22), facecolors="white", edgecolors="#555555",
                       hatch="////", lw=0.5, zorder=2)
    waits = [v for v in visits if v.start > v.arrival]
    if waits:
        ax.hlines([y] * len(waits), [v.arrival for v in waits], [v.start for v in waits],
                  colors="#555555", linestyles=":", lw=1, zorder=2)
    if not visits:
        return
    least = MIN_BAR_PX / px_per_s
    ax.broken_barh([(v.start, max(v.end - v.start, least)) for v in visits], (y - 0.31, 0.62),
                   facecolors=[_colour(tasks[v.task_id], color_by, prio) for v in visits],
                   edgecolors="black", lw=0.5, zorder=3)
    for v in visits:
        if (v.end - v.start) * px_per_s >= LABEL_PX_PER_CHAR * len(v.task_id) + 4:
            ax.text((v.start + v.end) / 2, y, v.task_id, ha="center", va="center",
                    fontsize=7, zorder=6, clip_on=True)


def _time_span(plan: Plan, incident: Incident) -> tuple[int, int]:
    """The period, widened to every shift and visit, with a small margin."""
    starts = [plan.period.start, *(t.shift_start for t in incident.teams),
              *(v.arrival - v.travel_s for r in plan.routes for v in r.visits)]
    ends = [plan.period.end, *(t.shift_end for t in incident.teams),
            *(r.end for r in plan.routes)]
    t0, t1 = min(starts), max(ends)
    pad = max(60, (t1 - t0) // 50)
    return t0 - pad, t1 + pad


def _ticks(t0: int, t1: int) -> list[int]:
    step = next((s for s in TICK_STEPS_S if (t1 - t0) / s <= MAX_TICKS), TICK_STEPS_S[-1])
    first = -(-t0 // step) * step
    return list(range(first, t1 + 1, step))


def _legend(fig: Figure, plan: Plan, incident: Incident, color_by: str, h: float) -> None:
    handles: list[Patch] = []
    if color_by == "kind":
        kinds = dict.fromkeys(t.kind for t in incident.tasks)
        handles += [Patch(color=KIND_COLOURS[k], label=k.replace("_", " ")) for k in kinds]
    else:
        handles.append(Patch(color=to_hex(colormaps["YlOrRd"](0.9)), label="high priority"))
        handles.append(Patch(color=to_hex(colormaps["YlOrRd"](0.25)), label="low priority"))
    handles.append(Patch(facecolor="white", edgecolor="#555555", hatch="////", label="travel"))
    handles.append(Patch(color="#c00000", label="shift start/end"))
    handles.append(Patch(facecolor="white", edgecolor="black", ls="--", label="period"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 1 - 0.3 / h))


def _unassigned(fig: Figure, plan: Plan, incident: Incident, top: float, h: float) -> None:
    if not plan.unassigned:
        return
    tasks = task_index(incident)
    fig.text(0.02, top, f"Unassigned tasks ({len(plan.unassigned)}):", fontsize=9,
             fontweight="bold", va="top")
    per_col = math.ceil(len(plan.unassigned) / UNASSIGNED_COLUMNS)
    for i, u in enumerate(plan.unassigned):
        col, line = divmod(i, per_col)
        task = tasks[u.task_id]
        name = f" {task.name}" if task.name else ""
        text = f"{u.task_id}{name} ({task.kind}, prio {task.priority}): {u.reason}"
        fig.text(0.02 + col / UNASSIGNED_COLUMNS, top - (0.22 + line * UNASSIGNED_LINE_IN) / h,
                 text[:70], fontsize=7.5, va="top")

#!/usr/bin/env python3
"""Link benchmark on virtual time: the seeded field exercise over every link profile.

For each link profile (``--profiles``) and loss rate (``--loss``) one
exercise (:mod:`fieldc2.sim.exercise`) runs: ``--nodes`` field nodes and a
relay on one simulated channel, positions every 30 s, texts and reports
(ROUTINE/PRIORITY), IMMEDIATE reports and FLASH texts (``--immediate-rate``,
``--flash-rate`` per node per hour, higher than the exercise default so the
percentiles rest on more than a handful of messages), signed IMMEDIATE
orders with acks, and a few server-side tracks the relay pushes down.  No partition,
no attacker: this measures the link, the acceptance test
(``tests/test_dil_exercise.py``) measures the hard cases.

Printed as markdown tables:

1. delivery ratio and latency p50/p95 (submit -> application) by precedence;
2. airtime used against the duty-cycle budget (busiest field node, relay),
   channel utilisation, tracks the relay held fresh per minute (a fix at
   most 60 s old) and the picture's distance to the truth.

All links are one shared channel (half-duplex where the profile says so),
including Iridium SBD, where a real deployment has one modem per node: its
row shows what one shared 20 s-per-session medium can carry, not a fleet of
modems.  ``--plot`` writes a figure (matplotlib Agg), ``docs/dil-bench.png``
by default.  Virtual time: a 20-minute, 20-node exercise takes a few
seconds of CPU (15 runs: about 2-4 minutes on a shared 2-core machine).
"channel busy" is capped at 100 % (a frame still on the air at the end).

Run: ``.venv/bin/python bench/dil.py --plot``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fieldc2.model.precedence import Precedence
from fieldc2.sim.exercise import Exercise, Scenario
from fieldc2.sim.exercise_metrics import ExerciseResult

PROFILES = ("lora-long-fast", "vhf-ax25-1200", "iridium-sbd", "satellite-ip", "lan")
LOSSES = (0.0, 0.1, 0.3)
DEFAULT_PLOT = Path(__file__).resolve().parent.parent / "docs" / "dil-bench.png"


@dataclass(frozen=True)
class Run:
    link: str
    loss: float
    result: ExerciseResult
    utilisation: float
    wall: float


def run_one(args: argparse.Namespace, link: str, loss: float) -> Run:
    scenario = Scenario(seed=args.seed, nodes=args.nodes, link=link, duration=args.duration,
                        loss=loss, quiet_tail=min(600.0, args.duration / 4),
                        flash_rate=args.flash_rate, immediate_rate=args.immediate_rate)
    start = time.perf_counter()
    exercise = Exercise(scenario)
    result = exercise.run()
    wall = time.perf_counter() - start
    channel = next(iter(exercise.net.channels.values()))
    return Run(link, loss, result, channel.utilisation(args.duration), wall)


def _s(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def delivery_table(runs: list[Run]) -> list[str]:
    classes = list(reversed(Precedence))
    head = "| link | loss | " + " | ".join(
        f"{p.name} delivered | {p.name} p50 s | {p.name} p95 s" for p in classes) + " |"
    lines = [head, "|---|---:|" + "---:|---:|---:|" * len(classes)]
    for run in runs:
        cells = []
        for prec in classes:
            c = run.result.by_class[prec]
            cells += [f"{c.delivered}/{c.submitted}", _s(c.p50), _s(c.p95)]
        lines.append(f"| {run.link} | {run.loss:.0%} | " + " | ".join(cells) + " |")
    return lines


def airtime_table(runs: list[Run], nodes: int) -> list[str]:
    lines = ["| link | loss | busiest node airtime s | relay airtime s | duty budget s | "
             "busiest node / budget | channel busy | fresh tracks/min (of "
             f"{nodes}) | min fresh | picture error mean / p95 m | duplicates to app |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        r = run.result
        field = [a for name, a in r.airtime.items() if name != "relay"]
        busiest = max(field, key=lambda a: a.used)
        relay = r.airtime["relay"]
        budget = _s(busiest.budget) if busiest.budget else "none"
        frac = f"{busiest.fraction:.0%}" if busiest.fraction is not None else "-"
        fresh = sum(r.fresh_per_minute) / max(1, len(r.fresh_per_minute))
        err_mean, err_p95 = r.picture_error
        lines.append(
            f"| {run.link} | {run.loss:.0%} | {busiest.used:.1f} | {relay.used:.1f} | "
            f"{budget} | {frac} | {min(run.utilisation, 1.0):.0%} | {fresh:.1f} | "
            f"{min(r.fresh_per_minute, default=0)} | {_s(err_mean)} / {_s(err_p95)} | "
            f"{r.duplicates} |")
    return lines


def _busiest(result: ExerciseResult) -> float | None:
    """Largest peak-window share of the duty budget; None on links without one."""
    fractions = [a.fraction for a in result.airtime.values() if a.fraction is not None]
    return max(fractions) if fractions else None


def plot(runs: list[Run], path: Path, nodes: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    links = list(dict.fromkeys(run.link for run in runs))
    panels: list[tuple[Any, str, Callable[[ExerciseResult], float | None], bool]] = [
        (axes[0][0], "FLASH latency p95 (s)", lambda r: r.by_class[Precedence.FLASH].p95, True),
        (axes[0][1], "IMMEDIATE latency p95 (s)",
         lambda r: r.by_class[Precedence.IMMEDIATE].p95, True),
        (axes[1][0], f"tracks fresh per minute (of {nodes})",
         lambda r: sum(r.fresh_per_minute) / max(1, len(r.fresh_per_minute)), False),
        (axes[1][1], "busiest transmitter (relay too): peak hour / duty budget",
         _busiest, False),
    ]
    for ax, title, metric, log in panels:  # None (no such figure) plots as a gap
        for link in links:
            mine = [run for run in runs if run.link == link]
            values = [metric(run.result) for run in mine]
            ax.plot([run.loss * 100 for run in mine],
                    [math.nan if v is None else v for v in values], marker="o", label=link)
        ax.set_title(title)
        ax.set_xlabel("frame loss (%)")
        if log:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("fieldc2 DIL exercise: one relay, field nodes on one shared channel")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--duration", type=float, default=1200.0,
                        help="exercise length, virtual seconds (default 1200)")
    parser.add_argument("--flash-rate", type=float, default=2.0,
                        help="FLASH texts per node per hour (default 2)")
    parser.add_argument("--immediate-rate", type=float, default=2.0,
                        help="IMMEDIATE reports per node per hour (default 2)")
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES))
    parser.add_argument("--loss", nargs="+", type=float, default=list(LOSSES))
    parser.add_argument("--plot", nargs="?", const=DEFAULT_PLOT, type=Path, default=None,
                        help=f"write the figure (default path {DEFAULT_PLOT})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    jobs = [(link, loss) for link in args.profiles for loss in args.loss]
    runs: list[Run] = []
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("exercises", total=len(jobs))
        for link, loss in jobs:
            progress.update(task, description=f"{link} loss {loss:.0%}")
            runs.append(run_one(args, link, loss))
            progress.advance(task)
    print(f"Seed {args.seed}, {args.nodes} nodes + relay, {args.duration:.0f} s virtual "
          f"per run; {sum(r.wall for r in runs):.0f} s wall in all.\n")
    print("\n".join(delivery_table(runs)))
    print()
    print("\n".join(airtime_table(runs, args.nodes)))
    if args.plot is not None:
        plot(runs, args.plot, args.nodes)
        print(f"\nplot written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

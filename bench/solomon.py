#!/usr/bin/env python3
"""Solution quality of the routing engine on the 56 Solomon VRPTW instances.

Each instance (``/work/shared/data/vrptw/solomon/*.txt``, 100 customers) is
solved by PyVRP with ``MaxRuntime(--time)`` and compared with its best-known
cost (``*.sol``, ``Cost``).  Costs follow the DIMACS convention of the
best-known solutions: Euclidean distances truncated to one decimal, distance
the only objective, the file's fleet size as the vehicle limit.  Distances
are scaled by 10 to integers (truncated), as PyVRP's ``round_func="dimacs"``
does; travel time equals distance; service times and windows are scaled too.

This measures the engine the planner uses (``fieldc2.plan.solver`` builds the
same kind of PyVRP model) on a public reference; the planner's own overhead
is measured by ``bench/planning.py``.

Usage::

    .venv/bin/python bench/solomon.py --time 10 --jobs 1              # ~10 min
    .venv/bin/python bench/solomon.py --time 60 --jobs 2 --plot       # the long sweep
    .venv/bin/python bench/solomon.py --time 2 --instances 'C1*'

Prints a markdown table (per class and overall), optionally one row per
instance (``--detail``), JSON (``--json FILE``) and a PNG of the gaps per
class (``--plot``, to docs/solomon.png by default).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyvrp
from pyvrp.stop import MaxRuntime

DATA = Path("/work/shared/data/vrptw/solomon")
CLASSES = ("C1", "C2", "R1", "R2", "RC1", "RC2")
SCALE = 10
"""DIMACS: distances truncated to one decimal, i.e. integers in tenths."""


@dataclass
class Instance:
    name: str
    vehicles: int
    capacity: int
    xy: np.ndarray           # (n+1, 2), depot first
    demand: list[int]
    ready: list[int]
    due: list[int]
    service: list[int]


def read_solomon(path: Path) -> Instance:
    """Solomon's text format: name, VEHICLE block, CUSTOMER table (depot = 0)."""
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    vi = next(i for i, ln in enumerate(lines) if ln[0].upper() == "VEHICLE")
    vehicles, capacity = int(lines[vi + 2][0]), int(lines[vi + 2][1])
    rows = [ln for ln in lines if ln[0].isdigit() and len(ln) == 7]
    cols = np.array([[float(v) for v in r] for r in rows])
    return Instance(name=lines[0][0], vehicles=vehicles, capacity=capacity,
                    xy=cols[:, 1:3], demand=[int(v) for v in cols[:, 3]],
                    ready=[int(v) for v in cols[:, 4]], due=[int(v) for v in cols[:, 5]],
                    service=[int(v) for v in cols[:, 6]])


def read_bks(path: Path) -> float:
    m = re.search(r"^Cost\s+([\d.]+)", path.read_text(), re.MULTILINE)
    if m is None:
        raise ValueError(f"{path}: no Cost line")
    return float(m.group(1))


def to_pyvrp(inst: Instance) -> pyvrp.ProblemData:
    diff = inst.xy[:, None, :] - inst.xy[None, :, :]
    dist = np.floor(np.sqrt((diff ** 2).sum(-1)) * SCALE + 1e-9).astype(np.int64)
    locs = [pyvrp.Location(float(x), float(y)) for x, y in inst.xy]
    depot = pyvrp.Depot(0, tw_early=inst.ready[0] * SCALE, tw_late=inst.due[0] * SCALE)
    clients = [pyvrp.Client(i, delivery=[inst.demand[i]], service_duration=inst.service[i] * SCALE,
                            tw_early=inst.ready[i] * SCALE, tw_late=inst.due[i] * SCALE)
               for i in range(1, len(inst.demand))]
    vt = pyvrp.VehicleType(inst.vehicles, capacity=[inst.capacity],
                           tw_early=inst.ready[0] * SCALE, tw_late=inst.due[0] * SCALE)
    return pyvrp.ProblemData(locs, clients, [depot], [vt], [dist], [dist])


def instance_class(name: str) -> str:
    m = re.match(r"^(RC|C|R)(\d)", name.upper())
    return f"{m.group(1)}{m.group(2)}" if m else "?"


def run_one(args: tuple[str, float, int]) -> dict[str, object]:
    txt, limit, seed = args
    path = Path(txt)
    inst = read_solomon(path)
    bks = read_bks(path.with_suffix(".sol"))
    started = time.perf_counter()
    res = pyvrp.solve(to_pyvrp(inst), stop=MaxRuntime(limit), seed=seed, collect_stats=False)
    wall = time.perf_counter() - started
    best = res.best
    cost = best.distance() / SCALE if best.is_feasible() else math.inf
    return {"name": inst.name, "cls": instance_class(inst.name), "bks": bks, "cost": cost,
            "gap": 100.0 * (cost - bks) / bks, "routes": best.num_routes(),
            "feasible": best.is_feasible(), "iterations": res.num_iterations, "wall": wall}


@dataclass
class ClassRow:
    cls: str
    n: int
    mean_gap: float
    max_gap: float
    at_bks: int


def summarise(results: list[dict[str, object]]) -> list[ClassRow]:
    by: dict[str, list[float]] = defaultdict(list)
    for r in results:
        by[str(r["cls"])].append(float(r["gap"]))  # type: ignore[arg-type]
    rows = [ClassRow(c, len(g), statistics.fmean(g), max(g), sum(1 for x in g if x <= 1e-9))
            for c in CLASSES if (g := by.get(c))]
    every = [float(r["gap"]) for r in results]  # type: ignore[arg-type]
    rows.append(ClassRow("all", len(every), statistics.fmean(every), max(every),
                         sum(1 for x in every if x <= 1e-9)))
    return rows


def markdown(rows: list[ClassRow], results: list[dict[str, object]], detail: bool) -> str:
    out = ["| class | instances | mean gap % | max gap % | at BKS |", "|---|---|---|---|---|"]
    out += [f"| {r.cls} | {r.n} | {r.mean_gap:.2f} | {r.max_gap:.2f} | {r.at_bks} |"
            for r in rows]
    if detail:
        out += ["", "| instance | BKS | cost | gap % | routes | iterations |",
                "|---|---|---|---|---|---|"]
        out += [f"| {r['name']} | {r['bks']} | {r['cost']:.1f} | {r['gap']:.2f} | "
                f"{r['routes']} | {r['iterations']} |" for r in results]
    return "\n".join(out)


def plot(results: list[dict[str, object]], path: Path, limit: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [[float(r["gap"]) for r in results if r["cls"] == c] for c in CLASSES]  # type: ignore[arg-type]
    labels = [c for c, d in zip(CLASSES, data, strict=True) if d]
    data = [d for d in data if d]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.boxplot(data, tick_labels=labels)
    ax.axhline(1.0, color="tab:red", linestyle="--", linewidth=1, label="1 % target")
    ax.set_ylabel("gap to best-known cost (%)")
    ax.set_title(f"PyVRP on Solomon VRPTW, {limit:g} s per instance")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time", type=float, default=10.0, help="seconds per instance")
    ap.add_argument("--jobs", type=int, default=1, help="instances solved in parallel")
    ap.add_argument("--instances", default="*", help="glob over instance names, e.g. 'RC1*'")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--detail", action="store_true", help="one row per instance too")
    ap.add_argument("--json", type=Path, help="write all results as JSON")
    ap.add_argument("--plot", nargs="?", const=Path("docs/solomon.png"), type=Path,
                    help="write a PNG of gaps per class (default docs/solomon.png)")
    args = ap.parse_args(argv)
    files = sorted(args.data.glob(f"{args.instances}.txt"))
    if not files:
        print(f"no instances match {args.instances!r} in {args.data}", file=sys.stderr)
        return 2
    load = os.getloadavg()
    print(f"{len(files)} instances, {args.time:g} s each, {args.jobs} job(s), seed {args.seed}; "
          f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", file=sys.stderr)
    tasks = [(str(f), args.time, args.seed) for f in files]
    started = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(run_one, tasks))
    else:
        results = []
        for t in tasks:
            results.append(run_one(t))
            r = results[-1]
            print(f"  {r['name']}: {r['cost']:.1f} vs {r['bks']} ({r['gap']:.2f} %)",
                  file=sys.stderr)
    load = os.getloadavg()
    print(f"wall {time.perf_counter() - started:.0f} s; load average after: "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", file=sys.stderr)
    print(markdown(summarise(results), results, args.detail))
    if args.json:
        args.json.write_text(json.dumps({"time": args.time, "seed": args.seed,
                                         "results": results,
                                         "classes": [asdict(r) for r in summarise(results)]},
                                        indent=1))
    if args.plot:
        plot(results, args.plot, args.time)
    return 0


if __name__ == "__main__":
    sys.exit(main())

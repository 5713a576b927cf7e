"""Exports of a plan for people and other tools: ICS 204/214 PDFs, a Gantt
timeline, GeoJSON, KML and GPX.

Each format has a function returning bytes (or a dict for GeoJSON) for the
REST API; :func:`export_all` writes them all to a directory for the CLI::

    fieldc2.plan.exports.ics      ics204_pdf, ics214_pdf, ics204_sheets, FormInfo
    fieldc2.plan.exports.gantt    gantt (PNG/SVG), gantt_size
    fieldc2.plan.exports.geo      to_geojson, to_kml, to_gpx (from .gpx)

The modules are imported lazily here so that importing the package does not
pull in matplotlib and fpdf2 for a caller that wants GeoJSON only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fieldc2.plan.exports.common import ActivitySource
    from fieldc2.plan.exports.geo import Tracks
    from fieldc2.plan.exports.ics import FormInfo
    from fieldc2.plan.model import Incident, Plan

__all__ = ["export_all"]


def export_all(incident: Incident, plan: Plan, out_dir: Path, *,
               activity: ActivitySource | None = None, tracks: Tracks | None = None,
               info: FormInfo | None = None) -> list[Path]:
    """Write every export of the plan into ``out_dir`` (created if needed) and
    return the paths written, in a stable order:

    ``ics204.pdf``, ``ics214_<team>.pdf`` per team, ``timeline.png``,
    ``timeline.svg``, ``plan.geojson``, ``plan.kml``, ``plan.gpx`` and
    ``team_<team>.gpx`` per team with work (to load onto that team's units).
    """
    from fieldc2.errors import PlanError
    from fieldc2.plan.exports.common import check_plan, safe_name
    from fieldc2.plan.exports.gantt import gantt
    from fieldc2.plan.exports.geo import to_geojson, to_gpx, to_kml
    from fieldc2.plan.exports.ics import ics204_pdf, ics214_pdf

    check_plan(incident, plan)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[tuple[str, bytes]] = [("ics204.pdf", ics204_pdf(incident, plan, info=info))]
    files += [(f"ics214_{safe_name(t.id)}.pdf",
               ics214_pdf(incident, activity, team_ids=[t.id], info=info))
              for t in incident.teams]
    files += [("timeline.png", gantt(plan, incident, "png")),
              ("timeline.svg", gantt(plan, incident, "svg"))]
    geojson = to_geojson(incident, plan, tracks=tracks)
    files += [("plan.geojson", json.dumps(geojson, ensure_ascii=False).encode("utf-8")),
              ("plan.kml", to_kml(incident, plan, tracks=tracks)),
              ("plan.gpx", to_gpx(incident, plan, tracks=tracks))]
    files += [(f"team_{safe_name(r.team_id)}.gpx",
               to_gpx(incident, plan, team_id=r.team_id, tracks=tracks))
              for r in plan.routes if r.visits]
    names = [name for name, _ in files]
    if len(set(names)) != len(names):
        raise PlanError("team ids map to the same file name: " + ", ".join(
            sorted({n for n in names if names.count(n) > 1})))
    paths: list[Path] = []
    for name, data in files:
        path = out_dir / name
        path.write_bytes(data)
        paths.append(path)
    return paths

"""Incident files: YAML and GeoJSON in, YAML and GeoJSON out.

YAML (``examples/incident.yaml``)::

    name: Missing hiker, Hohgant
    period: {id: OP1, start: 2026-06-14T06:00:00Z, end: 2026-06-14T18:00:00Z}
    staging: [7.90, 46.80]
    teams:
      - {id: T1, name: Alpha, capabilities: [k9], position: [7.9, 46.8],
         shift_start: +0h, shift_end: +8h}
    tasks:
      - {id: S1, kind: search_area, polygon: [[7.9, 46.8], ...], sweep_width: 25}

GeoJSON: a FeatureCollection whose features are tasks (``properties`` hold
the task fields, the feature ``geometry`` its geometry) and whose top-level
``properties`` member holds ``name``, ``period``, ``staging`` and ``teams``
(or teams come from a separate YAML list).

Times are ISO 8601 (``Z`` or an offset; naive means UTC), epoch seconds, or
``+1h30m`` relative to the period start.  Durations are seconds or
``1h30m`` / ``45m`` / ``90s``.  Geometry is GeoJSON ``geometry`` or one of the
shorthands ``point: [lon, lat]``, ``line: [[lon, lat], ...]``,
``polygon: [[lon, lat], ...]`` (outer ring only).  Every error is a
``PlanError`` naming the file, line (YAML) or feature, and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import msgspec
import yaml

from fieldc2.errors import PlanError
from fieldc2.plan.check import check_incident
from fieldc2.plan.model import Incident, OperationalPeriod, Task, TaskKind, Team

MAX_FILE_BYTES = 20_000_000
"""Largest incident file read: thousands of segments fit in far less, and a
bigger file is a mistake (a whole OSM extract, a track log)."""

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*"
                       r"(?:(\d+(?:\.\d+)?)s)?\s*$")
_TIME_FIELDS = {"earliest", "latest", "shift_start", "shift_end", "available_from"}
_SIMPLESTYLE = {"title", "description", "marker-size", "marker-symbol", "marker-color",
                "stroke", "stroke-opacity", "stroke-width", "fill", "fill-opacity"}
"""Styling properties map editors (geojson.io, CalTopo) add; ignored, not errors."""
_GEOMETRY_SHORTHAND = {"point": "Point", "line": "LineString", "polygon": "Polygon"}


def parse_duration(value: Any, where: str) -> int:
    """Seconds from a number or ``1h30m``-style text."""
    if isinstance(value, bool):
        raise PlanError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        return round(value)
    m = _DURATION.match(str(value))
    if not m or not any(m.groups()):
        raise PlanError(f"{where}: cannot read duration {value!r} (use 5400 or 1h30m)")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return round(h * 3600 + mi * 60 + s)


def parse_time(value: Any, where: str, origin: int | None) -> int:
    """Epoch seconds from ISO text, a datetime, an epoch number or ``+1h``."""
    if isinstance(value, bool):
        raise PlanError(f"{where}: expected a time, got {value!r}")
    if isinstance(value, int | float):
        return round(value)
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return round(dt.timestamp())
    if isinstance(value, date):
        return parse_time(datetime(value.year, value.month, value.day), where, origin)
    text = str(value).strip()
    if text.startswith("+"):
        if origin is None:
            raise PlanError(f"{where}: relative time {text!r} needs the period start first")
        return origin + parse_duration(text[1:], where)
    try:
        return parse_time(datetime.fromisoformat(text), where, origin)
    except ValueError:
        raise PlanError(f"{where}: cannot read time {value!r} (ISO 8601, epoch or +1h)") from None


def format_time(epoch: int) -> str:
    """ISO 8601 UTC text with a Z, as written to files."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _at(where: str, finder: Any, field: str) -> str:
    """``where (line N): field 'x'`` for an error message."""
    line = finder(field) if finder is not None and field else None
    return f"{where}" + (f" (line {line})" if line else "") + (
        f": field {field!r}" if field else "")


def _normalise(raw: Any, cls: type[Any], where: str, origin: int, finder: Any) -> dict[str, Any]:
    """Shorthand geometry, durations and times resolved; unknown fields refused."""
    if not isinstance(raw, dict):
        raise PlanError(f"{where}: expected a mapping, got {type(raw).__name__}")
    d = dict(raw)
    for short, kind in _GEOMETRY_SHORTHAND.items():
        if short in d and cls is Task:
            if "geometry" in d:
                raise PlanError(f"{_at(where, finder, short)}: give geometry or {short}, not both")
            coords = d.pop(short)
            d["geometry"] = {"type": kind, "coordinates": [coords] if kind == "Polygon"
                             else coords}
    known = set(cls.__struct_fields__)
    for key in d:
        if key not in known:
            raise PlanError(f"{_at(where, finder, str(key))}: unknown field")
    if d.get("duration") is not None:
        d["duration"] = parse_duration(d["duration"], _at(where, finder, "duration"))
    for key in _TIME_FIELDS & d.keys():
        if d[key] is not None:
            d[key] = parse_time(d[key], _at(where, finder, key), origin)
    return d


def _convert(d: dict[str, Any], cls: type[Any], where: str, finder: Any = None) -> Any:
    """msgspec conversion with the failing field named (and its line, if known)."""
    try:
        return msgspec.convert(d, cls, strict=False)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        m = re.search(r"at `\$\.?([^`]*)`", msg)
        field = m.group(1) if m else ""
        raise PlanError(f"{_at(where, finder, field)}: {msg.split(' - at ')[0]}") from exc


def _item(raw: Any, cls: type[Any], where: str, origin: int, finder: Any = None) -> Any:
    return _convert(_normalise(raw, cls, where, origin, finder), cls, where, finder)


def _build(doc: Any, source: str, lines: _Lines | None,
           teams: Sequence[Team] | None = None,
           task_items: list[tuple[str, Any, tuple[Any, ...]]] | None = None) -> Incident:
    if not isinstance(doc, dict):
        raise PlanError(f"{source}: the incident must be a mapping at the top level")
    for key in ("name", "period"):
        if key not in doc:
            raise PlanError(f"{source}: missing top-level field {key!r}")
    pdoc = doc["period"]
    if not isinstance(pdoc, dict):
        raise PlanError(f"{source}: 'period' must be a mapping with id, start, end")
    pdoc = dict(pdoc)
    for key in ("start", "end"):
        if key in pdoc:
            pdoc[key] = parse_time(pdoc[key], f"{source}: period field {key!r}", None)
    period = _convert(pdoc, OperationalPeriod, f"{source}: period",
                      lines.finder(("period",)) if lines else None)
    origin = period.start
    if teams is None:
        teams = []
        for i, raw in enumerate(_list(doc, "teams", source)):
            where = f"{source}: teams[{i}]" + _id_hint(raw)
            finder = lines.finder(("teams", i)) if lines else None
            teams.append(_item(raw, Team, where, origin, finder))
    if task_items is None:
        task_items = [(f"{source}: tasks[{i}]" + _id_hint(raw), raw, ("tasks", i))
                      for i, raw in enumerate(_list(doc, "tasks", source))]
    tasks = []
    for where, raw, path in task_items:
        finder = lines.finder(path) if lines else None
        tasks.append(_item(raw, Task, where, origin, finder))
    rest = {k: doc[k] for k in ("name", "staging", "description") if k in doc}
    head = _convert(rest | {"period": msgspec.to_builtins(period)}, Incident, source)
    incident: Incident = msgspec.structs.replace(head, tasks=tuple(tasks), teams=tuple(teams))
    check_incident(incident, source)
    return incident


def _list(doc: dict[str, Any], key: str, source: str) -> list[Any]:
    value = doc.get(key) or []
    if not isinstance(value, list | tuple):
        raise PlanError(f"{source}: {key!r} must be a list")
    return list(value)


def _id_hint(raw: Any) -> str:
    return f" (id {raw['id']!r})" if isinstance(raw, dict) and "id" in raw else ""


class _Lines:
    """Line numbers of YAML nodes by path, for error messages."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def finder(self, path: tuple[Any, ...]) -> Any:
        return lambda field: self.line((*path, *field.split(".")))

    def line(self, path: tuple[Any, ...]) -> int | None:
        node, found = self.root, None
        for key in path:
            node = _child(node, key)
            if node is None:
                break
            found = node.start_mark.line + 1
        return found


def _child(node: yaml.Node | None, key: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == str(key):
                return v  # type: ignore[no-any-return]
    if isinstance(node, yaml.SequenceNode) and str(key).isdigit():
        items = node.value
        return items[int(key)] if int(key) < len(items) else None
    return None


def incident_from_yaml(text: str, source: str = "<yaml>") -> Incident:
    """Parse an incident from YAML text; PlanError names the line and field."""
    try:
        doc = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise PlanError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    return _build(doc, source, _Lines(root))


def incident_from_geojson(text: str | dict[str, Any], source: str = "<geojson>",
                          teams: Sequence[Team] | None = None) -> Incident:
    """Parse a GeoJSON FeatureCollection of tasks (see the module docstring)."""
    try:
        doc = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as exc:
        raise PlanError(f"{source}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise PlanError(f"{source}: expected a GeoJSON FeatureCollection")
    props = doc.get("properties") or {}
    if not isinstance(props, dict):
        raise PlanError(f"{source}: top-level 'properties' must be an object")
    items = []
    for i, feat in enumerate(doc.get("features") or []):
        items.append(_feature_task(feat, f"{source}: features[{i}]"))
    if teams is None and "teams" not in props:
        raise PlanError(f"{source}: no teams (top-level properties.teams or a teams file)")
    return _build(props, source, None, teams, items)


def _feature_task(feat: Any, where: str) -> tuple[str, Any, tuple[Any, ...]]:
    if not isinstance(feat, dict) or feat.get("type") != "Feature":
        raise PlanError(f"{where}: not a GeoJSON Feature")
    raw = {k: v for k, v in (feat.get("properties") or {}).items() if k not in _SIMPLESTYLE}
    if "id" not in raw and "id" in feat:
        raw["id"] = str(feat["id"])
    raw["geometry"] = feat.get("geometry")
    return (where + _id_hint(raw), raw, ())


def teams_from_yaml(text: str, source: str = "<teams>", origin: int = 0) -> list[Team]:
    """A YAML list of teams (or a mapping with ``teams:``), for GeoJSON incidents."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlanError(f"{source}: not valid YAML: {exc}") from exc
    items = doc.get("teams") if isinstance(doc, dict) else doc
    if not isinstance(items, list | tuple):
        raise PlanError(f"{source}: expected a list of teams")
    return [_item(raw, Team, f"{source}: teams[{i}]" + _id_hint(raw), origin)
            for i, raw in enumerate(items)]


def _is_default(value: Any, default: Any) -> bool:
    empty = isinstance(value, list | tuple | dict | set | frozenset) and not value
    return bool(value == default or (empty and default is not None and not default))


def _plain(incident: Incident) -> dict[str, Any]:
    """Builtins for writing: ISO times, sorted capabilities, defaults left out."""
    doc: dict[str, Any] = msgspec.to_builtins(incident)
    doc["period"]["start"] = format_time(incident.period.start)
    doc["period"]["end"] = format_time(incident.period.end)
    for key, cls in (("teams", Team), ("tasks", Task)):
        defaults = {f.name: f.default if f.default is not msgspec.NODEFAULT
                    else f.default_factory() for f in msgspec.structs.fields(cls)
                    if f.default is not msgspec.NODEFAULT
                    or f.default_factory is not msgspec.NODEFAULT}
        items = []
        for item in doc[key]:
            item = {k: v for k, v in item.items()
                    if not (k in defaults and _is_default(v, defaults[k]))}
            if "capabilities" in item:
                item["capabilities"] = sorted(item["capabilities"])
            for k in _TIME_FIELDS & item.keys():
                item[k] = format_time(item[k])
            items.append(item)
        doc[key] = items
    return {k: v for k, v in doc.items() if v is not None and v != ""}


def incident_to_yaml(incident: Incident) -> str:
    """YAML text that ``incident_from_yaml`` reads back to an equal incident."""
    return yaml.safe_dump(_plain(incident), sort_keys=False, allow_unicode=True,
                          default_flow_style=None, width=100)


def incident_to_geojson(incident: Incident) -> dict[str, Any]:
    """A FeatureCollection of the tasks, teams and period in its properties."""
    doc = _plain(incident)
    features = []
    for task in doc.pop("tasks"):
        geometry = task.pop("geometry")
        features.append({"type": "Feature", "id": task["id"], "geometry": geometry,
                         "properties": task})
    return {"type": "FeatureCollection", "properties": doc, "features": features}


def load_incident(path: str | Path, teams_file: str | Path | None = None) -> Incident:
    """Read ``.yaml``/``.yml`` or ``.geojson``/``.json`` (optionally with a teams YAML)."""
    text = _read(Path(path))
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        return incident_from_yaml(text, str(path))
    teams = None
    if teams_file is not None:
        doc = json.loads(text) if text.strip().startswith("{") else {}
        start = (doc.get("properties") or {}).get("period", {}).get("start", 0)
        teams = teams_from_yaml(_read(Path(teams_file)), str(teams_file),
                                parse_time(start, f"{path}: period start", None))
    return incident_from_geojson(text, str(path), teams)


def save_incident(incident: Incident, path: str | Path) -> None:
    """Write YAML or GeoJSON by the file's suffix."""
    p = Path(path)
    if p.suffix.lower() in (".yaml", ".yml"):
        p.write_text(incident_to_yaml(incident), encoding="utf-8")
    else:
        p.write_text(json.dumps(incident_to_geojson(incident), indent=1), encoding="utf-8")


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise PlanError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: cannot read: {exc}") from exc



def synthetic_incident(n_tasks: int, n_teams: int, seed: int = 0, *,
                       start: int = 1_781_416_800, span_km: float = 8.0) -> Incident:
    """A reproducible random incident for benchmarks, tests and demos: point,
    rescue, supply and small area tasks in a ``span_km`` square, ground teams
    on foot, some with k9/medic, and one in five a 4x4 with capacity."""
    import random

    from fieldc2.plan.model import Point, Polygon

    rng = random.Random(seed)
    lon0, lat0 = 7.90, 46.78
    dlon, dlat = span_km / 76.3, span_km / 111.2        # degrees at 46.8 N

    def spot() -> tuple[float, float]:
        return (round(lon0 + rng.random() * dlon, 6), round(lat0 + rng.random() * dlat, 6))

    teams = []
    for k in range(n_teams):
        vehicle = k % 5 == 4
        kit = {"4x4", "supply"} if vehicle else {"ground"}
        kit |= {c for c in ("k9", "medic") if rng.random() < 0.3}
        teams.append(Team(id=f"T{k + 1}", name=f"TEAM{k + 1}", capabilities=frozenset(kit),
                          speed=8.0 if vehicle else 1.2,
                          search_speeds={} if vehicle else {"search_area": 0.6},
                          position=spot(), shift_start=start,
                          shift_end=start + rng.choice((8, 10, 12)) * 3600,
                          capacity=10 if vehicle else 0))
    tasks = []
    for i in range(n_tasks):
        kind: TaskKind = rng.choice(("point", "point", "rescue", "supply", "search_area"))
        c = spot()
        geometry: Point | Polygon = Point(coordinates=c)
        caps: set[str] = set()
        if kind == "search_area":
            d = 0.002
            geometry = Polygon(coordinates=((c, (c[0] + d, c[1]), (c[0] + d, c[1] + d),
                                             (c[0], c[1] + d), c),))
            caps = {"ground"}
        elif kind == "supply":
            caps = {"4x4"}
        elif kind == "rescue":
            caps = {"medic"}
        earliest = start + rng.randrange(0, 6 * 3600) if rng.random() < 0.3 else None
        tasks.append(Task(
            id=f"K{i + 1}", kind=kind, geometry=geometry, capabilities=frozenset(caps),
            duration=None if kind == "search_area" else rng.randrange(600, 2700),
            sweep_width=40.0, earliest=earliest,
            latest=earliest + 3 * 3600 if earliest is not None else None,
            priority=rng.randint(1, 5), demand=rng.randint(1, 4) if kind == "supply" else 0,
            precedence=(f"K{rng.randrange(i) + 1}",) if i and rng.random() < 0.05 else ()))
    return Incident(name=f"synthetic-{n_tasks}x{n_teams}-{seed}",
                    period=OperationalPeriod(id="OP1", start=start, end=start + 12 * 3600),
                    tasks=tuple(tasks), teams=tuple(teams), staging=(lon0, lat0))

"""Incident files: round trips, and errors that name the place and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fieldc2.errors import PlanError
from fieldc2.plan.incident import (
    incident_from_geojson,
    incident_from_yaml,
    incident_to_geojson,
    incident_to_yaml,
    load_incident,
    parse_duration,
    parse_time,
    save_incident,
    synthetic_incident,
    teams_from_yaml,
)
from fieldc2.plan.model import LineString, Point, Polygon

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "incident.yaml"

HEAD = """\
name: test
period: {id: OP1, start: 2026-06-14T06:00:00Z, end: 2026-06-14T18:00:00Z}
teams:
  - id: A
    position: [7.9, 46.8]
    shift_start: +0h
    shift_end: +8h
tasks:
  - id: P1
    kind: point
    point: [7.91, 46.81]
"""


def test_example_loads_with_its_conventions() -> None:
    inc = load_incident(EXAMPLE)
    assert len(inc.tasks) == 12 and len(inc.teams) == 4
    assert inc.period.start == 1_781_416_800                 # 2026-06-14T06:00:00Z
    t4 = inc.team("T4")
    assert t4.shift_start == inc.period.start + 3600          # "+1h"
    p1 = inc.task("P1")
    assert isinstance(p1.geometry, Point) and p1.duration == 1200   # "20m"
    assert isinstance(inc.task("H1").geometry, LineString)
    s1 = inc.task("S1")
    assert isinstance(s1.geometry, Polygon) and s1.precedence == ("H1",)
    assert s1.capabilities == frozenset({"k9"})


def test_yaml_and_geojson_round_trip(tmp_path: Path) -> None:
    inc = load_incident(EXAMPLE)
    assert incident_from_yaml(incident_to_yaml(inc)) == inc
    assert incident_from_geojson(json.dumps(incident_to_geojson(inc))) == inc
    for name in ("copy.yaml", "copy.geojson"):
        save_incident(inc, tmp_path / name)
        assert load_incident(tmp_path / name) == inc
    big = synthetic_incident(30, 5, seed=2)
    assert incident_from_yaml(incident_to_yaml(big)) == big


def test_geojson_with_a_separate_teams_file(tmp_path: Path) -> None:
    inc = load_incident(EXAMPLE)
    doc = incident_to_geojson(inc)
    teams = doc["properties"].pop("teams")
    doc["features"][0]["properties"]["stroke"] = "#ff0000"     # editor styling: ignored
    (tmp_path / "tasks.geojson").write_text(json.dumps(doc))
    with pytest.raises(PlanError, match="no teams"):
        load_incident(tmp_path / "tasks.geojson")
    (tmp_path / "teams.yaml").write_text(json.dumps(teams))
    assert load_incident(tmp_path / "tasks.geojson", tmp_path / "teams.yaml") == inc
    assert teams_from_yaml(json.dumps(teams)) == list(inc.teams)


@pytest.mark.parametrize(("edit", "pattern"), [
    (("kind: point", "kind: pointy"), r"tasks\[0\] \(id 'P1'\) \(line 10\): field 'kind'"),
    (("kind: point", "kind: point\n    priority: high"), r"line 11\): field 'priority'"),
    (("kind: point", "kind: point\n    priorty: 2"), r"line 11\): field 'priorty': unknown"),
    (("kind: point", "kind: point\n    earliest: tomorrow"), r"field 'earliest'.*tomorrow"),
    (("kind: point", "kind: point\n    duration: 1x"), r"field 'duration'.*1x"),
    (("kind: point", "kind: search_area"), r"'P1'.*geometry.*needs a Polygon"),
    (("kind: point", "kind: point\n    precedence: [Q9]"), r"'precedence'.*'Q9'"),
    (("kind: point", "kind: point\n    priority: 0"), r"'priority': must be 1\.\.100"),
    (("point: [7.91, 46.81]", "point: [46.81, 191.0]"), r"geometry.*out of range"),
    (("shift_end: +8h", "shift_end: -1"), r"team 'A'.*shift_end"),
    (("position: [7.9, 46.8]", "position: [7.9]"), r"teams\[0\].*line 5\): field 'position'"),
    (("name: test\n", ""), r"missing top-level field 'name'"),
    (("    point: [7.91, 46.81]\n", "    point: [7.91, 46.81\n"), r"<yaml>:\d+: not valid YAML"),
])
def test_yaml_errors_name_line_and_field(edit: tuple[str, str], pattern: str) -> None:
    text = HEAD.replace(*edit)
    with pytest.raises(PlanError, match=pattern):
        incident_from_yaml(text)


def test_duplicates_and_cycles_are_refused() -> None:
    dup = HEAD + "  - {id: P1, kind: point, point: [7.9, 46.8]}\n"
    with pytest.raises(PlanError, match="task id 'P1' appears twice"):
        incident_from_yaml(dup)
    cycle = HEAD.replace("kind: point", "kind: point\n    precedence: [P2]") + (
        "  - {id: P2, kind: point, point: [7.9, 46.8], precedence: [P1]}\n")
    with pytest.raises(PlanError, match="cycle"):
        incident_from_yaml(cycle)


def test_geojson_errors_name_the_feature() -> None:
    doc = incident_to_geojson(load_incident(EXAMPLE))
    doc["features"][2]["properties"]["kind"] = "walk"
    with pytest.raises(PlanError, match=r"features\[2\] \(id 'P1'\): field 'kind'"):
        incident_from_geojson(doc)
    with pytest.raises(PlanError, match="FeatureCollection"):
        incident_from_geojson('{"type": "Feature"}')
    with pytest.raises(PlanError, match=":1: not valid JSON"):
        incident_from_geojson("{nope")


def test_time_and_duration_forms() -> None:
    assert parse_duration("1h30m", "x") == 5400
    assert parse_duration("45m", "x") == 2700
    assert parse_duration(90, "x") == 90
    assert parse_time("2026-06-14T08:00:00+02:00", "x", None) == 1_781_416_800
    assert parse_time("2026-06-14T06:00:00", "x", None) == 1_781_416_800   # naive = UTC
    assert parse_time("+2h", "x", 100) == 7300
    with pytest.raises(PlanError, match="needs the period start"):
        parse_time("+2h", "x", None)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read"):
        load_incident(tmp_path / "missing.yaml")

"""Plan exports: ICS 204/214 PDFs rendered with poppler, the Gantt chart,
GeoJSON against an RFC 7946 schema, KML as XML, GPX through gpxpy.

Plans are built directly from Route/Visit values so the assertions do not
depend on the solver's timing; one test runs the real solver end to end."""

from __future__ import annotations

import itertools
import json
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import gpxpy
import jsonschema
import msgspec
import numpy as np
import pytest
from matplotlib import image as mpimg

from fieldc2.errors import PlanError
from fieldc2.plan.exports import export_all, pdfform
from fieldc2.plan.exports.gantt import gantt, gantt_size
from fieldc2.plan.exports.geo import to_geojson, to_gpx, to_kml
from fieldc2.plan.exports.gpx import MAX_ROUTE_POINTS
from fieldc2.plan.exports.ics import (
    CommsEntry,
    FormInfo,
    Person,
    ics204_pdf,
    ics204_sheets,
    ics214_pdf,
)
from fieldc2.plan.model import (
    Geometry,
    Incident,
    LineString,
    OperationalPeriod,
    Plan,
    Point,
    Polygon,
    Route,
    Task,
    Team,
    Unassigned,
    Visit,
)

T0 = 1_795_327_200  # 2026-11-22 06:00Z
KML = "{http://www.opengis.net/kml/2.2}"
SCHEMA = json.loads((Path(__file__).parent / "fixtures" / "geojson.schema.json").read_text())
AREA = Polygon(coordinates=(((9.30, 47.25), (9.32, 47.25), (9.32, 47.26), (9.30, 47.26),
                             (9.30, 47.25)),))
INFO = FormInfo(branch="I", prepared_by=Person(name="Ève Planck", role="PSC"),
                prepared_at=T0 - 7200,
                operations=(Person(name="Hans Zürcher", role="Operations Section Chief",
                                   contact="+41 79 000 00 00"),),
                comms=(CommsEntry(function="Command", contact="Polycom K1 / 158.745 MHz"),))


def sample() -> tuple[Incident, Plan]:
    """Two working teams (one with unicode names), one idle team, tasks in a
    division and without, two tasks left out."""
    period = OperationalPeriod(id="OP2", start=T0, end=T0 + 12 * 3600)
    trail = LineString(coordinates=((9.32, 47.26), (9.33, 47.27), (9.34, 47.27)))
    tasks = (
        Task(id="T1", kind="search_area", geometry=AREA, name="Hang Nord", division="Div A",
             instructions="Avalanche probes; radio check every 30 min.",
             capabilities=frozenset({"avalanche"}), priority=3),
        Task(id="T2", kind="search_line", geometry=trail, name="Weg zur Hütte",
             division="Div A"),
        Task(id="T3", kind="rescue", geometry=Point(coordinates=(9.35, 47.24)),
             name="Verletzte Person", duration=1800, capabilities=frozenset({"medic"}),
             priority=5),
        Task(id="T4", kind="supply", geometry=Point(coordinates=(9.36, 47.28)), demand=4,
             name="Decken"),
        Task(id="T5", kind="point", geometry=Point(coordinates=(9.31, 47.27)),
             division="Div A", name="Hütte prüfen"),
    )
    teams = (
        Team(id="A", name="Équipe Nord", members=("Amélie Durand", "Jean Roux", "Luc Petit"),
             capabilities=frozenset({"avalanche"}), position=(9.29, 47.24), shift_start=T0,
             shift_end=T0 + 10 * 3600, tak_uids=("ANDROID-aa11",)),
        Team(id="B", name="Bergwacht Süd", members=("Jörg Müller", "Anna Weiß"),
             capabilities=frozenset({"medic"}), position=(9.34, 47.23), shift_start=T0,
             shift_end=T0 + 12 * 3600),
        Team(id="C", name="K9 Łódź", members=("Paweł Zięba",), position=(9.28, 47.25),
             shift_start=T0 + 3600, shift_end=T0 + 9 * 3600),
    )
    incident = Incident(name="Lawine Säntis", period=period, tasks=tasks, teams=teams)
    plan = Plan(incident=incident.name, period=period, routes=(
        Route(team_id="A", depart=T0, distance_m=2200, visits=(
            Visit(task_id="T1", arrival=T0 + 1200, start=T0 + 1200, end=T0 + 4 * 3600,
                  travel_s=1200, distance_m=1500),
            Visit(task_id="T2", arrival=T0 + 4 * 3600 + 600, start=T0 + 5 * 3600,
                  end=T0 + 6 * 3600, travel_s=600, distance_m=700))),
        Route(team_id="B", depart=T0, distance_m=1200, visits=(
            Visit(task_id="T3", arrival=T0 + 900, start=T0 + 900, end=T0 + 2700,
                  travel_s=900, distance_m=1200),)),
        Route(team_id="C", depart=T0 + 3600),
    ), unassigned=(Unassigned(task_id="T4", reason="capacity"),
                   Unassigned(task_id="T5", reason="time_window")))
    return incident, plan


def big(n_teams: int = 30, n_tasks: int = 200, left_out: int = 20) -> tuple[Incident, Plan]:
    """A large plan: tasks dealt round-robin to teams, 20-minute legs."""
    period = OperationalPeriod(id="OP1", start=T0, end=T0 + 12 * 3600)
    kinds = ("search_area", "search_line", "point", "rescue", "supply", "transport")
    tasks = tuple(Task(id=f"T{i}", kind=kinds[i % 6], priority=1 + i % 5,
                       geometry=Point(coordinates=(9.0 + i / 1000, 47.0 + i / 2000)),
                       division=f"Div {i % 4}" if i % 3 else "") for i in range(n_tasks))
    teams = tuple(Team(id=f"team{k}", position=(9.0, 47.0 + k / 100), shift_start=T0,
                       shift_end=T0 + 12 * 3600) for k in range(n_teams))
    routes = []
    served = n_tasks - left_out
    for k in range(n_teams):
        visits, t = [], T0
        for i in range(k, served, n_teams):
            visits.append(Visit(task_id=f"T{i}", arrival=t + 900, start=t + 900,
                                end=t + 900 + 3000, travel_s=900))
            t += 3900
        routes.append(Route(team_id=f"team{k}", depart=T0, visits=tuple(visits)))
    plan = Plan(incident="Big", period=period, routes=tuple(routes), unassigned=tuple(
        Unassigned(task_id=f"T{i}", reason="dropped") for i in range(served, n_tasks)))
    return Incident(name="Big", period=period, tasks=tasks, teams=teams), plan


# -- helpers -------------------------------------------------------------------

def render(pdf: bytes, tmp_path: Path, stem: str) -> list[Path]:
    """Rasterise every page with poppler; returns the page images in order."""
    src = tmp_path / f"{stem}.pdf"
    src.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "30", "-gray", "-png", str(src), str(tmp_path / stem)],
                   check=True, capture_output=True, timeout=60)
    return sorted(tmp_path.glob(f"{stem}-*.png"))


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    src = tmp_path / "text.pdf"
    src.write_bytes(pdf)
    out = subprocess.run(["pdftotext", "-layout", str(src), "-"], check=True,
                         capture_output=True, timeout=60)
    return out.stdout.decode("utf-8")


def assert_not_blank(page: Path) -> None:
    pixels = np.asarray(mpimg.imread(str(page)), dtype=float)
    assert page.stat().st_size > 2000
    assert pixels.std() > 0.05, f"{page.name} looks blank"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# -- ICS 204 / 214 -------------------------------------------------------------

def test_poppler_is_installed() -> None:
    assert shutil.which("pdftoppm") and shutil.which("pdftotext")


def test_204_sheets_cover_every_task_and_team() -> None:
    incident, plan = sample()
    sheets = ics204_sheets(incident, plan)
    assert [(s.kind, s.name, s.team_ids, s.task_ids) for s in sheets] == [
        ("division", "Div A", ("A",), ("T1", "T2", "T5")),
        ("group", "Team Bergwacht Süd", ("B",), ("T3",)),
        ("group", "Unassigned tasks", (), ("T4",)),
        ("staging", "Staging", ("C",), ()),
    ]


def test_204_one_page_per_sheet_with_the_plan_in_it(tmp_path: Path) -> None:
    incident, plan = sample()
    pdf = ics204_pdf(incident, plan, info=INFO)
    pages = render(pdf, tmp_path, "ics204")
    assert len(pages) == 4
    for page in pages:
        assert_not_blank(page)
    text = pdf_text(pdf, tmp_path)
    for needle in ("ASSIGNMENT LIST", "ICS 204", "1. Incident Name", "Lawine Säntis",
                   "7. Work Assignments", "Équipe Nord", "Bergwacht Süd", "K9 Łódź",
                   "Amélie Durand", "Hans Zürcher", "Polycom K1", "Ève Planck",
                   "T1: Hang Nord", "T3: Verletzte Person", "UNASSIGNED", "time_window",
                   "Avalanche probes", "TAK: ANDROID-aa11", "06:20-10:00Z",
                   "centre 47.25500 N"):
        assert needle in text, needle


def test_204_long_division_runs_over_pages(tmp_path: Path) -> None:
    incident, plan = big(n_teams=4, n_tasks=100, left_out=0)
    one_div = Incident(name=incident.name, period=incident.period, teams=incident.teams,
                       tasks=tuple(msgspec.structs.replace(t, division="Div X")
                                   for t in incident.tasks))
    pdf = ics204_pdf(one_div, plan)
    pages = render(pdf, tmp_path, "long")
    assert len(pages) >= 2
    for page in pages:
        assert_not_blank(page)
    text = pdf_text(pdf, tmp_path)
    assert "ICS 204 Assignment List (continued) - Big - Div X" in text
    assert all(f"T{i}" in text for i in range(100))


def test_214_one_form_per_team_long_logs_run_over(tmp_path: Path) -> None:
    incident, _ = sample()
    log = {"A": [(T0 + i * 600, f"Funkspruch {i}: Équipe au point {i}") for i in range(90)],
           "B": [(T0 + 60, "Departed staging"), (T0 + 900, "Arrived at T3")]}
    pdf = ics214_pdf(incident, log, info=INFO)
    pages = render(pdf, tmp_path, "ics214")
    assert len(pages) >= 3 + 1  # A needs two pages or more, B and C one each
    for page in pages:
        assert_not_blank(page)
    text = pdf_text(pdf, tmp_path)
    for needle in ("ACTIVITY LOG", "ICS 214", "Funkspruch 0", "Funkspruch 89",
                   "Team Leader, Équipe Nord", "Jörg Müller", "Anna Weiß", "Paweł Zięba",
                   "Arrived at T3", "2026-11-22 06:15Z", "(continued) - Lawine Säntis"):
        assert needle in text, needle


def test_214_takes_an_activity_function_and_one_team(tmp_path: Path) -> None:
    incident, _ = sample()
    calls: list[str] = []

    def activity(team_id: str) -> list[tuple[int, str]]:
        calls.append(team_id)
        return [(T0 + 300, "Second entry"), (T0, "First entry")]

    pdf = ics214_pdf(incident, activity, team_ids=["B"], info=FormInfo(paper="Letter"))
    assert calls == ["B"]
    [page] = render(pdf, tmp_path, "one")
    height, width = mpimg.imread(str(page)).shape[:2]
    assert width / height == pytest.approx(8.5 / 11, abs=0.01)  # A4 would be 0.707
    text = pdf_text(pdf, tmp_path)
    assert text.index("First entry") < text.index("Second entry")
    with pytest.raises(PlanError):
        ics214_pdf(incident, activity, team_ids=["nobody"])


def test_pdf_rows_taller_than_a_page_are_split_or_cut(tmp_path: Path) -> None:
    incident, plan = sample()
    long_entry = " ".join(f"w{i}" for i in range(3000))
    pdf = ics214_pdf(incident, {"A": [(T0, long_entry), (T0 + 60, "W" * 4000)]},
                     team_ids=["A"])
    text = pdf_text(pdf, tmp_path)
    assert "w0 " in text and "w2999" in text  # a long log entry runs over rows
    wordy = msgspec.structs.replace(incident.tasks[2], name="lang " * 2000,
                                    instructions="x " * 5000)
    incident = msgspec.structs.replace(incident, tasks=(*incident.tasks[:2], wordy,
                                                        *incident.tasks[3:]))
    assert len(render(ics204_pdf(incident, plan), tmp_path, "wordy")) >= 4


def test_pdf_without_unicode_font_transliterates(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert pdfform.latin1("Łódź Süd — Ωmega") == "?ódz Süd ? ?mega"
    monkeypatch.setattr(pdfform, "unicode_font", lambda: None)
    incident, plan = sample()
    pdf = ics204_pdf(incident, plan)
    assert len(render(pdf, tmp_path, "core")) == 4
    text = pdf_text(pdf, tmp_path)
    assert "Équipe Nord" in text and "K9 ?ódz" in text


# -- Gantt ---------------------------------------------------------------------

def test_gantt_png_and_svg_have_the_expected_size() -> None:
    incident, plan = sample()
    w_in, h_in = gantt_size(incident, plan)
    png = gantt(plan, incident, "png")
    assert png_size(png) == (round(w_in * 100), round(h_in * 100))
    svg = ET.fromstring(gantt(plan, incident, "svg"))
    assert svg.get("width") == f"{w_in * 72:g}pt"
    assert float(svg.get("height", "0").removesuffix("pt")) == pytest.approx(h_in * 72)
    labels = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    assert {"T1", "T2", "T3"} <= labels
    assert any("Unassigned tasks (2)" in (t or "") for t in labels)
    assert any("K9 Łódź" in (t or "") for t in labels)


def test_gantt_scales_to_30_teams_and_200_tasks() -> None:
    incident, plan = big()
    small_h = gantt_size(*big(n_teams=3, n_tasks=20, left_out=2))[1]
    w_in, h_in = gantt_size(incident, plan)
    assert h_in > 3 * small_h
    png = gantt(plan, incident, "png", color_by="priority", dpi=50)
    width, height = png_size(png)
    assert width == round(w_in * 50) and abs(height - h_in * 50) <= 1
    svg = gantt(plan, incident, "svg").decode("utf-8")
    served = [f">T{i}<" for i in range(180)]
    assert sum(s in svg for s in served) >= 170  # nearly every bar is labelled
    assert ">T199 " in svg  # the unassigned list


# -- GeoJSON -------------------------------------------------------------------

def features(doc: dict[str, Any], layer: str) -> list[dict[str, Any]]:
    return [f for f in doc["features"] if f["properties"]["layer"] == layer]


def test_geojson_validates_and_round_trips_geometries() -> None:
    incident, plan = sample()
    tracks = {"T1": [(9.301, 47.251), (9.319, 47.251), (9.319, 47.252), (9.301, 47.252)]}
    doc = json.loads(json.dumps(to_geojson(incident, plan, tracks=tracks)))
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    tasks = {f["properties"]["task_id"]: f for f in features(doc, "task")}
    assert set(tasks) == {"T1", "T2", "T3", "T4", "T5"}
    for task in incident.tasks:
        assert msgspec.convert(tasks[task.id]["geometry"], Geometry) == task.geometry
    assert tasks["T1"]["properties"]["team"] == "Équipe Nord"
    assert tasks["T1"]["properties"]["start"] == "2026-11-22T06:20:00Z"
    assert tasks["T4"]["properties"]["unassigned_reason"] == "capacity"
    routes = {f["properties"]["team_id"]: f for f in features(doc, "route")}
    assert set(routes) == {"A", "B"}  # the idle team has no line
    assert routes["A"]["geometry"]["coordinates"] == [
        [9.29, 47.24], pytest.approx([9.31, 47.255]), [9.32, 47.26], [9.34, 47.27]]
    assert len(features(doc, "team")) == 3
    [track] = features(doc, "track")
    assert track["properties"]["team_id"] == "A"
    assert len(track["geometry"]["coordinates"]) == 4


def test_geojson_closes_and_winds_rings_per_rfc7946() -> None:
    incident, plan = sample()
    clockwise_open = Polygon(coordinates=(
        ((9.30, 47.25), (9.30, 47.26), (9.32, 47.26), (9.32, 47.25)),
        ((9.305, 47.252), (9.31, 47.252), (9.31, 47.255)),  # a counterclockwise hole
    ))
    tasks = (msgspec.structs.replace(incident.tasks[0], geometry=clockwise_open),
             *incident.tasks[1:])
    doc = to_geojson(msgspec.structs.replace(incident, tasks=tasks), plan)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    outer, hole = features(doc, "task")[0]["geometry"]["coordinates"]

    def signed(ring: list[list[float]]) -> float:
        return sum(a[0] * b[1] - b[0] * a[1] for a, b in itertools.pairwise(ring))

    assert outer[0] == outer[-1] and hole[0] == hole[-1]
    assert signed(outer) > 0 > signed(hole)


def test_schema_rejects_what_rfc7946_forbids() -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    point = {"type": "Feature", "properties": {}, "geometry": {"type": "Point",
                                                               "coordinates": [9.0, 47.0]}}
    assert validator.is_valid({"type": "FeatureCollection", "features": [point]})
    bad = [
        {**point, "geometry": {"type": "LineString", "coordinates": [[9.0, 47.0]]}},
        {**point, "geometry": {"type": "Polygon", "coordinates": [[[9, 47], [9, 48], [9, 47]]]}},
        {**point, "geometry": {"type": "Point", "coordinates": [47.0, 190.0]}},
        {**point, "geometry": {"type": "Point", "coordinates": [9.0]}},
        {**point, "coordinates": [9.0, 47.0]},
        {"type": "Feature", "geometry": None},
    ]
    for feature in bad:
        assert not validator.is_valid({"type": "FeatureCollection", "features": [feature]})
    assert not validator.is_valid({"type": "FeatureCollection", "features": [],
                                   "properties": {}})


# -- KML -----------------------------------------------------------------------

def test_kml_is_well_formed_with_placemarks_and_styles() -> None:
    incident, plan = sample()
    amp = msgspec.structs.replace(incident.tasks[2], name="Fels & <Schlucht>")
    incident = msgspec.structs.replace(incident, tasks=(*incident.tasks[:2], amp,
                                                        *incident.tasks[3:]))
    root = ET.fromstring(to_kml(incident, plan, tracks={"T1": [(9.30, 47.25), (9.31, 47.25)]}))
    assert root.tag == f"{KML}kml"
    folders = {f.findtext(f"{KML}name"): f for f in root.iter(f"{KML}Folder")}
    assert set(folders) == {"Tasks", "Routes", "Teams", "Search tracks"}

    def names(folder: str) -> list[str | None]:
        return [p.findtext(f"{KML}name") for p in folders[folder].iter(f"{KML}Placemark")]

    assert names("Tasks") == ["T1", "T2", "T3", "T4", "T5"]
    assert names("Routes") == ["Équipe Nord", "Bergwacht Süd"]
    assert names("Teams") == ["Équipe Nord", "Bergwacht Süd", "K9 Łódź"]
    assert names("Search tracks") == ["T1 pattern"]
    marks = {p.findtext(f"{KML}name"): p for p in folders["Tasks"].iter(f"{KML}Placemark")}
    assert marks["T1"].find(f".//{KML}Polygon/{KML}outerBoundaryIs") is not None
    assert marks["T2"].find(f".//{KML}LineString") is not None
    assert "Fels & <Schlucht>" in (marks["T3"].findtext(f"{KML}description") or "")
    assert marks["T1"].findtext(f"{KML}TimeSpan/{KML}begin") == "2026-11-22T06:20:00Z"
    styles = {s.get("id"): s for s in root.iter(f"{KML}Style")}
    used = {p.findtext(f"{KML}styleUrl", "").lstrip("#") for p in root.iter(f"{KML}Placemark")}
    assert used <= set(styles) and len(used) == 4  # three teams and grey
    # Équipe Nord is #0072B2: KML writes aabbggrr.
    assert styles[marks["T1"].findtext(f"{KML}styleUrl", "")[1:]].findtext(
        f"{KML}LineStyle/{KML}color") == "ffb27200"


# -- GPX -----------------------------------------------------------------------

def test_gpx_parses_with_routes_and_waypoints() -> None:
    incident, plan = sample()
    gpx = gpxpy.parse(to_gpx(incident, plan, tracks={"T1": [(9.30, 47.25), (9.31, 47.25)]})
                      .decode("utf-8"))
    assert [r.name for r in gpx.routes] == ["Équipe Nord", "Bergwacht Süd"]
    a = gpx.routes[0]
    assert [p.name for p in a.points] == ["START", "T1", "T2", "T2-END"]
    assert (a.points[0].latitude, a.points[0].longitude) == (47.24, 9.29)
    assert [w.name for w in gpx.waypoints] == ["T1", "T2", "T3", "T4", "T5"]
    assert "UNASSIGNED" in (gpx.waypoints[3].description or "")
    assert [t.name for t in gpx.tracks] == ["T1 pattern"]
    team = gpxpy.parse(to_gpx(incident, plan, team_id="B").decode("utf-8"))
    assert [r.name for r in team.routes] == ["Bergwacht Süd"]
    assert [w.name for w in team.waypoints] == ["T3"]
    assert team.name == "Lawine Säntis - Bergwacht Süd"
    with pytest.raises(PlanError):
        to_gpx(incident, plan, team_id="nobody")


def test_gpx_splits_routes_longer_than_a_handheld_takes() -> None:
    period = OperationalPeriod(id="P", start=T0, end=T0 + 86_400)
    tasks = tuple(Task(id=f"L{i}", kind="search_line", geometry=LineString(
        coordinates=((9.0 + i / 1000, 47.0), (9.0 + i / 1000, 47.001)))) for i in range(200))
    team = Team(id="A", position=(8.9, 47.0), shift_start=T0, shift_end=T0 + 86_400)
    visits = tuple(Visit(task_id=t.id, arrival=T0 + i * 60, start=T0 + i * 60,
                         end=T0 + i * 60 + 30) for i, t in enumerate(tasks))
    plan = Plan(incident="x", period=period, routes=(Route(team_id="A", depart=T0,
                                                           visits=visits),))
    gpx = gpxpy.parse(to_gpx(Incident(name="x", period=period, tasks=tasks, teams=(team,)),
                             plan).decode("utf-8"))
    parts = gpx.routes
    assert [r.name for r in parts] == ["A 1/2", "A 2/2"]
    assert all(len(r.points) <= MAX_ROUTE_POINTS for r in parts)
    # 401 points in all; the parts share their joining point.
    assert len(parts[0].points) + len(parts[1].points) == 401 + 1
    assert parts[0].points[-1].name == parts[1].points[0].name


# -- everything ----------------------------------------------------------------

def test_export_all_writes_every_format(tmp_path: Path) -> None:
    incident, plan = sample()
    paths = export_all(incident, plan, tmp_path / "out",
                       activity={"A": [(T0, "Departed staging")]})
    assert [p.name for p in paths] == [
        "ics204.pdf", "ics214_A.pdf", "ics214_B.pdf", "ics214_C.pdf", "timeline.png",
        "timeline.svg", "plan.geojson", "plan.kml", "plan.gpx", "team_A.gpx", "team_B.gpx"]
    assert all(p.stat().st_size > 500 for p in paths)
    doc = json.loads((tmp_path / "out" / "plan.geojson").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    assert len(render((tmp_path / "out" / "ics214_C.pdf").read_bytes(), tmp_path, "c")) == 1


def test_an_empty_incident_exports(tmp_path: Path) -> None:
    period = OperationalPeriod(id="X", start=T0, end=T0 + 3600)
    paths = export_all(Incident(name="Empty", period=period),
                       Plan(incident="Empty", period=period), tmp_path)
    assert [p.name for p in paths] == ["ics204.pdf", "timeline.png", "timeline.svg",
                                       "plan.geojson", "plan.kml", "plan.gpx"]
    assert len(render(paths[0].read_bytes(), tmp_path, "empty")) == 1
    doc = json.loads(paths[3].read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    assert doc["features"] == []


def test_exports_refuse_a_plan_that_does_not_match_the_incident() -> None:
    incident, plan = sample()
    stray = msgspec.structs.replace(plan, unassigned=(Unassigned(task_id="T99",
                                                                 reason="dropped"),))
    for export in (to_geojson, to_kml, to_gpx, ics204_pdf):
        with pytest.raises(PlanError, match="T99"):
            export(incident, stray)
    with pytest.raises(PlanError, match="T99"):
        gantt(stray, incident)


def test_export_of_a_real_solver_plan(tmp_path: Path) -> None:
    from fieldc2.plan.solver import solve

    incident, _ = sample()
    plan = solve(incident, time_limit=1.0, seed=1)
    served = set(plan.assignments) | {u.task_id for u in plan.unassigned}
    assert served == {t.id for t in incident.tasks}
    pdf = ics204_pdf(incident, plan)
    assert len(render(pdf, tmp_path, "solved")) == len(ics204_sheets(incident, plan))
    text = pdf_text(pdf, tmp_path)
    assert all(t in text for t in served)
    jsonschema.Draft202012Validator(SCHEMA).validate(to_geojson(incident, plan))
    gpx = gpxpy.parse(to_gpx(incident, plan).decode("utf-8"))
    assert len(gpx.routes) == sum(1 for r in plan.routes if r.visits)
    assert {w.name for w in gpx.waypoints} == served
    svg = gantt(plan, incident, "svg").decode("utf-8")
    wide = [a.task_id for a in plan.assignments.values() if a.end - a.start >= 1200]
    assert wide and all(f">{t}<" in svg for t in wide)

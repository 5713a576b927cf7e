"""The planning REST API over real TLS with client certificates (httpx),
with a real pytak team device receiving what is published."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import msgspec
import pytest
import yaml

from fieldc2.config import OrdersConfig
from fieldc2.plan.model import Incident, Plan
from fieldc2.server import CommandPost
from fieldc2.sim.units import chat
from tests.conftest import eventually, make_config
from tests.orders_helpers import T0, incident
from tests.test_interop import TIMEOUT, clients_of

NOW = dt.datetime.now(dt.UTC)
Client = Callable[[str], httpx.AsyncClient]


@pytest.fixture
async def post(tmp_path: Path) -> AsyncIterator[CommandPost]:
    base = make_config(tmp_path, tls=True)
    config = dataclasses.replace(  # P-256 keys: fast to make, and TLS is TLS
        base, tls=dataclasses.replace(base.tls, key_type="p256"),
        orders=OrdersConfig(max_solve_time=5.0))
    async with CommandPost(config) as running:
        running.users.add("planner", ("Cyan",), role="planner")
        running.users.add("duty", ("Cyan",), role="operator")
        running.users.add("viewer", ("Cyan",))
        yield running


@pytest.fixture
async def as_user(post: CommandPost) -> AsyncIterator[Client]:
    made: list[httpx.AsyncClient] = []

    def client(name: str) -> httpx.AsyncClient:
        paths = post.ca.write_client(name, now=NOW)
        context = ssl.create_default_context(cafile=str(post.ca.cert_path))
        context.load_cert_chain(str(paths["cert"]), str(paths["key"]))
        made.append(httpx.AsyncClient(base_url=f"https://localhost:{post.http_port}/api/plan",
                                      verify=context, timeout=TIMEOUT * 4))
        return made[-1]

    yield client
    for one in made:
        await one.aclose()


def incident_yaml(devices: dict[str, tuple[str, ...]]) -> bytes:
    found = msgspec.to_builtins(incident(devices))
    for task in found["tasks"]:
        task["duration"] = 600  # keep every task within a shift
    return yaml.safe_dump(found).encode()


async def test_reading_is_open_to_accounts_writing_needs_a_planner(as_user: Client) -> None:
    viewer = as_user("viewer")
    missing = await viewer.get("/incident")
    assert missing.status_code == 404 and "PUT /api/plan/incident" in missing.json()["error"]
    refused = await viewer.put("/incident", content=incident_yaml({"a": ()}),
                               headers={"content-type": "application/yaml"})
    assert refused.status_code == 403 and "--role planner" in refused.json()["error"]
    stranger = await as_user("stranger").post("/solve", json={})
    assert stranger.status_code == 403
    for writer in ("planner", "duty"):  # the planner role and an operator may both write
        loaded = await as_user(writer).put("/incident", content=incident_yaml({"a": ()}),
                                           headers={"content-type": "application/yaml"})
        assert loaded.status_code == 200, (writer, loaded.text)


async def test_edit_solve_publish_track_and_replan(post: CommandPost, as_user: Client) -> None:
    planner, viewer = as_user("planner"), as_user("viewer")
    async with clients_of(post) as connect:
        device = await connect("ALPHA1")
        await device.report()
        await eventually(lambda: device.uid in post.endpoints)

        loaded = await planner.put("/incident", content=incident_yaml({"a": (device.uid,)}),
                                   headers={"content-type": "application/yaml"})
        assert loaded.status_code == 200, loaded.text
        assert [t["id"] for t in loaded.json()["tasks"]] == ["T1", "T2", "T3"]

        task = {"id": "T4", "kind": "point", "name": "Bridge",
                "geometry": {"type": "Point", "coordinates": [7.005, 45.005]}, "duration": 300}
        assert (await planner.post("/tasks", json=task)).status_code == 201
        again = await planner.post("/tasks", json=task)
        assert again.status_code == 409 and "PUT" in again.json()["error"]
        renamed = await planner.put("/tasks/T4", json={**task, "name": "Old bridge"})
        assert renamed.status_code == 200 and renamed.json()["name"] == "Old bridge"
        wrong = await planner.put("/tasks/T4", json={**task, "id": "T5"})
        assert wrong.status_code == 422
        bad = await planner.post("/tasks", json={"id": "T9", "kind": "teleport"})
        assert bad.status_code == 422 and "kind" in bad.json()["error"]
        team = {"id": "b", "position": [7.0, 45.0], "shift_start": 1, "shift_end": 2}
        backwards = await planner.post("/teams", json={**team, "shift_end": 0})
        assert backwards.status_code == 422 and "'shift_end'" in backwards.json()["error"]
        nowhere = await planner.post("/teams", json={**team, "position": [7.0, 95.0]})
        assert nowhere.status_code == 422 and "'position'" in nowhere.json()["error"]
        after = {**task, "id": "T5", "precedence": ["T9"]}
        dangling = await planner.post("/tasks", json=after)
        assert dangling.status_code == 422 and "'T9'" in dangling.json()["error"]
        assert (await planner.post("/tasks", json={**after, "precedence": ["T4"]})).status_code \
            == 201
        needed = await planner.delete("/tasks/T4")      # T5 waits for it
        assert needed.status_code == 422 and "precedence" in needed.json()["error"]
        assert (await planner.delete("/tasks/T5")).status_code == 200
        assert (await planner.delete("/tasks/T4")).status_code == 200
        assert (await planner.delete("/tasks/T4")).status_code == 404
        assert (await planner.post("/teams", json=team)).status_code == 201
        assert (await planner.delete("/teams/b")).status_code == 200

        too_long = await planner.post("/solve", json={"time_limit": 3600})
        assert too_long.status_code == 422
        solved = await planner.post("/solve", json={"time_limit": 1.0, "seed": 1})
        assert solved.status_code == 200, solved.text
        plan = solved.json()
        served = [v["task_id"] for r in plan["routes"] for v in r["visits"]]
        assert sorted(served) == ["T1", "T2", "T3"], plan
        assert (await viewer.get("/plan")).json() == plan

        published = await planner.post("/publish")
        assert published.status_code == 200, published.text
        orders = published.json()["orders"]
        assert {o["task_id"] for o in orders} == {"T1", "T2", "T3"}
        await device.expect(lambda m: m.type == "b-t-f", "an order")

        async def states() -> dict[str, str]:
            body = (await viewer.get("/orders")).json()
            return {o["order"]["id"]: o["recipients"][0]["state"] for o in body}
        first = orders[0]["id"]
        await device.send(chat(device.uid, "ALPHA1", f"{first} done", to_callsign="COMMAND POST"))
        for _ in range(100):
            if (await states())[first] == "done":
                break
        assert (await states())[first] == "done"
        detail = (await viewer.get(f"/orders/{first}")).json()
        assert [h["after"] for h in detail["history"]][-1] == "done"
        assert (await viewer.get("/orders/ORD-FFFFFFFF")).status_code == 404
        reported = (await viewer.get("/changes")).json()
        assert reported == [{"type": "TaskDone", "task_id": orders[0]["task_id"],
                             "at": reported[0]["at"], "team_id": "a"}]

        replanned = await planner.post("/replan", json={"time_limit": 1.0})
        assert replanned.status_code == 200, replanned.text
        assert replanned.json()["changes"][0]["type"] == "TaskDone"
        assert (await viewer.get("/changes")).json() == []
        nothing = await planner.post("/replan", json={"time_limit": 1.0})
        assert nothing.status_code == 422 and "TaskDone" in nothing.json()["error"]


async def test_exports_and_limits(post: CommandPost, as_user: Client) -> None:
    planner = as_user("planner")
    assert (await planner.get("/export/geojson")).status_code == 404  # nothing loaded
    await planner.put("/incident", content=incident_yaml({"a": ("dev",)}),
                      headers={"content-type": "application/yaml"})
    assert (await planner.post("/solve", json={"time_limit": 0.5})).status_code == 200
    geojson = await planner.get("/export/geojson")
    assert geojson.status_code == 200 and geojson.json()["type"] == "FeatureCollection"
    (track,) = [f for f in geojson.json()["features"] if f["properties"]["layer"] == "track"]
    assert track["properties"]["task_id"] == "T3" and track["properties"]["team_id"] == "a"
    assert len(track["geometry"]["coordinates"]) > 10      # the parallel track over Sector B
    assert b"T3 pattern" in (await planner.get("/export/kml")).content
    assert b"<trk>" in (await planner.get("/export/gpx")).content
    books = (await planner.get("/segments")).json()
    (sector,) = books["segments"]
    assert sector["segment"] == "T3" and sector["searches"] == [] and sector["poa"] is None
    t3 = next(t for t in (await planner.get("/incident")).json()["tasks"] if t["id"] == "T3")
    searched = await planner.put("/tasks/T3", json={**t3, "poa": 0.5, "status": "done"})
    assert searched.status_code == 200, searched.text
    books = (await planner.get("/segments")).json()
    (sector,) = books["segments"]
    (search,) = sector["searches"]
    assert 0.55 < search["pod"] < 0.7 and sector["cumulative_pod"] == search["pod"]
    left = 0.5 * (1 - search["pod"]) / (1 - 0.5 * search["pod"])
    assert sector["poa_now"] == pytest.approx(left)
    assert books["rest_of_world_poa"] == pytest.approx(1 - left)
    await planner.put("/tasks/T3", json=t3)
    pdf = await planner.get("/export/ics214.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert (await planner.get("/export/gpx")).content.startswith(b"<?xml")
    svg = await planner.get("/export/gantt.svg")
    assert svg.headers["content-type"] == "image/svg+xml" and b"<svg" in svg.content
    assert (await planner.get("/export/bogus")).status_code == 404
    assert (await planner.delete("/tasks/T3")).status_code == 200
    stale = await planner.get("/export/kml")
    assert stale.status_code == 409 and "/api/plan/solve" in stale.json()["error"]
    huge = b"x" * (4 * 1024 * 1024 + 1)
    too_big = await planner.put("/incident", content=huge,
                                headers={"content-type": "application/json"})
    assert too_big.status_code == 413
    garbage = await planner.put("/incident", content=b"{not json",
                                headers={"content-type": "application/json"})
    assert garbage.status_code == 400 and "JSON" in garbage.json()["error"]
    half = await planner.post("/publish", json={"plan": None, "incident": {"name": "x"}})
    assert half.status_code == 422


async def test_geojson_incident_loads(as_user: Client) -> None:
    from fieldc2.plan.incident import incident_to_geojson

    planner = as_user("planner")
    geojson = incident_to_geojson(incident({"a": ("dev",)}))
    loaded = await planner.put("/incident", json=geojson,
                               headers={"content-type": "application/geo+json"})
    assert loaded.status_code == 200, loaded.text
    assert [t["id"] for t in loaded.json()["tasks"]] == ["T1", "T2", "T3"]
    broken = {**geojson, "features": [{"type": "Feature", "geometry": None,
                                       "properties": {"id": "X"}}]}
    refused = await planner.put("/incident", json=broken)
    assert refused.status_code == 422 and "X" in refused.json()["error"]


async def test_solve_and_replan_start_teams_from_live_positions(
        post: CommandPost, as_user: Client) -> None:
    from fieldc2.plan.geo import distance_m
    from fieldc2.plan.model import entry_point

    planner = as_user("planner")
    live = (7.045, 45.04)                     # about 5 km from the file's (7.0, 45.0)
    async with clients_of(post) as connect:
        device = await connect("ALPHA1")
        await device.report(lon=live[0], lat=live[1])
        await eventually(lambda: any(k[0] == device.uid for k in post.picture.entries))
        file_incident = incident_yaml({"a": (device.uid,), "b": ("never-seen",)})
        await planner.put("/incident", content=file_incident,
                          headers={"content-type": "application/yaml"})

        solved = await planner.post("/solve", json={"time_limit": 0.5})
        assert solved.status_code == 200, solved.text
        plan = msgspec.convert(solved.json(), Plan)
        (used,) = plan.live_positions
        assert (used.team_id, used.uid, used.position) == ("a", device.uid, live)
        stored = msgspec.convert((await planner.get("/incident")).json(), Incident)
        assert stored.team("a").position == live and stored.team("b").position == (7.0, 45.0)
        route = plan.route("a")
        assert route is not None and route.visits
        first = stored.task(route.visits[0].task_id)
        assert route.visits[0].distance_m == pytest.approx(
            distance_m(live, entry_point(first.geometry)), abs=1.0)

        # The device moves; a re-plan starts from where it is now.
        moved = (7.011, 45.011)
        await device.report(lon=moved[0], lat=moved[1])
        await eventually(lambda: any(k[0] == device.uid and i.event.lon == moved[0]
                                     for k, i in post.picture.entries.items()))
        again = await planner.post("/replan", json={"time_limit": 0.5, "changes": [
            {"type": "TeamDelayed", "team_id": "b", "available_from": T0 + 3600}]})
        assert again.status_code == 200, again.text
        assert [p["position"] for p in again.json()["plan"]["live_positions"]] == [list(moved)]

        # Without live positions, the file's position is used and nothing is claimed live.
        await planner.put("/incident", content=file_incident,
                          headers={"content-type": "application/yaml"})
        typed = await planner.post("/solve", json={"time_limit": 0.3, "live_positions": False})
        assert typed.json()["live_positions"] == []
        # Publishing a plan made from the file's positions warns about the moved team.
        published = await planner.post("/publish")
        assert published.status_code == 200, published.text
        assert any("team a" in w and "km from" in w for w in published.json()["warnings"])


async def test_unable_reply_returns_the_task_to_the_pool(post: CommandPost,
                                                         as_user: Client) -> None:
    planner = as_user("planner")
    async with clients_of(post) as connect:
        device = await connect("ALPHA1")
        await device.report()
        await eventually(lambda: device.uid in post.endpoints)
        await planner.put("/incident", content=incident_yaml({"a": (device.uid,)}),
                          headers={"content-type": "application/yaml"})
        assert (await planner.post("/solve", json={"time_limit": 0.5})).status_code == 200
        orders = (await planner.post("/publish")).json()["orders"]
        failed = next(o for o in orders if o["task_id"] == "T1")
        await device.expect(lambda m: m.type == "b-t-f", "an order")
        await device.send(chat(device.uid, "ALPHA1", f"{failed['id']} unable, river in flood",
                               to_callsign="COMMAND POST"))
        for _ in range(100):
            reported = (await planner.get("/changes")).json()
            if reported:
                break
        assert reported == [{"type": "TaskFailed", "task_id": "T1", "team_id": "a",
                             "at": reported[0]["at"]}]
        team = {"id": "b", "name": "BRAVO", "position": [7.0, 45.0], "shift_start": T0,
                "shift_end": T0 + 8 * 3600}
        assert (await planner.post("/teams", json=team)).status_code == 201
        replanned = await planner.post("/replan", json={"time_limit": 0.5})
        assert replanned.status_code == 200, replanned.text
        plan = msgspec.convert(replanned.json()["plan"], Plan)
        assert plan.assignments["T1"].team_id == "b"
        assert "T1" in replanned.json()["report"]["changed_tasks"]
        stored = msgspec.convert((await planner.get("/incident")).json(), Incident)
        assert stored.task("T1").excluded_teams == {"a"}

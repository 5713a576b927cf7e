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
from fieldc2.server import CommandPost
from fieldc2.sim.units import chat
from tests.conftest import eventually, make_config
from tests.orders_helpers import incident
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
        running.users.add("planner", ("Cyan",), role="operator")
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
    assert refused.status_code == 403 and "operator" in refused.json()["error"]
    stranger = await as_user("stranger").post("/solve", json={})
    assert stranger.status_code == 403


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
        assert (await planner.delete("/tasks/T4")).status_code == 200
        assert (await planner.delete("/tasks/T4")).status_code == 404
        team = {"id": "b", "position": [7.0, 45.0], "shift_start": 1, "shift_end": 2}
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
    pdf = await planner.get("/export/ics214.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert (await planner.get("/export/gpx")).content.startswith(b"<?xml")
    assert (await planner.get("/export/bogus")).status_code == 404
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

"""`fieldc2 plan ...` as a user runs it: solve a file, publish to a live
command post over HTTPS with a client certificate, read the status."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from fieldc2.cli import main
from fieldc2.plan.incident import save_incident
from fieldc2.plan_cli import Bundle
from fieldc2.server import CommandPost
from tests.conftest import eventually, make_config
from tests.orders_helpers import incident
from tests.test_interop import clients_of


def incident_file(tmp_path: Path, devices: dict[str, tuple[str, ...]]) -> Path:
    found = incident(devices)
    tasks = tuple(msgspec.structs.replace(t, duration=600) for t in found.tasks)
    # A task no team can do, to see the reason printed.
    boat = msgspec.structs.replace(tasks[0], id="W1", name="Lake", capabilities=frozenset({"boat"}))
    path = tmp_path / "incident.yaml"
    save_incident(msgspec.structs.replace(found, tasks=(*tasks, boat)), path)
    return path


def test_solve_prints_routes_and_reasons_and_writes_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)          # as the CLI logs by default
    path = incident_file(tmp_path, {"a": ("dev-1",), "b": ()})
    out, exports = tmp_path / "plan.json", tmp_path / "exports"
    assert main(["plan", "solve", str(path), "--time", "1", "--out", str(out),
                 "--export", str(exports)]) == 0
    printed = capsys.readouterr().out
    assert "routes" in printed and "A " in printed and "T1" in printed
    assert "W1" in printed and "capability" in printed
    bundle = msgspec.json.decode(out.read_bytes(), type=Bundle)
    served = {v.task_id for r in bundle.plan.routes for v in r.visits}
    assert served == {"T1", "T2", "T3"}
    assert [u.task_id for u in bundle.plan.unassigned] == ["W1"]
    names = {p.name for p in exports.iterdir()}
    assert {"ics204.pdf", "plan.geojson", "plan.kml", "timeline.png"} <= names
    layers = [f["properties"]["layer"] for f in
              json.loads((exports / "plan.geojson").read_text())["features"]]
    assert layers.count("track") == 1                        # the search area's pattern
    assert "T3 pattern" in (exports / "plan.gpx").read_text()
    # The PDF font subsetter's hundreds of INFO lines do not bury the output.
    assert not [r for r in caplog.records if r.name.startswith("fontTools")]


def test_errors_say_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "solve", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    path = incident_file(tmp_path, {"a": ("dev-1",)})
    assert main(["plan", "publish", str(path), "--time", "0.2", "--server", "localhost:1",
                 "--data-dir", str(tmp_path)]) == 2
    assert "fieldc2 cert issue" in capsys.readouterr().err
    assert main(["plan", "status", "--data-dir", str(tmp_path / "empty")]) == 2
    assert "--server" in capsys.readouterr().err


@pytest.fixture
async def post(tmp_path: Path) -> AsyncIterator[CommandPost]:
    base = make_config(tmp_path / "data", tls=True)
    config = dataclasses.replace(base, tls=dataclasses.replace(base.tls, key_type="p256"))
    async with CommandPost(config) as running:
        running.users.add("planner", ("Cyan",), role="operator")
        running.ca.write_client("planner", now=dt.datetime.now(dt.UTC))
        yield running


async def test_publish_to_a_live_post_and_follow_status(
        post: CommandPost, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(post.config.data_dir)
    async with clients_of(post) as connect:
        device = await connect("ALPHA1")
        await device.report()
        await eventually(lambda: device.uid in post.endpoints)
        path = incident_file(tmp_path, {"a": (device.uid,)})
        out = tmp_path / "plan.json"
        assert await asyncio.to_thread(main, ["plan", "solve", str(path), "--time", "0.5",
                                              "--out", str(out)]) == 0
        capsys.readouterr()
        # On the server host: the planner's certificate and the CA are found in --data-dir.
        code = await asyncio.to_thread(main, ["plan", "publish", str(out), "--server",
                                              f"localhost:{post.http_port}", "--data-dir", data])
        printed = capsys.readouterr()
        assert code == 0, printed.err
        assert "published PLAN-" in printed.out and "3 orders" in printed.out
        await device.expect(lambda m: m.type == "b-t-f", "an order")

        assert await asyncio.to_thread(main, ["plan", "status", "--data-dir", data]) == 0
        local = capsys.readouterr().out
        assert local.count("ORD-") == 3 and f"{device.uid[:10]}" in local
        assert "delivered" in local
        first = local.split("ORD-", 1)[1][:8]
        assert await asyncio.to_thread(main, ["plan", "status", "--data-dir", data,
                                              "--order", f"ORD-{first}"]) == 0
        history = capsys.readouterr().out
        assert "-> issued (publish)" in history and "-> delivered (written)" in history
        remote = await asyncio.to_thread(main, [
            "plan", "status", "--server", f"localhost:{post.http_port}", "--data-dir", data])
        assert remote == 0 and capsys.readouterr().out.count("ORD-") == 3
        refused = await asyncio.to_thread(main, [
            "plan", "publish", str(out), "--server", f"localhost:{post.http_port}",
            "--data-dir", data, "--cert", str(post.ca.write_client(
                "nobody", now=dt.datetime.now(dt.UTC))["cert"])])
        assert refused == 2 and "--role planner" in capsys.readouterr().err

        # An incident file is solved by the server, from the devices' live positions.
        await device.report(lat=45.02, lon=7.03)
        await eventually(lambda: any(i.event.lat == 45.02 for k, i in post.picture.entries.items()
                                     if k[0] == device.uid))
        code = await asyncio.to_thread(main, ["plan", "publish", str(path), "--time", "0.5",
                                              "--server", f"localhost:{post.http_port}",
                                              "--data-dir", data])
        printed = capsys.readouterr()
        assert code == 0, printed.err
        assert f"A starts from its live position (45.02000, 7.03000) reported by {device.uid}" \
            in " ".join(printed.out.split())
        assert "published PLAN-" in printed.out and "W1" in printed.out


def test_solve_reads_a_geojson_incident(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from fieldc2.plan.incident import incident_to_geojson, load_incident

    found = load_incident(incident_file(tmp_path, {"a": ()}))
    for name in ("incident.geojson", "incident.json"):   # .json: not a PLAN.json bundle
        path = tmp_path / name
        path.write_text(json.dumps(incident_to_geojson(found)))
        assert main(["plan", "solve", str(path), "--time", "0.3"]) == 0
        printed = capsys.readouterr().out
        assert "T1" in printed and "W1" in printed and "capability" in printed

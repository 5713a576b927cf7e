"""``fieldc2 plan ...``: solve an incident, publish orders, follow their status.

``solve`` runs on this machine (no server needed).  ``publish`` always goes
through the running command post's REST API over HTTPS with a client
certificate: the server holds the teams' connections, so only it can send
orders and track the answers.  On the server host itself, issue a
certificate for a planner account once (``fieldc2 user add planner --role
planner --group ...`` and ``fieldc2 cert issue planner``) and pass
``--data-dir``: the certificate, key and CA are then found there.
``publish`` given an incident file (not a PLAN.json) has the server solve
it, so that teams start from their devices' live positions.  ``status``
reads the order book in ``--data-dir`` directly, or asks a remote server
with ``--server``.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from fieldc2.config import Config
from fieldc2.errors import ConfigError, PlanError
from fieldc2.plan.model import Incident, Plan

DEFAULT_API_PORT = 8443
#: Seconds to wait for the server's answer; publishing a large plan writes
#: hundreds of orders, each audited.
HTTP_TIMEOUT = 60.0
#: How often the progress bar moves while the server solves, seconds.
PROGRESS_TICK_S = 0.1


class Bundle(msgspec.Struct, frozen=True):
    """What ``plan solve --out`` writes and ``plan publish`` reads."""

    incident: Incident
    plan: Plan


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    plan = sub.add_parser(
        "plan", help="solve an incident, publish orders to teams, follow their status",
        description="Mission planning: solve an incident file into routes for the teams, "
                    "publish the orders to the teams' devices through a running command "
                    "post, and follow each order per device.")
    actions = plan.add_subparsers(dest="plan_command", required=True, metavar="ACTION")
    solve = actions.add_parser(
        "solve", help="compute a plan for an incident file (on this machine)",
        description="Solve an incident (YAML or GeoJSON) and print each team's route and "
                    "the tasks left unassigned, with the reason.")
    solve.add_argument("file", type=Path, help="incident file (.yaml/.yml or .geojson/.json)")
    _solver_flags(solve)
    solve.add_argument("--out", type=Path, metavar="PLAN.json",
                       help="write the incident and plan here, for `fieldc2 plan publish`")
    solve.add_argument("--export", type=Path, metavar="DIR",
                       help="write ICS 204/214 PDFs, a timeline, GeoJSON, KML and GPX here")

    publish = actions.add_parser(
        "publish", help="send a plan's orders to the teams via a running command post",
        description="Publish through the command post's REST API (HTTPS, client "
                    "certificate of an admin, operator or planner account).  FILE is a "
                    "PLAN.json from `plan solve --out` (published as it is), or an incident "
                    "file, which the server loads and solves first, starting each team from "
                    "its devices' live positions.")
    publish.add_argument("file", type=Path, help="PLAN.json or an incident file")
    _solver_flags(publish)
    _server_flags(publish, required=True)

    status = actions.add_parser(
        "status", help="show every order and each device's state",
        description="Show each order and the state of every device it went to, from the "
                    "order book in --data-dir, or from a remote server with --server.")
    status.add_argument("--order", metavar="ID", help="one order, with its history")
    _server_flags(status, required=False)
    for one in actions.choices.values():
        one.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration")
        one.add_argument("--data-dir", type=Path, metavar="DIR",
                         help="the command post's data (default ./fieldc2-data)")


def _solver_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--time", type=float, default=10.0, metavar="S",
                        help="solver time limit in seconds (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="solver random seed (default 0)")


def _server_flags(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--server", required=required, metavar="HOST[:PORT]",
                        help=f"the command post's HTTPS API (port {DEFAULT_API_PORT} unless "
                             "given)")
    parser.add_argument("--cert", type=Path, metavar="PEM",
                        help="client certificate (default <data-dir>/ca/clients/planner.pem)")
    parser.add_argument("--key", type=Path, metavar="PEM",
                        help="client key (default: --cert with .key)")
    parser.add_argument("--ca", type=Path, metavar="PEM",
                        help="the server's CA certificate (default <data-dir>/ca/ca.pem)")


def run(args: argparse.Namespace, config: Config) -> int:
    if args.plan_command == "solve":
        return cmd_solve(args)
    if args.plan_command == "publish":
        return cmd_publish(args, config)
    return cmd_status(args, config)


# --- solve ---------------------------------------------------------------------------


def load_bundle_or_incident(path: Path) -> Bundle | Incident:
    """A PLAN.json bundle, or an incident file."""
    from fieldc2.plan.incident import load_incident

    if path.suffix.lower() == ".json":
        try:
            return msgspec.json.decode(path.read_bytes(), type=Bundle)
        except (msgspec.DecodeError, OSError):
            pass  # a GeoJSON incident with a .json suffix, or unreadable: say so below
    if not path.exists():
        raise PlanError(f"{path} does not exist; give an incident file (see examples/)")
    return load_incident(path)


def solve_with_progress(incident: Incident, time_limit: float, seed: int) -> Plan:
    """Run the solver with a progress bar: elapsed vs limit, best objective."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fieldc2.plan.solver import solve

    columns = (TextColumn("solving"), BarColumn(), TimeElapsedColumn(),
               TextColumn("of {task.total:.0f} s   best {task.fields[best]}"))
    with Progress(*columns, transient=True, console=_console(sys.stderr)) as bar:
        job = bar.add_task("solve", total=time_limit, best="-")

        def progress(elapsed: float, best: float) -> None:
            bar.update(job, completed=min(elapsed, time_limit), best=f"{best:,.0f}")

        return solve(incident, time_limit=time_limit, seed=seed, progress=progress)


def _console(stream: Any) -> Any:
    from rich.console import Console

    return Console(file=stream)


def print_plan(incident: Incident, plan: Plan) -> None:
    """Each team's route and the unassigned tasks with reasons, as tables."""
    from rich.table import Table

    from fieldc2.orders.compose import _clock

    routes = Table(title=f"{plan.incident}: routes", show_lines=False)
    for column in ("team", "tasks (start)", "km", "ends"):
        routes.add_column(column)
    for route in plan.routes:
        team = incident.team(route.team_id)
        stops = ", ".join(f"{v.task_id} ({_clock(v.start)})" for v in route.visits) or "idle"
        routes.add_row(team.callsign, stops, f"{route.distance_m / 1000:.1f}",
                       _clock(route.end))
    console = _console(sys.stdout)
    console.print(routes)
    if plan.unassigned:
        left = Table(title="unassigned tasks")
        for column in ("task", "reason", "detail"):
            left.add_column(column)
        for item in plan.unassigned:
            left.add_row(item.task_id, item.reason, item.detail)
        console.print(left)
    else:
        console.print("every task is assigned")
    for live in plan.live_positions:
        console.print(f"{incident.team(live.team_id).callsign} starts from its live position "
                      f"({live.position[1]:.5f}, {live.position[0]:.5f}) reported by "
                      f"{live.uid} at {iso_time(live.at)}")
    console.print(f"objective {plan.objective:,.0f}; solver {plan.stats.runtime:.1f} s, "
                  f"{plan.stats.iterations} iterations")


def cmd_solve(args: argparse.Namespace) -> int:
    found = load_bundle_or_incident(args.file)
    incident = found.incident if isinstance(found, Bundle) else found
    _check_time(args.time)
    plan = solve_with_progress(incident, args.time, args.seed)
    print_plan(incident, plan)
    if args.out is not None:
        args.out.write_bytes(msgspec.json.encode(Bundle(incident, plan)))
        print(f"wrote {args.out}; send it with: fieldc2 plan publish {args.out} --server HOST")
    if args.export is not None:
        from fieldc2.plan.exports import export_all
        from fieldc2.plan.segments import tracks_for

        for path in export_all(incident, plan, args.export, tracks=tracks_for(incident)):
            print(f"exported {path}")
    return 0


def _check_time(seconds: float) -> None:
    if not 0 < seconds <= 3600:
        raise ConfigError("--time must be between 0 and 3600 seconds")


# --- talking to the server -----------------------------------------------------------


def _client(args: argparse.Namespace, config: Config) -> Any:
    """An httpx client for the server's API with our certificate."""
    import httpx

    host, _, port = str(args.server).partition(":")
    ca = args.ca or config.data_dir / "ca" / "ca.pem"
    cert = args.cert or config.data_dir / "ca" / "clients" / "planner.pem"
    key = args.key or cert.with_suffix(".key")
    for path, flag in ((ca, "--ca"), (cert, "--cert"), (key, "--key")):
        if not path.exists():
            raise ConfigError(f"{path} not found; give {flag} (a certificate from "
                              "`fieldc2 cert issue NAME` on the server, and its ca.pem)")
    try:
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot use {cert} / {key} / {ca}: {exc}") from exc
    base = f"https://{host}:{port or DEFAULT_API_PORT}/api/plan"
    return httpx.Client(base_url=base, verify=context, timeout=HTTP_TIMEOUT)


def call(client: Any, method: str, path: str, **kwargs: Any) -> Any:
    """One API call; errors become a ConfigError telling the user what to do."""
    import httpx

    try:
        response = client.request(method, path, **kwargs)
    except httpx.ConnectError as exc:
        raise ConfigError(f"cannot reach {client.base_url}: {exc}; is `fieldc2 serve` running "
                          "there, and is --server right?") from exc
    except httpx.HTTPError as exc:
        raise ConfigError(f"{client.base_url}{path}: {exc}") from exc
    if response.status_code >= 400:
        try:
            message = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise ConfigError(f"the server refused ({response.status_code}): {message}")
    return response.json()


def solve_on_server(client: Any, incident: Incident, time_limit: float, seed: int) -> Bundle:
    """Load ``incident`` on the server and solve it there, where the teams'
    live positions are known, with a progress bar while the server works."""
    import concurrent.futures

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    call(client, "PUT", "/incident", content=msgspec.json.encode(incident),
         headers={"content-type": "application/json"})
    body = msgspec.json.encode({"time_limit": time_limit, "seed": seed})
    columns = (TextColumn("solving on the server"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True, console=_console(sys.stderr)) as bar, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        job = bar.add_task("solve", total=time_limit)
        asked = pool.submit(call, client, "POST", "/solve", content=body,
                            headers={"content-type": "application/json"},
                            timeout=time_limit + HTTP_TIMEOUT)
        started = time.monotonic()
        while not asked.done():
            bar.update(job, completed=min(time.monotonic() - started, time_limit))
            concurrent.futures.wait([asked], timeout=PROGRESS_TICK_S)
        plan = msgspec.convert(asked.result(), Plan)
    stored = msgspec.convert(call(client, "GET", "/incident"), Incident)
    return Bundle(stored, plan)


def cmd_publish(args: argparse.Namespace, config: Config) -> int:
    found = load_bundle_or_incident(args.file)
    if not isinstance(found, Bundle):
        _check_time(args.time)
    with _client(args, config) as client:
        if isinstance(found, Bundle):
            body = msgspec.json.encode({"incident": found.incident, "plan": found.plan})
        else:
            solved = solve_on_server(client, found, args.time, args.seed)
            print_plan(solved.incident, solved.plan)
            body = b"{}"                  # publish what the server just solved
        result = call(client, "POST", "/publish", content=body,
                      headers={"content-type": "application/json"})
    for warning in result.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    orders = result.get("orders", [])
    print(f"published {result['plan_id']}: {len(orders)} orders")
    for order in orders:
        print(f"  {order['id']}  {order['team_id']:<12} {order['task_id']:<12} "
              f"to {', '.join(order['recipients'])}")
    print("follow them with: fieldc2 plan status")
    return 0


# --- status ----------------------------------------------------------------------------


def _local_status(config: Config, order_id: str | None) -> list[dict[str, Any]]:
    from fieldc2.api.plan_api import status_json
    from fieldc2.orders.book import BOOK_NAME, OrderBook

    path = config.data_dir / BOOK_NAME
    if not path.exists():
        raise ConfigError(f"no order book at {path}; give --data-dir of the command post, "
                          "or --server for a remote one")
    with OrderBook(path, ack_timeout=config.orders.ack_timeout) as book:
        found = [status_json(s) for s in book.status(order_id)]
        if order_id is not None and found:
            found[0]["history"] = msgspec.to_builtins(book.history(order_id))
    return found


def _device_state(recipient: dict[str, Any]) -> str:
    overdue = recipient["alerted"] and recipient["state"] in ("issued", "delivered")
    return f"{recipient['recipient']}: {recipient['state']}" + (" (overdue)" if overdue else "")


def iso_time(epoch: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    from rich.table import Table

    if args.server:
        with _client(args, config) as client:
            path = f"/orders/{args.order}" if args.order else "/orders"
            answer = call(client, "GET", path)
        found = [answer] if args.order else answer
    else:
        found = _local_status(config, args.order)
    if args.order and not found:
        raise ConfigError(f"no order {args.order}; `fieldc2 plan status` lists them")
    table = Table(title="orders")
    for column in ("order", "team", "task", "state", "devices"):
        table.add_column(column)
    for item in found:
        order = item["order"]
        devices = ", ".join(_device_state(r) for r in item["recipients"])
        table.add_row(order["id"], order["team_id"], order["task_id"], item["state"], devices)
    console = _console(sys.stdout)
    console.print(table if found else "no orders yet")
    for entry in (found[0].get("history", []) if args.order else []):
        console.print(f"  {iso_time(entry['at'])}  {entry['recipient']}: "
                      f"{entry['before'] or '-'} -> {entry['after']} ({entry['source']}) "
                      f"{entry['note']}")
    return 0



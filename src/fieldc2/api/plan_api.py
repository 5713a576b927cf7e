"""The planning REST API: ``/api/plan/...`` on the HTTPS service (8443).

JSON in and out.  Who may do what follows the Marti API's rule for who is
asking (the client certificate's CN names the account): any account that is
not disabled may read; changing the incident, solving, re-planning and
publishing need an ``admin``, ``operator`` or ``planner`` account, since
publishing sends orders to teams.  Over plain HTTP (TLS off) nobody can be identified, so
writes are refused there and reads follow ``open_access``.

The current incident and plan live in the order book's state table, so they
survive a restart.  The solver runs in a worker thread (one solve at a time)
so the event loop keeps serving the teams meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fieldc2.api.marti import Requester, requester
from fieldc2.api.tls_http import client_cn
from fieldc2.errors import FieldC2Error, PlanError
from fieldc2.orders.model import OrderStatus
from fieldc2.plan.check import check_incident
from fieldc2.plan.live import Fix, moved_teams, newest_fixes, usable, with_live_positions
from fieldc2.plan.model import Change, Incident, LivePosition, Plan, Task, Team

if TYPE_CHECKING:
    from fieldc2.orders.service import OrderService
    from fieldc2.server import CommandPost

log = logging.getLogger("fieldc2.plan_api")

#: Largest incident file accepted: a few thousand tasks with detailed search
#: polygons fit in well under a megabyte; more is a mistake or an attack.
MAX_INCIDENT_BODY = 4 * 1024 * 1024
#: Largest body for one task, team, change or solve request.
MAX_SMALL_BODY = 256 * 1024
_T = TypeVar("_T")
#: CoT types whose point is where a unit is: atoms ("a-f-G-U-C", ...).
POSITION_TYPES = ("a-",)
#: Roles that may change the plan and publish orders.
WRITE_ROLES = ("admin", "operator", "planner")


class ApiError(Exception):
    """An HTTP error answer: status and a message telling the caller what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SolveRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    time_limit: float | None = None
    seed: int = 0
    live_positions: bool = True
    """Start each team from its devices' latest report when recent."""


class ReplanRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    changes: list[Change] = msgspec.field(default_factory=list)
    """Changes to apply; empty = the changes the teams reported since last time."""
    time_limit: float | None = None
    live_positions: bool = True


class PublishRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    incident: Incident | None = None
    plan: Plan | None = None


def _json(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused past ``limit`` bytes before it is all read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode(data: bytes, kind: type[_T], what: str) -> _T:
    """JSON ``data`` as ``kind``, or a 422 saying which field is wrong."""
    try:
        return msgspec.json.decode(data or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError(422, f"invalid {what}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"{what} is not valid JSON: {exc}") from exc


def parse_incident(data: bytes, content_type: str) -> Incident:
    """An incident from YAML (``fieldc2.plan.incident``'s format), a GeoJSON
    FeatureCollection of tasks, or the JSON ``GET /api/plan/incident`` returns."""
    from fieldc2.plan.incident import incident_from_geojson, incident_from_yaml

    try:
        text = data.decode("utf-8")
        if "yaml" in content_type:
            return incident_from_yaml(text, "request body")
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ApiError(400, f"the incident is not valid JSON ({exc}); send YAML with "
                                "content-type application/yaml") from exc
        if isinstance(raw, dict) and raw.get("type") == "FeatureCollection":
            return incident_from_geojson(raw, "request body")
        incident = msgspec.convert(raw, Incident)
        check_incident(incident, "request body")
        return incident
    except UnicodeDecodeError as exc:
        raise ApiError(400, "the incident is not UTF-8 text") from exc
    except (PlanError, msgspec.ValidationError) as exc:
        raise ApiError(422, f"invalid incident: {exc}") from exc


def status_json(status: OrderStatus) -> dict[str, Any]:
    """One order with each recipient's state, as the API shows it."""
    return {"order": msgspec.to_builtins(status.order), "state": status.state.value,
            "recipients": [msgspec.to_builtins(r) for r in status.recipients]}


class PlanDesk:
    """The current incident and plan of one command post."""

    def __init__(self, post: CommandPost) -> None:
        self.post = post
        self.solving = asyncio.Lock()

    @property
    def orders(self) -> OrderService:
        service = self.post.orders
        if service is None:
            raise ApiError(503, "the command post is not running its order service")
        return service

    @property
    def incident(self) -> Incident | None:
        raw = self.orders.book.get_state("incident")
        return msgspec.json.decode(raw, type=Incident) if raw else None

    def need_incident(self) -> Incident:
        found = self.incident
        if found is None:
            raise ApiError(404, "no incident loaded: PUT /api/plan/incident first")
        return found

    @property
    def plan(self) -> Plan | None:
        raw = self.orders.book.get_state("plan")
        return msgspec.json.decode(raw, type=Plan) if raw else None

    def need_plan(self) -> Plan:
        found = self.plan
        if found is None:
            raise ApiError(404, "no plan yet: POST /api/plan/solve first")
        return found

    def save(self, incident: Incident, plan: Plan | None) -> None:
        book = self.orders.book
        book.put_state("incident", msgspec.json.encode(incident))
        book.put_state("plan", msgspec.json.encode(plan) if plan is not None else b"")

    def fixes(self, incident: Incident) -> dict[str, Fix]:
        """The newest usable position report of every device of the teams,
        from the command post's live picture."""
        uids = {u for team in incident.teams for u in team.tak_uids}
        now_ms = self.post.now_ms()
        found = (Fix(uid=e.uid, position=(e.lon, e.lat), at=e.time // 1000)
                 for e in (item.event for item in self.post.picture.entries.values())
                 if e.uid in uids and e.type.startswith(POSITION_TYPES)
                 and not e.is_stale(now_ms) and usable(e.lat, e.lon))
        return newest_fixes(found)

    def live(self, incident: Incident, wanted: bool) -> tuple[Incident, tuple[LivePosition, ...]]:
        """``incident`` with teams starting from their live positions."""
        if not wanted:
            return incident, ()
        return with_live_positions(incident, self.fixes(incident), int(self.post.clock()))

    def time_limit(self, asked: float | None) -> float:
        cfg = self.post.config.orders
        limit = cfg.solve_time_limit if asked is None else asked
        if not 0 < limit <= cfg.max_solve_time:
            raise ApiError(422, f"time_limit must be in (0, {cfg.max_solve_time}] seconds")
        return limit


Handler = Callable[[Request, PlanDesk, Requester], Awaitable[Response]]


def _replace(items: tuple[Any, ...], item: Any, *, add: bool) -> tuple[Any, ...]:
    ids = [x.id for x in items]
    if add and item.id in ids:
        raise ApiError(409, f"{item.id!r} exists; PUT to change it")
    if not add and item.id not in ids:
        raise ApiError(404, f"no {item.id!r}; POST to add it")
    return tuple(item if x.id == item.id else x for x in items) + ((item,) if add else ())


# --- handlers ------------------------------------------------------------------------


async def get_incident(request: Request, desk: PlanDesk, who: Requester) -> Response:
    return _json(desk.need_incident())


async def put_incident(request: Request, desk: PlanDesk, who: Requester) -> Response:
    data = await read_body(request, MAX_INCIDENT_BODY)
    incident = parse_incident(data, request.headers.get("content-type", ""))
    desk.save(incident, None)
    await desk.post.audit("incident_loaded", who.name, incident.name,
                          tasks=str(len(incident.tasks)), teams=str(len(incident.teams)))
    return _json(incident)


async def edit_item(request: Request, desk: PlanDesk, who: Requester) -> Response:
    """POST /tasks, PUT /tasks/{id}, DELETE /tasks/{id} (and the same for teams)."""
    incident = desk.need_incident()
    kind = request.url.path.rstrip("/").split("/api/plan/", 1)[1].split("/", 1)[0]
    field = "tasks" if kind == "tasks" else "teams"
    items: tuple[Any, ...] = getattr(incident, field)
    item_id = request.path_params.get("item_id")
    if request.method == "DELETE":
        if item_id not in [x.id for x in items]:
            raise ApiError(404, f"no {kind[:-1]} {item_id!r}")
        items = tuple(x for x in items if x.id != item_id)
        changed: Task | Team | None = None
    else:
        data = await read_body(request, MAX_SMALL_BODY)
        changed = decode(data, Task, "task") if kind == "tasks" else decode(data, Team, "team")
        if item_id is not None and changed.id != item_id:
            raise ApiError(422, f"the body's id {changed.id!r} is not {item_id!r}")
        items = _replace(items, changed, add=item_id is None)
    edited = msgspec.structs.replace(incident, **{field: items})
    try:
        check_incident(edited, f"{kind[:-1]} {item_id or (changed.id if changed else '')!r}")
    except PlanError as exc:
        raise ApiError(422, f"refused, the incident would be invalid: {exc}") from exc
    desk.save(edited, desk.plan)
    await desk.post.audit(f"{kind[:-1]}_{request.method.lower()}", who.name,
                          item_id or (changed.id if changed else ""))
    return _json(changed if changed is not None else {"deleted": item_id},
                 201 if request.method == "POST" else 200)


async def solve_plan(request: Request, desk: PlanDesk, who: Requester) -> Response:
    from fieldc2.plan.solver import solve

    asked = decode(await read_body(request, MAX_SMALL_BODY), SolveRequest, "solve request")
    incident = desk.need_incident()
    limit = desk.time_limit(asked.time_limit)
    if desk.solving.locked():
        raise ApiError(409, "a solve is already running; wait for it and try again")
    incident, live = desk.live(incident, asked.live_positions)
    async with desk.solving:
        plan = await asyncio.to_thread(solve, incident, time_limit=limit, seed=asked.seed)
    plan = msgspec.structs.replace(plan, live_positions=live)
    desk.save(incident, plan)
    return _json(plan)


async def replan_plan(request: Request, desk: PlanDesk, who: Requester) -> Response:
    from fieldc2.plan.replan import replan, updated_incident

    asked = decode(await read_body(request, MAX_SMALL_BODY), ReplanRequest, "replan request")
    incident, previous = desk.need_incident(), desk.need_plan()
    limit = desk.time_limit(asked.time_limit)
    changes = asked.changes or desk.orders.take_changes()
    if not changes:
        raise ApiError(422, "no changes given and none reported by the teams; send "
                            '{"changes": [{"type": "TaskDone", "task_id": ..., "at": ...}]}')
    if desk.solving.locked():
        raise ApiError(409, "a solve is already running; wait for it and try again")
    now = int(desk.post.clock())
    incident, live = desk.live(incident, asked.live_positions)
    try:
        async with desk.solving:
            plan, report = await asyncio.to_thread(replan, incident, previous, changes,
                                                   time_limit=limit, now=now)
    except (PlanError, KeyError) as exc:
        log.warning("re-plan failed: %r", exc)
        if not asked.changes:
            desk.orders.changes.extend(changes)  # reported changes are kept for next time
        raise ApiError(422, f"cannot re-plan with these changes: {exc}") from exc
    plan = msgspec.structs.replace(plan, live_positions=live)
    desk.save(updated_incident(incident, changes, previous), plan)
    return _json({"plan": plan, "report": report, "changes": changes})


async def get_plan(request: Request, desk: PlanDesk, who: Requester) -> Response:
    return _json(desk.need_plan())


async def get_changes(request: Request, desk: PlanDesk, who: Requester) -> Response:
    return _json(list(desk.orders.changes))


async def publish(request: Request, desk: PlanDesk, who: Requester) -> Response:
    asked = decode(await read_body(request, MAX_INCIDENT_BODY), PublishRequest,
                   "publish request")
    if (asked.incident is None) != (asked.plan is None):
        raise ApiError(422, "send both incident and plan, or neither to publish the current")
    incident = asked.incident or desk.need_incident()
    plan = asked.plan or desk.need_plan()
    missing = [v.task_id for r in plan.routes for v in r.visits
               if v.task_id not in {t.id for t in incident.tasks}]
    missing += [r.team_id for r in plan.routes if r.team_id not in {t.id for t in incident.teams}]
    if missing:
        raise ApiError(409, f"the plan names {missing} which the incident lacks; solve again")
    if asked.incident is not None:
        desk.save(incident, plan)
    result = desk.orders.publish(incident, plan, actor=who.name)
    moved = moved_teams(incident, plan, desk.fixes(incident), int(desk.post.clock()))
    for warning in moved:
        log.warning("publish %s: %s", result.plan_id, warning)
    return _json(msgspec.structs.replace(result, warnings=result.warnings + tuple(moved)))


async def list_orders(request: Request, desk: PlanDesk, who: Requester) -> Response:
    return JSONResponse([status_json(s) for s in desk.orders.status()])


async def one_order(request: Request, desk: PlanDesk, who: Requester) -> Response:
    order_id = request.path_params["order_id"]
    found = desk.orders.status(order_id)
    if not found:
        raise ApiError(404, f"no order {order_id!r}; GET /api/plan/orders lists them")
    body = status_json(found[0])
    body["history"] = msgspec.to_builtins(desk.orders.book.history(order_id))
    return JSONResponse(body)


async def segments(request: Request, desk: PlanDesk, who: Requester) -> Response:
    """POA, coverage and POD per search segment, counting the searches the
    teams reported done since the last re-plan."""
    from fieldc2.plan.model import TaskDone
    from fieldc2.plan.segments import segment_books

    incident = desk.need_incident()
    reported = {c.task_id for c in desk.orders.changes if isinstance(c, TaskDone)}
    books, rest = segment_books(incident, reported)
    return _json({"segments": books, "rest_of_world_poa": rest})


EXPORTS: dict[str, str] = {
    "geojson": "application/geo+json", "kml": "application/vnd.google-earth.kml+xml",
    "gpx": "application/gpx+xml", "gantt.png": "image/png", "gantt.svg": "image/svg+xml",
    "ics204.pdf": "application/pdf",
    "ics214.pdf": "application/pdf",
}


def _render(kind: str, incident: Incident, plan: Plan, desk: PlanDesk) -> bytes:
    """One export, built in a worker thread (matplotlib and fpdf are slow)."""
    from fieldc2.plan.exports.gantt import gantt
    from fieldc2.plan.exports.geo import to_geojson, to_gpx, to_kml
    from fieldc2.plan.exports.ics import ics204_pdf, ics214_pdf
    from fieldc2.plan.segments import tracks_for

    tracks = tracks_for(incident) if kind in ("geojson", "kml", "gpx") else {}
    if kind == "geojson":
        return json.dumps(to_geojson(incident, plan, tracks=tracks), ensure_ascii=False).encode()
    if kind == "kml":
        return to_kml(incident, plan, tracks=tracks)
    if kind == "gpx":
        return to_gpx(incident, plan, tracks=tracks)
    if kind in ("gantt.png", "gantt.svg"):
        return gantt(plan, incident, "png" if kind == "gantt.png" else "svg")
    if kind == "ics204.pdf":
        return ics204_pdf(incident, plan)
    return ics214_pdf(incident, desk.orders.book.activity)


async def export(request: Request, desk: PlanDesk, who: Requester) -> Response:
    kind = request.path_params["kind"]
    if kind not in EXPORTS:
        raise ApiError(404, f"no export {kind!r}; one of {sorted(EXPORTS)}")
    incident, plan = desk.need_incident(), desk.need_plan()
    try:
        data = await asyncio.to_thread(_render, kind, incident, plan, desk)
    except ImportError as exc:
        raise ApiError(501, f"this build cannot export {kind}: {exc}") from exc
    except PlanError as exc:
        raise ApiError(409, f"{exc}: the incident changed since the plan was made; "
                            "POST /api/plan/solve (or /replan) first") from exc
    return Response(data, media_type=EXPORTS[kind])


# --- wiring --------------------------------------------------------------------------


def _authorise(post: CommandPost, request: Request, open_access: bool,
               write: bool) -> Requester:
    who = requester(post, request.scope, open_access)
    if isinstance(who, Response):
        raise ApiError(who.status_code, bytes(who.body).decode())
    if not write:
        return who
    cn = client_cn(request.scope)
    if not cn:
        raise ApiError(403, "changing the plan needs a client certificate of an admin, "
                            "operator or planner account (switch [tls] on for client "
                            "certificates)")
    user = post.users.get(cn)
    if user is None or user.role not in WRITE_ROLES:
        raise ApiError(403, f"{cn!r} may read the plan but not change it: an admin can "
                            f"give it the planner role (`fieldc2 user add {cn} --role "
                            "planner --group ...`)")
    return who


def plan_routes(post: CommandPost, *, open_access: bool) -> list[Route]:
    """The ``/api/plan`` routes, to add to the HTTPS service's app."""
    desk = PlanDesk(post)

    def guarded(handler: Handler, write: bool) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                who = _authorise(post, request, open_access, write)
                return await handler(request, desk, who)
            except ApiError as exc:
                return _error(exc.status, exc.message)
            except (PlanError, KeyError) as exc:
                return _error(422, f"the plan request cannot be done: {exc}")
            except FieldC2Error as exc:
                log.error("plan API %s %s: %s", request.method, request.url.path, exc)
                return _error(500, str(exc))
        return endpoint

    p = "/api/plan"
    return [
        Route(f"{p}/incident", guarded(get_incident, False), methods=["GET"]),
        Route(f"{p}/incident", guarded(put_incident, True), methods=["PUT"]),
        Route(f"{p}/tasks", guarded(edit_item, True), methods=["POST"]),
        Route(f"{p}/tasks/{{item_id}}", guarded(edit_item, True), methods=["PUT", "DELETE"]),
        Route(f"{p}/teams", guarded(edit_item, True), methods=["POST"]),
        Route(f"{p}/teams/{{item_id}}", guarded(edit_item, True), methods=["PUT", "DELETE"]),
        Route(f"{p}/solve", guarded(solve_plan, True), methods=["POST"]),
        Route(f"{p}/replan", guarded(replan_plan, True), methods=["POST"]),
        Route(f"{p}/plan", guarded(get_plan, False), methods=["GET"]),
        Route(f"{p}/changes", guarded(get_changes, False), methods=["GET"]),
        Route(f"{p}/publish", guarded(publish, True), methods=["POST"]),
        Route(f"{p}/segments", guarded(segments, False), methods=["GET"]),
        Route(f"{p}/orders", guarded(list_orders, False), methods=["GET"]),
        Route(f"{p}/orders/{{order_id}}", guarded(one_order, False), methods=["GET"]),
        Route(f"{p}/export/{{kind}}", guarded(export, False), methods=["GET"]),
    ]

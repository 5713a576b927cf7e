"""The first tier of the Marti API, in the response shapes TAK clients parse.

``/Marti/api/version`` (plain text), ``/Marti/api/version/config``,
``/Marti/api/clientEndPoints``, ``/Marti/api/contacts/all`` and
``/Marti/api/groups/all``.  Shapes follow TAK Server's ``{"version": "3",
"type": ..., "data": ..., "nodeId": ...}`` envelope.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from fieldc2 import __version__
from fieldc2.model.cot import Takv
from fieldc2.protocol.cot_xml import format_time

if TYPE_CHECKING:
    from fieldc2.server import CommandPost

API_VERSION = "3"


def _takv(takv: Takv | None) -> str:
    if takv is None:
        return ""
    return f"{takv.device}:{takv.os}:{takv.platform}:{takv.version}"


def _envelope(post: CommandPost, kind: str, data: Any) -> JSONResponse:
    return JSONResponse({"version": API_VERSION, "type": kind, "data": data,
                         "nodeId": post.node_id})


def marti_app(post: CommandPost) -> Starlette:
    async def version(request: Request) -> Response:
        return PlainTextResponse(f"fieldc2-{__version__}")

    async def version_config(request: Request) -> Response:
        host = request.url.hostname or post.config.bind
        return _envelope(post, "ServerConfig",
                         {"version": __version__, "api": API_VERSION, "hostname": host})

    async def client_endpoints(request: Request) -> Response:
        data = [
            {"callsign": e.callsign, "uid": e.uid, "username": "",
             "lastEventTime": format_time(e.last_event_ms), "lastStatus": e.status}
            for e in post.endpoints.values()
        ]
        return _envelope(post, "com.bbn.marti.remote.ClientEndpoint", data)

    async def contacts(request: Request) -> Response:
        data = [
            {"uid": e.uid, "callsign": e.callsign, "team": e.team, "role": e.role,
             "takv": _takv(e.takv), "notes": "", "filterGroups": list(e.groups)}
            for e in post.endpoints.values() if e.status == "Connected"
        ]
        return JSONResponse(data)

    async def groups(request: Request) -> Response:
        data = []
        for name in post.known_groups():
            for direction in ("IN", "OUT"):
                data.append({"name": name, "direction": direction, "created": "",
                             "type": "SYSTEM", "bitpos": 2, "active": True,
                             "description": ""})
        return _envelope(post, "com.bbn.marti.remote.groups.Group", data)

    return Starlette(routes=[
        Route("/Marti/api/version", version),
        Route("/Marti/api/version/config", version_config),
        Route("/Marti/api/clientEndPoints", client_endpoints),
        Route("/Marti/api/contacts/all", contacts),
        Route("/Marti/api/groups/all", groups),
    ])

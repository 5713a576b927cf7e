"""The first tier of the Marti API, in the response shapes TAK clients parse.

``/Marti/api/version`` (plain text), ``/Marti/api/version/config``,
``/Marti/api/clientEndPoints``, ``/Marti/api/contacts/all`` and
``/Marti/api/groups/all``.  Shapes follow TAK Server's ``{"version": "3",
"type": ..., "data": ..., "nodeId": ...}`` envelope.

Who asks decides what is shown.  Over TLS the client certificate's CN names
the requester: its account's groups (or, for a certificate without an
account, the groups the configuration gives that name) select the clients
listed, as on the stream; an ``admin`` sees all of them; a disabled account
gets 403.  Over plain HTTP (TLS switched off) there is no identity and,
with ``open_access``, everyone is shown.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from fieldc2 import __version__
from fieldc2.api.tls_http import client_cn
from fieldc2.errors import ConfigError
from fieldc2.model.cot import Takv
from fieldc2.protocol.cot_xml import format_time

if TYPE_CHECKING:
    from fieldc2.server import CommandPost

API_VERSION = "3"
log = logging.getLogger("fieldc2.marti")


@dataclass(frozen=True, slots=True)
class Requester:
    """Who is calling, as far as what they may see is concerned."""

    name: str
    groups: frozenset[str]
    sees_all: bool = False

    def sees(self, groups: tuple[str, ...] | frozenset[str]) -> bool:
        return self.sees_all or not self.groups.isdisjoint(groups)


Handler = Callable[[Request, Requester], Awaitable[Response]]


def requester(post: CommandPost, scope: Any, open_access: bool) -> Requester | Response:
    """The requester behind a request, or the response refusing it."""
    cn = client_cn(scope)
    if cn is None:
        if open_access:
            return Requester("", frozenset(), sees_all=True)
        return PlainTextResponse("the Marti API needs a client certificate", 403)
    if not cn:
        return PlainTextResponse("the Marti API needs a client certificate", 403)
    try:
        post.users.reload()
    except ConfigError as exc:
        log.error("%s; keeping the accounts loaded before", exc)
    user = post.users.get(cn)
    if user is None:
        return Requester(cn, post.router.groups_for(cn, cn, None))
    if user.disabled:
        return PlainTextResponse(f"account {cn!r} is disabled", 403)
    return Requester(cn, frozenset(user.groups), sees_all=user.role == "admin")


def _takv(takv: Takv | None) -> str:
    if takv is None:
        return ""
    return f"{takv.device}:{takv.os}:{takv.platform}:{takv.version}"


def _envelope(post: CommandPost, kind: str, data: Any) -> JSONResponse:
    return JSONResponse({"version": API_VERSION, "type": kind, "data": data,
                         "nodeId": post.node_id})


def marti_app(post: CommandPost, *, open_access: bool = True) -> Starlette:
    """The Marti API; ``open_access`` serves identity-less (plain HTTP) requests."""

    def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            who = requester(post, request.scope, open_access)
            if isinstance(who, Response):
                return who
            return await handler(request, who)
        return endpoint

    async def version(request: Request, who: Requester) -> Response:
        return PlainTextResponse(f"fieldc2-{__version__}")

    async def version_config(request: Request, who: Requester) -> Response:
        host = request.url.hostname or post.config.bind
        return _envelope(post, "ServerConfig",
                         {"version": __version__, "api": API_VERSION, "hostname": host})

    async def client_endpoints(request: Request, who: Requester) -> Response:
        data = [
            {"callsign": e.callsign, "uid": e.uid, "username": "",
             "lastEventTime": format_time(e.last_event_ms), "lastStatus": e.status}
            for e in post.endpoints.values() if who.sees(e.groups)
        ]
        return _envelope(post, "com.bbn.marti.remote.ClientEndpoint", data)

    async def contacts(request: Request, who: Requester) -> Response:
        data = [
            {"uid": e.uid, "callsign": e.callsign, "team": e.team, "role": e.role,
             "takv": _takv(e.takv), "notes": "", "filterGroups": list(e.groups)}
            for e in post.endpoints.values() if e.status == "Connected" and who.sees(e.groups)
        ]
        return JSONResponse(data)

    async def groups(request: Request, who: Requester) -> Response:
        data = []
        for name in post.known_groups():
            if not who.sees((name,)):
                continue
            for direction in ("IN", "OUT"):
                data.append({"name": name, "direction": direction, "created": "",
                             "type": "SYSTEM", "bitpos": 2, "active": True,
                             "description": ""})
        return _envelope(post, "com.bbn.marti.remote.groups.Group", data)

    return Starlette(routes=[
        Route("/Marti/api/version", guarded(version)),
        Route("/Marti/api/version/config", guarded(version_config)),
        Route("/Marti/api/clientEndPoints", guarded(client_endpoints)),
        Route("/Marti/api/contacts/all", guarded(contacts)),
        Route("/Marti/api/groups/all", guarded(groups)),
    ])

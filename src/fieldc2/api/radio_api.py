"""Radio channel keys over mutual TLS: ``/api/radio/channels[/<name>]``.

A channel key is handed only to a caller with a client certificate from the
command post's CA whose account is not disabled; over plain HTTP there is no
identity and the answer is always 403, whatever ``open_access`` says for the
Marti endpoints.  Every key handed out is written to the audit log, so a lost
device's last fetch can be found and the channel rotated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from fieldc2.api.marti import Requester, requester
from fieldc2.errors import ConfigError
from fieldc2.radio_channels import ChannelDirectory

if TYPE_CHECKING:
    from fieldc2.server import CommandPost


def channel_directory(post: CommandPost) -> ChannelDirectory:
    """Where the command post keeps its radio channel keys."""
    return ChannelDirectory(post.config.data_dir / "radio")


def radio_routes(post: CommandPost) -> list[Route]:
    """The routes to mount on the mutual-TLS HTTP service."""

    def identified(request: Request) -> Requester | Response:
        who = requester(post, request.scope, open_access=False)
        if isinstance(who, Requester) and not who.name:
            return PlainTextResponse("radio keys need a client certificate", 403)
        return who

    async def channels(request: Request) -> Response:
        who = identified(request)
        if isinstance(who, Response):
            return who
        return JSONResponse({"channels": channel_directory(post).names()})

    async def channel(request: Request) -> Response:
        who = identified(request)
        if isinstance(who, Response):
            return who
        name = request.path_params["name"]
        try:
            body = channel_directory(post).document(name)
        except ConfigError as exc:
            return PlainTextResponse(str(exc), 404)
        await post.audit("radio.key", who.name, name)
        return Response(body, media_type="application/json")

    return [
        Route("/api/radio/channels", channels),
        Route("/api/radio/channels/{name}", channel),
    ]

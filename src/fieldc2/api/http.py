"""Run the HTTP app inside the command post's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator
from typing import TYPE_CHECKING

import uvicorn

from fieldc2.api.marti import marti_app
from fieldc2.errors import ConfigError

if TYPE_CHECKING:
    from fieldc2.server import CommandPost

log = logging.getLogger("fieldc2.http")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn that leaves signal handling to the command post."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpService:
    """The Marti API on ``config.http.port``."""

    def __init__(self, post: CommandPost) -> None:
        self.post = post
        cfg = post.config
        config = uvicorn.Config(
            marti_app(post), host=cfg.bind, port=cfg.http.port, log_level="warning",
            lifespan="off", access_log=False, server_header=False,
            limit_concurrency=1000, timeout_keep_alive=30)
        self.server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(), name="fieldc2-http")
        while not self.server.started:
            if self._task.done():
                exc = self._task.exception()
                raise ConfigError(
                    f"cannot serve HTTP on {self.post.config.bind}:{self.post.config.http.port}: "
                    f"{exc or 'startup failed'} (is the port in use? try --http-port)")
            await asyncio.sleep(0.01)
        log.info("Marti API on http://%s:%d", self.post.config.bind, self.port)

    @property
    def port(self) -> int:
        servers = getattr(self.server, "servers", [])
        port: int = servers[0].sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

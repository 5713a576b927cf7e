"""Run the HTTP apps inside the command post's event loop.

Two services, each an embedded uvicorn:

* :class:`HttpService`, the Marti API (8443).  HTTPS that requires a client
  certificate from the post's CA whenever the post has one (TLS on).  Plain
  HTTP only when TLS is switched off: open to anyone who can reach it, or
  closed to all when the stream requires logins (``tcp_require_auth``),
  since there is then no way to tell who is asking.
* :class:`EnrollmentService` (8446).  HTTPS that authenticates only the
  server, with HTTP Basic logins: how a client gets its certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.types import ASGIApp

from fieldc2.api.enrollment import LoginGuard, enrollment_app
from fieldc2.api.marti import marti_app
from fieldc2.api.radio_api import radio_routes
from fieldc2.api.tls_http import (
    ClientCertProtocol,
    client_cert_context,
    context_factory,
    server_only_context,
)
from fieldc2.crypto.ca import CertificateAuthority
from fieldc2.crypto.revocation import crl_routes
from fieldc2.errors import ConfigError

if TYPE_CHECKING:
    from fieldc2.server import CommandPost

log = logging.getLogger("fieldc2.http")

#: Open connections per service; uvicorn answers 503 beyond this.  A phone
#: keeps one or two; a thousand covers a large exercise and bounds sockets.
MAX_CONNECTIONS = 1000
#: Open connections to enrollment: each device enrolls once, so a hundred at
#: once is a whole unit arriving together; fewer bounds password-guess fan-out.
MAX_ENROLLMENT_CONNECTIONS = 100
#: Seconds an idle keep-alive connection is held open.
KEEP_ALIVE = 30


class _EmbeddedServer(uvicorn.Server):
    """uvicorn that leaves signal handling to the command post."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _server_credentials(post: CommandPost) -> tuple[Path, Path]:
    """The server's certificate and key (issued by the post's CA at start)."""
    cfg = post.config
    now = dt.datetime.fromtimestamp(post.clock(), dt.UTC)
    ca: CertificateAuthority = post.ca
    return ca.server_credentials(cfg.tls.hostnames, cfg.tls.ips, now=now)


class EmbeddedHttp:
    """One ASGI app on one port, over plain HTTP or over TLS with ``context``."""

    def __init__(self, post: CommandPost, app: ASGIApp, port: int, *, label: str, flag: str,
                 context: ssl.SSLContext | None = None,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.post = post
        self.label = label
        self.flag = flag
        self.scheme = "https" if context is not None else "http"
        tls: dict[str, Any] = {}
        if context is not None:
            # Our context (TLS 1.2+, our suites, client certificates as asked)
            # and the protocol that tells the app the client's certificate CN.
            tls = {"ssl_context_factory": context_factory(context), "http": ClientCertProtocol,
                   "ws": "none", "proxy_headers": False}
        config = uvicorn.Config(
            app, host=post.config.bind, port=port, log_level="warning",
            lifespan="off", access_log=False, server_header=False,
            limit_concurrency=max_connections, timeout_keep_alive=KEEP_ALIVE, **tls)
        self.server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(), name=f"fieldc2-{self.flag}")
        while not self.server.started:
            if self._task.done():
                exc = self._task.exception()
                raise ConfigError(
                    f"cannot serve the {self.label} on {self.post.config.bind}:"
                    f"{self.server.config.port}: {exc or 'startup failed'} "
                    f"(is the port in use? try --{self.flag})")
            await asyncio.sleep(0.01)
        log.info("%s on %s://%s:%d", self.label, self.scheme, self.post.config.bind, self.port)

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


class HttpService(EmbeddedHttp):
    """The Marti API on ``config.http.port``: mutual TLS when the post has a CA."""

    def __init__(self, post: CommandPost) -> None:
        context = None
        open_access = False
        if post.ca is not None:
            cert, key = _server_credentials(post)
            context = client_cert_context(post.ca, cert, key)
        elif post.config.stream.tcp_require_auth:
            log.warning("Marti API over plain HTTP refuses everyone: logins are required "
                        "but client certificates need [tls] on")
        else:
            open_access = True
            log.warning("Marti API over plain HTTP: anyone who reaches it can list contacts "
                        "(switch [tls] on for client certificates)")
        app = marti_app(post, open_access=open_access)
        from fieldc2.api.plan_api import plan_routes
        app.router.routes.extend(plan_routes(post, open_access=open_access))
        app.router.routes.extend(radio_routes(post))
        super().__init__(post, app, post.config.http.port, label="Marti API",
                         flag="http-port", context=context)


class EnrollmentService(EmbeddedHttp):
    """Certificate enrollment on ``port``: server-only TLS, HTTP Basic logins."""

    def __init__(self, post: CommandPost, port: int, *, cert_days: int = 365) -> None:
        if post.ca is None:
            raise ConfigError("enrollment needs the certificate authority: switch [tls] on")
        cert, key = _server_credentials(post)
        guard = LoginGuard(post.users, post.login_limiter, post.clock, post.audit)
        app = enrollment_app(post.ca, guard, unit=post.config.server_name, cert_days=cert_days)
        # The CRL is public and signed: served here without a login, where
        # clients that have no certificate yet can fetch it too.
        app.router.routes.extend(crl_routes(post.ca, post.clock))
        super().__init__(post, app, port, label="certificate enrollment",
                         flag="enrollment-port", context=server_only_context(cert, key),
                         max_connections=MAX_ENROLLMENT_CONNECTIONS)

"""HTTPS for the embedded uvicorn: our TLS contexts, and who the client is.

uvicorn's ``ssl_*`` options cannot set a minimum TLS version, so the
contexts are built here (TLS 1.2 or newer, forward-secret AEAD suites, as on
the CoT stream) and handed over with ``ssl_context_factory``.

uvicorn does not put the client's certificate into the ASGI scope.
:class:`ClientCertProtocol` is its h11 protocol with one addition: every
request on a connection carries ``scope["extensions"]["tls"]`` with the
verified certificate's CN (``client_cn``) and serial as ``ssl`` reports it
(``client_serial``, upper-case hex), both empty when the client sent none.
asyncio calls ``connection_made`` only after the handshake, so the peer
certificate is known by then.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from fieldc2.crypto.ca import CertificateAuthority
from fieldc2.transport.tls import TLS12_CIPHERS, peer_common_name, server_context

SslFactory = Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext]


def client_cert_context(ca: CertificateAuthority, cert: Path, key: Path) -> ssl.SSLContext:
    """Mutual TLS: only clients holding a certificate from ``ca`` get in (the Marti API)."""
    return server_context(ca, cert, key)


def server_only_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS that authenticates only the server (enrollment: clients have no certificate yet)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(str(cert), str(key))
    context.options |= ssl.OP_NO_COMPRESSION
    return context


def context_factory(context: ssl.SSLContext) -> SslFactory:
    """``uvicorn.Config(ssl_context_factory=...)`` that serves ``context`` as built."""
    def factory(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return context
    return factory


def client_cn(scope: Scope) -> str | None:
    """The CN of the client's verified certificate; ``None`` on plain HTTP.

    An empty string means TLS without a client certificate.
    """
    tls = scope.get("extensions", {}).get("tls")
    if not isinstance(tls, dict):
        return None
    return str(tls.get("client_cn", ""))


class _WithTlsExtension:
    """ASGI middleware adding one connection's TLS facts to each request's scope."""

    __slots__ = ("app", "facts")

    def __init__(self, app: ASGIApp, facts: dict[str, Any]) -> None:
        self.app = app
        self.facts = facts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = dict(scope.get("extensions") or {})
        extensions["tls"] = dict(self.facts)
        await self.app({**scope, "extensions": extensions}, receive, send)


class ClientCertProtocol(H11Protocol):
    """uvicorn's h11 protocol that tells the app who the TLS client is."""

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        if self.scheme != "https":
            return
        peercert = transport.get_extra_info("peercert") or {}
        facts = {"client_cn": peer_common_name(peercert),
                 "client_serial": str(peercert.get("serialNumber", ""))}
        self.app = _WithTlsExtension(self.config.loaded_app, facts)

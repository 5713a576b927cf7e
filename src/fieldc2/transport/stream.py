"""The asyncio shell around one CoT stream connection (TCP, later TLS).

Thin on purpose: bytes from the socket go into :class:`CotStream`, its events
go to the hub (the command post), bytes for the socket come from the hub's
fan-out.  Flow control is explicit: when the transport's buffer passes its
high-water mark the client is *slow* and collects a bounded backlog instead
of writes, until ``resume_writing``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Iterable
from typing import Protocol, cast

from fieldc2.fanout import Backlog, Outgoing
from fieldc2.protocol.stream import (
    Closing,
    CotStream,
    Format,
    LoginRequested,
    Received,
    Rejected,
    Switched,
)
from fieldc2.router import GroupKey, Peer
from fieldc2.transport.tls import peer_common_name

log = logging.getLogger("fieldc2.stream")
#: Characters a peer must not get into a log line (newlines forge new lines).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class Hub(Protocol):
    """What a connection reports to (the command post)."""

    def connected(self, client: ClientConnection) -> None: ...

    def received(self, client: ClientConnection, message: Received) -> None: ...

    def login_requested(self, client: ClientConnection, request: LoginRequested) -> None: ...

    def disconnected(self, client: ClientConnection, reason: str) -> None: ...


class ClientConnection(Peer, asyncio.Protocol):
    """One TAK client: a routing peer, a fan-out recipient and a protocol."""

    __slots__ = (
        "_high",
        "addr",
        "backlog",
        "blocked",
        "bytes_in",
        "bytes_out",
        "close_reason",
        "connected_at",
        "events_in",
        "events_out",
        "hub",
        "identity",
        "last_seen",
        "paused_since",
        "picture_sent",
        "picture_timer",
        "stream",
        "transport",
    )

    def __init__(self, hub: Hub, peer_id: int, groups: GroupKey, stream: CotStream,
                 backlog_limit: int, write_buffer_high: int) -> None:
        Peer.__init__(self, peer_id, groups)
        self.hub = hub
        self.stream = stream
        self.backlog = Backlog(backlog_limit)
        self._high = write_buffer_high
        self.transport: asyncio.Transport | None = None
        self.addr = "?"
        self.paused_since: float | None = None
        self.picture_timer: asyncio.TimerHandle | None = None
        self.close_reason = ""
        self.blocked = False
        self.picture_sent = False
        self.identity = ""
        """The CN of the client's certificate on TLS; empty on plain TCP."""
        self.connected_at = self.last_seen = time.time()
        self.events_in = self.events_out = self.bytes_in = self.bytes_out = 0

    # --- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=self._high)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.addr = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.identity = peer_common_name(transport.get_extra_info("peercert"))
        self.hub.connected(self)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.last_seen = now
        self.bytes_in += len(data)
        self.stream.receive_data(data, now)
        self._drain()

    def _drain(self) -> None:
        stream = self.stream
        out = stream.data_to_send()  # negotiation replies go before anything else
        if out:
            self.write(out)
        while not self.blocked and (event := stream.next_event()) is not None:
            match event:
                case Received():
                    self.events_in += 1
                    self.hub.received(self, event)
                case LoginRequested():
                    # Stop here until the (slow, threaded) password check is
                    # done: what follows the login must be judged by its result.
                    self.blocked = True
                    if self.transport is not None:
                        self.transport.pause_reading()
                    self.hub.login_requested(self, event)
                case Rejected(reason=reason):
                    log.warning("%s: dropped a message: %s", self.label, reason)
                case Switched(format=fmt):
                    log.info("%s: switched to %s", self.label, fmt.value)
                case Closing(reason=reason):
                    self.close(reason)
                    return
        out = stream.data_to_send()
        if out:
            self.write(out)

    def unblock(self) -> None:
        """Resume after a successful login."""
        self.blocked = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self._drain()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.picture_timer is not None:
            self.picture_timer.cancel()
        reason = self.close_reason or (f"error: {exc}" if exc else "closed by peer")
        pending = self.stream.buffered
        if pending and not self.close_reason:
            log.warning("%s: dropped %d bytes of an unfinished message on disconnect",
                        self.label, pending)
        self.hub.disconnected(self, reason)

    def pause_writing(self) -> None:
        self.paused_since = time.time()

    def resume_writing(self) -> None:
        self.paused_since = None
        items = self.backlog.drain()
        if items:
            self.write_items(items)

    # --- fan-out recipient ----------------------------------------------------

    @property
    def label(self) -> str:
        name = self.callsign or self.uid or self.identity or ""
        if len(name) > 64:
            name = name[:64] + "..."
        return f"client {self.id} {_UNPRINTABLE.sub('?', name)}@{self.addr}"

    @property
    def format(self) -> Format:
        return self.stream.format

    @property
    def wants_items(self) -> bool:
        return self.paused_since is not None

    @property
    def slow_for(self) -> float:
        """Seconds this client has been too slow to take writes (0 if it is not)."""
        return 0.0 if self.paused_since is None else time.time() - self.paused_since

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            self.bytes_out += len(data)

    def write_items(self, items: Iterable[Outgoing]) -> None:
        fmt = self.format
        parts = [item.encoded(fmt) for item in items]
        self.events_out += len(parts)
        self.write(b"".join(parts))

    def send_items(self, items: Iterable[Outgoing]) -> None:
        """Write now, or hold in the backlog while the client is slow."""
        if self.wants_items:
            self.take_items(items)
        else:
            self.write_items(items)

    def take_items(self, items: Iterable[Outgoing]) -> None:
        backlog = self.backlog
        for item in items:
            if not backlog.add(item):
                self.close(f"fell behind: more than {backlog.limit} undelivered messages")
                return

    def close(self, reason: str, level: int = logging.WARNING) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.close_reason = reason
        log.log(level, "%s: closing: %s", self.label, reason)
        self.transport.abort()

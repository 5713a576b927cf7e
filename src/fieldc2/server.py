"""The command post: listeners, router, picture, fan-out, store and bus.

Data flow for one event: a connection's :class:`CotStream` decodes it once →
:meth:`CommandPost.received` → :class:`Router` decides who may see it → the
picture and the store batch are updated → it joins the tick batch → at the
tick it is encoded once per wire format and written to each recipient in one
write per tick.

``CommandPost`` is an async context manager that owns all its tasks and shuts
them down in order: stop accepting, last flush, close clients, write the last
store batch, close bus and store.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from fieldc2.audit import AuditLog
from fieldc2.bus import Bus, open_bus
from fieldc2.config import Config
from fieldc2.errors import BackendError, ConfigError, FieldC2Error, ProtocolError
from fieldc2.fanout import Outgoing, TickBatch, deliver_bucket
from fieldc2.model.cot import NO_FACTS, Event, EventFacts, Takv
from fieldc2.picture import Picture
from fieldc2.protocol.cot_xml import parse_event
from fieldc2.protocol.stream import CotStream, LoginRequested, Received
from fieldc2.router import Broadcast, Directed, Drop, GroupKey, Peer, Pong, Router
from fieldc2.store import Store, StoredEvent, open_store
from fieldc2.transport.stream import ClientConnection
from fieldc2.users import FailureLimiter, UserStore, limiter_key

if TYPE_CHECKING:
    from fieldc2.crypto.revocation import RevocationWatcher
    from fieldc2.orders.service import OrderService

log = logging.getLogger("fieldc2.server")

#: Store writes waiting for the database.  At 500 events/s this is over three
#: minutes of history: a database stall that long is logged and the oldest
#: history dropped rather than letting memory grow; the live picture is kept.
MAX_PENDING_WRITES = 100_000
#: How often stale picture entries and old history are swept, seconds.
EXPIRE_INTERVAL = 10.0
BUS_SUBJECT = "fieldc2.cot"
#: Seconds a client may take to complete the TLS handshake: a radio-linked
#: phone can be slow, but a socket that never finishes must not linger.
TLS_HANDSHAKE_TIMEOUT = 30.0
#: Distinct group sets whose sorted names are cached; real deployments have
#: tens.  Past this the cache starts afresh rather than growing.
MAX_GROUP_SETS = 4096
#: Seconds between store transactions.  One transaction a second keeps the
#: store's cost per event small; a crash loses at most this much history
#: (the live picture is rebuilt from the next reports).
STORE_INTERVAL = 1.0
PONG_STALE_MS = 20_000


class EventObserver(Protocol):
    """Told about every event the post receives and every directed event it
    writes to a client (the order tracker)."""

    def observe(self, event: Event, facts: EventFacts, sender_uid: str) -> None: ...

    def written(self, event: Event, recipient_uid: str) -> None: ...


class _BusEvent(msgspec.Struct, array_like=True):
    groups: list[str]
    xml: bytes


#: Recent events kept for live views (the demo, later the web feed).
RECENT_EVENTS = 50
#: Clients remembered for ``clientEndPoints`` after they disconnect.  Oldest
#: disconnected ones are forgotten first.
MAX_ENDPOINTS = 10_000


@dataclass(slots=True)
class Endpoint:
    """A client the server has seen, as the Marti API reports it."""

    uid: str
    callsign: str = ""
    team: str = ""
    role: str = ""
    takv: Takv | None = None
    groups: tuple[str, ...] = ()
    last_event_ms: int = 0
    status: str = "Connected"


@dataclass
class Stats:
    """Counters for the live view and the benchmark."""

    received: int = 0
    delivered: int = 0
    connections: int = 0
    dropped_writes: int = 0


class CommandPost:
    """One command post server."""

    def __init__(self, config: Config, *, store: Store | None = None, bus: Bus | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.node_id = uuid.uuid4().hex[:12]
        self.store: Store = store if store is not None else open_store(config.store,
                                                                        config.data_dir)
        self.bus: Bus = bus if bus is not None else open_bus(config.bus)
        self.router = Router(config.groups)
        self.picture = Picture()
        self.stats = Stats()
        self.clients: dict[int, ClientConnection] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.recent: deque[Outgoing] = deque(maxlen=RECENT_EVENTS)
        self._ids = itertools.count(1)
        self._batch = TickBatch()
        self._bus_out: list[_BusEvent] = []
        self._bus_listened = True
        self._pending: list[StoredEvent] = []
        self._pending_deletes: list[tuple[str, tuple[str, ...]]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._servers: list[asyncio.Server] = []
        self._http: Any = None
        self._enrollment: Any = None
        self._tls_server: asyncio.Server | None = None
        self.ca: Any = None
        self._revocations: RevocationWatcher | None = None
        self._mesh: Any = None
        self._stopping = asyncio.Event()
        self._bus_peer = Peer(0, frozenset())
        self._group_names: dict[GroupKey, tuple[str, ...]] = {}
        self.users = UserStore(config.data_dir / "users.json")
        self.login_limiter = FailureLimiter()
        self._logins: set[asyncio.Task[None]] = set()
        self.audit_log: AuditLog | None = None
        self.observers: list[EventObserver] = []
        self.orders: OrderService | None = None

    # --- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> CommandPost:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.audit_log = AuditLog(self.config.data_dir / "audit.log")
        await self.store.open()
        await self._load_picture()
        await self.bus.open()
        subscription = await self.bus.subscribe(BUS_SUBJECT)
        loop = asyncio.get_running_loop()
        cfg = self.config
        if cfg.stream.tcp_enabled:
            server = await loop.create_server(
                self._new_client, cfg.bind, cfg.stream.tcp_port, reuse_address=True, backlog=1024)
            self._servers.append(server)
            log.info("CoT over TCP on %s:%d", cfg.bind, self.tcp_port)
        if cfg.tls.enabled:
            from fieldc2.transport.tls import stream_context
            context, self.ca = stream_context(cfg, dt.datetime.fromtimestamp(self.clock(), dt.UTC))
            from fieldc2.crypto.revocation import RevocationWatcher
            self._revocations = RevocationWatcher(self.ca.directory)
            self._revocations.poll(self.clock())  # in force before the first client
            server = await loop.create_server(
                self._new_client, cfg.bind, cfg.tls.port, ssl=context, reuse_address=True,
                backlog=1024, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
            self._tls_server = server
            log.info("CoT over TLS on %s:%d (CA %s)", cfg.bind, self.tls_port,
                     self.ca.cert_path)
        from fieldc2.orders.service import OrderService
        self.orders = OrderService(self, cfg.orders)
        await self.orders.start()
        self.observers.append(self.orders)
        if cfg.http.enabled:
            from fieldc2.api.http import HttpService
            self._http = HttpService(self)
            await self._http.start()
        if cfg.enrollment.enabled and self.ca is not None:
            from fieldc2.api.http import EnrollmentService
            self._enrollment = EnrollmentService(self, cfg.enrollment.port,
                                                 cert_days=cfg.enrollment.cert_days)
            await self._enrollment.start()
        elif cfg.enrollment.enabled:
            log.info("certificate enrollment is off: it needs [tls] for the CA")
        if cfg.multicast.enabled:
            from fieldc2.transport.multicast import MeshBridge
            self._mesh = MeshBridge(self, cfg.multicast, next(self._ids))
            await self._mesh.start()
        self._tasks = [
            asyncio.create_task(self._ticker(), name="fieldc2-tick"),
            asyncio.create_task(self._housekeeping(), name="fieldc2-housekeeping"),
            asyncio.create_task(self._writer(), name="fieldc2-store-writer"),
            asyncio.create_task(self._bus_reader(subscription), name="fieldc2-bus"),
        ]
        if self._revocations is not None:
            self._tasks.append(asyncio.create_task(
                self._watch_revocations(self._revocations), name="fieldc2-revocations"))

    async def stop(self) -> None:
        self._stopping.set()
        if self._tls_server is not None:
            self._servers.append(self._tls_server)
            self._tls_server = None
        for server in self._servers:
            server.close()
        if self._http is not None:
            await self._http.stop()
        if self._enrollment is not None:
            await self._enrollment.stop()
        self.flush()
        for client in list(self.clients.values()):
            client.close("server shutting down", logging.INFO)
        if self._mesh is not None:
            self._mesh.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.orders is not None:
            await self.orders.stop()
        await self._write_pending()
        await self.bus.close()
        await self.store.close()
        if self.audit_log is not None:
            self.audit_log.close()
        for server in self._servers:
            await server.wait_closed()

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to return (from a signal handler)."""
        self._stopping.set()

    async def serve_forever(self) -> None:
        await self._stopping.wait()

    @property
    def tcp_port(self) -> int:
        if not self.config.stream.tcp_enabled:
            raise RuntimeError("TCP streaming is disabled in the configuration")
        port: int = self._servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def tls_port(self) -> int:
        if self._tls_server is None:
            raise RuntimeError("TLS streaming is disabled in the configuration")
        port: int = self._tls_server.sockets[0].getsockname()[1]
        return port

    @property
    def http_port(self) -> int:
        return int(self._http.port) if self._http is not None else 0

    @property
    def enrollment_port(self) -> int:
        """Port of certificate enrollment; 0 when it is not served."""
        return int(self._enrollment.port) if self._enrollment is not None else 0

    def group_names(self, key: GroupKey) -> tuple[str, ...]:
        """The sorted names of a group set (cached: there are few group sets)."""
        names = self._group_names.get(key)
        if names is None:
            if len(self._group_names) > MAX_GROUP_SETS:
                self._group_names.clear()
            names = self._group_names[key] = tuple(sorted(key))
        return names

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- connections -----------------------------------------------------------

    def _new_client(self) -> ClientConnection:
        stream = CotStream(offer_v1=self.config.stream.offer_tak_v1,
                           max_event_size=self.config.stream.max_event_size)
        s = self.config.stream
        return ClientConnection(self, next(self._ids), self.router.initial_groups(), stream,
                                s.max_backlog, s.write_buffer_high)

    def connected(self, client: ClientConnection) -> None:
        if self._revoked(client, "is revoked; refused"):
            return
        self.clients[client.id] = client
        self.router.join(client)
        self.stats.connections += 1
        if client.identity and not self._apply_identity(client, client.identity):
            return
        loop = asyncio.get_running_loop()
        client.picture_timer = loop.call_later(
            self.config.stream.picture_delay, self._send_picture, client)
        log.info("%s: connected", client.label)

    def _revoked(self, client: ClientConnection, verdict: str) -> bool:
        """Close a client whose TLS certificate is revoked (logged at WARNING)."""
        watcher, transport = self._revocations, client.transport
        if watcher is None or transport is None:
            return False
        serial = watcher.revoked_peer(transport.get_extra_info("peercert"))
        if serial is None:
            return False
        client.close(f"certificate {serial:X} of {client.identity!r} {verdict}")
        return True

    async def _watch_revocations(self, watcher: RevocationWatcher) -> None:
        """Drop live clients within a poll of `fieldc2 cert revoke` (another process)."""
        while True:
            await asyncio.sleep(watcher.interval)
            if watcher.poll(self.clock()):
                for client in list(self.clients.values()):
                    self._revoked(client, "was revoked")

    def disconnected(self, client: ClientConnection, reason: str) -> None:
        self.clients.pop(client.id, None)
        self.router.leave(client)
        endpoint = self.endpoints.get(client.uid)
        if endpoint is not None and not any(c.uid == client.uid for c in self.clients.values()):
            endpoint.status = "Disconnected"
        log.info("%s: disconnected (%s)", client.label, reason)

    def _apply_identity(self, client: ClientConnection, name: str) -> bool:
        """Fix a client's groups from its account (or the configuration).

        Returns False, having closed the connection, for a disabled account.
        """
        self._reload_users()
        user = self.users.get(name)
        if user is not None and user.disabled:
            client.close(f"account {name!r} is disabled")
            return False
        groups = frozenset(user.groups) if user is not None \
            else self.router.groups_for(name, name, None)
        self.router.assign(client, groups)
        log.info("%s: identified as %s in %s", client.label, name, ", ".join(sorted(groups)))
        return True

    def _reload_users(self) -> None:
        try:
            self.users.reload()
        except ConfigError as exc:
            log.error("%s; keeping the accounts loaded before", exc)

    def login_requested(self, client: ClientConnection, request: LoginRequested) -> None:
        task = asyncio.get_running_loop().create_task(self._login(client, request))
        self._logins.add(task)
        task.add_done_callback(self._logins.discard)

    async def _login(self, client: ClientConnection, request: LoginRequested) -> None:
        now = self.clock()
        source = limiter_key("addr", client.addr.rpartition(":")[0])
        account = limiter_key("user", request.username)
        limiter = self.login_limiter
        if not (limiter.allowed(source, now) and limiter.allowed(account, now)):
            client.close(f"too many failed logins for {request.username!r}; try again later")
            return
        self._reload_users()
        user = await self.users.authenticate_async(request.username, request.password)
        if user is None:
            limiter.failed(source, now)
            limiter.failed(account, now)
            client.close(f"login failed for {request.username!r}")
            await self.audit("login_failed", client.addr, request.username, via="tcp auth")
            return
        limiter.succeeded(source)
        limiter.succeeded(account)
        await self.audit("login", client.addr, user.name, via="tcp auth")
        client.identity = user.name
        if self._apply_identity(client, user.name):
            client.unblock()

    async def audit(self, kind: str, actor: str, subject: str, **detail: str) -> None:
        """Append to the hash-chained audit log, off the event loop (it fsyncs)."""
        if self.audit_log is None:
            return
        try:
            await asyncio.to_thread(self.audit_log.append, kind, actor, subject, self.clock(),
                                    **detail)
        except FieldC2Error as exc:
            log.error("audit log: %s", exc)

    def _send_picture(self, client: ClientConnection) -> None:
        if client.picture_timer is not None:
            client.picture_timer.cancel()
            client.picture_timer = None
        if client.blocked or (self.config.stream.tcp_require_auth and not client.identity):
            return  # not before we know who it is; its first event sends it
        client.picture_sent = True
        client.stream.offer(self.clock())  # a silent client may be waiting for it
        offer = client.stream.data_to_send()
        if offer:
            client.write(offer)
        items = list(self.picture.visible(client.groups, self.now_ms(), exclude_uid=client.uid))
        if items:
            client.send_items(items)

    # --- the receive path ------------------------------------------------------

    def received(self, client: ClientConnection, message: Received) -> None:
        event, facts = message.event, message.facts
        if self.config.stream.tcp_require_auth and not client.identity:
            client.close("login required: this server needs <auth> before any event")
            return
        self.stats.received += 1
        regrouped = self.router.observe(client, event, facts)
        if event.uid == client.uid:
            self._note_endpoint(client, event, facts)
        if not client.picture_sent or regrouped:
            self._send_picture(client)
        route = self.router.route(client, event, facts)
        match route:
            case Broadcast(key=key):
                item = Outgoing(event, facts, key, client.id, message.xml, message.payload)
                self._batch.add(item)
                self._record(item, local=True)
            case Directed(key=key, recipients=recipients):
                item = Outgoing(event, facts, key, client.id, message.xml, message.payload)
                self._deliver_directed(item, recipients)
                self._record(item, local=True)
            case Pong():
                client.send_items([self._pong()])
            case Drop():
                pass
        for observer in self.observers:
            observer.observe(event, facts, client.uid)

    def _note_endpoint(self, client: ClientConnection, event: Event, facts: EventFacts) -> None:
        endpoint = self.endpoints.get(client.uid)
        if endpoint is None:
            if len(self.endpoints) >= MAX_ENDPOINTS:
                self._forget_endpoint()
            endpoint = self.endpoints[client.uid] = Endpoint(client.uid)
        endpoint.callsign = client.callsign
        endpoint.groups = self.group_names(client.groups)
        endpoint.last_event_ms = self.now_ms()
        endpoint.status = "Connected"
        if facts.group is not None:
            endpoint.team, endpoint.role = facts.group, facts.role
        if event.detail.takv is not None:
            endpoint.takv = event.detail.takv

    def _forget_endpoint(self) -> None:
        for uid, endpoint in self.endpoints.items():
            if endpoint.status != "Connected":
                del self.endpoints[uid]
                return
        self.endpoints.pop(next(iter(self.endpoints)))

    def known_groups(self) -> list[str]:
        names = {self.config.groups.default}
        for groups in self.config.groups.members.values():
            names.update(groups)
        for client in self.clients.values():
            names.update(client.groups)
        return sorted(names)

    def _deliver_directed(self, item: Outgoing, recipients: tuple[int, ...]) -> None:
        for rid in recipients:
            target = self.clients.get(rid)
            if target is None:
                continue
            target.send_items([item])
            self.stats.delivered += 1
            if not target.wants_items:  # written now, not held in a backlog
                for observer in self.observers:
                    observer.written(item.event, target.uid)

    def _pong(self) -> Outgoing:
        now = self.now_ms()
        pong = Event(uid="takPong", type="t-x-c-t-r", how="h-g-i-g-o", time=now, start=now,
                     stale=now + PONG_STALE_MS)
        return Outgoing(pong, NO_FACTS, frozenset(), 0)

    def _record(self, item: Outgoing, *, local: bool) -> None:
        now = self.now_ms()
        self.recent.append(item)
        kept, removed = self.picture.apply(item, now)
        if removed:
            self._pending_deletes.extend((uid, self.group_names(key)) for uid, key in removed)
        if local:
            groups = self.group_names(item.key)
            if self._bus_listened:
                self._bus_out.append(_BusEvent(list(groups), item.xml()))
            event = item.event
            self._pending.append(StoredEvent(
                uid=event.uid, type=event.type, time=event.time, stale=event.stale,
                received=now, groups=groups, xml=item.xml(), current=kept))
            if len(self._pending) > MAX_PENDING_WRITES:
                dropped = len(self._pending) - MAX_PENDING_WRITES
                del self._pending[:dropped]
                self.stats.dropped_writes += dropped
                log.error("store is not keeping up: dropped %d history records", dropped)

    # --- ticks -----------------------------------------------------------------

    def flush(self) -> None:
        """Write this tick's events to every recipient, once per wire format."""
        if self._batch:
            audience = self.router.audience
            for key, bucket in self._batch.take().items():
                self.stats.delivered += deliver_bucket(bucket.items, bucket.senders,
                                                       audience(key))
                if self._mesh is not None:
                    self._mesh.forward(bucket.items, key)
        if self._bus_out:
            batch, self._bus_out = self._bus_out, []
            data = msgspec.msgpack.encode(batch)
            asyncio.get_running_loop().create_task(
                self.bus.publish(BUS_SUBJECT, self.node_id, data))

    async def _ticker(self) -> None:
        interval = self.config.stream.flush_interval
        while True:
            await asyncio.sleep(interval)
            self._bus_listened = self.bus.has_listeners(BUS_SUBJECT, self.node_id)
            self.flush()

    async def _housekeeping(self) -> None:
        last_expire = 0.0
        timeout = self.config.stream.slow_client_timeout
        while True:
            await asyncio.sleep(1.0)
            for client in list(self.clients.values()):
                if client.slow_for > timeout:
                    client.close(f"too slow: could not take writes for {timeout:.0f} s")
            now = self.clock()
            if now - last_expire >= EXPIRE_INTERVAL:
                last_expire = now
                await self._expire(now)

    async def _expire(self, now: float) -> None:
        now_ms = int(now * 1000)
        self.picture.expire(now_ms)
        retention_ms = int(self.config.store.history_retention * 1000)
        try:
            await self.store.expire(now_ms, now_ms - retention_ms)
        except BackendError as exc:
            log.error("expiring old records failed: %s", exc)

    async def _writer(self) -> None:
        while True:
            await asyncio.sleep(STORE_INTERVAL)
            await self._write_pending()

    async def _write_pending(self) -> None:
        events, self._pending = self._pending, []
        deletes, self._pending_deletes = self._pending_deletes, []
        if not (events or deletes):
            return
        try:
            await self.store.write(events, deletes)
        except BackendError as exc:
            log.error("could not persist %d events: %s", len(events), exc)

    async def _load_picture(self) -> None:
        restored = 0
        for stored in await self.store.latest(self.now_ms()):
            try:
                event, facts = parse_event(stored.xml)
            except ProtocolError as exc:
                log.warning("stored event %s is unreadable, skipped: %s", stored.uid, exc)
                continue
            self.picture.restore(Outgoing(event, facts, frozenset(stored.groups), 0, stored.xml))
            restored += 1
        if restored:
            log.info("restored %d items of the picture from the store", restored)

    # --- other instances -------------------------------------------------------

    async def _bus_reader(self, subscription: Any) -> None:
        decoder = msgspec.msgpack.Decoder(list[_BusEvent])
        async for message in subscription:
            if message.origin == self.node_id:
                continue
            try:
                batch = decoder.decode(message.data)
            except msgspec.DecodeError:
                log.warning("undecodable bus message from %s", message.origin)
                continue
            for remote in batch:
                self._inject(frozenset(remote.groups), remote.xml)

    def _inject(self, key: GroupKey, xml: bytes) -> None:
        """Route an event that arrived from another instance or the mesh."""
        try:
            event, facts = parse_event(xml)
        except ProtocolError as exc:
            log.warning("dropped a relayed event: %s", exc)
            return
        self.inject_event(event, facts, key, sender=0, xml=xml, local=False)

    def inject_event(self, event: Event, facts: EventFacts, key: GroupKey, *, sender: int,
                     xml: bytes | None = None, payload: bytes | None = None,
                     local: bool = True) -> None:
        """Route an event that did not come from a stream client."""
        peer = self._bus_peer
        peer.groups = key
        peer.id = sender
        route = self.router.route(peer, event, facts)
        item = Outgoing(event, facts, key, sender, xml, payload)
        if isinstance(route, Broadcast):
            self._batch.add(item)
        elif isinstance(route, Directed):
            self._deliver_directed(item, route.recipients)
        else:
            return
        self.stats.received += 1
        self._record(item, local=local)
        for observer in self.observers:
            observer.observe(event, facts, "")

    def client_list(self) -> Iterator[ClientConnection]:
        return iter(list(self.clients.values()))


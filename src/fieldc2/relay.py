"""``fieldc2 relay``: bridges a radio channel to the command post.

Radio side: compact records through a :class:`~fieldc2.transport.radio.RadioStation`
(adapter, link layer, frame security).  Server side: CoT over TCP or mutual
TLS, as any TAK client speaks it, through :class:`CotConnection`.

The command post binds one uid and callsign to each connection (the first
self-report fixes it), and routes directed messages (orders, chat to a
callsign) by them.  So the relay opens **one connection per radio-side
device** it has heard from: that device's positions, reports, chat and order
status go up on it, and what the server addresses to the device comes down
on it.  The relay's own connection, under its own uid, carries the picture
downwards: positions of other teams (latest only, at most one per track per
``position_interval``) and chat to all.

Over mutual TLS every one of these connections presents the relay's client
certificate, and the post takes a TLS client's groups from the account of
that certificate's name, not from ``__group``: give the relay's account the
groups of the teams on its channel (``fieldc2 user add relay-1 --group ...``).

Signatures are end to end: an order's ``sig`` (the command post's) passes
through to the radio unchanged, with the server's order and task ids
(``ref``, ``task_ref``); the relay never signs.  A FLASH text or report from
the radio is checked against the sender's public key in the relay's roster
*file* (:func:`fieldc2.orders.sign.flash_signing_bytes`; keys in Announce
records are ignored) and must be fresh (``MAX_FLASH_AGE``) and not a replay.
A verified one goes up with ``<__fieldc2_flash verified="true" sig= time=>``.
One that fails is still forwarded -- an emergency from a node whose key is
missing must not vanish -- but demoted to an ordinary message marked
``<__fieldc2_flash verified="false" reason=...>`` and counted in
``flash_unverified``; ``flash_verified`` counts the others.

What the relay accepted is never lost to a restart: records heard on the
radio wait in a persisted uplink queue until written to the server, and
records for the radio are in the link layer's snapshot, written before any
frame (and so any custody acknowledgement) leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import msgspec

from fieldc2.errors import FieldC2Error, LinkError, ProtocolError
from fieldc2.model.cot import Event, EventFacts
from fieldc2.model.radio import (
    MAX_SLOTS,
    RELAY_SLOT,
    Announce,
    Fix,
    Order,
    OrderStatus,
    PositionBatch,
    Record,
    Report,
    Roster,
    RosterEntry,
    Text,
)
from fieldc2.orders.sign import flash_signing_bytes, verify_signed
from fieldc2.protocol.compact_cot import from_cot, to_cot_all
from fieldc2.protocol.compact_cot_detail import FLASH_TAG, attr, elements
from fieldc2.protocol.cot_xml import parse_event, serialize_event
from fieldc2.protocol.framing import XmlFramer
from fieldc2.sim.units import self_report
from fieldc2.transport.radio_station import RadioStation, RecordSink

log = logging.getLogger("fieldc2.relay")

#: Events waiting for a server connection that is down.  Positions replace
#: their older self (latest only), so this bounds reports, chat and status:
#: hours of a busy channel.  The oldest goes first, and is counted.
MAX_PENDING_UP = 4096
#: Reconnect backoff: first wait and ceiling, seconds.
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 30.0
READ_SIZE = 65536

EventCallback = Callable[[Event, EventFacts], None]


def client_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """Mutual TLS as TAK clients do it: our certificate, the post's CA only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    context.check_hostname = False  # posts are reached by IP in the field; the CA pins them
    return context


class CotConnection:
    """One CoT XML stream to the command post, reconnecting with backoff.

    ``hello`` is sent first on every (re)connection: the self-report that
    tells the post whose connection this is.  ``send`` writes now or, while
    the post is unreachable, queues (bounded; positions latest-only by uid).
    """

    def __init__(self, name: str, host: str, port: int, *, context: ssl.SSLContext | None,
                 on_event: EventCallback, on_written: Callable[[str], None] | None = None
                 ) -> None:
        self.name = name
        self.host, self.port, self.context = host, port, context
        self.on_event = on_event
        self.on_written = on_written
        """Told the key of every queued item written (for the persisted uplink queue)."""
        self.hello: bytes | None = None
        self._pending: dict[str, bytes] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.dropped = 0
        self.events_in = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"cot {self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()

    def send(self, key: str, data: bytes) -> None:
        """Write ``data`` now, or queue it under ``key`` (a newer one replaces it)."""
        writer = self._writer
        if writer is not None and not writer.is_closing() and not self._pending:
            writer.write(data)
            if self.on_written is not None:
                self.on_written(key)
            return
        self._pending.pop(key, None)
        if len(self._pending) >= MAX_PENDING_UP:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            self.dropped += 1
            log.warning("%s: server unreachable; dropped the oldest queued event", self.name)
        self._pending[key] = data

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def _run(self) -> None:
        delay = RECONNECT_FIRST
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.context)
            except (OSError, ssl.SSLError) as exc:
                log.info("%s: cannot reach the post at %s:%d (%s); retrying in %.0f s",
                         self.name, self.host, self.port, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            delay = RECONNECT_FIRST
            self._writer = writer
            self._flush()
            self.connected.set()
            try:
                await self._read(reader)
            except (OSError, ssl.SSLError) as exc:
                log.info("%s: connection lost: %s", self.name, exc)
            finally:
                self.connected.clear()
                await self._disconnect()

    def _flush(self) -> None:
        writer = self._writer
        assert writer is not None
        if self.hello is not None:
            writer.write(self.hello)
        pending, self._pending = self._pending, {}
        for key, data in pending.items():
            writer.write(data)
            if self.on_written is not None:
                self.on_written(key)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        framer = XmlFramer()
        while data := await reader.read(READ_SIZE):
            framer.feed(data)
            while True:
                try:
                    frame = framer.next_frame()
                    if frame is None:
                        break
                    event, facts = parse_event(frame)
                except ProtocolError as exc:
                    log.debug("%s: dropped a message from the post: %s", self.name, exc)
                    continue
                self.events_in += 1
                try:
                    self.on_event(event, facts)
                except FieldC2Error as exc:  # one event we cannot relay must not end the stream
                    log.warning("%s: not relayed: %s: %s", self.name, event.uid[:80], exc)

    async def _disconnect(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


# --- the relay ---------------------------------------------------------------------

#: Event uids remembered to drop the copies of one directed event that arrive
#: on several device connections (an order to a team with three radios).
MAX_SEEN_EVENTS = 1024
#: Order ids remembered to put the server's own id back on order status:
#: the radio carries 16 bits, the server names orders with strings.
MAX_ORDER_IDS = 4096
#: How often the relay re-sends its own self-report (a keepalive the map shows).
SELF_REPORT_INTERVAL = 300.0
#: How often the slots the relay gave out are announced again: Announce
#: records travel unreliably (latest only per slot), and a node that missed
#: one shows "slot 201" instead of a callsign until the next.
ANNOUNCE_INTERVAL = 600.0
#: Server-side tracks whose positions wait for their turn on the radio.
MAX_DOWNLINK_TRACKS = 254
#: Oldest FLASH accepted as verified, seconds: FLASH lives 10 min on the link
#: (ACP 121) and may wait out a relay restart; older is stale or a replay.
MAX_FLASH_AGE = 1800
#: How far ahead of the relay's clock a FLASH time may be (node clock skew).
MAX_FLASH_AHEAD = 300
#: Signatures of FLASH messages remembered to refuse a replay within MAX_FLASH_AGE:
#: a channel carries a few FLASH an hour.
MAX_FLASH_SEEN = 1024


@dataclass(frozen=True)
class RelaySettings:
    """The relay's identity and the server it bridges to."""

    host: str = "127.0.0.1"
    port: int = 8087
    """CoT port: 8087 plain TCP, 8089 mutual TLS."""
    tls: tuple[Path, Path, Path] | None = None
    """Client certificate, key and the post's CA certificate (PEM), for TLS."""
    uid: str = "fieldc2-relay"
    callsign: str = "RELAY"
    team: str = "Cyan"
    role: str = "RTO"
    lat: float = 0.0
    lon: float = 0.0
    """Where the relay stands (its self-report on the map)."""
    position_interval: float = 60.0
    """Seconds between two positions of one server-side track sent down the radio."""
    positions_down: bool = True
    """Send positions of other teams down the radio at all."""


class RelayState(msgspec.Struct):
    """What the relay keeps across a restart, besides the station's link state."""

    roster: list[RosterEntry] = msgspec.field(default_factory=list)
    server_slots: list[int] = msgspec.field(default_factory=list)
    radio_slots: list[int] = msgspec.field(default_factory=list)
    uplink: list[tuple[str, str, bytes]] = msgspec.field(default_factory=list)
    """(item key, device uid, CoT XML) accepted from the radio, not yet written."""
    order_ids: list[tuple[int, str]] = msgspec.field(default_factory=list)
    hellos: list[tuple[str, bytes]] = msgspec.field(default_factory=list)
    """The newest self-report of each radio device: how its connection introduces itself."""
    flash_seen: list[bytes] = msgspec.field(default_factory=list)
    """Signatures of recent verified FLASH messages: a replay after a restart is one too."""


class Relay:
    """Bridges one radio channel to one command post; see the module docstring."""

    def __init__(self, settings: RelaySettings, roster: Roster,
                 station_factory: Callable[[RecordSink, Callable[[], bytes]], RadioStation]
                 ) -> None:
        self.settings = settings
        self.roster = roster
        self.station = station_factory(self._from_radio, self._state)
        self.context = self.station.context
        self.server_slots: set[int] = set()
        """Slots the relay gave to server-side authors and tracks."""
        self.radio_slots: set[int] = set()
        """Slots heard originating traffic on the radio: their echoes from the
        server must not go back down."""
        self.uplink: dict[str, tuple[str, bytes]] = {}
        self.hellos: dict[str, bytes] = {}
        self.order_ids: OrderedDict[int, str] = OrderedDict()
        self.keys = {entry.uid: entry.public_key for entry in roster if entry.public_key}
        """The roster file's public keys: what FLASH signatures are checked against."""
        self.flash_verified = 0
        self.flash_unverified = 0
        self._flash_seen: OrderedDict[bytes, None] = OrderedDict()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._down_due: dict[str, float] = {}
        self._down_pending: dict[str, tuple[Event, EventFacts]] = {}
        self._item = 0
        ctx = settings.tls and client_context(*settings.tls)
        self._context = ctx or None
        self.own = self._connection(settings.uid, self._from_server)
        self.devices: dict[str, CotConnection] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._restore(self.station.saved_app)

    # --- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Relay:
        self.own.hello = self._self_report()
        self.own.start()
        for key, (uid, xml) in list(self.uplink.items()):
            self._device(uid).send(key, xml)
        self.station.start()
        self._tasks.append(asyncio.create_task(self._downlink_loop(), name="relay downlink"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for connection in (self.own, *self.devices.values()):
            await connection.close()
        await self.station.close()

    def _connection(self, name: str, on_event: EventCallback) -> CotConnection:
        return CotConnection(name, self.settings.host, self.settings.port, context=self._context,
                             on_event=on_event, on_written=self._written)

    def _device(self, uid: str) -> CotConnection:
        connection = self.devices.get(uid)
        if connection is None:
            connection = self._connection(uid, lambda e, f: self._to_device(e, f))
            connection.hello = self.hellos.get(uid)
            self.devices[uid] = connection
            connection.start()
        return connection

    # --- persistence -----------------------------------------------------------------

    def _state(self) -> bytes:
        state = RelayState(list(self.roster), sorted(self.server_slots), sorted(self.radio_slots),
                           [(k, uid, xml) for k, (uid, xml) in self.uplink.items()],
                           list(self.order_ids.items()), list(self.hellos.items()),
                           list(self._flash_seen))
        return msgspec.msgpack.encode(state)

    def _restore(self, data: bytes) -> None:
        if not data:
            return
        try:
            state = msgspec.msgpack.decode(data, type=RelayState)
        except msgspec.DecodeError as exc:
            raise LinkError(f"relay state unreadable: {exc}") from exc
        for entry in state.roster:
            if self.roster.by_slot(entry.slot) is None and self.roster.by_uid(entry.uid) is None:
                self.roster.add(entry)
        self.server_slots = set(state.server_slots)
        self.radio_slots = set(state.radio_slots)
        self.uplink = {key: (uid, xml) for key, uid, xml in state.uplink}
        self.order_ids = OrderedDict(state.order_ids)
        self.hellos = dict(state.hellos)
        self._flash_seen = OrderedDict.fromkeys(state.flash_seen[-MAX_FLASH_SEEN:])
        self._item = len(self.uplink)

    # --- radio -> server -------------------------------------------------------------

    def _from_radio(self, record: Record, now: float) -> None:
        if isinstance(record, Announce):
            if record.slot not in self.server_slots:
                self.roster.learn(record)
                self.radio_slots.add(record.slot)
            return
        self.radio_slots.update(_authors(record))
        now_ms = int(now * 1000)
        flash = ""
        if isinstance(record, Text | Report) and record.flash:
            record, flash = self._check_flash(record, now)
        for event in to_cot_all(record, self.roster, self.context, now_ms):
            self._uplink(_with_flash(event, flash), record)

    def _check_flash(self, record: Text | Report, now: float) -> tuple[Record, str]:
        """The record to forward and what its ``__fieldc2_flash`` says (see the module
        docstring); an unverifiable FLASH is demoted and counted."""
        reason = self._flash_fault(record, now)
        if not reason:
            self.flash_verified += 1
            self._flash_seen[record.signature] = None
            while len(self._flash_seen) > MAX_FLASH_SEEN:
                self._flash_seen.popitem(last=False)
            return record, ' verified="true"'
        self.flash_unverified += 1
        log.warning("FLASH from slot %d not verified (%s): forwarded as an ordinary message",
                    record.sender, reason)
        demoted: Record = msgspec.structs.replace(record, flash=False, signature=b"")
        if isinstance(demoted, Text):
            demoted = msgspec.structs.replace(demoted, time=None)
        return demoted, f'<{FLASH_TAG} verified="false" reason="{reason}"/>'

    def _flash_fault(self, record: Text | Report, now: float) -> str:
        """Why a FLASH cannot be vouched for, or "" when it can."""
        entry = self.roster.by_slot(record.sender)
        key = self.keys.get(entry.uid) if entry is not None else None
        if key is None or entry is None:
            return "no key"
        if record.signature in self._flash_seen:
            return "replay"
        if record.time is None or not (
                now - MAX_FLASH_AGE <= record.time <= now + MAX_FLASH_AHEAD):
            return "stale"
        if not record.signature or not verify_signed(
                key, entry.uid, flash_signing_bytes(record), record.signature):
            return "signature"
        return ""

    def _uplink(self, event: Event, record: Record) -> None:
        if isinstance(record, OrderStatus):
            original = self.order_ids.get(record.order_id)
            if original is not None:
                xml = event.detail.xml.replace(f'id="{record.order_id}"',
                                               f'id="{attr(original)}"', 1)
                event = msgspec.structs.replace(
                    event, detail=msgspec.structs.replace(event.detail, xml=xml))
        device = self._device_uid(record, event)
        data = serialize_event(event)
        if isinstance(record, PositionBatch):
            key = f"pos:{event.uid}"
            self.hellos[device] = data  # the post binds a connection to its self-report
            self._device(device).hello = data
        else:
            self._item += 1
            key = f"item:{self._item}"
        self.uplink[key] = (device, data)
        self._device(device).send(key, data)

    def _device_uid(self, record: Record, event: Event) -> str:
        slot = {Text: "sender", Report: "sender", OrderStatus: "sender",
                Order: "origin"}.get(type(record))
        entry = self.roster.by_slot(getattr(record, slot)) if slot else None
        return entry.uid if entry is not None else event.uid

    def _written(self, key: str) -> None:
        self.uplink.pop(key, None)

    # --- server -> radio -------------------------------------------------------------

    def _radio_side(self, uid: str) -> bool:
        entry = self.roster.by_uid(uid)
        return entry is not None and entry.slot in self.radio_slots

    def _from_server(self, event: Event, facts: EventFacts) -> None:
        """The relay's own connection: the shared picture."""
        if event.type.startswith("t-x-") or self._radio_side(event.uid):
            return
        if facts.directed:
            return  # addressed to someone; the addressee's connection has its copy
        if event.type.startswith("a-") and facts.callsign is not None:
            if self.settings.positions_down and len(self._down_pending) < MAX_DOWNLINK_TRACKS:
                self._down_pending[event.uid] = (event, facts)
            return
        if event.type == "b-t-f":
            self._forward(event, facts)

    def _to_device(self, event: Event, facts: EventFacts) -> None:
        """A device's connection: what the server addressed to that device."""
        if facts.directed and event.type.startswith("b-t-f"):
            self._forward(event, facts)

    def _forward(self, event: Event, facts: EventFacts) -> None:
        if event.uid in self._seen:
            return
        self._seen[event.uid] = None
        while len(self._seen) > MAX_SEEN_EVENTS:
            self._seen.popitem(last=False)
        found = elements(event.detail.xml)
        self._allocate_sender(found)
        try:
            record = from_cot(event, facts, self.roster, self.context)
        except ProtocolError as exc:
            log.info("not relaying %s: %s", event.uid, exc)
            return
        if record is None or not self.radio_slots.isdisjoint(_authors(record)):
            return  # not for the radio, or heard there first (an echo)
        if isinstance(record, Order):
            own = found.get("__fieldc2_order")
            self._remember_order(record.order_id, own.get("id", "") if own is not None else "")
            self.station.submit(record)
        elif isinstance(record, Text):
            self.station.submit(record)

    def _allocate_sender(self, found: dict[str, ElementTree.Element]) -> None:
        """Give the server-side author of chat or an order a slot (and announce it)."""
        chat = found.get("__chat")
        order = found.get("__fieldc2_order")
        group = chat.find("chatgrp") if chat is not None else None
        uid = order.get("origin", "") if order is not None else (
            group.get("uid0", "") if group is not None else "")
        callsign = chat.get("senderCallsign", "") if chat is not None else ""
        if uid and self.roster.by_uid(uid) is None:
            self._allocate(uid, callsign=callsign)

    def _allocate(self, uid: str, **fields: Any) -> RosterEntry:
        entry = self.roster.by_uid(uid)
        if entry is not None:
            return entry
        free = next((s for s in range(MAX_SLOTS - 1, RELAY_SLOT, -1)
                     if self.roster.by_slot(s) is None), None)
        if free is None:
            raise LinkError("the channel roster is full")
        entry = RosterEntry(slot=free, uid=uid, **{k: v for k, v in fields.items() if v})
        self.roster.add(entry)
        self.server_slots.add(free)
        self.station.submit(entry.announce())
        return entry

    def _remember_order(self, order_id: int, original: str) -> None:
        if original:
            self.order_ids[order_id] = original
            self.order_ids.move_to_end(order_id)
            while len(self.order_ids) > MAX_ORDER_IDS:
                self.order_ids.popitem(last=False)

    async def _downlink_loop(self) -> None:
        """Positions of server-side tracks, latest only, one per track per interval;
        and the relay's own self-report now and then."""
        next_hello = time.time() + SELF_REPORT_INTERVAL
        next_announce = time.time() + ANNOUNCE_INTERVAL
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            if now >= next_hello:
                self.own.hello = self._self_report()
                self.own.send("hello", self.own.hello)
                next_hello = now + SELF_REPORT_INTERVAL
            if now >= next_announce:
                self.announce_all()
                next_announce = now + ANNOUNCE_INTERVAL
            self.flush_positions(now)

    def announce_all(self) -> None:
        """Announce every slot given to a server-side author or track again."""
        for slot in sorted(self.server_slots):
            entry = self.roster.by_slot(slot)
            if entry is not None:
                self.station.submit(entry.announce())

    def flush_positions(self, now: float) -> None:
        for uid, (event, facts) in list(self._down_pending.items()):
            if self._down_due.get(uid, 0.0) > now:
                continue
            del self._down_pending[uid]
            self._down_due[uid] = now + self.settings.position_interval
            try:
                self._allocate(uid, callsign=facts.callsign or "", team=facts.group or "",
                               role=facts.role, cot_type=event.type)
                record = from_cot(event, facts, self.roster, self.context)
                if isinstance(record, Fix):
                    self.station.submit(PositionBatch((record,)))
            except FieldC2Error as exc:
                log.info("not relaying the position of %s: %s", uid[:80], exc)

    def _self_report(self) -> bytes:
        s = self.settings
        return self_report(s.uid, s.callsign, s.lat, s.lon, group=s.team,
                           stale_s=2 * SELF_REPORT_INTERVAL)


def _with_flash(event: Event, flash: str) -> Event:
    """``flash`` is ' verified="true"' (into the record's own element) or a whole
    ``<__fieldc2_flash verified="false">`` element to append."""
    if not flash:
        return event
    xml = event.detail.xml
    if flash.startswith("<"):
        xml += flash
    else:
        xml = xml.replace(f"<{FLASH_TAG}", f"<{FLASH_TAG}{flash}", 1)
    return msgspec.structs.replace(event, detail=msgspec.structs.replace(event.detail, xml=xml))


def _authors(record: Record | Fix) -> set[int]:
    """The slots a record speaks for."""
    match record:
        case PositionBatch(fixes=fixes):
            return {fix.track for fix in fixes}
        case Fix(track=track):
            return {track}
        case Text(sender=slot) | Report(sender=slot) | OrderStatus(sender=slot):
            return {slot}
        case Order(origin=slot):
            return {slot}
        case _:
            return set()

"""``fieldc2 node``: a field device on a radio channel.

It reports its own position from a GNSS receiver (at an interval, and sooner
when it moves), shows the orders it receives (verifying the originator's
Ed25519 signature against the public key in the roster), acknowledges them,
and sends chat and field reports.  Typed commands on standard input::

    ack ORDER-ID                          acknowledge an order
    status ORDER-ID in_progress|done|failed
    say TEXT                              chat to everybody on the channel
    say @CALLSIGN TEXT                    chat to one participant
    flash TEXT                            a FLASH text to everybody, signed with
                                          this node's own key
    report spot|clue|casualty|hazard TEXT a report at the current position
    help

``ORDER-ID`` is the command post's id (``ORD-1A2B3C4D``) or the 16-bit radio id.

Trust: the only keys a node believes are those in its roster *file* (the
command post's, for orders); Announce records heard on the air name slots
but never bring keys, and cannot rebind a slot whose file entry has a key.
An order of the command post (it has a ``ref``) is checked with
:func:`fieldc2.orders.sign.verify` over the fields rebuilt from the record,
this node's uid as recipient and the origin slot's uid as originator; an
order made on the radio (no ``ref``) over ``compact.order_signing_bytes``
with the channel id.

:class:`NodeCore` is the whole behaviour, sans-I/O (fixes, command lines and
received records in; records to send and lines to show out; how each record
travels, precedence and reliability, is ``fieldc2.link.radio.HANDLING``);
:func:`run_node` is the asyncio shell around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from fieldc2 import gnss
from fieldc2.crypto.signing import KeyRing, Signer, public_key_bytes
from fieldc2.errors import ConfigError, FieldC2Error, FrameRejected, LinkError
from fieldc2.model.radio import (
    BROADCAST,
    Announce,
    Fix,
    Order,
    OrderState,
    OrderStatus,
    PositionBatch,
    Record,
    Report,
    ReportKind,
    Roster,
    Text,
)
from fieldc2.orders import sign
from fieldc2.protocol.compact import order_signing_bytes
from fieldc2.transport.radio_station import RadioStation, RecordSink

#: The node's own Ed25519 key (FLASH signatures), in its state directory.
NODE_KEY_FILE = "node.key"
#: Orders remembered for ``ack``/``status`` (and to show a repeat once): a
#: team gets a handful per hour; the oldest is forgotten first.
MAX_ORDERS = 256
#: Longest operator line read: a chat line is at most 200 bytes on the radio.
MAX_COMMAND_LINE = 4096
_EARTH_RADIUS = 6_371_000.0
_STATES = {"received": OrderState.RECEIVED, "acknowledged": OrderState.ACKNOWLEDGED,
           "in_progress": OrderState.IN_PROGRESS, "done": OrderState.DONE,
           "failed": OrderState.FAILED}
_REPORT_KINDS = {kind.name.lower(): kind for kind in ReportKind}
HELP = ("commands: ack ORDER-ID | status ORDER-ID in_progress|done|failed | say [@CALLSIGN] "
        "TEXT | flash TEXT | report spot|clue|casualty|hazard|sitrep|need TEXT | help; "
        "ack! / status! answer an order whose signature is NOT VERIFIED")


@dataclass(frozen=True)
class NodeSettings:
    """How a node behaves on its channel."""

    slot: int
    """This device's slot on the channel (1..254; the relay is 0)."""
    channel_id: int
    """The channel's 16-bit id (``ChannelKey.channel_id``): orders are signed for it."""
    report_interval: float = 60.0
    """Seconds between position reports when standing still."""
    move_threshold: float = 25.0
    """Metres of movement that trigger a report before the interval is up."""
    min_interval: float = 5.0
    """Seconds between two reports however fast the device moves (airtime)."""


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance, metres (haversine; plenty for 25 m thresholds)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS * math.asin(min(1.0, math.sqrt(a)))


def keyring_from_roster(roster: Roster, channel_id: int) -> KeyRing:
    """The originators a node believes: roster entries that carry a public key."""
    ring = KeyRing(channel_id)
    for entry in roster:
        if entry.public_key:
            ring.add(entry.uid, entry.public_key, sender=entry.slot)
    return ring


def verify_order(order: Order, ring: KeyRing, channel_id: int, roster: Roster,
                 recipient: str) -> str:
    """Who signed ``order`` (uid), or raise FrameRejected("signature").

    ``ring`` holds the roster file's keys; ``recipient`` is this node's uid."""
    if not order.signature:
        raise FrameRejected("signature", "the order is not signed")
    if not order.ref:  # made on the radio: compact bytes, bound to the channel
        message = order_signing_bytes(order, channel_id.to_bytes(2, "big"))
        return ring.verify(order.origin, message, order.signature).uid
    entry = roster.by_slot(order.origin)
    fields = sign.fields_of_compact(order, recipient)
    if entry is None or fields is None:
        raise FrameRejected("signature", "order names no known originator, due time or point")
    key = public_key_bytes(ring.lookup(entry.uid).public_key)
    if not sign.verify(key, entry.uid, fields, recipient, order.signature):
        raise FrameRejected("signature", f"bad signature from {entry.uid!r}")
    return entry.uid


def node_signer(path: Path, uid: str) -> tuple[Signer, bytes]:
    """This node's FLASH signer from its key file (made on first run) and the raw
    public key to put in the roster."""
    signer = Signer(sign.load_or_create_key(path), channel_id=sign.STREAM_CHANNEL_ID,
                    originator=uid)
    return signer, public_key_bytes(signer.public_key)


class NodeCore:
    """The field device's behaviour, sans-I/O."""

    def __init__(self, settings: NodeSettings, roster: Roster,
                 signer: Signer | None = None) -> None:
        self.settings = settings
        self.roster = roster
        self.ring = keyring_from_roster(roster, settings.channel_id)
        self._anchored = {entry.slot for entry in roster if entry.public_key}
        me = roster.by_slot(settings.slot)
        self.uid = me.uid if me is not None else ""
        """This device's uid (the recipient an order of the command post is signed for)."""
        self.signer = signer
        """This node's own key (channel id 0, originator = its uid), for FLASH messages."""
        self.orders: OrderedDict[int, Order] = OrderedDict()
        self.verified: set[int] = set()
        """Radio ids of the orders in ``orders`` whose signature checked out."""
        self.last_fix: gnss.Fix | None = None
        self._sent_at: float | None = None
        self._sent_where: tuple[float, float] | None = None
        self._fix_no = 0
        self._report_id = 0

    # --- position --------------------------------------------------------------

    def on_fix(self, fix: gnss.Fix, now: float) -> Record | None:
        """A GNSS fix arrived; a position report when one is due."""
        self.last_fix = fix
        if self._sent_at is not None:
            elapsed = now - self._sent_at
            assert self._sent_where is not None
            moved = distance_m(*self._sent_where, fix.lat, fix.lon)
            due = elapsed >= self.settings.report_interval or (
                moved >= self.settings.move_threshold and elapsed >= self.settings.min_interval)
            if not due:
                return None
        self._sent_at, self._sent_where = now, (fix.lat, fix.lon)
        return PositionBatch((self._position(fix, now),))

    def _position(self, fix: gnss.Fix, now: float) -> Fix:
        number, self._fix_no = self._fix_no, (self._fix_no + 1) % 16
        moving = fix.speed is not None and fix.course is not None
        return Fix(track=self.settings.slot, fix_no=number,
                   time=int(fix.time if fix.time is not None else now),
                   lat=fix.lat, lon=fix.lon, hae=fix.alt,
                   course=fix.course if moving else None,
                   speed=fix.speed if moving else None)

    # --- commands ----------------------------------------------------------------

    def on_command(self, line: str, now: float) -> tuple[list[Record], str]:
        """One typed line: what to send and what to tell the operator."""
        words = line.strip().split(maxsplit=1)
        if not words:
            return [], ""
        verb, rest = words[0].lower(), words[1] if len(words) > 1 else ""
        force = verb.endswith("!")  # the operator confirmed an unverified order by voice
        verb = verb.rstrip("!")
        try:
            if verb == "ack":
                return self._status(rest, "acknowledged", now, force=force)
            if verb == "status":
                parts = rest.split()
                if len(parts) != 2:
                    raise ConfigError("usage: status ORDER-ID in_progress|done|failed")
                return self._status(parts[0], parts[1].lower(), now, force=force)
            if verb == "say":
                return self._say(rest)
            if verb == "flash":
                return self._flash(rest, now)
            if verb == "report":
                return self._report(rest, now)
            if verb == "help":
                return [], HELP
            raise ConfigError(f"unknown command {verb!r}; {HELP}")
        except FieldC2Error as exc:
            return [], f"error: {exc}"

    def _status(self, order_id: str, state_name: str, now: float, *,
                force: bool = False) -> tuple[list[Record], str]:
        state = _STATES.get(state_name)
        if state is None:
            raise ConfigError(f"state must be one of {', '.join(_STATES)}")
        order = self._find(order_id)
        if order.order_id not in self.verified and not force:
            # An unverified order may be forged; answering it would tell the
            # command post that its real order of that id was acknowledged.
            raise ConfigError(f"order {_label(order)} is NOT VERIFIED and may be forged: "
                              f"confirm it by voice first, then use `ack! {_label(order)}` "
                              "(or `status! ...`)")
        status = OrderStatus(sender=self.settings.slot, order_id=order.order_id, state=state,
                             time=int(now))
        return ([status], f"order {_label(order)}: {state.name.lower()} sent")

    def _find(self, order_id: str) -> Order:
        """An order received, by the server's id (any case) or the 16-bit radio id;
        of two with one server id (a forged copy), the verified one."""
        wanted = order_id.strip().upper()
        found = [order for order in reversed(self.orders.values())
                 if (order.ref and order.ref.upper() == wanted) or wanted == str(order.order_id)]
        if not found:
            raise ConfigError(f"no order {order_id!r} received")
        return next((o for o in found if o.order_id in self.verified), found[0])

    def _flash(self, rest: str, now: float) -> tuple[list[Record], str]:
        """A FLASH text to everybody, signed with this node's key."""
        if self.signer is None:
            raise ConfigError("this node has no signing key: FLASH needs one")
        if not rest.strip():
            raise ConfigError("usage: flash TEXT")
        text = Text(sender=self.settings.slot, text=rest.strip(), flash=True, time=int(now))
        signed = Text(sender=text.sender, text=text.text, flash=True, time=text.time,
                      signature=sign.sign_flash(self.signer, text))
        return [signed], "FLASH sent"

    def _say(self, rest: str) -> tuple[list[Record], str]:
        to = BROADCAST
        if rest.startswith("@"):
            name, _, rest = rest[1:].partition(" ")
            entry = self.roster.by_callsign(name)
            if entry is None:
                raise ConfigError(f"nobody called {name!r} on this channel")
            to = entry.slot
        if not rest.strip():
            raise ConfigError("usage: say [@CALLSIGN] TEXT")
        text = Text(sender=self.settings.slot, to=to, text=rest.strip())
        return [text], "sent"

    def _report(self, rest: str, now: float) -> tuple[list[Record], str]:
        kind_name, _, text = rest.partition(" ")
        kind = _REPORT_KINDS.get(kind_name.lower())
        if kind is None:
            raise ConfigError(f"report kind must be one of {', '.join(_REPORT_KINDS)}")
        fix = self.last_fix
        if fix is None:
            raise ConfigError("no GNSS fix yet: a report needs a position")
        self._report_id = (self._report_id + 1) % (1 << 16)
        report = Report(sender=self.settings.slot, report_id=self._report_id, kind=kind,
                        time=int(now), lat=fix.lat, lon=fix.lon, text=text.strip())
        return ([report], f"report {self._report_id} ({kind.name.lower()}) sent")

    # --- what the channel brings -------------------------------------------------

    def on_record(self, record: Record, now: float) -> tuple[list[Record], list[str]]:
        """A record delivered by the link: replies to send and lines to show."""
        match record:
            case Order():
                return self._order(record, now)
            case Announce():
                if record.slot not in self._anchored:  # the file's signers stay put
                    self.roster.learn(record)  # names only: keys come from the roster file
                return [], []
            case Text():
                if record.to not in (BROADCAST, self.settings.slot):
                    return [], []
                who = self._name(record.sender)
                scope = "to you" if record.to == self.settings.slot else "to all"
                kind = "FLASH" if record.flash else "MSG"  # shown, not verified: no keys here
                return [], [f"{kind} {who} ({scope}): {record.text}"]
            case Report():
                return [], [f"REPORT {record.kind.name.lower()} from {self._name(record.sender)}"
                            f" at {record.lat:.5f},{record.lon:.5f}: {record.text}"]
            case _:
                return [], []

    def _order(self, order: Order, now: float) -> tuple[list[Record], list[str]]:
        if order.to not in (BROADCAST, self.settings.slot):
            return [], []
        repeat = order.order_id in self.orders
        try:
            signer = verify_order(order, self.ring, self.settings.channel_id, self.roster,
                                  self.uid)
            trust = f"signed by {signer}, signature verified"
            if not repeat:
                self.verified.add(order.order_id)
        except FrameRejected as exc:
            trust = f"NOT VERIFIED: {exc}"
        if repeat:  # shown once; a copy never replaces what was shown (it may be forged)
            return [], []
        self.orders[order.order_id] = order
        while len(self.orders) > MAX_ORDERS:
            self.verified.discard(self.orders.popitem(last=False)[0])
        lines = [f"ORDER {_label(order)} [{order.precedence.name}] {order.task.name.lower()}"
                 f" from {self._name(order.origin)} ({trust}): {order.text}"]
        if order.due is not None:
            lines.append(f"  due {_clock(order.due)}")
        if order.lat is not None and order.lon is not None:
            lines.append(f"  at {order.lat:.5f},{order.lon:.5f}")
        lines.append(f"  reply: ack {_label(order)} | status {_label(order)} "
                     "in_progress|done|failed")
        received = OrderStatus(sender=self.settings.slot, order_id=order.order_id,
                               state=OrderState.RECEIVED, time=int(now))
        return [received], lines

    def _name(self, slot: int) -> str:
        entry = self.roster.by_slot(slot)
        return (entry.callsign or entry.uid) if entry is not None else f"slot {slot}"


def _label(order: Order) -> str:
    """How an order is named to the operator: the server's id, else the radio id."""
    return order.ref or str(order.order_id)


def _clock(unix: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%d %H:%MZ")


# --- the asyncio shell -----------------------------------------------------------------

class Node:
    """A field device: GNSS, operator lines and the radio station around a NodeCore."""

    def __init__(self, core: NodeCore, station_factory: Callable[[RecordSink], RadioStation],
                 *, show: Callable[[str], None]) -> None:
        self.core = core
        self.show = show
        self.station = station_factory(self._from_radio)
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Node:
        self.station.start()
        me = self.core.roster.by_slot(self.core.settings.slot)
        if me is not None:  # let the relay learn who this slot is, if not configured there
            self.station.submit(me.announce())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.station.close()

    def follow_gnss(self, fixes: AsyncIterator[gnss.Fix]) -> None:
        self._tasks.append(asyncio.create_task(self._gnss(fixes), name="gnss"))

    def follow_commands(self, lines: AsyncIterator[str]) -> None:
        self._tasks.append(asyncio.create_task(self._commands(lines), name="commands"))

    async def _gnss(self, fixes: AsyncIterator[gnss.Fix]) -> None:
        async for fix in fixes:
            out = self.core.on_fix(fix, time.time())
            if out is not None:
                self._send([out])

    async def _commands(self, lines: AsyncIterator[str]) -> None:
        async for line in lines:
            out, message = self.core.on_command(line, time.time())
            self._send(out)
            if message:
                self.show(message)

    def command(self, line: str) -> str:
        """Run one operator line now (what ``follow_commands`` does per line)."""
        out, message = self.core.on_command(line, time.time())
        self._send(out)
        return message

    def _from_radio(self, record: Record, now: float) -> None:
        out, lines = self.core.on_record(record, now)
        self._send(out)
        for line in lines:
            self.show(line)

    def _send(self, records: list[Record]) -> None:
        for record in records:
            try:
                self.station.submit(record)
            except LinkError as exc:  # a full queue or an oversized record: say so, go on
                self.show(f"error: not sent: {exc}")


async def stdin_lines() -> AsyncIterator[str]:
    """Lines typed on standard input, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_COMMAND_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield line.decode("utf-8", "replace")

"""The applications of an exercise: what field nodes and the relay do with their radio.

A :class:`NodeApp` reports its position, sends texts, reports and FLASH
texts to the relay, verifies the Ed25519 signature of every order it gets
and acknowledges it with an ``OrderStatus``.  The :class:`RelayApp` keeps
the picture (latest fix per track), issues signed orders, and pushes a few
server-side tracks down onto the radio, so orders compete with position load.

Records go through :meth:`RadioEndpoint.submit_record`, at the precedence
the script draws (a FLASH text, an IMMEDIATE report); how each kind travels
otherwise is :data:`fieldc2.link.radio.HANDLING`.  Every message carries a
key the receiver reads back (:func:`record_key`): the ledger counts
deliveries and duplicates by it.
"""

from __future__ import annotations

import msgspec

from fieldc2.crypto.signing import KeyRing, Signer
from fieldc2.errors import FrameRejected, LinkError
from fieldc2.link.body import ACK_TIME_MODULUS
from fieldc2.link.radio import handling_of
from fieldc2.link.types import Expired, LinkEvent, PeerDigest, PeerHeard
from fieldc2.model.precedence import Precedence
from fieldc2.model.radio import (
    Fix,
    Order,
    OrderState,
    OrderStatus,
    PositionBatch,
    Record,
    Report,
    ReportKind,
    TaskKind,
    Text,
)
from fieldc2.protocol import compact
from fieldc2.sim.clock import Timer
from fieldc2.sim.exercise_metrics import FixArrival, Ledger, MessageRecord
from fieldc2.sim.exercise_station import Station
from fieldc2.sim.exercise_world import Area, Walker

RELAY = 0
#: The command post's originator uid: the key that signs every order.
COMMAND_POST = "CP"
#: Slots of the server-side tracks the relay pushes down: field nodes get
#: 1..127, server tracks 128..254.
SERVER_TRACK_BASE = 128
#: A fix more than this far in the relay's future is counted and refused: it
#: could only come from a delta resolved against the wrong base (must stay 0;
#: the radio endpoint refuses such fixes itself beyond MAX_FIX_AHEAD).
MAX_FUTURE_S = 30.0
#: When a node hears the relay again after a silence (the link's PeerHeard:
#: a partition healed), it sends its position within PROMPT_GAP_S (spread by
#: slot, so twenty nodes do not answer at once) and again every PROMPT_GAP_S,
#: PROMPT_REPEATS times in all, until the relay's digest (PeerDigest) shows
#: it holds one of them.  At 30 % loss one copy misses the relay 30 % of the
#: time, four 0.8 %; with the two regular reports of the first minute, 0.07 %
#: per node, 1.5 % for one of 20.  The digest stops most nodes after one or
#: two copies, which keeps the first minute's channel for the backlog.
PROMPT_GAP_S = 10.0
PROMPT_REPEATS = 4

MessageKey = tuple[str, int, int]


def record_key(record: Record) -> MessageKey | None:
    """How an application names a received record; None for positions and announces."""
    match record:
        case Text(sender=sender, text=text):
            word = text.split(" ", 1)[0]
            return ("text", sender, int(word[1:])) if word[1:].isdigit() else None
        case Report(sender=sender, report_id=rid):
            return ("report", sender, rid)
        case Order(origin=origin, order_id=oid):
            return ("order", origin, oid)
        case OrderStatus(sender=sender, order_id=oid):
            return ("ack", sender, oid)
    return None


class App:
    """What both kinds of application share: a station, the ledger, the area."""

    def __init__(self, station: Station, ledger: Ledger, area: Area) -> None:
        self.station = station
        self.slot = station.slot
        self.ledger = ledger
        self.area = area
        station.sink = self.on_receive

    @property
    def epoch(self) -> float:
        return self.station.epoch

    def send(self, key: MessageKey, record: Record, precedence: Precedence, dest: int) -> None:
        """Submit a reliable record at ``precedence``, and note it in the ledger.

        ``dest`` is whose delivery counts; reports go to everybody on the air
        (team awareness), so others' deliveries of them are not misdeliveries."""
        radio = self.station.radio
        payload = compact.encode(record, radio.context)  # pure for non-position records
        self.ledger.submit(MessageRecord(key, precedence, self.slot, dest,
                                         self.station.clock.now(),
                                         broadcast=isinstance(record, Report)), payload)
        try:
            radio.submit_record(record, self.station.unix, precedence=precedence)
        except LinkError:
            self.ledger.expired["refused"] += 1
        self.station.kick()

    def send_fix(self, track: int, walker: Walker, now: float) -> Fix:
        """Submit the track's current position (latest-only, ROUTINE)."""
        leg = walker.leg_at(now)
        lat, lon = self.area.to_latlon(*walker.xy(now))
        positions = self.station.radio.context.positions
        fix = Fix(track=track, fix_no=positions.allocate_fix_no(track),
                  time=int(self.epoch + now), lat=lat, lon=lon, course=leg.heading,
                  speed=leg.speed)
        self.station.radio.submit_record(PositionBatch((fix,)), self.station.unix)
        self.station.kick()
        return fix

    def on_receive(self, records: list[Record], events: list[LinkEvent], now: float) -> None:
        for event in events:
            if isinstance(event, Expired):
                self.ledger.expired[Precedence(event.precedence).name] += 1
        for record in records:
            self.on_record(record, now)

    def on_record(self, record: Record, now: float) -> None:
        key = record_key(record)
        if key is not None:
            self.ledger.deliver(key, self.slot, now)


class NodeApp(App):
    """A field node; see the module docstring."""

    def __init__(self, station: Station, ledger: Ledger, area: Area, walker: Walker,
                 keyring: KeyRing, *, report_interval: float) -> None:
        super().__init__(station, ledger, area)
        self.walker = walker
        self.keyring = keyring
        self._prompts_left = 0
        self._prompt_timer: Timer | None = None
        self._since_return: set[int] = set()
        """Time residues of the fixes sent since the relay came back."""

    def report_position(self) -> None:
        fix = self.send_fix(self.slot, self.walker, self.station.clock.now())
        if self._prompts_left:
            self._since_return.add(fix.time % ACK_TIME_MODULUS)

    def on_receive(self, records: list[Record], events: list[LinkEvent], now: float) -> None:
        for event in events:
            match event:
                case PeerHeard(peer=peer) if peer == RELAY:
                    self._relay_back()
                case PeerDigest(peer=peer, tracks=tracks) if peer == RELAY:
                    held = tracks.get(self.slot)
                    if held is not None and held[1] in self._since_return:
                        self._stop_prompts()  # the relay holds a fix sent since it came back
        super().on_receive(records, events, now)

    def text(self, n: int, precedence: Precedence) -> None:
        record = Text(sender=self.slot, to=RELAY, text=f"T{n} {precedence.name.lower()} "
                      "message from the field")
        self.send(("text", self.slot, n), record, precedence, RELAY)

    def report(self, n: int, precedence: Precedence, kind: ReportKind) -> None:
        now = self.station.clock.now()
        lat, lon = self.area.to_latlon(*self.walker.xy(now))
        record = Report(sender=self.slot, report_id=n, kind=kind, time=int(self.epoch + now),
                        lat=lat, lon=lon, text="seen near the track", count=1)
        self.send(("report", self.slot, n), record, precedence, RELAY)

    def on_record(self, record: Record, now: float) -> None:
        if not isinstance(record, Order):
            super().on_record(record, now)
            return
        if record.to != self.slot or not self._verified(record):
            return  # a forged order never reaches the team
        super().on_record(record, now)
        status = OrderStatus(sender=self.slot, order_id=record.order_id,
                             state=OrderState.ACKNOWLEDGED, time=int(self.epoch + now))
        self.send(("ack", self.slot, record.order_id), status,
                  handling_of(status).precedence, RELAY)

    def _verified(self, order: Order) -> bool:
        message = compact.order_signing_bytes(order, self.keyring.channel_id.to_bytes(2, "big"))
        try:
            self.keyring.verify(COMMAND_POST, message, order.signature)
        except FrameRejected:
            self.ledger.bad_signatures += 1
            return False
        return True

    def _relay_back(self) -> None:
        """The relay was silent and is back: it has lost sight of us; report soon."""
        if self._prompt_timer is not None:
            return
        self._prompts_left = PROMPT_REPEATS
        self._since_return = set()
        spread = (self.slot * 0.618) % 1.0 * PROMPT_GAP_S
        self._prompt_timer = self.station.clock.call_later(spread, self._prompt)

    def _stop_prompts(self) -> None:
        self._prompts_left = 0
        if self._prompt_timer is not None:
            self._prompt_timer.cancel()
            self._prompt_timer = None

    def _prompt(self) -> None:
        self._prompt_timer = None
        if self._prompts_left <= 0:
            return
        self.ledger.prompted += 1
        self.report_position()
        self._prompts_left -= 1
        self._prompt_timer = self.station.clock.call_later(PROMPT_GAP_S, self._prompt)


class RelayApp(App):
    """The relay (slot 0) at the command post; see the module docstring."""

    def __init__(self, station: Station, ledger: Ledger, area: Area, signer: Signer,
                 server_tracks: dict[int, Walker], *, report_interval: float) -> None:
        super().__init__(station, ledger, area)
        self.signer = signer
        self.server_tracks = server_tracks
        self.picture: dict[int, Fix] = {}
        """Latest fix per track: what the command post shows."""

    def on_record(self, record: Record, now: float) -> None:
        if isinstance(record, PositionBatch):
            for fix in record.fixes:
                self._take_fix(fix, now)
            return
        super().on_record(record, now)

    def _take_fix(self, fix: Fix, now: float) -> None:
        if fix.time > self.epoch + now + MAX_FUTURE_S:
            self.ledger.future_fixes += 1
            return
        held = self.picture.get(fix.track)
        if held is not None and held.time >= fix.time:
            return  # an older fix overtaken by a newer one: keep the newer
        self.picture[fix.track] = fix
        self.ledger.fix(FixArrival(now, fix.track, fix.time - self.epoch, fix.lat, fix.lon))

    def order(self, n: int, to: int) -> None:
        """Issue a signed IMMEDIATE order to slot ``to``."""
        now = self.station.clock.now()
        lat, lon = self.area.to_latlon(0.0, 0.0)
        unsigned = Order(origin=RELAY, order_id=n, to=to, precedence=Precedence.IMMEDIATE,
                         task=TaskKind.SEARCH, text=f"search sector {n % 97}",
                         due=int(self.epoch + now + 3600), lat=lat, lon=lon)
        message = compact.order_signing_bytes(unsigned,
                                              self.signer.channel_id.to_bytes(2, "big"))
        signed = msgspec.structs.replace(unsigned, signature=self.signer.sign(message))
        self.send(("order", RELAY, n), signed, Precedence.IMMEDIATE, to)

    def push_server_tracks(self) -> None:
        now = self.station.clock.now()
        for track, walker in self.server_tracks.items():
            self.send_fix(track, walker, now)


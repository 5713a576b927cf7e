"""One node's link layer, sans-I/O: messages in, bodies out, bodies in, events out.

The radio shell drives it (style rules 2 and 3)::

    ep.submit(message, now)                  # any time
    while (t := ep.get_timer()) is not None and t <= now:
        events = ep.handle_timer(now)        # expiries, reassembly timeouts
        body = ep.next_body(now)             # pull: decided at the last moment
        if body is None: break
        transmit(seal(body))                 # and call next_body again when done
    events = ep.receive_body(sender, body, now)

``next_body`` picks by strict precedence at the moment the radio can send, so
a FLASH overtakes anything queued; it returns None when nothing is due or the
duty cycle forbids the airtime (``get_timer`` then says when it may).
Duplicate frames are removed below this layer by frame security's replay
window; this layer removes the duplicates that retransmission, relaying and
re-offers create.  Persistence: :meth:`snapshot` / :meth:`restore`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

import msgspec

from fieldc2.errors import LinkError
from fieldc2.link.body import (
    ACK_TIME_MODULUS,
    BROADCAST,
    FRAG_ID_MODULUS,
    MAX_FRAGMENTS,
    AckRecord,
    DigestRecord,
    Record,
    SkipRecord,
)
from fieldc2.link.inbox import MAX_MESSAGE_BYTES, MAX_WINDOW, Inbox, Stream
from fieldc2.link.outbox import Outbox, Unit
from fieldc2.link.plan import BodyPlan, split_sizes, unit_record
from fieldc2.link.profiles import DutyCycle, LinkProfile
from fieldc2.link.receive import Receiver
from fieldc2.link.rtt import RttState, RttTable
from fieldc2.link.sync import Sync
from fieldc2.link.types import (
    FRAME_OVERHEAD,
    LATEST_ONLY_TTL,
    TYPICAL_FRAME,
    LinkConfig,
    LinkEvent,
    LinkStats,
    Message,
)
from fieldc2.model.precedence import Precedence

#: Version of :meth:`LinkEndpoint.snapshot`'s format.  3 added the per-peer
#: RTT estimates (``rtt``) and each unit's ``sent_at``.
SNAPSHOT_VERSION = 3
#: Older versions :meth:`LinkEndpoint.restore` still reads.  A version 2
#: snapshot lacks only the RTT estimates: the endpoint starts with none and
#: uses the fixed ``LinkConfig.rto`` until its peers' acks give samples again.
READABLE_SNAPSHOTS = frozenset({2, SNAPSHOT_VERSION})
#: Slack above the physical round trip in the RTO floor, in ack delays: the
#: ack may wait one more ack delay behind another node's frame or its
#: sender's duty cycle.  Below the floor a retransmission would race an ack
#: that is on its way (a spurious copy costs the channel a whole frame).
RTO_FLOOR_MARGIN = 1.0


class _Snapshot(msgspec.Struct):
    version: int
    next_seq: dict[int, int]
    frag_id: int
    units: list[Unit]
    streams: dict[int, Stream]
    history: list[Unit]
    abandoned: list[tuple[int, int]]
    ack_due: dict[int, float]
    tracks: dict[int, tuple[int, int]]
    stats: LinkStats
    rtt: dict[int, RttState] = {}


class LinkEndpoint(Receiver):
    """The link layer of one node; see the module docstring for the driving loop."""

    def __init__(self, config: LinkConfig, *, rng: random.Random,
                 profile: LinkProfile | None = None, duty: DutyCycle | None = None) -> None:
        self.config = config
        self.slot = config.slot
        self.stats = LinkStats()
        self.outbox = Outbox(self.stats)
        self.inbox = Inbox(self.stats)
        self.sync = Sync(config)
        self._rng = rng
        self._profile = profile
        self._duty = duty if duty is not None else (profile.duty_budget() if profile else None)
        self._blocked_until: float | None = None
        self._next_seq: dict[int, int] = {}
        self._frag_id = 0
        self._ack_due: dict[int, float] = {}
        self._skips: dict[tuple[int, int], None] = {}
        self._events: list[LinkEvent] = []
        self.rtt = RttTable()

    # -- submitting ---------------------------------------------------------------

    def submit(self, message: Message, now: float) -> int | None:
        """Queue ``message``; its first sequence number if reliable, else None.

        Raises LinkError when a message that must not be lost finds the queue
        full or is too large; an unreliable ROUTINE one is then dropped (counted)."""
        origin = self.slot if message.origin is None else message.origin
        if not 0 <= origin < BROADCAST or not 0 <= message.dest <= BROADCAST:
            raise LinkError(f"bad origin {origin} or destination {message.dest}")
        try:
            prec = Precedence(message.precedence)
        except ValueError as exc:
            raise LinkError(f"unknown precedence {message.precedence!r}") from exc
        sizes = split_sizes(len(message.payload), self.config.body_budget)
        if len(message.payload) > MAX_MESSAGE_BYTES or len(sizes) > MAX_FRAGMENTS:
            raise LinkError(f"message of {len(message.payload)} B is too large for this link")
        if message.coalesce_key is not None:
            for unit in self.outbox.supersede(origin, message.coalesce_key):
                if unit.reliable:
                    self.sync.abandon(unit.origin, unit.seq)
        units = self._units(message, origin, prec, sizes, now)
        if not self.outbox.admit(units, prec):
            return None
        if message.reliable:
            first = self._next_seq.setdefault(origin, 1)
            self._next_seq[origin] = first + len(units)
            for i, unit in enumerate(units):
                unit.seq = first + i
                self.sync.remember(unit)
        for unit in units:
            self.outbox.push(unit)
        self.stats.submitted += 1
        return units[0].seq if message.reliable else None

    def _units(self, message: Message, origin: int, prec: Precedence, sizes: list[int],
               now: float) -> list[Unit]:
        ttl = message.ttl
        if ttl is None:
            latest_only = message.coalesce_key is not None and not message.reliable
            ttl = LATEST_ONLY_TTL if latest_only else self.config.ttl[prec]
        msg_id = 0
        if len(sizes) > 1 and not message.reliable:
            msg_id, self._frag_id = self._frag_id, (self._frag_id + 1) % FRAG_ID_MODULUS
        units, pos = [], 0
        for index, size in enumerate(sizes):
            units.append(Unit(int(prec), origin, message.dest, message.payload[pos:pos + size],
                              message.reliable, now + ttl, msg_id, index, len(sizes),
                              message.coalesce_key))
            pos += size
        return units

    def set_track_fixes(self, fixes: Mapping[int, tuple[int, int]]) -> None:
        """The fix this node holds per track, for digests: (4-bit fix number,
        fix time mod ``body.ACK_TIME_MODULUS``), which together name it."""
        if any(not 0 <= t < BROADCAST or not 0 <= f <= 15 or not 0 <= time < ACK_TIME_MODULUS
               for t, (f, time) in fixes.items()):
            raise LinkError("track fixes need slots 0..254, fix numbers 0..15, 12-bit times")
        self.sync.set_tracks(dict(fixes))

    # -- sending --------------------------------------------------------------------

    def next_body(self, now: float, budget: int | None = None) -> bytes | None:
        """The body to transmit now, or None (nothing due, or no airtime left)."""
        self._expire(now)
        plan = BodyPlan(min(budget or self.config.body_budget, self.config.body_budget))
        self._plan_data(plan, now)
        due = self._plan_control(plan, now, urgent_only=not plan.units)
        if not plan.units and not due:
            return None
        body = plan.encode()
        if not self._spend_airtime(len(body), now):
            return None
        self._commit(plan, body, now)
        return body

    def _plan_data(self, plan: BodyPlan, now: float) -> None:
        low = self._lowest_outstanding()
        for queue in reversed(self.outbox.queues):
            blocked = False
            for unit in queue:
                if unit.next_try > now or not _in_window(unit, low):
                    continue
                if not plan.add_data(unit_record(unit, self.slot), unit):
                    blocked = True
            if blocked:  # never let a lower class pass a waiting higher one
                return

    def _lowest_outstanding(self) -> dict[int, int]:
        """Per origin, the lowest reliable seq still in custody here."""
        low: dict[int, int] = {}
        for unit in self.outbox.units():
            if unit.reliable and not unit.reoffer:
                low[unit.origin] = min(unit.seq, low.get(unit.origin, unit.seq))
        return low

    def _plan_control(self, plan: BodyPlan, now: float, *, urgent_only: bool) -> bool:
        """Add acks, SKIPs and a due digest; whether any of them was due now."""
        due = bool(self._skips) or any(t <= now for t in self._ack_due.values())
        digest_at = self.sync.digest_due(self._has_state(), self._behind())
        digest_due = digest_at is not None and digest_at <= now
        if urgent_only and not due and not digest_due:
            return False
        for origin in sorted(self._ack_due, key=self._ack_due.__getitem__):
            record = self._ack_record(origin)
            if record is not None:
                plan.add_control(record)
        for origin, seq in self._skips:
            plan.add_control(SkipRecord(origin, seq))
        if digest_due:
            digest = self.sync.build(self._digest_origins(), plan.room())
            if digest is not None and plan.add_control(digest):
                return True
        return due

    def _spend_airtime(self, size: int, now: float) -> bool:
        airtime = self._profile.airtime(size + FRAME_OVERHEAD) if self._profile else 0.0
        if self._duty is not None:
            if not self._duty.can_send(airtime, now):
                self._blocked_until = self._duty.next_allowed(airtime, now)
                self.stats.duty_blocked += 1
                return False
            self._duty.record(airtime, now)
        self._blocked_until = None
        self.stats.airtime += airtime
        return True

    def _commit(self, plan: BodyPlan, body: bytes, now: float) -> None:
        self.stats.bodies_sent += 1
        self.stats.bytes_sent += len(body)
        last = plan.records()[-1]
        floor = self._rto_floor(len(body))
        for record, last_size, prefixed in plan.control:
            self._commit_control(record, last_size if record is last else prefixed, now)
        for unit, (_, last_size, _) in zip(plan.units, plan.data, strict=True):
            self.stats.data_records_sent += 1
            if unit.reoffer:
                self.stats.reoffers_sent += 1
                self.stats.reoffer_bytes += last_size
            if unit.reoffer or not unit.reliable:
                self.outbox.remove(unit)
                continue
            self.stats.retransmissions += unit.sent > 0
            unit.sent += 1
            unit.sent_at = now
            unit.next_try = now + self._backoff(unit, floor)

    def _backoff(self, unit: Unit, floor: float) -> float:
        """Seconds until ``unit`` (just sent) goes again: the peer's adaptive RTO,
        doubled per attempt (or per the peer's timeouts since its last sample,
        if more) up to ``max_rto``, spread by the jitter, never below ``floor``."""
        ceiling, peer = self.config.max_rto, self._rtt_peer(unit)
        if unit.sent > 1:
            self.rtt.timed_out(peer, unit.sent - 1)
        rto = self.rtt.rto(peer, default=self.config.rto, floor=floor, ceiling=ceiling)
        doublings = max(unit.sent - 1, self.rtt.level(peer))
        backoff = min(rto * 2.0 ** doublings, ceiling)
        spread = 1 + self._rng.uniform(-1, 1) * self.config.jitter
        return max(backoff * spread, min(floor, ceiling))

    def _rto_floor(self, size: int) -> float:
        """The shortest round trip the link allows for a body of ``size`` bytes:
        its airtime out, the ack's wait, a typical frame's airtime back (plus
        the profile's latency both ways) and :data:`RTO_FLOOR_MARGIN`."""
        delay = (1.0 + RTO_FLOOR_MARGIN) * self.config.ack_delay
        if self._profile is None:
            return delay
        physics = (self._profile.airtime(size + FRAME_OVERHEAD)
                   + self._profile.airtime(TYPICAL_FRAME) + 2.0 * self._profile.latency[1])
        return delay + physics

    def _commit_control(self, record: Record, size: int, now: float) -> None:
        match record:
            case AckRecord(origin=origin):
                self._ack_due.pop(origin, None)
                self.stats.acks_sent += 1
            case SkipRecord(origin=origin, seq=seq):
                self._skips.pop((origin, seq), None)
                self.stats.skips_sent += 1
            case DigestRecord():
                self.sync.sent(now)
                self.stats.digests_sent += 1
                self.stats.digest_bytes += size
            case _:
                pass

    # -- timers, state ----------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` / :meth:`next_body` next have work."""
        low = self._lowest_outstanding()
        send = [u.next_try for u in self.outbox.units() if _in_window(u, low)]
        send += self._ack_due.values()
        digest = self.sync.digest_due(self._has_state(), self._behind())
        send += [digest] if digest is not None else []
        send += [-math.inf] if self._skips else []
        send_at = min(send, default=None)
        if send_at is not None and self._blocked_until is not None:
            send_at = max(send_at, self._blocked_until)
        house = [u.expires for u in self.outbox.units()]
        expiry = self.inbox.next_expiry(self.config.reassembly_timeout)
        house += [expiry] if expiry is not None else []
        times = house + ([send_at] if send_at is not None else [])
        return max(min(times), 0.0) if times else None

    def handle_timer(self, now: float) -> list[LinkEvent]:
        """Drop what expired; events for reliable messages given up."""
        self._expire(now)
        self.inbox.expire(now, self.config.reassembly_timeout)
        self.sync.expire(now)
        return self._drain()

    def _behind(self) -> bool:
        return self.sync.behind({o: s.cum for o, s in self.inbox.streams.items()})

    def _has_state(self) -> bool:
        return bool(self._next_seq or self.inbox.streams)

    def _digest_origins(self) -> list[tuple[int, int]]:
        """Origins a digest lists.  A hub lists all.  A field node lists its
        own, the custodians' (which it acks) and those a hub showed it behind
        on (which it wants re-offered): the rest only a hub could act on, and
        the hub's digest already says it holds them (a 20-node channel's node
        digests shrink from about 60 B to a few)."""
        own = [(o, n - 1) for o, n in sorted(self._next_seq.items())]
        streams = sorted(self.inbox.streams.items())
        if not self.sync.hub:
            wanted = self.config.custodians | self.sync.targets.keys()
            streams = [(o, s) for o, s in streams if o in wanted]
        return own + [(o, s.cum) for o, s in streams]

    def _ref(self, origin: int) -> int | None:
        """This node's reference point in ``origin``'s sequence space, for unwrapping."""
        if origin in self._next_seq:
            return self._next_seq[origin] - 1
        if origin in self.inbox.streams:
            return self.inbox.streams[origin].cum
        seqs = [u.seq for u in self.outbox.units() if u.origin == origin and u.reliable]
        return min(seqs) if seqs else None

    def snapshot(self) -> bytes:
        """Everything accepted and not yet done, for :meth:`restore` after a restart."""
        return msgspec.msgpack.encode(_Snapshot(
            SNAPSHOT_VERSION, self._next_seq, self._frag_id, list(self.outbox.units()),
            self.inbox.streams, list(self.sync.history.values()), list(self.sync.abandoned),
            self._ack_due, self.sync.tracks, self.stats, self.rtt.dump()))

    def restore(self, data: bytes) -> None:
        """Load a :meth:`snapshot` into this (fresh) endpoint.  LinkError if unreadable."""
        try:
            snap = msgspec.msgpack.decode(data, type=_Snapshot)
        except msgspec.DecodeError as exc:
            raise LinkError(f"link snapshot unreadable: {exc}") from exc
        if snap.version not in READABLE_SNAPSHOTS:
            raise LinkError(f"link snapshot version {snap.version} not supported")
        self._next_seq, self._frag_id = snap.next_seq, snap.frag_id
        self.stats = self.outbox.stats = self.inbox.stats = snap.stats
        for unit in snap.units:
            self.outbox.push(unit)
        self.inbox.streams = snap.streams
        for unit in snap.history:
            self.sync.remember(unit)
        for origin, seq in snap.abandoned:
            self.sync.abandon(origin, seq)
        self._ack_due = snap.ack_due
        self.sync.set_tracks(snap.tracks)
        self.rtt.load(snap.rtt)


def _in_window(unit: Unit, low: dict[int, int]) -> bool:
    """Flow control: a receiver holds :data:`MAX_WINDOW` units above a gap, so a
    reliable unit that far past the oldest unacked one would only be dropped."""
    if not unit.reliable or unit.reoffer:
        return True
    return unit.seq < low.get(unit.origin, unit.seq) + MAX_WINDOW

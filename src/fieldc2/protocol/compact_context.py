"""The state one node keeps per radio channel: shared origin and fix history.

Both ends of a channel share the epoch and the operations-area origin
(configuration).  Each node also remembers, per track, the fixes it sent,
the fix number the receivers acknowledged (from the relay's digest) and the
fixes it received, so positions can be delta-coded; see
:mod:`fieldc2.protocol.compact_geo` for why the history is bounded as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from fieldc2.errors import RadioFrameError
from fieldc2.model.radio import Fix

#: Grid steps per degree: 1e-5 degree, <= 1.11 m.
SCALE = 100_000
#: Recent fixes kept per track, sender and receiver side.  Fewer than the 16
#: fix numbers so a number is never ambiguous inside the history; 8 fixes at
#: 30 s is four minutes of acks in flight.
HISTORY_PER_TRACK = 8
#: Oldest acknowledged base a delta may refer to (s): bounds the damage of an
#: ack naming a reused fix number after a long partition.
MAX_DELTA_AGE = 1800
#: An acknowledgement names a fix by number and by its time modulo this
#: (``link.body.ACK_TIME_MODULUS``, 12 bits): two fixes that share both lie at
#: least 68 min apart, more than MAX_DELTA_AGE, so an ack never names a fix
#: the receiver does not hold.
ACK_TIME_MODULUS = 1 << 12
#: Version of :meth:`PositionContext.snapshot`'s format.
SNAPSHOT_VERSION = 1


class _Snapshot(msgspec.Struct):
    version: int
    sent: dict[int, list[Fix]]
    acked: dict[int, int]
    received: dict[int, list[Fix]]
    next_no: dict[int, int]


def grid(value: float) -> int:
    """A coordinate in grid steps."""
    return round(value * SCALE)


def snap(value: float) -> float:
    """A coordinate moved onto the grid."""
    return grid(value) / SCALE


class _Ring:
    """Last fixes of one track by fix number, oldest evicted first."""

    __slots__ = ("fixes",)

    def __init__(self) -> None:
        self.fixes: dict[int, Fix] = {}

    def put(self, fix: Fix) -> None:
        self.fixes.pop(fix.fix_no, None)
        self.fixes[fix.fix_no] = fix
        while len(self.fixes) > HISTORY_PER_TRACK:
            del self.fixes[next(iter(self.fixes))]


class PositionContext:
    """Per-track fix history of one channel, for both directions of one node.

    Sender side: ``record_sent`` (done by ``encode``), ``acknowledge`` (fed by
    the link from the relay's digest), ``base_for``.  Receiver side:
    ``record_received`` (done by ``decode``), ``received_base``,
    ``latest_received`` (what this node's digest reports).  On a channel with
    several receivers, ``acknowledge`` must name a fix every receiver holds
    (the minimum over their digests), since one delta serves them all.

    Fix numbers wrap at 16: a receiver that missed 16 or more fixes of a
    track still holds an old fix under a number the sender has since reused.
    So an acknowledgement names the fix by number *and* by its time modulo
    :data:`ACK_TIME_MODULUS` (the link's digest carries both), and
    ``acknowledge`` ignores one that does not match the fix held under that
    number: a stale digest can never make the sender delta against a fix the
    receiver does not hold.  :meth:`snapshot` / :meth:`restore` carry the
    history over a restart, so a relay keeps decoding the nodes' deltas.
    """

    def __init__(self) -> None:
        self._sent: dict[int, _Ring] = {}
        self._acked: dict[int, int] = {}
        self._received: dict[int, _Ring] = {}
        self._next_no: dict[int, int] = {}

    def allocate_fix_no(self, track: int) -> int:
        """The next fix number for a track this node originates."""
        number = self._next_no.get(track, 0)
        self._next_no[track] = (number + 1) % 16
        return number

    def acknowledge(self, track: int, fix_no: int, time: int | None = None) -> None:
        """The receivers hold this fix; later fixes of the track may delta against it.

        ``time``: the fix's channel time modulo :data:`ACK_TIME_MODULUS` as the
        receiver reported it (always given by the link; None only where the
        caller knows the fix is current).  Ignored unless the fix is still in
        the sent history and, with ``time``, is the very fix the receiver holds."""
        ring = self._sent.get(track)
        fix = ring.fixes.get(fix_no) if ring is not None else None
        if fix is None:
            return
        if time is not None and fix.time % ACK_TIME_MODULUS != time % ACK_TIME_MODULUS:
            return  # a reused number: the receiver holds an older fix under it
        self._acked[track] = fix_no

    def received_latest(self) -> dict[int, Fix]:
        """Per track, the fix most recently received (what a relay's digest acks)."""
        return {track: ring.fixes[next(reversed(ring.fixes))]
                for track, ring in self._received.items() if ring.fixes}

    def forget_received(self, track: int, fix_no: int) -> None:
        """Drop a received fix (one the application found impossible) so that
        nothing is ever delta-decoded against it."""
        ring = self._received.get(track)
        if ring is not None:
            ring.fixes.pop(fix_no, None)

    def snapshot(self) -> bytes:
        """The fix history, for :meth:`restore` after a restart (a few kilobytes)."""
        return msgspec.msgpack.encode(_Snapshot(
            SNAPSHOT_VERSION, {t: list(r.fixes.values()) for t, r in self._sent.items()},
            self._acked, {t: list(r.fixes.values()) for t, r in self._received.items()},
            self._next_no))

    def restore(self, data: bytes) -> None:
        """Replace the history with a :meth:`snapshot`; RadioFrameError if unreadable."""
        try:
            snap = msgspec.msgpack.decode(data, type=_Snapshot)
        except msgspec.DecodeError as exc:
            raise RadioFrameError(f"position context snapshot unreadable: {exc}") from exc
        if snap.version != SNAPSHOT_VERSION:
            raise RadioFrameError(f"position context snapshot version {snap.version}")
        self._sent, self._received = _rings(snap.sent), _rings(snap.received)
        self._acked, self._next_no = dict(snap.acked), dict(snap.next_no)

    def latest_received(self, track: int) -> int | None:
        """Newest fix number held for a track (what a digest reports)."""
        ring = self._received.get(track)
        return next(reversed(ring.fixes)) if ring and ring.fixes else None

    def latest_position(self, track: int) -> tuple[float, float] | None:
        """Where a track was last heard on this channel, if it was."""
        ring = self._received.get(track)
        if not ring or not ring.fixes:
            return None
        fix = ring.fixes[next(reversed(ring.fixes))]
        return fix.lat, fix.lon

    def base_for(self, fix: Fix) -> Fix | None:
        """The acknowledged fix a new fix may be delta-coded against, if any."""
        number = self._acked.get(fix.track)
        ring = self._sent.get(fix.track)
        if number is None or ring is None or number == fix.fix_no:
            return None
        base = ring.fixes.get(number)
        if base is None or not 0 <= fix.time - base.time <= MAX_DELTA_AGE:
            return None
        return base

    def record_sent(self, fix: Fix) -> None:
        if self._acked.get(fix.track) == fix.fix_no:
            del self._acked[fix.track]  # the number now names a different fix
        self._sent.setdefault(fix.track, _Ring()).put(fix)

    def record_received(self, fix: Fix) -> None:
        self._received.setdefault(fix.track, _Ring()).put(fix)

    def received_base(self, track: int, fix_no: int) -> Fix | None:
        ring = self._received.get(track)
        return ring.fixes.get(fix_no) if ring else None


def _rings(fixes: dict[int, list[Fix]]) -> dict[int, _Ring]:
    rings: dict[int, _Ring] = {}
    for track, held in fixes.items():
        ring = rings.setdefault(track, _Ring())
        for fix in held:
            ring.put(fix)
    return rings


@dataclass(frozen=True)
class Origin:
    """The channel's shared time and place origin."""

    epoch: int
    """Unix seconds; channel times are seconds since this."""
    lat0: float
    lon0: float

    @property
    def lat0_i(self) -> int:
        return grid(self.lat0)

    @property
    def lon0_i(self) -> int:
        return grid(self.lon0)


@dataclass
class ChannelContext:
    """What both ends of a channel share, plus this node's fix history on it."""

    epoch: int
    """Unix seconds; the channel's time origin."""
    lat0: float
    lon0: float
    """Operations-area origin; fixes within the box around it encode smaller."""
    positions: PositionContext = field(default_factory=PositionContext)

    @property
    def origin(self) -> Origin:
        return Origin(self.epoch, self.lat0, self.lon0)

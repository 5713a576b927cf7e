"""Measuring an exercise: the relay's order watch, custody checks, :func:`summarise`.

Kept apart from :mod:`fieldc2.sim.exercise` so the runner stays about
building and scripting, and this module about measuring.
"""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING

from fieldc2.crypto.radio import FrameOpener
from fieldc2.crypto.radio_keys import ChannelKey
from fieldc2.link.body import DataRecord, FragmentRecord, decode_body
from fieldc2.link.outbox import Unit
from fieldc2.model.precedence import Precedence
from fieldc2.sim.exercise_metrics import (
    Airtime,
    ExerciseResult,
    Ledger,
    class_figures,
    convergence_after,
    fresh_counts,
    peak_window,
    percentile,
)
from fieldc2.sim.exercise_station import Station
from fieldc2.sim.exercise_world import Area, Walker

if TYPE_CHECKING:
    from fieldc2.sim.exercise import Exercise, PartitionSpec


class OrderWatch:
    """The relay's frame observer: did a lower-precedence record go while an order waited?

    Before each frame it notes the relay's orders that are due and never sent
    (and whether lower-precedence data is due too); after, it opens the frame
    as any listener holding the channel key would and looks at its records.
    It also stamps each order's first transmission in the ledger."""

    def __init__(self, key: ChannelKey, ledger: Ledger) -> None:
        self.ledger = ledger
        self._monitor = FrameOpener([key])
        self._pending: list[Unit] = []
        self._contended = False

    def __call__(self, station: Station, now: float, frame: bytes | None) -> None:
        if frame is None:
            self._before(station)
        elif self._pending:
            self._after(station, now, frame)

    def _before(self, station: Station) -> None:
        due = [u for u in station.link.outbox.units() if u.next_try <= station.unix]
        self._pending = [u for u in due if u.reliable and not u.reoffer and u.sent == 0
                         and u.origin == station.slot and u.precedence >= Precedence.IMMEDIATE]
        self._contended = any(u.precedence < Precedence.IMMEDIATE for u in due)

    def _after(self, station: Station, now: float, frame: bytes) -> None:
        ledger = self.ledger
        ledger.order_checks += 1
        ledger.order_contended += self._contended
        for unit in self._pending:
            key = ledger.by_payload.get(unit.payload)
            record = ledger.messages.get(key) if key else None
            if record is not None and unit.sent and record.first_sent is None:
                record.first_sent = now
        body = self._monitor.open(frame, station.unix).body
        lower = [r for r in decode_body(body) if isinstance(r, DataRecord | FragmentRecord)
                 and r.precedence < Precedence.IMMEDIATE]
        if lower and any(not u.sent for u in self._pending):
            ledger.order_delays += 1


def custody(station: Station) -> tuple[set[tuple[int, int]], dict[int, int]]:
    """What a station answers for: reliable units held, and per-origin cumulative seqs."""
    endpoint = station.link
    held = {(u.origin, u.seq) for u in endpoint.outbox.units() if u.reliable and not u.reoffer}
    return held, {origin: stream.cum for origin, stream in endpoint.inbox.streams.items()}


def summarise(ex: Exercise, injected: dict[str, int]) -> ExerciseResult:
    s = ex.scenario
    tracks = [node.slot for node in ex.nodes]
    rejected: collections.Counter[str] = collections.Counter()
    airtime: dict[str, Airtime] = {}
    duplicates = digest_bytes = body_bytes = 0
    sent: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for tx in ex.net.transmissions:
        sent[tx.sender].append((tx.start, tx.end - tx.start))
    duty, window = ex.profile.duty_cycle, ex.profile.duty_window_s
    for app in [ex.relay, *ex.nodes]:
        station = app.station
        rejected.update(station.rejected)
        duplicates += station.link.stats.duplicates
        digest_bytes += station.link.stats.digest_bytes
        body_bytes += station.link.stats.bytes_sent
        used = ex.net.node_stats(station.name).airtime
        airtime[station.name] = Airtime(used, peak_window(sent[station.name], window),
                                        duty * window if duty else None)
    # the relay's picture: field nodes lack most delta bases (only the relay acks)
    ex.ledger.undecodable += ex.relay.station.radio.record_errors
    ex.ledger.future_fixes += ex.relay.station.radio.future_fixes
    walkers = {node.slot: node.walker for node in ex.nodes}
    return ExerciseResult(
        by_class=class_figures(ex.ledger),
        airtime=airtime,
        fresh_per_minute=fresh_counts(ex.ledger, tracks, s.duration, s.fresh_age),
        nodes=len(tracks),
        convergence=[convergence_after(ex.ledger, cut_off(ex, p), p.end)
                     for p in s.partitions if p.end < s.duration],
        picture_error=picture_error(ex.ledger, walkers, ex.area, s.duration),
        rejected=dict(rejected),
        injected=dict(injected),
        ledger=ex.ledger,
        link_duplicates=duplicates,
        digest_share=digest_bytes / body_bytes if body_bytes else math.nan,
    )


def cut_off(ex: Exercise, spec: PartitionSpec) -> list[int]:
    """Tracks the relay could not hear during ``spec``: everyone, or the cut half."""
    nodes = ex.nodes if spec.cut == "relay" else ex.nodes[: len(ex.nodes) // 2]
    return [node.slot for node in nodes]


def picture_error(ledger: Ledger, walkers: dict[int, Walker], area: Area,
                  duration: float) -> tuple[float, float]:
    """Mean and p95 distance between the relay's fix and the truth, sampled each minute."""
    latest: dict[int, tuple[float, float]] = {}
    errors: list[float] = []
    arrivals = iter(ledger.fixes)
    pending = next(arrivals, None)
    for minute in range(1, int(duration // 60) + 1):
        t = minute * 60.0
        while pending is not None and pending.at <= t:
            latest[pending.track] = (pending.lat, pending.lon)
            pending = next(arrivals, None)
        for track, held in latest.items():
            truth = area.to_latlon(*walkers[track].xy(t))
            errors.append(area.distance(held, truth))
    if not errors:
        return math.nan, math.nan
    p95 = percentile(errors, 95)
    return sum(errors) / len(errors), p95 if p95 is not None else math.nan

"""What an exercise records, and the figures computed from it.

The :class:`Ledger` is filled while the simulation runs: one
:class:`MessageRecord` per application message (submit time, every delivery
to the destination application), every fix the relay's picture took in, and
the checks the order path made.  :func:`summarise` turns it into the frozen
:class:`ExerciseResult` that tests assert on and the benchmark tabulates.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

from fieldc2.errors import LinkError
from fieldc2.model.precedence import Precedence

#: Messages one exercise may record.  A one-hour, 20-node exercise submits a
#: few hundred non-position messages; the bound catches a runaway script.
MAX_MESSAGES = 100_000
#: Fix arrivals recorded at the relay: 20 nodes x 2 per minute x 1 h is 2 400.
MAX_FIX_LOG = 1_000_000


@dataclass
class MessageRecord:
    """One application message (not a position) and what became of it."""

    key: tuple[str, int, int]
    """(kind, originator slot, id): how the receiving application names it."""
    precedence: Precedence
    origin: int
    dest: int
    submitted: float
    broadcast: bool = False
    """Sent to everybody (reports, order statuses); ``dest`` is whose delivery counts."""
    deliveries: list[float] = field(default_factory=list)
    """Exercise times the destination application received it (1 is right)."""
    first_sent: float | None = None
    """When a body first carried it (orders only: the relay observes this)."""


@dataclass(frozen=True)
class FixArrival:
    """A fix the relay's picture took in."""

    at: float
    track: int
    fix_time: float
    """Exercise time the fix was taken (seconds since the exercise start)."""
    lat: float
    lon: float


@dataclass
class Ledger:
    """Everything an exercise observes; see the module docstring."""

    messages: dict[tuple[str, int, int], MessageRecord] = field(default_factory=dict)
    by_payload: dict[bytes, tuple[str, int, int]] = field(default_factory=dict)
    """Encoded payload -> key, so link-level observations name the message."""
    fixes: list[FixArrival] = field(default_factory=list)
    stray: int = 0
    """Deliveries of messages never submitted (must stay 0: forgeries that got in)."""
    misdelivered: int = 0
    """Deliveries to an application that was not the destination."""
    order_checks: int = 0
    """Bodies the relay sent while an order waited to be sent."""
    order_contended: int = 0
    """Of those, bodies chosen while lower-precedence data was also due."""
    order_delays: int = 0
    """Of those, bodies that carried lower-precedence data but not the order."""
    bad_signatures: int = 0
    """Orders whose Ed25519 signature did not verify at the node."""
    expired: collections.Counter[str] = field(default_factory=collections.Counter)
    """Reliable messages a sender gave up on, by precedence name."""
    future_fixes: int = 0
    """Fixes the relay refused because they lay in its future (a wrong delta
    base): by its picture, and by its RadioEndpoint since the last restart."""
    prompted: int = 0
    """Extra positions nodes sent because the relay's digest lacked their track."""
    restarts: list[float] = field(default_factory=list)
    """Exercise times the relay was rebuilt from its snapshot."""
    restart_lost: int = 0
    """Reliable units or accepted sequence numbers the relay no longer held after
    rebuilding itself from its snapshot (must be 0)."""
    undecodable: int = 0
    """Delivered payloads the relay's compact codec refused (e.g. a delta
    without its base; ``RadioEndpoint.record_errors`` since the last restart)."""

    def submit(self, record: MessageRecord, payload: bytes) -> None:
        if len(self.messages) >= MAX_MESSAGES:
            raise LinkError(f"exercise recorded more than {MAX_MESSAGES} messages")
        self.messages[record.key] = record
        self.by_payload[payload] = record.key

    def deliver(self, key: tuple[str, int, int], receiver: int, at: float) -> None:
        record = self.messages.get(key)
        if record is None:
            self.stray += 1
        elif receiver != record.dest:
            self.misdelivered += not record.broadcast
        else:
            record.deliveries.append(at)

    def fix(self, arrival: FixArrival) -> None:
        if len(self.fixes) < MAX_FIX_LOG:
            self.fixes.append(arrival)


@dataclass(frozen=True)
class ClassFigures:
    """Delivery of one precedence class."""

    submitted: int
    delivered: int
    duplicates: int
    """Extra deliveries to the application beyond the first (must be 0)."""
    p50: float | None
    p95: float | None
    """Latency percentiles from submit to first delivery, seconds."""

    @property
    def ratio(self) -> float:
        return self.delivered / self.submitted if self.submitted else math.nan


@dataclass(frozen=True)
class Airtime:
    """One transmitter's airtime against its regulatory budget."""

    used: float
    """Seconds on air over the whole run."""
    peak: float
    """Most seconds on air within any one duty-cycle window (EU868: an hour)."""
    budget: float | None
    """``duty_cycle * window``: what one window allows; None without a duty cycle."""

    @property
    def fraction(self) -> float | None:
        """Peak window use over the budget: above 1 would break the regulation."""
        return self.peak / self.budget if self.budget else None


def peak_window(transmissions: list[tuple[float, float]], window: float) -> float:
    """Largest airtime of transmissions starting within any ``window`` seconds.

    ``transmissions`` are (start, airtime) in start order."""
    best = total = 0.0
    first = 0
    for start, airtime in transmissions:
        total += airtime
        while transmissions[first][0] <= start - window:
            total -= transmissions[first][1]
            first += 1
        best = max(best, total)
    return best


@dataclass(frozen=True)
class ExerciseResult:
    """Figures of one exercise run, plus the ledger for deeper checks."""

    by_class: dict[Precedence, ClassFigures]
    airtime: dict[str, Airtime]
    fresh_per_minute: list[int]
    """Tracks the relay held fresh at each whole minute."""
    nodes: int
    convergence: list[float | None]
    """Per healed partition: seconds until the relay held a post-heal fix of
    every node that was cut off (None: never within the run).  Nodes the relay
    kept hearing are left out: at 30 % loss even in steady state one of 20
    has no fix younger than a minute most of the time (0.3^2 per node)."""
    picture_error: tuple[float, float]
    """Mean and 95th percentile of the distance relay fix <-> truth, metres."""
    rejected: dict[str, int]
    """Frames the openers of all stations rejected, by reason."""
    injected: dict[str, int]
    """Hostile frames put on the channel, by kind."""
    ledger: Ledger
    link_duplicates: int
    """Duplicate data records the link layers suppressed (for information)."""
    digest_share: float = math.nan
    """Digest bytes over all body bytes sent, every station: anti-entropy's cost."""

    @property
    def fresh_fraction(self) -> float:
        if not self.fresh_per_minute or not self.nodes:
            return math.nan
        return sum(self.fresh_per_minute) / (len(self.fresh_per_minute) * self.nodes)

    @property
    def duplicates(self) -> int:
        return sum(c.duplicates for c in self.by_class.values())


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def class_figures(ledger: Ledger) -> dict[Precedence, ClassFigures]:
    out: dict[Precedence, ClassFigures] = {}
    for prec in Precedence:
        records = [r for r in ledger.messages.values() if r.precedence == prec]
        latencies = [r.deliveries[0] - r.submitted for r in records if r.deliveries]
        dups = sum(max(0, len(r.deliveries) - 1) for r in records)
        out[prec] = ClassFigures(len(records), len(latencies), dups,
                                 percentile(latencies, 50), percentile(latencies, 95))
    return out


def fresh_counts(ledger: Ledger, tracks: list[int], duration: float,
                 max_age: float) -> list[int]:
    """Tracks with a fix younger than ``max_age`` at the relay, at every whole minute."""
    latest: dict[int, float] = {}
    counts: list[int] = []
    arrivals = iter(ledger.fixes)
    pending = next(arrivals, None)
    for minute in range(1, int(duration // 60) + 1):
        t = minute * 60.0
        while pending is not None and pending.at <= t:
            latest[pending.track] = max(latest.get(pending.track, -math.inf),
                                        pending.fix_time)
            pending = next(arrivals, None)
        counts.append(sum(1 for k in tracks if t - latest.get(k, -math.inf) <= max_age))
    return counts


def convergence_after(ledger: Ledger, tracks: list[int], heal: float) -> float | None:
    """Seconds after ``heal`` until every track had a fix taken at or after it."""
    first: dict[int, float] = {}
    for arrival in ledger.fixes:
        if arrival.fix_time >= heal and arrival.track not in first:
            first[arrival.track] = arrival.at
    if any(k not in first for k in tracks):
        return None
    return max(first[k] for k in tracks) - heal

"""Value types of the link layer: what goes in, what comes out, how it is tuned.

A :class:`Message` is what the application submits; :class:`LinkEvent` is the
tagged union the endpoint hands back (payloads delivered exactly once, custody
acknowledgements, losses made loud).  :class:`LinkConfig` holds the per-link
timing, scaled to the link by :meth:`LinkConfig.for_profile`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from fieldc2.errors import ConfigError
from fieldc2.link.body import BROADCAST
from fieldc2.link.profiles import LinkProfile
from fieldc2.model.precedence import Precedence

#: Hashable and serialisable (snapshots), which ``Hashable`` alone is not.
CoalesceKey = int | str | tuple[int | str, ...]

#: ACP 121 handling objectives per class (FLASH 10 min, IMMEDIATE 30 min,
#: PRIORITY 3 h, ROUTINE 6 h): how fast a message *should* arrive.  They are
#: delivery targets, measured by the benchmark, not lifetimes.
HANDLING_OBJECTIVE: dict[Precedence, float] = {
    Precedence.FLASH: 600.0,
    Precedence.IMMEDIATE: 1800.0,
    Precedence.PRIORITY: 3 * 3600.0,
    Precedence.ROUTINE: 6 * 3600.0,
}
#: Lifetimes per class: how long a reliable message is still worth carrying,
#: after which it is abandoned loudly (Expired, SKIP).  A FLASH that missed
#: its 10-minute objective because the relay was cut off for 10 minutes is
#: late, not useless, so the urgent classes live an hour or two: longer than
#: any partition the link is meant to ride out plus the catch-up after it.
#: The lower classes keep a working day's shift.  At LoRa rates the queue
#: bound (``outbox.MAX_QUEUED_UNITS``) is reached long before these run out.
DEFAULT_TTL: dict[Precedence, float] = {
    Precedence.FLASH: 3600.0,
    Precedence.IMMEDIATE: 2 * 3600.0,
    Precedence.PRIORITY: 6 * 3600.0,
    Precedence.ROUTINE: 12 * 3600.0,
}
#: A latest-only message (one with a coalesce key, a position) older than this
#: misleads more than it helps: at walking pace it is 150 m off.
LATEST_ONLY_TTL = 120.0
#: Header and tag that frame security adds around a body (3 B + 4 B).
FRAME_OVERHEAD = 7
#: A frame of a few positions or an ack and a digest, bytes: the size that
#: sets the pace of acks and digests in :meth:`LinkConfig.for_profile`.
TYPICAL_FRAME = 32


class Message(msgspec.Struct, frozen=True):
    """An opaque application payload and how the link must treat it."""

    precedence: Precedence
    payload: bytes
    reliable: bool = False
    """Custody-acknowledged and retransmitted until acked or ``ttl`` runs out."""
    coalesce_key: CoalesceKey | None = None
    """A newer message with the same key replaces an unsent older one."""
    ttl: float | None = None
    """Seconds the message stays useful; default by class (:data:`DEFAULT_TTL`)."""
    dest: int = BROADCAST
    """Destination slot, 255 for everybody."""
    origin: int | None = None
    """Originator slot; None for this endpoint's own slot."""


class Delivered(msgspec.Struct, frozen=True, tag=True):
    """An application payload, delivered once; reliable ones in per-origin order."""

    origin: int
    payload: bytes
    precedence: Precedence
    seq: int | None
    """Per-origin sequence number of a reliable message, None when unreliable."""
    dest: int
    sender: int
    """The slot whose frame carried it (a relay for store-and-forward traffic)."""


class Acked(msgspec.Struct, frozen=True, tag=True):
    """A reliable message this endpoint held in custody was taken over by ``by``."""

    origin: int
    seq: int
    by: int


class Expired(msgspec.Struct, frozen=True, tag=True):
    """A reliable message ran out of time before anyone acknowledged it."""

    origin: int
    seq: int
    precedence: Precedence


class PeerDigest(msgspec.Struct, frozen=True, tag=True):
    """A peer's per-track latest fix: the application's delta base."""

    peer: int
    tracks: dict[int, tuple[int, int]]
    """Track slot -> (4-bit fix number, fix time mod ``body.ACK_TIME_MODULUS``)."""


class PeerHeard(msgspec.Struct, frozen=True, tag=True):
    """A peer was heard again after a silence longer than the first
    retransmission timeout (a healed partition, a node back in range)."""

    peer: int
    silent: float
    """Seconds since it was last heard."""


class Skipped(msgspec.Struct, frozen=True, tag=True):
    """Reliable ``seq`` of ``origin`` was abandoned by its sender and will not come."""

    origin: int
    seq: int


LinkEvent = Delivered | Acked | Expired | PeerDigest | PeerHeard | Skipped


@dataclass(frozen=True)
class LinkConfig:
    """Tuning of one endpoint.  Use :meth:`for_profile` to scale it to a link."""

    slot: int
    """This endpoint's 1-byte slot id (0..254; the relay is 0 by convention)."""
    body_budget: int = 44
    """Largest body, bytes: the link MTU minus :data:`FRAME_OVERHEAD`.  Use the
    smaller direction's MTU when they differ (Iridium: 270 B down)."""
    rto: float = 30.0
    """First retransmission timeout, seconds; doubles per attempt."""
    max_rto: float = 600.0
    """Ceiling of the backoff, seconds: a FLASH still gets a try per TTL."""
    jitter: float = 0.25
    """Retransmission times are spread by +/- this fraction (seeded random)."""
    ack_delay: float = 2.0
    """How long an ack waits for outgoing traffic to ride on, seconds."""
    digest_period: float = 45.0
    """Anti-entropy digest period, seconds, when something changed."""
    digest_keepalive: float = 600.0
    """A digest goes at least this often even when nothing changed, seconds,
    so two sides of a healed partition notice each other."""
    reoffer_interval: float = 120.0
    """A message re-offered to a peer is not re-offered again before this, seconds."""
    reassembly_timeout: float = 120.0
    """An incomplete unreliable fragmented message is dropped after this, seconds."""
    custodians: frozenset[int] = frozenset({0})
    """Slots whose ack takes custody of anything (the relay)."""
    peers: frozenset[int] = frozenset()
    """Slots that must all ack a reliable broadcast; empty: any one ack will do."""
    forward: bool = False
    """Store-and-forward: keep and relay reliable traffic addressed to others."""
    ttl: dict[Precedence, float] = field(default_factory=lambda: dict(DEFAULT_TTL))
    """Time to live per class, seconds."""

    def __post_init__(self) -> None:
        if not 0 <= self.slot < BROADCAST:
            raise ConfigError(f"link slot {self.slot} must be 0..254")
        if self.body_budget < 8:
            raise ConfigError(f"body budget {self.body_budget} B is too small for a fragment")

    @classmethod
    def for_profile(cls, slot: int, profile: LinkProfile, **overrides: object) -> LinkConfig:
        """Timers scaled to ``profile``: a full frame's airtime, stretched by the
        duty cycle, sets the retransmission timeout and the digest period."""
        budget = min(profile.mtu_up, profile.mtu_down) - FRAME_OVERHEAD
        duty = profile.duty_cycle or 1.0
        full = profile.airtime(budget + FRAME_OVERHEAD) / duty
        small = profile.airtime(TYPICAL_FRAME) / duty
        ack_delay = max(small, 0.5)
        base: dict[str, object] = {
            "slot": slot,
            "body_budget": budget,
            # a full frame out, the ack's wait and its frame back, both at duty
            "rto": max(2.0 * full + 2.0 * ack_delay, 2.0 * profile.latency[1] + 1.0),
            "ack_delay": ack_delay,
            "digest_period": min(max(10.0 * small, 30.0), 600.0),
        }
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]


class LinkStats(msgspec.Struct):
    """Counters of one endpoint; every loss is counted by cause."""

    submitted: int = 0
    bodies_sent: int = 0
    bytes_sent: int = 0
    """Body bytes (add :data:`FRAME_OVERHEAD` per body for frame bytes)."""
    data_records_sent: int = 0
    retransmissions: int = 0
    acks_sent: int = 0
    digests_sent: int = 0
    digest_bytes: int = 0
    reoffers_sent: int = 0
    reoffer_bytes: int = 0
    skips_sent: int = 0
    coalesced: int = 0
    expired: int = 0
    dropped_overflow: int = 0
    delivered: int = 0
    duplicates: int = 0
    out_of_window: int = 0
    gaps_skipped: int = 0
    partials_dropped: int = 0
    reassembly_timeouts: int = 0
    custody_taken: int = 0
    duty_blocked: int = 0
    airtime: float = 0.0

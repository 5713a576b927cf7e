"""Anti-entropy: version-vector digests, re-offers of what a peer lacks, SKIPs.

Every node keeps a bounded *history* of recent reliable units (its own and
those it received), and now and then broadcasts a digest: per origin the
highest sequence number up to which it holds everything, plus the
application's per-track fix numbers.  A node that hears a digest showing a peer
behind re-offers the missing units, lowest first, a few per digest and each at
most once per ``reoffer_interval`` per peer, so a node that was cut off catches
up without a flood.  Digests go every ``digest_period`` while something
changed, every ``digest_keepalive`` otherwise, and soon after hearing a peer
that was silent (a healed partition) or a digest showing this node behind.

The topology is relay-centred: field nodes hear the relay, and the relay
(a custodian, ``LinkConfig.custodians``) holds everything.  So only a *hub*
(a custodian, or anyone on a link without custodians) answers a digest with
re-offers of other origins' traffic and digests soon after hearing a silent
peer; a field node re-offers only its own traffic, and only a hub's digest
makes it send its own digest early, at most once per digest period per hub
(:data:`NUDGE_PER_PEER`).  Without these limits, at 30 % loss every node
missed some broadcast, every digest showed somebody behind, and 20 nodes'
digests took two thirds of a LoRa channel.

A custodian that gave up on a unit (TTL, or superseded) remembers it as
*abandoned*; when a peer's ack or digest shows it waiting for one, a SKIP
record tells it to stop waiting.
"""

from __future__ import annotations

from collections.abc import Iterable

from fieldc2.link.body import BROADCAST, MAX_BITMAP_BYTES, DigestRecord, u15_size
from fieldc2.link.inbox import MAX_WINDOW
from fieldc2.link.outbox import Unit
from fieldc2.link.types import LinkConfig

#: Reliable units remembered for re-offer.  At LoRa rates this is hours of
#: orders and reports; positions are unreliable and never stored here.
MAX_HISTORY = 256
#: Units re-offered in answer to one digest: a cut-off node catches up over a
#: few digest periods instead of in one burst that would starve live traffic.
REOFFER_BURST = 4
#: (peer, origin, seq) re-offer times remembered for rate limiting.
MAX_OFFERED = 1024
#: Abandoned (origin, seq) remembered to answer with SKIP; older ones are
#: forgotten first (a peer that far behind is re-synchronised by anti-entropy).
MAX_ABANDONED = 256
#: Delay before this node's own digest after it learns it is behind or hears a
#: peer again, as a fraction of the digest period: soon, but room for a batch.
NUDGE_FRACTION = 0.1
#: Origins for which a peer showed us behind, remembered until we catch up.
MAX_TARGETS = 255
#: A peer's digests make this node send its own early at most once per this
#: many digest periods: one digest of ours answers them all (the re-offers it
#: pulls come a few at a time per digest anyway).
NUDGE_PER_PEER = 1.0


class Sync:
    """History, digest schedule and per-peer rate limits of one endpoint."""

    def __init__(self, config: LinkConfig) -> None:
        self.config = config
        self.history: dict[tuple[int, int], Unit] = {}
        self.abandoned: dict[tuple[int, int], None] = {}
        self.tracks: dict[int, tuple[int, int]] = {}
        self.hub = not config.custodians or config.slot in config.custodians
        """A custodian (or anyone without one): re-offers for everybody, see above."""
        self.changed = False
        self.last_digest: float | None = None
        self.nudge_at: float | None = None
        self._offered: dict[tuple[int, int, int], float] = {}
        self._last_heard: dict[int, float] = {}
        self._rotate = 0
        self._nudged_by: dict[int, float] = {}
        self.targets: dict[int, tuple[int, float]] = {}

    def remember(self, unit: Unit) -> None:
        if len(self.history) >= MAX_HISTORY:
            del self.history[next(iter(self.history))]
        self.history[(unit.origin, unit.seq)] = unit
        self.changed = True

    def abandon(self, origin: int, seq: int) -> None:
        if len(self.abandoned) >= MAX_ABANDONED:
            del self.abandoned[next(iter(self.abandoned))]
        self.abandoned[(origin, seq)] = None
        self.history.pop((origin, seq), None)

    def expire(self, now: float) -> None:
        for key in [k for k, u in self.history.items() if u.expires <= now]:
            del self.history[key]

    def heard(self, peer: int, now: float) -> float | None:
        """A body from ``peer``; seconds since it was last heard (None: never).

        After a long silence (a healed partition, a node back in range) a hub
        digests soon.  Half the keepalive: shorter gaps are covered by the
        periodic digests, and a sparse sender must not make every one of its
        bodies cost a digest."""
        last = self._last_heard.get(peer)
        if self.hub and (last is None or now - last > self.config.digest_keepalive / 2):
            self.nudge(now)
        self._last_heard[peer] = now
        return None if last is None else now - last

    def nudge(self, now: float) -> None:
        at = now + NUDGE_FRACTION * self.config.digest_period
        self.nudge_at = at if self.nudge_at is None else min(self.nudge_at, at)

    def set_tracks(self, fixes: dict[int, tuple[int, int]]) -> None:
        if fixes != self.tracks:
            self.tracks = dict(fixes)
            self.changed = True

    def peer_ahead(self, peer: int, origin: int, peer_cum: int, now: float) -> None:
        """``peer`` holds ``origin`` up to ``peer_cum``, beyond us: we are behind.

        A field node is pulled only by a hub's digest (the hub answers with
        re-offers), a hub by anyone's; once per :data:`NUDGE_PER_PEER` periods."""
        if not (self.hub or peer in self.config.custodians):
            return
        if len(self.targets) < MAX_TARGETS or origin in self.targets:
            old = self.targets.get(origin, (peer_cum, now))[0]
            self.targets[origin] = (max(old, peer_cum), now)
        last = self._nudged_by.get(peer)
        if last is None or now - last >= NUDGE_PER_PEER * self.config.digest_period:
            self._nudged_by[peer] = now
            self.nudge(now)

    def behind(self, held: dict[int, int]) -> bool:
        """Whether a target is unreached (``held``: origin -> cum).  Targets are
        forgotten when reached, or a keepalive after they were last seen (the
        peer may have gone)."""
        for origin, (target, seen) in list(self.targets.items()):
            stale = self.last_digest is not None and (
                self.last_digest - seen > self.config.digest_keepalive)
            if held.get(origin, target) >= target or stale:
                del self.targets[origin]
        return bool(self.targets)

    def digest_due(self, has_state: bool, behind: bool = False) -> float | None:
        """When the next digest should go; None when there is nothing to say.
        Every period while something changed or we are behind a peer (each
        digest pulls the next re-offers), else every keepalive."""
        if not has_state and not self.tracks:
            return None
        if self.last_digest is None:
            return self.nudge_at if self.nudge_at is not None else 0.0
        busy = self.changed or behind
        period = self.config.digest_period if busy else self.config.digest_keepalive
        due = self.last_digest + period
        return due if self.nudge_at is None else min(due, self.nudge_at)

    def build(self, origins: list[tuple[int, int]], space: int) -> DigestRecord | None:
        """A digest of as many entries as fit in ``space`` bytes (rotating)."""
        n = len(origins)
        if n:
            self._rotate %= n
            origins = origins[self._rotate:] + origins[: self._rotate]
        chosen: list[tuple[int, int]] = []
        used = 4  # kind byte, length byte, two counts
        for origin, cum in origins:
            if used + 1 + u15_size(cum) > space:
                break
            used += 1 + u15_size(cum)
            chosen.append((origin, cum))
        tracks = [(t, n, time) for t, (n, time) in sorted(self.tracks.items())]
        tracks = tracks[: max(0, (space - used) // 3)]  # 3 B per track
        self._rotate += len(chosen)
        if not chosen and not tracks:
            return None
        return DigestRecord(tuple(chosen), tuple(tracks))

    def sent(self, now: float) -> None:
        self.last_digest = now
        self.changed = False
        self.nudge_at = None

    def overheard(self, origin: int, seq: int, now: float) -> None:
        """Somebody just sent (origin, seq): count it as offered to every peer."""
        self._mark((BROADCAST, origin, seq), now)

    def _mark(self, key: tuple[int, int, int], now: float) -> None:
        if key not in self._offered and len(self._offered) >= MAX_OFFERED:
            del self._offered[next(iter(self._offered))]
        self._offered[key] = now

    def _recent(self, key: tuple[int, int, int], now: float) -> bool:
        last = self._offered.get(key)
        return last is not None and now - last < self.config.reoffer_interval

    def missing(self, peer: int, origin: int, peer_cum: int, now: float) -> list[Unit]:
        """Units of ``origin`` the peer lacks, lowest first, rate limited."""
        wanted = sorted(s for (o, s) in self.history if o == origin and s > peer_cum)
        offers: list[Unit] = []
        for seq in wanted:
            if self._recent((peer, origin, seq), now) or self._recent((BROADCAST, origin, seq),
                                                                       now):
                continue
            self._mark((peer, origin, seq), now)
            offers.append(self.history[(origin, seq)])
            if len(offers) >= REOFFER_BURST:
                break
        return offers

    def skips_for(self, origin: int, peer_cum: int, held: Iterable[int]) -> list[int]:
        """Abandoned seqs of ``origin`` that a peer holding ``held`` waits for."""
        have = set(held)
        top = peer_cum + min(MAX_WINDOW, 8 * MAX_BITMAP_BYTES + 1)
        return sorted(s for (o, s) in self.abandoned
                      if o == origin and peer_cum < s <= top and s not in have)

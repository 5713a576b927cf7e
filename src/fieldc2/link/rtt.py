"""Adaptive retransmission timeout: per-peer round-trip estimation (RFC 6298).

A fixed timeout scaled to the link (``LinkConfig.rto``, ~50 s on LoRa
LongFast) makes a lost FLASH wait a minute even when the relay's acks come
back in ~5-7 s; halving it for urgent classes made the channel worse after a
healed partition, when acks are slow because everybody sends at once.  So the
timeout follows what each peer's acks actually take: Jacobson/Karels smoothed
RTT and variance, ``RTO = SRTT + 4 * RTTVAR``, clamped between a floor the
link's physics allow (the ack's wait, the frame out and the ack back) and the
backoff ceiling (``LinkConfig.max_rto``).  Karn's rule: a unit sent more than
once gives no sample (which copy was acked is unknown).  Until a peer has
given a sample, the configured fixed ``rto`` applies.

Pure state, no clock: callers pass measured seconds.
"""

from __future__ import annotations

import msgspec

#: Gain of a new sample in the smoothed RTT (RFC 6298 alpha, 1/8): a single
#: slow ack after a collision does not swing the estimate.
SRTT_GAIN = 0.125
#: Gain of a new deviation in RTTVAR (RFC 6298 beta, 1/4).
RTTVAR_GAIN = 0.25
#: Deviations added to SRTT (RFC 6298 K): a congested channel's spread in ack
#: times raises the timeout before retransmissions add to the congestion.
VARIANCE_WEIGHT = 4.0
#: Peers tracked at once: one per slot is the most a channel has (254 + the
#: "any peer" key for broadcasts); the least recently sampled is forgotten.
MAX_PEERS = 256
#: Doublings remembered per peer: 2 ** 6 times a ~10 s floor is past any
#: ``max_rto``, which clamps the timeout anyway.
MAX_DOUBLINGS = 6
#: Samples longer than this, seconds, are discarded: an ack that late covered
#: a unit through a digest after a partition and says nothing about the link.
MAX_SAMPLE = 3600.0


class RttState(msgspec.Struct, array_like=True):
    """One peer's estimate, seconds."""

    srtt: float
    rttvar: float
    backoff: int = 0
    """Timeouts since the last sample, as doublings (:meth:`RttTable.timed_out`)."""


def _estimate(state: RttState) -> float:
    return state.srtt + VARIANCE_WEIGHT * state.rttvar


class RttTable:
    """Per-peer SRTT / RTTVAR; see the module docstring."""

    def __init__(self) -> None:
        self.peers: dict[int, RttState] = {}

    def sample(self, peer: int, rtt: float) -> None:
        """A round trip of ``rtt`` seconds to ``peer``'s ack (a unit sent once)."""
        if not 0.0 <= rtt <= MAX_SAMPLE:
            return
        state = self.peers.pop(peer, None)  # re-inserted last: most recently sampled
        if state is None:
            if len(self.peers) >= MAX_PEERS:
                del self.peers[next(iter(self.peers))]
            state = RttState(rtt, rtt / 2.0)
        else:
            state.rttvar += RTTVAR_GAIN * (abs(state.srtt - rtt) - state.rttvar)
            state.srtt += SRTT_GAIN * (rtt - state.srtt)
            state.backoff = 0
        self.peers[peer] = state

    def rto(self, peer: int, *, default: float, floor: float, ceiling: float) -> float:
        """The first retransmission timeout towards ``peer``: ``default`` until it
        gave a sample, then ``SRTT + 4 * RTTVAR`` within [floor, ceiling]."""
        state = self.peers.get(peer)
        if state is None:
            return min(default, ceiling)
        return min(max(_estimate(state), floor), ceiling)

    def level(self, peer: int) -> int:
        """Doublings a new unit to ``peer`` starts with (see :meth:`timed_out`)."""
        state = self.peers.get(peer)
        return 0 if state is None else state.backoff

    def timed_out(self, peer: int, doublings: int) -> None:
        """A unit to ``peer`` went again after ``doublings`` timeouts.  RFC 6298
        keeps the backed-off timeout until a fresh sample: after a healed
        partition the acks are slow because everybody sends, and a new unit
        must not start from the quiet channel's estimate."""
        state = self.peers.get(peer)
        if state is not None:
            state.backoff = max(state.backoff, min(doublings, MAX_DOUBLINGS))

    def dump(self) -> dict[int, RttState]:
        return dict(self.peers)

    def load(self, peers: dict[int, RttState]) -> None:
        self.peers = {}
        for peer, state in peers.items():
            if len(self.peers) < MAX_PEERS and state.srtt >= 0.0 and state.rttvar >= 0.0:
                self.peers[peer] = state

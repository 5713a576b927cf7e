"""A seeded field exercise on virtual time: N nodes and a relay on one simulated channel.

Everything real runs: each participant is a
:class:`~fieldc2.link.radio.RadioEndpoint` (compact codec, link endpoint,
AES-CCM frame sealer with its own counter store, frame opener) in a
:class:`~fieldc2.sim.exercise_station.Station` on a port of the seeded
:class:`~fieldc2.sim.network.Network`; every node shares the channel key.
The script, drawn from the seed before the run starts:

* every node reports its position every ``report_interval`` (seeded walkers);
* texts and reports (ROUTINE/PRIORITY), IMMEDIATE reports and FLASH texts
  from nodes to the relay, as Poisson streams per node;
* IMMEDIATE orders from the relay, Ed25519-signed by the command post key
  and verified by the node, which answers with an OrderStatus (PRIORITY,
  as the link's handling table sends statuses, to the relay);
* a few server-side tracks the relay pushes down as ROUTINE positions, so
  orders always compete with position load at the relay;
* loss, duplication, jitter and partitions from the simulator; optionally a
  hostile transmitter (:mod:`fieldc2.sim.exercise_attack`) and a relay
  restart from its persisted state.

No new message is submitted in the last ``quiet_tail`` seconds, so what was
sent has time to arrive; positions go on to the end.  What is measured, and
how (the ledger, the relay's order watch), is in
:mod:`fieldc2.sim.exercise_metrics` and :mod:`fieldc2.sim.exercise_report`.
:func:`run_exercise` returns an :class:`~fieldc2.sim.exercise_metrics.ExerciseResult`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldc2.crypto.radio_keys import ChannelKey
from fieldc2.crypto.signing import KeyRing, Signer
from fieldc2.errors import ConfigError
from fieldc2.link.profiles import LinkProfile, profile
from fieldc2.link.types import LinkConfig
from fieldc2.model.precedence import Precedence
from fieldc2.model.radio import ReportKind
from fieldc2.protocol.compact import ChannelContext
from fieldc2.sim.clock import VirtualClock
from fieldc2.sim.exercise_apps import (
    COMMAND_POST,
    RELAY,
    SERVER_TRACK_BASE,
    App,
    NodeApp,
    RelayApp,
)
from fieldc2.sim.exercise_attack import ATTACKS, Adversary
from fieldc2.sim.exercise_metrics import ExerciseResult, Ledger
from fieldc2.sim.exercise_report import OrderWatch, custody, summarise
from fieldc2.sim.exercise_station import Station
from fieldc2.sim.exercise_world import Area, Walker
from fieldc2.sim.network import Network

CHANNEL = "exercise"
#: Unix time of exercise second 0: the channel epoch (a fixed date, so runs repeat).
EXERCISE_EPOCH = 1_790_000_000
#: Highest slot a participant or track may have (255 means everybody).
MAX_SLOT = 254
#: Message ids are 16-bit on the wire (report and order ids).
MAX_MESSAGE_ID = 0xFFFF


@dataclass(frozen=True)
class PartitionSpec:
    """A scheduled cut: ``"relay"`` isolates the relay, ``"half"`` the first half of the nodes."""

    start: float
    end: float
    cut: str = "relay"

    def __post_init__(self) -> None:
        if self.cut not in ("relay", "half") or not 0 <= self.start < self.end:
            raise ConfigError(f"bad partition {self}: cut is relay or half, start < end")


@dataclass(frozen=True)
class Scenario:
    """One exercise.  Rates are per node per hour unless said otherwise."""

    seed: int = 1
    nodes: int = 20
    link: str = "lora-long-fast"
    """Link profile name (:data:`fieldc2.link.profiles.PROFILES`)."""
    duration: float = 3600.0
    loss: float = 0.0
    duplicate: float = 0.0
    jitter: float = 0.0
    """Extra random delay per copy, seconds: reorders frames."""
    report_interval: float = 30.0
    text_rate: float = 2.0
    report_rate: float = 1.0
    immediate_rate: float = 0.5
    flash_rate: float = 0.5
    order_rate: float = 20.0
    """Orders per hour from the relay, to random nodes."""
    server_tracks: int = 4
    partitions: tuple[PartitionSpec, ...] = ()
    attack_rate: float = 0.0
    """Hostile frames per hour, cycling through the attack kinds."""
    restart_at: float | None = None
    """Exercise time at which the relay restarts from its snapshot."""
    restart_keeps_codec: bool = True
    """Restore the relay's codec context (fix history) from its snapshot, as
    ``RadioEndpoint.restore`` does.  False measures the alternative: the
    nodes' deltas name bases the new relay lacks until its digest acks
    fixes it holds again, and the picture stalls meanwhile."""
    quiet_tail: float = 600.0
    fresh_age: float = 60.0
    """A track is fresh while the relay's fix is at most this old (2 intervals)."""
    link_overrides: dict[str, object] = field(default_factory=dict)
    """Extra :class:`LinkConfig` fields for every station (tuning experiments)."""

    def __post_init__(self) -> None:
        if not 1 <= self.nodes < SERVER_TRACK_BASE:
            raise ConfigError(f"an exercise has 1..{SERVER_TRACK_BASE - 1} field nodes")
        if not 0 <= self.server_tracks <= MAX_SLOT - SERVER_TRACK_BASE:
            raise ConfigError(f"at most {MAX_SLOT - SERVER_TRACK_BASE} server tracks")
        if self.duration <= 0 or self.report_interval <= 0:
            raise ConfigError("duration and report interval must be positive")


class Exercise:
    """The built world of one scenario; :meth:`run` plays it."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = s = scenario
        self.rng = random.Random(s.seed)
        self.clock = VirtualClock()
        self.net = Network(self.clock, s.seed)
        self.profile: LinkProfile = profile(s.link)
        self.net.add_channel(CHANNEL, self.profile, loss=s.loss, duplicate=s.duplicate,
                             jitter=s.jitter)
        self.area = Area(46.948, 7.447)
        self.ledger = Ledger()
        self.key = ChannelKey(CHANNEL, 0, self.rng.randbytes(16))
        self._ids = iter(range(1, MAX_MESSAGE_ID + 1))
        self.apps: dict[int, App] = {}
        self.relay = self._relay()
        self.nodes = [self._node(slot) for slot in range(1, s.nodes + 1)]
        self.adversary = (Adversary(self.net, CHANNEL, CHANNEL, random.Random(s.seed + 1))
                          if s.attack_rate else None)

    def _station(self, slot: int) -> Station:
        name = "relay" if slot == RELAY else f"n{slot}"
        config = LinkConfig.for_profile(slot, self.profile, **self.scenario.link_overrides)
        return Station(name, config, self.profile, self.key, self.net, CHANNEL, self._ctx,
                       epoch=EXERCISE_EPOCH, rng=random.Random(self.rng.random()))

    def _ctx(self) -> ChannelContext:
        return ChannelContext(EXERCISE_EPOCH, self.area.lat0, self.area.lon0)

    def _relay(self) -> RelayApp:
        private = self._private_key()
        ring = KeyRing(self.key.channel_id)
        ring.add(COMMAND_POST, private.public_key(), RELAY)
        self.keyring = ring
        signer = Signer(private, channel_id=self.key.channel_id, originator=COMMAND_POST)
        tracks = {SERVER_TRACK_BASE + i: Walker(self.rng, self.scenario.duration)
                  for i in range(self.scenario.server_tracks)}
        station = self._station(RELAY)
        station.observer = OrderWatch(self.key, self.ledger)
        app = RelayApp(station, self.ledger, self.area, signer, tracks,
                       report_interval=self.scenario.report_interval)
        self.apps[RELAY] = app
        return app

    def _private_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))

    def _node(self, slot: int) -> NodeApp:
        app = NodeApp(self._station(slot), self.ledger, self.area,
                      Walker(self.rng, self.scenario.duration), self.keyring,
                      report_interval=self.scenario.report_interval)
        self.apps[slot] = app
        return app

    # -- the script ----------------------------------------------------------------------

    def _every(self, start: float, period: float, action: Callable[[], None]) -> None:
        def tick() -> None:
            action()
            if self.clock.now() + period < self.scenario.duration:
                self.clock.call_later(period, tick)
        self.clock.call_at(start, tick)

    def _poisson(self, per_hour: float, action: Callable[[int], None]) -> None:
        if per_hour <= 0:
            return
        end = self.scenario.duration - self.scenario.quiet_tail
        t = self.rng.expovariate(per_hour / 3600.0)
        while t < end:
            self.clock.call_at(t, self._with_id, action)
            t += self.rng.expovariate(per_hour / 3600.0)

    def _with_id(self, action: Callable[[int], None]) -> None:
        action(next(self._ids))

    def _script(self) -> None:
        s = self.scenario
        for node in self.nodes:
            self._every(self.rng.uniform(0, s.report_interval), s.report_interval,
                        node.report_position)
            for prec in (Precedence.ROUTINE, Precedence.PRIORITY):
                self._poisson(s.text_rate / 2, partial(node.text, precedence=prec))
                self._poisson(s.report_rate / 2, partial(node.report, precedence=prec,
                                                         kind=ReportKind.SPOT))
            self._poisson(s.immediate_rate, partial(node.report, precedence=Precedence.IMMEDIATE,
                                                    kind=ReportKind.CASUALTY))
            self._poisson(s.flash_rate, partial(node.text, precedence=Precedence.FLASH))
        self._poisson(s.order_rate, self._random_order)
        if s.server_tracks:
            self._every(0.0, s.report_interval, self.relay.push_server_tracks)
        for spec in s.partitions:
            self._partition(spec)
        if self.adversary is not None:
            self._attacks()
        if s.restart_at is not None:
            self.clock.call_at(s.restart_at, self._restart_relay)

    def _random_order(self, n: int) -> None:
        self.relay.order(n, self.rng.choice(self.nodes).slot)

    def _partition(self, spec: PartitionSpec) -> None:
        if spec.cut == "relay":
            self.net.isolate("relay", spec.start, spec.end)
        else:
            half = [f"n{node.slot}" for node in self.nodes[: len(self.nodes) // 2]]
            self.net.partition(half, None, spec.start, spec.end)

    def _attacks(self) -> None:
        adversary = self.adversary
        assert adversary is not None
        rate = self.scenario.attack_rate / 3600.0
        t, i = self.rng.expovariate(rate), 0
        while t < self.scenario.duration - self.scenario.quiet_tail:
            self.clock.call_at(t, adversary.attack, ATTACKS[i % len(ATTACKS)])
            t, i = t + self.rng.expovariate(rate), i + 1

    def _restart_relay(self) -> None:
        """Persist the relay's radio state, throw the stack away, rebuild it."""
        station = self.relay.station
        before = custody(station)
        station.restore(station.snapshot(), keep_codec=self.scenario.restart_keeps_codec)
        after = custody(station)
        self.ledger.restarts.append(self.clock.now())
        self.ledger.restart_lost += len(before[0] - after[0]) + sum(
            1 for origin, cum in before[1].items() if after[1].get(origin, -1) < cum)

    # -- running -------------------------------------------------------------------------

    def run(self) -> ExerciseResult:
        self._script()
        self.clock.run_until(self.scenario.duration)
        injected = self.adversary.injected if self.adversary else {}
        return summarise(self, injected)


def run_exercise(scenario: Scenario) -> ExerciseResult:
    """Build and play ``scenario``; the figures and the ledger."""
    return Exercise(scenario).run()

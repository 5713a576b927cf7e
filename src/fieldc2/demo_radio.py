"""``fieldc2 demo --radio N``: a LoRa segment beside the demo's TCP teams.

Everything is the real thing except the air and the satellites: one relay
(:class:`~fieldc2.relay.Relay`, slot 0) connected to the demo's command post
over TCP, and N field nodes (:class:`~fieldc2.node.Node` around a
:class:`~fieldc2.node.NodeCore`), each on its own :class:`UdpRadio` socket
on 127.0.0.1, framed, sealed and paced by airtime on the LoRa LongFast
profile exactly as ``fieldc2 relay``/``fieldc2 node`` do.  The air is a set
of UDP peers (every station sends to every other); the GNSS is a walker near
the incident's staging area (:class:`~fieldc2.sim.units.SquareWalk`).

The channel key is ``<data_dir>/radio/demo.chan`` (made on first run, as
``fieldc2 radio new demo`` would), and the stations keep their state under
``<data_dir>/radio/state``: the frame counters are half of every nonce, so
they must survive runs that reuse the key.

Trust is set up as in the field: the roster carries the command post's
order-signing key (slot ``CP_SLOT``) and each node's FLASH key.  The first
node takes over the second device of the first team that has two (in the
example, ALPHA's ``ANDROID-a1f3c3``): its orders come signed over the radio,
the node checks the signature and its simulated operator acknowledges the
verified ones, so the orders panel shows a radio device reach acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from fieldc2 import gnss
from fieldc2.config import Config
from fieldc2.crypto.radio_keys import ChannelKey
from fieldc2.demo import DemoContext, DemoOptions, run_demo
from fieldc2.demo_units import BASE
from fieldc2.errors import ConfigError
from fieldc2.link.profiles import LORA_LONG_FAST
from fieldc2.model.radio import RELAY_SLOT, Roster, RosterEntry
from fieldc2.node import NODE_KEY_FILE, Node, NodeCore, NodeSettings, node_signer
from fieldc2.plan.model import Incident
from fieldc2.protocol.compact import ChannelContext
from fieldc2.radio_channels import ChannelDirectory
from fieldc2.relay import Relay, RelaySettings
from fieldc2.sim.units import SquareWalk
from fieldc2.transport.radio_station import RadioStation, RecordSink
from fieldc2.transport.radio_udp import UdpRadio

log = logging.getLogger("fieldc2.demo.radio")

CHANNEL = "demo"
#: The command post's roster slot, far above the nodes' (1..N): the relay
#: gives server-side tracks the lowest free slots as it meets them.
CP_SLOT = 200
#: Nodes the segment runs at most: slots 1..MAX_NODES, below ``CP_SLOT``, and
#: a LongFast channel carries a few dozen reporting nodes at best.
MAX_NODES = 32
#: The channel's time origin (2026-01-01T00:00Z): fixed, because the stations'
#: persisted codec history is relative to it.
EPOCH = 1_767_225_600
RELAY_UID, RELAY_CALLSIGN = "fieldc2-demo-relay", "RELAY-DEMO"
#: Seconds between simulated GNSS fixes (receivers give 1 Hz).
FIX_INTERVAL_S = 1.0
#: How a demo node reports: sooner than the field default (60 s) so the map
#: moves, yet at most one position per 10 s per node on a LongFast channel.
NODE_REPORTING = {"report_interval": 30.0, "move_threshold": 15.0, "min_interval": 10.0}
#: Seconds the simulated operator takes to acknowledge a verified order.
ACK_DELAY_S = 1.5


@dataclass
class RadioSegment:
    """The :data:`~fieldc2.demo.ActorFactory` for ``--radio N``; what it saw is kept
    for the closing lines and the tests."""

    count: int
    nodes: list[Node] = field(default_factory=list)
    relay: Relay | None = None
    reached: set[str] = field(default_factory=set)
    """Node uids whose positions reached the command post's picture."""
    acked: list[str] = field(default_factory=list)
    """Acknowledgements the operators sent, as ``"<node uid> <order id>"``."""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if not 0 < self.count <= MAX_NODES:
            raise ConfigError(f"--radio takes 1..{MAX_NODES} nodes")

    async def __call__(self, ctx: DemoContext) -> list[asyncio.Task[None]]:
        members = node_members(self.count, ctx.incident)
        # The TCP device whose uid a node takes over must never connect, or
        # two connections would claim one uid: the demo skips claimed uids.
        ctx.claimed.update(entry.uid for entry in members)
        return [asyncio.create_task(self._run(ctx, members), name="demo radio")]

    async def _run(self, ctx: DemoContext, members: list[RosterEntry]) -> None:
        post, self._stop = ctx.post, ctx.stop
        base = post.config.data_dir / "radio"
        key = channel_key(base)
        state = base / "state"
        lat0, lon0 = centre(ctx.incident)
        public = {e.uid: node_signer(state / e.uid / NODE_KEY_FILE, e.uid) for e in members}
        roster_entries = [RosterEntry(slot=RELAY_SLOT, uid=RELAY_UID, callsign=RELAY_CALLSIGN)]
        roster_entries += [RosterEntry(slot=e.slot, uid=e.uid, callsign=e.callsign, team=e.team,
                                       public_key=public[e.uid][1]) for e in members]
        if post.orders is not None:
            roster_entries.append(RosterEntry(slot=CP_SLOT, uid=post.orders.sender.uid,
                                              callsign="CP",
                                              public_key=post.orders.signer.public_key))
        radios = await open_air(len(members) + 1)

        def station(i: int, slot: int, who: str) -> Callable[..., RadioStation]:
            def make(on_record: RecordSink,
                     app_state: Callable[[], bytes] | None = None) -> RadioStation:
                return RadioStation(radios[i], keys=[key], slot=slot, profile=LORA_LONG_FAST,
                                    context=ChannelContext(EPOCH, lat0, lon0),
                                    on_record=on_record, state_dir=state / who,
                                    app_state=app_state)
            return make

        settings = RelaySettings(host=post.config.bind, port=post.tcp_port, uid=RELAY_UID,
                                 callsign=RELAY_CALLSIGN, lat=lat0, lon=lon0)
        async with contextlib.AsyncExitStack() as stack:
            self.relay = await stack.enter_async_context(
                Relay(settings, Roster(roster_entries), station(0, RELAY_SLOT, "relay")))
            for i, entry in enumerate(members, start=1):
                core = NodeCore(NodeSettings(slot=entry.slot, channel_id=key.channel_id,
                                             **NODE_REPORTING),
                                Roster(roster_entries), public[entry.uid][0])
                node = Node(core, station(i, entry.slot, entry.uid), show=lambda _: None)
                node.show = self._operator(node, entry)
                await stack.enter_async_context(node)
                node.follow_gnss(walk(lat0, lon0, ctx.stop))
                self.nodes.append(node)
            log.info("radio segment: relay and %d LongFast nodes on UDP", len(members))
            await self._watch(ctx, {e.uid for e in members})

    def _operator(self, node: Node, entry: RosterEntry) -> Callable[[str], None]:
        """What the operator at a node reads; verified orders are acknowledged."""
        loop = asyncio.get_running_loop()

        def show(line: str) -> None:
            log.info("%s: %s", entry.callsign, line)
            words = line.split()
            if words[:1] == ["ORDER"] and "signature verified)" in line:
                loop.call_later(ACK_DELAY_S, self._ack, node, entry.uid, words[1])
        return show

    def _ack(self, node: Node, uid: str, order_id: str) -> None:
        if self._stop.is_set():  # the station is closing: nobody is at the radio
            return
        answer = node.command(f"ack {order_id}")
        log.info("%s: %s", uid, answer)
        self.acked.append(f"{uid} {order_id}")

    async def _watch(self, ctx: DemoContext, uids: set[str]) -> None:
        """Note which nodes' positions are in the post's picture, until stop."""
        while not ctx.stop.is_set():
            self.reached |= {uid for uid, _ in ctx.post.picture.entries} & uids
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.stop.wait(), 0.5)


def node_members(count: int, incident: Incident | None) -> list[RosterEntry]:
    """The nodes' roster entries (slots 1..count): first a team device taken
    over, when the incident has a team with two devices, then radio-only nodes."""
    members: list[RosterEntry] = []
    team = next((t for t in (incident.teams if incident else ()) if len(t.tak_uids) > 1), None)
    if team is not None:
        n = len(team.tak_uids)
        members.append(RosterEntry(slot=1, uid=team.tak_uids[-1],
                                   callsign=f"{team.callsign}-{n}", team="Cyan"))
    while len(members) < count:
        slot = len(members) + 1
        members.append(RosterEntry(slot=slot, uid=f"LORA-NODE-{slot}",
                                   callsign=f"LORA-{slot}", team="Cyan"))
    return members


def channel_key(base: Path) -> ChannelKey:
    """The demo channel's current key, created on first run."""
    directory = ChannelDirectory(base)
    if CHANNEL not in directory.names():
        directory.create(CHANNEL)
    return directory.current(CHANNEL)


def centre(incident: Incident | None) -> tuple[float, float]:
    """(lat, lon) the nodes walk around: the staging area, else the demo's base."""
    if incident is not None:
        where = incident.staging or (incident.teams[0].position if incident.teams else None)
        if where is not None:
            return where[1], where[0]
    return BASE


async def open_air(count: int) -> list[UdpRadio]:
    """``count`` UDP radios on ephemeral ports, each sending to all the others."""
    radios = [await UdpRadio.open("127.0.0.1", 0, peers=["127.0.0.1:9"]) for _ in range(count)]
    for radio in radios:  # the ports are known only now: one shared "channel"
        radio.targets[:] = [other.local for other in radios if other is not radio]
    return radios


async def walk(lat: float, lon: float, stop: asyncio.Event) -> AsyncIterator[gnss.Fix]:
    """A simulated receiver: 1 Hz fixes of an expanding-square walk near (lat, lon)."""
    walker = SquareWalk(lat, lon)
    while not stop.is_set():
        now = time.time()
        fix = walker.fix(now)
        yield gnss.Fix(time_of_day=now % 86_400, time=now, lat=fix.lat, lon=fix.lon,
                       alt=None, speed=fix.speed, course=fix.course, satellites=9, hdop=0.9)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FIX_INTERVAL_S)


async def radio_demo_main(config: Config, options: DemoOptions, radio: int) -> None:
    """``fieldc2 demo --radio N``."""
    segment = RadioSegment(radio)
    await run_demo(config, options, extra_actors=[segment])
    print(f"radio: {len(segment.reached)} of {radio} nodes in the picture, "
          f"{len(segment.acked)} orders acknowledged over the radio", flush=True)

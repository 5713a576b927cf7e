"""One radio participant of an exercise: a RadioEndpoint on a simulated port.

A :class:`Station` is the thin shell of style rule 3 around the sans-I/O
:class:`~fieldc2.link.radio.RadioEndpoint` (compact codec + link layer +
AES-CCM frame security): the simulated port pulls a frame when it gets the
medium (``on_idle`` -> ``next_frame``), a heard frame goes to
``receive_frame`` and the records it yields to the application, and one
timer per station is re-armed from ``get_timer()``.

The radio stack runs on Unix time (the opener's epoch deadlines and the
codec's fix times are wall-clock), the simulator on exercise seconds;
``epoch`` converts.  Restart: :meth:`Station.snapshot` captures what a device
persists (:meth:`RadioEndpoint.snapshot`: link state, opener state and the
codec's fix history; plus the sealer's next counter) and
:meth:`Station.restore` builds a new stack from it on the same port, as a
rebooted relay would (optionally dropping the fix history, to measure it).
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from dataclasses import dataclass

from fieldc2.crypto.radio import FrameOpener, FrameSealer
from fieldc2.crypto.radio_keys import ChannelKey, MemoryCounterStore
from fieldc2.errors import FrameRejected, RadioFrameError
from fieldc2.link.endpoint import LinkEndpoint
from fieldc2.link.profiles import LinkProfile
from fieldc2.link.radio import RadioEndpoint
from fieldc2.link.types import LinkConfig, LinkEvent
from fieldc2.model.radio import Record
from fieldc2.protocol.compact import ChannelContext
from fieldc2.sim.clock import Timer, VirtualClock
from fieldc2.sim.medium import Port
from fieldc2.sim.network import Network

#: When the endpoint says work is due now but yields no frame, look again
#: this much later instead of spinning at one instant.
IDLE_RETRY_S = 0.5

RecordSink = Callable[[list[Record], list[LinkEvent], float], None]
"""``sink(records, events, now)``: what the application hears (exercise seconds)."""
FrameObserver = Callable[["Station", float, bytes | None], None]
"""Called before (frame None) and after each frame the station is asked for."""


@dataclass(frozen=True)
class StationSnapshot:
    """What a device keeps across a restart."""

    radio: bytes
    next_counter: int


class Station:
    """RadioEndpoint on one simulated port; see the module docstring."""

    def __init__(self, name: str, config: LinkConfig, profile: LinkProfile, key: ChannelKey,
                 net: Network, channel: str, ctx: Callable[[], ChannelContext], *,
                 epoch: float, rng: random.Random) -> None:
        self.name = name
        self.slot = config.slot
        self.config = config
        self.profile = profile
        self.clock: VirtualClock = net.clock
        self.epoch = epoch
        """Unix seconds at exercise time 0."""
        self.sink: RecordSink = lambda records, events, now: None
        self.heard: Callable[[int, float], None] = lambda sender, now: None
        """Called with the (authenticated) sender of every frame accepted."""
        self.observer: FrameObserver | None = None
        self.rejected: collections.Counter[str] = collections.Counter()
        """Frames refused, by reason: the opener's (with "reflected"), plus "body"."""
        self._key = key
        self._rng = rng
        self._new_ctx = ctx
        self._timer: Timer | None = None
        self.radio = self._build(MemoryCounterStore(), None)
        self.port: Port = net.attach(name, channel, self._on_frame, on_idle=self._on_idle)

    def _build(self, counters: MemoryCounterStore, snap: StationSnapshot | None,
               keep_codec: bool = True) -> RadioEndpoint:
        self.counters = counters
        link = LinkEndpoint(self.config, rng=self._rng, profile=self.profile)
        opener = FrameOpener([self._key], own=self.slot)
        sealer = FrameSealer(self._key, self.slot, counters)
        radio = RadioEndpoint(link, sealer, opener, self._new_ctx())
        if snap is not None:
            radio.restore(snap.radio)
            if not keep_codec:
                radio.context = self._new_ctx()
        return radio

    @property
    def link(self) -> LinkEndpoint:
        return self.radio.link

    @property
    def unix(self) -> float:
        return self.epoch + self.clock.now()

    def kick(self) -> None:
        """Something may be sendable: contend for the medium if due, re-arm the timer."""
        when = self.radio.get_timer()
        if when is not None and when <= self.unix:
            self.port.wake()  # on_idle asks for a frame when the medium is ours
            return  # and re-arms the timer if none comes
        self._arm(when)

    # -- persistence -------------------------------------------------------------------

    def snapshot(self) -> StationSnapshot:
        return StationSnapshot(self.radio.snapshot(), self.counters.next)

    def restore(self, snap: StationSnapshot, *, keep_codec: bool = True) -> None:
        """Throw the running stack away and build a new one from ``snap`` (a reboot).

        ``keep_codec``: restore the fix history too (as a device does); False
        starts from an empty one, to measure what the history is worth."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.radio = self._build(MemoryCounterStore(snap.next_counter), snap, keep_codec)
        self.kick()

    # -- the shell ---------------------------------------------------------------------

    def _on_idle(self, port: Port, now: float) -> bytes | None:
        self._run_timers()
        if self.observer is not None:
            self.observer(self, now, None)
        frame = self.radio.next_frame(self.unix)
        if frame is None:
            self._arm(self.radio.get_timer())
            return None
        if self.observer is not None:
            self.observer(self, now, frame)
        return frame

    def _on_frame(self, frame: bytes, now: float) -> None:
        malformed = self.radio.opener.stats.rejected["malformed"]
        try:
            records = self.radio.receive_frame(frame, self.unix)
        except FrameRejected as exc:
            self.rejected[exc.reason] += 1
            return
        except RadioFrameError:
            opener_refused = self.radio.opener.stats.rejected["malformed"] > malformed
            self.rejected["malformed" if opener_refused else "body"] += 1
            return
        assert self.radio.last_sender is not None
        self.heard(self.radio.last_sender, now)
        events = self.radio.drain_events()
        if records or events:
            self.sink(records, events, now)
        self.kick()

    def _run_timers(self) -> None:
        timer = self.radio.get_timer()
        if timer is not None and timer <= self.unix:
            self.radio.handle_timer(self.unix)
            events = self.radio.drain_events()
            if events:
                self.sink([], events, self.clock.now())

    def _arm(self, when: float | None) -> None:
        """One timer at the endpoint's next deadline ``when`` (Unix); if that is
        already past (the endpoint just declined to send), look again soon."""
        if when is None:
            return
        at = max(when - self.epoch, self.clock.now() + IDLE_RETRY_S) \
            if when <= self.unix else when - self.epoch
        if self._timer is not None and not self._timer.cancelled:
            if self._timer.when <= at:
                return
            self._timer.cancel()
        self._timer = self.clock.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._run_timers()
        self.kick()

"""Ports and media of the simulated network: who may transmit, and when.

A :class:`Medium` serialises transmissions: while one frame is on the air no
other port of that medium starts.  When it frees, one waiting port is chosen
(at random, from the network's seeded generator) and asked for a frame.
With collisions switched on (``contention_slots``), every waiting port draws
a backoff slot instead; ports that draw the same lowest slot start together
and every receiver that can hear more than one of them loses all of them
(no capture effect; the slot delay itself is not charged).

Two ways to feed a port:

* push: ``port.send(frame)`` puts the frame in the port's small transmit
  queue (``MAX_PORT_QUEUE``), as a radio's own buffer would;
* pull: attach with ``on_idle`` and call ``port.wake()`` when the link layer
  has something.  ``on_idle(port, now)`` is then called at the very moment the
  port may transmit, and returns the frame to send (or None: nothing after
  all).  The port keeps asking each time it gets the medium until it gets None,
  so precedence queues above decide at the last possible moment.

Transmissions start from a callback scheduled at the current instant, so
everything that happens at one instant is seen before the choice is made.
On a profile with a duty cycle the port keeps a :class:`DutyCycle`
(``port.duty``); a frame that does not fit the budget is held in the port
until it does, as EU868 firmware does (``stats.duty_deferrals`` counts this).
A pull-driven link layer should check ``port.duty`` before answering.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from fieldc2.errors import LinkError
from fieldc2.link.profiles import DutyCycle

if TYPE_CHECKING:
    from fieldc2.sim.clock import Timer
    from fieldc2.sim.network import Channel

#: Frames a port holds for transmission.  A radio buffers only a few; the
#: link layer keeps the real backlog so its precedence queues can reorder it.
MAX_PORT_QUEUE = 4

ReceiveCallback = Callable[[bytes, float], None]
"""``on_receive(frame, now)``: a frame was heard."""
IdleCallback = Callable[["Port", float], "bytes | None"]
"""``on_idle(port, now) -> frame | None``: the port may transmit now."""


@dataclass
class PortStats:
    """Counters of one port (or, summed, of one node)."""

    sent: int = 0
    """Frames this port put on the air."""
    sent_bytes: int = 0
    airtime: float = 0.0
    """Seconds this port spent transmitting."""
    received: int = 0
    """Copies handed to ``on_receive``, duplicates included."""
    duplicated: int = 0
    """Of ``received``, extra copies made by the duplication impairment."""
    lost: int = 0
    """Frames this port would have heard but lost to the loss impairment."""
    collided: int = 0
    """Frames this port could not hear because two or more started at once."""
    blocked: int = 0
    """Frames this port could not hear because of a partition."""
    duty_deferrals: int = 0
    """Times a frame waited because the duty-cycle budget was spent."""

    def add(self, other: PortStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class Medium:
    """What transmits one frame at a time: a radio channel, or one side of a full-duplex link."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.on_air: tuple[Port, ...] = ()
        """Ports transmitting now: none when idle, several only in a collision."""
        self._contenders: dict[Port, None] = {}  # ordered set: waiting ports
        self._grant_timer: Timer | None = None

    def contend(self, port: Port) -> None:
        """``port`` has something to send; transmit it when the medium is free."""
        self._contenders[port] = None
        if not self.on_air and self._grant_timer is None:
            clock = self.channel.net.clock
            self._grant_timer = clock.call_at(clock.now(), self._grant)

    def _pick(self) -> list[Port]:
        """Who starts next: one port; several that chose the same backoff slot collide."""
        waiting = list(self._contenders)
        if len(waiting) == 1:
            return waiting
        rng = self.channel.net.rng
        slots = self.channel.contention_slots
        if not slots:
            return [waiting[rng.randrange(len(waiting))]]
        drawn = [rng.randrange(slots) for _ in waiting]
        first = min(drawn)
        return [port for port, slot in zip(waiting, drawn, strict=True) if slot == first]

    def _take(self, port: Port, now: float) -> bytes | None:
        """The frame ``port`` sends now, or None (it leaves the contention)."""
        frame = port._next_frame(now)
        if frame is None or not port._within_duty(frame, now):
            del self._contenders[port]
            return None
        if not port._has_more():
            del self._contenders[port]
        return frame

    def _grant(self) -> None:
        self._grant_timer = None
        if self.on_air:
            return
        clock = self.channel.net.clock
        now = clock.now()
        while self._contenders:
            starting = [(port, frame) for port in self._pick()
                        if (frame := self._take(port, now)) is not None]
            if starting:
                self.on_air = tuple(port for port, _ in starting)
                end = self.channel._transmit(starting, now)
                clock.call_at(end, self._end)
                return

    def _end(self) -> None:
        self.on_air = ()
        if self._contenders:
            self._grant()


class Port:
    """One node's attachment to one channel.  Made by :meth:`Network.attach`."""

    def __init__(self, channel: Channel, medium: Medium, node_id: str,
                 on_receive: ReceiveCallback, *, on_idle: IdleCallback | None,
                 downlink: bool) -> None:
        self.channel = channel
        self.node_id = node_id
        self.on_receive = on_receive
        self.on_idle = on_idle
        self.downlink = downlink
        self.mtu = channel.profile.mtu(downlink=downlink)
        """Largest frame this port may send, bytes."""
        self.duty: DutyCycle | None = channel.profile.duty_budget()
        """This transmitter's regulatory budget, if the profile has one."""
        self.stats = PortStats()
        self._medium = medium
        self._queue: deque[bytes] = deque()
        self._wanting = False
        self._held = False

    def __repr__(self) -> str:
        return f"<Port {self.node_id} on {self.channel.name}>"

    @property
    def queued(self) -> int:
        """Frames waiting in this port (pushed, or held for the duty cycle)."""
        return len(self._queue)

    @property
    def transmitting(self) -> bool:
        return self in self._medium.on_air

    @property
    def ready(self) -> bool:
        """True when a frame offered now would go on the air at once."""
        return not self._medium.on_air and not self._queue and not self._held

    def airtime(self, nbytes: int) -> float:
        """Seconds a frame of ``nbytes`` occupies this port's medium."""
        return self.channel.profile.airtime(nbytes)

    def send(self, frame: bytes) -> None:
        """Queue ``frame`` for transmission (push model).

        LinkError if it is empty, larger than :attr:`mtu`, or the queue is full."""
        self._check(frame)
        if len(self._queue) >= MAX_PORT_QUEUE:
            raise LinkError(f"{self!r}: transmit queue full ({MAX_PORT_QUEUE} frames)")
        self._queue.append(bytes(frame))
        if not self._held:
            self._medium.contend(self)

    def wake(self) -> None:
        """Ask ``on_idle`` for frames when this port next gets the medium (pull model)."""
        if self.on_idle is None:
            raise LinkError(f"{self!r}: wake() needs an on_idle callback")
        self._wanting = True
        if not self._held:
            self._medium.contend(self)

    def _check(self, frame: bytes) -> None:
        if not isinstance(frame, bytes | bytearray) or not frame:
            raise LinkError(f"{self!r}: a frame is non-empty bytes, not {type(frame)}")
        if len(frame) > self.mtu:
            raise LinkError(f"{self!r}: frame of {len(frame)} B exceeds the MTU of "
                            f"{self.mtu} B ({self.channel.profile.name})")

    def _has_more(self) -> bool:
        return bool(self._queue) or self._wanting

    def _next_frame(self, now: float) -> bytes | None:
        if self._queue:
            return self._queue.popleft()
        if not self._wanting or self.on_idle is None:
            return None
        frame = self.on_idle(self, now)
        if frame is None:
            self._wanting = False
            return None
        self._check(frame)
        return bytes(frame)

    def _within_duty(self, frame: bytes, now: float) -> bool:
        """True if ``frame`` may go now; otherwise hold it until the budget allows."""
        if self.duty is None:
            return True
        airtime = self.airtime(len(frame))
        if self.duty.can_send(airtime, now):
            return True
        when = self.duty.next_allowed(airtime, now)
        if when == math.inf:
            raise LinkError(f"{self!r}: a {len(frame)} B frame exceeds the whole duty budget")
        self.stats.duty_deferrals += 1
        self._queue.appendleft(frame)
        self._held = True
        self.channel.net.clock.call_at(when, self._release)
        return False

    def _release(self) -> None:
        self._held = False
        if self._has_more():
            self._medium.contend(self)

"""A hostile transmitter on the exercise channel: forgeries, bit flips, replays.

The adversary listens like any radio (it captures every frame it hears) and
at scripted times puts one hostile frame on the air with the push model:

``forged``   a frame sealed under a wrong key, claiming a real sender id and a
             counter just above one it heard: the tag check must refuse it;
``bitflip``  a captured frame with one bit flipped after the header: tag;
``replay``   a frame captured moments ago, sent again: receivers that heard
             the original refuse it as a replay (those that lost it take it
             once, which is harmless: it is authentic, and the link layer
             removes duplicates);
``stale``    the first frame heard of a sender whose counter has since moved
             more than the replay window (64) on (the counter's low bits
             are in the clear header): refused as out of window.
"""

from __future__ import annotations

import random

from fieldc2.crypto.radio import COUNTER_SPAN, WINDOW, FrameSealer, parse_header
from fieldc2.crypto.radio_keys import ChannelKey, MemoryCounterStore
from fieldc2.errors import LinkError, RadioFrameError
from fieldc2.sim.medium import Port
from fieldc2.sim.network import Network

ATTACKS = ("forged", "bitflip", "replay", "stale")


class Adversary:
    """See the module docstring."""

    def __init__(self, net: Network, channel: str, key_name: str, rng: random.Random) -> None:
        self.rng = rng
        self.injected: dict[str, int] = dict.fromkeys(ATTACKS, 0)
        self._wrong = ChannelKey(key_name, 0, bytes(rng.getrandbits(8) for _ in range(16)))
        self._latest: tuple[int, bytes] | None = None  # (sender, frame) heard last
        self._counter: dict[int, int] = {}  # sender -> low 12 counter bits last heard
        self._first: dict[int, tuple[int, bytes]] = {}  # sender -> its first frame heard
        self.port: Port = net.attach("adversary", channel, self._hear)

    def _hear(self, frame: bytes, now: float) -> None:
        try:
            _, sender, low = parse_header(frame)
        except RadioFrameError:
            return
        self._counter[sender] = low
        self._latest = (sender, frame)
        self._first.setdefault(sender, (low, frame))

    def attack(self, kind: str) -> None:
        """Put one frame of ``kind`` on the air, if something suitable was heard."""
        frame = self._frame(kind)
        if frame is None:
            return
        try:
            self.port.send(frame)
        except LinkError:
            return  # the radio's own buffer is full: this attempt is skipped
        self.injected[kind] += 1

    def _frame(self, kind: str) -> bytes | None:
        if self._latest is None:
            return None
        sender, frame = self._latest
        if kind == "forged":
            _, _, low = parse_header(frame)
            sealer = FrameSealer(self._wrong, sender, MemoryCounterStore(low + 1))
            return sealer.seal(bytes(self.rng.getrandbits(8) for _ in range(12)))
        if kind == "bitflip":
            flipped = bytearray(frame)
            flipped[self.rng.randrange(3, len(frame))] ^= 1 << self.rng.randrange(8)
            return bytes(flipped)
        if kind == "replay":
            return frame
        return self._stale()

    def _stale(self) -> bytes | None:
        """A captured frame whose sender has since sent well over a window's worth."""
        for sender, (low, frame) in self._first.items():
            if (self._counter[sender] - low) % COUNTER_SPAN > WINDOW:
                return frame
        return None

"""Incoming side: per-origin reliable streams, duplicate suppression, reassembly.

Every reliable unit (whole message or fragment) has a per-origin sequence
number.  A :class:`Stream` holds everything up to ``cum`` (delivered, or
skipped because its sender abandoned it) and a bounded window of units above
it; a unit is delivered when the gap before it closes, so the application sees
each reliable message exactly once and in per-origin order.  A fragmented
reliable message is reassembled as its fragments pass ``cum`` in order.

Unreliable fragments are reassembled in a small table with a timeout; losing
one loses the message (the next position supersedes it anyway).
"""

from __future__ import annotations

import msgspec

from fieldc2.link.body import SEQ_MODULUS
from fieldc2.link.types import LinkStats

#: Units held above a gap per origin.  Must cover what a sender has in flight
#: between acks; the ack bitmap describes 56 of them (body.MAX_BITMAP_BYTES).
MAX_WINDOW = 64
#: On first contact with an origin, units this far below the first one heard
#: are still awaited: they may be in flight or in retransmission (the first
#: frames were lost).  Older ones are history: re-offered or SKIPped.
JOIN_LOOKBACK = 32
#: Origins tracked.  Slots are one byte, so 255 is the most there can be.
MAX_ORIGINS = 255
#: Unreliable messages being reassembled at once; the oldest is dropped when a
#: new one starts beyond this (a lost fragment must not pin memory).
MAX_REASSEMBLIES = 16
#: Largest reassembled message, bytes: 255 fragments of an Iridium body.
MAX_MESSAGE_BYTES = 64 * 1024


def unwrap(wire: int, ref: int) -> int:
    """The sequence number congruent to ``wire`` (mod 2**15) nearest to ``ref``."""
    base = ref - SEQ_MODULUS // 2
    return base + (wire - base) % SEQ_MODULUS


class Held(msgspec.Struct, frozen=True):
    """A unit received above the gap (``payload`` None: skipped by its sender)."""

    precedence: int
    dest: int
    sender: int
    payload: bytes | None
    index: int = 0
    count: int = 1


class Stream(msgspec.Struct):
    """What this endpoint holds of one origin's reliable stream."""

    cum: int
    held: dict[int, Held] = {}
    partial: list[bytes] = []
    """Chunks of the fragmented message being reassembled in order."""

    def has(self, seq: int) -> bool:
        return seq <= self.cum or seq in self.held

    def bitmap(self) -> int:
        """Bit i set when seq cum+2+i is held (the ack's selective part)."""
        bits = 0
        for seq in self.held:
            offset = seq - self.cum - 2
            if 0 <= offset < 56:
                bits |= 1 << offset
        return bits


class Ready(msgspec.Struct, frozen=True):
    """A whole reliable message that just became deliverable (in order)."""

    seq: int
    held: Held
    payload: bytes


class Inbox:
    """Per-origin streams plus the unreliable reassembly table."""

    def __init__(self, stats: LinkStats) -> None:
        self.stats = stats
        self.streams: dict[int, Stream] = {}
        self._partials: dict[tuple[int, int], tuple[float, int, dict[int, bytes]]] = {}

    def stream(self, origin: int, seq: int) -> Stream | None:
        """The stream of ``origin``, started :data:`JOIN_LOOKBACK` below ``seq`` on
        first contact (a late joiner does not ask for all history)."""
        found = self.streams.get(origin)
        if found is None and len(self.streams) < MAX_ORIGINS:
            found = self.streams[origin] = Stream(cum=max(0, seq - 1 - JOIN_LOOKBACK))
        return found

    def accept(self, origin: int, wire_seq: int, held: Held) -> tuple[int, bool]:
        """Hold a reliable unit; (unwrapped seq, whether it was new)."""
        ref = self.streams[origin].cum + 1 if origin in self.streams else wire_seq
        seq = unwrap(wire_seq, ref)
        stream = self.stream(origin, seq)
        if stream is None or stream.has(seq):
            self.stats.duplicates += stream is not None
            return seq, False
        if seq > stream.cum + MAX_WINDOW:
            self.stats.out_of_window += 1
            return seq, False
        stream.held[seq] = held
        return seq, True

    def skip(self, origin: int, seq: int) -> bool:
        """Mark ``seq`` abandoned by its sender; True if that changed anything."""
        stream = self.streams.get(origin)
        if stream is None or stream.has(seq) or seq > stream.cum + MAX_WINDOW:
            return False
        stream.held[seq] = Held(0, 0, 0, None)
        return True

    def advance(self, origin: int) -> tuple[list[Ready], list[int]]:
        """Close gaps: whole messages now in order, and seqs skipped on the way."""
        stream = self.streams[origin]
        ready: list[Ready] = []
        skipped: list[int] = []
        while stream.cum + 1 in stream.held:
            stream.cum += 1
            unit = stream.held.pop(stream.cum)
            if unit.payload is None:
                skipped.append(stream.cum)
                self._drop_partial(stream)
            elif unit.count == 1:
                self._drop_partial(stream)
                ready.append(Ready(stream.cum, unit, unit.payload))
            elif unit.index != len(stream.partial):
                self._drop_partial(stream)
            else:
                stream.partial.append(unit.payload)
                if len(stream.partial) == unit.count:
                    payload = b"".join(stream.partial)
                    stream.partial = []
                    ready.append(Ready(stream.cum - unit.count + 1, unit, payload))
        self.stats.gaps_skipped += len(skipped)
        return ready, skipped

    def _drop_partial(self, stream: Stream) -> None:
        if stream.partial:
            self.stats.partials_dropped += 1
            stream.partial = []

    def fragment(self, origin: int, msg_id: int, index: int, count: int, chunk: bytes,
                 now: float) -> bytes | None:
        """Add an unreliable fragment; the whole payload once the last one is in."""
        key = (origin, msg_id)
        started, want, chunks = self._partials.get(key, (now, count, {}))
        if want != count:  # the id was reused for another message: start again
            started, want, chunks = now, count, {}
        if key not in self._partials and len(self._partials) >= MAX_REASSEMBLIES:
            oldest = min(self._partials, key=lambda k: self._partials[k][0])
            del self._partials[oldest]
            self.stats.reassembly_timeouts += 1
        chunks[index] = chunk
        if len(chunks) == count:
            self._partials.pop(key, None)
            return b"".join(chunks[i] for i in range(count))
        self._partials[key] = (started, want, chunks)
        return None

    def expire(self, now: float, timeout: float) -> None:
        """Drop unreliable reassemblies older than ``timeout``."""
        for key in [k for k, v in self._partials.items() if v[0] + timeout <= now]:
            del self._partials[key]
            self.stats.reassembly_timeouts += 1

    def next_expiry(self, timeout: float) -> float | None:
        return min((v[0] + timeout for v in self._partials.values()), default=None)

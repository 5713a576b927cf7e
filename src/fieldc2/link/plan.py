"""Choosing what goes into one body, without changing any state.

:class:`BodyPlan` adds records while the exact encoded size stays within the
budget.  Control records (acks, SKIPs, digest) are placed first and data last,
so the largest record, usually data, is the one that needs no length prefix.
"""

from __future__ import annotations

from fieldc2.link.body import (
    DataRecord,
    FragmentRecord,
    Record,
    encode_body,
    record_size,
)
from fieldc2.link.outbox import Unit

#: Largest DATA header: kind, origin, dest, 2-byte seq.  Payloads are split so
#: that a unit still fits when a relay forwards it with an origin byte added.
DATA_HEADER_MAX = 5
#: Largest FRAGMENT header: kind, origin, dest, 2-byte seq, index, count.
FRAGMENT_HEADER_MAX = 7


def unit_record(unit: Unit, sender: int) -> Record:
    """The link record that carries ``unit`` in a body sent by ``sender``."""
    origin = None if unit.origin == sender else unit.origin
    if unit.count == 1:
        seq = unit.seq if unit.reliable else None
        return DataRecord(unit.precedence, unit.payload, seq, origin, unit.dest)
    return FragmentRecord(unit.precedence, unit.payload, unit.index, unit.count, unit.seq,
                          unit.reliable, origin, unit.dest)


class BodyPlan:
    """Records chosen for one body, with their exact encoded size."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.control: list[tuple[Record, int, int]] = []
        self.data: list[tuple[Record, int, int]] = []
        self.units: list[Unit] = []

    def _size(self, control: list[tuple[Record, int, int]],
              data: list[tuple[Record, int, int]]) -> int:
        entries = control + data
        if not entries:
            return 0
        _, last, prefixed = entries[-1]
        return sum(p for _, _, p in entries) - prefixed + last

    def size(self) -> int:
        return self._size(self.control, self.data)

    def room(self) -> int:
        return self.budget - self.size()

    def add_data(self, record: Record, unit: Unit) -> bool:
        entry = (record, record_size(record, last=True), record_size(record, last=False))
        if self._size(self.control, [*self.data, entry]) > self.budget:
            return False
        self.data.append(entry)
        self.units.append(unit)
        return True

    def add_control(self, record: Record) -> bool:
        entry = (record, record_size(record, last=True), record_size(record, last=False))
        if self._size([*self.control, entry], self.data) > self.budget:
            return False
        self.control.append(entry)
        return True

    def records(self) -> list[Record]:
        return [r for r, _, _ in self.control + self.data]

    def encode(self) -> bytes:
        return encode_body(self.records())


def split_sizes(length: int, budget: int) -> list[int]:
    """Sizes of the pieces of a ``length``-byte payload: one if it fits a body."""
    if length + DATA_HEADER_MAX <= budget:
        return [length]
    chunk = budget - FRAGMENT_HEADER_MAX
    count = -(-length // chunk)
    return [min(chunk, length - i * chunk) for i in range(count)]


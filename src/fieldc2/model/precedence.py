"""Message precedence, as radio operators and the link layer use it.

The four classes follow ACP 121 / CCEB practice: a higher class interrupts a
lower one on a circuit, and each has a handling objective (FLASH within
10 minutes, IMMEDIATE 30 minutes, PRIORITY 3 hours, ROUTINE 6 hours).  The
integer values order the classes, so ``max()`` and comparisons do the right
thing; they are also the 2-bit code on the wire, so they must never change.
"""

from __future__ import annotations

import enum


class Precedence(enum.IntEnum):
    """How urgently a message must cross the link."""

    ROUTINE = 0
    PRIORITY = 1
    IMMEDIATE = 2
    FLASH = 3

    @classmethod
    def parse(cls, text: str) -> Precedence:
        """Read a class from a name or its one-letter prosign (Z, O, P, R)."""
        key = text.strip().upper()
        letters = {"Z": cls.FLASH, "O": cls.IMMEDIATE, "P": cls.PRIORITY, "R": cls.ROUTINE}
        if key in letters:
            return letters[key]
        try:
            return cls[key]
        except KeyError:
            names = ", ".join(p.name for p in cls)
            raise ValueError(f"unknown precedence {text!r}: use one of {names}") from None

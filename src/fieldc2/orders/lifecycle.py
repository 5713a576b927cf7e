"""The per-recipient order state machine, as a table.

``(state, signal) -> next state``.  A pair that is not in the table is
ignored (and logged by the caller), never an error: devices repeat receipts,
send them late and out of order over bad links (a read receipt can overtake
its delivered receipt), and a late ``delivered`` after ``done`` must not move
an order backwards.  So the table only ever moves forwards, states may be
skipped (a team may report DONE without ever acknowledging), and DONE,
FAILED and CANCELLED are final.  Only the command post cancels (a newer plan
gives the task to someone else); devices' signals never do.
"""

from __future__ import annotations

from fieldc2.orders.model import OrderState, Signal

_S = OrderState
_I = Signal

#: Every signal that moves each state, and where to.
TABLE: dict[tuple[OrderState, Signal], OrderState] = {
    (_S.ISSUED, _I.WRITTEN): _S.DELIVERED,
    (_S.ISSUED, _I.DELIVERED): _S.DELIVERED,
    (_S.ISSUED, _I.ACKNOWLEDGED): _S.ACKNOWLEDGED,
    (_S.ISSUED, _I.STARTED): _S.IN_PROGRESS,
    (_S.ISSUED, _I.DONE): _S.DONE,
    (_S.ISSUED, _I.FAILED): _S.FAILED,
    (_S.DELIVERED, _I.ACKNOWLEDGED): _S.ACKNOWLEDGED,
    (_S.DELIVERED, _I.STARTED): _S.IN_PROGRESS,
    (_S.DELIVERED, _I.DONE): _S.DONE,
    (_S.DELIVERED, _I.FAILED): _S.FAILED,
    (_S.ACKNOWLEDGED, _I.STARTED): _S.IN_PROGRESS,
    (_S.ACKNOWLEDGED, _I.DONE): _S.DONE,
    (_S.ACKNOWLEDGED, _I.FAILED): _S.FAILED,
    (_S.IN_PROGRESS, _I.DONE): _S.DONE,
    (_S.IN_PROGRESS, _I.FAILED): _S.FAILED,
    (_S.ISSUED, _I.CANCELLED): _S.CANCELLED,
    (_S.DELIVERED, _I.CANCELLED): _S.CANCELLED,
    (_S.ACKNOWLEDGED, _I.CANCELLED): _S.CANCELLED,
    (_S.IN_PROGRESS, _I.CANCELLED): _S.CANCELLED,
}


def step(state: OrderState, signal: Signal) -> OrderState | None:
    """The next state, or None when ``signal`` does not move ``state``."""
    return TABLE.get((state, signal))


def run(state: OrderState, signals: list[Signal]) -> OrderState:
    """Apply signals in turn, ignoring those the table does not know."""
    for signal in signals:
        state = step(state, signal) or state
    return state

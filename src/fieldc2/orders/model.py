"""Orders and their per-recipient state, as frozen values.

An :class:`Order` is one task given to one team.  It goes to every device of
the team (``recipients``, CoT uids) and each device's progress is tracked on
its own (:class:`RecipientState`): one phone may have read an order the
other never received.  Every change is kept as a :class:`Transition` so the
history can be shown, audited and turned into an ICS 214 activity log.

Times are integer seconds since the Unix epoch (as in ``fieldc2.plan``).
"""

from __future__ import annotations

import enum
import uuid

import msgspec


class OrderState(enum.StrEnum):
    """Where one recipient is with one order.  The order of the members is
    the order of progress: a state never moves to an earlier one."""

    ISSUED = "issued"
    """Stored and handed to the router; not yet seen written to the device."""
    DELIVERED = "delivered"
    """Written to the device's connection, or the device said it has it."""
    ACKNOWLEDGED = "acknowledged"
    """Read (ATAK read receipt) or acknowledged in words (ACK, WILCO, ROGER)."""
    IN_PROGRESS = "in_progress"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    """Withdrawn by the command post (a newer plan gave the task elsewhere)."""

    @property
    def rank(self) -> int:
        """Progress rank; the three final states share the last one."""
        return min(_ORDER.index(self), _ORDER.index(OrderState.DONE))

    @property
    def terminal(self) -> bool:
        return self in (OrderState.DONE, OrderState.FAILED, OrderState.CANCELLED)


_ORDER = tuple(OrderState)
UNACKNOWLEDGED = (OrderState.ISSUED, OrderState.DELIVERED)


class Signal(enum.StrEnum):
    """What a device (or the server) told us about an order."""

    WRITTEN = "written"
    """The server wrote the order to the device's connection."""
    DELIVERED = "delivered"
    """A delivered receipt (``b-t-f-d``) or status ``received``."""
    ACKNOWLEDGED = "acknowledged"
    """A read receipt (``b-t-f-r``), an ACK/WILCO/ROGER reply or status."""
    STARTED = "started"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    """The command post withdrew the order (never from a device)."""


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """One task given to one team, as published."""

    id: str
    task_id: str
    team_id: str
    text: str
    """The order as the team reads it (GeoChat remarks)."""
    recipients: tuple[str, ...]
    """CoT uids of the team's devices."""
    issued: int
    """When it was published, epoch seconds."""
    due: int
    """When work should start (the plan's start time), epoch seconds."""
    lat: float
    lon: float
    precedence: str = "PRIORITY"
    origin: str = ""
    """CoT uid of the command post that signs it (per device, when sent)."""
    plan: str = ""
    """Id of the published plan this order belongs to."""


class RecipientState(msgspec.Struct, frozen=True, kw_only=True):
    """One device's state for one order."""

    order_id: str
    recipient: str
    state: OrderState
    updated: int
    alerted: bool = False
    """The overdue-acknowledgement alert was raised for it."""


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded change of one recipient's state."""

    order_id: str
    recipient: str
    before: OrderState | None
    """None when the order was created."""
    after: OrderState
    signal: str
    at: int
    source: str = ""
    """How we learnt it: ``publish``, ``written``, ``receipt``, ``reply``, ``status``."""
    note: str = ""
    """The reply text, when there was one."""


class OrderStatus(msgspec.Struct, frozen=True, kw_only=True):
    """An order with the state of each of its recipients (the REST view)."""

    order: Order
    recipients: tuple[RecipientState, ...]

    @property
    def state(self) -> OrderState:
        """The least advanced recipient's state: an order is done for the
        command post only when every device of the team says so."""
        return min((r.state for r in self.recipients), key=lambda s: s.rank,
                   default=OrderState.ISSUED)


class Overdue(msgspec.Struct, frozen=True, kw_only=True):
    """A recipient that has not acknowledged within the timeout."""

    order: Order
    recipient: str
    state: OrderState
    since: int


#: Namespace of the GeoChat message ids of orders (uuid5 over order + device).
_MESSAGE_NS = uuid.UUID("6f1c2d7e-3b4a-5c6d-8e9f-0a1b2c3d4e5f")


def message_id(order_id: str, recipient: str) -> str:
    """The GeoChat message id of an order to one device.

    Deterministic, so a re-sent order carries the same id and a receipt for
    either copy names the same (order, device); a UUID because ATAK's own
    message ids are UUIDs and receipts echo them as ``messageId``.
    """
    return str(uuid.uuid5(_MESSAGE_NS, f"{order_id}/{recipient}"))


def new_order_id() -> str:
    """``ORD-`` and 8 hex digits: short enough to type in a reply ("DONE ORD-1A2B3C4D")."""
    return f"ORD-{uuid.uuid4().hex[:8].upper()}"

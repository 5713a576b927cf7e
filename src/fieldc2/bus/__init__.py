"""Messages between server instances, behind one interface.

``memory`` (default) connects the instances of one process and ships as real
code for tests and the simulator; ``nats`` (NATS JetStream) connects
instances across machines.  Chosen by name, imported lazily.
"""

from __future__ import annotations

from fieldc2.backends import BackendTable, backend_class
from fieldc2.bus.base import Bus, BusMessage, Subscription
from fieldc2.config import BusConfig

_BACKENDS: BackendTable = {
    "memory": ("fieldc2.bus.memory", "MemoryBus", None),
    "nats": ("fieldc2.bus.nats", "NatsBus", "nats"),
}


def open_bus(config: BusConfig) -> Bus:
    """Build (not yet open) the configured bus backend."""
    bus: Bus = backend_class("bus", config.backend, _BACKENDS)(config)
    return bus


__all__ = ["Bus", "BusMessage", "Subscription", "open_bus"]

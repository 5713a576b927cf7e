"""Messages between server instances, behind one interface.

``memory`` (default) connects the instances of one process and ships as real
code for tests and the simulator; ``nats`` (NATS JetStream) connects
instances across machines.  Chosen by name, imported lazily.
"""

from __future__ import annotations

import importlib

from fieldc2.bus.base import Bus, BusMessage, Subscription
from fieldc2.config import BusConfig
from fieldc2.errors import ConfigError, MissingExtraError

_BACKENDS = {
    "memory": ("fieldc2.bus.memory", "MemoryBus", None),
    "nats": ("fieldc2.bus.nats", "NatsBus", "nats"),
}


def open_bus(config: BusConfig) -> Bus:
    """Build (not yet open) the configured bus backend."""
    try:
        module_name, class_name, extra = _BACKENDS[config.backend]
    except KeyError:
        raise ConfigError(
            f"unknown bus backend {config.backend!r}; choose one of {sorted(_BACKENDS)}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if extra is None or exc.name == module_name:
            raise ConfigError(f"bus backend {config.backend!r} is not available") from exc
        raise MissingExtraError(
            f"bus backend {config.backend!r} needs `pip install 'fieldc2[{extra}]'`"
        ) from exc
    bus: Bus = getattr(module, class_name)(config)
    return bus


__all__ = ["Bus", "BusMessage", "Subscription", "open_bus"]

"""Persistence of the picture and the event history, behind one interface.

Backends are chosen by name and imported lazily::

    store = open_store(config.store, data_dir)

``memory`` ships in the package and is real: the tests and the simulator use
it.  ``sqlite`` is the default.  Every backend passes ``tests/test_store.py``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from fieldc2.config import StoreConfig
from fieldc2.errors import ConfigError, MissingExtraError
from fieldc2.store.base import Store, StoredEvent

_BACKENDS = {
    "memory": ("fieldc2.store.memory", "MemoryStore", None),
    "sqlite": ("fieldc2.store.sqlite", "SqliteStore", None),
    "postgres": ("fieldc2.store.postgres", "PostgresStore", "postgres"),
}


def open_store(config: StoreConfig, data_dir: Path) -> Store:
    """Build (not yet open) the configured store backend."""
    try:
        module_name, class_name, extra = _BACKENDS[config.backend]
    except KeyError:
        raise ConfigError(
            f"unknown store backend {config.backend!r}; choose one of {sorted(_BACKENDS)}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if extra is None or exc.name == module_name:
            raise ConfigError(f"store backend {config.backend!r} is not available") from exc
        raise MissingExtraError(
            f"store backend {config.backend!r} needs `pip install 'fieldc2[{extra}]'`"
        ) from exc
    store: Store = getattr(module, class_name)(config, data_dir)
    return store


__all__ = ["Store", "StoredEvent", "open_store"]

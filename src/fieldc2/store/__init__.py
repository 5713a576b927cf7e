"""Persistence of the picture and the event history, behind one interface.

Backends are chosen by name and imported lazily::

    store = open_store(config.store, data_dir)

``memory`` ships in the package and is real: the tests and the simulator use
it.  ``sqlite`` is the default.  Every backend passes ``tests/test_store.py``.
"""

from __future__ import annotations

from pathlib import Path

from fieldc2.backends import BackendTable, backend_class
from fieldc2.config import StoreConfig
from fieldc2.store.base import Store, StoredEvent

_BACKENDS: BackendTable = {
    "memory": ("fieldc2.store.memory", "MemoryStore", None),
    "sqlite": ("fieldc2.store.sqlite", "SqliteStore", None),
    "postgres": ("fieldc2.store.postgres", "PostgresStore", "postgres"),
}


def open_store(config: StoreConfig, data_dir: Path) -> Store:
    """Build (not yet open) the configured store backend."""
    store: Store = backend_class("store", config.backend, _BACKENDS)(config, data_dir)
    return store


__all__ = ["Store", "StoredEvent", "open_store"]

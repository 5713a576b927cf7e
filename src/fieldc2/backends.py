"""Backends chosen by name, imported lazily, installed through extras."""

from __future__ import annotations

import importlib
from typing import Any

from fieldc2.errors import ConfigError, MissingExtraError

#: name -> (module, class, extra that installs its dependency or None)
BackendTable = dict[str, tuple[str, str, str | None]]


def backend_class(kind: str, name: str, table: BackendTable) -> Any:
    """The class implementing backend ``name`` of ``kind`` (``store``, ``bus``).

    Unknown names and missing optional dependencies become errors that tell
    the operator what to do next.
    """
    try:
        module_name, class_name, extra = table[name]
    except KeyError:
        raise ConfigError(f"unknown {kind} backend {name!r}; choose one of {sorted(table)}") \
            from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if extra is None or exc.name == module_name:
            raise ConfigError(f"{kind} backend {name!r} is not available") from exc
        raise MissingExtraError(
            f"{kind} backend {name!r} needs `pip install 'fieldc2[{extra}]'`") from exc
    return getattr(module, class_name)

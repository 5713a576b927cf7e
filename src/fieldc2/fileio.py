"""Replacing small state files so that a crash leaves the old or the new one.

Counters, queues and keys must survive a power cut in the field: a counter
file half written could make a radio reuse a nonce, a queue file half
written could lose an accepted order.  One function does it the careful
way (temporary file, fsync, rename, fsync of the directory) for every
caller; each caller translates ``OSError`` into its own error.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``; raises ``OSError`` when it cannot."""
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; some systems cannot open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

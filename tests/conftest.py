"""Shared fixtures: a real command post on loopback with ephemeral ports."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from fieldc2.config import (
    Config,
    EnrollmentConfig,
    HttpConfig,
    StoreConfig,
    StreamConfig,
    TlsConfig,
)
from fieldc2.server import CommandPost

# In CI the property tests run a fixed sequence of examples, so a landing is
# not decided by the luck of a random seed; locally they explore new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def make_config(data_dir: Path, *, tls: bool = False, **stream: Any) -> Config:
    """A config on loopback with OS-chosen ports and quick ticks for tests.

    TLS is off unless asked for, so that only the TLS tests pay for making
    RSA keys."""
    stream.setdefault("tcp_port", 0)
    stream.setdefault("flush_interval", 0.02)
    stream.setdefault("picture_delay", 0.2)
    return Config(
        bind="127.0.0.1",
        data_dir=data_dir,
        stream=StreamConfig(**stream),
        http=HttpConfig(port=0),
        tls=TlsConfig(enabled=tls, port=0),
        enrollment=EnrollmentConfig(port=0),
        store=StoreConfig(backend="sqlite"),
    )


@pytest.fixture
async def post(tmp_path: Path) -> AsyncIterator[CommandPost]:
    """A running command post with the default SQLite store in tmp_path."""
    async with CommandPost(make_config(tmp_path)) as running:
        yield running


def skip_unless_ci(reason: str) -> None:
    """Skip for a missing facility of this machine, but never in CI (CI=true),
    where the facility must be there and a skip would hide a failure."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI never skips)")
    pytest.skip(reason)


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``check()`` is true, failing the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {check}")
        await asyncio.sleep(0.02)

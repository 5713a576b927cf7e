"""One participant of a radio channel on a real adapter: the asyncio shell of
style rule 3 around :class:`~fieldc2.link.radio.RadioEndpoint` (compact codec,
link layer and frame security, all sans-I/O).

::

    submit(record) -> RadioEndpoint.submit_record
    loop: RadioEndpoint.next_frame -> adapter.send, then wait the frame's
          airtime (a TNC or a Meshtastic node must not be overrun)
    adapter frame -> RadioEndpoint.receive_frame -> on_record(record, now)

Time is wall-clock seconds: the link layer's deadlines and the opener's epoch
grace survive a restart in the snapshot, so they must mean the same after it.

**Persistence.**  With a state directory, the link snapshot, the opener's
replay state, the codec's fix history (so a restarted relay still decodes
the nodes' delta-coded positions instead of waiting for fresh absolute ones)
and the application's own state (``app_state``) go into one file, written
atomically (temp file, fsync, rename, fsync the directory) after every
received frame that changed something, after every reliable submit, and
always before a frame leaves.  A custody acknowledgement only ever leaves
in a frame, so nothing is acknowledged that a crash could lose.  The sealer's
counter persists itself ahead (``FileCounterStore``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgspec

from fieldc2 import fileio
from fieldc2.crypto.radio import MAX_FRAME, FrameOpener, FrameSealer
from fieldc2.crypto.radio_keys import ChannelKey, FileCounterStore, MemoryCounterStore
from fieldc2.errors import FieldC2Error, FrameRejected, LinkError, RadioFrameError
from fieldc2.link.endpoint import LinkEndpoint
from fieldc2.link.profiles import LinkProfile
from fieldc2.link.radio import RadioEndpoint
from fieldc2.link.types import FRAME_OVERHEAD, LinkConfig
from fieldc2.model.radio import Record
from fieldc2.protocol.compact import ChannelContext
from fieldc2.transport.radio import RadioAdapter

log = logging.getLogger("fieldc2.radio")
STATE_FILE = "station.state"
COUNTER_FILE = "counter.json"
#: Largest state file read back: a full outbox of a busy relay is a few
#: hundred kilobytes; anything far larger is not ours.
MAX_STATE_FILE = 64 * 1024 * 1024
STATE_VERSION = 1

RecordSink = Callable[[Record, float], None]


class StationState(msgspec.Struct):
    version: int
    link: bytes
    opener: bytes
    app: bytes = b""
    positions: bytes = b""
    """The codec's fix history (``PositionContext.snapshot``); empty in older files."""


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file."""
    try:
        fileio.write_atomic(path, data)
    except OSError as exc:
        raise LinkError(f"cannot persist {path}: {exc}") from exc


class RadioStation:
    """Link layer + frame security + compact codec on one radio adapter."""

    def __init__(self, adapter: RadioAdapter, *, keys: list[ChannelKey], slot: int,
                 profile: LinkProfile, context: ChannelContext, on_record: RecordSink,
                 state_dir: Path | None = None, app_state: Callable[[], bytes] | None = None,
                 **link_overrides: object) -> None:
        self.adapter = adapter
        self.slot = slot
        self.profile = profile
        self.context = context
        self.on_record = on_record
        self.state_dir = state_dir
        self.app_state = app_state
        budget = min(profile.mtu_up, profile.mtu_down, adapter.mtu, MAX_FRAME) - FRAME_OVERHEAD
        link_overrides.setdefault("body_budget", budget)
        self.endpoint = LinkEndpoint(LinkConfig.for_profile(slot, profile, **link_overrides),
                                     rng=random.Random(), profile=profile)
        counters = (FileCounterStore(state_dir / COUNTER_FILE) if state_dir is not None
                    else MemoryCounterStore())
        self.sealer = FrameSealer(keys[-1], slot, counters)
        self.opener = FrameOpener(keys, own=slot)
        self.radio = RadioEndpoint(self.endpoint, self.sealer, self.opener, context)
        self.rejected: Counter[str] = Counter()
        self.saved_app: bytes = b""
        """The application state found in the state file (empty when there was none)."""
        self._wake = asyncio.Event()
        self._dirty = False
        self._tasks: list[asyncio.Task[None]] = []
        self._load()

    # --- lifecycle ---------------------------------------------------------------

    def _load(self) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / STATE_FILE
        if not path.exists():
            return
        try:
            data = path.read_bytes()[:MAX_STATE_FILE + 1]
            state = msgspec.msgpack.decode(data, type=StationState)
        except (OSError, msgspec.DecodeError) as exc:
            raise LinkError(f"station state {path} is unreadable; move it away to start "
                            f"afresh: {exc}") from exc
        if state.version != STATE_VERSION:
            raise LinkError(f"station state {path} has version {state.version}")
        self.endpoint.restore(state.link)
        self.opener.restore(state.opener)
        if state.positions:
            try:
                self.context.positions.restore(state.positions)
            except RadioFrameError as exc:
                raise LinkError(f"station state {path}: {exc}") from exc
        self.saved_app = state.app
        queued = len(list(self.endpoint.outbox.units()))
        log.info("restored radio state from %s: %d messages queued", path, queued)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._receive_loop(), name="radio rx"),
                       asyncio.create_task(self._send_loop(), name="radio tx")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.persist()
        self.sealer.close()
        await self.adapter.close()

    def persist(self) -> None:
        """Write the whole station state now (see the module docstring)."""
        self._dirty = False
        if self.state_dir is None:
            return
        app = self.app_state() if self.app_state is not None else b""
        state = StationState(STATE_VERSION, self.endpoint.snapshot(), self.opener.snapshot(), app,
                             self.context.positions.snapshot())
        write_atomic(self.state_dir / STATE_FILE, msgspec.msgpack.encode(state))

    # --- application side ----------------------------------------------------------

    def submit(self, record: Record) -> None:
        """Queue a record; how it travels is ``fieldc2.link.radio.HANDLING``."""
        if self.radio.submit_record(record, time.time()) is not None:
            self.persist()  # reliable: accepted, so it must survive a crash
        self._wake.set()

    # --- the shell -------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            now = time.time()
            if (when := self.radio.get_timer()) is not None and when <= now:
                self.radio.handle_timer(now)
            if self._dirty:
                self.persist()  # before any frame: it may carry a custody acknowledgement
            frame = self.radio.next_frame(now)
            if frame is not None:
                await self._transmit(frame)
                continue
            when = self.radio.get_timer()
            self._wake.clear()
            timeout = None if when is None else max(when - time.time(), 0.05)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the
            # cancel close() sends when _wake is set in the same iteration
            # (CPython gh-86296), and the loop would then wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _transmit(self, frame: bytes) -> None:
        try:
            await self.adapter.send(frame)
        except LinkError as exc:
            log.warning("radio send failed: %s", exc)
        await asyncio.sleep(self.profile.airtime(len(frame)))

    async def _receive_loop(self) -> None:
        async for frame in self.adapter:
            self.receive_frame(frame, time.time())

    def receive_frame(self, frame: bytes, now: float) -> None:
        """Open one frame heard on the channel and hand its records on."""
        try:
            records = self.radio.receive_frame(frame, now)
        except FrameRejected as exc:
            self.rejected[exc.reason] += 1
            return
        except RadioFrameError as exc:
            self.rejected["malformed"] += 1
            log.debug("dropped a radio frame: %s", exc)
            return
        for record in records:
            try:
                self.on_record(record, now)
            except FieldC2Error as exc:  # the application could not use it; the link goes on
                log.warning("a %s from the radio was not handled: %s", type(record).__name__, exc)
        self._dirty = True  # persisted before the next frame leaves (it may ack this one)
        self._wake.set()

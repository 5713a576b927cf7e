"""Virtual time for simulations: a heap of callbacks and a clock that jumps.

Nothing here sleeps or touches asyncio.  A simulated hour costs only the
callbacks that happen in it, so exercises and chaos tests run in
milliseconds and give the same answer every time: callbacks run in
``(time, sequence)`` order, where the sequence is the order they were
scheduled, so two callbacks at the same instant run first-scheduled first.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

from fieldc2.errors import LinkError

#: Callbacks waiting at once.  A one-hour, 21-node exercise keeps a few
#: hundred pending; a million means a runaway scenario (a callback that
#: reschedules itself many times per instant), which should fail loudly.
MAX_SCHEDULED = 1_000_000


class Timer:
    """Handle of one scheduled callback; :meth:`cancel` stops it from running."""

    __slots__ = ("_args", "_callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., object],
                 args: tuple[Any, ...]) -> None:
        self.when = when
        self._callback = callback
        self._args = args
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run; cheap (the heap entry is skipped when it comes up)."""
        self.cancelled = True

    def _run(self) -> None:
        self._callback(*self._args)


class VirtualClock:
    """A clock that only moves when told to, running what falls due on the way."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._seq = 0
        self._heap: list[tuple[float, int, Timer]] = []
        self.callbacks_run = 0
        """Callbacks executed so far (a cost measure for benchmarks)."""

    def now(self) -> float:
        """Current virtual time, seconds."""
        return self._now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Run ``callback(*args)`` at virtual time ``when`` (at once-ish if in the past:
        it runs at the current time, after what is already due now)."""
        if len(self._heap) >= MAX_SCHEDULED:
            raise LinkError(f"virtual clock: more than {MAX_SCHEDULED} callbacks pending")
        if math.isnan(when):
            raise LinkError("virtual clock: cannot schedule at NaN")
        timer = Timer(max(when, self._now), callback, args)
        self._seq += 1
        heapq.heappush(self._heap, (timer.when, self._seq, timer))
        return timer

    def call_later(self, delay: float, callback: Callable[..., object],
                   *args: Any) -> Timer:
        """Run ``callback(*args)`` ``delay`` seconds from now."""
        return self.call_at(self._now + delay, callback, *args)

    def next_time(self) -> float:
        """When the next live callback is due; ``inf`` when nothing is scheduled."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def pending(self) -> int:
        """Scheduled callbacks, including cancelled ones not yet discarded."""
        return len(self._heap)

    def step(self) -> bool:
        """Run the next callback, moving time to it; False when none is left."""
        if self.next_time() == math.inf:
            return False
        when, _, timer = heapq.heappop(self._heap)
        self._now = when
        self.callbacks_run += 1
        timer._run()
        return True

    def run_until(self, t: float) -> int:
        """Run everything due at or before ``t``, then set the time to ``t``.

        Returns the number of callbacks run.  Callbacks scheduled by callbacks
        run too if they fall due by ``t``."""
        if t < self._now:
            raise LinkError(f"virtual clock: cannot go back from {self._now} to {t}")
        before = self.callbacks_run
        while self.next_time() <= t:
            self.step()
        self._now = t
        return self.callbacks_run - before

    def advance(self, dt: float) -> int:
        """``run_until(now + dt)``."""
        return self.run_until(self._now + dt)

    def run_while(self, predicate: Callable[[], bool], limit: float) -> bool:
        """Run callbacks one by one while ``predicate()`` holds, up to time ``limit``.

        Returns ``predicate()`` at the stop: False means the awaited condition
        came true (time stays at the callback that made it so); True means
        time reached ``limit`` first (time is then ``limit``)."""
        while predicate():
            if self.next_time() > limit:
                self.run_until(max(limit, self._now))
                return predicate()
            self.step()
        return False

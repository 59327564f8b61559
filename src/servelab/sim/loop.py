"""The event loop every simulated component runs on: a clock and actions scheduled on it.

SimPy-shaped and as small: ``at(t, action)`` schedules a call, ``run(until)`` makes them in
time order. Two things it adds:

- **Priorities break ties deterministically.** At equal times URGENT actions run before NORMAL
  ones, and equal priorities run in the order they were scheduled. An arrival at t is therefore
  admitted before the batch an engine forms at t, whatever order they were scheduled in.
- **Sources.** A stream of timed events that is known in advance (the arrivals of a workload)
  is not pushed into the heap one event at a time: the loop compares the source's next time
  with the heap's and fires whichever is first (a source's events are URGENT). A single-engine
  run is then a two-source loop whose heap holds one batch end at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from heapq import heappop, heappush
from typing import Final

from mypy_extensions import mypyc_attr

URGENT: Final = 0
NORMAL: Final = 1


@mypyc_attr(allow_interpreted_subclasses=True)
class Source:
    """Events known in advance, in time order: the loop asks for the next time and fires it.

    Plain Python may define one (a workflow's follow-up calls, say)."""

    def next_time(self) -> float:
        """When the next event happens; ``math.inf`` once there are no more."""
        raise NotImplementedError

    def fire(self) -> None:
        """Make the next event happen (the loop's clock already reads its time)."""
        raise NotImplementedError


class Loop:
    """A clock, a heap of scheduled actions and the sources merged into it."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, int, Callable[[], None]]] = []
        self._seq = 0  # ties at equal (time, priority) run in scheduling order
        self._cancelled: set[int] = set()  # handles of actions to drop when they come up
        self._sources: list[Source] = []
        self._until = math.inf

    def at(self, t: float, action: Callable[[], None], priority: int = NORMAL) -> int:
        """Call ``action()`` at time ``t`` (never earlier than now); returns a handle for
        ``cancel``."""
        if t < self.now:
            raise ValueError(f"cannot schedule at {t}, before now ({self.now})")
        self._seq += 1
        heappush(self._heap, (t, priority, self._seq, action))
        return self._seq

    def cancel(self, handle: int) -> None:
        """Drop a scheduled action: it neither runs nor moves the clock (a wake-up that is
        no longer needed must not stretch a run past its last batch)."""
        self._cancelled.add(handle)

    def add_source(self, source: Source) -> None:
        self._sources.append(source)

    def free_until(self, t: float) -> bool:
        """Whether nothing else is due up to and including time ``t``: a component that is
        then the only thing happening may jump the clock to ``t`` itself, with no event."""
        if t > self._until or (self._heap and self._heap[0][0] <= t):
            return False
        return all(source.next_time() > t for source in self._sources)

    def run(self, until: float = math.inf) -> float:
        """Make every event up to time ``until`` happen; return the clock."""
        self._until = until
        heap = self._heap
        sources = self._sources
        single = sources[0] if len(sources) == 1 else None
        while True:
            if single is not None:
                source: Source | None = single
                t_source = single.next_time()
            else:
                source, t_source = self._first_source()
            t_heap = heap[0][0] if heap else math.inf
            if t_source <= t_heap and source is not None:  # sources are URGENT
                if t_source > until or t_source == math.inf:
                    break
                self.now = t_source
                source.fire()
            elif heap:
                if t_heap > until:
                    break
                entry = heappop(heap)
                if self._cancelled and entry[2] in self._cancelled:
                    self._cancelled.discard(entry[2])
                    continue
                self.now = t_heap
                entry[3]()
            else:
                break
        self._until = math.inf  # no bound between runs
        return self.now

    def _first_source(self) -> tuple[Source | None, float]:
        first: Source | None = None
        t_first = math.inf
        for source in self._sources:
            t = source.next_time()
            if t < t_first:
                first, t_first = source, t
        return first, t_first

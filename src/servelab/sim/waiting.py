"""The requests of one engine that still have prefill to do, oldest first.

A request leaves when its prefill finishes, which under shortest-prompt-first is rarely at the
front. Removal is lazy: its status already says it no longer waits, so it is skipped where it
stands and dropped when it reaches the front, or when the dead outnumber the live and the queue
is rebuilt. Either way a removal costs O(1) amortised, never a scan of the queue.

A request whose prefill has begun is also listed in ``started`` (begin order); those, then the
ones that have not begun, shortest prompt first, are what ``shortest_first`` reads, from an index
of per-length queues that is built the first time a scheduler asks, so FCFS policies never pay
for it.
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from collections.abc import Iterator

from servelab.core.request import PREEMPTED, PREFILLING, WAITING, Request, prefill_not_begun


def _waits(req: Request) -> bool:
    status = req.status
    return status in (WAITING, PREFILLING, PREEMPTED)


class WaitingQueue:
    """Arrival order, a preempted request at the front; lazy removal (module docstring)."""

    def __init__(self) -> None:
        self._queue: deque[Request] = deque()
        # Ids of the live ones, for ``holds``: built the first time a request is looked up
        # away from where FCFS policies take their chunks, then kept up to date.
        self._members: set[int] | None = None
        self._live = 0
        self._dead = 0
        #: Requests whose prefill has begun and not finished, in the order they began.
        self.started: list[Request] = []
        self._by_length: dict[int, deque[Request]] | None = None
        self._lengths: list[int] = []

    def __len__(self) -> int:
        return self._live

    def __bool__(self) -> bool:
        return self._live > 0

    def __iter__(self) -> Iterator[Request]:
        if not self._dead:  # the usual case: dead ones leave from the front at once
            return iter(self._queue)
        return (req for req in self._queue if _waits(req))

    def __reversed__(self) -> Iterator[Request]:
        """Newest first: a policy that keeps its own index of the queue (WAIT's queues per
        output length) reads only the requests that arrived since it last looked."""
        if not self._dead:
            return reversed(self._queue)
        return (req for req in reversed(self._queue) if _waits(req))

    def __getitem__(self, i: int) -> Request:
        if i == 0 and self._live:
            return self._queue[0]  # the front is always live (``_drop_front``)
        if not 0 <= i < self._live:
            raise IndexError("waiting queue index out of range")
        for j, req in enumerate(self):
            if j == i:
                return req
        raise AssertionError("unreachable: i < live count")

    def holds(self, req: Request, position: int) -> bool:
        """Whether ``req`` waits here; ``position`` is where a FCFS policy's chunk would find
        it (its place among the chunks), checked first and in O(1)."""
        queue = self._queue
        if not self._dead and position < len(queue) and queue[position] is req:
            return True
        members = self._members
        if members is None:
            members = self._members = {r.id for r in self}
        return req.id in members

    def __contains__(self, req: Request) -> bool:
        return self.holds(req, 0)

    def append(self, req: Request) -> None:
        self._queue.append(req)
        if self._members is not None:
            self._members.add(req.id)
        self._live += 1
        if self._by_length is not None:
            self._index(req)

    def appendleft(self, req: Request) -> None:
        """A preempted request: first in line again.

        If it left out of order earlier, its stale copy is still in the queue, and in the
        shortest-first index, and its new status would bring that copy back to life: the copy
        goes first, and the index is rebuilt when next read. A preemption may cost O(queue)
        so that every other removal costs O(1)."""
        queue = self._queue
        if self._dead:
            for i, stale in enumerate(queue):
                if stale is req:
                    del queue[i]
                    self._dead -= 1
                    break
        if self._by_length is not None:
            self._by_length = None
            self._lengths = []
        queue.appendleft(req)
        if self._members is not None:
            self._members.add(req.id)
        self._live += 1

    def restart(self, req: Request) -> None:
        """A begun prefill was preempted: it waits where it stands, not begun (its status
        says so already) and with its whole prefill again, so the shortest-first index is
        rebuilt when next read."""
        self.started.remove(req)
        self._by_length = None
        self._lengths = []

    def begin(self, req: Request) -> None:
        """``req``'s prefill has begun (its status says PREFILLING now)."""
        self.started.append(req)

    def leave(self, req: Request) -> None:
        """``req`` no longer waits (its status says so already): drop it, lazily."""
        if self._members is not None:
            self._members.discard(req.id)
        self._live -= 1
        started = self.started
        if started:
            if started[0] is req:
                del started[0]
            elif req in started:
                started.remove(req)  # at most a few begun prefills at a time
        queue = self._queue
        if queue[0] is req:  # the usual case under FCFS
            queue.popleft()
            while queue and not _waits(queue[0]):
                queue.popleft()
                self._dead -= 1
        else:
            self._dead += 1
            if self._dead > self._live:
                self._queue = deque(r for r in queue if _waits(r))
                self._dead = 0

    def shortest_first(self) -> Iterator[Request]:
        """Begun prefills first (in the order they began), then the requests whose prefill
        has not begun, shortest prompt first, then oldest first."""
        yield from self.started
        if self._by_length is None:
            self._by_length = {}
            for req in self._queue:
                self._index(req)
        by_length = self._by_length
        lengths = self._lengths
        # Buckets empty out at the short end, where a scan starts; drop them there only, so a
        # scan never copies or reshuffles the list of lengths.
        while lengths:
            first = by_length[lengths[0]]
            while first and not prefill_not_begun(first[0]):
                first.popleft()
            if first:
                break
            del by_length[lengths[0]]
            del lengths[0]
        for length in lengths:
            for req in by_length[length]:
                if prefill_not_begun(req):
                    yield req

    def _index(self, req: Request) -> None:
        by_length = self._by_length
        if by_length is None or not prefill_not_begun(req):
            return
        length = req.prefill_left
        same = by_length.get(length)
        if same is None:
            same = by_length[length] = deque()
            insort(self._lengths, length)
        if req.status == PREEMPTED:
            same.appendleft(req)
        else:
            same.append(req)

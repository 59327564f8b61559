"""Decode-phase requests, served one token per round, oldest first, without per-request loops.

Every policy here serves "the first k decoders" each round. The pool keeps them in an intrusive
FCFS list and a *frontier*: the first request that was not served in the last round (everything
before it was). A round that serves the first k only walks from the old frontier to the new one,
so its cost is the change in k, and a round that serves everyone again costs O(1).

Progress is a global round counter: a request entering at round G with r tokens to go finishes
at round G + r, kept in a heap of finish keys. A round that leaves a tail unserved moves that
tail's keys one round later; that suffix update is one Fenwick-tree add, and a popped key is
re-checked against it lazily (keys only ever grow, so a stale key is early, never late).

Time-between-tokens are accumulated as a histogram {gap seconds: count}: requests served in two
consecutive rounds all see the same gap, so one dict update covers them; only requests that
rejoin the served prefix, or get their first decode token, are handled one by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from heapq import heappop, heappush

from servelab.core.request import Request

#: TBT gaps are kept as integer ticks of 0.1 microsecond, so that equal gaps share one
#: histogram bin whatever float noise their subtraction carries (and ``round`` is slow).
TICKS_PER_S = 10_000_000


class Fenwick:
    """Prefix sums over entry sequence numbers: suffix adds, point queries, O(log n)."""

    __slots__ = ("tree",)

    def __init__(self, size: int) -> None:
        self.tree = [0] * (size + 1)

    def add_suffix(self, index: int) -> None:
        """Add one to every position >= index."""
        tree = self.tree
        i = index + 1
        n = len(tree)
        while i < n:
            tree[i] += 1
            i += i & -i

    def value(self, index: int) -> int:
        """The number of suffix adds that cover ``index``."""
        tree = self.tree
        i = index + 1
        total = 0
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total


class DecodePool:
    """FCFS decoders with O(1) full rounds; see the module docstring for the scheme."""

    def __init__(self, capacity: int, first_token: list[float], tbt_hist: dict[int, int]):
        self.head: Request | None = None
        self.tail: Request | None = None
        self.size = 0
        self._frontier: Request | None = None
        self._served_before = 0
        self._rounds = 0
        self._heap: list[tuple[int, int, Request]] = []
        self._penalties = Fenwick(capacity)
        self._penalty_events = 0
        self._last_round_time = 0.0
        self._seq = 0
        self._first_token = first_token
        self._tbt = tbt_hist

    def __iter__(self) -> Iterator[Request]:
        req = self.head
        while req is not None:
            yield req
            req = req._next

    def add(self, req: Request, remaining: int, last_token: float | None) -> None:
        """Enter decode with ``remaining`` tokens to go; ``last_token`` is the time of the
        token already emitted (engine convention), or None when the first is still to come."""
        seq = self._seq
        self._seq = seq + 1
        req._seq = seq
        key = self._rounds + remaining
        req._finish_key = key
        req._pen_base = self._penalties.value(seq) if self._penalty_events else 0
        req._last_token = last_token
        req._next = None
        tail = self.tail
        req._prev = tail
        if tail is None:
            self.head = req
        else:
            tail._next = req
        self.tail = req
        if self._frontier is None:
            self._frontier = req
        self.size += 1
        heappush(self._heap, (key, seq, req))

    def serve(self, k: int, now: float, finished: list[Request]) -> None:
        """Serve the first ``k`` decoders one token each, the round ending at ``now``;
        append the requests that got their last token to ``finished``."""
        hist = self._tbt
        before = self._served_before
        last_round = self._last_round_time
        frontier = self._frontier
        if k >= before:
            # Requests from the old frontier up to position k rejoin (or join) the served prefix.
            first_token = self._first_token
            for _ in range(k - before):
                last = frontier._last_token
                if last is None:
                    first_token[frontier.id] = now
                else:
                    gap = int((now - last) * TICKS_PER_S + 0.5)
                    hist[gap] = hist.get(gap, 0) + 1
                frontier = frontier._next
            in_sync = before
        else:
            # The prefix shrinks: positions k..before-1 drop out, their last token was last round.
            req = self.tail if frontier is None else frontier._prev
            for _ in range(before - k):
                req._last_token = last_round
                frontier = req
                req = req._prev
            in_sync = k
        if in_sync:
            gap = int((now - last_round) * TICKS_PER_S + 0.5)
            hist[gap] = hist.get(gap, 0) + in_sync
        self._frontier = frontier
        self._last_round_time = now
        rounds = self._rounds = self._rounds + 1
        if frontier is not None:
            self._penalties.add_suffix(frontier._seq)
            self._penalty_events += 1
        heap = self._heap
        done = 0
        while heap and heap[0][0] <= rounds:
            _, seq, req = heappop(heap)
            if self._penalty_events:
                key = req._finish_key + self._penalties.value(seq) - req._pen_base
                if key > rounds:
                    heappush(heap, (key, seq, req))
                    continue
            prev, nxt = req._prev, req._next
            if prev is None:
                self.head = nxt
            else:
                prev._next = nxt
            if nxt is None:
                self.tail = prev
            else:
                nxt._prev = prev
            finished.append(req)
            done += 1
        self._served_before = k - done
        self.size -= done

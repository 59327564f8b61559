"""Decode-phase requests, served one token per round, oldest first, without per-request loops.

Every policy here serves "the first k decoders" each round. The pool keeps them in an intrusive
FCFS list and a *frontier*: the first request that was not served in the last round (everything
before it was). A round that serves the first k only walks from the old frontier to the new one,
so its cost is the change in k, and a round that serves everyone again costs O(1).

Progress is a global round counter. Only requests in the served prefix sit in the finish heap:
one that joins the prefix after round G with r tokens to go finishes at round G + r. One that
drops out of the prefix stores its remaining tokens and leaves a stale heap entry behind (its
key no longer matches, so it is skipped when popped). Joining and dropping out happen on the
frontier walks above, so a round costs the change in k, whatever the length of the tail.

Time-between-tokens are accumulated as a histogram {gap ticks: count}: requests served in two
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


class DecodePool:
    """FCFS decoders with O(1) full rounds; see the module docstring for the scheme."""

    def __init__(self, first_token: list[float], tbt_hist: dict[int, int]) -> None:
        self.head: Request | None = None
        self.tail: Request | None = None
        self.size = 0
        self._frontier: Request | None = None
        self._served_before = 0
        self._rounds = 0
        self._heap: list[tuple[int, int, Request]] = []
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
        token already emitted (engine convention), or None when the first is still to come.
        A new request joins the unserved tail; the next round that reaches it serves it."""
        req._seq = self._seq
        self._seq += 1
        req._remaining = remaining
        req._finish_key = -1
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

    def serve(self, k: int, now: float, finished: list[Request]) -> None:
        """Serve the first ``k`` decoders one token each, the round ending at ``now``;
        append the requests that got their last token to ``finished``."""
        hist = self._tbt
        heap = self._heap
        before = self._served_before
        last_round = self._last_round_time
        frontier = self._frontier
        rounds = self._rounds
        if k >= before:
            # Requests from the old frontier up to position k join (or rejoin) the prefix.
            first_token = self._first_token
            for _ in range(k - before):
                last = frontier._last_token
                if last is None:
                    first_token[frontier.id] = now
                else:
                    gap = int((now - last) * TICKS_PER_S + 0.5)
                    hist[gap] = hist.get(gap, 0) + 1
                key = rounds + frontier._remaining
                frontier._finish_key = key
                heappush(heap, (key, frontier._seq, frontier))
                frontier = frontier._next
            in_sync = before
        else:
            # The prefix shrinks: positions k..before-1 drop out after a token last round.
            req = self.tail if frontier is None else frontier._prev
            for _ in range(before - k):
                req._last_token = last_round
                req._remaining = req._finish_key - rounds
                req._finish_key = -1
                frontier = req
                req = req._prev
            in_sync = k
        if in_sync:
            gap = int((now - last_round) * TICKS_PER_S + 0.5)
            hist[gap] = hist.get(gap, 0) + in_sync
        self._frontier = frontier
        self._last_round_time = now
        rounds = self._rounds = rounds + 1
        done = 0
        while heap and heap[0][0] <= rounds:
            key, _, req = heappop(heap)
            if req._finish_key != key:
                continue  # stale: the request dropped out of the prefix since this push
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

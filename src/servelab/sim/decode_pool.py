"""Decode-phase requests, served one token per round, oldest first, without per-request loops.

Every policy here serves "the first k decoders" each round. The pool keeps them in a list in
the order they entered decode, and a *frontier*: the index just past the requests served in the
last round. A round that serves the first k only walks from the old frontier to the new one, so
its cost is the change in k (amortised, below), and a round that serves everyone again costs
O(1).

Progress is a global round counter. Only requests in the served prefix are booked to finish:
one that joins the prefix after round G with r tokens to go finishes at round G + r, and is
filed in a bucket {round: requests} (round numbers are consecutive integers, so a dict of
buckets replaces a heap). One that drops out of the prefix stores its remaining tokens and
leaves a stale entry behind (its key no longer matches, so it is skipped when its bucket comes
up). Joining and dropping out happen on the frontier walks above, so a round costs the change in
k, whatever the length of the unserved tail.

Finished requests are not removed from the list one by one; they are marked and skipped. The
list is compacted when they outnumber the live ones, or when the frontier walks have stepped
over more of them than there are live ones: each compaction is paid for by that many finishes
or steps, so finished entries add O(1) per request amortised to the walks.

Time-between-tokens are accumulated as a histogram {gap ticks: count}: requests served in two
consecutive rounds all see the same gap, so one dict update covers them; only requests that
rejoin the served prefix, or get their first decode token, are handled one by one. Latency
statistics cover completed requests only, so the pool also keeps each round's gap and, on each
request, the runs of consecutive rounds it was served in: when a run stops, the gaps of the
requests still decoding are taken back out (``inflight_gaps``), at a cost of their tokens alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from servelab.core.request import FINISHED, UNSERVED, Request

#: TBT gaps are kept as integer ticks of 0.1 microsecond, so that equal gaps share one
#: histogram bin whatever float noise their subtraction carries (and ``round`` is slow).
TICKS_PER_S = 10_000_000


class DecodePool:
    """FCFS decoders with O(1) full rounds; see the module docstring for the scheme."""

    __slots__ = ("_buckets", "_compacted_at", "_dead_beyond", "_dead_walked", "_finish",
                 "_first_token", "_frontier", "_last_round_time", "_order", "_round_gaps",
                 "_rounds", "_served_before", "_tbt", "completed", "size")

    def __init__(self, first_token: list[float], finish: list[float],
                 tbt_hist: defaultdict[int, int]) -> None:
        """Token times are written straight into ``first_token`` and ``finish`` (indexed by
        request id) and gaps into ``tbt_hist``, so the engine never touches a decoder."""
        self._order: list[Request] = []  # entered-decode order; finished ones marked, not removed
        self._compacted_at = 0  # ``completed`` at the last compaction: the rest are in _order
        self._dead_beyond = False  # whether any may lie beyond the frontier (after a shrink)
        self._dead_walked = 0  # finished entries the frontier walks stepped over since then
        self.size = 0  # live decoders
        self.completed = 0
        self._frontier = 0  # index just past the served prefix of ``_order``
        self._served_before = 0  # live decoders before the frontier (served last round)
        self._rounds = 0
        self._round_gaps: list[int] = []  # ticks from round r-1 to round r, at index r-1
        self._buckets: defaultdict[int, list[Request]] = defaultdict(list)
        self._last_round_time = 0.0
        self._first_token = first_token
        self._finish = finish
        self._tbt = tbt_hist

    def __iter__(self) -> Iterator[Request]:
        for req in self._order:
            if req._finish_key != FINISHED:
                yield req

    def add(self, reqs: list[Request], first_token_at: float | None = None) -> None:
        """Enter decode at the unserved tail; the next round that reaches them serves them.

        ``first_token_at`` is when the prefill's iteration emitted output token 1 (engine
        convention); without it every output token is still to come (paper convention).
        A new request already carries the pool's initial state (see ``Request``)."""
        if first_token_at is not None:
            for req in reqs:
                req._remaining = req.output_tokens - 1
                req._last_token = first_token_at
        self._order.extend(reqs)
        self.size += len(reqs)

    def serve(self, k: int, now: float) -> None:
        """Serve the first ``k`` decoders one token each, the round ending at ``now``."""
        order = self._order
        hist = self._tbt
        before = self._served_before
        last_round = self._last_round_time
        i = self._frontier
        rounds = self._rounds
        this_round = rounds + 1
        gap = int((now - last_round) * TICKS_PER_S + 0.5)
        self._round_gaps.append(gap)
        walked = 0  # finished entries stepped over by this round's walk
        if k > before:
            # Live requests from the old frontier up to the k-th join (or rejoin) the prefix.
            if self._dead_beyond:
                joining: list[Request] = []
                while len(joining) < k - before:
                    req = order[i]
                    i += 1
                    if req._finish_key != FINISHED:
                        joining.append(req)
                    else:
                        walked += 1
            else:
                joining = order[i:i + k - before]
                i += k - before
            first_token = self._first_token
            buckets = self._buckets
            for req in joining:
                last = req._last_token
                req._segment_start = this_round
                if last is None:  # its first token
                    first_token[req.id] = now
                    key = rounds + req.output_tokens
                else:
                    ticks = int((now - last) * TICKS_PER_S + 0.5)
                    hist[ticks] += 1
                    gaps = req._gaps
                    if gaps is None:
                        req._gaps = [ticks]
                    else:
                        gaps.append(ticks)
                    key = rounds + req._remaining
                req._finish_key = key
                buckets[key].append(req)
            in_sync = before
        elif k < before:
            # The prefix shrinks: its last before-k live requests drop out after a token
            # last round. Finished requests passed on the way now lie beyond the frontier.
            need = before - k
            while need:
                i -= 1
                req = order[i]
                key = req._finish_key
                if key == FINISHED:
                    self._dead_beyond = True
                    walked += 1
                    continue
                need -= 1
                req._last_token = last_round
                req._remaining = key - rounds
                req._finish_key = UNSERVED
                segments = req._segments
                if segments is None:
                    req._segments = [req._segment_start, rounds]
                else:
                    segments += (req._segment_start, rounds)
            in_sync = k
        else:
            in_sync = k
        if in_sync:
            hist[gap] += in_sync
        self._frontier = i
        self._last_round_time = now
        rounds = self._rounds = this_round
        done = 0
        bucket = self._buckets.pop(rounds, None)
        if bucket is not None:
            finish = self._finish
            done = len(bucket)
            for req in bucket:
                if req._finish_key == rounds:
                    req._finish_key = FINISHED
                    finish[req.id] = now
                else:  # stale: it dropped out since it was filed
                    done -= 1
            self.size -= done
            self.completed += done
        self._served_before = k - done
        if walked:
            self._dead_walked += walked
        # Compacting costs O(list); either trigger has paid for it: more finished entries than
        # live ones, or more steps over finished entries than live ones since the last time.
        if (self.completed - self._compacted_at > self.size
                or self._dead_walked > self.size):
            self._compact()

    def inflight_gaps(self) -> list[int]:
        """The gaps (ticks) recorded so far for requests still decoding, each once.

        A request served in rounds s..e without a break saw the round gaps of rounds s+1..e;
        the gap into round s was recorded on its own (or was its first token)."""
        round_gaps = self._round_gaps
        gaps: list[int] = []
        for req in self:
            if req._gaps is not None:
                gaps += req._gaps
            segments = req._segments
            if segments is not None:
                for j in range(0, len(segments), 2):
                    gaps += round_gaps[segments[j]:segments[j + 1]]
            if req._finish_key >= 0:  # served last round: its current run is still open
                gaps += round_gaps[req._segment_start:self._rounds]
        return gaps

    def _compact(self) -> None:
        """Drop finished requests from the list. Exactly ``_served_before`` live requests lie
        before the frontier, so that is where it lands."""
        self._order[:] = [req for req in self._order if req._finish_key != FINISHED]
        self._frontier = self._served_before
        self._compacted_at = self.completed
        self._dead_beyond = False
        self._dead_walked = 0

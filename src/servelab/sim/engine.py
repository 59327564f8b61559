"""One simulated engine: a scheduler, a batch-time model and a stream of requests.

Events are arrivals and batch boundaries only. Each iteration asks the scheduler for a batch,
checks it against the model's constraints (budget, request cap, prefill before decode, at most
one decode token per request), advances time by the batch's duration and applies it. Per-request
work is O(1) and per-iteration work does not grow with the number of decoding requests when the
scheduler serves decoders oldest first (see ``decode_pool``).
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

import numpy as np
from numpy import ndarray  # not np.ndarray in the dataclasses below: mypyc#1000

from servelab.core.request import Request
from servelab.errors import SchedulerError
from servelab.schedulers.base import Scheduler
from servelab.sim.decode_pool import DecodePool
from servelab.timing.models import TimingModel
from servelab.timing.presets import CONVENTIONS

#: Backlog samples taken over the arrival window (evenly spaced in time).
BACKLOG_SAMPLES = 2000


@dataclass
class BatchRecord:
    """One iteration, listed explicitly (only when ``record_batches`` is on: O(batch) each)."""

    start: float
    end: float
    prefill: list[tuple[int, int]]
    decode: list[int]


@dataclass
class EngineRecords:
    """What one run produced: per-request times, the TBT histogram, the backlog series."""

    first_token: ndarray
    finish: ndarray
    tbt_hist: dict[int, int]
    backlog_time: ndarray
    backlog_tokens: ndarray
    backlog_requests: ndarray
    backlog_served: ndarray
    iterations: int
    busy_s: float
    end_time: float
    prefill_tokens: int
    decode_tokens: int
    admitted: int
    completed: int
    batches: list[BatchRecord] | None = field(default=None)


class Engine:
    """The simulated engine; it is also the ``EngineView`` its scheduler reads."""

    # Slots: the scheduler reads these every iteration, and slot access is the cheapest.
    __slots__ = ("_pool", "budget", "convention", "max_seqs", "now", "num_decoding",
                 "record_batches", "scheduler", "seq_limit", "timing", "waiting")

    def __init__(
        self,
        scheduler: Scheduler,
        timing: TimingModel,
        budget: int,
        max_seqs: int | None = None,
        convention: str = "paper",
        record_batches: bool = False,
    ) -> None:
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}")
        self.scheduler = scheduler
        self.timing = timing
        self.budget = budget
        self.max_seqs = max_seqs
        self.convention = convention
        self.record_batches = record_batches
        # The EngineView a scheduler reads: plain attributes, refreshed before each batch,
        # because a property call per iteration is measurable in the hot loop.
        self.now = 0.0
        self.waiting: deque[Request] = deque()
        self.num_decoding = 0
        #: The request cap as a number (the budget when there is no cap).
        self.seq_limit = max_seqs if max_seqs is not None else budget
        self._pool: DecodePool | None = None

    @property
    def decoding(self) -> Iterator[Request]:
        return iter(self._pool) if self._pool is not None else iter(())

    # -- the run ----------------------------------------------------------------------------
    def run(
        self,
        arrival: Sequence[float],
        prompt: Sequence[int],
        output: Sequence[int],
        horizon: float,
        drain: bool = False,
    ) -> EngineRecords:
        """Simulate requests (sorted by arrival) until ``horizon``, or until all finish."""
        n = len(arrival)
        # Plain Python numbers: numpy scalars in the time arithmetic cost a third more wall time
        # (measured on the pure-Python engine).
        # A sentinel arrival at infinity lets the arrival check skip its bounds test.
        arrival = [*np.asarray(arrival, dtype=float).tolist(), math.inf]
        prompt = np.asarray(prompt, dtype=np.int64).tolist()
        output = np.asarray(output, dtype=np.int64).tolist()
        if n and (min(prompt) < 1 or min(output) < 1):
            raise ValueError("every request needs at least 1 prompt and 1 output token")
        engine_convention = self.convention == "engine"
        # Token slots brought by the first i arrivals: the backlog is read off it at sample time.
        arrived_work = [0, *accumulate([p + d - engine_convention
                                        for p, d in zip(prompt, output, strict=True)])]
        first_token = [math.nan] * n
        finish = [math.nan] * n
        tbt_hist: defaultdict[int, int] = defaultdict(int)
        pool = DecodePool(first_token, finish, tbt_hist)
        self._pool = pool
        waiting = self.waiting
        waiting.clear()
        budget = self.budget
        seq_limit = self.seq_limit
        schedule = self.scheduler.schedule
        table = self.timing.token_table(budget) if self.timing.token_only else None
        duration = self.timing.duration
        batches: list[BatchRecord] | None = [] if self.record_batches else None

        # At least a picosecond: a subnormal horizon would make the grid overflow to infinity.
        sample_dt = max(horizon / BACKLOG_SAMPLES, 1e-12)
        next_sample = 0.0
        s_time: list[float] = []
        s_tokens: list[int] = []
        s_requests: list[int] = []
        s_served: list[int] = []

        now = 0.0
        idle = 0.0
        nxt = 0  # index of the next arrival
        next_arrival = arrival[0]
        processed = 0  # token slots processed so far
        completed = 0  # outside the pool: requests whose prefill emitted their only token
        iterations = 0
        prefilled: list[Request] = []

        while True:
            while next_arrival <= now:
                waiting.append(Request(nxt, next_arrival, prompt[nxt], output[nxt]))
                nxt += 1
                next_arrival = arrival[nxt]
            if now >= horizon and not drain:
                break
            if not waiting and not pool.size:
                if nxt >= n:
                    break
                idle += next_arrival - now  # nothing to do until the next arrival
                now = next_arrival
                continue

            self.now = now
            self.num_decoding = pool.size
            batch = schedule(self)
            try:
                chunks = batch.prefill
                k = batch.decode_first
                tokens = k
                for req, m in chunks:
                    left = req.prefill_left - m
                    if m < 1 or left < 0:
                        raise SchedulerError(f"{self.scheduler.name} gave request {req.id} a chunk "
                                             f"of {m} tokens with {req.prefill_left} left")
                    req.prefill_left = left
                    tokens += m
                    if not left:
                        if waiting[0] is req:
                            waiting.popleft()
                        else:
                            waiting.remove(req)
                        prefilled.append(req)
            except (AttributeError, TypeError, ValueError, IndexError) as exc:
                # The compiled engine refuses numpy integers here; plain ints work everywhere.
                raise SchedulerError(f"{self.scheduler.name} returned a malformed batch ({exc}): "
                                     "a Batch holds a list of (waiting request, int) chunks "
                                     "and an int decode_first") from exc
            if (not tokens or tokens > budget or len(chunks) + k > seq_limit
                    or not 0 <= k <= pool.size):
                raise SchedulerError(f"{self.scheduler.name} returned {batch!r}: empty, over "
                                     f"the budget {budget} or cap {seq_limit}, or a decode count "
                                     f"outside 0..{pool.size} (the decoding requests)")
            dt = table[tokens] if table is not None else duration(tokens - k, k, len(chunks) + k)
            if batches is not None:
                decoded = [r.id for _, r in zip(range(k), pool, strict=False)]
                batches.append(BatchRecord(now, now + dt, [(r.id, m) for r, m in chunks], decoded))
            now += dt
            iterations += 1
            processed += tokens

            # Decode first: requests whose prefill ends in this batch decode from the next one.
            if k:
                pool.serve(k, now)
            if prefilled:
                if not engine_convention:
                    pool.add(prefilled)
                else:
                    for req in prefilled:
                        first_token[req.id] = now  # the prefill's iteration emits token 1
                        if req.output_tokens == 1:
                            finish[req.id] = now
                            completed += 1
                    pool.add([r for r in prefilled if r.output_tokens > 1], now)
                prefilled.clear()

            if now >= next_sample:
                s_time.append(now)
                s_tokens.append(arrived_work[nxt] - processed)
                s_requests.append(len(waiting) + pool.size)
                s_served.append(processed)
                next_sample = (math.floor(now / sample_dt) + 1) * sample_dt

        # Latency statistics cover completed requests: take back the gaps of those in flight.
        for ticks in pool.inflight_gaps():
            left = tbt_hist[ticks] - 1
            if left:
                tbt_hist[ticks] = left
            else:
                del tbt_hist[ticks]
        # Totals follow from the token accounting, so the loop does not count them.
        prefill_total = sum(prompt[:nxt]) - sum(r.prefill_left for r in waiting)
        self.now = now
        return EngineRecords(
            first_token=np.asarray(first_token),
            finish=np.asarray(finish),
            tbt_hist=dict(tbt_hist),
            backlog_time=np.asarray(s_time, dtype=float),
            backlog_tokens=np.asarray(s_tokens, dtype=np.int64),
            backlog_requests=np.asarray(s_requests, dtype=np.int64),
            backlog_served=np.asarray(s_served, dtype=np.int64),
            iterations=iterations,
            busy_s=now - idle,
            end_time=now,
            prefill_tokens=prefill_total,
            decode_tokens=processed - prefill_total,
            admitted=nxt,
            completed=completed + pool.completed,
            batches=batches,
        )

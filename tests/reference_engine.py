"""A deliberately naive engine, written from the token rules alone, to check ``sim.engine``.

Every request carries explicit counters (``prefill_left``, ``decode_left``) and the list of its
output-token times; decoders sit in a plain list in the order they entered decode; every
iteration touches every request it serves. O(decoders) per iteration, but obviously right.

The rules (docs and li_dai_peng.md):

* "paper" convention: P prefill slots, then D decode slots; token 1 comes at the end of the
  first decode iteration, the last at the end of the D-th.
* "engine" convention: the iteration that completes the prefill emits token 1, then D - 1
  decode slots (D = 1 finishes at the prefill's end).
* A request's first decode slot comes in a later iteration than its last prefill chunk, and a
  decoder gets at most one token per iteration: the batch's ``decode_first = k`` serves the
  first k decoders in the order they entered decode (ties: the order of the batch's chunks),
  and an explicit ``decode`` list serves exactly the decoders it names.

It is an ``EngineView`` like the real engine, so the very same scheduler objects drive both.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

from servelab.schedulers.base import Scheduler
from servelab.timing.models import TimingModel


class RefRequest:
    """Explicit per-request state; ``prefill_left`` is what schedulers read."""

    def __init__(self, id: int, arrival: float, prompt: int, output: int, engine: bool) -> None:
        self.id = id
        self.arrival = arrival
        self.prompt_tokens = prompt
        self.output_tokens = output
        self.prefill_left = prompt
        self.decode_left = output - 1 if engine else output  # decode slots still to run
        self.token_times: list[float] = []  # one entry per output token, in order


@dataclass
class RefBatch:
    start: float
    end: float
    prefill: list[tuple[int, int]]
    decode: list[int]
    num_decoding: int  # decoders present when the batch was formed (k < this: a partial round)


@dataclass
class RefResult:
    first_token: list[float]
    finish: list[float]
    gaps: list[float]  # every time-between-tokens, seconds
    batches: list[RefBatch]


class ReferenceEngine:
    """Drained runs only: every request is simulated to its last token. Unlimited memory
    (the engine's KV bookkeeping is checked in test_memory.py against its own two paths)."""

    kv = None

    def __init__(
        self,
        scheduler: Scheduler,
        timing: TimingModel,
        budget: int,
        max_seqs: int | None = None,
        convention: str = "paper",
    ) -> None:
        assert convention in ("paper", "engine")
        self.scheduler = scheduler
        self.timing = timing
        self.budget = budget
        self.max_seqs = max_seqs
        self.seq_limit = budget if max_seqs is None else max_seqs
        self.engine_convention = convention == "engine"
        self.now = 0.0
        self.waiting: deque[RefRequest] = deque()
        self.decoders: list[RefRequest] = []
        self.prefilling: list[RefRequest] = []  # begun prefills, in the order they began

    @property
    def num_decoding(self) -> int:
        return len(self.decoders)

    @property
    def decoding(self) -> Iterator[RefRequest]:
        return iter(list(self.decoders))

    def shortest_waiting(self) -> Iterator[RefRequest]:
        """Begun first, then shortest prompt first, then oldest: a sort each call, obviously
        right."""
        fresh = [r for r in self.waiting if r.prefill_left == r.prompt_tokens]
        return iter([*self.prefilling, *sorted(fresh, key=lambda r: (r.prefill_left, r.id))])

    def first_decoders(self, k: int) -> list[RefRequest]:
        return self.decoders[:max(k, 0)]

    def last_decoders(self, k: int) -> list[RefRequest]:
        return self.decoders[::-1][:max(k, 0)]

    def run(
        self, arrival: Sequence[float], prompt: Sequence[int], output: Sequence[int]
    ) -> RefResult:
        engine = self.engine_convention
        reqs = [
            RefRequest(i, float(a), int(p), int(d), engine)
            for i, (a, p, d) in enumerate(zip(arrival, prompt, output, strict=True))
        ]
        assert all(a.arrival <= b.arrival for a, b in pairwise(reqs))
        not_arrived = deque(reqs)
        batches: list[RefBatch] = []
        done = 0
        while done < len(reqs):
            while not_arrived and not_arrived[0].arrival <= self.now:
                self.waiting.append(not_arrived.popleft())
            if not self.waiting and not self.decoders:
                self.now = not_arrived[0].arrival  # idle: jump to the next arrival
                continue

            batch = self.scheduler.schedule(self)
            chunks = list(batch.prefill)
            if batch.decode is None:
                k = batch.decode_first
                assert 0 <= k <= len(self.decoders)
                served = self.decoders[:k]
            else:
                served = list(batch.decode)
                k = len(served)
                assert len({id(r) for r in served}) == k
                assert all(any(r is d for d in self.decoders) for r in served)
            prefill_tokens = sum(n for _, n in chunks)
            assert 0 < prefill_tokens + k <= self.budget
            assert len(chunks) + k <= self.seq_limit
            assert len({id(r) for r, _ in chunks}) == len(chunks)
            start = self.now
            for r, n in chunks:
                # In ``waiting`` means arrived with prefill left (a scan would be O(queue)).
                assert isinstance(r, RefRequest) and r.arrival <= start
                assert 1 <= n <= r.prefill_left
            end = start + self.timing.duration(prefill_tokens, k, len(chunks) + k)
            batches.append(RefBatch(start, end, [(r.id, n) for r, n in chunks],
                                    [r.id for r in served], len(self.decoders)))
            finished = 0
            for r in served:
                r.decode_left -= 1
                r.token_times.append(end)
                finished += r.decode_left == 0
            if finished:
                self.decoders = [r for r in self.decoders if r.decode_left > 0]
                done += finished
            # Prefills completed now enter decode after this batch's decoders were served.
            for r, n in chunks:
                if r.prefill_left == r.prompt_tokens and n < r.prefill_left:
                    self.prefilling.append(r)
                r.prefill_left -= n
                if r.prefill_left == 0:
                    if r in self.prefilling:
                        self.prefilling.remove(r)
                    self.waiting.remove(r)
                    if engine:
                        r.token_times.append(end)  # the prefill's iteration emits token 1
                    if r.decode_left > 0:
                        self.decoders.append(r)
                    else:
                        done += 1
            self.now = end

        gaps: list[float] = []
        for r in reqs:
            assert len(r.token_times) == r.output_tokens
            gaps.extend(b - a for a, b in pairwise(r.token_times))
        return RefResult(
            first_token=[r.token_times[0] for r in reqs],
            finish=[r.token_times[-1] for r in reqs],
            gaps=gaps,
            batches=batches,
        )

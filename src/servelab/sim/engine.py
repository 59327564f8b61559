"""One simulated engine: a component with a lifecycle, driven by a loop (``sim.loop``).

- ``admit(req)``: a request joins the waiting queue (a router may call it at any time);
- ``start_batch(now)``: ask the scheduler for a batch, check it against the model's rules
  (budget, request cap, prefill before decode, at most one decode token per request), and
  return when it ends, or None when there is nothing to do or the policy waits on purpose
  (then ``idle_until`` says when to ask it again at the latest);
- ``finish_batch()``: apply the batch, all of it at its end time, and return the requests that
  finished or emitted their first token in it.

Because every effect of a batch lands at its end, a router that reads an engine's load while a
batch runs sees a consistent state. The engine is also the ``EngineView`` its scheduler reads.
Per-request work is O(1), and per-iteration work does not grow with the number of decoding
requests when the scheduler serves decoders oldest first (see ``decode_pool``). What a run
records lives in ``RequestRecords`` (per-request times, TBT) and in observers called at each
batch end (backlog samples), not in the engine.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import index
from typing import Any, SupportsIndex

from mypy_extensions import mypyc_attr

from servelab.core.batch import Batch
from servelab.core.convention import Convention
from servelab.core.kv import KVCache
from servelab.core.request import (
    CANCELLED,
    DECODING,
    FINISHED,
    PREEMPTED,
    PREFILLING,
    SWAPPED,
    WAITING,
    Request,
)
from servelab.errors import SchedulerError
from servelab.schedulers.base import Scheduler
from servelab.sim.decode_pool import (
    NO_TOKEN,
    DecodePool,
    Decoders,
    ExplicitDecoders,
    Parked,
    RequestRecords,
)
from servelab.sim.waiting import WaitingQueue
from servelab.timing.models import TimingModel


@dataclass
class BatchRecord:
    """One iteration, listed explicitly (only when ``record_batches`` is on: O(batch) each)."""

    start: float
    end: float
    prefill: list[tuple[int, int]]
    decode: list[int]


class LoadBoard:
    """What a router reads of a fleet, kept current by the engines themselves: for each, the
    token slots admitted and not yet processed, and the requests admitted and not finished.

    It also keeps which engine has the least of each (the first of equals), updated as the
    engines publish, so join-the-shortest-queue costs a router one call, not a scan per
    arrival. A load that falls can only make its engine the least; one that rises only
    matters if it was, and then the next question rescans.
    """

    def __init__(self, engines: list[Engine]) -> None:
        self.unprocessed = [0] * len(engines)
        self.outstanding = [0] * len(engines)
        self._least = [0, 0]  # per list: the least's index, or -1 to rescan
        for slot, engine in enumerate(engines):
            engine._board = self
            engine._slot = slot
            engine._publish()

    def publish(self, slot: int, unprocessed: int, outstanding: int) -> None:
        self._set(0, self.unprocessed, slot, unprocessed)
        self._set(1, self.outstanding, slot, outstanding)

    def _set(self, which: int, loads: list[int], slot: int, value: int) -> None:
        old = loads[slot]
        loads[slot] = value
        least = self._least[which]
        if least < 0:
            return
        if value < old:
            if value < loads[least] or (value == loads[least] and slot < least):
                self._least[which] = slot
        elif value > old and slot == least:
            self._least[which] = -1

    def _argmin(self, which: int, loads: list[int]) -> int:
        least = self._least[which]
        if least < 0:
            least = 0
            for i in range(1, len(loads)):
                if loads[i] < loads[least]:
                    least = i
            self._least[which] = least
        return least

    def least_unprocessed(self) -> int:
        """The engine with the fewest unprocessed tokens (the first of equals)."""
        return self._argmin(0, self.unprocessed)

    def least_outstanding(self) -> int:
        """The engine with the fewest outstanding requests (the first of equals)."""
        return self._argmin(1, self.outstanding)


@mypyc_attr(allow_interpreted_subclasses=True)
class BatchObserver:
    """Told about every batch an engine finishes (backlog samplers, later per-class records);
    plain Python may define one."""

    def batch_done(self, engine: Engine, now: float) -> None:
        raise NotImplementedError


class Engine:
    """The simulated engine; it is also the ``EngineView`` its scheduler reads."""

    def __init__(
        self,
        scheduler: Scheduler,
        timing: TimingModel,
        budget: SupportsIndex,
        max_seqs: SupportsIndex | None = None,
        convention: Convention | str = "paper",
        record_batches: bool = False,
        kv: KVCache | None = None,
        slo_classes: tuple[Any, ...] = (),
    ) -> None:
        if not isinstance(convention, Convention):
            convention = Convention.named(convention)
        self.scheduler = scheduler
        self.timing = timing
        # Plain ints from here on, whatever integer type a caller (numpy, say) passed.
        budget = index(budget)
        max_seqs = None if max_seqs is None else index(max_seqs)
        self.budget = budget
        self.max_seqs = max_seqs
        self.convention = convention
        # Convention.work as plain integer arithmetic: the output tokens a prefill emits.
        self._engine_convention = 1 if convention.first_token_at_prefill else 0
        #: The request cap as a number (the budget when there is no cap).
        self.seq_limit = max_seqs if max_seqs is not None else budget
        self.records = RequestRecords(0)
        # Returns ``object`` as far as the compiled engine knows: see ``start_batch``.
        self._schedule: Callable[[Any], object] = scheduler.schedule
        self._explicit = scheduler.decode_order == "explicit"
        self._decoders: Decoders = (ExplicitDecoders(self.records) if self._explicit
                                    else DecodePool(self.records))
        # The same object, typed by its form (one of them None).
        self._pool: DecodePool | None = (None if self._explicit
                                         else self._decoders)  # type: ignore[assignment]
        self._named: ExplicitDecoders | None = (self._decoders if self._explicit  # type: ignore[assignment]
                                                else None)
        self._table = timing.token_table(budget) if timing.token_only else None
        #: The KV cache, or None: unlimited memory, and no memory bookkeeping at all.
        self.kv = kv
        if kv is not None:
            self._decoders.track_kv(kv.block_size)
        # Slots allocated to requests whose prefill has begun (by id; they move to their
        # decode entry when it ends), and the slots a policy reserves at admission.
        self._kv_alloc: dict[int, int] = {}
        self._reserve = scheduler.kv_reserve_tokens()
        # Swapped-out requests, in the order they were swapped out (their progress is in
        # ``_parked``), and the transfer time the batch being formed pays.
        self._swapped: deque[Request] = deque()
        self._transfer_s = 0.0
        self._idle_transfer_s = 0.0
        #: When a policy that idled on purpose is to be asked again (``Batch.idle_until``);
        #: infinity otherwise.
        self.idle_until = math.inf
        #: The run's SLO classes (``core.slo.SloClass``), for policies that read a request's
        #: targets: ``slo_classes[req.slo_class]``.
        self.slo_classes = slo_classes
        self.observers: list[BatchObserver] = []
        self.batches: list[BatchRecord] | None = [] if record_batches else None
        # The view a scheduler reads: plain attributes, refreshed before each batch, because a
        # property call per iteration is measurable in the hot loop.
        self.now = 0.0
        self.waiting = WaitingQueue()
        self.num_decoding = 0
        #: When the last batch ended, and the running mean batch time (over every batch).
        self.last_batch_end = 0.0
        self.mean_batch_s = 0.0
        # Totals, and the load a router reads: token slots admitted and not yet processed,
        # and requests admitted and not yet finished.
        self.iterations = 0
        self.admitted = 0
        self.processed_tokens = 0
        self.prefill_tokens = 0
        self.unprocessed_tokens = 0
        self.outstanding = 0
        self.idle_s = 0.0
        # Preemptions, and tokens prefilled again after them, by service-level class (class
        # index -> count; the totals are their sums).
        self.preemptions_by_class: dict[int, int] = {}
        self.recomputed_by_class: dict[int, int] = {}
        self.swapped_blocks = 0  # blocks copied out to host memory, over the run
        self.kv_peak_blocks = 0  # the most blocks in use at once
        # The batch in flight, applied at its end.
        self._in_flight = False
        self._end = 0.0
        self._chunks: list[tuple[Request, int]] = []
        self._k = 0
        self._listed: list[Request] = []
        self._evict: list[Request] = []
        self._no_requests: list[Request] = []  # the lists of a first-k batch; never appended to
        self._tokens = 0
        self._decoded_ids: list[int] = []
        self._events: list[Request] = []
        self._parked: dict[int, Parked] = {}
        self._board: LoadBoard | None = None  # set by a LoadBoard, when routed to
        self._slot = 0

    # -- the view ---------------------------------------------------------------------------
    @property
    def decoding(self) -> Iterator[Request]:
        """Decoding requests in the order they entered decode."""
        return iter(self._decoders)

    @property
    def prefilling(self) -> list[Request]:
        """Waiting requests whose prefill has begun, in the order it began."""
        return self.waiting.started

    def shortest_waiting(self) -> Iterator[Request]:
        """Waiting requests, begun prefills first, then the rest shortest prompt first."""
        return self.waiting.shortest_first()

    def first_decoders(self, k: SupportsIndex) -> list[Request]:
        """The ``k`` decoders that entered decode earliest: the ones ``decode_first=k``
        serves."""
        return self._decoders.first(index(k))

    def last_decoders(self, k: SupportsIndex) -> list[Request]:
        """The ``k`` decoders that entered decode latest, newest first."""
        return self._decoders.last(index(k))

    # KV memory, for policies that schedule by it (all 0 or False when memory is unlimited).
    def blocks_to_admit(self, req: Request) -> int:
        """New blocks a first chunk of ``req`` takes: its whole prefill's (at least the
        policy's reservation), or 0 once its prefill has begun."""
        kv = self.kv
        if kv is None or req.status == PREFILLING:  # allocated when its prefill began
            return 0
        return kv.blocks_for(self._admission_slots(req))

    def _admission_slots(self, req: Request) -> int:
        """Slots a first chunk of ``req`` allocates: its whole prefill, at least the policy's
        reservation."""
        left = req.prefill_left
        return left if left > self._reserve else self._reserve

    def decode_blocks(self, k: SupportsIndex) -> int:
        """New blocks the next round takes if it serves the first ``k`` decoders."""
        return self._decoders.decode_blocks(index(k)) if self.kv is not None else 0

    def needs_block(self, req: Request) -> bool:
        """Whether decoding ``req`` next takes a new block."""
        return self.kv is not None and self._decoders.needs_block(req)

    def blocks_held(self, req: Request) -> int:
        """Blocks ``req`` holds here: what preempting it frees."""
        kv = self.kv
        if kv is None:
            return 0
        if req.status == DECODING:
            return self._decoders.blocks_held(req)
        return self._kv_alloc.get(req.id, 0) // kv.block_size

    def progress(self, req: Request) -> tuple[int, float]:
        """(output tokens emitted, the last one's time, -1.0 before the first), in O(1)."""
        status = req.status
        if status == DECODING:
            return self._decoders.progress(req)
        parked = self._parked.get(req.id)
        if parked is not None:
            return req.output_tokens - parked.remaining, parked.last_token
        if status == FINISHED:
            return req.output_tokens, self.records.finish[req.id]
        return 0, NO_TOKEN

    @property
    def preemptions(self) -> int:
        """Requests preempted here, by recompute or swap, over the run."""
        return sum(self.preemptions_by_class.values())

    @property
    def recomputed_tokens(self) -> int:
        """Prompt and output tokens prefilled again after recompute preemptions."""
        return sum(self.recomputed_by_class.values())

    # -- the lifecycle ----------------------------------------------------------------------
    def _publish(self) -> None:
        board = self._board
        if board is not None:
            board.publish(self._slot, self.unprocessed_tokens, self.outstanding)

    def use_records(self, records: RequestRecords) -> None:
        """Write per-request times into ``records`` (indexed by request id; a run's engines
        share one)."""
        self.records = records
        self._decoders.records = records

    @property
    def busy(self) -> bool:
        """Whether a batch is running."""
        return self._in_flight

    def has_work(self) -> bool:
        return bool(self.waiting) or self._decoders.size > 0 or bool(self._swapped)

    def admit(self, req: Request) -> None:
        """A request joins the waiting queue; the next batch formed may take it."""
        if req.prompt_tokens < 1 or req.output_tokens < 1:
            raise ValueError(f"request {req.id} needs at least 1 prompt and 1 output token")
        req.status = WAITING
        self.waiting.append(req)
        self.admitted += 1
        self.outstanding += 1
        self.unprocessed_tokens += (req.prompt_tokens + req.output_tokens
                                    - self._engine_convention)
        if self._board is not None:
            self._publish()

    def cancel(self, req: Request) -> None:
        """Withdraw a request that is not decoding (a real client went away): one that
        waits to prefill, has begun it, or was preempted (recomputed or swapped out); not
        one in the batch now running."""
        swapped = req.status == SWAPPED
        if not swapped and req not in self.waiting:
            raise ValueError(f"request {req.id} is {req.status_name} here: only a request "
                             "waiting on this engine can be cancelled")
        if self._in_flight and (swapped or any(r is req for r, _ in self._chunks)):
            raise ValueError(f"request {req.id} is in the batch now running: cancel it after "
                             "the batch ends")
        parked = self._parked.pop(req.id, None)
        # Its unprocessed slots: the prefill left and every decode token still to come.
        if parked is None:
            to_decode = req.output_tokens - self._engine_convention
        else:  # preempted: its gaps so far will not belong to a completed request
            to_decode = parked.remaining
            self.records.take_back(parked.gaps, parked.slo_class)
        req.status = CANCELLED
        if swapped:
            self._swapped.remove(req)
        else:
            self.waiting.leave(req)
            self._free_allocation(req)
        self.outstanding -= 1
        self.unprocessed_tokens -= req.prefill_left + to_decode
        self._publish()

    def _free_allocation(self, req: Request) -> None:
        """A request whose prefill had begun gives its blocks back."""
        kv = self.kv
        if kv is not None:
            slots = self._kv_alloc.pop(req.id, 0)
            kv.free_blocks += slots // kv.block_size

    def start_batch(self, now: float) -> float | None:
        """Form the next batch at ``now``; return its end time, or None when idle."""
        if self._in_flight:
            raise RuntimeError("a batch is already running on this engine")
        self.idle_until = math.inf
        # What this batch pays for swaps: swap-ins made before a call that idled, then its own.
        self._transfer_s = self._idle_transfer_s
        self._idle_transfer_s = 0.0
        if self._swapped:
            self._swap_in()
        if not self.waiting and not self._decoders.size:
            return None
        self.now = now
        named = self._named
        if named is not None:
            named.forget_handed()
        self.num_decoding = self._decoders.size
        # ``object``: a policy returning something else gets a SchedulerError, not the
        # compiled engine's own TypeError.
        returned: object = self._schedule(self)
        tokens = self._check(returned)
        if not tokens:  # the policy idles on purpose, until ``idle_until`` at the latest
            self._idle_transfer_s = self._transfer_s
            return None
        if now > self.last_batch_end:
            self.idle_s += now - self.last_batch_end
        decodes = self._k + len(self._listed)
        dt = (self._table[tokens] if self._table is not None
              else self.timing.duration(tokens - decodes, decodes, len(self._chunks) + decodes))
        if self._transfer_s:
            dt += self._transfer_s
        self._in_flight = True
        self._tokens = tokens
        self._end = now + dt
        return self._end

    def _check(self, batch: object) -> int:
        """Validate ``batch`` (without changing anything) and keep it; return its tokens."""
        if not isinstance(batch, Batch):
            raise self._malformed(f"{batch!r} is not a Batch")
        if batch.idle_until is not None:
            return self._check_idle(batch)
        # ``Batch`` types its fields as ``Any``: the compiled engine does not unbox them on the
        # way in, so numpy integers pass through ``operator.index`` like plain ones.
        try:
            chunks = batch.prefill
            k = batch.decode_first
            if type(k) is not int:
                k = index(k)
            waiting = self.waiting
            tokens = k
            exact = True  # every count a plain int: keep the scheduler's own list
            for position, chunk in enumerate(chunks):
                req: Request = chunk[0]  # checked once: native attribute reads from here on
                m = chunk[1]
                if type(m) is not int:
                    m = index(m)
                    exact = False
                if m < 1 or m > req.prefill_left:
                    raise SchedulerError(f"{self.scheduler.name} gave request {req.id} a chunk "
                                         f"of {m} tokens with {req.prefill_left} left")
                if not waiting.holds(req, position):
                    raise SchedulerError(f"{self.scheduler.name} gave a chunk to request "
                                         f"{req.id}, which is not waiting on this engine "
                                         f"({req.status_name})")
                tokens += m
            kept: list[tuple[Request, int]] = (
                chunks if exact else [(r, index(m)) for r, m in chunks])
            decode = batch.decode
            preempt = batch.preempt
        except (AttributeError, TypeError, ValueError, IndexError) as exc:
            raise self._malformed(str(exc)) from exc
        n = len(kept)
        if n > 1 and (kept[0][0] is kept[1][0] if n == 2 else
                      len({id(r) for r, _ in kept}) < n):
            raise SchedulerError(f"{self.scheduler.name} returned {batch!r}: a request in two "
                                 "chunks")
        if k and self._explicit:
            raise SchedulerError(f"{self.scheduler.name} returned {batch!r}: its "
                                 "decode_order is 'explicit', so it names its decoders "
                                 "(Batch(decode=[...])) instead of a decode_first count")
        if decode is not None or preempt is not None:
            listed, evict = self._check_named(batch, decode, preempt)
            tokens += len(listed)
            seqs = n + len(listed)
        else:
            listed = evict = self._no_requests
            seqs = n + k
        # decode_first counts the decoders left after the evictions
        size = self._decoders.size
        if evict:
            size -= sum(1 for r in evict if r.status == DECODING)
            if n and {id(r) for r, _ in kept} & {id(r) for r in evict}:
                raise SchedulerError(f"{self.scheduler.name} returned {batch!r}: a request "
                                     "both preempted and given a chunk")
        if not tokens or tokens > self.budget or seqs > self.seq_limit or not 0 <= k <= size:
            raise SchedulerError(f"{self.scheduler.name} returned {batch!r}: empty, over the "
                                 f"budget {self.budget} or cap {self.seq_limit}, or a decode "
                                 f"count outside 0..{size} (the decoding requests)")
        if self.kv is not None:
            self._check_memory(batch, kept, k, listed, evict)
        self._chunks, self._k, self._listed, self._evict = kept, k, listed, evict
        return tokens

    def _check_idle(self, batch: Batch) -> int:
        """An empty batch with ``idle_until``: nothing runs, and the engine is to be asked
        again by then (``EngineProcess``). The time must be finite, so that a policy that
        waits on purpose cannot strand a drained run; returns 0 tokens."""
        name = self.scheduler.name
        try:
            empty = (not batch.prefill and not batch.decode and not batch.preempt
                     and index(batch.decode_first) == 0)
            until = float(batch.idle_until)
        except (TypeError, ValueError) as exc:
            raise self._malformed(str(exc)) from exc
        if not empty:
            raise SchedulerError(f"{name} returned {batch!r}: idle_until is for an empty batch")
        if not self.now < until < math.inf:
            raise SchedulerError(f"{name} returned {batch!r}: idle_until must be a finite time "
                                 f"after now ({self.now})")
        self.idle_until = until
        return 0

    def _check_memory(self, batch: Batch, chunks: list[tuple[Request, int]], k: int,
                      listed: list[Request], evict: list[Request]) -> None:
        """The batch's new blocks (first chunks' whole prefills, decoders that filled their
        blocks) must fit in the free ones and those its evictions free; a swap costs its
        transfer time in this batch."""
        kv = self.kv
        assert kv is not None
        need = 0
        for req, _ in chunks:
            need += self.blocks_to_admit(req)
        if listed:
            named = self._named
            assert named is not None
            need += named.claimed_blocks()
        elif k:
            need += (self._decoders.decode_blocks(k) if not evict
                     else self._decode_blocks_after(k, evict))
        freed = 0
        for req in evict:
            held = self.blocks_held(req)
            freed += held
            if kv.preemption == "swap" and req.status == DECODING:
                self._transfer_s += held * kv.swap_block_s
        if need > kv.free_blocks + freed:
            raise SchedulerError(f"{self.scheduler.name} returned {batch!r}: it needs {need} "
                                 f"new KV blocks, and {kv.free_blocks} are free (+{freed} its "
                                 "preemptions free)")

    def _decode_blocks_after(self, k: int, evict: list[Request]) -> int:
        """Blocks the first ``k`` decoders left after ``evict`` take: one walk, O(k)."""
        gone = {r.id for r in evict}
        decoders = self._decoders
        blocks = served = 0
        for req in decoders.first(k + len(gone)):
            if req.id in gone:
                continue
            served += 1
            if served > k:
                break
            if decoders.needs_block(req):
                blocks += 1
        return blocks

    def _malformed(self, what: str) -> SchedulerError:
        return SchedulerError(f"{self.scheduler.name} returned a malformed batch ({what}): a "
                              "Batch holds a list of (waiting request, int) chunks and an int "
                              "decode_first or a list of decoding requests")

    def _check_named(self, batch: Batch, decode: Any,
                     preempt: Any) -> tuple[list[Request], list[Request]]:
        """The explicit form: decoders and preemptions named one by one."""
        name = self.scheduler.name
        if decode is not None and not self._explicit:
            raise SchedulerError(f"{name} named decoders, but its decode_order is 'fcfs'")
        listed: list[Request] = ([] if decode is None
                                 else decode if type(decode) is list else list(decode))
        evict: list[Request] = [] if preempt is None else list(preempt)
        if evict:
            decoders = self._decoders
            waiting = self.waiting
            if len({r.id for r in evict}) < len(evict) or any(
                    r not in decoders if r.status == DECODING
                    else r.status != PREFILLING or r not in waiting for r in evict):
                raise SchedulerError(f"{name} put a request twice in its preempt list, or one "
                                     "that is neither decoding nor prefilling on this engine")
        if listed:
            explicit = self._named
            assert explicit is not None
            wrong = explicit.claim(listed)
            if wrong is not None:
                raise SchedulerError(f"{name} put request {wrong.id} in its decode list twice, "
                                     "or it is not decoding on this engine")
            if evict and {r.id for r in listed} & {r.id for r in evict}:
                raise SchedulerError(f"{name} returned {batch!r}: a request both preempted and "
                                     "decoded")
        return listed, evict

    def finish_batch(self) -> list[Request]:
        """Apply the running batch at its end; return the requests that finished or emitted
        their first token in it (valid until the next ``finish_batch``)."""
        if not self._in_flight:
            raise RuntimeError("no batch is running on this engine")
        now = self._end
        events = self._events
        events.clear()
        if self._evict:
            for req in self._evict:
                self._preempt(req)
        if self.batches is not None:
            self._decoded_ids = [r.id for r in (self._listed or self._decoders.first(self._k))]
        waiting = self.waiting
        kv = self.kv
        prefilled: list[Request] | None = None
        prefill = 0
        for req, m in self._chunks:
            if kv is not None and req.status != PREFILLING:
                self._allocate(req, kv)
            prefill += m
            left = req.prefill_left - m
            req.prefill_left = left
            if left:
                if req.status != PREFILLING:
                    req.status = PREFILLING
                    waiting.begin(req)
            else:
                req.status = DECODING
                waiting.leave(req)
                if prefilled is None:
                    prefilled = [req]
                else:
                    prefilled.append(req)
        # Decode first: requests whose prefill ends in this batch decode from the next one.
        done = 0
        served = True
        if self._k:
            pool = self._pool
            assert pool is not None
            done = pool.serve(self._k, now, events)
        elif self._listed:
            named = self._named
            assert named is not None
            done = named.serve_claimed(now, events)
        else:
            served = False
        if kv is not None:
            # Blocks taken during the batch count towards the peak before finishes free any.
            if served:
                kv.free_blocks -= self._decoders.crossed
            self._note_peak(kv)
            if served:
                kv.free_blocks += self._decoders.freed
        if prefilled is not None:
            done += self._enter_decode(prefilled, now, events)
        self.outstanding -= done
        self.prefill_tokens += prefill
        tokens = self._tokens
        self.processed_tokens += tokens
        self.unprocessed_tokens -= tokens
        self.iterations += 1
        self.mean_batch_s += (now - self.now - self.mean_batch_s) / self.iterations
        if self._board is not None:
            self._publish()  # after the preemptions above, too
        self.last_batch_end = now
        self._in_flight = False
        if self.batches is not None:
            self._record_batch(now)
        for observer in self.observers:
            observer.batch_done(self, now)
        return events

    def _enter_decode(self, prefilled: list[Request], now: float,
                      events: list[Request]) -> int:
        """Requests whose prefill ended at ``now`` enter decode (or resume after preemption);
        returns how many finished instead (one output token, engine convention)."""
        records = self.records
        kv = self.kv
        fresh: list[Request] = []
        slots: list[tuple[int, int]] | None = None if kv is None else []
        done = 0
        for req in prefilled:
            # Its KV now: the slots it prefilled (prompt, plus output so far after a
            # recompute) and those its blocks hold.
            capacity = self._kv_alloc.pop(req.id) if kv is not None else 0
            if self._parked:
                parked = self._parked.pop(req.id, None)
                if parked is not None:
                    held = req.prompt_tokens + req.output_tokens - parked.remaining
                    self._decoders.resume(req, parked, held, capacity)
                    continue
            if self._engine_convention:
                records.first_token[req.id] = now  # the prefill's iteration emits token 1
                events.append(req)
                if req.output_tokens == 1:
                    records.finish[req.id] = now
                    req.status = FINISHED
                    done += 1
                    if kv is not None:
                        kv.free_blocks += capacity // kv.block_size
                    continue
            fresh.append(req)
            if slots is not None:
                slots.append((req.prompt_tokens, capacity))
        records.completed += done
        if fresh:
            self._decoders.add(fresh, now if self._engine_convention else NO_TOKEN, slots)
        return done

    def _allocate(self, req: Request, kv: KVCache) -> None:
        """A first chunk: blocks for the whole prefill (at least the policy's reservation)."""
        slots = kv.capacity_for(self._admission_slots(req))
        self._kv_alloc[req.id] = slots
        kv.free_blocks -= slots // kv.block_size

    def _note_peak(self, kv: KVCache) -> None:
        used = kv.used_blocks
        if used > self.kv_peak_blocks:
            self.kv_peak_blocks = used

    def _swap_in(self) -> None:
        """Swapped-out requests come back first, oldest first, while their blocks fit above
        the watermark (or the cache is empty), each paying its transfer in this batch."""
        kv = self.kv
        assert kv is not None
        swapped = self._swapped
        while swapped:
            req = swapped[0]
            parked = self._parked[req.id]
            blocks = parked.capacity // kv.block_size
            if (kv.free_blocks - blocks < kv.watermark_blocks
                    and kv.free_blocks < kv.num_blocks):
                break
            swapped.popleft()
            del self._parked[req.id]
            kv.free_blocks -= blocks
            req.status = DECODING
            self._decoders.resume(req, parked, parked.held, parked.capacity)
            self._transfer_s += blocks * kv.swap_block_s
        self._note_peak(kv)

    def _preempt(self, req: Request) -> None:
        """Recompute preemption: KV state is lost, emitted tokens stay emitted; the request
        prefills its prompt and its output so far again, first in line. With swap (a
        decoder, under ``KVCache.preemption == "swap"``) its KV goes to host memory instead,
        and it decodes on when it comes back. A request evicted mid-prefill starts its
        prefill over, where it waits."""
        by_class = self.preemptions_by_class
        by_class[req.slo_class] = by_class.get(req.slo_class, 0) + 1
        if req.status == PREFILLING:
            self._restart_prefill(req)
            return
        parked = self._decoders.evict(req)
        self._parked[req.id] = parked
        kv = self.kv
        if kv is not None:
            blocks = parked.capacity // kv.block_size
            kv.free_blocks += blocks
            if kv.preemption == "swap":
                req.status = SWAPPED
                self._swapped.append(req)
                self.swapped_blocks += blocks
                return
        req.status = PREEMPTED
        req.prefill_left = req.prompt_tokens + req.output_tokens - parked.remaining
        self.waiting.appendleft(req)
        self._recompute(req, req.prefill_left)

    def _restart_prefill(self, req: Request) -> None:
        """A begun prefill loses its blocks and what it computed."""
        parked = self._parked.get(req.id)
        total = req.prompt_tokens + (0 if parked is None
                                     else req.output_tokens - parked.remaining)
        lost = total - req.prefill_left
        self._free_allocation(req)
        req.prefill_left = total
        req.status = WAITING if parked is None else PREEMPTED
        self.waiting.restart(req)
        self._recompute(req, lost)

    def _recompute(self, req: Request, tokens: int) -> None:
        """``tokens`` of ``req`` are to be prefilled again: work to do, and work counted as
        recomputed (for its class)."""
        by_class = self.recomputed_by_class
        by_class[req.slo_class] = by_class.get(req.slo_class, 0) + tokens
        self.unprocessed_tokens += tokens

    def _record_batch(self, now: float) -> None:
        assert self.batches is not None
        self.batches.append(BatchRecord(self.now, now, [(r.id, m) for r, m in self._chunks],
                                        self._decoded_ids))

    def take_back_inflight(self) -> None:
        """Take the gaps of the requests this engine has not finished back out of the TBT
        histograms when a run stops: decoding ones, and preempted ones."""
        self._decoders.take_back_inflight()
        for parked in self._parked.values():
            self.records.take_back(parked.gaps, parked.slo_class)


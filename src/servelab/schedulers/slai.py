"""SLAI (Bari, Hegde, de Veciana): decode deadlines plus shortest-prompt-first prefill.

Exactly as the authors' released code behaves (agrimUT/SLAI at 5098a7a,
``slai_scheduler.py``; research notes rad_slai_related.md A.4). After each batch, every
decoder that got a token in it (and every request whose prefill ended in it) gets a last
schedulable time LST = batch end + its TBT target - offset x mean batch time, the offset 5
below the KV-usage limit 0.96 and 10 at or above it. A batch then takes, in this order:

1. critical decodes (LST <= now), earliest LST first, up to the decode limit;
2. paused prefills, each as much as the budget leaves, in list order (round robin);
3. new prompts from the waiting queue, shortest first (or oldest first, or the strict tier
   first), stopping at the first that does not fit (budget, KV, active-request cap);
4. the other decodes, earliest LST first, to fill what the budget and the limit leave.

A decode needs a free KV block to run (the released code's ``can_append_slot``): when none is
free, the last paused prefill is preempted, else the decode itself. docs/slai.md lists every
rule, where the released code is odd (the mean over all batches, not a moving average), and
where this engine differs. Decoders move in cohorts (``schedulers.cohorts``), so a batch costs
a heap operation per cohort, not per token. This module and ``cohorts`` are compiled with mypyc
(issue 9's speed target, docs/performance.md); the knobs live in ``slai_options``, since a
compiled class cannot extend the plain ``SchedulerOptions`` dataclass.

What SLAI remembers of an engine between its batches (the deadlines, the paused prefills) is
kept per engine, keyed by the view's identity: replicated engines share one SLAI object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice
from operator import itemgetter
from typing import Any, ClassVar

from servelab.core.batch import Batch
from servelab.core.kv import KVCache
from servelab.core.request import DECODING, PREEMPTED, PREFILLING, WAITING, Request
from servelab.errors import ConfigError
from servelab.schedulers.base import EngineView, Scheduler
from servelab.schedulers.cohorts import MIXED, CohortHeap
from servelab.schedulers.options import SchedulerOptions
from servelab.schedulers.slai_options import SlaiOptions


class _EngineState:
    """What SLAI remembers of one engine: its decode deadlines, its paused prefills (the
    released code's list order), the requests it preempted that still wait (most recent
    first: they went to the front of the released code's waiting list), and its last batch,
    to process at the start of the next (the released ``_post_batch_processing``)."""

    __slots__ = ("completing", "early", "expect", "front", "heap", "late", "paused",
                 "prefilled")

    def __init__(self) -> None:
        self.heap = CohortHeap()
        self.paused: list[Request] = []
        self.front: list[Request] = []
        # The last batch: decode pieces taken as critical (``early``) and after the prefills
        # (``late``), each (TBT group, requests); the requests given prefill, in batch order,
        # and those among them whose prompt it finished; how many decoders there would be
        # now if none of those it served had finished.
        self.early: list[tuple[int, list[Request]]] = []
        self.late: list[tuple[int, list[Request]]] = []
        self.prefilled: list[Request] = []
        self.completing: list[Request] = []
        self.expect = 0


class _Batch:
    """The batch being formed: its tokens and requests, its free KV blocks, its preemptions.

    Blocks are counted lazily: a decode piece taken where the cache cannot run out is kept in
    ``pending``, and the exact count (one ``needs_block`` per decoder) is made only when a
    decision turns on it, which happens only when the cache is nearly full. Until then the
    free blocks lie in [``free_lo``, ``free_hi``]."""

    __slots__ = ("evicted", "free_hi", "free_lo", "pending", "preempt", "seqs", "tokens",
                 "view")

    def __init__(self, view: EngineView) -> None:
        self.view = view
        self.tokens = 0
        self.seqs = 0
        kv = view.kv
        self.free_lo = self.free_hi = kv.free_blocks if kv is not None else 0
        self.pending: list[list[Request]] = []
        self.preempt: list[Request] = []
        self.evicted: set[int] = set()

    def exact_free(self) -> int:
        """The free blocks, once the pending decoders' new blocks are counted."""
        if self.pending:
            needs = self.view.needs_block
            self.free_hi -= sum(1 for piece in self.pending for r in piece if needs(r))
            self.pending.clear()
        self.free_lo = self.free_hi
        return self.free_hi

    def take_blocks(self, blocks: int) -> None:
        self.free_lo -= blocks
        self.free_hi -= blocks

    def freed(self, req: Request) -> None:
        """``req`` is preempted: its blocks come back."""
        self.preempt.append(req)
        self.evicted.add(req.id)
        self.take_blocks(-self.view.blocks_held(req))


class Slai(Scheduler):
    """SLAI as released (module docstring; every rule in docs/slai.md)."""

    name: ClassVar[str] = "slai"
    # The decode limit, the active-request cap and deferred decodes can leave demand unserved.
    work_conserving: ClassVar[bool] = False
    decode_order: ClassVar[str] = "explicit"
    options_type: ClassVar[type[SchedulerOptions]] = SlaiOptions

    def __init__(self, **knobs: object) -> None:
        self.settings = SlaiOptions.from_mapping(knobs, self.name)
        s = self.settings
        self._limit = s.limit_total_decodes
        self._max_active = s.max_active
        self._fixed = s.fixed_offset
        self._below = s.below_memory_limit_offset
        self._above = s.above_memory_limit_offset
        self._memory_limit = s.memory_limit
        self._engines: dict[int, _EngineState] = {}
        # The class table the groups below were made for (a run's engines share one).
        self._classes: tuple[object, ...] | None = None
        self._group_of: list[int] = []  # class index -> TBT group
        self._group_tbt: list[float] = [s.time_between_tokens]
        self._strict: list[bool] = []  # class index -> in the strict tier (user_priority)
        self._tiered = False  # user_priority, and there is a strict tier

    def options(self) -> dict[str, object]:
        return self.settings.as_dict()

    # -- what SLAI keeps per engine --------------------------------------------------------
    def _fresh(self, view: EngineView) -> _EngineState:
        """A new state for an engine SLAI has not seen, or one that has run no batch yet (no
        mean batch time, nothing decoding or prefilling): an engine may reuse the id of one
        that is gone."""
        kv = view.kv
        if kv is not None and kv.preemption != "recompute":
            raise ConfigError("preemption", "slai preempts by recompute, as its released code "
                                            "does; swap is not supported")
        state = self._engines[id(view)] = _EngineState()
        classes = view.slo_classes
        if classes != self._classes:
            # Decoders served together share an LST when their TBT targets are equal; the
            # strict tier is the classes with the smallest target, when the targets differ.
            self._classes = classes
            targets = sorted({c.tbt_s for c in classes})
            self._group_tbt = targets or [self.settings.time_between_tokens]
            self._group_of = [targets.index(c.tbt_s) for c in classes]
            self._strict = [len(targets) > 1 and c.tbt_s == targets[0] for c in classes]
            self._tiered = self.settings.user_priority and any(self._strict)
        return state

    # -- the released code's post-batch processing ------------------------------------------
    def _after_batch(self, view: EngineView, state: _EngineState) -> None:
        """Paused prefills and new deadlines from the last batch: a decoder it served, or
        whose prefill it finished, gets LST = batch end + TBT target - offset x mean batch
        time; the others keep theirs."""
        paused = state.paused
        for req in state.prefilled:
            if req.status == PREFILLING:
                paused.append(req)
        for req in paused:
            if req.status != PREFILLING:  # cancelled while paused
                paused[:] = [r for r in paused if r.status == PREFILLING]
                break
        offset = self._below
        if not self._fixed:
            kv = view.kv
            used = kv.used_fraction if kv is not None else 0.0  # unlimited memory: none used
            if used >= self._memory_limit:
                offset = self._above
        end = view.last_batch_end
        shift = offset * view.mean_batch_s
        heap = state.heap
        group_tbt = self._group_tbt
        if len(group_tbt) == 1 and not heap:
            # Every decoder now was served last batch or has just entered decode: the engine
            # lists them (and a batch that names that very list back is claimed without a
            # lookup per decoder).
            members = view.first_decoders(view.num_decoding)
            if members:
                heap.push(end + group_tbt[0] - shift, 0, members)
            return
        entered = [r for r in state.completing if r.status == DECODING]
        # Only decoders the last batch served can have finished since (SLAI preempts only
        # what it takes), so their count says whether any did and a scan is needed.
        finished = state.expect + len(entered) - view.num_decoding
        for group, members in self._by_group(state, entered):
            if finished:
                members = [r for r in members if r.status == DECODING]
            if members:
                heap.push(end + group_tbt[group] - shift, group, members)

    def _by_group(self, state: _EngineState,
                  entered: list[Request]) -> Iterable[tuple[int, list[Request]]]:
        """The last batch's decoders and its new decoders by TBT group, in batch order
        (critical decodes, new decoders, the others)."""
        early, late = state.early, state.late
        if len(self._group_tbt) == 1:
            if not entered and len(early) + len(late) == 1:
                return [(early or late)[0]]
            members = [r for _, piece in early for r in piece]
            members += entered
            for _, piece in late:
                members += piece
            return [(0, members)]
        found: dict[int, list[Request]] = {}
        group_of = self._group_of
        for group, piece in [*early, *((group_of[r.slo_class], [r]) for r in entered), *late]:
            if group == MIXED:
                for req in piece:
                    found.setdefault(group_of[req.slo_class], []).append(req)
            else:
                found.setdefault(group, []).extend(piece)
        return found.items()

    # -- the batch ---------------------------------------------------------------------------
    def schedule(self, view: EngineView) -> Batch:
        state = self._engines.get(id(view))
        if state is None or (view.mean_batch_s == 0.0 and not view.num_decoding
                             and not view.prefilling):
            state = self._fresh(view)
        else:
            self._after_batch(view, state)
            front = state.front
            if front:  # those still waiting, not begun again
                front[:] = [r for r in front if r.status in (WAITING, PREEMPTED)]
        batch = _Batch(view)
        heap = state.heap
        early = self._decodes(view, state, batch, view.now, 0) if heap else []
        critical = batch.tokens
        chunks: list[tuple[Request, int]] = []
        completing: list[Request] = []
        if state.paused:
            self._paused_chunks(view, state, batch, chunks, completing)
        if (batch.tokens < view.budget and view.num_decoding + len(view.prefilling)
                < self._max_active + len(batch.preempt)):
            self._new_chunks(view, state, batch, chunks, completing)
        late = self._decodes(view, state, batch, None, critical) if heap else []
        state.early = early
        state.late = late
        state.completing = completing
        state.prefilled = [r for r, _ in chunks] if chunks else []
        preempt = batch.preempt
        state.expect = view.num_decoding - (
            sum(1 for r in preempt if r.status == DECODING) if preempt else 0)
        if len(early) + len(late) == 1:
            decode = (early or late)[0][1]  # as it is: it may be the list the engine handed
        else:
            decode = []
            for _, piece in early + late:
                decode += piece
        return Batch(chunks, decode=decode, preempt=preempt or None)

    def _decodes(self, view: EngineView, state: _EngineState, batch: _Batch,
                 critical_before: float | None, taken: int) -> list[tuple[int, list[Request]]]:
        """Decoders in LST order, up to the decode limit (``taken`` already) and the budget:
        only those whose LST has passed when ``critical_before`` is the time now (step 1),
        any otherwise (step 5). Returns the pieces taken, (TBT group, requests)."""
        heap = state.heap
        pieces: list[tuple[int, list[Request]]] = []
        budget = view.budget
        cap = view.seq_limit
        limit = self._limit
        kv = view.kv
        tokens = batch.tokens
        seqs = batch.seqs
        while heap and tokens < budget and taken < limit and seqs < cap:
            cohort = heap.top()
            if critical_before is not None and critical_before < cohort.lst:
                break
            left = len(cohort.members) - cohort.start
            count = min(limit - taken, budget - tokens, cap - seqs, left)
            if kv is None or batch.free_lo >= count:
                # No decode among these can find the cache full: take them at once.
                piece = cohort.take(count)
                if kv is not None:
                    batch.pending.append(piece)
                    batch.free_lo -= count
                served = count
            else:
                [req] = cohort.take(1)
                piece = [req] if self._fits(view, state, batch, req) else []
                served = len(piece)
            if cohort.start == len(cohort.members):
                heap.pop_top()
            if piece:
                pieces.append((cohort.group, piece))
            taken += served
            tokens += served
            seqs += served
        batch.tokens = tokens
        batch.seqs = seqs
        return pieces

    def _fits(self, view: EngineView, state: _EngineState, batch: _Batch,
              req: Request) -> bool:
        """The released code's KV rule for one decode: it runs when a block is free (whether
        or not it needs one); while none is, the last paused prefill is preempted, and when
        there is none, the decode itself."""
        while batch.exact_free() == 0:
            victim = state.paused.pop() if state.paused else req
            batch.freed(victim)
            state.front.insert(0, victim)  # not there yet: the front holds waiting ones only
            if victim is req:
                return False
        if view.needs_block(req):
            batch.take_blocks(1)
        return True

    def _paused_chunks(self, view: EngineView, state: _EngineState, batch: _Batch,
                       chunks: list[tuple[Request, int]], completing: list[Request]) -> None:
        """Step 2: paused prefills from the front of the list, each all the budget leaves."""
        paused = state.paused
        budget = view.budget
        cap = view.seq_limit
        while paused and batch.tokens < budget and batch.seqs < cap:
            req = paused.pop(0)
            _add_chunk(batch, budget, req, chunks, completing)

    def _new_chunks(self, view: EngineView, state: _EngineState, batch: _Batch,
                    chunks: list[tuple[Request, int]], completing: list[Request]) -> None:
        """Steps 3 and 4: new prompts in SLAI's order while the budget, the KV cache and the
        active-request cap allow; the first that does not fit stops the rest."""
        budget = view.budget
        cap = view.seq_limit
        limit = self._max_active
        active = view.num_decoding + len(view.prefilling) - len(batch.preempt)
        if batch.tokens >= budget or batch.seqs >= cap or active >= limit or not view.waiting:
            return
        kv = view.kv
        for req in self._new_prompts(view, state, batch):
            if (batch.tokens >= budget or batch.seqs >= cap or active >= limit
                    or req.id in batch.evicted):  # the engine cannot preempt and admit at once
                return
            if kv is not None:
                blocks = view.blocks_to_admit(req)
                if not _can_allocate(batch, kv, blocks):
                    return
                batch.take_blocks(blocks)
            _add_chunk(batch, budget, req, chunks, completing)
            active += 1

    def _new_prompts(self, view: EngineView, state: _EngineState,
                     batch: _Batch) -> Iterator[Request]:
        """Waiting requests whose prefill has not begun, in SLAI's order.

        The released code keeps one list: arrivals at the back, preempted requests at the
        front, and (unless ``fcfs``) sorts it stably by prompt length, or by (tier, prompt
        length), before each batch. So equal keys keep that list's order: the requests SLAI
        preempted first (most recent first), then the others oldest first. The engine's own
        queue and its shortest-first index keep the others' order, and the few preempted
        ones are merged in. A request preempted in this very batch is still decoding or
        prefilling as the engine sees it; it is placed by the prefill it will redo."""
        front = state.front
        if self.settings.fcfs:
            rest: Iterator[Request] = (r for r in view.waiting if r.status != PREFILLING)
            if not front:
                return rest
            skip = {r.id for r in front}
            return chain(front, (r for r in rest if r.id not in skip))
        stream: Iterator[Request] = islice(view.shortest_waiting(), len(view.prefilling), None)
        tiered = self._tiered
        if not front and not tiered:
            return stream
        if front:
            skip = {r.id for r in front}
            stream = (r for r in stream if r.id not in skip)
        evicted = batch.evicted

        def length(req: Request) -> int:
            if req.id in evicted:
                return req.prompt_tokens + view.progress(req)[0]
            return req.prefill_left

        if tiered:
            strict = self._strict
            return _merge([((not strict[r.slo_class], length(r)), r) for r in front],
                          _tiered(stream, strict),
                          lambda r: (not strict[r.slo_class], r.prefill_left))
        return _merge([(length(r), r) for r in front], stream, _prefill_left)


def _add_chunk(batch: _Batch, budget: int, req: Request, chunks: list[tuple[Request, int]],
               completing: list[Request]) -> None:
    """Give ``req`` all of its prefill the budget leaves."""
    left = req.prefill_left
    tokens = min(left, budget - batch.tokens)
    chunks.append((req, tokens))
    if tokens == left:
        completing.append(req)
    batch.tokens += tokens
    batch.seqs += 1


def _prefill_left(req: Request) -> int:
    return req.prefill_left


def _can_allocate(batch: _Batch, kv: KVCache, blocks: int) -> bool:
    """The released ``can_allocate``: the whole prefill's blocks leave the watermark free.
    Two changes (docs/slai.md): at least one block stays free, since a decode runs only when
    one is (with a watermark of 0 blocks, two requests can take turns for ever, each
    prefilling into the last block and preempting the other); and with nothing holding a
    block, a prompt runs that leaves one (the released code would wait for ever)."""
    floor = kv.watermark_blocks if kv.watermark_blocks > 1 else 1
    if batch.free_lo - blocks >= floor:
        return True
    if batch.free_hi - blocks < floor and batch.free_hi != kv.num_blocks:
        return False
    free = batch.exact_free()
    return free - blocks >= floor or (free == kv.num_blocks and free - blocks >= 1)


def _tiered(stream: Iterator[Request], strict: list[bool]) -> Iterator[Request]:
    """The strict tier's requests as they come, then the others in the same order. (Lazy:
    a batch that stops early reads only as far as it needs, and at most the whole queue.)"""
    later: list[Request] = []
    for req in stream:
        if strict[req.slo_class]:
            yield req
        else:
            later.append(req)
    yield from later


def _merge(first: list[tuple[Any, Request]], rest: Iterator[Request],
           key: Callable[[Request], Any]) -> Iterator[Request]:
    """Merge ``first`` ((key, request) pairs, in list order) into ``rest`` (sorted by
    ``key``): the result is sorted by key, and on equal keys ``first`` comes first, in its
    own order (a stable sort)."""
    pairs = sorted(first, key=itemgetter(0))
    i = 0
    for req in rest:
        k = key(req)
        while i < len(pairs) and pairs[i][0] <= k:
            yield pairs[i][1]
            i += 1
        yield req
    for _, req in pairs[i:]:
        yield req

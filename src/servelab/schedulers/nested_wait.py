"""Nested WAIT (Ao, Luo, Simchi-Levi, Wang; rad_slai_related.md B1): thresholds per segment of
stages, for output lengths unknown per request but drawn from a known set.

The set of lengths and their rates define segments of stages (``nested_segments``). A request
is never asked its length: it is at stage 0 until its prompt is prefilled, then at the stage
its decode iterations say (``view.progress``), and it moves from one segment into the next by
surviving. Each batch walks the segments in order, as the released general implementation
does. For segment i, with ``occupied`` its requests past its first stage:

- if fewer requests wait at its first stage than min(per_stage_i, cap_i - occupied), it and
  every later segment are left out of this batch (the paper's "wait and break the loop");
- otherwise up to min(cap_i - occupied, per_stage_i) requests enter it from its first stage
  (stage 0: new prompts, whole, oldest first) and up to per_stage_i are served at each of its
  other stages, oldest first.

A batch left out of a segment for ``max_wait_s`` in a row (with requests held there) walks
every segment until one walk needs no break again. Decoders come first within the budget and
cap (in segment and stage order), then begun prefills, then new prompts. With a KV cache, when
the chosen decoders' new blocks do not fit, requests are preempted newest first (the
vLLM/Sarathi victim rule, ``fit_named``), and new prompts take blocks while they leave the
watermark free.

It reads no output length when the lengths and rates are declared (``scheduler.types``), and
the test suite runs it so on requests that refuse to tell. Without them it learns the set and
the rates from the output lengths of the arrivals so far, a clairvoyant read of the
distribution (never used for the request itself), so the class declares ``clairvoyant``.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import islice
from typing import ClassVar, cast

from servelab.core.batch import Batch
from servelab.core.request import Request
from servelab.schedulers.base import EngineView
from servelab.schedulers.memory import MemoryRoom
from servelab.schedulers.wait_base import ThresholdPolicy, ViewState, not_begun
from servelab.schedulers.wait_thresholds import Segment, nested_segments


class NestedWaitState(ViewState):
    """Per engine: the segments in force (recomputed as learned rates change)."""

    def __init__(self) -> None:
        super().__init__()
        self.segments: list[Segment] | None = None
        self.starts: list[int] = []


class NestedWait(ThresholdPolicy):
    name: ClassVar[str] = "nested-wait"
    clairvoyant: ClassVar[bool] = True  # only without declared types: module docstring
    decode_order: ClassVar[str] = "explicit"

    def new_state(self) -> NestedWaitState:
        return NestedWaitState()

    def segments(self, view: EngineView, state: NestedWaitState) -> list[Segment]:
        learned = self.declared is None and bool(self.arrivals(view, state))
        if state.segments is None or learned:
            state.segments = nested_segments(self.rates(state), self.settings.total_limit,
                                             view.convention.first_token_at_prefill)
            state.starts = [seg.start for seg in state.segments]
        return state.segments

    def schedule(self, view: EngineView) -> Batch:
        """Group the decoders by stage, walk the segments (module docstring), then fit."""
        state = cast(NestedWaitState, self.state(view))
        segments = self.segments(view, state)
        shift = 1 - int(view.convention.first_token_at_prefill)
        by_stage: dict[int, list[Request]] = {}
        for req in view.decoding:
            by_stage.setdefault(view.progress(req)[0] + shift, []).append(req)
        inside: list[list[int]] = [[] for _ in segments]  # stages present, past each start
        for stage in sorted(by_stage):
            i = bisect_right(state.starts, stage) - 1
            if stage > segments[i].start:
                inside[i].append(stage)
        stage_zero = len(view.waiting) - len(view.prefilling)
        forced = state.overdue(view.now, self.max_wait_s)
        chosen: list[Request] = []
        entering = 0
        broke: int | None = None
        for i, seg in enumerate(segments):
            occupied = sum(len(by_stage[s]) for s in inside[i])
            remain = seg.cap - occupied
            first = by_stage.get(seg.start, []) if i else []
            if (stage_zero if i == 0 else len(first)) < min(seg.per_stage, remain):
                broke = i if broke is None else broke
                if not forced:
                    break
            enter = max(0, min(remain, seg.per_stage))
            if i == 0:
                entering = enter
            chosen += first[:enter]
            for stage in inside[i]:
                chosen += by_stage[stage][:seg.per_stage]
        held = broke is not None and self._holds(stage_zero, by_stage, segments[broke].start)
        state.note_gate(view.now, held)
        return self._batch(view, state, chosen, entering)

    @staticmethod
    def _holds(stage_zero: int, by_stage: dict[int, list[Request]], start: int) -> bool:
        """Whether any request is at ``start`` or later: one a break holds back."""
        return (start == 0 and stage_zero > 0) or any(s >= start for s in by_stage)

    def _batch(self, view: EngineView, state: NestedWaitState, chosen: list[Request],
               entering: int) -> Batch:
        chosen = chosen[:min(view.budget, view.seq_limit)]
        victims: list[Request] = []
        memory = None
        if view.kv is not None:
            chosen, victims, free = fit_named(view, chosen)
            memory = MemoryRoom(view, free, victims)
        d = len(chosen)
        chunks, _ = self.prefill(view, view.budget - d, view.seq_limit - d, memory, victims,
                                 islice(not_begun(view.waiting), entering))
        if chunks or chosen or victims:
            return Batch(chunks, decode=chosen, preempt=victims or None)
        return self.idle(view, state)


def fit_named(view: EngineView, chosen: list[Request]) -> tuple[list[Request], list[Request],
                                                                 int]:
    """The chosen decoders within the free KV blocks, preempting newest first as
    ``schedulers.memory`` does until the rest fit: begun prefills, then decoders this batch
    leaves waiting, then chosen ones (so a batch keeps as many chosen as memory allows).
    Returns the decoders still served, the victims, and the blocks left free."""
    kv = view.kv
    assert kv is not None
    free = kv.free_blocks
    need = sum(1 for req in chosen if view.needs_block(req))
    victims: list[Request] = []
    if need <= free:
        return chosen, victims, free - need
    served = {req.id for req in chosen}
    newest = view.last_decoders(view.num_decoding)
    for req in [*reversed(view.prefilling), *(r for r in newest if r.id not in served),
                *(r for r in newest if r.id in served)]:
        victims.append(req)
        free += view.blocks_held(req)
        if req.id in served:
            served.discard(req.id)
            need -= int(view.needs_block(req))
        if need <= free:
            break
    return [req for req in chosen if req.id in served], victims, free - need

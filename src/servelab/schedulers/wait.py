"""WAIT (Ao, Luo, Simchi-Levi, Wang; rad_slai_related.md B1): thresholds per output-length
type, for output lengths known in advance.

A request's type is its output length, so the policy is clairvoyant: it reads
``req.output_tokens`` to file each arrival under its type. With declared types
(``scheduler.types``) a length that is not declared counts as the shortest declared length at
least as long (the longest, past them all). Each type j has a threshold n_j
(``wait_thresholds``). A batch is:

1. every decoding request, one token each, oldest first (all later stages, as in the
   released code), within the budget and cap, and within memory by the vLLM/Sarathi rule
   (``schedulers.memory``: the newest begun prefill, then the newest decoder, is preempted);
2. the rest of any prompt longer than the budget (begun earlier: see ``wait_base``);
3. if every type has at least n_j requests waiting at stage 0 (the gate is open), the n_j
   oldest of each, whole prompts, oldest first while they fit the room, the cap and memory.
   Otherwise no new prompt starts; after ``max_wait_s`` closed, the gate opens with up to n_j
   of each type until it opens by its thresholds again.

A request preempted for recompute goes back to stage 0 of its type. The per-type queues are
this policy's own index of the waiting queue, per engine; a cancelled request still counts in
its queue until it reaches the front (cancellation is rare, and the count only gates).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from itertools import islice
from typing import ClassVar, cast

from servelab.core.batch import Batch
from servelab.core.request import PREFILLING, Request, prefill_not_begun
from servelab.schedulers.base import EngineView
from servelab.schedulers.memory import MemoryRoom, fit_decoders
from servelab.schedulers.wait_base import ThresholdPolicy, ViewState
from servelab.schedulers.wait_thresholds import TypeThreshold, wait_thresholds


class WaitState(ViewState):
    """Per engine: stage-0 requests by type, oldest first, and the thresholds in force."""

    def __init__(self) -> None:
        super().__init__()
        self.queues: dict[int, deque[Request]] = {}
        self.thresholds: dict[int, TypeThreshold] | None = None

    def held(self, kind: int) -> int:
        """Requests of type ``kind`` at stage 0 (stale entries leave from the front)."""
        queue = self.queues.get(kind)
        if queue is None:
            return 0
        while queue and not prefill_not_begun(queue[0]):
            queue.popleft()
        return len(queue)

    def oldest(self, kind: int, k: int) -> list[Request]:
        queue = self.queues.get(kind, deque())
        return list(islice((r for r in queue if prefill_not_begun(r)), k))

    def requeue(self, kind: int, req: Request) -> None:
        """A preempted request back at stage 0, in id (arrival) order."""
        queue = self.queues.setdefault(kind, deque())
        at = 0
        while at < len(queue) and queue[at].id < req.id:
            at += 1
        queue.insert(at, req)


class Wait(ThresholdPolicy):
    name: ClassVar[str] = "wait"
    clairvoyant: ClassVar[bool] = True

    def __init__(self, **knobs: object) -> None:
        """``total_limit``, ``types``, ``max_wait_s``: see ``wait_base.WaitOptions``."""
        super().__init__(**knobs)
        self._lengths = sorted(self.declared or ())

    def new_state(self) -> WaitState:
        return WaitState()

    def type_of(self, req: Request) -> int:
        """The type: the output length, or the declared length it rounds up to."""
        if not self._lengths:
            return req.output_tokens
        return self._lengths[min(bisect_left(self._lengths, req.output_tokens),
                                 len(self._lengths) - 1)]

    def schedule(self, view: EngineView) -> Batch:
        state = cast(WaitState, self.state(view))
        fresh = self.arrivals(view, state)
        for req in fresh:
            state.queues.setdefault(self.type_of(req), deque()).append(req)
        if state.thresholds is None or (fresh and self.declared is None):
            state.thresholds = wait_thresholds(self.rates(state), self.settings.total_limit,
                                               view.convention.first_token_at_prefill)
        d = min(view.num_decoding, view.budget, view.seq_limit)
        victims: list[Request] = []
        memory = None
        kv = view.kv
        if kv is not None:
            d, victims, free = fit_decoders(view, d)
            memory = MemoryRoom(view, free, victims)
        entering = self.gate(view, state, state.thresholds)
        chunks, taken = self.prefill(view, view.budget - d, view.seq_limit - d, memory,
                                     victims, entering)
        for req in taken:
            state.queues[self.type_of(req)].remove(req)
        for req in victims:  # back to stage 0, but not counted at this batch's gate
            if req.status == PREFILLING or (kv is not None and kv.preemption == "recompute"):
                state.requeue(self.type_of(req), req)
        if chunks or d or victims:
            return Batch(chunks, d, preempt=victims or None)
        return self.idle(view, state)

    def gate(self, view: EngineView, state: WaitState,
             thresholds: dict[int, TypeThreshold]) -> list[Request]:
        """The requests entering stage 0 now, oldest first: n_j of each type if every type
        has that many waiting, or, once the gate has been closed ``max_wait_s``, up to n_j
        of each; none otherwise."""
        held = {kind: state.held(kind) for kind in thresholds}
        shut = any(held[kind] < t.per_stage for kind, t in thresholds.items())
        forced = state.overdue(view.now, self.max_wait_s)
        state.note_gate(view.now, shut and any(held.values()))
        if shut and not forced:
            return []
        entering = [req for kind, t in thresholds.items()
                    for req in state.oldest(kind, t.per_stage)]
        entering.sort(key=lambda req: req.id)
        return entering

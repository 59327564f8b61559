"""SLAI written the naive way, as the released code is: one heap entry per decoder, a KV check
per decode, and the released waiting list kept as a list and sorted before every batch.

The tests run it beside ``servelab.schedulers.slai`` (cohorts, lazy block counts, the engine's
shortest-first index) on the same engines: the two must form the same batches. It follows
rad_slai_related.md A.4 line by line, with the deviations docs/slai.md lists (the engine
cannot preempt and re-admit a request in one batch; a request preempted in the batch being
formed is placed by the prefill it will redo; a prompt that fits an empty cache runs; the
engine's request cap). One engine per instance.
"""

from __future__ import annotations

import heapq

from servelab.core.batch import Batch
from servelab.core.request import DECODING, PREEMPTED, PREFILLING, WAITING, Request
from servelab.schedulers.base import EngineView, Scheduler
from servelab.schedulers.slai import SlaiOptions


class SlaiOracle(Scheduler):
    name = "slai-oracle"
    work_conserving = False
    decode_order = "explicit"

    def __init__(self, **knobs: object) -> None:
        self.o = SlaiOptions.from_mapping(knobs, "slai")
        self.heap: list[tuple[float, float, int, Request]] = []
        self.lst: dict[int, float] = {}
        self.paused: list[Request] = []
        self.waiting: list[Request] = []  # the released code's list: not begun, in its order
        self.seen: set[int] = set()
        self.running: list[Request] = []  # the last batch, in the released code's order
        self.pushes = 0

    def _tbt(self, view: EngineView, req: Request) -> float:
        return view.slo_classes[req.slo_class].tbt_s if view.slo_classes else \
            self.o.time_between_tokens

    def _strict(self, view: EngineView, req: Request) -> bool:
        targets = {c.tbt_s for c in view.slo_classes}
        return len(targets) > 1 and view.slo_classes[req.slo_class].tbt_s == min(targets)

    def _post_batch(self, view: EngineView) -> None:
        o = self.o
        kv = view.kv
        used = kv.used_fraction if kv is not None else 0.0
        offset = (o.below_memory_limit_offset if o.fixed_offset
                  else o.above_memory_limit_offset if used >= o.memory_limit
                  else o.below_memory_limit_offset)
        for seq in self.running:
            if seq.status == PREFILLING:
                if seq not in self.paused:
                    self.paused.append(seq)
            elif seq.status == DECODING:
                if seq in self.paused:
                    self.paused.remove(seq)
                lst = view.last_batch_end + self._tbt(view, seq) - offset * view.mean_batch_s
                self.lst[seq.id] = lst
                heapq.heappush(self.heap, (lst, seq.arrival, self.pushes, seq))
                self.pushes += 1
        self.paused = [r for r in self.paused if r.status == PREFILLING]

    def schedule(self, view: EngineView) -> Batch:
        self._post_batch(view)
        for req in view.waiting:  # arrivals join the back of the released list
            if req.id not in self.seen:
                self.seen.add(req.id)
                self.waiting.append(req)
        self.waiting = [r for r in self.waiting if r.status in (WAITING, PREEMPTED)]
        now = view.now
        budget = view.budget
        cap = view.seq_limit
        kv = view.kv
        free = kv.free_blocks if kv is not None else 0
        n = seqs = 0
        crit = noncrit = 0
        chunks: list[tuple[Request, int]] = []
        preempt: list[Request] = []

        def preempt_one(req: Request) -> None:
            nonlocal free
            preempt.append(req)
            free += view.blocks_held(req)
            self.waiting.insert(0, req)

        def decode_one(req: Request) -> bool:
            """The KV rule for one decode; False when the decode preempts itself."""
            nonlocal free
            if kv is None:
                return True
            while free == 0:
                if self.paused:
                    preempt_one(self.paused.pop(-1))
                else:
                    preempt_one(req)
                    return False
            if view.needs_block(req):
                free -= 1
            return True

        def decodes(critical: bool) -> list[Request]:
            """Steps 1 (the critical ones) and 5 (any), as the released loops count them."""
            nonlocal n, seqs, crit, noncrit
            taken: list[Request] = []
            limit = self.o.limit_total_decodes
            while (self.heap and n < budget and seqs < cap
                   and (crit if critical else crit + noncrit) < limit):
                lst = self.heap[0][0]
                if critical and now < lst:
                    break
                req = heapq.heappop(self.heap)[3]
                counted = critical or now < lst
                if critical:
                    crit += 1
                elif counted:
                    noncrit += 1
                if decode_one(req):
                    taken.append(req)
                    n += 1
                    seqs += 1
                elif critical:
                    crit -= 1
                else:
                    noncrit -= 1
            return taken

        # 1) critical decodes
        early = decodes(critical=True)
        # 2) paused prefills
        while self.paused and n < budget and seqs < cap:
            req = self.paused.pop(0)
            k = min(req.prefill_left, budget - n)
            chunks.append((req, k))
            n += k
            seqs += 1
        # 3) order the waiting list (a stable sort, as the released code's)
        evicted = {r.id for r in preempt}

        def length(req: Request) -> int:
            if req.id in evicted:
                return req.prompt_tokens + view.progress(req)[0]
            return req.prefill_left

        if not self.o.fcfs:
            if self.o.user_priority:
                self.waiting.sort(key=lambda r: (0 if self._strict(view, r) else 1, length(r)))
            else:
                self.waiting.sort(key=length)
        # 4) new prefills
        active = view.num_decoding + len(view.prefilling) - len(preempt)
        while self.waiting and n < budget:
            req = self.waiting[0]
            if req.id in evicted:
                break
            if kv is not None:
                blocks = view.blocks_to_admit(req)
                floor = max(kv.watermark_blocks, 1)
                if not (free - blocks >= floor or (free == kv.num_blocks and free - blocks >= 1)):
                    break
            else:
                blocks = 0
            if active >= self.o.max_active or seqs >= cap:
                break
            self.waiting.pop(0)
            free -= blocks
            active += 1
            k = min(req.prefill_left, budget - n)
            chunks.append((req, k))
            n += k
            seqs += 1
        # 5) the other decodes
        late = decodes(critical=False)
        self.running = early + [r for r, _ in chunks] + late
        return Batch(chunks, decode=early + late, preempt=preempt or None)

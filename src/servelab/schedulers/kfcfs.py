"""Work-conserving (K_p, K_d)-FCFS: the family the stability theorem is about.

Reading chosen (the paper does not define K-FCFS precisely; see docs/model.md): the K_p oldest
requests with prefill left may contribute prefill, the K_d oldest decoding requests may
contribute one decode token each, and within those windows the batch is filled greedily up to
the budget and the request cap, decode first or prefill first. With unbounded windows this is
Sarathi-Serve (decode first) or the paper's stylised Orca (prefill first), which is why both are
built on this class.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import ClassVar

from mypy_extensions import mypyc_attr

from servelab.core.batch import Batch
from servelab.core.request import Request
from servelab.schedulers.base import EngineView, Scheduler, fill_chunks
from servelab.schedulers.kfcfs_options import KFCFSOptions
from servelab.schedulers.memory import MemoryRoom, fit_decoders
from servelab.schedulers.options import SchedulerOptions


@mypyc_attr(allow_interpreted_subclasses=True)
class KFCFS(Scheduler):
    """Greedy FCFS fill with windows ``k_prefill`` (K_p) and ``k_decode`` (K_d)."""

    name: ClassVar[str] = "kfcfs"
    work_conserving: ClassVar[bool] = True
    options_type: ClassVar[type[SchedulerOptions]] = KFCFSOptions

    def __init__(self, **knobs: object) -> None:
        """``priority``, ``kp`` (K_p) and ``kd`` (K_d): see ``KFCFSOptions``."""
        options = KFCFSOptions.from_mapping(knobs, self.name)
        self.priority: str = options.priority
        self._decode_priority = options.priority == "decode"
        self.k_prefill = options.kp
        # K_d as a number, so the hot path compares instead of testing for None first.
        self._decode_window = options.kd if options.kd is not None else sys.maxsize
        #: Prefill order: oldest first (False), or begun prefills, then shortest prompt first
        #: (Sarathi's ``order=spf``; the engine keeps that order for whoever asks).
        self.shortest_first = False

    @property
    def k_decode(self) -> int | None:
        """K_d, or None when the decode window is unbounded."""
        return None if self._decode_window == sys.maxsize else self._decode_window

    def options(self) -> dict[str, object]:
        return {"priority": self.priority, "kp": self.k_prefill, "kd": self.k_decode}

    def schedule(self, view: EngineView) -> Batch:
        return _fill(self, view, view.budget)

    def schedule_under(self, view: EngineView, budget: int) -> Batch:
        """The batch under a token budget of ``budget``, at most the view's (RAD's B*)."""
        return _fill(self, view, budget)

    def _schedule_in_memory(self, view: EngineView, waiting: Iterable[Request],
                            d: int, budget: int) -> Batch:
        """The same fill within the KV cache: the decoders' new blocks first (preempting if
        they do not fit), then prompts while theirs do (``schedulers.memory``)."""
        seqs = view.seq_limit
        if self._decode_priority:
            d = min(d, budget, seqs)
        d, victims, free = fit_decoders(view, d)
        room = MemoryRoom(view, free, victims)
        if self._decode_priority:
            chunks = fill_chunks(waiting, budget - d, seqs - d, self.k_prefill, room)[0]
        else:
            chunks, used = fill_chunks(waiting, budget, seqs, self.k_prefill, room)
            d = min(d, budget - used, seqs - len(chunks))
        return Batch(chunks, d, preempt=victims or None)


def _fill(policy: KFCFS, view: EngineView, budget: int) -> Batch:
    """KFCFS's batch under ``budget``. A function, not a method that ``schedule`` calls: on an
    interpreted subclass (Sarathi) such a call is a Python method lookup every batch."""
    seqs = view.seq_limit
    d = view.num_decoding
    if d > policy._decode_window:
        d = policy._decode_window
    waiting: Iterable[Request] = (view.shortest_waiting() if policy.shortest_first
                                  else view.waiting)
    if view.kv is not None:
        return policy._schedule_in_memory(view, waiting, d, budget)
    if policy._decode_priority:
        if d > budget:
            d = budget
        if d > seqs:
            d = seqs
        return Batch(fill_chunks(waiting, budget - d, seqs - d, policy.k_prefill)[0], d)
    chunks, used = fill_chunks(waiting, budget, seqs, policy.k_prefill)
    return Batch(chunks, min(d, budget - used, seqs - len(chunks)))

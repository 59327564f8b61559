"""The two non-mixed policies of Table 1: a batch is all prefill or all decode.

They differ only in which phase wins when both have work, so they share one implementation.
Whole prompts are the paper's reading (a prompt is never split); ``chunked_prefill`` lets a
prompt span iterations, the variant some reproductions ran (li_dai_peng.md 5.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from servelab.core.batch import Batch
from servelab.schedulers.base import EngineView, Scheduler, fill_chunks, fill_whole
from servelab.schedulers.memory import MemoryRoom, fit_decoders
from servelab.schedulers.options import SchedulerOptions, knob


@dataclass(frozen=True)
class UnmixedOptions(SchedulerOptions):
    chunked_prefill: bool = knob(False, "let a prompt span batches instead of fitting in one")


class Unmixed(Scheduler):
    """Serve one phase per batch; ``decode_first`` picks the phase that wins."""

    work_conserving: ClassVar[bool] = False
    decode_first: ClassVar[bool]
    options_type: ClassVar[type[SchedulerOptions]] = UnmixedOptions

    def __init__(self, **knobs: object) -> None:
        """``chunked_prefill``: see ``UnmixedOptions``."""
        self.settings = UnmixedOptions.from_mapping(knobs, self.name)
        self.chunked_prefill = self.settings.chunked_prefill

    @property
    def whole_prefill(self) -> bool:
        return not self.chunked_prefill

    def options(self) -> dict[str, object]:
        return self.settings.as_dict()

    def schedule(self, view: EngineView) -> Batch:
        if self.decode_first and view.num_decoding:
            return self._decode_batch(view)
        if view.waiting:
            memory = (None if view.kv is None
                      else MemoryRoom(view, view.kv.free_blocks, []))
            if self.chunked_prefill:
                chunks = fill_chunks(view.waiting, view.budget, view.seq_limit, None,
                                     memory)[0]
            else:
                chunks = fill_whole(view.waiting, view.budget, view.seq_limit, memory)[0]
            if chunks:
                return Batch(chunks, 0)
        return self._decode_batch(view)

    @staticmethod
    def _decode_batch(view: EngineView) -> Batch:
        d = min(view.num_decoding, view.budget, view.seq_limit)
        if view.kv is None:
            return Batch([], d)
        d, victims, _ = fit_decoders(view, d)
        return Batch([], d, preempt=victims or None)


"""FasterTransformer and Orca as their engines manage memory: a maximum length reserved.

The paper's stylised policies allocate KV as requests grow. The engines themselves did not:
FasterTransformer batches at the request level and reserves every request's maximum sequence
length when it admits it, and Orca (as Sarathi-Serve's implementation of it does) reserves the
maximum length at admission too. Reserving makes preemption impossible and caps how many
requests run at once at the cache's blocks over one request's reservation, far below what
growing on demand allows: the reason vLLM's paged, on-demand allocation won.

The batches are those of ``fastertransformer`` (decode first, whole prompts: a prefill batch
only when nothing decodes, which is request-level static batching) and ``orca``; only the KV
allocation differs, so without ``--kv-blocks`` each is exactly its stylised twin. A request
longer than the reservation grows a block at a time beyond it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from servelab.schedulers.fastertransformer import FasterTransformer
from servelab.schedulers.kfcfs import KFCFS
from servelab.schedulers.options import SchedulerOptions, knob


@dataclass(frozen=True)
class ReserveOptions(SchedulerOptions):
    max_seq_len: int = knob(2048, "KV slots reserved per request when it is admitted (the "
                                  "engine's maximum sequence length)", minimum=1)


class FasterTransformerStatic(FasterTransformer):
    name: ClassVar[str] = "fastertransformer-static"
    options_type: ClassVar[type[SchedulerOptions]] = ReserveOptions

    def __init__(self, **knobs: object) -> None:
        """``max_seq_len``: see ``ReserveOptions``."""
        self.settings = ReserveOptions.from_mapping(knobs, self.name)
        self.chunked_prefill = False

    def kv_reserve_tokens(self) -> int:
        return self.settings.max_seq_len


class OrcaReserve(KFCFS):
    name: ClassVar[str] = "orca-reserve"
    options_type: ClassVar[type[SchedulerOptions]] = ReserveOptions

    def __init__(self, **knobs: object) -> None:
        """``max_seq_len``: see ``ReserveOptions``."""
        self.settings = ReserveOptions.from_mapping(knobs, self.name)
        super().__init__(priority="prefill")

    def options(self) -> dict[str, object]:
        return self.settings.as_dict()

    def kv_reserve_tokens(self) -> int:
        return self.settings.max_seq_len

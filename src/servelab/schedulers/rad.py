"""RAD (reconstructed): the Resource-Aware Dynamic scheduler of Bari, Hegde and de Veciana.

The paper's body is not available (rad_slai_related.md A.3). Known: RAD follows two principles,
optimal tiling and a dynamic split of each batch between prefill and decode, and it is
throughput-optimal under mild conditions. No code of it was released. What runs here is the
reconstruction A.3 proposes, every step of it our inference (docs/model.md, "RAD
(reconstructed)"):

1. B*, the token budget RAD uses: the multiple of the tile T, at most the engine's budget,
   with the least time per token t(B)/B (ties: the smallest). T is the ``tile`` knob, by
   default the timing model's tile, or 1 (every size) when the model has none.
2. Each iteration, d = min(decoders, B*) decode tokens, oldest decoders first, and the rest of
   B* in prefill chunks, oldest prompt first.
3. Under light load the batch is what there is: never more than B*.
4. With a KV cache, decodes get their blocks first (preempting begun prefills, then the newest
   decoders, if they must), and a new prompt is admitted only when its blocks fit
   (``schedulers.memory``: the vLLM rules).

That is Sarathi-Serve with B* in place of the engine's budget, which is how it is built.
B* depends on the engine's timing and budget, which it reads from the view; replicated
engines share one scheduler, and so one cached B* while their timing and budget are the same.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from servelab.core.batch import Batch
from servelab.errors import ConfigWarning
from servelab.schedulers.base import EngineView
from servelab.schedulers.kfcfs import KFCFS
from servelab.schedulers.options import SchedulerOptions, knob
from servelab.timing.models import TimingModel

#: Times per token within this relative distance are ties: rounding t(B)/B errs by about
#: 1e-16, and the YAML form of a model keeps 12 digits.
TIE = 1e-12


@dataclass(frozen=True)
class RadOptions(SchedulerOptions):
    tile: int | None = knob(None, "tile T: B* is a multiple of T; none: the timing model's "
                                  "tile, or 1 when it has none", minimum=1)


def tile_of(timing: TimingModel, tile: int | None) -> int:
    """The tile B* is a multiple of: ``tile``, or the timing's own, or 1."""
    return tile if tile is not None else timing.tile or 1


def best_batch_tokens(timing: TimingModel, budget: int, tile: int | None = None) -> int:
    """B*: the multiple of ``tile`` at most ``budget`` that minimises t(B)/B, the smallest of
    ties. ``tile`` None takes the timing's tile, or 1. A tile over the budget leaves the budget
    itself (every batch then pays one tile). A model that is not token-only is timed at half
    prefill, as ``TimingModel.capacity`` is by default."""
    step = tile_of(timing, tile)
    if step > budget:
        return budget
    sizes = np.arange(step, budget + 1, step)
    per_token = timing.tokens_durations(sizes) / sizes
    return int(sizes[np.flatnonzero(per_token <= per_token.min() * (1 + TIE))[0]])


class RAD(KFCFS):
    name: ClassVar[str] = "rad"
    #: Its batches take min(B*, demand) tokens, not min(budget, demand): work-conserving up to
    #: B* only (docs/model.md says what that means for the theory).
    work_conserving: ClassVar[bool] = False
    reconstructed: ClassVar[bool] = True
    options_type: ClassVar[type[SchedulerOptions]] = RadOptions

    def __init__(self, **knobs: object) -> None:
        """``tile``: see ``RadOptions``."""
        self.settings = RadOptions.from_mapping(knobs, self.name)
        super().__init__(priority="decode")
        self._engine: tuple[TimingModel, int] | None = None
        self._batch_tokens = 0

    def options(self) -> dict[str, object]:
        return self.settings.as_dict()

    def batch_tokens(self, view: EngineView) -> int:
        """B* for the view's engine, worked out once per timing model and budget."""
        timing, budget = view.timing, view.budget
        engine = self._engine
        if engine is None or engine[0] is not timing or engine[1] != budget:
            self._batch_tokens = best_batch_tokens(timing, budget, self.settings.tile)
            self._engine = (timing, budget)
            self._warn_if_below_capacity(timing, budget)
        return self._batch_tokens

    def schedule(self, view: EngineView) -> Batch:
        return self.schedule_under(view, self.batch_tokens(view))

    def _warn_if_below_capacity(self, timing: TimingModel, budget: int) -> None:
        """The theory printed beside a run is the capacity max over n <= budget of n/t(n); RAD
        serves at most B*/t(B*). They agree when B* reaches that maximum (always with tile 1,
        or with the timing's own tile and a budget it divides); say so when they do not."""
        b_star = self._batch_tokens
        mu, n_star = timing.capacity(budget)
        served = b_star / timing.tokens_duration(b_star)
        if served < mu * (1 - TIE):
            tile = tile_of(timing, self.settings.tile)
            warnings.warn(ConfigWarning(
                "scheduler.tile",
                f"rad's batches hold at most B* = {b_star} tokens (multiples of the tile {tile} "
                f"within the budget {budget}), which serve {served:,.1f} tokens/s, less than "
                f"the capacity {mu:,.1f} tokens/s that batches of {n_star} tokens reach: the "
                "load and theory verdict printed beside this run overstate what rad serves"),
                stacklevel=2)

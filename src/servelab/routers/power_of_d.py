"""Power of d choices: sample d distinct engines uniformly, join the one with the least work.

Two samples already get most of JSQ's benefit (Mitzenmacher) while reading only two engines.
``--router power_of_d:D``; d = K is JSQ, d = 1 is random.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from servelab.core.request import Request
from servelab.routers.base import Router
from servelab.sim.engine import LoadBoard


class PowerOfD(Router):
    name: ClassVar[str] = "power_of_d"

    def __init__(self, rng: np.random.Generator, d: int) -> None:
        super().__init__(rng)
        self.d = d

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.d}"

    def choose(self, req: Request, board: LoadBoard) -> int:
        loads = board.unprocessed
        k = len(loads)
        sampled: list[int] = []
        while len(sampled) < self.d:  # distinct: redraw a repeat (d <= k)
            i = self.pick(k)
            if i not in sampled:
                sampled.append(i)
        best = sampled[0]
        for i in sampled[1:]:  # the least loaded; ties to the first sampled
            if loads[i] < loads[best]:
                best = i
        return best

"""Power of d choices: sample d distinct engines uniformly, join the one with the least work.

Two samples already get most of JSQ's benefit (Mitzenmacher) while reading only two engines.
``--router power_of_d:D``; d = K is JSQ, d = 1 is random.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from servelab.core.request import Request
from servelab.routers.base import Router, least_loaded
from servelab.sim.engine import Engine


class PowerOfD(Router):
    name: ClassVar[str] = "power_of_d"

    def __init__(self, rng: np.random.Generator, d: int) -> None:
        super().__init__(rng)
        self.d = d

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.d}"

    def choose(self, req: Request, engines: Sequence[Engine]) -> int:
        k = len(engines)
        if self.d >= k:
            return least_loaded(engines, range(k))
        return least_loaded(engines, self.rng.choice(k, self.d, replace=False).tolist())

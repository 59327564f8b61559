"""Round robin: engine 0, 1, ..., K-1, 0, ... regardless of load."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from servelab.core.request import Request
from servelab.routers.base import Router
from servelab.sim.engine import LoadBoard


class RoundRobin(Router):
    name: ClassVar[str] = "round_robin"

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__(rng)
        self._next = 0

    def choose(self, req: Request, board: LoadBoard) -> int:
        i = self._next
        self._next = (i + 1) % len(board.unprocessed)
        return i

"""The router interface: which of several identical engines gets an arriving request.

A router decides at arrival, from what the engines publish on their ``LoadBoard`` (token slots
admitted and not yet processed, requests admitted and not finished): every effect of a running
batch lands at its end, so that is a consistent state. It returns the engine's index.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from servelab.core.request import Request
from servelab.sim.engine import LoadBoard

#: Random numbers are drawn this many at a time: one numpy call per arrival would cost more
#: than the rest of the routing.
DRAWS = 4096


class Router(ABC):
    name: ClassVar[str]

    def __init__(self, rng: np.random.Generator) -> None:
        """``rng``: the run's own stream for routing (randomised routers draw from it)."""
        self._rng = rng
        self._uniforms: list[float] = []

    @property
    def spec(self) -> str:
        """The name as a ``--router`` value gives it back."""
        return self.name

    def uniform(self) -> float:
        """The next of the router's uniform draws on [0, 1)."""
        if not self._uniforms:
            self._uniforms = self._rng.random(DRAWS).tolist()[::-1]
        return self._uniforms.pop()

    def pick(self, k: int) -> int:
        """A uniform choice among ``k``."""
        return min(int(self.uniform() * k), k - 1)

    @abstractmethod
    def choose(self, req: Request, board: LoadBoard) -> int:
        """The index of the engine that takes ``req``."""


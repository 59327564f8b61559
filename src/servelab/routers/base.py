"""The router interface: which of several identical engines gets an arriving request.

A router decides at arrival, from what the engines show then (``Engine.unprocessed_tokens``,
``Engine.outstanding``): every effect of a running batch lands at its end, so that is a
consistent state. It returns the engine's index.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from servelab.core.request import Request
from servelab.sim.engine import Engine


class Router(ABC):
    name: ClassVar[str]

    def __init__(self, rng: np.random.Generator) -> None:
        """``rng``: the run's own stream for routing (randomised routers draw from it)."""
        self.rng = rng

    @property
    def spec(self) -> str:
        """The name as a ``--router`` value gives it back."""
        return self.name

    @abstractmethod
    def choose(self, req: Request, engines: Sequence[Engine]) -> int:
        """The index of the engine that takes ``req``."""


def least_loaded(engines: Sequence[Engine], candidates: Sequence[int]) -> int:
    """The candidate with the fewest unprocessed tokens (the first of equals)."""
    best = candidates[0]
    fewest = engines[best].unprocessed_tokens
    for i in candidates[1:]:
        load = engines[i].unprocessed_tokens
        if load < fewest:
            best, fewest = i, load
    return best

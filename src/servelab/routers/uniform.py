"""Random: each request to an engine drawn uniformly, blind to load (``--router random``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from servelab.core.request import Request
from servelab.routers.base import Router
from servelab.sim.engine import Engine


class Uniform(Router):
    name: ClassVar[str] = "random"

    def choose(self, req: Request, engines: Sequence[Engine]) -> int:
        return int(self.rng.integers(len(engines)))

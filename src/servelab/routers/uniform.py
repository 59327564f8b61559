"""Random: each request to an engine drawn uniformly, blind to load (``--router random``)."""

from __future__ import annotations

from typing import ClassVar

from servelab.core.request import Request
from servelab.routers.base import Router
from servelab.sim.engine import LoadBoard


class Uniform(Router):
    name: ClassVar[str] = "random"

    def choose(self, req: Request, board: LoadBoard) -> int:
        return self.pick(len(board.unprocessed))

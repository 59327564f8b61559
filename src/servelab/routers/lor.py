"""Least outstanding requests: the engine with the fewest requests admitted and not finished
(Vidur's ``lor``), which needs no token counts at all."""

from __future__ import annotations

from typing import ClassVar

from servelab.core.request import Request
from servelab.routers.base import Router
from servelab.sim.engine import LoadBoard


class LeastOutstanding(Router):
    name: ClassVar[str] = "lor"

    def choose(self, req: Request, board: LoadBoard) -> int:
        return board.least_outstanding()

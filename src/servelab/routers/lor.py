"""Least outstanding requests: the engine with the fewest requests admitted and not finished
(Vidur's ``lor``), which needs no token counts at all."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from servelab.core.request import Request
from servelab.routers.base import Router
from servelab.sim.engine import Engine


class LeastOutstanding(Router):
    name: ClassVar[str] = "lor"

    def choose(self, req: Request, engines: Sequence[Engine]) -> int:
        best = 0
        fewest = engines[0].outstanding
        for i in range(1, len(engines)):
            count = engines[i].outstanding
            if count < fewest:
                best, fewest = i, count
        return best

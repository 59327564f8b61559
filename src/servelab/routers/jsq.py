"""Join the shortest queue, measured in work: the engine with the fewest unprocessed tokens.

Li-Dai-Peng Proposition 3: with K identical work-conserving engines behind JSQ, the system is
stable whenever lambda (m_p + m_d) < K mu. Unprocessed tokens count a request's output tokens
too, which a real router knows only as a limit; the simulator's engine knows them exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from servelab.core.request import Request
from servelab.routers.base import Router, least_loaded
from servelab.sim.engine import Engine


class JoinShortestQueue(Router):
    name: ClassVar[str] = "jsq"

    def choose(self, req: Request, engines: Sequence[Engine]) -> int:
        return least_loaded(engines, range(len(engines)))

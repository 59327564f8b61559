"""Join the shortest queue, measured in work: the engine with the fewest unprocessed tokens.

Li-Dai-Peng Proposition 3: with K identical work-conserving engines behind JSQ, the system is
stable whenever lambda (m_p + m_d) < K mu. Unprocessed tokens count a request's output tokens
too, which a real router knows only as a limit; the simulator's engine knows them exactly.
"""

from __future__ import annotations

from typing import ClassVar

from servelab.core.request import Request
from servelab.routers.base import Router
from servelab.sim.engine import LoadBoard


class JoinShortestQueue(Router):
    name: ClassVar[str] = "jsq"

    def choose(self, req: Request, board: LoadBoard) -> int:
        return board.least_unprocessed()

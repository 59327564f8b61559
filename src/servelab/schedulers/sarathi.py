"""Sarathi-Serve, stylised as in Li-Dai-Peng section 4: stall-free decode first, then chunks.

Every decoding request gets its token first (oldest first, up to the budget and cap); the rest
of the budget goes to prefill chunks, finishing the oldest prompt before touching the next.
"""

from typing import ClassVar

from servelab.schedulers.kfcfs import KFCFS


class Sarathi(KFCFS):
    name: ClassVar[str] = "sarathi"

    def __init__(self) -> None:
        super().__init__(priority="decode")

    def options(self) -> dict[str, object]:
        return {}

"""Orca, stylised as in Li-Dai-Peng section 4: prefill first, mixed batches, chunked prefill.

Prefill chunks fill the budget oldest first; whatever is left goes to one decode token per
decoding request, oldest first. Work-conserving, but prefill can starve decode (see point C).
"""

from typing import ClassVar

from servelab.schedulers.kfcfs import KFCFS


class Orca(KFCFS):
    name: ClassVar[str] = "orca"

    def __init__(self) -> None:
        super().__init__(priority="prefill")

    def options(self) -> dict[str, object]:
        return {}

"""Orca, stylised as in Li-Dai-Peng section 4: prefill first, mixed batches, chunked prefill.

Prefill chunks fill the budget oldest first; whatever is left goes to one decode token per
decoding request, oldest first. Work-conserving, but prefill can starve decode (see point C).
"""

from typing import ClassVar

from servelab.schedulers.kfcfs import KFCFS
from servelab.schedulers.options import SchedulerOptions


class Orca(KFCFS):
    name: ClassVar[str] = "orca"
    options_type: ClassVar[type[SchedulerOptions]] = SchedulerOptions  # no knobs

    def __init__(self, **knobs: object) -> None:
        SchedulerOptions.from_mapping(knobs, self.name)  # refuses any knob
        super().__init__(priority="prefill")

    def options(self) -> dict[str, object]:
        return {}

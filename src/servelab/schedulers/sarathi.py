"""Sarathi-Serve, stylised as in Li-Dai-Peng section 4: stall-free decode first, then chunks.

Every decoding request gets its token first (oldest first, up to the budget and cap); the rest
of the budget goes to prefill chunks, finishing the oldest prompt before touching the next.
``order=spf`` finishes begun prompts first, then takes the waiting ones shortest first: one
part of SLAI's gain over Sarathi-Serve (Bari, Hegde, de Veciana), on its own.
"""

from dataclasses import dataclass
from typing import ClassVar, Literal

from servelab.schedulers.kfcfs import KFCFS
from servelab.schedulers.options import SchedulerOptions, knob


@dataclass(frozen=True)
class SarathiOptions(SchedulerOptions):
    order: Literal["fcfs", "spf"] = knob(
        "fcfs", "which waiting prompt gets prefill first: the oldest, or (spf) the shortest, "
        "after any begun ones")


class Sarathi(KFCFS):
    name: ClassVar[str] = "sarathi"
    options_type: ClassVar[type[SchedulerOptions]] = SarathiOptions

    def __init__(self, **knobs: object) -> None:
        """``order``: see ``SarathiOptions``."""
        self.settings = SarathiOptions.from_mapping(knobs, self.name)
        super().__init__(priority="decode")
        self.order = self.settings.order
        self.shortest_first = self.order == "spf"

    def options(self) -> dict[str, object]:
        return self.settings.as_dict()


class SarathiSPF(Sarathi):
    """``sarathi`` with ``order=spf``, under a name of its own: the SLAI paper's
    ``sarathi_spf`` baseline, so one comparison can hold it beside plain Sarathi-Serve."""

    name: ClassVar[str] = "sarathi-spf"
    options_type: ClassVar[type[SchedulerOptions]] = SchedulerOptions  # its order is fixed

    def __init__(self, **knobs: object) -> None:
        SchedulerOptions.from_mapping(knobs, self.name)  # refuses any knob
        super().__init__(order="spf")

    def options(self) -> dict[str, object]:
        return {}  # no knobs: the name says the order

"""The knobs of (K_p, K_d)-FCFS, beside ``kfcfs.py``, which is compiled (see ``options``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from servelab.schedulers.options import SchedulerOptions, knob


@dataclass(frozen=True)
class KFCFSOptions(SchedulerOptions):
    priority: Literal["decode", "prefill"] = knob("decode", "which phase is served first")
    kp: int | None = knob(None, "K_p: at most K waiting requests contribute prefill; none: all",
                          minimum=1)
    kd: int | None = knob(None, "K_d: at most K decoding requests get a token; none: all",
                          minimum=1)

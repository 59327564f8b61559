"""SLAI's knobs (``schedulers.slai``), in a plain module of their own: the scheduler is
compiled with mypyc, and a compiled class cannot extend the plain ``SchedulerOptions``
dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from servelab.errors import ConfigError
from servelab.schedulers.options import SchedulerOptions, knob


@dataclass(frozen=True)
class SlaiOptions(SchedulerOptions):
    """The knobs of the released ``SLAISchedulerConfig``, with its defaults (default.yml).

    Its ``token_budget`` (512) is the engine's budget here (``--budget``; the mistral preset's
    is 512), and its ``batch_size`` (max_num_seqs) is ``max_active``."""

    max_active: int = knob(128, "requests holding KV at once (decoding or prefill begun); new "
                                "prompts wait beyond it", minimum=1)
    limit_total_decodes: int = knob(128, "decode tokens per batch at most, critical and not",
                                    minimum=1)
    time_between_tokens: float = knob(0.2, "TBT target in seconds when the run has no SLO "
                                           "classes (with classes, each request's class's)")
    fcfs: bool = knob(False, "take waiting prompts oldest first instead of shortest first")
    user_priority: bool = knob(False, "shortest first within tiers: the classes with the "
                                      "smallest TBT target before the others")
    fixed_offset: bool = knob(False, "always offset by below_memory_limit_offset, whatever "
                                     "the KV usage")
    below_memory_limit_offset: float = knob(5.0, "mean batch times an LST lies before the TBT "
                                                 "target while KV usage < memory_limit",
                                            minimum=0)
    above_memory_limit_offset: float = knob(10.0, "the same at or above memory_limit",
                                            minimum=0)
    memory_limit: float = knob(0.96, "KV usage (used / all blocks) from which the larger "
                                     "offset applies", minimum=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.time_between_tokens > 0:
            raise ConfigError("scheduler.time_between_tokens", "must be > 0 seconds")

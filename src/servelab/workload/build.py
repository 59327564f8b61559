"""From configuration to the arrays the engine consumes.

A ``WorkloadSpec`` is resolved before the rate is known, because ``--load`` needs the mean
lengths (theory) to turn a fraction of capacity into requests per second. Generation then draws
arrivals, prompt lengths and output lengths from three independent streams of one seed, so every
scheduler in a comparison sees exactly the same requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from servelab.workload.arrivals import ArrivalProcess, parse_arrivals
from servelab.workload.lengths import Fixed, LengthDist, parse_lengths
from servelab.workload.trace import Trace, load_trace


@dataclass(frozen=True)
class Workload:
    """Requests sorted by arrival: times (s), prompt and output token counts."""

    arrival: np.ndarray
    prompt: np.ndarray
    output: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival)


@dataclass(frozen=True)
class WorkloadSpec:
    """Either synthetic (arrival process + two length distributions) or a trace."""

    arrivals: ArrivalProcess | None = None
    prefill: LengthDist | None = None
    decode: LengthDist | None = None
    trace: Trace | None = None

    @classmethod
    def resolve(
        cls, arrivals: str, prefill: str, decode: str, trace: str | None, base_dir: Path | None
    ) -> WorkloadSpec:
        if trace is not None:
            path = Path(trace)
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            return cls(trace=load_trace(path))
        return cls(
            arrivals=parse_arrivals(arrivals),
            prefill=parse_lengths(prefill, "prefill", base_dir),
            decode=parse_lengths(decode, "decode", base_dir),
        )

    @property
    def mean_prompt(self) -> float:
        return float(self.trace.prefill.mean()) if self.trace else self.prefill.mean

    @property
    def mean_output(self) -> float:
        return float(self.trace.decode.mean()) if self.trace else self.decode.mean

    @property
    def fixed_prompt(self) -> bool:
        """Every prompt has the same length: the k_max region then assumes the real one."""
        if self.trace is not None:
            return bool((self.trace.prefill == self.trace.prefill[0]).all())
        return isinstance(self.prefill, Fixed)

    def describe(self) -> dict[str, object]:
        if self.trace is not None:
            return {"trace": self.trace.path, "trace_requests": len(self.trace)}
        return {"arrivals": self.arrivals.spec, "prefill": self.prefill.spec,
                "decode": self.decode.spec}

    def generate(
        self, rate: float | None, seed: int, count: int | None, duration: float | None
    ) -> Workload:
        """Draw the requests: ``count`` of them, or all arriving within ``duration`` seconds.

        A trace keeps its own clock unless ``rate`` rescales it; ``count`` cuts it short.
        """
        if self.trace is not None:
            trace = self.trace if rate is None else self.trace.scaled_to(rate)
            n = len(trace) if count is None else min(count, len(trace))
            return Workload(trace.arrived_at[:n], trace.prefill[:n], trace.decode[:n])
        arrival_rng, prompt_rng, output_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
        )
        times = self.arrivals.times(arrival_rng, rate, count=count, duration=duration)
        n = len(times)
        prompts = self.prefill.sample(prompt_rng, n)
        return Workload(times, prompts, self.decode.sample(output_rng, n))

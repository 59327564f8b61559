"""From configuration to the arrays the engine consumes.

A ``WorkloadSpec`` is resolved before the rate is known, because ``--load`` needs the mean
lengths (theory) to turn a fraction of capacity into requests per second. Generation then draws
arrivals, prompt lengths and output lengths from three independent streams of one seed, and
service-level classes, when there are any, from a stream of their own, so every scheduler in a
comparison sees exactly the same requests (``RequestStream``). ShareGPT on both sides draws
(prompt, output) rows jointly, on the prompt lengths' stream.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from servelab.core.slo import SloClass
from servelab.errors import ConfigError, ConfigWarning
from servelab.workload.arrivals import ArrivalProcess, ArrivalStream, parse_arrivals
from servelab.workload.chunks import Chunked
from servelab.workload.lengths import (
    Fixed,
    IndependentLengths,
    LengthDist,
    LengthPairs,
    LengthSource,
    ShareGPT,
    draw_rows,
    parse_lengths,
)
from servelab.workload.sharegpt import Pairs, merge_filters, pairs
from servelab.workload.trace import Trace, load_trace

#: The lengths of the first n requests: (prompt tokens, output tokens).
LengthStream = Callable[[int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Workload:
    """Requests sorted by arrival: times (s), prompt and output token counts, and each one's
    service-level class (an index into the spec's ``slo``; None when there are no classes)."""

    arrival: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    slo_class: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.arrival)


@dataclass(frozen=True)
class WorkloadSpec:
    """Either synthetic (arrival process + two length distributions) or a trace; either one
    mixed with service-level classes (``slo``, empty for none)."""

    arrivals: ArrivalProcess | None = None
    prefill: LengthDist | None = None
    decode: LengthDist | None = None
    trace: Trace | None = None
    slo: tuple[SloClass, ...] = ()

    def __post_init__(self) -> None:
        if (isinstance(self.prefill, ShareGPT) and isinstance(self.decode, ShareGPT)
                and self.prefill.pair_filter != self.decode.pair_filter):
            raise ConfigError("decode", f"{self.decode.spec} and prefill's {self.prefill.spec} "
                                        "filter different pairs; a joint draw needs one filter")

    @classmethod
    def resolve(
        cls, arrivals: str, prefill: str, decode: str, trace: str | None, base_dir: Path | None,
        slo: tuple[SloClass, ...] = (),
    ) -> WorkloadSpec:
        if trace is not None:
            path = Path(trace)
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            return cls(trace=load_trace(path), slo=slo)
        prompts, outputs = _paired(parse_lengths(prefill, "prefill", base_dir),
                                   parse_lengths(decode, "decode", base_dir))
        return cls(arrivals=parse_arrivals(arrivals), prefill=prompts, decode=outputs, slo=slo)

    @property
    def joint(self) -> Pairs | None:
        """The (prompt, output) rows drawn together, when both sides are ShareGPT."""
        if isinstance(self.prefill, ShareGPT) and isinstance(self.decode, ShareGPT):
            return pairs(self.prefill.pair_filter)
        return None

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

    def length_source(self) -> LengthSource:
        """The lengths as the KV-memory bound reads them: a trace's rows and ShareGPT's
        conversations are joint pairs."""
        if self.trace is not None:
            return LengthPairs(self.trace.prefill, self.trace.decode)
        joint = self.joint
        if joint is not None:
            return LengthPairs(joint.prompt, joint.output)
        return IndependentLengths(self.prefill, self.decode)

    def describe(self) -> dict[str, object]:
        if self.trace is not None:
            return {"trace": self.trace.path, "trace_requests": len(self.trace)}
        return {"arrivals": self.arrivals.spec, "prefill": self.prefill.spec,
                "decode": self.decode.spec}

    def stream(self, rate: float | None, seed: int) -> RequestStream:
        """The requests of this workload at ``rate`` (a trace: None keeps its own clock)."""
        return RequestStream(self, rate, seed)


class RequestStream:
    """Requests drawn on demand: the first n of a seed never depend on how many are drawn.

    Arrivals, prompt lengths and output lengths come from three independent streams of one
    seed, each drawn in fixed blocks (``chunks``), so ``--requests auto``, which grows a run
    step by step, sees exactly the requests ``--requests N`` would. Joint ShareGPT rows are
    drawn the same way, on the prompt lengths' stream. Classes come from a fifth stream of the
    seed (the fourth is the router's), drawn for a trace's rows the same way: adding classes
    moves no arrival and no length.
    """

    def __init__(self, spec: WorkloadSpec, rate: float | None, seed: int) -> None:
        self.spec = spec
        self._trace: Workload | None = None
        self._classes: Chunked | None = None
        if spec.slo:
            class_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(5)[4])
            cumulative = np.cumsum([c.probability for c in spec.slo])
            cumulative[-1] = 1.0  # the sum may miss 1 by rounding; no draw may fall past it
            self._classes = Chunked(lambda _, size: draw_classes(class_rng, cumulative, size))
        if spec.trace is not None:
            trace = spec.trace if rate is None else spec.trace.scaled_to(rate)
            self._trace = Workload(trace.arrived_at, trace.prefill, trace.decode)
            return
        assert rate is not None and spec.arrivals is not None
        assert spec.prefill is not None and spec.decode is not None
        arrival_rng, prompt_rng, output_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
        )
        self._arrivals = ArrivalStream(spec.arrivals, arrival_rng, rate)
        self._lengths = _length_stream(spec, prompt_rng, output_rng)

    def first(self, count: int) -> Workload:
        """The first ``count`` requests (all of a shorter trace)."""
        if self._trace is not None:
            t = self._trace
            count = min(count, len(t))
            return Workload(t.arrival[:count], t.prompt[:count], t.output[:count],
                            self._first_classes(count))
        return self._with_lengths(self._arrivals.first(count))

    def until(self, duration: float) -> Workload:
        """Every request arriving in (0, duration]."""
        assert self._trace is None, "a trace runs to its own end"
        return self._with_lengths(self._arrivals.until(duration))

    def _with_lengths(self, times: np.ndarray) -> Workload:
        n = len(times)
        return Workload(times, *self._lengths(n), self._first_classes(n))

    def _first_classes(self, count: int) -> np.ndarray | None:
        return None if self._classes is None else self._classes.first(count)


def draw_classes(rng: np.random.Generator, cumulative: np.ndarray, size: int) -> np.ndarray:
    """``size`` class indices, class i with probability ``cumulative[i] - cumulative[i - 1]``
    (a uniform draw falls in its share of [0, 1); a class of probability 0 has none)."""
    return np.searchsorted(cumulative, rng.random(size), side="right").astype(np.uint8)


def _paired(prefill: LengthDist, decode: LengthDist) -> tuple[LengthDist, LengthDist]:
    """ShareGPT on both sides: one filter, combined from the settings either side wrote."""
    if isinstance(prefill, ShareGPT) and isinstance(decode, ShareGPT):
        shared = merge_filters(dict(prefill.written), dict(decode.written))
        return replace(prefill, pair_filter=shared), replace(decode, pair_filter=shared)
    return prefill, decode


def _length_stream(spec: WorkloadSpec, prompt_rng: np.random.Generator,
                   output_rng: np.random.Generator) -> LengthStream:
    """Prompt and output lengths: two independent draws, or joint rows of one table."""
    joint = spec.joint
    if joint is not None:
        rows = Chunked(lambda _, size: draw_rows(prompt_rng, len(joint), size))

        def joint_lengths(n: int) -> tuple[np.ndarray, np.ndarray]:
            picked = rows.first(n)
            return joint.prompt[picked], joint.output[picked]

        return joint_lengths
    prefill, decode = spec.prefill, spec.decode
    assert prefill is not None and decode is not None
    prompts = Chunked(lambda _, size: prefill.sample(prompt_rng, size))
    outputs = Chunked(lambda _, size: decode.sample(output_rng, size))
    return lambda n: (prompts.first(n), outputs.first(n))


def warn_if_unrepresentative(spec: WorkloadSpec, workload: Workload) -> None:
    """Warn when the drawn lengths miss the means the theory uses by far more than chance.

    A heavy tail (a lognormal with a large sigma, where nearly every draw rounds to 1 token)
    holds most of its mean in values a run of this size almost never draws: the theory's load
    then describes a different workload from the one simulated. "Far more than chance" is off
    by over 10% and by over 5 standard errors of the sample's own mean (from 30 draws on).
    """
    for field, dist, draws in (("prefill", spec.prefill, workload.prompt),
                               ("decode", spec.decode, workload.output)):
        n = len(draws)
        if dist is None or n < 30:
            continue
        drawn = float(draws.mean())
        stderr = float(draws.std(ddof=1)) / math.sqrt(n)
        if abs(drawn - dist.mean) > max(0.1 * dist.mean, 5 * stderr):
            warnings.warn(ConfigWarning(
                field, f"the {n:,} drawn lengths average {drawn:,.1f} tokens, but the "
                f"distribution's mean, which the theory uses, is {dist.mean:,.1f}: its tail is "
                "too heavy for a sample of this size, so the theory and the simulation describe "
                "different workloads"), stacklevel=3)

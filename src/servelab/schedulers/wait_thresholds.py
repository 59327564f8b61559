"""The thresholds of WAIT and nested WAIT (Ao, Luo, Simchi-Levi, Wang; arXiv 2504.11320), as
the authors' released code computes them (rad_slai_related.md B1), in plain numbers.

Both policies see a request as moving through *stages*, one per iteration it is served in:
stage 0 is its whole prefill, stage s its s-th decode iteration. A request with ``o`` output
tokens takes ``o + 1`` stages under the paper convention and ``o`` under the engine convention,
where the prefill's iteration emits output token 1 (``stages``). The released WAIT code counts
``o + 1`` and the released nested WAIT code (a Vidur fork: engine convention) counts ``o``;
counting the stages a request really takes here makes the two agree with each other, and each
with its source under the convention that source ran.

Rates enter only through their ratios, so they may be arrivals per second or counts of arrivals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate


def stages(output_tokens: int, first_token_at_prefill: bool) -> int:
    """Iterations a request of ``output_tokens`` output tokens is served in: its prefill, then
    one per decode token."""
    return output_tokens + 1 - int(first_token_at_prefill)


@dataclass(frozen=True)
class TypeThreshold:
    """WAIT's numbers for one type (one output length)."""

    #: N_j: the type's share of the total limit, N_total lambda_j S_j / sum_k lambda_k S_k.
    share: float
    #: n_j = max(1, int(N_j / S_j)): how many requests of the type start together, and so how
    #: many it keeps at each of its stages.
    per_stage: int


def wait_thresholds(rates: Mapping[int, float], total: int,
                    first_token_at_prefill: bool) -> dict[int, TypeThreshold]:
    """WAIT's thresholds for types given as {output length: arrival rate} (rates > 0).

    With S_j the stages of type j, N_j = N_total lambda_j S_j / sum_k lambda_k S_k and
    n_j = max(1, int(N_j / S_j)), computed as int(N_total lambda_j / sum_k lambda_k S_k) (the
    same number, with one rounding fewer)."""
    weight = {o: rate * stages(o, first_token_at_prefill) for o, rate in rates.items()}
    whole = sum(weight.values())
    return {o: TypeThreshold(total * weight[o] / whole,
                             max(1, int(total * rate / whole)))
            for o, rate in rates.items()}


@dataclass(frozen=True)
class Segment:
    """Nested WAIT's stages between two consecutive output lengths, and their limits."""

    #: The first stage (where requests wait to enter) and the last, inclusive.
    start: int
    end: int
    #: seg_total_i = N_total w_i / sum w, w_i = (stages) x (rates of the lengths that reach it).
    total: float
    #: per_stage_i = ceil(seg_total_i / stages): requests served per stage per iteration.
    per_stage: int
    #: The most requests the segment holds past its first stage: int(seg_total_i), but at
    #: least ``per_stage`` (our floor: the released int() can be 0 for a rare long length,
    #: which would hold that segment's entrants forever).
    cap: int

    @property
    def count(self) -> int:
        return self.end - self.start + 1


def nested_segments(rates: Mapping[int, float], total: int,
                    first_token_at_prefill: bool) -> list[Segment]:
    """Nested WAIT's segments for output lengths d(1) < d(2) < ... with arrival rates.

    Segment 1 runs from stage 0 to the last stage of d(1); segment i from the stage after the
    last of d(i-1) to the last of d(i), weighted by its stage count times the rates of the
    lengths >= d(i) (those still present). A request's length is never read: one that is
    still decoding after segment i's stages is known to be longer than d(i)."""
    lengths = sorted(rates)
    bounds = [stages(o, first_token_at_prefill) for o in lengths]  # stages up to each end
    alive = _suffix_sums([rates[o] for o in lengths])
    starts = [0, *bounds[:-1]]
    weight = [(end - start) * rate for start, end, rate in zip(starts, bounds, alive,
                                                                strict=True)]
    whole = sum(weight)
    segments = []
    for start, end, rate, w in zip(starts, bounds, alive, weight, strict=True):
        share = total * w / whole
        per_stage = math.ceil(total * rate / whole)  # = ceil(share / (end - start))
        segments.append(Segment(start, end - 1, share, per_stage, max(int(share), per_stage)))
    return segments


def _suffix_sums(values: list[float]) -> list[float]:
    """sum(values[i:]) for each i. Learned rates are counts, recomputed every batch that
    sees an arrival: whole numbers, whose sums are exact in any order, so one pass from the
    right gives them (hundreds of lengths made the quadratic form most of a run). Declared
    rates may have fractions: each suffix is summed from the left as before, to the bit."""
    if all(float(v).is_integer() for v in values):
        return list(accumulate(reversed(values)))[::-1]
    return [sum(values[i:]) for i in range(len(values))]

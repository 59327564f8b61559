"""Latency statistics in the names users know from vLLM's benchmark (milliseconds).

Per-request quantities (TTFT, TPOT, E2E) come from per-request arrays; per-token TBT comes from
the engine's histogram {gap ticks: count}, so every token gap is counted without storing one
object per token. Quantiles of the histogram are exact order statistics of the gaps (the
"inverted CDF" definition), which is what a per-token list would give with
``method="inverted_cdf"``.

SLO attainment and goodput follow vLLM's ``benchmarks/benchmark_serving.py``
(``calculate_metrics``, ``--goodput``): a completed request is good when it meets every target
of its class, TTFT <= the TTFT target and TPOT <= the TBT target, where TPOT = (E2E - TTFT) /
(output tokens - 1) and a one-token output counts as TPOT 0; goodput is good requests per
second of the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from servelab.core.slo import SloClass
from servelab.results import RequestTable

QUANTILES = {"p50": 50, "p90": 90, "p99": 99}


def stats_ms(values_s: np.ndarray) -> dict[str, float] | None:
    """mean, p50, p90, p99 of finite values (seconds in, milliseconds out); None if empty.

    It works on a copy of the finite values, which it reorders in place: a run of millions
    of requests needs one array of them here, not three.
    """
    v = values_s[np.isfinite(values_s)]
    if v.size == 0:
        return None
    out = {"mean": float(v.mean()) * 1e3}
    qs = np.percentile(v, list(QUANTILES.values()), method="inverted_cdf", overwrite_input=True)
    for name, q in zip(QUANTILES, qs, strict=True):
        out[name] = float(q) * 1e3
    return out


def hist_stats_ms(hist: dict[int, int], ticks_per_s: int) -> dict[str, float] | None:
    """mean, p50, p90, p99 of a {ticks: count} histogram, in milliseconds; None if empty."""
    if not hist:
        return None
    values = np.fromiter(hist.keys(), dtype=float, count=len(hist)) / ticks_per_s
    counts = np.fromiter(hist.values(), dtype=np.int64, count=len(hist))
    order = np.argsort(values)
    values, counts = values[order], counts[order]
    total = int(counts.sum())
    cumulative = np.cumsum(counts)
    out = {"mean": float(np.sum(values * counts)) / total * 1e3}  # no BLAS: its idle threads
    # spin beside a single-threaded simulator
    for name, q in QUANTILES.items():
        rank = max(1, int(np.ceil(q / 100 * total)))
        out[name] = float(values[np.searchsorted(cumulative, rank)]) * 1e3
    return out


def latency_stats(requests: RequestTable, selected: np.ndarray) -> dict[str, Any]:
    """TTFT, TPOT and E2E over the ``selected`` (completed) requests, one array at a time (a
    run may hold millions: each difference is made in one array and reordered in place)."""
    arrival, first, finish = requests.arrival_s, requests.first_token_s, requests.finish_s
    ttft = first[selected]
    ttft -= arrival[selected]
    out = {"ttft_ms": stats_ms(ttft)}
    del ttft
    e2e = finish[selected]
    e2e -= arrival[selected]
    out["e2e_ms"] = stats_ms(e2e)
    del e2e
    multi = selected & (requests.output_tokens > 1)  # TPOT needs a second token
    out["tpot_ms"] = stats_ms(_tpot_s(requests, multi))
    return out


def _tpot_s(requests: RequestTable, selected: np.ndarray) -> np.ndarray:
    """(E2E - TTFT) / (D - 1) of the ``selected`` requests, each from the arrival, as
    ``tpot_ms`` reports it (a request with D = 1 gets a division by zero: leave it out).
    Made a block of requests at a time into the one result array: its four operands for a
    whole run of millions would take four times its memory at once."""
    out = np.empty(int(np.count_nonzero(selected)))
    filled = 0
    for start in range(0, len(selected), _BLOCK):
        block = slice(start, start + _BLOCK)
        mine = selected[block]
        arrival = requests.arrival_s[block][mine]
        tpot = requests.finish_s[block][mine]
        tpot -= arrival
        ttft = requests.first_token_s[block][mine]
        ttft -= arrival
        tpot -= ttft
        tpot /= requests.output_tokens[block][mine] - 1
        out[filled:filled + len(tpot)] = tpot
        filled += len(tpot)
    return out


#: Requests per block where a statistic needs several per-request operands at once.
_BLOCK = 1 << 16


def slo_summary(requests: RequestTable, classes: Sequence[SloClass], done: np.ndarray,
                tbt_hists: Sequence[dict[int, int] | None], ticks_per_s: int,
                elapsed_s: float,
                preempted: Sequence[tuple[int, int]] | None = None) -> dict[str, Any]:
    """Per class (``requests.slo_class``), its latencies and how many completed requests met
    every target of their class; overall, the attainment and goodput of all of them.

    ``done`` marks the completed requests; ``tbt_hists`` is each class's TBT histogram (None
    where the run did not record one); ``elapsed_s`` is what the throughput divides by;
    ``preempted`` is each class's (preemptions, recomputed tokens), when known.
    """
    assert requests.slo_class is not None
    slo_class = requests.slo_class
    good = _good(requests, classes, done)
    per_class = []
    for c, (spec, hist) in enumerate(zip(classes, tbt_hists, strict=True)):
        in_class = slo_class == c
        mine = done & in_class
        completed = int(np.count_nonzero(mine))
        good_c = int(np.count_nonzero(good & in_class))
        latency = latency_stats(requests, mine)
        per_class.append({
            "name": spec.name, "probability": spec.probability, "tbt_target_s": spec.tbt_s,
            "ttft_target_s": spec.ttft_s, "arrived": int(np.count_nonzero(in_class)),
            "completed": completed, "ttft_ms": latency["ttft_ms"],
            "tbt_ms": None if hist is None else hist_stats_ms(hist, ticks_per_s),
            "tpot_ms": latency["tpot_ms"], "e2e_ms": latency["e2e_ms"],
            "slo_attainment": good_c / completed if completed else None,
            "goodput_requests_per_s": good_c / elapsed_s,
        })
        if preempted is not None:
            per_class[-1]["preemptions"], per_class[-1]["recomputed_tokens"] = preempted[c]
    completed = int(np.count_nonzero(done))
    good_all = int(np.count_nonzero(good))
    return {"classes": per_class,
            "slo_attainment": good_all / completed if completed else None,
            "goodput_requests_per_s": good_all / elapsed_s}


def _good(requests: RequestTable, classes: Sequence[SloClass], done: np.ndarray) -> np.ndarray:
    """Which requests completed meeting every target of their class (vLLM's rule above)."""
    assert requests.slo_class is not None
    tbt_target = np.array([c.tbt_s for c in classes])[requests.slo_class]
    ttft_target = np.array([np.inf if c.ttft_s is None else c.ttft_s
                            for c in classes])[requests.slo_class]
    good = done.copy()
    good &= requests.first_token_s - requests.arrival_s <= ttft_target
    multi = done & (requests.output_tokens > 1)  # one token: TPOT 0, which meets any target
    good[multi] &= _tpot_s(requests, multi) <= tbt_target[multi]
    return good

"""Latency statistics in the names users know from vLLM's benchmark (milliseconds).

Per-request quantities (TTFT, E2E) come from per-request arrays; per-token TBT comes from the
engine's histogram {gap ticks: count}, so every token gap is counted without storing one object per
token. Quantiles of the histogram are exact order statistics of the gaps (the "inverted CDF"
definition), which is what a per-token list would give with ``method="inverted_cdf"``.
"""

from __future__ import annotations

import numpy as np

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

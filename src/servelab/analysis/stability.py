"""The empirical stability verdict, read from the backlog trajectory, never from the load.

Method (docs/model.md): take the backlog samples (unprocessed tokens) in the second half of the
arrival window, average them in ``BLOCKS`` equal time blocks, and fit a line through the block
means. Block means are far less autocorrelated than raw samples, so the residual scatter gives a
usable standard error (Student t with BLOCKS-2 degrees of freedom). The drain after the last
arrival is never part of the window: it says nothing about stability.

The verdict compares the confidence interval with a growth threshold: a fraction
``GROWTH_TOLERANCE`` of the offered token rate. ``unstable`` when the whole interval lies above
it, ``stable`` when the whole interval lies below it, ``inconclusive`` otherwise (too short a
run, or a load too close to the boundary to tell).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCKS = 10
#: Student t quantile, 97.5 %, BLOCKS - 2 = 8 degrees of freedom (a 95 % two-sided interval).
T_CRITICAL = 2.306
#: Growth below 1 % of the offered token rate counts as no growth.
GROWTH_TOLERANCE = 0.01
MIN_SAMPLES_PER_BLOCK = 2


@dataclass(frozen=True)
class Verdict:
    verdict: str
    slope_tokens_per_s: float
    stderr_tokens_per_s: float
    threshold_tokens_per_s: float
    window_s: tuple[float, float]
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "backlog_slope_tokens_per_s": self.slope_tokens_per_s,
            "backlog_slope_stderr_tokens_per_s": self.stderr_tokens_per_s,
            "verdict_threshold_tokens_per_s": self.threshold_tokens_per_s,
            "verdict_window_s": list(self.window_s),
            "verdict_reason": self.reason,
        }


def backlog_verdict(
    times: np.ndarray, tokens: np.ndarray, horizon: float, offered_tokens_per_s: float
) -> Verdict:
    """Judge stability from the backlog samples ``(times, tokens)`` of one run."""
    start = horizon / 2
    threshold = GROWTH_TOLERANCE * offered_tokens_per_s
    mask = (times >= start) & (times <= horizon)
    t, y = times[mask], tokens[mask].astype(float)
    if len(t) < BLOCKS * MIN_SAMPLES_PER_BLOCK:
        return Verdict("inconclusive", float("nan"), float("nan"), threshold, (start, horizon),
                       f"only {len(t)} backlog samples in the second half of the arrival window")
    edges = np.linspace(start, horizon, BLOCKS + 1)
    which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, BLOCKS - 1)
    counts = np.bincount(which, minlength=BLOCKS)
    if (counts < MIN_SAMPLES_PER_BLOCK).any():
        return Verdict("inconclusive", float("nan"), float("nan"), threshold, (start, horizon),
                       "the backlog was sampled too unevenly to form blocks")
    bt = np.bincount(which, weights=t, minlength=BLOCKS) / counts
    by = np.bincount(which, weights=y, minlength=BLOCKS) / counts
    slope, stderr = _ols_slope(bt, by)
    if slope - T_CRITICAL * stderr > threshold:
        verdict, reason = "unstable", "the backlog grows faster than the tolerance"
    elif slope + T_CRITICAL * stderr < threshold:
        verdict, reason = "stable", "the backlog does not grow beyond the tolerance"
    else:
        verdict, reason = "inconclusive", "the slope's interval straddles the tolerance"
    return Verdict(verdict, slope, stderr, threshold, (start, horizon), reason)


def _ols_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and its standard error."""
    xc = x - x.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ (y - y.mean())) / sxx
    residuals = y - y.mean() - slope * xc
    dof = len(x) - 2
    stderr = float(np.sqrt((residuals @ residuals) / dof / sxx))
    return slope, stderr

"""The empirical stability verdict, read from the run, never from the load.

A run answers one question: does the backlog (unprocessed tokens) grow at the *nominal* arrival
rate the user asked for? The window is the second half of the arrival window, [H/2, H]: the
first half is warm-up, and the drain after the last arrival says nothing about stability. In it
the run measures three rates, exactly, from its cumulative counts:

- ``a``, the token slots that actually arrived per second (the realised offered rate);
- ``s``, the token slots the engine served per second;
- the backlog slope ``a - s``.

Two facts make the verdict trustworthy (docs/model.md, "The stability verdict"):

1. *Arrival randomness.* The realised rate ``a`` misses the nominal ``o`` by a few percent in a
   typical run, and the backlog follows ``a``, not ``o``. Both sides of the verdict are therefore
   judged on ``o - s``: what the engine served against what the nominal rate would have brought.
   A work-conserving engine never serves more than its capacity, so above capacity ``o - s`` is
   at least the fluid slope whatever arrived, and the verdict is never ``stable`` there.
2. *Autocorrelation.* The backlog of a queue near its boundary is a slowly relaxing random walk,
   so backlog levels in neighbouring stretches are strongly correlated and a regression through
   them is overconfident. Its *increments* over long blocks are close to independent instead (a
   random walk's are independent; a stable queue's are negatively correlated, which only widens
   the interval). The standard errors come from ``BLOCKS`` block increments, with Student t.

``stable``: ``o - s`` plus the 95 % margin of the backlog slope is below the tolerance, so the
engine kept up with arrivals at least as heavy as the nominal ones, bar a tolerance. ``unstable``:
the backlog grew (its 95 % interval lies above zero) *and* the engine served less than the
nominal offered rate by more than the tolerance, with the served rate's 95 % margin. Anything
else is ``inconclusive``, as is a window shorter than a lone request's life, or shorter than
``BLOCKS`` lives of a request in full batches: its blocks would then be too short for their
increments to be independent (the backlog relaxes over about one such life), and it would start
(at H/2, its own length) before the requests in flight have settled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from servelab.core.convention import Convention
from servelab.timing.models import TimingModel

BLOCKS = 10
#: Student t quantile, 97.5 %, BLOCKS - 1 = 9 degrees of freedom (a 95 % two-sided interval).
T_CRITICAL = 2.262
#: Growth below 1 % of the offered token rate counts as no growth.
GROWTH_TOLERANCE = 0.01
MIN_SAMPLES_PER_BLOCK = 2


def _tokens(rate: float) -> str:
    """A token rate for a reason string: one decimal, or three digits when below 1 (0 when it
    is only float noise)."""
    if abs(rate) >= 1 or abs(rate) < 1e-6:
        return f"{rate:,.1f}".replace("-0.0", "0.0")
    return f"{rate:.3g}"


@dataclass(frozen=True)
class RunSeries:
    """What the verdict reads from one run: cumulative counts sampled at batch ends."""

    sample_time_s: np.ndarray  # batch end times, increasing
    served_tokens: np.ndarray  # token slots processed by then
    arrival_s: np.ndarray  # every request's arrival, sorted
    prompt_tokens: np.ndarray  # every request's lengths
    output_tokens: np.ndarray
    convention: Convention  # what a request's tokens cost in slots
    horizon_s: float  # the last arrival, or --duration

    def arrived_tokens(self, t: np.ndarray) -> np.ndarray:
        """Token slots of the requests that arrived by each time in ``t`` (ascending).

        Summed segment by segment, so a run of millions of requests needs no array of them.
        """
        ends = np.searchsorted(self.arrival_s, t, side="right").tolist()
        out = np.empty(len(ends), dtype=np.int64)
        total = start = 0
        for j, end in enumerate(ends):
            assert end >= start, "times must ascend"
            total += self.convention.total_work(int(self.prompt_tokens[start:end].sum()),
                                                int(self.output_tokens[start:end].sum()),
                                                end - start)
            out[j] = total
            start = end
        return out


@dataclass(frozen=True)
class Guards:
    """How long a request needs, below which a window cannot tell growth from filling up."""

    lone_request_s: float  # a mean request alone in the engine
    full_batches_s: float  # a mean request when every batch it is in is full


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reason: str
    window_s: tuple[float, float]
    threshold_tokens_per_s: float
    offered_tokens_per_s: float  # nominal
    slope_tokens_per_s: float = math.nan
    stderr_tokens_per_s: float = math.nan
    served_tokens_per_s: float = math.nan
    served_stderr_tokens_per_s: float = math.nan
    realised_rate: float = math.nan  # requests/s that arrived in the window
    realised_offered_tokens_per_s: float = math.nan

    @property
    def growth_at_nominal_tokens_per_s(self) -> float:
        """The backlog slope corrected to the nominal arrivals: offered (nominal) - served."""
        return self.offered_tokens_per_s - self.served_tokens_per_s

    def to_dict(self, capacity_tokens_per_s: float) -> dict[str, object]:
        """The summary keys; the realised load and fluid slope are against this capacity."""
        margin = T_CRITICAL * self.stderr_tokens_per_s
        realised = self.realised_offered_tokens_per_s
        return {
            "verdict": self.verdict,
            "verdict_reason": self.reason,
            "verdict_window_s": list(self.window_s),
            "verdict_threshold_tokens_per_s": self.threshold_tokens_per_s,
            "backlog_slope_tokens_per_s": self.slope_tokens_per_s,
            "backlog_slope_stderr_tokens_per_s": self.stderr_tokens_per_s,
            "backlog_slope_ci95_tokens_per_s": [self.slope_tokens_per_s - margin,
                                                self.slope_tokens_per_s + margin],
            "growth_at_nominal_tokens_per_s": self.growth_at_nominal_tokens_per_s,
            "served_tokens_per_s": self.served_tokens_per_s,
            "realised_rate": self.realised_rate,
            "realised_offered_tokens_per_s": realised,
            "realised_load": realised / capacity_tokens_per_s,
            "realised_fluid_slope_tokens_per_s": max(0.0, realised - capacity_tokens_per_s)
            if not math.isnan(realised) else math.nan,
        }


def request_guards(
    timing: TimingModel, budget: int, m_p: float, m_d: float, convention: Convention
) -> Guards:
    """The life of a request with the mean lengths: alone, and when every batch is full."""
    prompt, output = max(1, round(m_p)), max(1, round(m_d))
    decode_slots = convention.decode_slots(output)
    full, rest = divmod(prompt, budget)
    lone = full * timing.duration(budget, 0, 1) + decode_slots * timing.duration(0, 1, 1)
    if rest:
        lone += timing.duration(rest, 0, 1)
    mu, n_star = timing.capacity(budget, m_p / (m_p + m_d))
    iterations = full + (1 if rest else 0) + decode_slots
    return Guards(lone_request_s=lone, full_batches_s=iterations * n_star / mu)


def backlog_verdict(series: RunSeries, offered_tokens_per_s: float, guards: Guards) -> Verdict:
    """Judge stability at the nominal offered rate from one run (module docstring)."""
    start, end = series.horizon_s / 2, series.horizon_s
    threshold = GROWTH_TOLERANCE * offered_tokens_per_s

    def inconclusive(reason: str) -> Verdict:
        return Verdict("inconclusive", reason, (start, end), threshold, offered_tokens_per_s)

    if end - start < guards.lone_request_s:
        return inconclusive(
            f"the verdict window ({end - start:,.1f} s) is shorter than the "
            f"{guards.lone_request_s:,.1f} s a lone request needs to finish")
    if end - start < BLOCKS * guards.full_batches_s:
        return inconclusive(
            f"the verdict window ({end - start:,.1f} s) is shorter than {BLOCKS} times a "
            f"request's life when every batch is full ({guards.full_batches_s:,.1f} s): its "
            "blocks would be too short to be independent, and it would start before the "
            "requests in flight have settled")
    t = series.sample_time_s
    inside = np.flatnonzero((t >= start) & (t <= end))
    if len(inside) < BLOCKS * MIN_SAMPLES_PER_BLOCK + 1:
        return inconclusive(f"only {len(inside)} backlog samples in the window")
    grid = np.linspace(t[inside[0]], t[inside[-1]], BLOCKS + 1)
    edges = inside[np.searchsorted(t[inside], grid).clip(0, len(inside) - 1)]
    if (np.diff(edges) < MIN_SAMPLES_PER_BLOCK).any():
        return inconclusive("the backlog was sampled too unevenly to form blocks")
    at = t[edges]
    seconds = np.diff(at)
    served = np.diff(series.served_tokens[edges].astype(float)) / seconds
    arrived_by = series.arrived_tokens(at)
    arrived = np.diff(arrived_by.astype(float)) / seconds
    span = at[-1] - at[0]
    s = float(series.served_tokens[edges[-1]] - series.served_tokens[edges[0]]) / span
    a = (int(arrived_by[-1]) - int(arrived_by[0])) / span
    stderr = float(np.std(arrived - served, ddof=1)) / math.sqrt(BLOCKS)
    served_stderr = float(np.std(served, ddof=1)) / math.sqrt(BLOCKS)
    first, last = np.searchsorted(series.arrival_s, at[[0, -1]], side="right")
    measured = {
        "window_s": (float(at[0]), float(at[-1])),
        "slope_tokens_per_s": a - s,
        "stderr_tokens_per_s": stderr,
        "served_tokens_per_s": s,
        "served_stderr_tokens_per_s": served_stderr,
        "realised_rate": float(last - first) / span,
        "realised_offered_tokens_per_s": a,
    }
    growth = offered_tokens_per_s - s
    if growth + T_CRITICAL * stderr < threshold:
        verdict, reason = "stable", (
            f"growth at the nominal rate (offered - served = {_tokens(growth)} tokens/s) stays "
            f"below the tolerance {_tokens(threshold)} at its 95% bound "
            f"({_tokens(growth + T_CRITICAL * stderr)})")
    elif (a - s - T_CRITICAL * stderr > 0
          and growth - T_CRITICAL * served_stderr > threshold):
        verdict, reason = "unstable", (
            f"the backlog grows ({_tokens(a - s - T_CRITICAL * stderr)} tokens/s or more at "
            f"95%) while the engine serves {_tokens(s)} tokens/s, {_tokens(growth)} short of the "
            f"nominal {_tokens(offered_tokens_per_s)} offered")
    else:
        verdict, reason = "inconclusive", (
            f"the backlog neither clearly keeps up nor clearly grows: growth at the nominal "
            f"rate {_tokens(growth)} tokens/s, 95% interval "
            f"{_tokens(growth - T_CRITICAL * stderr)} to {_tokens(growth + T_CRITICAL * stderr)}, "
            f"against a tolerance of {_tokens(threshold)}")
    return Verdict(verdict, reason, threshold_tokens_per_s=threshold,
                   offered_tokens_per_s=offered_tokens_per_s, **measured)

"""The largest arrival rate that meets every criterion: ``servelab capacity-search``.

The search starts where the theory says the engine stops keeping up (``starting_bound``) and
brackets the answer from there: it probes that rate, then steps up while probes pass (or down
while they fail), 5 % at first and twice as far each further step, until one probe passes and
the next fails; then it bisects the bracket (geometrically) until its ends are within the
relative ``tolerance``. The answer is the bracket's low end, the largest rate that passed.

- A probe runs every seed at one rate and passes only if every seed meets every criterion;
  it stops at the first seed that fails, since one failure decides it.
- Each seed is one request stream: a rate rescales its arrival times and keeps its lengths
  (arrivals are unit-rate gaps divided by the rate), so every probe of a seed replays the same
  requests, faster or slower, and probes differ by their rate alone.
- It assumes monotonicity: a rate below one that passed passes too, and one above a failure
  fails. Latencies grow with the rate and the verdict turns from stable to unstable, so this
  holds in the mean; the noise of finite runs is what the seeds are for. Bisection only probes
  inside the bracket, so the probes it reports never contradict it.
- A rate at or above the token capacity lambda* (load >= 1) is not simulated: no scheduler
  keeps up there (Li-Dai-Peng Theorem 2), so it meets no criterion (``analysis.criteria``:
  a run whose queue grows without bound meets none). So a search that starts at lambda*
  steps down from it at no cost.
- It looks down to ``MIN_FRACTION`` of the bound. A low end of None says no rate down there
  met the criteria.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from servelab.analysis.criteria import Criterion, evaluate_all, parse_criteria
from servelab.config import DEFAULT_SCHEDULER, SimConfig
from servelab.errors import ConfigError, ConfigWarning
from servelab.simulation import as_config, capacity, simulate

DEFAULT_SEEDS = 3
DEFAULT_TOLERANCE = 0.01
#: The first step away from the bound, as a fraction of the rate; each further step doubles,
#: so a boundary far from the bound is still bracketed in a few probes.
FIRST_STEP = 0.05
#: The lowest rate probed, as a fraction of the starting bound.
MIN_FRACTION = 0.01
MAX_SEEDS = 1000

#: Simulates one configuration and returns its summary (a test injects a fake one).
Runner = Callable[[SimConfig], Mapping[str, Any]]


def starting_bound(theory: Mapping[str, Any]) -> tuple[float, str]:
    """The analytic bound the search starts from, and which limit it is.

    The least of the rates the theory reports: the token capacity lambda* (``tokens``), the
    k_max region's (``kmax``) and the KV memory's (``memory``, where ``capacity`` gives
    ``memory_max_rate``), since the engine keeps up with none above the least.
    """
    bounds = {"tokens": float(theory["max_rate"])}
    region = theory.get("kmax_region")
    if region:
        bounds["kmax"] = float(region["max_rate"])
    if theory.get("memory_max_rate") is not None:
        bounds["memory"] = float(theory["memory_max_rate"])
    binding = min(bounds, key=bounds.__getitem__)
    return bounds[binding], binding


def _simulate_summary(config: SimConfig) -> Mapping[str, Any]:
    return simulate(config).summary


@dataclass
class _Prober:
    """Probes rates, every seed at each, and keeps the record of every run made."""

    config: SimConfig
    criteria: list[Criterion]
    seeds: list[int]
    max_rate: float  # lambda*, which loads are reported against
    run: Runner
    on_probe: Callable[[dict[str, Any]], None] | None
    probes: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)

    def passes(self, rate: float) -> bool:
        number, load = len(self.probes) + 1, rate / self.max_rate
        made = [] if load >= 1 else self._runs(number, rate)
        probe = {"probe": number, "rate": rate, "load": load, "simulated": bool(made),
                 "pass": bool(made) and all(r["pass"] for r in made), "seeds_run": len(made)}
        self.probes.append(probe)
        self.runs += made
        if self.on_probe is not None:
            self.on_probe({**probe, "runs": made})
        return bool(probe["pass"])

    def _runs(self, probe: int, rate: float) -> list[dict[str, Any]]:
        """Every seed at ``rate``, up to the first that fails: one failure decides a probe."""
        made = []
        for seed in self.seeds:
            started = time.perf_counter()
            summary = self.run(self.config.replace(rate=rate, seed=seed))
            values, failed = evaluate_all(self.criteria, summary)
            length = summary.get("run_length") or {}
            made.append({"probe": probe, "rate": rate, "load": rate / self.max_rate,
                         "seed": seed, "pass": not failed, "failed": failed, "values": values,
                         "verdict": summary.get("verdict"),
                         "theory_verdict": summary.get("theory_verdict"),
                         "requests": length.get("requests"),
                         "wall_s": time.perf_counter() - started})
            if failed:
                break
        return made

    def bracket(self, start: float, lowest: float, highest: float) -> tuple[float | None, float]:
        """A passing low end and a failing high end around the answer, walking from ``start``:
        up while probes pass (``highest``, lambda*, always fails), or down while they fail,
        to ``lowest`` at most (and then the low end is None)."""
        step = FIRST_STEP
        if self.passes(start):
            low = start
            while True:
                high = min(low * (1 + step), highest)
                if not self.passes(high):
                    return low, high
                low, step = high, 2 * step
        high = start
        while high > lowest:
            low = max(high / (1 + step), lowest)
            if self.passes(low):
                return low, high
            high, step = low, 2 * step
        return None, high

    def bisect(self, low: float, high: float, tolerance: float) -> tuple[float, float]:
        """Halve the bracket, in ratio, until high / low is at most 1 + tolerance."""
        while high / low > 1 + tolerance:
            middle = math.sqrt(low * high)
            if self.passes(middle):
                low = middle
            else:
                high = middle
        return low, high


def capacity_search(
    config: SimConfig | Mapping[str, Any],
    criteria: Sequence[str | Criterion] | str,
    *,
    seeds: int | Sequence[int] = DEFAULT_SEEDS,
    tolerance: float = DEFAULT_TOLERANCE,
    on_probe: Callable[[dict[str, Any]], None] | None = None,
    run: Runner = _simulate_summary,
) -> dict[str, Any]:
    """The largest rate at which every seed meets every criterion (module docstring).

    ``criteria`` are texts such as ``"stable"`` or ``"ttft_p50<=0.5"``
    (``servelab.analysis.criteria``). ``seeds`` is a count, taken from ``config.seed`` on, or
    a list. ``on_probe`` is called after each probe with it and its runs. The result is plain
    data: ``max_rate``, ``bracket``, ``criteria``, ``runs`` and the rest (docs/cli.md).
    """
    started = time.perf_counter()
    config = as_config(config)
    parsed = parse_criteria(criteria)
    seed_list = _seed_list(config, seeds)
    tolerance = _tolerance(tolerance)
    with config.named_as_written():
        for name in ("rate", "load"):
            if getattr(config, name) is not None:
                raise ConfigError(name, "capacity-search chooses the rate itself; leave it out")
        theory = capacity(config)
    lam = float(theory["max_rate"])
    start, binding = starting_bound(theory)
    prober = _Prober(config, parsed, seed_list, lam, run, on_probe)
    with _each_warning_once():
        low, high = prober.bracket(start, MIN_FRACTION * start, lam)
        if low is not None:
            low, high = prober.bisect(low, high, tolerance)
    return {
        "max_rate": low,
        "max_load": None if low is None else low / lam,
        "bracket": [low, high],
        "bracket_load": [None if r is None else r / lam for r in (low, high)],
        "criteria": [c.to_dict() for c in parsed],
        "scheduler": config.scheduler or DEFAULT_SCHEDULER,
        "seeds": seed_list,
        "tolerance": tolerance,
        "start_rate": start,
        "start_binding": binding,
        "search_range": [MIN_FRACTION * start, lam],
        "theory": theory,
        "probes": prober.probes,
        "runs": prober.runs,
        "wall_s": time.perf_counter() - started,
    }


def _seed_list(config: SimConfig, seeds: int | Sequence[int]) -> list[int]:
    """A count of seeds from ``config.seed`` on, or the seeds themselves: distinct, >= 0."""
    if isinstance(seeds, bool) or not isinstance(seeds, int | Sequence) or isinstance(seeds, str):
        raise ConfigError("seeds", f"expected a count or a list of seeds, got {seeds!r}")
    if isinstance(seeds, int):
        if not 1 <= seeds <= MAX_SEEDS:
            raise ConfigError("seeds", f"must be between 1 and {MAX_SEEDS}, got {seeds}")
        return [config.seed + i for i in range(seeds)]
    listed = list(seeds)
    if not listed or len(listed) > MAX_SEEDS:
        raise ConfigError("seeds", f"list 1 to {MAX_SEEDS} seeds")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in listed):
        raise ConfigError("seeds", f"seeds are integers >= 0, got {listed!r}")
    if len(set(listed)) < len(listed):
        raise ConfigError("seeds", "a seed is listed twice; each runs once per probe")
    return listed


def _tolerance(tolerance: float) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
        raise ConfigError("tolerance", f"expected a number, got {tolerance!r}")
    if not 0 < tolerance < 1 or not math.isfinite(tolerance):
        raise ConfigError("tolerance", f"must be between 0 and 1 (a fraction of the rate), "
                                       f"got {tolerance}")
    return float(tolerance)


@contextmanager
def _each_warning_once() -> Iterator[None]:
    """Every probe draws the same kind of requests, so a warning about them (a heavy-tailed
    length, say) would come once per run: pass each field's first one on, once."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            pending = list(caught)
    seen: set[tuple[type[Warning], str]] = set()
    for w in pending:
        key = (w.category, w.message.field if isinstance(w.message, ConfigWarning)
               else str(w.message))
        if key not in seen:
            seen.add(key)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

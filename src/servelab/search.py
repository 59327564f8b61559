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

``plan_search`` checks and resolves a search before it runs (``run_search``), so that several
(``capacity_searches``: one per scheduler; an experiment file's sweep and searches) are all
checked before the first one starts.
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
from servelab.config import (
    DEFAULT_SCHEDULER,
    DEFAULT_SEEDS,
    DEFAULT_TOLERANCE,
    SimConfig,
    parse_seeds,
    parse_tolerance,
)
from servelab.errors import ConfigError, ConfigWarning
from servelab.schedulers import knobs_for, refuse_unused_options
from servelab.simulation import as_config, capacity, make_policies, simulate

#: The first step away from the bound, as a fraction of the rate; each further step doubles,
#: so a boundary far from the bound is still bracketed in a few probes.
FIRST_STEP = 0.05
#: The lowest rate probed, as a fraction of the starting bound.
MIN_FRACTION = 0.01

#: Simulates one configuration and returns its summary (a test injects a fake one).
Runner = Callable[[SimConfig], Mapping[str, Any]]
#: Criteria as an argument: texts (or parsed), one text, or None for the config's.
CriteriaArg = Sequence[str | Criterion] | str | None
#: Told of each probe as it ends, with its runs.
ProbeHook = Callable[[dict[str, Any]], None] | None


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


@dataclass(frozen=True)
class SearchPlan:
    """A capacity search checked and resolved, ready to run (``plan_search``)."""

    config: SimConfig  # what each probe simulates, at its rate and seed
    criteria: list[Criterion]
    seeds: list[int]
    tolerance: float
    theory: dict[str, Any]  # what ``capacity`` says of the configuration

    @property
    def scheduler(self) -> str:
        return self.config.scheduler or DEFAULT_SCHEDULER


def plan_search(
    config: SimConfig | Mapping[str, Any],
    criteria: CriteriaArg = None,
    *,
    seeds: int | Sequence[int] | None = None,
    tolerance: float | None = None,
) -> SearchPlan:
    """Check a search's input before any run: every error a search can raise up front.

    ``criteria``, ``seeds`` and ``tolerance`` replace the config's settings of the same names
    (``run.criteria``, ``run.seeds``, ``run.tolerance``) when given.
    """
    config = as_config(config)
    # An argument's errors name the argument, not the config's setting: checked outside.
    given_seeds = parse_seeds(seeds)
    given_tolerance = parse_tolerance(tolerance)
    given_criteria = None if criteria is None else parse_criteria(criteria)
    with config.named_as_written():
        config.refuse_experiments("capacity-search", keep=("criteria", "seeds", "tolerance"))
        parsed = given_criteria or parse_criteria(config.criteria or ())
        for criterion in parsed:
            criterion.check_classes(config.slo)
        for name in ("rate", "load"):
            if getattr(config, name) is not None:
                raise ConfigError(name, "capacity-search chooses the rate itself; leave it out")
        if config.schedulers is not None:
            raise ConfigError("schedulers", "a capacity search is for one scheduler; "
                                            "capacity_searches searches for each of several")
        probed = config.replace(criteria=None, seeds=None, tolerance=None)
        make_policies(probed, [probed.scheduler or DEFAULT_SCHEDULER])
        theory = capacity(probed)
    seed_list = _seed_list(config, given_seeds or config.seeds or DEFAULT_SEEDS)
    return SearchPlan(probed, parsed, seed_list,
                      given_tolerance or config.tolerance or DEFAULT_TOLERANCE, theory)


def run_search(
    plan: SearchPlan,
    on_probe: ProbeHook = None,
    run: Runner = _simulate_summary,
) -> dict[str, Any]:
    """Run a planned search (module docstring); the result is ``capacity_search``'s."""
    started = time.perf_counter()
    theory = plan.theory
    lam = float(theory["max_rate"])
    start, binding = starting_bound(theory)
    prober = _Prober(plan.config, plan.criteria, plan.seeds, lam, run, on_probe)
    with each_warning_once():
        low, high = prober.bracket(start, MIN_FRACTION * start, lam)
        if low is not None:
            low, high = prober.bisect(low, high, plan.tolerance)
    return {
        "max_rate": low,
        "max_load": None if low is None else low / lam,
        "bracket": [low, high],
        "bracket_load": [None if r is None else r / lam for r in (low, high)],
        "criteria": [c.to_dict() for c in plan.criteria],
        "scheduler": plan.scheduler,
        "seeds": plan.seeds,
        "tolerance": plan.tolerance,
        "start_rate": start,
        "start_binding": binding,
        "search_range": [MIN_FRACTION * start, lam],
        "theory": theory,
        "probes": prober.probes,
        "runs": prober.runs,
        "wall_s": time.perf_counter() - started,
    }


def capacity_search(
    config: SimConfig | Mapping[str, Any],
    criteria: CriteriaArg = None,
    *,
    seeds: int | Sequence[int] | None = None,
    tolerance: float | None = None,
    on_probe: ProbeHook = None,
    run: Runner = _simulate_summary,
) -> dict[str, Any]:
    """The largest rate at which every seed meets every criterion (module docstring).

    ``criteria`` are texts such as ``"stable"`` or ``"ttft_p50<=0.5"``
    (``servelab.analysis.criteria``), by default the config's ``criteria``. ``seeds`` is a
    count, taken from ``config.seed`` on, or a list (default: the config's ``seeds``, else
    3); ``tolerance`` the bracket's relative width (the config's, else 0.01). ``on_probe`` is
    called after each probe with it and its runs. The result is plain data: ``max_rate``,
    ``bracket``, ``criteria``, ``runs`` and the rest (docs/cli.md).
    """
    plan = plan_search(config, criteria, seeds=seeds, tolerance=tolerance)
    return run_search(plan, on_probe, run)


def plan_searches(config: SimConfig | Mapping[str, Any],
                  criteria: CriteriaArg = None) -> list[SearchPlan]:
    """One planned search per scheduler of ``config.schedulers`` (else its one scheduler),
    each with the scheduler options it takes; all checked before any runs."""
    config = as_config(config)
    names = list(config.schedulers or [config.scheduler or DEFAULT_SCHEDULER])
    with config.named_as_written():
        refuse_unused_options(names, config.scheduler_options)
    return [plan_search(config.replace(scheduler=name, schedulers=None,
                                       scheduler_options=knobs_for(name,
                                                                   config.scheduler_options)),
                        criteria) for name in names]


def capacity_searches(config: SimConfig | Mapping[str, Any], criteria: CriteriaArg = None, *,
                      on_probe: ProbeHook = None, run: Runner = _simulate_summary
                      ) -> list[dict[str, Any]]:
    """``capacity_search`` for each scheduler of ``config.schedulers``, in order, with the
    same criteria (by default the config's) and the config's ``seeds`` and ``tolerance``;
    ``on_probe`` sees each probe with its ``scheduler``."""
    return run_searches(plan_searches(config, criteria), on_probe, run)


def run_searches(
    plans: Sequence[SearchPlan],
    on_probe: ProbeHook = None,
    run: Runner = _simulate_summary,
) -> list[dict[str, Any]]:
    """Run planned searches in order; ``on_probe`` sees each probe with its ``scheduler``."""
    results = []
    with each_warning_once():  # the same requests in every search: warn about them once
        for plan in plans:
            named = (None if on_probe is None
                     else lambda probe, name=plan.scheduler: on_probe({**probe, "scheduler": name}))
            results.append(run_search(plan, named, run))
    return results


def _seed_list(config: SimConfig, seeds: int | Sequence[int]) -> list[int]:
    """A count of seeds from ``config.seed`` on, or the seeds themselves (checked already)."""
    if isinstance(seeds, int):
        return [config.seed + i for i in range(seeds)]
    return list(seeds)


@contextmanager
def each_warning_once() -> Iterator[None]:
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

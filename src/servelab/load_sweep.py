"""The same comparison at several loads: ``servelab sweep``.

Each load is a ``compare`` at that fraction of the capacity lambda*, with the config's seed: at
a load every scheduler sees the same requests, and from one load to the next the request
stream is the same, rescaled in time (arrivals are unit-rate gaps divided by the rate; the
lengths stay). So the schedulers' curves differ by their policies alone, and one load from the
next by its rate alone.

Every load is checked (``plan_sweep``) before the first one runs (``run_sweep``). Only each
run's summary is kept, not its request table or backlog series, so a sweep holds no more than
one load's runs at a time.

The statistic the result lists per run (``metric``, ``ttft_p50`` by default) is a latency in
seconds (``analysis.criteria.Statistic``). Each run also gets a ``status``: ``unstable`` where
its verdict or the theory says its queue grows without bound (its completed requests are the
survivors of a diverging queue, whose latencies understate what users see), else its verdict
(``stable`` or ``inconclusive``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from servelab.analysis.criteria import Statistic, diverges, parse_statistic
from servelab.config import DEFAULT_METRIC, SimConfig
from servelab.errors import ConfigError, ConfigWarning
from servelab.search import each_warning_once
from servelab.simulation import DEFAULT_COMPARE, as_config, prepare_comparison, run_scheduler

#: The example a missing ``loads`` is told to follow.
EXAMPLE_LOADS = "0.3,0.5,0.7,0.9"


@dataclass(frozen=True)
class SweepPlan:
    """A sweep checked and resolved, ready to run (``plan_sweep``)."""

    configs: list[SimConfig]  # one comparison per load, in increasing load
    schedulers: list[str]
    statistic: Statistic


def plan_sweep(config: SimConfig | Mapping[str, Any],
               loads: Sequence[float] | str | None = None) -> SweepPlan:
    """Check a sweep before any run: its settings, and each load's comparison as ``compare``
    would check it. ``loads`` replaces the config's ``loads`` when given."""
    config = as_config(config)
    if loads is not None:
        config = config.replace(loads=loads)
    with config.named_as_written():
        config.refuse_experiments("a sweep", keep=("loads", "metric"))
        if config.loads is None:
            raise ConfigError("loads", f"required: the loads to run at, as fractions of the "
                                       f"capacity, such as {EXAMPLE_LOADS}")
        for name in ("rate", "load"):
            if getattr(config, name) is not None:
                raise ConfigError(name, "a sweep runs at each of its loads; leave this out")
        statistic = config.metric or parse_statistic(DEFAULT_METRIC)
        statistic.check_classes(config.slo)
    names = list(config.schedulers or ([config.scheduler] if config.scheduler
                                       else DEFAULT_COMPARE))
    # An error about one load's rate names the setting the loads were written as.
    written = {**config.written, "load": config.written.get("loads", "loads")}
    configs = [config.replace(loads=None, metric=None, scheduler=None, schedulers=names,
                              load=load, written=written) for load in config.loads]
    with each_warning_once():  # the same requests at every load: warn about them once
        for point in configs:
            prepare_comparison(point)
    return SweepPlan(configs, names, statistic)


def run_sweep(plan: SweepPlan,
              on_load: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run a planned sweep, load after load; ``on_load`` sees each load's point as it ends."""
    started = time.perf_counter()
    points = []
    for config in plan.configs:
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConfigWarning)  # plan_sweep passed them on
            scenario, policies = prepare_comparison(config)
        summaries = [run_scheduler(scenario, policy).summary for policy in policies]
        assert config.load is not None
        points.append(_point(config.load, summaries, plan.statistic,
                             time.perf_counter() - began))
        if on_load is not None:
            on_load(points[-1])
    return {
        "schedulers": plan.schedulers,
        "loads": [point["load"] for point in points],
        "metric": plan.statistic.text,
        "metric_unit": "s",
        "max_rate": points[0]["results"][0]["capacity"]["max_rate"],
        "points": points,
        "wall_s": time.perf_counter() - started,
    }


def sweep(config: SimConfig | Mapping[str, Any], loads: Sequence[float] | str | None = None,
          *, on_load: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Compare the config's schedulers (``schedulers``, or its one ``scheduler``; default: all
    five) at each of ``loads`` (fractions of lambda*; default: the config's ``loads``).

    The result is plain data (docs/cli.md, "Sweep"): ``schedulers``, ``loads``, ``metric``,
    ``max_rate``, and one point per load with its ``rate``, each run's ``values`` (the metric
    in seconds) and ``status``, and the runs' summaries (``results``).
    """
    return run_sweep(plan_sweep(config, loads), on_load)


def run_status(summary: Mapping[str, Any]) -> str:
    """``unstable`` where the queue grows without bound (the verdict or the theory says so),
    else the verdict: ``stable`` or ``inconclusive``."""
    return "unstable" if diverges(summary) else str(summary["verdict"])


def _point(load: float, summaries: list[dict[str, Any]], statistic: Statistic,
           wall_s: float) -> dict[str, Any]:
    first = summaries[0]
    values = {s["scheduler"]: statistic.value_s(s) for s in summaries}
    return {
        "load": load,
        "rate": first["rate"],
        "theory_verdict": first["theory_verdict"],
        "values": {name: None if v is None or math.isnan(v) else v
                   for name, v in values.items()},
        "status": {s["scheduler"]: run_status(s) for s in summaries},
        "results": summaries,
        "wall_s": wall_s,
    }

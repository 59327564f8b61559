"""An experiment file's experiments of many runs: ``servelab run FILE`` with ``loads`` (a
sweep of its schedulers over the loads) or ``criteria`` (a capacity search for each of its
schedulers), or both: the sweep first, then the searches.

Both parts are checked before either starts, so a mistake in the searches' settings cannot
cost a finished sweep. Each part takes the settings of its own (``run.loads`` and
``run.metric``; ``run.criteria``, ``run.seeds`` and ``run.tolerance``); anything else is
shared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from servelab.config import SimConfig
from servelab.errors import ConfigError
from servelab.load_sweep import plan_sweep, run_sweep
from servelab.search import each_warning_once, plan_searches, run_searches
from servelab.simulation import as_config


def is_experiment(config: SimConfig) -> bool:
    """Whether the config describes a sweep or capacity searches (else one run or a compare)."""
    return config.loads is not None or config.criteria is not None


def run_experiment(
    config: SimConfig | Mapping[str, Any],
    *,
    on_load: Callable[[dict[str, Any]], None] | None = None,
    on_probe: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The sweep (with ``loads``) and the capacity searches (with ``criteria``, one per
    scheduler): ``{"sweep": ..., "capacity_searches": [...]}``, each key only where its part
    ran, holding what ``sweep`` and ``capacity_searches`` return."""
    config = as_config(config)
    if not is_experiment(config):
        raise ConfigError("loads", "an experiment needs loads (a sweep) or criteria (a "
                                   "capacity search), or both")
    # Each part leaves the other's settings to it; alone, it refuses them (they do nothing).
    for_sweep = (config if config.criteria is None
                 else config.replace(criteria=None, seeds=None, tolerance=None))
    for_searches = config if config.loads is None else config.replace(loads=None, metric=None)
    result: dict[str, Any] = {}
    with each_warning_once():  # the same requests in every part: warn about them once
        sweep_plan = None if config.loads is None else plan_sweep(for_sweep)
        search_plans = None if config.criteria is None else plan_searches(for_searches)
        if sweep_plan is not None:
            result["sweep"] = run_sweep(sweep_plan, on_load)
        if search_plans is not None:
            result["capacity_searches"] = run_searches(search_plans, on_probe)
    return result

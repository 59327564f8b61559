"""The library calls behind the CLI: ``simulate``, ``compare`` and ``capacity``.

Each takes a ``SimConfig`` (or a plain mapping with the same keys) and returns plain data, so a
notebook gets exactly what the command line prints. A ``Scenario`` is everything resolved from
the configuration once (preset, workload, theory) and shared by every scheduler of a comparison.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from servelab.analysis.metrics import hist_stats_ms, stats_ms
from servelab.analysis.stability import backlog_verdict
from servelab.analysis.theory import request_capacity, theory_summary
from servelab.config import DEFAULT_REQUESTS, SimConfig
from servelab.errors import ConfigError
from servelab.results import BacklogSeries, RequestTable, SimResult
from servelab.schedulers import Scheduler, make_scheduler
from servelab.sim.decode_pool import TICKS_PER_S
from servelab.sim.engine import Engine
from servelab.timing.presets import Preset, load_preset, load_preset_file
from servelab.workload.build import Workload, WorkloadSpec

DEFAULT_COMPARE = ("fastertransformer", "vllm", "orca", "sarathi", "kfcfs")


@dataclass(frozen=True)
class Scenario:
    """A configuration resolved into a preset, a budget, a workload and its theory."""

    config: SimConfig
    preset: Preset
    budget: int
    convention: str
    spec: WorkloadSpec
    workload: Workload
    horizon: float
    theory: dict[str, Any]


@dataclass
class CompareResult:
    """One ``SimResult`` per scheduler, on the same requests."""

    scenario: Scenario
    results: list[SimResult]

    @property
    def summaries(self) -> list[dict[str, Any]]:
        return [r.summary for r in self.results]


def as_config(config: SimConfig | Mapping[str, Any]) -> SimConfig:
    return config if isinstance(config, SimConfig) else SimConfig.from_dict(dict(config))


def resolve_engine(config: SimConfig) -> tuple[Preset, int, str]:
    """The preset, and the budget and convention after the config's overrides."""
    if config.preset_file is not None:
        preset = load_preset_file(_path(config.preset_file, config))
    else:
        preset = load_preset(config.preset)
    budget = config.budget if config.budget is not None else preset.budget
    return preset, budget, config.convention or preset.convention


def resolve_workload(config: SimConfig) -> WorkloadSpec:
    base_dir = Path(config.base_dir) if config.base_dir is not None else None
    return WorkloadSpec.resolve(config.arrivals, config.prefill, config.decode, config.trace,
                                base_dir)


def requested_rate(
    config: SimConfig, preset: Preset, budget: int, convention: str, spec: WorkloadSpec
) -> float | None:
    """``--rate``, or ``--load`` times the capacity lambda*; None when neither is given."""
    if config.load is None:
        return config.rate
    _, max_rate, _ = request_capacity(preset.timing, budget, spec.mean_prompt, spec.mean_output,
                                      convention)
    return config.load * max_rate


def _path(name: str, config: SimConfig) -> Path:
    path = Path(name)
    if config.base_dir is not None and not path.is_absolute():
        path = Path(config.base_dir) / path
    return path


def prepare(config: SimConfig | Mapping[str, Any]) -> Scenario:
    """Resolve preset, workload and theory; every input error surfaces here, before any run."""
    config = as_config(config)
    if config.rate is None and config.load is None and config.trace is None:
        raise ConfigError("rate", "required (requests per second), or --load as a fraction "
                                  "of capacity, or a --trace")
    preset, budget, convention = resolve_engine(config)
    spec = resolve_workload(config)
    rate = requested_rate(config, preset, budget, convention, spec)
    count = config.requests
    if count is None and config.duration is None and spec.trace is None:
        count = DEFAULT_REQUESTS
    workload = spec.generate(rate, config.seed, count, config.duration)
    if len(workload) == 0:
        raise ConfigError("duration", "no request arrives within the run; make it longer")
    if rate is None:  # a trace at its own pace
        rate = spec.trace.mean_rate
    horizon = config.duration if config.duration is not None else float(workload.arrival[-1])
    m_p = float(workload.prompt.mean()) if spec.trace is not None else spec.mean_prompt
    m_d = float(workload.output.mean()) if spec.trace is not None else spec.mean_output
    theory = theory_summary(preset.timing, budget, config.kmax, m_p, m_d, convention, rate,
                            spec.fixed_prompt)
    theory["mean_prefill_tokens"] = m_p
    theory["mean_decode_tokens"] = m_d
    return Scenario(config, preset, budget, convention, spec, workload, horizon, theory)


def build_scheduler(scenario: Scenario, name: str) -> Scheduler:
    """Make the policy and refuse, before running, a workload it could never serve."""
    c = scenario.config
    scheduler = make_scheduler(name, chunked_prefill=c.chunked_prefill, priority=c.priority,
                               kp=c.kp, kd=c.kd)
    longest = int(scenario.workload.prompt.max())
    if scheduler.whole_prefill and longest > scenario.budget:
        raise ConfigError(
            "prefill",
            f"a prompt of {longest} tokens exceeds the token budget {scenario.budget}, and "
            f"{name} never splits a prompt, so it could never be scheduled "
            "(use --chunked-prefill or a larger --budget)",
        )
    return scheduler


def run_scheduler(scenario: Scenario, scheduler: Scheduler) -> SimResult:
    """Simulate one policy on the scenario's requests and summarise it beside the theory."""
    c = scenario.config
    w = scenario.workload
    engine = Engine(scheduler, scenario.preset.timing, scenario.budget, c.kmax,
                    scenario.convention, c.record_batches)
    started = time.perf_counter()
    rec = engine.run(w.arrival, w.prompt, w.output, scenario.horizon, c.drain)
    requests = RequestTable(w.arrival[: rec.admitted], rec.first_token[: rec.admitted],
                            rec.finish[: rec.admitted], w.prompt[: rec.admitted],
                            w.output[: rec.admitted])
    backlog = BacklogSeries(rec.backlog_time, rec.backlog_tokens, rec.backlog_requests)
    theory = scenario.theory
    verdict = backlog_verdict(rec.backlog_time, rec.backlog_tokens, scenario.horizon,
                              theory["offered_tokens_per_s"])
    elapsed = rec.end_time if rec.end_time > 0 else float("nan")
    done = np.isfinite(requests.finish_s)
    multi = done & (requests.output_tokens > 1)  # TPOT needs a second token
    tpot = (requests.e2e_s - requests.ttft_s)[multi] / (requests.output_tokens[multi] - 1)
    summary: dict[str, Any] = {
        "scheduler": scheduler.name,
        "scheduler_options": scheduler.options(),
        "work_conserving": scheduler.work_conserving,
        "preset": scenario.preset.name,
        "timing": scenario.preset.timing.describe(),
        "budget": scenario.budget,
        "kmax": c.kmax,
        "convention": scenario.convention,
        "workload": {**scenario.spec.describe(), "seed": c.seed},
        **theory,
        **verdict.to_dict(),
        "horizon_s": scenario.horizon,
        "end_s": rec.end_time,
        "drained": c.drain,
        "arrived": rec.admitted,
        "completed": rec.completed,
        "in_flight": rec.admitted - rec.completed,
        "iterations": rec.iterations,
        "mean_batch_tokens": (rec.prefill_tokens + rec.decode_tokens) / max(rec.iterations, 1),
        "busy_fraction": rec.busy_s / elapsed,
        "throughput": {
            "tokens_per_s": (rec.prefill_tokens + rec.decode_tokens) / elapsed,
            "requests_per_s": rec.completed / elapsed,
            "output_tokens_per_s": float(requests.output_tokens[done].sum()) / elapsed,
        },
        "ttft_ms": stats_ms(requests.ttft_s),
        "tbt_ms": hist_stats_ms(rec.tbt_hist, TICKS_PER_S),
        "tpot_ms": stats_ms(tpot),
        "e2e_ms": stats_ms(requests.e2e_s),
        "wall_s": time.perf_counter() - started,
        "servelab_version": _version(),
    }
    return SimResult(summary, requests, backlog, rec.batches)


def simulate(config: SimConfig | Mapping[str, Any]) -> SimResult:
    """Run one scheduler (``config.scheduler``) and return its result."""
    scenario = prepare(config)
    return run_scheduler(scenario, build_scheduler(scenario, scenario.config.scheduler))


def compare(
    config: SimConfig | Mapping[str, Any], schedulers: Sequence[str] | None = None
) -> CompareResult:
    """Run several schedulers on identical requests (all are validated before any runs)."""
    scenario = prepare(config)
    names = list(schedulers or scenario.config.schedulers or DEFAULT_COMPARE)
    policies = [build_scheduler(scenario, name) for name in names]
    return CompareResult(scenario, [run_scheduler(scenario, p) for p in policies])


def capacity(config: SimConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The theory alone for a configuration (no simulation)."""
    config = as_config(config)
    preset, budget, convention = resolve_engine(config)
    spec = resolve_workload(config)
    m_p, m_d = spec.mean_prompt, spec.mean_output
    rate = requested_rate(config, preset, budget, convention, spec)
    if rate is None:  # no rate: a trace's own pace, or the theory alone
        rate = spec.trace.mean_rate if spec.trace is not None else 0.0
    out = theory_summary(preset.timing, budget, config.kmax, m_p, m_d, convention, rate,
                         spec.fixed_prompt)
    capacity_block = out["capacity"]
    result: dict[str, Any] = {
        "preset": preset.name,
        "timing": preset.timing.describe(),
        "budget": budget,
        "kmax": config.kmax,
        "convention": convention,
        "mean_prefill_tokens": m_p,
        "mean_decode_tokens": m_d,
        **capacity_block,
    }
    if rate > 0:
        result.update(rate=rate, load=out["load"],
                      offered_tokens_per_s=out["offered_tokens_per_s"],
                      fluid_slope_tokens_per_s=out["fluid_slope_tokens_per_s"],
                      verdict=out["theory_verdict"], verdict_reason=out["theory_verdict_reason"])
    if out["kmax_region"] is not None:
        result["kmax_region"] = out["kmax_region"]
    return result


def _version() -> str:
    try:
        return version("servelab")
    except PackageNotFoundError:
        return "unknown"

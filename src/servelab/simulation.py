"""The library calls behind the CLI: ``simulate``, ``compare`` and ``capacity``.

Each takes a ``SimConfig`` (or a plain mapping with the same keys) and returns plain data, so a
notebook gets exactly what the command line prints. A ``Scenario`` is everything resolved from
the configuration once (preset, workload, theory) and shared by every scheduler of a comparison.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from servelab.analysis.memory import (
    MemoryBound,
    check_requests_fit,
    largest_requests,
    memory_bound,
)
from servelab.analysis.metrics import hist_stats_ms, latency_stats, slo_summary
from servelab.analysis.stability import (
    Guards,
    RunSeries,
    backlog_verdict,
    request_guards,
)
from servelab.analysis.theory import (
    MEMORY_KEYS,
    binding_bound,
    request_capacity,
    theory_summary,
)
from servelab.build import build_kind
from servelab.config import (
    DEFAULT_ARRIVALS,
    DEFAULT_DECODE,
    DEFAULT_PREFILL,
    DEFAULT_PRESET,
    DEFAULT_ROUTER,
    DEFAULT_SCHEDULER,
    MAX_CLOCK_S,
    MAX_LOAD,
    MAX_REQUESTS,
    PRESET_KV,
    SimConfig,
)
from servelab.core.convention import Convention
from servelab.core.kv import KVCache
from servelab.core.kv_settings import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_PREEMPTION,
    DEFAULT_WATERMARK,
    MISTRAL_7B_KV_BYTES_PER_TOKEN,
    KVSettings,
    swap_block_seconds,
)
from servelab.errors import ConfigError
from servelab.results import BacklogSeries, RequestTable, SimResult
from servelab.routers import Router, make_router
from servelab.schedulers import Scheduler, knobs_for, make_scheduler, refuse_unused_options
from servelab.sim.decode_pool import TICKS_PER_S
from servelab.sim.engine import Engine
from servelab.sim.run import RunRecords, run_engine, run_engines
from servelab.timing.presets import Preset, load_preset, load_preset_file
from servelab.workload.build import (
    RequestStream,
    Workload,
    WorkloadSpec,
    warn_if_unrepresentative,
)
from servelab.workload.lengths import LengthPairs, LengthSource

DEFAULT_COMPARE = ("fastertransformer", "vllm", "orca", "sarathi", "kfcfs")
#: ``--requests auto`` starts here and doubles until the verdict is confident or at the cap.
AUTO_START = 5000


@dataclass(frozen=True)
class Scenario:
    """A configuration resolved into a preset, a budget, a request stream and its theory.

    ``workload`` is the run's requests, or, under ``--requests auto``, its first step's: each
    further step takes a longer prefix of the same ``stream``.
    """

    config: SimConfig
    preset: Preset
    budget: int
    convention: Convention
    spec: WorkloadSpec
    stream: RequestStream
    workload: Workload
    theory: dict[str, Any]
    guards: Guards
    auto_cap: int  # where an auto run stops growing: --max-requests, or the clock's limit
    kv: KVSettings | None = None  # the KV cache; None is unlimited memory

    def horizon(self, workload: Workload) -> float:
        """The end of the arrival window: --duration, or the last arrival."""
        if self.config.duration is not None:
            return self.config.duration
        return float(workload.arrival[-1])


@dataclass
class CompareResult:
    """One ``SimResult`` per scheduler, on the same requests."""

    scenario: Scenario
    results: list[SimResult]

    @property
    def summaries(self) -> list[dict[str, Any]]:
        return [r.summary for r in self.results]


def as_config(config: SimConfig | Mapping[str, Any]) -> SimConfig:
    return config if isinstance(config, SimConfig) else SimConfig.from_dict(config)


def resolve_engine(config: SimConfig) -> tuple[Preset, int, Convention]:
    """The preset (its timing tiled by ``--tile``), and the budget and convention after the
    config's overrides."""
    if config.preset_file is not None:
        preset = load_preset_file(_path(config.preset_file, config))
    else:
        preset = load_preset(config.preset or DEFAULT_PRESET)
    budget = config.budget if config.budget is not None else preset.budget
    if config.tile is not None:
        preset = dataclasses.replace(
            preset, timing=dataclasses.replace(preset.timing, tile=config.tile))
    return preset, budget, Convention.named(config.convention or preset.convention)


def resolve_kv(config: SimConfig, preset: Preset) -> KVSettings | None:
    """The run's KV cache: None (unlimited, whatever the preset says) unless --kv-blocks is
    given. ``--kv-blocks preset`` takes the preset's figure; with a --block-size of its own,
    the same memory in blocks of that size (rounded down)."""
    if config.kv_blocks is None:
        return None
    kv = preset.kv
    block_size = config.block_size or (kv.block_size if kv else DEFAULT_BLOCK_SIZE)
    blocks = config.kv_blocks
    if blocks == PRESET_KV:
        if kv is None:
            raise ConfigError("kv_blocks", f"preset {preset.name} gives no KV capacity (it has "
                                           "no kv: section); give --kv-blocks N")
        blocks = kv.blocks * kv.block_size // block_size
        if blocks < 1:
            raise ConfigError("block_size", f"{block_size:,} tokens is more than the preset's "
                                            f"whole KV cache ({kv.blocks * kv.block_size:,})")
    assert isinstance(blocks, int)
    per_token = kv.bytes_per_token if kv and kv.bytes_per_token else MISTRAL_7B_KV_BYTES_PER_TOKEN
    swap_s = config.swap_block_s
    return KVSettings(
        blocks, block_size,
        DEFAULT_WATERMARK if config.watermark is None else config.watermark,
        config.preemption or DEFAULT_PREEMPTION,
        swap_block_seconds(block_size, per_token) if swap_s is None else swap_s,
    )


def resolve_workload(config: SimConfig) -> WorkloadSpec:
    base_dir = Path(config.base_dir) if config.base_dir is not None else None
    return WorkloadSpec.resolve(config.arrivals or DEFAULT_ARRIVALS,
                                config.prefill or DEFAULT_PREFILL,
                                config.decode or DEFAULT_DECODE, config.trace, base_dir,
                                config.slo)


def requested_rate(config: SimConfig, max_rate: float) -> float | None:
    """``--rate``, or ``--load`` times the capacity lambda*; None when neither is given."""
    return config.rate if config.load is None else config.load * max_rate


def _rate_field(config: SimConfig) -> str:
    """The setting that decided the arrival rate, for errors about it."""
    return "load" if config.load is not None else "rate" if config.rate is not None else "trace"


def check_load(config: SimConfig, rate: float, max_rate: float, bound: str = "capacity") -> None:
    """Refuse arrivals so far above capacity that the backlog can only grow (``MAX_LOAD``)."""
    if rate > MAX_LOAD * max_rate:
        raise ConfigError(
            _rate_field(config),
            f"{rate:,.4g} requests/s is load {rate / max_rate:,.4g}, over {MAX_LOAD:g} times the "
            f"{bound} of {max_rate:,.4g} requests/s: the backlog only grows and the run says "
            f"nothing about stability; arrive at most at {MAX_LOAD * max_rate:,.4g} requests/s",
        )


def check_run_length(
    config: SimConfig, spec: WorkloadSpec, rate: float, count: int | None, batch_s: float
) -> None:
    """Before drawing any request: refuse a run that cannot be simulated meaningfully.

    Its clock must stay where float64 seconds resolve the 0.1 us TBT ticks (``MAX_CLOCK_S``),
    it must hold at most ``MAX_REQUESTS``, and without ``--drain`` its last arrival must come
    after one full batch could finish, or the run ends before it measures anything.
    """
    if config.duration is not None:
        horizon = config.duration
    elif spec.trace is not None:
        n = len(spec.trace) if count is None else min(count, len(spec.trace))
        horizon = float(spec.trace.arrived_at[n - 1]) * spec.trace.mean_rate / rate
    else:
        assert count is not None  # prepare gives a count to a run with neither
        horizon = count / rate
    clock_field = "duration" if config.duration is not None else _rate_field(config)
    length_field = ("max_requests" if config.max_requests is not None
                    else "requests" if config.requests is not None else clock_field)
    span = max(horizon, 1 / rate)  # the first arrival comes at about 1/rate
    if span > MAX_CLOCK_S:
        raise ConfigError(
            clock_field,
            f"at {rate:,.4g} requests/s the run spans about {span:.3g} s of simulated time, "
            f"more than the {MAX_CLOCK_S:.0e} s (about 3 years) up to which float64 seconds "
            "resolve the 0.1 us ticks that time TBT",
        )
    if config.duration is not None and rate * config.duration > MAX_REQUESTS:
        raise ConfigError("duration", f"about {rate * config.duration:,.0f} requests would "
                                      f"arrive, more than the {MAX_REQUESTS:,} a run may hold "
                                      "(about 300 bytes each)")
    if not config.drain and horizon < batch_s:
        raise ConfigError(
            length_field,
            f"the last request arrives at about {horizon:.3g} s, before one full batch "
            f"({batch_s * 1e3:,.4g} ms) can finish, so the run would end before it measures "
            "anything; give it more time, or --drain to run until every request finishes",
        )


def _memory_bound(config: SimConfig, kv: KVSettings | None, preset: Preset, budget: int,
                  convention: Convention, lengths: LengthSource, m_p: float, m_d: float,
                  rate: float) -> MemoryBound | None:
    """The KV-memory bound when the run has a cache (checked against ``MAX_LOAD`` too)."""
    if kv is None:
        return None
    _, _, n_star = request_capacity(preset.timing, budget, m_p, m_d, convention)
    bound = memory_bound(preset.timing, budget, kv, lengths, convention,
                         convention.work(m_p, m_d), m_p / (m_p + m_d), n_star)
    check_load(config, rate, config.replicas * bound.max_rate, "KV-memory bound")
    return bound


def _auto_where(config: SimConfig, cap: int) -> Callable[[int], str] | None:
    """For an error about request i of an auto run: which of the requests it may draw."""
    if not config.auto:
        return None
    return lambda i: f" (request {i + 1:,} of the up to {cap:,} an auto run may draw)"


def _path(name: str, config: SimConfig) -> Path:
    path = Path(name)
    if config.base_dir is not None and not path.is_absolute():
        path = Path(config.base_dir) / path
    return path


def prepare(config: SimConfig | Mapping[str, Any]) -> Scenario:
    """Resolve preset, workload and theory; every input error surfaces here, before any run."""
    config = as_config(config)
    with config.named_as_written():
        return _prepare(config)


def _prepare(config: SimConfig) -> Scenario:
    if config.rate is None and config.load is None and config.trace is None:
        raise ConfigError("rate", "required (requests per second), or --load as a fraction "
                                  "of capacity, or a --trace")
    preset, budget, convention = resolve_engine(config)
    kv = resolve_kv(config, preset)
    spec = resolve_workload(config)
    tokens_per_s, max_rate, batch_tokens = request_capacity(
        preset.timing, budget, spec.mean_prompt, spec.mean_output, convention)
    max_rate *= config.replicas  # the whole system's lambda*
    rate = requested_rate(config, max_rate)
    nominal = rate if rate is not None else spec.trace.mean_rate  # None: a trace's own pace
    check_load(config, nominal, max_rate)
    first = config.requests if isinstance(config.requests, int) else None
    if spec.trace is not None and first is not None and first > len(spec.trace):
        raise ConfigError("requests", f"the trace has {len(spec.trace):,} requests, fewer than "
                                      f"the {first:,} asked for")
    if config.auto:
        first = min(AUTO_START, config.request_cap)
    check_run_length(config, spec, nominal, first, batch_tokens / tokens_per_s)
    stream = spec.stream(rate, config.seed)
    if config.duration is not None:
        workload = stream.until(config.duration)
    else:  # a trace without --requests: all of it
        workload = stream.first(first if first is not None else len(spec.trace or ()))
    if len(workload) == 0:
        raise ConfigError("duration", "no request arrives within the run; make it longer")
    warn_if_unrepresentative(spec, workload)
    # An auto run grows while its clock stays where float64 resolves the TBT ticks.
    auto_cap = min(config.request_cap, max(len(workload), int(MAX_CLOCK_S * nominal)))
    m_p = float(workload.prompt.mean()) if spec.trace is not None else spec.mean_prompt
    m_d = float(workload.output.mean()) if spec.trace is not None else spec.mean_output
    memory = None
    if kv is not None:  # every request that may run must fit, checked before any runs
        drawn = stream.first(auto_cap) if config.auto else workload
        check_requests_fit(kv, LengthPairs(drawn.prompt, drawn.output), convention,
                           _auto_where(config, auto_cap))
        lengths = (LengthPairs(workload.prompt, workload.output) if spec.trace is not None
                   else spec.length_source())
        memory = _memory_bound(config, kv, preset, budget, convention, lengths, m_p, m_d,
                               nominal)
    theory = theory_summary(preset.timing, budget, config.kmax, m_p, m_d, convention, nominal,
                            spec.fixed_prompt, config.replicas, memory)
    theory["mean_prefill_tokens"] = m_p
    theory["mean_decode_tokens"] = m_d
    guards = request_guards(preset.timing, budget, m_p, m_d, convention)
    return Scenario(config, preset, budget, convention, spec, stream, workload, theory, guards,
                    auto_cap, kv)


def make_policies(config: SimConfig, names: Sequence[str]) -> list[Scheduler]:
    """The policies called ``names`` with the config's knobs, each taking those it has; a knob
    none of them takes is refused, as is a bad value, before any work."""
    refuse_unused_options(names, config.scheduler_options)
    return [make_scheduler(name, **knobs_for(name, config.scheduler_options)) for name in names]


def build_scheduler(scenario: Scenario, name: str) -> Scheduler:
    """Make the policy and refuse, before running, a workload it could never serve."""
    with scenario.config.named_as_written():
        [scheduler] = make_policies(scenario.config, [name])
        _check_prompts_fit(scheduler, scenario)
    return scheduler


def _check_prompts_fit(scheduler: Scheduler, scenario: Scenario) -> None:
    """Refuse, before running, what this policy could never schedule: a prompt over the
    budget when it never splits one (or, under recompute preemption, a prompt and its output
    so far, which it must prefill again in one batch), and a reservation larger than the KV
    cache. An auto run may grow to ``auto_cap`` requests, so all of those are checked now, not
    when a later step draws them (and a finished comparison would be lost to the error)."""
    kv = scenario.kv
    if kv is not None:
        reserve = scheduler.kv_reserve_tokens()
        if kv.blocks_for(reserve) + kv.watermark_blocks > kv.blocks:
            raise ConfigError("kv_blocks", f"{scheduler.name} reserves {reserve:,} tokens "
                                           f"({kv.blocks_for(reserve):,} blocks) for every "
                                           f"request, more than the cache's {kv.blocks:,} "
                                           "blocks less the watermark: nothing could run")
    if not scheduler.whole_prefill:
        return
    auto = scenario.config.auto
    drawn = scenario.stream.first(scenario.auto_cap) if auto else scenario.workload
    request = _auto_where(scenario.config, scenario.auto_cap)
    longest = int(drawn.prompt.max())
    if longest > scenario.budget:
        where = request(int(drawn.prompt.argmax())) if request else ""
        raise ConfigError(
            "prefill",
            f"a prompt of {longest} tokens{where} exceeds the token budget {scenario.budget}, "
            f"and {scheduler.name} never splits a prompt, so it could never be scheduled (use "
            "--chunked-prefill or a larger --budget)",
        )
    if kv is not None and kv.preemption == "recompute":
        # A request preempted before its last token prefills its prompt and output so far.
        recomputed = drawn.prompt + drawn.output - 1
        worst = int(recomputed.argmax())
        if recomputed[worst] > scenario.budget:
            where = request(worst) if request else ""
            raise ConfigError(
                "kv_blocks",
                f"a request of {int(drawn.prompt[worst])} prompt and {int(drawn.output[worst])} "
                f"output tokens{where}, once preempted, recomputes up to "
                f"{int(recomputed[worst])} tokens in one batch, over the token budget "
                f"{scenario.budget}, and {scheduler.name} never splits a prompt (use "
                "--chunked-prefill, a larger --budget or --preemption swap)",
            )


def run_scheduler(scenario: Scenario, scheduler: Scheduler) -> SimResult:
    """Simulate one policy beside the theory; under ``--requests auto``, until it is sure.

    An auto run starts with ``AUTO_START`` requests and doubles them while the verdict is
    inconclusive, up to ``--max-requests``. Each step simulates a longer prefix of the same
    request stream from the start, so the result is exactly ``--requests N`` for the final N,
    and the doubling costs at most as much again as the final step.
    """
    c = scenario.config
    started = time.perf_counter()
    workload = scenario.workload
    steps = [len(workload)]
    result = _run_once(scenario, scheduler, workload)
    while (c.auto and result.summary["verdict"] == "inconclusive"
           and len(workload) < scenario.auto_cap):
        workload = scenario.stream.first(min(scenario.auto_cap, 2 * len(workload)))
        result = _run_once(scenario, scheduler, workload)
        steps.append(len(workload))
    summary = result.summary
    summary["run_length"] = _run_length(scenario, steps)
    if c.auto and summary["verdict"] == "inconclusive":
        summary["verdict_reason"] = _unresolved(summary, scheduler, scenario.auto_cap)
    if summary["verdict"] == "stable" and summary.get("theory_verdict") == "unstable":
        summary["verdict_reason"] += (
            f"; but the theory says no scheduler keeps up at this load: the backlog grows "
            f"({summary['fluid_slope_tokens_per_s']:,.1f} tokens/s in the fluid limit), only "
            "slower than the tolerance, so treat a load this close to capacity as unstable")
    elif summary["verdict"] == "stable" and _beyond_full_batches(summary):
        summary["verdict_reason"] += (
            "; but full batches of b_max serve less than arrives, and this scheduler fills "
            "the budget under load: its backlog grows, only slower than the tolerance")
    summary["wall_s"] = time.perf_counter() - started
    return result


def _beyond_full_batches(summary: dict[str, Any]) -> bool:
    """A work-conserving policy offered more than its full batches serve (theory.py)."""
    full = summary["capacity"].get("full_batch_tokens_per_s")
    return (summary["work_conserving"] and full is not None
            and summary["offered_tokens_per_s"] >= full)


def _run_length(scenario: Scenario, steps: list[int]) -> dict[str, Any]:
    """How the run's length was chosen, for the summary."""
    c = scenario.config
    if c.auto:
        return {"mode": "auto", "requests": steps[-1], "steps": steps,
                "max_requests": scenario.auto_cap}
    mode = "duration" if c.duration is not None else "requests" if c.requests else "trace"
    return {"mode": mode, "requests": steps[-1]}


def _unresolved(summary: dict[str, Any], scheduler: Scheduler, cap: int) -> str:
    """Why ``--requests auto`` stopped at its cap without a confident verdict."""
    bound = binding_bound(summary)  # the KV memory's, the k_max region's or the tokens'
    load, boundary = bound.load, bound.boundary
    measured = math.isfinite(summary["served_tokens_per_s"])  # not stopped by a guard
    if scheduler.work_conserving and abs(load - 1) < 0.05 and measured:
        near = (f"is within {abs(load - 1):.1%} of {boundary}" if abs(load - 1) >= 5e-4
                else f"is at {boundary}")
        return (f"load {load:.3f} {near}; {cap:,} requests cannot resolve it "
                f"({summary['verdict_reason']})")
    return f"{summary['verdict_reason']}, even at {cap:,} requests (the auto run's cap)"


def _run_once(scenario: Scenario, scheduler: Scheduler, w: Workload) -> SimResult:
    """Simulate one policy on the requests ``w`` and summarise it beside the theory."""
    c = scenario.config
    # Replicas share the scheduler object: a policy keeps no state between calls (it reads
    # what it needs, a mean batch time say, from the view of the engine that asks).
    kv = scenario.kv
    engines = [Engine(scheduler, scenario.preset.timing, scenario.budget, c.kmax,
                      scenario.convention, c.record_batches,
                      None if kv is None else KVCache(kv.blocks, kv.block_size, kv.watermark,
                                                      kv.preemption, kv.swap_block_s),
                      scenario.spec.slo) for _ in range(c.replicas)]
    horizon = scenario.horizon(w)
    router: Router | None = None
    if c.replicas == 1:
        rec = run_engine(engines[0], w.arrival, w.prompt, w.output, horizon, c.drain,
                         w.slo_class)
    else:
        # Its own random stream, beside the workload's three (SeedSequence children 0-2).
        rng = np.random.default_rng(np.random.SeedSequence(c.seed).spawn(4)[3])
        router = make_router(c.router or DEFAULT_ROUTER, c.replicas, rng)
        rec = run_engines(engines, router.choose, w.arrival, w.prompt, w.output, horizon,
                          c.drain, w.slo_class)
    n = rec.admitted
    requests = RequestTable(w.arrival[:n], rec.first_token[:n], rec.finish[:n], w.prompt[:n],
                            w.output[:n], None if w.slo_class is None else w.slo_class[:n],
                            tuple(slo.name for slo in scenario.spec.slo))
    sampled = rec.backlog
    backlog = BacklogSeries(np.asarray(sampled.time), np.asarray(sampled.tokens),
                            np.asarray(sampled.requests))
    theory = scenario.theory
    series = RunSeries(backlog.time_s, np.asarray(sampled.served), w.arrival, w.prompt,
                       w.output, scenario.convention, horizon)
    verdict = backlog_verdict(series, theory["offered_tokens_per_s"], scenario.guards)
    elapsed = rec.end_time if rec.end_time > 0 else float("nan")
    done = np.isfinite(requests.finish_s)  # every latency statistic: completed requests only
    latency = latency_stats(requests, done)
    summary: dict[str, Any] = {
        "scheduler": scheduler.name,
        "scheduler_options": scheduler.options(),
        "work_conserving": scheduler.work_conserving,
        "reconstructed": scheduler.reconstructed,
        "preset": scenario.preset.name,
        "timing": scenario.preset.timing.describe(),
        "budget": scenario.budget,
        "kmax": c.kmax,
        "convention": scenario.convention.name,
        "workload": {**scenario.spec.describe(), "seed": c.seed},
        **theory,
        **verdict.to_dict(_capacity_along_mix(theory)),
        "horizon_s": horizon,
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
            "output_tokens_per_s": float(np.sum(requests.output_tokens, where=done)) / elapsed,
        },
        "ttft_ms": latency["ttft_ms"],
        "tbt_ms": hist_stats_ms(rec.tbt_hist, TICKS_PER_S),
        "tpot_ms": latency["tpot_ms"],
        "e2e_ms": latency["e2e_ms"],
        **(_slo_summary(scenario, rec, requests, done, elapsed) if scenario.spec.slo else {}),
        "preemptions": rec.preemptions,
        "recomputed_tokens": rec.recomputed_tokens,
        "servelab_version": _version(),
        "build": build_kind(),  # compiled and pure must agree; say which one produced this
    }
    if router is not None:
        summary["router"] = router.spec
        summary["engines"] = _engine_summaries(scenario, rec, w, horizon)
    return SimResult(summary, requests, backlog, rec.batches)


def _slo_summary(scenario: Scenario, rec: RunRecords, requests: RequestTable, done: np.ndarray,
                 elapsed: float) -> dict[str, Any]:
    """Per class latencies, SLO attainment, goodput and preemptions. With one class its TBT
    gaps are the run's; with more, the engine's per-class histograms (``tbt_ms`` null if it
    kept none)."""
    classes = scenario.spec.slo
    hists: list[dict[int, int] | None] = (
        [rec.tbt_hist] if len(classes) == 1
        else list(rec.tbt_by_class) if rec.tbt_by_class is not None else [None] * len(classes))
    preempted = [(rec.preemptions_of(c), rec.recomputed_tokens_of(c)) for c in range(len(classes))]
    return slo_summary(requests, classes, done, hists, TICKS_PER_S, elapsed, preempted)


def _engine_summaries(scenario: Scenario, rec: RunRecords, w: Workload,
                      horizon: float) -> list[dict[str, Any]]:
    """Each replica's own verdict: its backlog against its share of the nominal load (the
    engines are identical), from the requests its router sent it."""
    k = scenario.config.replicas
    theory = scenario.theory
    capacity = _capacity_along_mix(theory) / k
    assert rec.assigned is not None
    out = []
    for i, engine in enumerate(rec.engines):
        mine = np.flatnonzero(rec.assigned == i)
        sampled = engine.backlog
        series = RunSeries(np.asarray(sampled.time), np.asarray(sampled.served),
                           w.arrival[mine], w.prompt[mine], w.output[mine],
                           scenario.convention, horizon)
        verdict = backlog_verdict(series, theory["offered_tokens_per_s"] / k, scenario.guards)
        details = verdict.to_dict(capacity)
        out.append({"engine": i, "load": details["realised_load"], **details,
                    "arrived": engine.admitted, "completed": engine.completed,
                    "iterations": engine.iterations, "preemptions": engine.preemptions,
                    "recomputed_tokens": engine.recomputed_tokens})
    return out


def _capacity_along_mix(theory: dict[str, Any]) -> float:
    """Token slots/s the engine can serve of this workload: the binding bound's request rate
    (the token capacity, the k_max region's along the mix, or the KV memory's) times W."""
    max_rate = binding_bound(theory).max_rate
    return float(max_rate) * float(theory["capacity"]["work_per_request_tokens"])


def simulate(config: SimConfig | Mapping[str, Any]) -> SimResult:
    """Run one scheduler (``config.scheduler``) and return its result."""
    config = as_config(config)
    with config.named_as_written():
        config.refuse_experiments("simulate")
        if config.schedulers is not None:
            raise ConfigError("schedulers", "simulate runs one scheduler; compare runs a list")
        [policy] = make_policies(config, [config.scheduler or DEFAULT_SCHEDULER])
        scenario = _prepare(config)
        _check_prompts_fit(policy, scenario)
    return run_scheduler(scenario, policy)


def compare(
    config: SimConfig | Mapping[str, Any], schedulers: Sequence[str] | None = None
) -> CompareResult:
    """Run several schedulers on identical requests (all are validated before any runs).

    ``schedulers``, a list of names, replaces the config's ``scheduler`` or ``schedulers``, so
    a config made for ``simulate`` serves here too. Without it, ``config.schedulers`` (default:
    all five) runs.
    """
    config = as_config(config)
    with config.named_as_written():
        config.refuse_experiments("compare")
    scenario, policies = prepare_comparison(config, schedulers)
    return CompareResult(scenario, [run_scheduler(scenario, p) for p in policies])


def prepare_comparison(
    config: SimConfig, schedulers: Sequence[str] | None = None
) -> tuple[Scenario, list[Scheduler]]:
    """What ``compare`` runs, checked and resolved before any run: the scenario (one request
    stream for every policy) and the policies (``schedulers``, else the config's)."""
    with config.named_as_written():
        if schedulers is not None:
            if isinstance(schedulers, str):
                raise ConfigError("schedulers", f"expected a list of scheduler names, got the "
                                                f"string {schedulers!r}; write [{schedulers!r}]")
            config = config.replace(scheduler=None, schedulers=schedulers)
        if config.scheduler is not None:
            raise ConfigError("scheduler", "compare runs a list of schedulers; give schedulers")
        policies = make_policies(config, config.schedulers or DEFAULT_COMPARE)
        scenario = _prepare(config)
        for policy in policies:
            _check_prompts_fit(policy, scenario)
    return scenario, policies


def capacity(config: SimConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The theory alone for a configuration (no simulation)."""
    config = as_config(config)
    with config.named_as_written():
        config.refuse_experiments("capacity")
        return _capacity(config)


def _capacity(config: SimConfig) -> dict[str, Any]:
    preset, budget, convention = resolve_engine(config)
    kv = resolve_kv(config, preset)
    spec = resolve_workload(config)
    m_p, m_d = spec.mean_prompt, spec.mean_output
    _, max_rate, _ = request_capacity(preset.timing, budget, m_p, m_d, convention)
    max_rate *= config.replicas
    rate = requested_rate(config, max_rate)
    if rate is None:  # no rate: a trace's own pace, or the theory alone
        rate = spec.trace.mean_rate if spec.trace is not None else 0.0
    check_load(config, rate, max_rate)
    if kv is not None:
        largest = largest_requests(spec.length_source())
        if largest is not None:  # unbounded lengths: only a run's draws can be checked
            check_requests_fit(kv, largest, convention)
    memory = _memory_bound(config, kv, preset, budget, convention, spec.length_source(), m_p,
                           m_d, rate)
    out = theory_summary(preset.timing, budget, config.kmax, m_p, m_d, convention, rate,
                         spec.fixed_prompt, config.replicas, memory)
    capacity_block = out["capacity"]
    result: dict[str, Any] = {
        "preset": preset.name,
        "timing": preset.timing.describe(),
        "budget": budget,
        "kmax": config.kmax,
        "convention": convention.name,
        **({"replicas": config.replicas} if config.replicas > 1 else {}),
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
    if memory is not None:
        result.update({key: out[key] for key in MEMORY_KEYS})
    return result


def _version() -> str:
    try:
        return version("servelab")
    except PackageNotFoundError:
        return "unknown"

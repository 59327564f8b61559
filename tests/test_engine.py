"""Correctness of the simulator engine (``sim.engine`` + the lazy ``sim.decode_pool``).

Three independent oracles: the paper's Figure 8 batch compositions, a naive reference engine
(``reference_engine.py``) driven by the same scheduler objects, and invariants checked by
replaying the engine's own recorded batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference_engine import ReferenceEngine, RefResult
from servelab.build import build_kind
from servelab.core.batch import Batch
from servelab.core.request import Request
from servelab.errors import SchedulerError
from servelab.schedulers import SCHEDULERS, make_scheduler
from servelab.schedulers.base import EngineView, Scheduler, fill_chunks
from servelab.sim import run as sim_run
from servelab.sim.decode_pool import NO_TOKEN, TICKS_PER_S, DecodePool, RequestRecords
from servelab.sim.engine import Engine
from servelab.sim.run import RunRecords
from servelab.timing.models import Affine, Constant, Staircase, TimingModel

TIMINGS: dict[str, TimingModel] = {
    "constant": Constant(1.0),
    "staircase": Staircase(c=0.01128, a=0.03547, b0=16),
    # Not token-only: exercises the engine's duration() path instead of its token table.
    "affine": Affine(alpha=0.005, beta_prefill=1e-4, beta_decode=3e-4, gamma=2e-5),
}
def _doc_example() -> type[Scheduler]:
    """The scheduler docs/architecture.md shows how to write, run here as it is printed."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    namespace: dict[str, object] = {}
    exec(text.split("```python\n")[1].split("```")[0], namespace)
    example = namespace["NewestFirst"]
    assert isinstance(example, type) and issubclass(example, Scheduler)
    return example


NEWEST_FIRST = _doc_example()  # the explicit decode form, newest decoders first
SCHEDULER_NAMES = ("fastertransformer", "vllm", "orca", "sarathi", "sarathi-spf", "kfcfs",
                   "newest-first")
# Reference and engine add the same float durations in the same order, so times agree to the
# last bit in practice; 1e-9 s only absorbs a harmless reassociation, far below any batch time.
ATOL = 1e-9

PROPERTY = settings(
    max_examples=150,
    derandomize=True,  # deterministic in CI: no example database, no random seed
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass
class Scenario:
    """One drained run: a scheduler recipe, an engine configuration and a workload."""

    scheduler: str
    options: dict[str, object]
    budget: int
    kmax: int | None
    convention: str
    timing: str
    arrival: list[float]
    prompt: list[int]
    output: list[int]

    def make_scheduler(self) -> Scheduler:
        if self.scheduler == NEWEST_FIRST.name:
            return NEWEST_FIRST()
        return make_scheduler(self.scheduler, **self.options)  # type: ignore[arg-type]

    @property
    def seq_limit(self) -> int:
        return self.budget if self.kmax is None else self.kmax

    @property
    def engine_convention(self) -> bool:
        return self.convention == "engine"


def run_engine(sc: Scenario, record: bool = True, horizon: float | None = None) -> RunRecords:
    """The scenario on the real engine: drained, or stopped at ``horizon``."""
    engine = Engine(sc.make_scheduler(), TIMINGS[sc.timing], sc.budget, sc.kmax,
                    convention=sc.convention, record_batches=record)
    return sim_run.run_engine(engine, sc.arrival, sc.prompt, sc.output,
                              horizon=sc.arrival[-1] if horizon is None else horizon,
                              drain=horizon is None)


def run_reference(sc: Scenario) -> RefResult:
    ref = ReferenceEngine(sc.make_scheduler(), TIMINGS[sc.timing], sc.budget, sc.kmax,
                          convention=sc.convention)
    return ref.run(sc.arrival, sc.prompt, sc.output)


def hist_ticks(hist: dict[int, int]) -> np.ndarray:
    """The engine's TBT histogram as the sorted multiset of gaps, in ticks."""
    keys = sorted(hist)
    return np.repeat(np.asarray(keys, dtype=np.int64), [hist[k] for k in keys])


def gap_ticks(gaps: list[float]) -> np.ndarray:
    """Gaps in seconds rounded to the nearest tick (half up, as the histogram does), sorted."""
    ticks = np.floor(np.asarray(gaps, dtype=float) * TICKS_PER_S + 0.5).astype(np.int64)
    return np.sort(ticks)


def assert_same_times(rec: RunRecords, ref: RefResult) -> None:
    np.testing.assert_allclose(rec.first_token, ref.first_token, rtol=0, atol=ATOL)
    np.testing.assert_allclose(rec.finish, ref.finish, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(hist_ticks(rec.tbt_hist), gap_ticks(ref.gaps))


# -- workloads ------------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn, names: tuple[str, ...] = SCHEDULER_NAMES,
              kmax: bool = True, default_windows: bool = False) -> Scenario:
    n = draw(st.integers(1, 40))
    timing = draw(st.sampled_from(sorted(TIMINGS)))
    # Arrivals on a coarse grid (so ties are common), scaled from overloaded to nearly idle.
    unit = TIMINGS[timing].duration(1, 0, 1) * draw(st.sampled_from([0.1, 0.5, 2.0, 8.0]))
    slots = draw(st.lists(st.integers(0, 3 * n), min_size=n, max_size=n))
    arrival = [s * unit for s in sorted(slots)]
    prompt = draw(st.lists(st.integers(1, 60), min_size=n, max_size=n))
    output = draw(st.lists(st.integers(1, 30), min_size=n, max_size=n))
    name = draw(st.sampled_from(names))
    options: dict[str, object] = {}
    if name in ("fastertransformer", "vllm"):
        options["chunked_prefill"] = draw(st.booleans())
    elif name == "kfcfs":
        options["priority"] = draw(st.sampled_from(["decode", "prefill"]))
        if not default_windows:
            options["kp"] = draw(st.sampled_from([None, 1, 2, 3]))
            options["kd"] = draw(st.sampled_from([None, 1, 2, 3]))
    budget = draw(st.integers(1, 64))
    if name in ("fastertransformer", "vllm") and not options["chunked_prefill"]:
        budget = max(budget, max(prompt))  # a prompt over the budget would never run
    cap = draw(st.one_of(st.none(), st.integers(1, 8))) if kmax else None
    convention = draw(st.sampled_from(["paper", "engine"]))
    return Scenario(name, options, budget, cap, convention, timing, arrival, prompt, output)


# -- 1. Figure 8 (li_dai_peng.md 5.3) --------------------------------------------------------

FIGURE_8 = {
    ("vllm", 4): "Ad Bd Cd | Dp Ep | Ad Bd Cd Dd | Bd Cd Ed | Bd",
    ("orca", 5): "Ad Bd Cd | Ad Bd Cd Dp Ep | Bd Cd Dd Ed | Bd",
    ("fastertransformer", 4): "Ad Bd Cd | Ad Bd Cd | Bd Cd | Bd | Dp Ep | Dd Ed",
    ("sarathi", 4): "Ad Bd Cd | Ad Bd Cd Dp | Bd Cd Dd Ep | Bd Ed",
}


def _named_batches(batches: list) -> list[set[tuple[str, str]]]:
    names = "ABCDE"
    return [
        {(names[r], "p") for r, _ in b.prefill} | {(names[r], "d") for r in b.decode}
        for b in batches
    ]


@pytest.mark.parametrize("engine_kind", ["engine", "reference"])
@pytest.mark.parametrize(("name", "budget"), list(FIGURE_8))
def test_figure_8_batches(name: str, budget: int, engine_kind: str) -> None:
    # A, B, C arrive at 0 with 1-token prompts (batch 0 = their prefills), then decode 2, 4, 3
    # tokens; D and E (1 prefill + 1 decode token) arrive during batch 1. Unit batch time.
    sc = Scenario(name, {}, budget, None, "paper", "constant",
                  arrival=[0.0, 0.0, 0.0, 1.5, 1.5], prompt=[1] * 5, output=[2, 4, 3, 1, 1])
    batches = run_engine(sc).batches if engine_kind == "engine" else run_reference(sc).batches
    got = _named_batches(batches)
    expected = [
        {(tok[0], tok[1]) for tok in group.split()} for group in FIGURE_8[name, budget].split("|")
    ]
    assert got[0] == {("A", "p"), ("B", "p"), ("C", "p")}
    assert got[1:] == expected


# -- 2. engine == reference -----------------------------------------------------------------


@PROPERTY
@given(scenarios())
def test_engine_matches_reference_exactly(sc: Scenario) -> None:
    rec = run_engine(sc)
    ref = run_reference(sc)
    assert rec.batches is not None
    assert [(b.prefill, b.decode) for b in rec.batches] == [
        (b.prefill, b.decode) for b in ref.batches
    ]
    np.testing.assert_allclose([b.start for b in rec.batches], [b.start for b in ref.batches],
                               rtol=0, atol=ATOL)
    np.testing.assert_allclose([b.end for b in rec.batches], [b.end for b in ref.batches],
                               rtol=0, atol=ATOL)
    assert_same_times(rec, ref)


# -- 3. invariants, by replaying the engine's own batches ------------------------------------


def replay_token_times(sc: Scenario, rec: RunRecords) -> list[list[float]]:
    """Check every batch against the model's rules; return each request's output-token times."""
    n = len(sc.arrival)
    engine = sc.engine_convention
    prefilled = [0] * n
    decoded = [0] * n
    last_prefill = [-1] * n
    times: list[list[float]] = [[] for _ in range(n)]
    prev_end = -math.inf
    assert rec.batches is not None
    for i, b in enumerate(rec.batches):
        assert b.start >= prev_end and b.end > b.start
        prev_end = b.end
        p_ids = [r for r, _ in b.prefill]
        assert len(set(p_ids)) == len(p_ids)
        assert len(set(b.decode)) == len(b.decode), "two decode tokens for one request"
        assert not set(p_ids) & set(b.decode), "prefill and decode of one request in one batch"
        tokens = sum(m for _, m in b.prefill) + len(b.decode)
        assert 0 < tokens <= sc.budget
        assert len(b.prefill) + len(b.decode) <= sc.seq_limit
        for r in [*p_ids, *b.decode]:
            assert sc.arrival[r] <= b.start
        for r, m in b.prefill:
            assert m >= 1
            prefilled[r] += m
            assert prefilled[r] <= sc.prompt[r]
            if prefilled[r] == sc.prompt[r]:
                last_prefill[r] = i
                if engine:
                    times[r].append(b.end)
        for r in b.decode:
            assert prefilled[r] == sc.prompt[r] and last_prefill[r] < i
            decoded[r] += 1
            times[r].append(b.end)
    assert prefilled == sc.prompt
    assert decoded == [d - engine for d in sc.output]
    return times


@PROPERTY
@given(scenarios())
def test_engine_invariants_by_replay(sc: Scenario) -> None:
    n = len(sc.arrival)
    rec = run_engine(sc)
    times = replay_token_times(sc, rec)
    assert rec.admitted == rec.completed == n
    assert rec.iterations == len(rec.batches or [])
    assert rec.prefill_tokens == sum(sc.prompt)
    assert rec.decode_tokens == sum(d - sc.engine_convention for d in sc.output)
    # first token / finish are exactly the end of the batch carrying that token.
    np.testing.assert_array_equal(rec.first_token, [t[0] for t in times])
    np.testing.assert_array_equal(rec.finish, [t[-1] for t in times])
    gaps = [b - a for t in times for a, b in pairwise(t)]
    assert len(gaps) == sum(d - 1 for d in sc.output)
    np.testing.assert_array_equal(hist_ticks(rec.tbt_hist), gap_ticks(gaps))
    # Deterministic: the same inputs give the same result.
    again = run_engine(sc)
    np.testing.assert_array_equal(again.first_token, rec.first_token)
    np.testing.assert_array_equal(again.finish, rec.finish)
    assert again.tbt_hist == rec.tbt_hist and again.batches == rec.batches


@PROPERTY
@given(scenarios(), st.floats(0.0, 1.0))
def test_a_stopped_run_counts_the_gaps_of_completed_requests_only(
    sc: Scenario, stop_at: float
) -> None:
    """Stopped mid-run, the TBT histogram holds exactly the gaps of the requests that finished.

    The engine's decisions never depend on the future, so the stopped run is the drained run
    cut short: its completed requests are those that finished by its end, with the same times.
    """
    full = run_engine(sc)
    times = replay_token_times(sc, full)
    stopped = run_engine(sc, record=False, horizon=stop_at * sc.arrival[-1])
    done = np.isfinite(stopped.finish)
    assert stopped.completed == done.sum()
    np.testing.assert_array_equal(stopped.finish[done], full.finish[: len(done)][done])
    gaps = [b - a for t, d in zip(times, done, strict=False) if d for a, b in pairwise(t)]
    np.testing.assert_array_equal(hist_ticks(stopped.tbt_hist), gap_ticks(gaps))


# -- 4. work conservation (li_dai_peng.md 3.1) -----------------------------------------------


def work_conservation_violations(sc: Scenario, rec: RunRecords) -> list[tuple[int, int, int]]:
    """(batch index, tokens, demand) for each batch with tokens != min(budget, demand), where
    demand sums, over requests present at the batch's start, prefill left or 1 if decoding."""
    n = len(sc.arrival)
    prefill_left = list(sc.prompt)
    decode_left = [d - sc.engine_convention for d in sc.output]
    out = []
    assert rec.batches is not None
    for i, b in enumerate(rec.batches):
        demand = sum(
            prefill_left[r] if prefill_left[r] else 1
            for r in range(n)
            if sc.arrival[r] <= b.start and (prefill_left[r] or decode_left[r])
        )
        tokens = sum(m for _, m in b.prefill) + len(b.decode)
        if tokens != min(sc.budget, demand):
            out.append((i, tokens, demand))
        for r, m in b.prefill:
            prefill_left[r] -= m
        for r in b.decode:
            decode_left[r] -= 1
    return out


@PROPERTY
@given(scenarios(names=("sarathi", "orca", "kfcfs"), kmax=False, default_windows=True))
def test_work_conserving_schedulers_fill_min_budget_demand(sc: Scenario) -> None:
    assert make_scheduler(sc.scheduler, **sc.options).work_conserving  # type: ignore[arg-type]
    assert work_conservation_violations(sc, run_engine(sc)) == []


# A decodes 5 tokens after a 1-token prompt; B (1 prefill token) arrives during A's prefill.
WITNESS = dict(arrival=[0.0, 0.5], prompt=[1, 1], output=[5, 2])


@pytest.mark.parametrize(
    ("name", "batch_1"),
    [
        ("fastertransformer", ([], [0])),  # decode-only [Ad] while B's prompt waits
        ("vllm", ([(1, 1)], [])),  # prefill-only [Bp] while A waits to decode
    ],
)
def test_non_work_conserving_witness(name: str, batch_1: tuple[list, list[int]]) -> None:
    sc = Scenario(name, {}, 4, None, "paper", "constant", **WITNESS)  # type: ignore[arg-type]
    rec = run_engine(sc)
    assert rec.batches is not None
    assert (rec.batches[1].prefill, rec.batches[1].decode) == batch_1
    assert (1, 1, 2) in work_conservation_violations(sc, rec)  # 1 token < min(4, demand 2)
    assert not make_scheduler(name).work_conserving
    # Sarathi on the same workload mixes [Ad Bp] instead.
    assert work_conservation_violations(sc, run_engine(Scenario(
        "sarathi", {}, 4, None, "paper", "constant", **WITNESS))) == []  # type: ignore[arg-type]


# -- 5. partial-round stress: engine vs reference on long runs -------------------------------


def stress(seed: int, n: int, rate: float, prompt_max: int, output_max: int,
           **config: object) -> Scenario:
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1 / rate, n)).tolist()
    prompt = rng.integers(1, prompt_max + 1, n).tolist()
    output = rng.integers(1, output_max + 1, n).tolist()
    return Scenario(arrival=arrival, prompt=prompt, output=output, **config)  # type: ignore


# staircase with b0=16: t(16) = 46.75 ms, so budget 16 serves ~342 tokens/s.
STRESS: dict[str, Callable[[], Scenario]] = {
    "orca-overloaded": lambda: stress(
        1, 2500, 12.0, 30, 30, scheduler="orca", options={}, budget=16, kmax=None,
        convention="paper", timing="staircase"),
    "orca-critical-engine": lambda: stress(
        2, 2500, 9.0, 30, 30, scheduler="orca", options={}, budget=16, kmax=None,
        convention="engine", timing="staircase"),
    "vllm-many-decoders": lambda: stress(
        3, 2500, 12.0, 8, 60, scheduler="vllm", options={}, budget=8, kmax=None,
        convention="engine", timing="staircase"),
    # (FasterTransformer never has more decoders than one prefill batch admits, so it has no
    # partial rounds; it is covered by the property tests.)
    # Overloaded: a long tail of decoders waits behind the cap of 3 for thousands of rounds.
    "vllm-chunked-kmax-binding": lambda: stress(
        4, 2500, 1.0, 40, 60, scheduler="vllm", options={"chunked_prefill": True}, budget=32,
        kmax=3, convention="paper", timing="constant"),
    "kfcfs-kd3-decode": lambda: stress(
        5, 2000, 8.0, 20, 30, scheduler="kfcfs", options={"kd": 3}, budget=16, kmax=None,
        convention="paper", timing="staircase"),
    "kfcfs-kd3-prefill-kp2-engine": lambda: stress(
        6, 2500, 14.0, 20, 30, scheduler="kfcfs", options={"kd": 3, "kp": 2, "priority": "prefill"},
        budget=16, kmax=None, convention="engine", timing="affine"),
    # (Sarathi never has partial rounds: its decoders never outnumber min(budget, kmax).)
    "orca-kmax-binding": lambda: stress(
        7, 2500, 6.0, 40, 30, scheduler="orca", options={}, budget=64, kmax=4,
        convention="paper", timing="staircase"),
}


@pytest.mark.parametrize("case", list(STRESS))
def test_partial_rounds_stress_matches_reference(case: str) -> None:
    sc = STRESS[case]()
    ref = run_reference(sc)
    partial = sum(1 for b in ref.batches if 0 < len(b.decode) < b.num_decoding)
    assert partial >= 200, f"only {partial} partial rounds: the case does not stress them"
    rec = run_engine(sc, record=False)  # the production path: no batch recording
    assert rec.completed == len(sc.arrival)
    assert_same_times(rec, ref)


# -- 6. a scheduler's bad batch is a SchedulerError, not a corrupt run -----------------------


class _Rewrite(Scheduler):
    """Sarathi's batches, passed through ``rewrite`` (to break them on purpose)."""

    name = "rewrite"
    work_conserving = False

    def __init__(self, rewrite: Callable[[Batch], Batch]) -> None:
        self._inner = make_scheduler("sarathi")
        self._rewrite = rewrite

    def schedule(self, view: EngineView) -> Batch:
        return self._rewrite(self._inner.schedule(view))


def run_rewritten(rewrite: Callable[[Batch], Batch]) -> RunRecords:
    engine = Engine(_Rewrite(rewrite), Constant(1.0), 16)
    return sim_run.run_engine(engine, [0.0, 0.5, 1.0], [5, 20, 3], [3, 2, 4], horizon=1.0,
                              drain=True)


@pytest.mark.parametrize(
    ("rewrite", "message"),
    [
        # A request the engine never admitted, whose chunk completes its prompt.
        (lambda b: Batch([*b.prefill, (Request(99, 0.0, 4, 1), 4)], b.decode_first),
         "not waiting on this engine"),
        (lambda b: (b.prefill, b.decode_first), "malformed batch"),  # not a Batch
        (lambda b: Batch(b.prefill, b.decode_first + 1), "decode count outside"),
        (lambda b: Batch(b.prefill, -1), "decode count outside"),
        (lambda b: Batch([(r, m + 20) for r, m in b.prefill], b.decode_first), "a chunk of"),
    ],
)
def test_bad_batches_raise_scheduler_error(rewrite: Callable[[Batch], Batch],
                                           message: str) -> None:
    with pytest.raises(SchedulerError, match=message):
        run_rewritten(rewrite)


@pytest.mark.parametrize(("prompt", "output"), [([5, 0, 3], [3, 2, 4]), ([5, 20, 3], [3, 0, 4])])
def test_zero_length_requests_are_refused(prompt: list[int], output: list[int]) -> None:
    engine = Engine(make_scheduler("sarathi"), Constant(1.0), 16)
    with pytest.raises(ValueError, match="at least 1 prompt and 1 output token"):
        sim_run.run_engine(engine, [0.0, 0.5, 1.0], prompt, output, horizon=1.0, drain=True)


def test_numpy_token_counts_work_in_both_builds() -> None:
    """``operator.index`` at the boundary: numpy integers are integers, compiled or not."""
    def to_numpy(b: Batch) -> Batch:
        return Batch([(r, np.int64(m)) for r, m in b.prefill], np.int64(b.decode_first))

    assert run_rewritten(to_numpy).completed == 3
    assert run_rewritten(lambda b: b).first_token.tolist() == \
        run_rewritten(to_numpy).first_token.tolist()


def test_walks_over_finished_entries_trigger_compaction() -> None:
    """Finished entries in the band the served prefix moves across would otherwise be stepped
    over every round (O(pool) per round); the pool must compact once the steps add up."""
    dead, tail = 200, 201
    records = RequestRecords(2 + dead + tail)
    pool = DecodePool(records)
    reqs = [Request(i, 0.0, 1, 1 if 2 <= i < 2 + dead else 10_000) for i in range(2 + dead + tail)]
    pool.add(reqs, NO_TOKEN)
    events: list[Request] = []
    done = pool.serve(pool.size, 1.0, events)  # the one-token requests finish, between 1 and 202
    assert records.completed == done == dead and pool.size == 2 + tail
    assert len(events) == len(reqs)  # each finished or emitted its first token, once
    now = 1.0
    for k in [3, 1] * 3:  # each shrink and regrow crosses the finished band
        now += 1.0
        pool.serve(k, now, events)
    assert len(pool._order) == pool.size, "the finished band was never compacted away"
    assert [r.id for r in pool][:3] == [0, 1, 2 + dead]


def test_a_subnormal_horizon_does_not_overflow_the_backlog_grid() -> None:
    """Found by hypothesis: a horizon of 1e-310 s made the sample grid step underflow to 0."""
    engine = Engine(make_scheduler("sarathi"), Constant(1.0), 16)
    rec = sim_run.run_engine(engine, [0.0, 1e-3], [1, 1], [1, 1], horizon=1e-310)
    assert rec.iterations == 1 and len(rec.backlog.time) == 1


# -- preemption, in both decode forms -----------------------------------------------------------


class _Preempting(Scheduler):
    """Sarathi's fill, evicting the newest decoder every third batch (recompute)."""

    name = "preempting"
    work_conserving = False

    def __init__(self, explicit: bool) -> None:
        self.decode_order = "explicit" if explicit else "fcfs"  # type: ignore[misc]
        self._batches = 0

    def schedule(self, view: EngineView) -> Batch:
        self._batches += 1
        evict = view.last_decoders(1) if self._batches % 3 == 0 and view.num_decoding > 1 else []
        k = min(view.num_decoding - len(evict), view.budget, view.seq_limit)
        chunks, _ = fill_chunks(view.waiting, view.budget - k, view.seq_limit - k)
        if self.decode_order == "explicit":
            return Batch(chunks, decode=view.first_decoders(k + len(evict))[:k], preempt=evict)
        return Batch(chunks, k, preempt=evict)


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("convention", ["paper", "engine"])
def test_preempted_requests_recompute_and_still_finish_with_every_token(
    explicit: bool, convention: str
) -> None:
    rng = np.random.default_rng(5)
    n = 60
    arrival = np.sort(rng.uniform(0, 20, n))
    prompt = rng.integers(1, 40, n)
    output = rng.integers(2, 30, n)
    engine = Engine(_Preempting(explicit), Constant(1.0), 48, convention=convention)
    rec = sim_run.run_engine(engine, arrival, prompt, output, horizon=float(arrival[-1]),
                             drain=True)
    assert rec.completed == n and np.isfinite(rec.finish).all()
    assert engine.preemptions > 0 and engine.outstanding == 0
    assert (rec.preemptions, rec.recomputed_tokens) == (engine.preemptions,
                                                        engine.recomputed_tokens)
    # Every output token once: D - 1 gaps a request, the one across its preemption included.
    assert sum(rec.tbt_hist.values()) == int((output - 1).sum())
    # Work: every prompt and decode slot once, plus the recomputed prefills.
    slots = int(prompt.sum() + output.sum()) - (n if convention == "engine" else 0)
    assert rec.prefill_tokens + rec.decode_tokens == slots + engine.recomputed_tokens
    assert (rec.finish - rec.first_token >= output - 1 - 1e-9).all()  # >= one batch a token


def test_a_batch_naming_decoders_needs_the_explicit_form() -> None:
    class Misdeclared(_Preempting):
        def schedule(self, view: EngineView) -> Batch:
            return Batch([], decode=view.first_decoders(view.num_decoding))

    engine = Engine(Misdeclared(explicit=False), Constant(1.0), 16)
    with pytest.raises(SchedulerError, match="decode_order is 'fcfs'"):
        sim_run.run_engine(engine, [0.0, 0.0], [1, 1], [3, 3], horizon=1.0, drain=True)


# -- requests: subclassing, pickling, numpy integers ---------------------------------------------


class _TaggedRequest(Request):
    """A real engine's request would carry token ids; any subclass must work in both builds."""

    def __init__(self, id: int, arrival: float, prompt: int, output: int, tag: str) -> None:
        super().__init__(id, arrival, prompt, output)
        self.tag = tag


def test_requests_subclass_pickle_and_take_numpy_integers() -> None:
    import pickle

    req = Request(np.int64(3), np.float64(1.5), np.int32(7), np.int64(2))
    assert (req.id, req.prompt_tokens, req.output_tokens) == (3, 7, 2)
    assert type(req.id) is int and req.status_name == "waiting"
    req.prefill_left = 4
    again = pickle.loads(pickle.dumps(req))
    assert (again.id, again.arrival, again.prefill_left, again.status) == (3, 1.5, 4, 0)
    tagged = pickle.loads(pickle.dumps(_TaggedRequest(1, 0.0, 5, 5, "x")))
    assert type(tagged) is _TaggedRequest and tagged.tag == "x" and tagged.prompt_tokens == 5
    engine = Engine(make_scheduler("sarathi"), Constant(1.0), 16)
    engine.use_records(RequestRecords(1))
    engine.admit(_TaggedRequest(0, 0.0, 3, 2, "y"))
    assert engine.start_batch(0.0) == 1.0 and engine.finish_batch() == []


def test_the_waiting_queue_lets_requests_leave_out_of_order_in_o1() -> None:
    """Shortest-prompt-first finishes prefills away from the front: each leaves lazily, the
    order and counts stay right, and dead entries never outnumber live ones for long."""
    from servelab.core.request import DECODING
    from servelab.sim.waiting import WaitingQueue

    queue = WaitingQueue()
    reqs = [Request(i, 0.0, 100 - i, 1) for i in range(100)]
    for req in reqs:
        queue.append(req)
    assert [r.id for r in queue.shortest_first()][:3] == [99, 98, 97]  # nothing begun
    for req in reqs[::-1][:60]:  # the 60 shortest finish first, from the back
        req.status = DECODING
        queue.leave(req)
    assert len(queue) == 40 and [r.id for r in queue] == list(range(40))
    assert len(queue._queue) <= 2 * len(queue) + 1  # rebuilt once the dead outnumbered
    assert queue[0] is reqs[0] and queue.holds(reqs[5], 0) and not queue.holds(reqs[70], 0)
    assert [r.id for r in queue.shortest_first()] == list(range(39, -1, -1))


# -- nothing a scheduler reads tells it a true output length ---------------------------------


class _Blind:
    """A request that refuses to tell its output length; everything else it forwards."""

    def __init__(self, real: Request) -> None:
        self.real = real

    def __getattr__(self, name: str) -> object:
        if name == "output_tokens":
            raise AssertionError("a scheduler read a true output length")
        return getattr(self.real, name)


class _BlindQueue:
    def __init__(self, queue: object) -> None:
        self._queue = queue

    def __len__(self) -> int:
        return len(self._queue)  # type: ignore[arg-type]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (_Blind(r) for r in self._queue)  # type: ignore[attr-defined]

    def __getitem__(self, i: int) -> _Blind:
        return _Blind(self._queue[i])  # type: ignore[index]

    def __reversed__(self):  # type: ignore[no-untyped-def]
        return (_Blind(r) for r in reversed(self._queue))  # type: ignore[call-overload]


class _BlindView:
    """The engine's view with every request it hands out blindfolded."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.waiting = _BlindQueue(engine.waiting)

    def __getattr__(self, name: str) -> object:
        value = getattr(self._engine, name)
        if name in ("decoding", "prefilling"):
            return [_Blind(r) for r in value]  # type: ignore[attr-defined]
        if name in ("first_decoders", "last_decoders", "shortest_waiting"):
            return lambda *args: [_Blind(r) for r in value(*args)]  # type: ignore[operator]
        if name == "progress":
            return lambda req: value(req.real)  # type: ignore[operator]
        return value


class _Blindfolded(Scheduler):
    """Runs ``inner`` on the blind view and hands the engine the real requests back."""

    work_conserving = False

    def __init__(self, inner: Scheduler) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.decode_order = inner.decode_order  # type: ignore[misc]
        self.blind: _BlindView | None = None  # one view, as a policy's state is per view

    def schedule(self, view: EngineView) -> Batch:
        if self.blind is None:
            self.blind = _BlindView(view)  # type: ignore[arg-type]
        b = self.inner.schedule(self.blind)  # type: ignore[arg-type]

        def real(reqs: list | None) -> list | None:
            return None if reqs is None else [r.real for r in reqs]

        return Batch([(r.real, m) for r, m in b.prefill], b.decode_first,
                     decode=real(b.decode), preempt=real(b.preempt), idle_until=b.idle_until)


def _blind_scenario(name: str, options: dict[str, object]) -> Scenario:
    rng = np.random.default_rng(6)
    n = 80
    return Scenario(name, options, 64, 16, "paper", "staircase",
                    arrival=np.sort(rng.uniform(0, 3, n)).tolist(),
                    prompt=rng.integers(1, 50, n).tolist(),
                    output=rng.integers(1, 30, n).tolist())


def _run_blind(sc: Scenario) -> None:
    """The scenario on requests that refuse to tell their output length must give the same
    batches as on plain ones."""
    seen = run_engine(sc)
    engine = Engine(_Blindfolded(sc.make_scheduler()), TIMINGS[sc.timing], sc.budget, sc.kmax,
                    record_batches=True)
    blind = sim_run.run_engine(engine, sc.arrival, sc.prompt, sc.output,
                               horizon=sc.arrival[-1], drain=True)
    assert blind.batches == seen.batches


#: The test-only variants, and every registered policy that says it is not clairvoyant.
BLIND_NAMES = (*SCHEDULER_NAMES, *(name for name, cls in SCHEDULERS.items()
                                   if not cls.clairvoyant and name not in SCHEDULER_NAMES))


@pytest.mark.parametrize("name", BLIND_NAMES)
def test_no_scheduler_reads_a_true_output_length(name: str) -> None:
    """Every policy runs, batch for batch the same, on requests that refuse to tell."""
    if name == "slai" and build_kind() == "compiled":
        pytest.skip("compiled SLAI takes real requests only; test_slai makes this check on "
                    "its plain sources")
    sc = _blind_scenario(name, {"chunked_prefill": True}
                         if name in ("vllm", "fastertransformer") else {})
    assert not sc.make_scheduler().clairvoyant
    _run_blind(sc)


def test_nested_wait_told_the_lengths_reads_no_output_length() -> None:
    """Nested WAIT is clairvoyant only to learn the length distribution: given it, it places
    requests by the stages they survive."""
    _run_blind(_blind_scenario("nested-wait", {"types": ["10@1", "20@2", "29@1"]}))


@pytest.mark.parametrize("name", [name for name, cls in SCHEDULERS.items() if cls.clairvoyant])
def test_a_clairvoyant_policy_does_read_output_lengths(name: str) -> None:
    """The flag is true both ways: a policy that declares it reads them."""
    with pytest.raises(AssertionError, match="read a true output length"):
        _run_blind(_blind_scenario(name, {}))

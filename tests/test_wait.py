"""WAIT and nested WAIT (rad_slai_related.md B1): their thresholds by hand, their gates on
hand-built states, stages advancing batch by batch, and drained runs that finish."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from servelab.cli import main
from servelab.core.kv import KVCache
from servelab.core.request import Request
from servelab.errors import ConfigError
from servelab.schedulers import make_scheduler
from servelab.schedulers.nested_wait import NestedWait
from servelab.schedulers.wait import Wait
from servelab.schedulers.wait_thresholds import (
    Segment,
    TypeThreshold,
    nested_segments,
    stages,
    wait_thresholds,
)
from servelab.sim import run as sim_run
from servelab.sim.decode_pool import RequestRecords
from servelab.sim.engine import Engine
from servelab.sim.run import RunRecords
from servelab.timing.models import Constant, Staircase

# -- thresholds ------------------------------------------------------------------------------


def test_a_request_takes_a_stage_per_iteration_it_is_served_in() -> None:
    assert stages(10, first_token_at_prefill=False) == 11  # the prefill, then 10 decodes
    assert stages(10, first_token_at_prefill=True) == 10  # the prefill emits token 1
    assert stages(1, first_token_at_prefill=True) == 1


def test_wait_thresholds_for_two_types_by_hand() -> None:
    # Lengths 10 and 30 at rates 3 and 1, N_total = 64. Paper convention: S = 11 and 31, so
    # sum lambda S = 33 + 31 = 64, N_10 = 64 x 33 / 64 = 33, n_10 = int(33 / 11) = 3,
    # N_30 = 31, n_30 = int(31 / 31) = 1.
    rates = {10: 3.0, 30: 1.0}
    assert wait_thresholds(rates, 64, False) == {10: TypeThreshold(33.0, 3),
                                                 30: TypeThreshold(31.0, 1)}
    # Engine convention: S = 10 and 30, sum = 60: N_10 = 64 x 30 / 60 = 32 = N_30,
    # n_10 = int(32 / 10) = 3, n_30 = int(32 / 30) = 1.
    assert wait_thresholds(rates, 64, True) == {10: TypeThreshold(32.0, 3),
                                                30: TypeThreshold(32.0, 1)}
    # N_total = 200: N_10 = 200 x 33 / 64 = 103.125, n_10 = int(9.375) = 9; N_30 = 96.875,
    # n_30 = int(3.125) = 3. Only the ratio of the rates matters.
    big = {10: TypeThreshold(103.125, 9), 30: TypeThreshold(96.875, 3)}
    assert wait_thresholds(rates, 200, False) == big
    assert wait_thresholds({10: 0.75, 30: 0.25}, 200, False) == big
    # N_total = 10: n_30 = int(10 / 64) = 0, floored at 1 (max(1, .) in the released code).
    assert wait_thresholds(rates, 10, False)[30].per_stage == 1


def test_nested_segments_by_hand() -> None:
    # Lengths 10 and 30 at rates 3 and 1, N_total = 64, paper convention. Segment 1 is
    # stages 0-10 (11 stages, both lengths: weight 11 x 4 = 44), segment 2 stages 11-30
    # (20 stages, length 30 only: weight 20 x 1 = 20); sum 64.
    # seg_total = 44 and 20; per_stage = ceil(44 / 11) = 4 and ceil(20 / 20) = 1.
    assert nested_segments({10: 3.0, 30: 1.0}, 64, False) == [
        Segment(0, 10, 44.0, 4, 44), Segment(11, 30, 20.0, 1, 20)]
    # Engine convention: 10 and 20 stages, weights 40 and 20, sum 60: seg_total = 42.67 and
    # 21.33, per_stage = ceil(4.27) = 5 and ceil(1.07) = 2, caps int() = 42 and 21.
    first, second = nested_segments({10: 3.0, 30: 1.0}, 64, True)
    assert (first.start, first.end, first.per_stage, first.cap) == (0, 9, 5, 42)
    assert (second.start, second.end, second.per_stage, second.cap) == (10, 29, 2, 21)
    assert first.total == pytest.approx(128 / 3) and second.total == pytest.approx(64 / 3)
    assert second.count == 20


def test_a_rare_long_segment_still_admits_one() -> None:
    # The released test script's ten lengths (run_sh_nested_booking_limit_real_data.py) at its
    # largest N_total, engine convention as in Vidur: sum w = sum lambda_k d_k = 10,350 and
    # the last segment's w = 50 x 1, so seg_total = 175 x 50 / 10,350 = 0.85. The released
    # int() makes its cap 0, which would hold its entrants forever; it is floored at
    # per_stage = ceil(175 x 1 / 10,350) = 1.
    rates = dict(zip(range(50, 501, 50), [23.0, 11, 8, 7, 6, 4, 3, 2, 1, 1], strict=True))
    last = nested_segments(rates, 175, True)[-1]
    assert (last.start, last.end) == (450, 499)
    assert last.total == pytest.approx(175 * 50 / 10_350) and int(last.total) == 0
    assert last.per_stage == 1 and last.cap == 1


# -- options ---------------------------------------------------------------------------------


def test_options_parse_and_report() -> None:
    wait = make_scheduler("wait", types="10@3, 30@1", total_limit="128", max_wait_s="0.5")
    assert wait.options() == {"total_limit": 128, "types": ["10@3", " 30@1"],
                              "max_wait_s": 0.5}
    assert isinstance(wait, Wait) and wait.declared == {10: 3.0, 30: 1.0}
    assert make_scheduler("nested-wait", types=["5@1"]).options()["types"] == ["5@1"]
    assert make_scheduler("wait").declared is None  # learned from the arrivals


@pytest.mark.parametrize(("knobs", "field", "reason"), [
    ({"types": "10:3"}, "types", "expected LEN@RATE"),
    ({"types": "10@0"}, "types", "a rate must be > 0"),
    ({"types": "0@1"}, "types", "an output length must be >= 1"),
    ({"types": "10@1,10@2"}, "types", "output length 10 is given twice"),
    ({"types": "x@1"}, "types", "expected an integer"),
    ({"types": "10@fast"}, "types", "expected a rate"),
    ({"types": []}, "types", "is empty"),
    ({"max_wait_s": 0}, "max_wait_s", "must be > 0"),
    ({"max_wait_s": "inf"}, "max_wait_s", "expected a number"),
    ({"total_limit": 0}, "total_limit", "must be >= 1"),
])
def test_bad_options_name_the_knob(knobs: dict[str, object], field: str, reason: str) -> None:
    for name in ("wait", "nested-wait"):
        with pytest.raises(ConfigError) as info:
            make_scheduler(name, **knobs)
        assert info.value.field == f"scheduler.{field}" and reason in info.value.reason


def test_the_cli_refuses_bad_types_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--scheduler", "wait", "--requests", "10",
                 "--set", "scheduler.types=50@2,oops"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("error: scheduler.types: expected LEN@RATE (output length @ arrival "
                            "rate), got 'oops'\n")


# -- WAIT's gate on hand-built states ---------------------------------------------------------


def _engine(policy: Wait | NestedWait, budget: int = 1000, count: int = 16,
            convention: str = "paper") -> Engine:
    engine = Engine(policy, Constant(1.0), budget, convention=convention, record_batches=True)
    engine.use_records(RequestRecords(count))
    return engine


def _step(engine: Engine, now: float) -> tuple[list[int], list[int]]:
    """One batch at ``now``: (ids prefilled, ids decoded)."""
    assert engine.start_batch(now) is not None
    engine.finish_batch()
    assert engine.batches is not None
    batch = engine.batches[-1]
    return [i for i, _ in batch.prefill], batch.decode


def test_wait_gate_opens_when_every_type_has_its_threshold() -> None:
    # n_10 = 3, n_30 = 1 (test_wait_thresholds_for_two_types_by_hand).
    engine = _engine(Wait(types="10@3,30@1"))
    reqs = [Request(i, 0.0, 5, 10) for i in range(3)]
    for req in reqs:
        engine.admit(req)
    assert engine.start_batch(0.0) is None  # three of length 10, none of 30: closed
    assert engine.idle_until == 1.0  # when it opens by itself (max_wait_s = 1)
    engine.admit(Request(3, 0.5, 5, 30))
    assert _step(engine, 0.5) == ([0, 1, 2, 3], [])  # open: 3 + 1, whole prompts
    for i in range(4, 9):
        engine.admit(Request(i, 1.5, 5, 10))
    for i in (9, 10):
        engine.admit(Request(i, 1.5, 5, 30))
    # Open again: the 3 oldest of length 10 and the oldest of 30; every decoder, one token.
    assert _step(engine, 1.5) == ([4, 5, 6, 9], [0, 1, 2, 3])
    # Two of length 10 left (< 3): closed, the decoders advance a stage each.
    assert _step(engine, 2.5) == ([], [0, 1, 2, 3, 4, 5, 6, 9])
    # Closed since 2.5 for max_wait_s: it opens with up to n_j of each type.
    assert _step(engine, 3.5) == ([7, 8, 10], [0, 1, 2, 3, 4, 5, 6, 9])


def test_wait_learns_the_rates_from_the_arrivals_when_none_are_declared() -> None:
    # One arrival of length 10 so far: N_10 = 64, n_10 = int(64 / 11) = 5.
    engine = _engine(Wait())
    for i in range(4):
        engine.admit(Request(i, 0.0, 5, 10))
    assert engine.start_batch(0.0) is None
    engine.admit(Request(4, 0.5, 5, 10))
    assert _step(engine, 0.5) == ([0, 1, 2, 3, 4], [])


def test_wait_rounds_an_undeclared_length_up_to_a_declared_type() -> None:
    wait = Wait(types="10@3,30@1")
    assert [wait.type_of(Request(0, 0.0, 1, out)) for out in (1, 10, 11, 30, 99)] == [
        10, 10, 30, 30, 30]


def test_wait_advances_each_request_a_stage_per_batch() -> None:
    # Lengths 2 and 4 at equal rates, N_total = 8, paper convention: S = 3 and 5, n = 1 each.
    # A (2) and B (4) start together; C (2) waits for another of length 4 until the gate has
    # been closed max_wait_s = 5 (from t = 1), then starts alone at t = 6.
    wait = Wait(types="2@1,4@1", total_limit=8, max_wait_s=5)
    rec = _run(wait, [0.0, 0.0, 0.0], [1, 1, 1], [2, 4, 2])
    assert _batches(rec) == [(0.0, [0, 1], []), (1.0, [], [0, 1]), (2.0, [], [0, 1]),
                             (3.0, [], [1]), (4.0, [], [1]), (6.0, [2], []), (7.0, [], [2]),
                             (8.0, [], [2])]
    assert rec.finish.tolist() == [3.0, 5.0, 9.0]


# -- nested WAIT -----------------------------------------------------------------------------


def test_nested_wait_walks_its_segments_by_hand() -> None:
    # Lengths 2 and 4 at equal rates, N_total = 8, paper convention (S = 3 and 5): segment 1
    # is stages 0-2 (weight 3 x 2 = 6), segment 2 stages 3-4 (weight 2 x 1 = 2); seg_total 6
    # and 2, per_stage ceil(6/3) = 2 and ceil(2/2) = 1.
    nested = NestedWait(types="2@1,4@1", total_limit=8)
    rec = _run(nested, [0.0] * 4, [1] * 4, [2, 4, 2, 4])
    assert _batches(rec) == [
        (0.0, [0, 1], []),  # 2 of 4 enter (per_stage 2); segment 2 is empty
        (1.0, [2, 3], [0, 1]),  # 2 more enter (remain 6 - 2 = 4); stage 1 advances
        # t = 2: no new prompt, and min(per_stage 2, remain 6 - 4) = 2 > 0 wait at stage 0:
        # the walk breaks at segment 1 and nothing runs until the break is 1 s old.
        (3.0, [], [0, 1, 2, 3]),  # walked through: stages 1 and 2; A finishes
        (4.0, [], [1, 2, 3]),  # B enters segment 2 (1 per stage); C finishes
        (5.0, [], [1, 3]),  # D enters segment 2, B at its stage 4 finishes
        (6.0, [], [3]),
    ]
    assert rec.finish.tolist() == [4.0, 6.0, 5.0, 7.0]


def test_nested_wait_keeps_every_segment_within_its_limits() -> None:
    """On a random run with the declared lengths true: at every batch, at most per_stage
    requests are served at each stage, and no segment holds more than its cap past its
    first stage (stages counted here from the batches, independently of the policy)."""
    rng = np.random.default_rng(3)
    n = 400
    lengths = {8: 5.0, 20: 3.0, 45: 1.0}
    output = rng.choice(list(lengths), n, p=np.array(list(lengths.values())) / 9)
    arrival = np.sort(rng.uniform(0, 20, n))
    nested = NestedWait(types=[f"{o}@{r}" for o, r in lengths.items()], total_limit=60)
    rec = _run(nested, arrival, rng.integers(1, 40, n), output, timing=Staircase(0.01, 0.001, 16))
    assert rec.completed == n
    segments = nested_segments(lengths, 60, False)
    starts = [seg.start for seg in segments]

    def segment(stage: int) -> Segment:
        return segments[int(np.searchsorted(starts, stage, side="right")) - 1]

    served: Counter[int] = Counter()  # batches each request was in: its stage
    batches = rec.batches
    assert batches is not None
    for batch in batches:
        ids = [i for i, _ in batch.prefill] + batch.decode
        per_stage = Counter(served[i] for i in ids)
        assert all(count <= segment(stage).per_stage for stage, count in per_stage.items())
        served.update(ids)
        live = [i for i in served if served[i] < output[i] + 1]  # not finished
        for seg in segments:
            assert sum(1 for i in live if seg.start < served[i] <= seg.end) <= seg.cap


# -- whole runs ------------------------------------------------------------------------------


def _run(policy: Wait | NestedWait, arrival: object, prompt: object, output: object,
         convention: str = "paper", kv: KVCache | None = None,
         timing: Constant | Staircase | None = None, budget: int = 1000) -> RunRecords:
    engine = Engine(policy, timing or Constant(1.0), budget, convention=convention,
                    record_batches=True, kv=kv)
    arrival = np.asarray(arrival, dtype=float)
    return sim_run.run_engine(engine, arrival, np.asarray(prompt), np.asarray(output),
                              horizon=float(arrival[-1]), drain=True)


def _batches(rec: RunRecords) -> list[tuple[float, list[int], list[int]]]:
    assert rec.batches is not None
    return [(b.start, [i for i, _ in b.prefill], sorted(b.decode)) for b in rec.batches]


@pytest.mark.parametrize("name", ["wait", "nested-wait"])
@pytest.mark.parametrize("convention", ["paper", "engine"])
@pytest.mark.parametrize("types", [None, "20@7,80@3", "20@7,80@3,300@1"])
@pytest.mark.parametrize("memory", [None, "recompute", "swap"])
def test_a_drained_run_finishes_every_request(name: str, convention: str, types: str | None,
                                              memory: str | None) -> None:
    """Whatever the gates hold back at the end opens by max_wait_s: with a declared length
    that never arrives (300), no gate ever opens by its thresholds, and still every request
    finishes. A tight cache makes the policies preempt."""
    rng = np.random.default_rng(11)
    n = 150
    arrival = np.sort(rng.uniform(0, 10, n))
    output = rng.choice([20, 80], n, p=[0.7, 0.3])
    prompt = rng.integers(5, 60, n)
    kv = None if memory is None else KVCache(40, 16, preemption=memory)
    policy = make_scheduler(name, types=types)
    assert isinstance(policy, Wait | NestedWait)
    rec = _run(policy, arrival, prompt, output, convention, kv, Staircase(0.01, 0.001, 16), 256)
    assert rec.completed == n and np.all(np.isfinite(rec.finish))
    if memory is not None and name == "nested-wait":
        assert rec.preemptions > 0  # the memory path was taken


@pytest.mark.parametrize("convention", ["paper", "engine"])
def test_a_gate_that_never_opens_by_itself_opens_after_max_wait_s(convention: str) -> None:
    # One request of length 20 and a declared length (80) that never comes: it waits the full
    # max_wait_s, then prefills (1 s, which emits token 1 under the engine convention) and
    # decodes. The wait is idle time, counted once although the engine was asked twice.
    paper = convention == "paper"
    for max_wait in (1.0, 2.5):
        wait = Wait(types="20@1,80@1", max_wait_s=max_wait)
        rec = _run(wait, [0.0], [4], [20], convention)
        assert rec.first_token.tolist() == [max_wait + (2.0 if paper else 1.0)]
        assert rec.engines[0].busy_s == (21.0 if paper else 20.0)


def test_replicas_keep_their_own_gates() -> None:
    """Two engines share one policy object, each with its own arrivals and gates: a state
    shared between them would miss the other engine's arrivals and strand them."""
    rng = np.random.default_rng(5)
    n = 200
    arrival = np.sort(rng.uniform(0, 10, n))
    output = rng.choice([10, 40], n)
    for policy in (Wait(), NestedWait(types="10@1,40@1")):
        engines = [Engine(policy, Staircase(0.01, 0.001, 16), 512) for _ in range(2)]
        rec = sim_run.run_engines(engines, lambda req, board: req.id % 2, arrival,
                                  rng.integers(1, 30, n), output, float(arrival[-1]),
                                  drain=True)
        assert rec.completed == n

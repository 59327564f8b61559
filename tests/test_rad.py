"""RAD (reconstructed): its token budget B*, the per-iteration decode/prefill split, memory
admission, the theory beside it, and stability below capacity (docs/model.md)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

import servelab
from servelab.core.kv import KVCache
from servelab.core.request import Request
from servelab.errors import ConfigError, ConfigWarning
from servelab.report.table import compare_text, simulate_text
from servelab.schedulers import make_scheduler
from servelab.schedulers.rad import RAD, best_batch_tokens
from servelab.sim.decode_pool import RequestRecords
from servelab.sim.engine import Engine
from servelab.sim.run import RunRecords, run_engine
from servelab.timing.models import Affine, Piecewise, Staircase, TimingModel
from servelab.timing.presets import load_preset

# Times in seconds, chosen so the per-token times below are exact or far from ties.
STAIRS = Staircase(c=1.0, a=2.0, b0=4)  # t(n) = 1 + 2 ceil(n/4)
RISING = Piecewise(c=1.0, a_per_token=1.0, b0=4)  # t = 1 up to 4 tokens, then n - 3
LEVEL = Piecewise(c=2.0, a_per_token=0.25, b0=8)  # t(n)/n = 0.25 exactly for every n >= 8


@pytest.mark.parametrize(("tile", "b_star"), [
    # T = 1: t(n)/n falls within each step and jumps at each, so the best is a step's last
    # size: 4 -> 3/4, 8 -> 5/8, 10 -> 7/10: B* = 8.
    (None, 8), (1, 8),
    # T = 3: 3 -> 3/3, 6 -> 5/6, 9 -> 7/9 = 0.78: B* = 9, not 8 (no multiple of 3).
    (3, 9),
    # T = 4: 4 -> 3/4, 8 -> 5/8: B* = 8.   T = 5: 5 -> 5/5, 10 -> 7/10: B* = 10.
    (4, 8), (5, 10),
    # A tile over the budget leaves the budget itself.
    (11, 10),
])
def test_budget_on_a_staircase(tile: int | None, b_star: int) -> None:
    assert best_batch_tokens(STAIRS, 10, tile) == b_star


@pytest.mark.parametrize(("model", "tile", "b_star"), [
    # t(n)/n = 1/n up to b0 = 4, then (n - 3)/n, rising: B* = b0 = 4, far below the budget.
    (RISING, None, 4),
    # T = 3: 3 -> 1/3, 6 -> 3/6: B* = 3.   T = 5: 5 -> 2/5, 10 -> 7/10: B* = 5.
    (RISING, 3, 3), (RISING, 5, 5),
    # Ties: 0.25 per token from 8 tokens on; the smallest tied size wins.
    (LEVEL, None, 8),
    (LEVEL, 3, 9),   # 3 -> 2/3, 6 -> 2/6, 9 -> 2.25/9 = 0.25, 12 ... 18 tie
    (LEVEL, 5, 10),  # 5 -> 2/5, 10 -> 2.5/10 = 0.25, 15 and 20 tie
])
def test_budget_on_a_piecewise_model(model: Piecewise, tile: int | None, b_star: int) -> None:
    assert best_batch_tokens(model, 20 if model is LEVEL else 10, tile) == b_star


def test_budget_follows_the_timing_tile() -> None:
    """Without a tile knob RAD takes the timing's tile: on RISING tiled by 3 a 4-token batch
    costs as 6, so 3 tokens (t = 1) beat 6 (t = 3) and 9 (t = 6)."""
    tiled = dataclasses.replace(RISING, tile=3)
    assert best_batch_tokens(tiled, 10) == 3
    # The knob wins over the timing's tile: multiples of 5 on the tiled model (5 costs as 6).
    assert best_batch_tokens(tiled, 10, 5) == 5
    # Staircase tiled by 3, budget 10: 3 -> 3/3, 6 -> 5/6, 9 -> 7/9 (9 costs as 9): B* = 9.
    assert best_batch_tokens(dataclasses.replace(STAIRS, tile=3), 10) == 9


def test_budget_of_an_affine_model_is_the_largest_multiple() -> None:
    """t(n)/n = alpha/n + a constant falls with n at any mix: the largest multiple wins."""
    affine = Affine(alpha=0.01, beta_prefill=1e-4, beta_decode=3e-4, gamma=2e-5)
    assert best_batch_tokens(affine, 100) == 100
    assert best_batch_tokens(affine, 100, 30) == 90


# -- the per-iteration split, on hand-built states -------------------------------------------

def _view(decoding: int, prompts: list[int], timing: TimingModel = STAIRS, budget: int = 10,
          seq_limit: int | None = None) -> SimpleNamespace:
    """The view fields RAD reads, without an engine: ``decoding`` decoders, and waiting
    prompts of the given lengths, oldest first."""
    waiting = [Request(i, 0.0, n, 5) for i, n in enumerate(prompts)]
    return SimpleNamespace(timing=timing, budget=budget, seq_limit=seq_limit or budget,
                           num_decoding=decoding, waiting=waiting, kv=None)


def _split(view: SimpleNamespace) -> tuple[int, list[tuple[int, int]]]:
    batch = RAD().schedule(view)  # type: ignore[arg-type]
    return batch.decode_first, [(req.id, m) for req, m in batch.prefill]


@pytest.mark.parametrize(("decoding", "prompts", "want"), [
    # B* = 8 on STAIRS with budget 10: 3 decodes, then 5 prefill tokens, oldest prompt first.
    (3, [4, 6], (3, [(0, 4), (1, 1)])),
    (3, [5, 6], (3, [(0, 5)])),
    # More decoders than B*: B* of them, oldest first, and no prefill.
    (12, [4], (8, [])),
    # Light load: what there is, under B*.
    (2, [3], (2, [(0, 3)])),
    (0, [2, 1], (0, [(0, 2), (1, 1)])),
    # No decoders: the whole of B* is prefill, split across prompts.
    (0, [20], (0, [(0, 8)])),
])
def test_decode_first_then_prefill_up_to_b_star(decoding: int, prompts: list[int],
                                                 want: tuple[int, list[tuple[int, int]]]) -> None:
    assert _split(_view(decoding, prompts)) == want


def test_request_cap_bounds_the_split() -> None:
    """k_max = 4: 3 decoders and one prompt; B* still bounds the tokens."""
    assert _split(_view(3, [9, 9], seq_limit=4)) == (3, [(0, 5)])
    assert _split(_view(6, [9], seq_limit=4)) == (4, [])


def test_b_star_is_worked_out_once_per_engine() -> None:
    rad = RAD()
    assert rad.schedule(_view(0, [30])).prefill[0][1] == 8  # type: ignore[arg-type]
    assert rad.schedule(_view(0, [30], RISING)).prefill[0][1] == 4  # type: ignore[arg-type]
    # Budget 6: 4 -> 3/4, 5 -> 5/5, 6 -> 5/6: B* = 4.
    assert rad.schedule(_view(0, [30], budget=6)).prefill[0][1] == 4  # type: ignore[arg-type]


# -- RAD is Sarathi-Serve at the budget B*, with or without a KV cache ----------------------

def _random_run(scheduler: object, budget: int, kv: KVCache | None, seed: int
                ) -> tuple[Engine, RunRecords]:
    rng = np.random.default_rng(seed)
    n = 200
    arrival = np.sort(rng.uniform(0, 60, n))
    engine = Engine(scheduler, STAIRS, budget, kv=kv)  # type: ignore[arg-type]
    rec = run_engine(engine, arrival, rng.integers(1, 30, n), rng.integers(1, 20, n),
                     horizon=60.0, drain=True)
    return engine, rec


@pytest.mark.parametrize("kv_blocks", [None, 12])
def test_rad_is_sarathi_at_its_budget(kv_blocks: int | None) -> None:
    """On an engine with budget 10, RAD (B* = 8) runs exactly Sarathi's run at budget 8, also
    within a KV cache small enough to preempt: the same admission and victim rules."""
    runs = []
    for scheduler, budget in ((RAD(), 10), (make_scheduler("sarathi"), 8)):
        kv = None if kv_blocks is None else KVCache(kv_blocks, 4)
        runs.append(_random_run(scheduler, budget, kv, seed=4))
    (rad_engine, rad), (sarathi_engine, sarathi) = runs
    assert rad.completed == 200
    assert rad.first_token.tolist() == sarathi.first_token.tolist()
    assert rad.finish.tolist() == sarathi.finish.tolist()
    assert rad.tbt_hist == sarathi.tbt_hist
    assert rad_engine.preemptions == sarathi_engine.preemptions
    if kv_blocks is not None:
        assert rad_engine.preemptions > 0  # the cache binds: the memory rules were exercised


def test_a_prompt_waits_until_its_blocks_fit() -> None:
    """4 blocks of 4 slots. A (8 tokens) takes 2 blocks; then A's decode takes a third, and
    B (12 tokens, 3 blocks) does not fit in the 1 left: the batch is A's decode alone, though
    B* = 8 has room for B's tokens. Once A finishes and frees its blocks, B runs."""
    kv = KVCache(4, 4)
    engine = Engine(RAD(), STAIRS, 10, kv=kv, record_batches=True)
    a, b = Request(0, 0.0, 8, 2), Request(1, 0.0, 12, 1)
    engine.use_records(RequestRecords(2))
    for req in (a, b):
        engine.admit(req)
    batches = []
    while engine.has_work():
        engine.start_batch(engine.last_batch_end)
        engine.finish_batch()
        assert engine.batches is not None
        last = engine.batches[-1]
        batches.append((last.prefill, last.decode))
    assert batches == [([(0, 8)], []), ([], [0]), ([], [0]), ([(1, 8)], []), ([(1, 4)], []),
                       ([], [1])]


# -- the theory beside a RAD run ----------------------------------------------------------

@pytest.mark.parametrize("preset", ["codellama-34b-a100", "mistral-7b-rtx6000ada"])
@pytest.mark.parametrize(("budget", "tile"), [(512, None), (530, None), (1000, None),
                                              (512, 128), (1024, 128), (600, 64)])
def test_rad_reaches_the_capacity_the_theory_prints(preset: str, budget: int,
                                                    tile: int | None) -> None:
    """With its default tile (the timing's, or 1) and a budget the tile divides, B*/t(B*) is
    max over n <= b_max of n/t(n): the capacity printed beside the run is RAD's."""
    timing = load_preset(preset).timing
    if tile is not None:
        timing = dataclasses.replace(timing, tile=tile)
    b_star = best_batch_tokens(timing, budget)
    mu, _ = timing.capacity(budget)
    assert b_star / timing.tokens_duration(b_star) == pytest.approx(mu, rel=1e-12)


def test_codellama_at_an_unaligned_budget() -> None:
    """b_max = 530 on the staircase: a full batch pays a fifth step (530 / 188.63 ms = 2,810
    tokens/s); RAD's B* = 512 keeps the capacity 512 / 153.16 ms = 3,343 tokens/s."""
    timing = load_preset("codellama-34b-a100").timing
    assert best_batch_tokens(timing, 530) == 512
    assert timing.capacity(530) == (pytest.approx(512 / 0.15316), 512)


def test_warns_when_its_tile_leaves_capacity_unreached() -> None:
    """Mistral tiled by 128 at b_max = 500: B* = 384 (10,146 tokens/s), but 500 tokens in
    t(512) reach 11,044: the printed load overstates what RAD serves, and it says so."""
    config = {"preset": "mistral-7b-rtx6000ada", "tile": 128, "budget": 500, "rate": 5,
              "requests": 300, "scheduler": "rad"}
    with pytest.warns(ConfigWarning) as record:
        servelab.simulate(config)
    [warning] = [w.message for w in record if isinstance(w.message, ConfigWarning)]
    assert isinstance(warning, ConfigWarning) and warning.field == "scheduler.tile"
    assert "B* = 384 tokens" in warning.reason
    assert "serve 10,145.8 tokens/s" in warning.reason
    assert "capacity 11,044.4 tokens/s" in warning.reason


def test_no_warning_when_capacity_is_reached(recwarn: pytest.WarningsRecorder) -> None:
    servelab.simulate({"preset": "mistral-7b-rtx6000ada", "tile": 128, "rate": 5,
                       "requests": 300, "scheduler": "rad"})
    assert not [w for w in recwarn if isinstance(w.message, ConfigWarning)]


# -- options and results ------------------------------------------------------------------

def test_tile_knob() -> None:
    assert make_scheduler("rad", tile="128").options() == {"tile": 128}
    assert RAD().options() == {"tile": None}
    with pytest.raises(ConfigError) as info:
        make_scheduler("rad", tile=0)
    assert (info.value.field, info.value.reason) == ("scheduler.tile", "must be >= 1")


def test_results_say_rad_is_reconstructed() -> None:
    small = {"rate": 8, "requests": 300, "seed": 1}
    result = servelab.compare(small, ["sarathi", "rad"])
    sarathi, rad = result.summaries
    assert (rad["scheduler"], rad["reconstructed"], rad["work_conserving"]) == ("rad", True,
                                                                               False)
    assert sarathi["reconstructed"] is False
    assert simulate_text(rad).startswith("servelab simulate: rad (reconstructed)\n")
    assert "rad (reconstructed)" in compare_text(result.summaries)
    # B* = b_max = 512 on this preset: the same batches as Sarathi's, so the same run.
    assert rad["ttft_ms"] == sarathi["ttft_ms"] and rad["e2e_ms"] == sarathi["e2e_ms"]


@pytest.mark.slow
def test_rad_stays_stable_where_an_unaligned_budget_sinks_sarathi() -> None:
    """codellama at b_max = 530, load 0.92 of the capacity 3,343 tokens/s: RAD's batches of
    512 serve up to that capacity and stay stable; Sarathi's full batches of 530 serve at most
    2,810 tokens/s < 0.92 x 3,343 = 3,075 offered, and its backlog grows (about 265 tokens/s
    in the fluid limit, far above the verdict's 1 % tolerance)."""
    result = servelab.compare({"budget": 530, "load": 0.92, "seed": 0}, ["sarathi", "rad"])
    sarathi, rad = result.summaries
    assert rad["verdict"] == "stable", rad["verdict_reason"]
    assert sarathi["verdict"] == "unstable", sarathi["verdict_reason"]
    assert sarathi["backlog_slope_tokens_per_s"] == pytest.approx(3075 - 2810, rel=0.5)


@pytest.mark.parametrize(("load", "verdict"), [(0.8, "stable"), (0.92, "feasible"),
                                               (1.01, "unstable")])
def test_the_theory_holds_work_conserving_policies_to_full_batches(load: float,
                                                                   verdict: str) -> None:
    """At b_max = 530 full batches serve 2,809.7 tokens/s, 0.8405 of the capacity at 512:
    Li-Dai-Peng's Theorem 2 promises stability to every work-conserving policy only below
    that; between it and the capacity only a policy capping its batches (rad) keeps up."""
    c = servelab.capacity({"budget": 530, "load": load})
    assert c["verdict"] == verdict
    assert c["full_batch_tokens_per_s"] == pytest.approx(530 / 0.18863)
    assert c["full_batch_tokens_per_s"] / c["tokens_per_s"] == pytest.approx(0.8405, abs=1e-4)
    assert "full_batch_tokens_per_s" not in servelab.capacity({"budget": 512, "load": load})

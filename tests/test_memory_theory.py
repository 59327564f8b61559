"""The KV-memory bound (Nie-Si-Zhou, reconstructed): a request's memory-time g, its mean over
each length distribution, the batch time, and which bound binds.

Statistical checks use fixed seeds and allow 5 standard errors, the SE estimated from the
sample itself: a correct formula then fails with probability ~6e-7 per check, while the errors
they guard against (a residue table rotated by one token, the decode slots of the wrong
convention, a chunk sum that stops early) miss by tens of SEs or more.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from servelab.analysis.memory import (
    envelope_time,
    kv_block_iterations,
    mean_kv_block_iterations,
    memory_bound,
)
from servelab.analysis.theory import memory_verdict
from servelab.core.convention import ENGINE, PAPER, Convention
from servelab.core.kv_settings import KVSettings
from servelab.simulation import capacity, prepare, simulate
from servelab.timing.presets import load_preset
from servelab.workload.lengths import (
    IndependentLengths,
    LengthPairs,
    parse_lengths,
)

N = 400_000
CODELLAMA = load_preset("codellama-34b-a100").timing


def brute_force_g(prompt: int, output: int, chunk: int, block_size: int,
                  convention: Convention) -> int:
    """g(s, o) iteration by iteration: the blocks held in each prefill chunk, then in each
    decode slot (the definition the closed forms must reproduce)."""
    held, done = 0, 0
    while done < prompt:
        done = min(done + chunk, prompt)
        held += math.ceil(done / block_size)
    for k in range(1, convention.decode_slots(output) + 1):
        held += math.ceil((prompt + k) / block_size)
    return held


def within_5_se(samples: np.ndarray, expected: float) -> bool:
    se = samples.std(ddof=1) / math.sqrt(len(samples))
    return abs(samples.mean() - expected) <= 5 * se + 1e-12 * max(1.0, abs(expected))


# --- g(s, o) for one request ---------------------------------------------------------------


def test_g_by_hand() -> None:
    # 129 prompt + 112 output tokens, blocks of 16, the whole prompt in one 512-token chunk:
    # prefill holds ceil(129/16) = 9 blocks; decode slot k holds ceil((129 + k)/16), which
    # sums to F(241) - F(129), F(n) = 16 q(q+1)/2 + r(q+1) for n = 16q + r:
    # F(241) = 16*15*16/2 + 1*16 = 1936, F(129) = 16*8*9/2 + 1*9 = 585: 1351. g = 1360.
    assert kv_block_iterations(np.array([129]), np.array([112]), 512, 16)[0] == 1360
    # In tokens the reconstruction's g is 129 + 129*112 + 112*113/2 = 20,905 token-iterations;
    # whole blocks make it 1360 * 16 = 21,760.
    # 16 + 16 tokens: one block for the prompt, two for each of the 16 decode slots: 33.
    assert kv_block_iterations(np.array([16]), np.array([16]), 512, 16)[0] == 33
    # Under the engine convention the prefill emits token 1, so 15 slots: 1 + 15 * 2 = 31.
    assert kv_block_iterations(np.array([16]), np.array([15]), 512, 16)[0] == 31
    # A 1000-token prompt in chunks of 300 holds 300, 600, 900, 1000 tokens: 19 + 38 + 57 +
    # 63 = 177 blocks of 16; then one decode slot holds ceil(1001/16) = 63: 240.
    assert kv_block_iterations(np.array([1000]), np.array([1]), 300, 16)[0] == 240


@pytest.mark.parametrize("convention", [PAPER, ENGINE], ids=lambda c: c.name)
@pytest.mark.parametrize(("chunk", "block_size"), [(512, 16), (300, 16), (5, 3), (1, 1),
                                                   (100, 7), (48, 32)])
def test_g_closed_form_equals_the_iteration_by_iteration_count(
        convention: Convention, chunk: int, block_size: int) -> None:
    rng = np.random.default_rng(chunk * 100 + block_size)
    prompts = rng.integers(1, 3000, 60)
    outputs = rng.integers(1, 300, 60)
    got = kv_block_iterations(prompts, convention.decode_slots(outputs), chunk, block_size)
    want = [brute_force_g(int(s), int(o), chunk, block_size, convention)
            for s, o in zip(prompts, outputs, strict=True)]
    np.testing.assert_array_equal(got, want)


# --- E[g] over a distribution: one function, two paths ----------------------------------------


@pytest.mark.parametrize("convention", [PAPER, ENGINE], ids=lambda c: c.name)
@pytest.mark.parametrize(("prompt", "output", "chunk", "block_size"),
                         [(129, 112, 512, 16), (16, 16, 512, 16), (1, 1, 512, 16),
                          (1000, 7, 300, 16), (17, 1, 5, 3), (5000, 33, 512, 32)])
def test_fixed_lengths_give_the_same_g_through_either_path(
        convention: Convention, prompt: int, output: int, chunk: int, block_size: int) -> None:
    want = brute_force_g(prompt, output, chunk, block_size, convention)
    pairs = LengthPairs(np.array([prompt]), np.array([output]))
    independent = IndependentLengths(parse_lengths(str(prompt), "prefill"),
                                     parse_lengths(str(output), "decode"))
    assert mean_kv_block_iterations(pairs, chunk, block_size, convention) == want
    assert mean_kv_block_iterations(independent, chunk, block_size, convention) == (
        pytest.approx(want, rel=1e-12))


@pytest.mark.parametrize("convention", [PAPER, ENGINE], ids=lambda c: c.name)
@pytest.mark.parametrize(("prefill", "decode", "chunk", "block_size"), [
    ("poisson:300", "geometric:50", 128, 16),
    ("uniform:1,2000", "poisson:7", 512, 16),
    ("lognormal:median=34,sigma=1.5", "lognormal:median=257,sigma=0.55", 512, 16),
    ("geometric:700", "uniform:1,9", 100, 7),
    ("csv:lengths.csv#tokens", "lognormal:mean=40,sigma=0.8", 8, 16),
])
def test_independent_lengths_agree_with_monte_carlo(
        convention: Convention, prefill: str, decode: str, chunk: int, block_size: int,
        tmp_path: Path) -> None:
    (tmp_path / "lengths.csv").write_text("tokens\n10\n0\n30\n7\n300\n17\n")
    p = parse_lengths(prefill, "prefill", base_dir=tmp_path)
    d = parse_lengths(decode, "decode", base_dir=tmp_path)
    rng = np.random.default_rng(9)
    g = kv_block_iterations(p.sample(rng, N), convention.decode_slots(d.sample(rng, N)), chunk,
                            block_size)
    exact = mean_kv_block_iterations(IndependentLengths(p, d), chunk, block_size, convention)
    assert within_5_se(g, exact)


# --- the bound -------------------------------------------------------------------------------


def test_the_staircase_envelope_runs_through_the_step_corners() -> None:
    # t = 11.28 + 35.47 ceil(n / 128) ms: between full tiles a mix of 128- and 256-token
    # batches averages 200 tokens in 11.28 + 35.47 * 200/128 = 66.70 ms, not t(200) = 82.22.
    assert envelope_time(CODELLAMA, 512, 0.5, 200) == pytest.approx(0.0667019, rel=1e-6)
    assert envelope_time(CODELLAMA, 512, 0.5, 100) == pytest.approx(0.04675)
    assert envelope_time(CODELLAMA, 512, 0.5, 512) == pytest.approx(0.15316)
    mistral = load_preset("mistral-7b-rtx6000ada").timing  # convex: the curve itself
    for n in (1, 100, 300, 512):
        assert envelope_time(mistral, 512, 0.5, n) == pytest.approx(mistral.tokens_duration(n))


def test_memory_bound_by_hand_when_memory_binds() -> None:
    # 16 + 16 tokens (paper convention) hold g = 33 block-iterations and need W = 32 token
    # slots. 100 blocks feed n_mem = 100 * 32 / 33 = 96.97 tokens a batch, under n* = 512, so
    # memory binds; b_bar = t(96.97) = 46.75 ms (the staircase's first step), and
    # mu_mem = 100 / (0.04675 * 33) = 64.82 requests/s, below lambda* = 3342.9 / 32 = 104.47.
    kv = KVSettings(100)
    lengths = IndependentLengths(parse_lengths("16", "p"), parse_lengths("16", "d"))
    bound = memory_bound(CODELLAMA, 512, kv, lengths, PAPER, 32.0, 0.5, 512)
    assert bound.block_iterations == 33
    assert bound.batch_tokens == pytest.approx(3200 / 33)
    assert bound.batch_s == pytest.approx(0.04675)
    assert bound.max_rate == pytest.approx(100 / (0.04675 * 33))


def test_memory_bound_when_tokens_bind() -> None:
    # Mistral's 14,733 blocks and 129 + 112 tokens (engine convention: 111 decode slots):
    # n_mem = 14733 * 240 / g is far above 512, so b_bar = t(512) = 45.272 ms.
    kv = KVSettings(14733)
    lengths = IndependentLengths(parse_lengths("129", "p"), parse_lengths("112", "d"))
    g = brute_force_g(129, 112, 512, 16, ENGINE)
    mistral = load_preset("mistral-7b-rtx6000ada").timing
    bound = memory_bound(mistral, 512, kv, lengths, ENGINE, 240.0, 129 / 241, 512)
    assert bound.batch_tokens == 512
    assert bound.max_rate == pytest.approx(14733 / (0.045272 * g))


def test_binding_and_the_verdict_follow_the_lower_bound() -> None:
    base = {"preset": "codellama-34b-a100", "prefill": 16, "decode": 16}
    roomy = capacity({**base, "kv_blocks": 100_000, "rate": 70})
    assert roomy["binding"] == "tokens" and roomy["memory_max_rate"] > roomy["max_rate"]
    assert roomy["verdict"] == "stable" and "memory load" in roomy["verdict_reason"]
    starved = capacity({**base, "kv_blocks": 100, "rate": 70})
    assert starved["binding"] == "memory"
    assert starved["memory_max_rate"] == pytest.approx(100 / (0.04675 * 33))
    assert starved["load"] < 0.7  # the token bound alone would call it stable
    assert starved["verdict"] == "unstable" and "memory load 1.0799" in starved["verdict_reason"]
    # Above the memory bound requests finish at most at mu_mem: the backlog grows at
    # (lambda - mu_mem) W tokens/s.
    assert starved["fluid_slope_tokens_per_s"] == pytest.approx(
        (70 - starved["memory_max_rate"]) * 32)


def test_the_memory_bound_scales_with_replicas_and_sits_beside_the_kmax_region() -> None:
    base = {"prefill": 16, "decode": 16, "kv_blocks": 100, "rate": 70}
    one, three = capacity(base), capacity({**base, "replicas": 3})
    assert three["memory_max_rate"] == pytest.approx(3 * one["memory_max_rate"])
    assert three["binding"] == "memory" and three["verdict"] == "stable"
    capped = capacity({**base, "kmax": 4})  # a cap of 4 requests: the region binds first
    assert capped["kmax_region"]["max_rate"] < capped["memory_max_rate"]
    assert capped["binding"] == "tokens" and capped["verdict"] == "unstable"


def test_memory_verdict_when_tokens_bind_keeps_the_token_answer() -> None:
    assert memory_verdict("unstable", "token reason", 0.9, "tokens") == ("unstable",
                                                                         "token reason")
    verdict, reason = memory_verdict("feasible", "inside", 0.5, "tokens")
    assert verdict == "feasible" and reason.startswith("inside; memory load 0.5000 < 1")


def test_a_trace_supplies_joint_pairs(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                     "0,16,16\n1,100,4\n2,16,16\n3,40,70\n")
    c = capacity({"trace": str(trace), "kv_blocks": 50})
    g = np.mean([brute_force_g(s, o, 512, 16, PAPER)
                 for s, o in ((16, 16), (100, 4), (16, 16), (40, 70))])
    assert c["memory"]["kv_token_iterations_per_request"] == pytest.approx(16 * g)


def test_the_simulation_summary_carries_the_memory_theory() -> None:
    theory = prepare({"prefill": 16, "decode": 16, "kv_blocks": 100, "rate": 70,
                      "requests": 2000}).theory
    assert theory["binding"] == "memory" and theory["theory_verdict"] == "unstable"
    assert theory["memory"]["load"] == pytest.approx(70 / theory["memory_max_rate"])


def test_a_memory_bound_workload_turns_unstable_near_the_memory_bound() -> None:
    """Memory binds at 64.8 req/s, the tokens at 104.5: the run must follow memory."""
    base = {"scheduler": "sarathi", "prefill": 16, "decode": 16, "kv_blocks": 100,
            "seed": 1}
    mu_mem = capacity({**base, "scheduler": None, "seed": None})["memory_max_rate"]
    below = simulate({**base, "rate": 0.8 * mu_mem}).summary
    above = simulate({**base, "rate": 1.2 * mu_mem}).summary
    assert below["binding"] == above["binding"] == "memory"
    assert above["load"] < 0.8  # the token bound alone would call both stable
    assert below["verdict"] == "stable"
    assert above["verdict"] == "unstable"

"""Capacity theory: token capacity and the k_max stability region (work per request: the
token convention, tests/test_convention.py)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from servelab.analysis.capacity import (
    MAX_REGION_BUDGET,
    _upper_hull,
    kmax_region,
    token_capacity,
)
from servelab.errors import ConfigError
from servelab.timing.models import Affine, Piecewise, Staircase, Table, TimingModel

CODELLAMA = Staircase(c=0.01128, a=0.03547, b0=128)
MISTRAL = Piecewise(c=0.023, a_per_token=0.000058, b0=128)
T128, T1024 = 0.04675, 0.29504  # CodeLlama batch times at 128 and 1024 tokens


def test_token_capacity_is_model_capacity() -> None:
    assert token_capacity(CODELLAMA, 512) == pytest.approx(512 / 0.15316)


def test_codellama_region_has_vertex_c() -> None:
    region = kmax_region(CODELLAMA, budget=1024, kmax=100, prompt_tokens=290)
    vertices = np.array(region.vertices)
    for expected in [(0, 100 / T128), (29 / T128, 99 / T128), (1024 / T1024, 0)]:
        assert np.min(np.abs(vertices - expected).max(axis=1)) < 1e-9
    assert region.vertices[0][0] == 0 and region.vertices[-1][1] == 0


@pytest.mark.parametrize("budget", [128, 1024])
def test_point_c_load_is_one(budget: int) -> None:
    """At b_max = 128 the 290-token prompt needs 3 chunks; the slot limit that adds spares C."""
    region = kmax_region(CODELLAMA, budget=budget, kmax=100, prompt_tokens=290)
    lam = 1 / 0.4675
    assert region.load(lam * 290, lam * 990) == pytest.approx(1.0, abs=1e-9)
    assert region.load(0.9 * lam * 290, 0.9 * lam * 990) == pytest.approx(0.9, abs=1e-9)
    assert region.load(0, 0) == 0
    assert region.load(4000, 0) > 1
    with pytest.raises(ConfigError) as err:
        region.load(-1, 0)
    assert err.value.field == "prefill_rate"


@pytest.mark.parametrize("kmax", [512, 10_000])
def test_without_binding_kmax_intercepts_are_token_capacity(kmax: int) -> None:
    region = kmax_region(CODELLAMA, budget=512, kmax=kmax, prompt_tokens=129)
    capacity = token_capacity(CODELLAMA, 512)
    assert region.vertices[-1] == (pytest.approx(capacity), 0.0)
    assert region.vertices[0] == (0.0, pytest.approx(capacity))
    assert region.load(capacity / 2, capacity / 2) == pytest.approx(1.0)


def test_short_prompts_take_a_request_slot_each() -> None:
    """The issue's case: 8-token prompts, 7 decode slots (engine), k_max 32, 23 ms batches.

    Each request takes 1 + 7 slots, and every batch of up to 128 tokens costs 23 ms, so at most
    32 / 8 = 4 requests per 23 ms. Were one prefilling request enough for any batch (prompts
    as long as the budget), mixing 32-decode batches with 97 + 31 batches would allow 196.
    """
    region = kmax_region(MISTRAL, budget=512, kmax=32, prompt_tokens=8)
    assert 1 / region.load(8, 7) == pytest.approx(4 / 0.023, rel=1e-12)
    long_prompts = kmax_region(MISTRAL, budget=512, kmax=32, prompt_tokens=512)
    prefill_share = 32 / (7 / 8 + 1 / 97)  # on the edge y = 32 - x / 97, along the ray 7/8
    assert 1 / long_prompts.load(8, 7) == pytest.approx(prefill_share / 8 / 0.023, rel=1e-12)


@pytest.mark.parametrize(("prompt", "decode_slots", "kmax"), [(200, 8, 1), (290, 64, 16),
                                                               (1000, 0, 1)])
def test_prompts_longer_than_the_budget_need_whole_chunks(
    prompt: int, decode_slots: int, kmax: int
) -> None:
    """A prompt of P > b tokens spans ceil(P / b) batches, each a slot: slot-bound at 46.75 ms
    per batch, at most k_max / ((ceil(P / b) + D) t) requests/s, not k_max / ((P / b + D) t)."""
    region = kmax_region(CODELLAMA, budget=128, kmax=kmax, prompt_tokens=prompt)
    slots = math.ceil(prompt / 128) + decode_slots
    assert 1 / region.load(prompt, decode_slots) == pytest.approx(kmax / slots / T128, rel=1e-12)


def _brute_points(model: TimingModel, budget: int, kmax: int, prompt: float) -> np.ndarray:
    """Every feasible (x, y) batch shape's rate point, no pruning."""
    x, y = np.meshgrid(np.arange(budget + 1), np.arange(budget + 1))
    x, y = x.ravel(), y.ravel()
    seqs = y + np.ceil(x / prompt)
    ok = (x + y >= 1) & (x + y <= budget) & (seqs <= kmax)
    x, y, seqs = x[ok], y[ok], seqs[ok]
    t = np.asarray(model.durations(x, y, seqs), dtype=float)
    return np.column_stack((x / t, y / t))


def _slot_gauge(model: TimingModel, budget: int, kmax: int, prompt: float,
                rates: np.ndarray) -> np.ndarray:
    """Gauge of the slot limit: ceil(P / b) chunks per prompt plus one slot per decode token,
    at most kmax slots per shortest batch (one token for these nondecreasing models)."""
    shortest = min(model.duration(1, 0, 1), model.duration(0, 1, 1))
    chunks = math.ceil(prompt / budget)
    return (rates[:, 0] * chunks / prompt + rates[:, 1]) * shortest / kmax


@pytest.mark.parametrize(
    "model",
    [
        Staircase(c=0.01, a=0.03, b0=8),
        Piecewise(c=0.02, a_per_token=0.001, b0=12),
        Affine(alpha=0.01, beta_prefill=1e-4, beta_decode=2e-3, gamma=5e-4),
        Affine(alpha=0.002, beta_prefill=1e-3, beta_decode=1e-4, gamma=4e-3),
        Table(tokens=(1, 10, 24, 32), seconds=(0.01, 0.012, 0.03, 0.05), source="x"),
    ],
    ids=lambda m: m.kind,
)
@pytest.mark.parametrize("kmax", [1, 7, 50])
@pytest.mark.parametrize("prompt", [1, 3, 6.5, 17, 100])
def test_pruned_hull_matches_brute_force(model: TimingModel, kmax: int, prompt: float) -> None:
    """Every feasible shape lies in the region, up to the slot limit when prompts outgrow the
    budget (checked point by point, whatever the hull code does), and the region has the
    gauge of the hull of all shapes, cut by that limit, in every direction."""
    region = kmax_region(model, budget=40, kmax=kmax, prompt_tokens=prompt)
    points = _brute_points(model, 40, kmax, prompt)
    rng = np.random.default_rng(5)
    directions = np.vstack((points, rng.uniform(0, 1, (200, 2)) * points.max(axis=0)))
    slot = _slot_gauge(model, 40, kmax, prompt, directions) if prompt > 40 else 0 * directions[:, 0]
    got = np.array([region.load(px, py) for px, py in directions])
    assert np.all(got[: len(points)] <= np.maximum(1.0, slot[: len(points)]) + 1e-9)
    hull = _upper_hull(np.vstack((points, [[0, points[:, 1].max()], [points[:, 0].max(), 0]])))
    brute = type(region)(40, kmax, prompt, hull)
    expected = np.maximum([brute.load(px, py) for px, py in directions], slot)
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_region_is_fast_and_serializes() -> None:
    start = time.perf_counter()
    region = kmax_region(CODELLAMA, budget=4096, kmax=1024, prompt_tokens=100)
    assert time.perf_counter() - start < 0.5
    d = region.to_dict()
    assert (d["budget"], d["kmax"], d["prompt_tokens_assumed"]) == (4096, 1024, 100)
    assert d["vertices_tokens_per_s"] == [[x, y] for x, y in region.vertices]


def test_region_cost_is_bounded() -> None:
    """At the largest budget it accepts the region stays cheap, and an affine model's cost
    does not grow with the budget at all; beyond it, a refusal before any allocation."""
    start = time.perf_counter()
    kmax_region(MISTRAL, MAX_REGION_BUDGET, kmax=64, prompt_tokens=300)
    affine = Affine(alpha=0.01, beta_prefill=1e-4, beta_decode=2e-3, gamma=5e-4)
    kmax_region(affine, MAX_REGION_BUDGET, kmax=64, prompt_tokens=300)
    assert time.perf_counter() - start < 2
    with pytest.raises(ConfigError, match="up to 1,000,000 tokens") as err:
        kmax_region(CODELLAMA, 10**12, kmax=8, prompt_tokens=100)
    assert err.value.field == "budget"


@pytest.mark.parametrize(("budget", "kmax", "prompt", "field"),
                         [(0, 10, 5, "budget"), (64, 0, 5, "kmax"), (64, 8, 0.5, "prefill"),
                          (64, 8, math.inf, "prefill")])
def test_region_rejects_bad_limits(budget: int, kmax: int, prompt: float, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        kmax_region(CODELLAMA, budget, kmax, prompt)
    assert err.value.field == field

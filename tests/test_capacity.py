"""Capacity theory: token capacity, work per request and the k_max stability region."""

from __future__ import annotations

import time

import numpy as np
import pytest

from servelab.analysis.capacity import kmax_region, token_capacity, work_per_request
from servelab.errors import ConfigError
from servelab.timing.models import Affine, Piecewise, Staircase, Table, TimingModel

CODELLAMA = Staircase(c=0.01128, a=0.03547, b0=128)
T128, T1024 = 0.04675, 0.29504  # CodeLlama batch times at 128 and 1024 tokens


def test_token_capacity_is_model_capacity() -> None:
    assert token_capacity(CODELLAMA, 512) == pytest.approx(512 / 0.15316)


def test_work_per_request() -> None:
    assert work_per_request(290, 990, "paper") == 1280
    assert work_per_request(290, 990, "engine") == 1279
    with pytest.raises(ConfigError) as err:
        work_per_request(1, 1, "vllm")
    assert err.value.field == "convention"


def test_codellama_region_has_vertex_c() -> None:
    region = kmax_region(CODELLAMA, budget=1024, kmax=100)
    vertices = np.array(region.vertices)
    for expected in [(0, 100 / T128), (29 / T128, 99 / T128), (1024 / T1024, 0)]:
        assert np.min(np.abs(vertices - expected).max(axis=1)) < 1e-9
    assert region.vertices[0][0] == 0 and region.vertices[-1][1] == 0


def test_point_c_load_is_one() -> None:
    region = kmax_region(CODELLAMA, budget=1024, kmax=100)
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
    region = kmax_region(CODELLAMA, budget=512, kmax=kmax)
    capacity = token_capacity(CODELLAMA, 512)
    assert region.vertices[-1] == (pytest.approx(capacity), 0.0)
    assert region.vertices[0] == (0.0, pytest.approx(capacity))
    assert region.load(capacity / 2, capacity / 2) == pytest.approx(1.0)


def _brute_points(model: TimingModel, budget: int, kmax: int) -> np.ndarray:
    """Every feasible (x, y) batch shape's rate point, no pruning."""
    x, y = np.meshgrid(np.arange(budget + 1), np.arange(budget + 1))
    x, y = x.ravel(), y.ravel()
    ok = (x + y >= 1) & (x + y <= budget) & (y + (x > 0) <= kmax)
    x, y = x[ok], y[ok]
    t = np.asarray(model.durations(x, y, y + (x > 0)), dtype=float)
    return np.column_stack((x / t, y / t))


@pytest.mark.parametrize(
    "model",
    [
        Staircase(c=0.01, a=0.03, b0=8),
        Piecewise(c=0.02, a_per_token=0.001, b0=12),
        Affine(alpha=0.01, beta_prefill=1e-4, beta_decode=2e-3, gamma=5e-4),
        Table(tokens=(1, 10, 24, 32), seconds=(0.01, 0.012, 0.03, 0.05), source="x"),
    ],
    ids=lambda m: m.kind,
)
@pytest.mark.parametrize("kmax", [1, 7, 50])
def test_pruned_hull_matches_brute_force(model: TimingModel, kmax: int) -> None:
    region = kmax_region(model, budget=40, kmax=kmax)
    points = _brute_points(model, 40, kmax)
    loads = [region.load(px, py) for px, py in points]
    assert max(loads) == pytest.approx(1.0, abs=1e-9)
    assert max(loads) <= 1 + 1e-9
    for vx, vy in region.vertices[1:-1]:  # the ends may be axis projections
        assert np.min(np.abs(points - (vx, vy)).max(axis=1)) < 1e-9


def test_region_is_fast_and_serializes() -> None:
    start = time.perf_counter()
    region = kmax_region(CODELLAMA, budget=4096, kmax=1024)
    assert time.perf_counter() - start < 0.5
    d = region.to_dict()
    assert (d["budget"], d["kmax"]) == (4096, 1024)
    assert d["vertices_tokens_per_s"] == [[x, y] for x, y in region.vertices]


@pytest.mark.parametrize(("budget", "kmax", "field"), [(0, 10, "budget"), (64, 0, "kmax")])
def test_region_rejects_bad_limits(budget: int, kmax: int, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        kmax_region(CODELLAMA, budget, kmax)
    assert err.value.field == field

"""Stability: the verdict method on synthetic series, and the paper's results end to end.

The end-to-end tests simulate long horizons (marked slow; still run in CI). Tolerances: at
1.1 and 1.2 lambda* the measured slope's standard error is about 1.5 % of the fluid slope
(1,500 s of arrivals), so the issue's 15 % band is roughly ten standard errors wide: it fails
on a wrong capacity or a leaking scheduler, not on noise. Three seeds each guard against a
lucky draw.
"""

from __future__ import annotations

import numpy as np
import pytest

import servelab
from servelab.analysis.stability import backlog_verdict

OFFERED = 3000.0  # tokens/s; the verdict tolerance is 1 % of it


def _series(values: np.ndarray, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    return np.linspace(0, horizon, len(values)), values


def test_linear_growth_is_unstable_with_the_right_slope() -> None:
    rng = np.random.default_rng(0)
    t, y = _series(200.0 * np.linspace(0, 1000, 2000) + rng.normal(0, 500, 2000), 1000)
    v = backlog_verdict(t, y, 1000, OFFERED)
    assert v.verdict == "unstable"
    assert v.slope_tokens_per_s == pytest.approx(200.0, rel=0.05)


def test_bounded_noise_is_stable() -> None:
    rng = np.random.default_rng(1)
    t, y = _series(5000 + rng.normal(0, 800, 2000), 1000)
    v = backlog_verdict(t, y, 1000, OFFERED)
    assert v.verdict == "stable"
    assert abs(v.slope_tokens_per_s) < 5 * v.stderr_tokens_per_s + 1e-9


def test_growth_near_the_tolerance_is_inconclusive() -> None:
    rng = np.random.default_rng(2)
    slope = 0.01 * OFFERED  # exactly the tolerance
    t, y = _series(slope * np.linspace(0, 1000, 2000) + rng.normal(0, 2000, 2000), 1000)
    assert backlog_verdict(t, y, 1000, OFFERED).verdict == "inconclusive"


def test_too_few_samples_is_inconclusive() -> None:
    t, y = _series(np.arange(10.0), 10)
    v = backlog_verdict(t, y, 10, OFFERED)
    assert v.verdict == "inconclusive"
    assert "samples" in v.reason


def test_the_drain_is_not_part_of_the_window() -> None:
    """An overloaded run that also drains must still read as growing over its arrivals."""
    drained = servelab.simulate({"scheduler": "sarathi", "load": 1.2, "duration": 600,
                                 "drain": True, "seed": 4}).summary
    assert drained["verdict"] == "unstable"
    assert drained["end_s"] > drained["horizon_s"]
    assert drained["in_flight"] == 0
    assert drained["verdict_window_s"] == [300.0, 600.0]


def _run(scheduler: str, load: float, seed: int, **extra: object) -> dict:
    config = {"scheduler": scheduler, "load": load, "duration": 1500, "seed": seed, **extra}
    return servelab.simulate(config).summary


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["sarathi", "orca"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_capacity_boundary(scheduler: str, seed: int) -> None:
    assert _run(scheduler, 0.9, seed)["verdict"] == "stable"
    over = _run(scheduler, 1.1, seed)
    assert over["verdict"] == "unstable"
    for s in (over, _run(scheduler, 1.2, seed)):
        assert s["backlog_slope_tokens_per_s"] == pytest.approx(
            s["fluid_slope_tokens_per_s"], rel=0.15)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 7])
def test_figure_1_contrast_at_0_9(seed: int) -> None:
    """Li-Dai-Peng Figure 1: the non-work-conserving policies diverge below capacity."""
    result = servelab.compare({"load": 0.9, "seed": seed, "requests": 5000})
    verdicts = {s["scheduler"]: s["verdict"] for s in result.summaries}
    assert verdicts == {"fastertransformer": "unstable", "vllm": "unstable",
                        "orca": "stable", "sarathi": "stable", "kfcfs": "stable"}


POINT_C = {"kmax": 100, "rate": 1 / 0.4675, "arrivals": "deterministic", "prefill": "290",
           "decode": "990", "duration": 2000}


@pytest.mark.slow
def test_point_c_only_sarathi_128_is_stable() -> None:
    """li_dai_peng.md 5.5: the load sits on vertex C of the k_max region."""
    result = servelab.simulate({**POINT_C, "scheduler": "sarathi", "budget": 128,
                                "record_batches": True})
    assert result.summary["verdict"] == "stable"
    assert result.summary["kmax_region"]["load"] == pytest.approx(1.0, abs=1e-9)
    # After the warm-up it locks into full batches of about 29 prefill + 99 decode tokens.
    steady = [b for b in result.batches if b.start > 1000]
    assert all(sum(n for _, n in b.prefill) + len(b.decode) == 128 for b in steady)
    decodes = np.array([len(b.decode) for b in steady])
    assert decodes.mean() == pytest.approx(99, abs=1)
    for scheduler, budget in (("orca", 128), ("sarathi", 1024)):
        s = servelab.simulate({**POINT_C, "scheduler": scheduler, "budget": budget}).summary
        assert s["verdict"] == "unstable", (scheduler, budget)

"""K identical engines behind a router (Li-Dai-Peng Proposition 3), through the library API.

Capacity is K mu and lambda* = K mu / (m_p + m_d); below it a work-conserving fleet behind a
sensible router is stable, above it the total backlog grows at the fluid slope. Runs use the
default run length (grown until the verdict is confident) unless a test needs a fixed one.
"""

from __future__ import annotations

import numpy as np
import pytest

import servelab
from servelab import ConfigError
from servelab.results import to_json

HUNDREDS = {"prefill": "100", "decode": "100", "budget": 512}  # li_dai_peng.md 4.5


def _summary(**config: object) -> dict:
    return servelab.simulate(config).summary


@pytest.mark.slow
def test_jsq_with_two_engines_is_stable_below_and_grows_at_the_fluid_slope_above() -> None:
    below = _summary(**HUNDREDS, replicas=2, router="jsq", load=0.9, seed=1)
    assert below["verdict"] == "stable"
    assert below["capacity"]["max_rate"] == pytest.approx(2 * 512 / 0.15316 / 200)
    above = _summary(**HUNDREDS, replicas=2, router="jsq", load=1.1, seed=1, duration=6000)
    assert above["verdict"] == "unstable"
    # JSQ keeps both engines busy, so the fleet serves 2 mu and the backlog grows at the
    # fluid slope of what arrived. Against the nominal slope the difference is the arrivals'
    # own deviation: over the 3,000 s window its standard error is 2.3 % of the slope, so 10 %
    # is over four of them.
    assert above["backlog_slope_tokens_per_s"] == pytest.approx(
        above["realised_fluid_slope_tokens_per_s"], rel=0.02)
    assert above["backlog_slope_tokens_per_s"] == pytest.approx(
        above["fluid_slope_tokens_per_s"], rel=0.10)
    assert [e["verdict"] for e in above["engines"]] == ["unstable", "unstable"]


@pytest.mark.slow
@pytest.mark.parametrize("router", ["round_robin", "random", "lor", "power_of_d:2"])
def test_other_routers_are_stable_below_capacity(router: str) -> None:
    s = _summary(**HUNDREDS, replicas=2, router=router, load=0.9, seed=2)
    assert s["verdict"] == "stable", s["verdict_reason"]
    assert s["router"] == router
    assert sum(e["arrived"] for e in s["engines"]) == s["arrived"]


def test_jsq_beats_random_on_heterogeneous_prompts() -> None:
    """Lognormal prompts (sigma 1.5) at 0.95: random routing piles long prompts on one engine
    now and then, and the tail of TTFT shows it; JSQ balances the work."""
    common = {"prefill": "lognormal:mean=129,sigma=1.5", "decode": "112", "replicas": 4,
              "load": 0.95, "seed": 3, "requests": 40_000}
    jsq = _summary(**common, router="jsq")["ttft_ms"]["p99"]
    rand = _summary(**common, router="random")["ttft_ms"]["p99"]
    print(f"p99 TTFT: jsq {jsq:,.0f} ms, random {rand:,.0f} ms, ratio {rand / jsq:.2f}")
    assert jsq < rand


def test_same_seed_same_fleet_result() -> None:
    config = {"replicas": 3, "router": "power_of_d:2", "load": 0.8, "seed": 4, "requests": 6000}
    a, b = servelab.simulate(config), servelab.simulate(config)
    np.testing.assert_array_equal(a.requests.finish_s, b.requests.finish_s)
    assert to_json(a.summary["engines"]) == to_json(b.summary["engines"])  # NaN-safe


def test_one_replica_is_the_single_engine() -> None:
    single = servelab.simulate({"load": 0.9, "seed": 5, "requests": 6000}).summary
    one = servelab.simulate({"load": 0.9, "seed": 5, "requests": 6000, "replicas": 1}).summary
    for summary in (single, one):
        summary.pop("wall_s")
    assert to_json(one) == to_json(single) and "engines" not in one


def test_fleet_theory_and_the_api() -> None:
    fleet = servelab.capacity({"replicas": 4, "rate": 40})
    one = servelab.capacity({"rate": 10})
    assert fleet["max_rate"] == pytest.approx(4 * one["max_rate"])
    assert fleet["load"] == pytest.approx(one["load"])
    s = servelab.simulate({"replicas": 4, "router": "jsq", "load": 0.5, "requests": 8000})
    assert len(s.summary["engines"]) == 4 and s.summary["replicas"] == 4


@pytest.mark.parametrize(("config", "field"), [
    ({"router": "jsq"}, "router"),
    ({"replicas": 0}, "replicas"),
    ({"replicas": 2, "router": "fastest"}, "router"),
    ({"replicas": 2, "router": "power_of_d:0"}, "router"),
    ({"replicas": 2, "router": "power_of_d:3"}, "router"),
    ({"replicas": 2, "router": "jsq:2"}, "router"),
    ({"replicas": 2, "record_batches": True}, "record_batches"),
])
def test_bad_fleets_are_refused(config: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        servelab.simulate({"load": 0.5, "requests": 1000, **config})
    assert info.value.field == field


def test_the_load_board_tracks_the_least_loaded_engine() -> None:
    """Against a scan, after every one of many random updates (rises, falls, ties)."""
    from servelab.schedulers import make_scheduler
    from servelab.sim.engine import Engine, LoadBoard
    from servelab.timing.models import Constant

    rng = np.random.default_rng(7)
    board = LoadBoard([Engine(make_scheduler("sarathi"), Constant(1.0), 8) for _ in range(5)])
    for _ in range(2000):
        slot = int(rng.integers(5))
        board.publish(slot, int(rng.integers(0, 6)), int(rng.integers(0, 3)))
        for loads, least in ((board.unprocessed, board.least_unprocessed()),
                             (board.outstanding, board.least_outstanding())):
            assert least == loads.index(min(loads))


def test_the_router_docs_architecture_shows_runs_as_printed() -> None:
    """The example router of docs/architecture.md, behind four engines: every arrival placed,
    and spread (two choices by requests keeps every engine in use)."""
    from pathlib import Path

    from servelab.routers.base import Router
    from servelab.schedulers import make_scheduler
    from servelab.sim.engine import Engine
    from servelab.sim.run import run_engines
    from servelab.timing.models import Constant

    text = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    block = text.split("## Writing a router")[1].split("```python\n")[1].split("```")[0]
    namespace: dict[str, object] = {}
    exec(block, namespace)
    example = namespace["TwoChoicesByRequests"]
    assert isinstance(example, type) and issubclass(example, Router)
    router = example(np.random.default_rng(1))
    engines = [Engine(make_scheduler("sarathi"), Constant(0.01), 64) for _ in range(4)]
    n = 2000
    arrival = np.sort(np.random.default_rng(2).uniform(0, 50, n))
    rec = run_engines(engines, router.choose, arrival, np.full(n, 20), np.full(n, 10), 50.0,
                      drain=True)
    assert rec.completed == n and rec.assigned is not None
    counts = np.bincount(rec.assigned, minlength=4)
    assert counts.sum() == n and counts.min() > n / 8

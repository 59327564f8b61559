"""Capacity-search criteria: the grammar, and the evaluator on hand-made summaries.

The SLO-class summaries here are made by hand in the shape the SLO-class work will give
(``classes``: name, targets, latency dicts in ms, ``slo_attainment``); end-to-end ``slo``
searches are tested once runs carry classes.
"""

from __future__ import annotations

from typing import Any

import pytest

from servelab import ConfigError
from servelab.analysis.criteria import BEYOND_CAPACITY, parse_criteria, parse_criterion


def latencies(p50_ms: float, p99_ms: float) -> dict[str, float]:
    return {"mean": p50_ms, "p50": p50_ms, "p90": (p50_ms + p99_ms) / 2, "p99": p99_ms}


def summary(verdict: str = "stable", theory: str = "stable", **extra: Any) -> dict[str, Any]:
    base = {"verdict": verdict, "theory_verdict": theory, "ttft_ms": latencies(300, 900),
            "tbt_ms": latencies(40, 150), "tpot_ms": latencies(45, 60),
            "e2e_ms": latencies(5000, 12000)}
    return {**base, **extra}


def slo_class(name: str, tbt_target_s: float, ttft_target_s: float | None, tbt_p99_ms: float,
              ttft_p50_ms: float, attainment: float) -> dict[str, Any]:
    return {"name": name, "tbt_target_s": tbt_target_s, "ttft_target_s": ttft_target_s,
            "ttft_ms": latencies(ttft_p50_ms, 3 * ttft_p50_ms),
            "tbt_ms": latencies(tbt_p99_ms / 3, tbt_p99_ms), "tpot_ms": latencies(30, 40),
            "e2e_ms": latencies(4000, 9000), "slo_attainment": attainment,
            "goodput_requests_per_s": 5.0}


@pytest.mark.parametrize(("text", "metric", "op", "threshold", "canonical"), [
    ("stable", "stable", None, None, "stable"),
    ("  STABLE ", "stable", None, None, "stable"),
    ("ttft_p50<=0.5", "ttft_p50", "<=", 0.5, "ttft_p50<=0.5"),
    ("TBT_P99 < 0.2", "tbt_p99", "<", 0.2, "tbt_p99<0.2"),
    ("e2e_mean<=30", "e2e_mean", "<=", 30.0, "e2e_mean<=30"),
    ("tpot_p90<=5e-2", "tpot_p90", "<=", 0.05, "tpot_p90<=0.05"),
    ("tbt_p99<=slo", "tbt_p99", "<=", "slo", "tbt_p99<=slo"),
    ("ttft_p50 <= SLO", "ttft_p50", "<=", "slo", "ttft_p50<=slo"),
    ("slo_attainment>=0.9", "slo_attainment", ">=", 0.9, "slo_attainment>=0.9"),
    ("slo_attainment>1", "slo_attainment", ">", 1.0, "slo_attainment>1"),
])
def test_criteria_parse(text: str, metric: str, op: str | None, threshold: object,
                        canonical: str) -> None:
    c = parse_criterion(text)
    assert (c.metric, c.op, c.threshold, c.text) == (metric, op, threshold, canonical)
    unit = {"stable": None, "slo_attainment": "fraction"}.get(metric, "s")
    assert c.to_dict() == {"text": canonical, "metric": metric, "op": op,
                           "threshold": threshold, "unit": unit}


@pytest.mark.parametrize(("text", "reason"), [
    ("ttft_p95<=0.5", "unknown metric 'ttft_p95'"),
    ("latency<=0.5", "unknown metric 'latency'"),
    ("goodput>=5", "unknown metric 'goodput'"),
    ("ttft<=0.5", "unknown metric 'ttft'"),
    ("", "cannot read ''"),
    ("ttft_p50<=", "needs a comparison and a value"),
    ("ttft_p50", "needs a comparison and a value"),
    ("ttft_p50=0.5", "unknown comparison '='"),
    ("ttft_p50==0.5", "unknown comparison '=='"),
    ("ttft_p50>=0.5", "grows with the rate"),
    ("slo_attainment<=0.9", "falls with the rate"),
    ("ttft_p50<=fast", "expected a number or slo"),
    ("ttft_p50<=0.5s", "expected a number or slo"),
    ("ttft_p50<=0", "must be > 0 s"),
    ("ttft_p50<=nan", "expected a number or slo"),
    ("slo_attainment>=0", "a value in (0, 1]"),
    ("slo_attainment>=1.5", "a value in (0, 1]"),
    ("slo_attainment>=slo", "TTFT and TBT targets only"),
    ("e2e_p99<=slo", "TTFT and TBT targets only"),
    ("stable<=1", "stable takes no comparison"),
    ("ttft_p50<=0.5 and tbt", "expected a number or slo"),
])
def test_bad_criteria_are_config_errors(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_criterion(text)
    assert info.value.field == "criterion"
    assert reason in info.value.reason


def test_criteria_list_needs_one_and_no_repeats() -> None:
    assert [c.text for c in parse_criteria(["stable", "ttft_p50 <= 0.5"])] == [
        "stable", "ttft_p50<=0.5"]
    assert [c.text for c in parse_criteria("stable")] == ["stable"]
    for bad in ([], ["ttft_p50<=0.5", "ttft_p50 <= .5"]):
        with pytest.raises(ConfigError) as info:
            parse_criteria(bad)
        assert info.value.field == "criterion"


def test_latency_criteria_read_seconds_from_milliseconds() -> None:
    s = summary()
    assert parse_criterion("ttft_p50<=0.5").evaluate(s) == (0.3, True)
    assert parse_criterion("ttft_p50<=0.3").evaluate(s) == (0.3, True)
    assert parse_criterion("ttft_p50<0.3").evaluate(s) == (0.3, False)
    assert parse_criterion("ttft_p99<=0.5").evaluate(s) == (0.9, False)
    assert parse_criterion("tbt_p99<=0.2").evaluate(s) == (0.15, True)
    assert parse_criterion("e2e_mean<=4.9").evaluate(s) == (5.0, False)
    assert parse_criterion("tpot_p90<=0.06").evaluate(s) == (pytest.approx(0.0525), True)


def test_stable_needs_a_stable_verdict_the_theory_does_not_contradict() -> None:
    c = parse_criterion("stable")
    assert c.evaluate(summary("stable")) == ("stable", True)
    assert c.evaluate(summary("inconclusive")) == ("inconclusive", False)
    assert c.evaluate(summary("unstable")) == ("unstable", False)
    # Within the verdict's 1% tolerance above lambda*: the backlog grows, only slowly.
    assert c.evaluate(summary("stable", theory="unstable")) == (BEYOND_CAPACITY, False)
    assert c.evaluate(summary("stable", theory="feasible")) == ("stable", True)


def test_a_diverging_run_meets_no_latency_criterion() -> None:
    """Survivors of a diverging queue have fine latencies; they must not count."""
    c = parse_criterion("tbt_p99<=0.2")
    assert c.evaluate(summary("inconclusive")) == (0.15, True)
    assert c.evaluate(summary("unstable")) == (0.15, False)
    assert c.evaluate(summary("stable", theory="unstable")) == (0.15, False)


def test_a_statistic_not_measured_is_not_met() -> None:
    c = parse_criterion("ttft_p50<=100")
    assert c.evaluate(summary(ttft_ms=None)) == (None, False)
    assert c.evaluate(summary(ttft_ms={"mean": None, "p50": None})) == (None, False)


def two_classes(**strict: Any) -> list[dict[str, Any]]:
    args = {"tbt_p99_ms": 90.0, "ttft_p50_ms": 400.0, "attainment": 0.97, **strict}
    return [slo_class("strict", 0.1, 0.5, **args),
            slo_class("relaxed", 0.5, None, tbt_p99_ms=300.0, ttft_p50_ms=800.0,
                      attainment=0.99)]


def test_slo_criteria_hold_each_class_to_its_own_target() -> None:
    tbt = parse_criterion("tbt_p99<=slo")
    assert tbt.evaluate(summary(classes=two_classes())) == (
        {"strict": 0.09, "relaxed": 0.3}, True)
    # 0.3 s would break the strict target, but only the relaxed class has it.
    missed = tbt.evaluate(summary(classes=two_classes(tbt_p99_ms=110.0)))
    assert missed == ({"strict": pytest.approx(0.11), "relaxed": 0.3}, False)
    # A number applies to every class alike.
    assert parse_criterion("tbt_p99<=0.2").evaluate(summary(classes=two_classes()))[1]
    assert tbt.evaluate(summary("unstable", classes=two_classes()))[1] is False


def test_slo_ttft_needs_every_class_to_have_a_ttft_target() -> None:
    c = parse_criterion("ttft_p50<=slo")
    with pytest.raises(ConfigError) as info:
        c.evaluate(summary(classes=two_classes()))
    assert info.value.field == "criterion"
    assert info.value.reason == "ttft_p50<=slo: SLO class 'relaxed' has no TTFT target"
    # Even when an earlier class already missed its target, the missing one is an error.
    with pytest.raises(ConfigError):
        c.evaluate(summary(classes=two_classes(ttft_p50_ms=900.0)))
    classes = two_classes()
    classes[1]["ttft_target_s"] = 1.0
    assert c.evaluate(summary(classes=classes)) == ({"strict": 0.4, "relaxed": 0.8}, True)
    classes[0]["ttft_ms"] = None  # nothing of the strict class completed
    assert c.evaluate(summary(classes=classes)) == ({"strict": None, "relaxed": 0.8}, False)


@pytest.mark.parametrize("text", ["tbt_p99<=slo", "ttft_p50<=slo", "slo_attainment>=0.9"])
@pytest.mark.parametrize("classes", [None, []], ids=["absent", "empty"])
def test_slo_criteria_without_classes_are_config_errors(text: str, classes: object) -> None:
    s = summary() if classes is None else summary(classes=classes)
    with pytest.raises(ConfigError) as info:
        parse_criterion(text).evaluate(s)
    assert info.value.field == "criterion"
    assert "the run has no SLO classes" in info.value.reason


def test_slo_attainment_is_every_class_s() -> None:
    c = parse_criterion("slo_attainment>=0.98")
    assert c.evaluate(summary(classes=two_classes())) == (
        {"strict": 0.97, "relaxed": 0.99}, False)
    assert c.evaluate(summary(classes=two_classes(attainment=0.98)))[1] is True
    assert parse_criterion("slo_attainment>0.98").evaluate(
        summary(classes=two_classes(attainment=0.98)))[1] is False


def test_worst_value_over_seeds_follows_the_criterion_s_direction() -> None:
    assert parse_criterion("ttft_p50<=1").worst([0.2, 0.5, 0.3]) == 0.5
    assert parse_criterion("ttft_p50<=1").worst([0.2, None]) is None
    assert parse_criterion("slo_attainment>=0.9").worst(
        [{"a": 0.95, "b": 0.99}, {"a": 0.97, "b": 0.93}]) == {"a": 0.95, "b": 0.93}
    assert parse_criterion("stable").worst(["stable", "inconclusive", "stable"]) == "inconclusive"
    assert parse_criterion("stable").worst(["stable", BEYOND_CAPACITY]) == BEYOND_CAPACITY
    assert parse_criterion("stable").worst(["stable", "unstable", "inconclusive"]) == "unstable"

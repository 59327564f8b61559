"""``sweep``: a comparison at several loads, its statistic, its marks, its plot and its CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import servelab
import servelab.load_sweep
from servelab import ConfigError
from servelab.analysis.criteria import Statistic, parse_statistic
from servelab.load_sweep import plan_sweep, run_status, sweep
from servelab.report.plot import _colors, marker_style, spans_orders_of_magnitude
from servelab.report.sweep import load_line, sweep_text
from servelab.results import to_json
from servelab.simulation import prepare
from test_cli import assert_refused, ok_json, run

#: Short runs: 300 requests at each load (fixed, so every run is quick and deterministic).
QUICK = {"requests": 300, "seed": 1}
TWO = {"schedulers": ["sarathi", "vllm"], **QUICK}
LAMBDA = servelab.capacity({})["max_rate"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def swept() -> dict[str, Any]:
    return sweep({**TWO, "loads": [1.5, 0.3, 0.9]})


def without_wall(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary as JSON has it (NaN is null, so equal runs compare equal), less its time."""
    return {k: v for k, v in json.loads(to_json(summary)).items() if k != "wall_s"}


def test_a_sweep_is_a_comparison_at_each_load(swept: dict[str, Any]) -> None:
    assert swept["loads"] == [0.3, 0.9, 1.5]  # increasing, whatever the order given
    assert swept["schedulers"] == ["sarathi", "vllm"]
    assert (swept["metric"], swept["metric_unit"]) == ("ttft_p50", "s")
    assert swept["max_rate"] == pytest.approx(LAMBDA)
    assert [p["load"] for p in swept["points"]] == swept["loads"]
    for point in swept["points"]:
        assert point["rate"] == pytest.approx(point["load"] * LAMBDA)
        assert [s["scheduler"] for s in point["results"]] == ["sarathi", "vllm"]
        assert list(point["values"]) == list(point["status"]) == ["sarathi", "vllm"]
    # Each point is exactly `compare` at its load with the same seed.
    compared = servelab.compare({**TWO, "load": 0.9}).summaries
    assert [without_wall(s) for s in swept["points"][1]["results"]] == [
        without_wall(s) for s in compared]
    json.dumps(swept)  # plain data


def test_every_load_replays_one_request_stream_rescaled() -> None:
    """At a load every scheduler runs one Scenario (compare's guarantee); from one load to the
    next the arrivals are the same unit-rate gaps over the rate and the lengths the same."""
    plan = plan_sweep({**TWO, "prefill": "uniform:10,300", "decode": "geometric:50",
                       "loads": [0.2, 0.5, 0.8]})
    assert [c.seed for c in plan.configs] == [1, 1, 1]
    workloads = [(c.load, prepare(c).workload) for c in plan.configs]
    _, base = workloads[0]
    for load, w in workloads:
        np.testing.assert_allclose(w.arrival * load, base.arrival * 0.2, rtol=1e-12)
        np.testing.assert_array_equal(w.prompt, base.prompt)
        np.testing.assert_array_equal(w.output, base.output)


def test_values_are_the_metric_in_seconds(swept: dict[str, Any]) -> None:
    for point in swept["points"]:
        for s in point["results"]:
            p50 = (s["ttft_ms"] or {}).get("p50")  # no statistics where none completed
            value = point["values"][s["scheduler"]]
            assert value == (None if p50 is None or np.isnan(p50) else p50 / 1e3)
    assert any(v is not None for p in swept["points"] for v in p["values"].values())
    tbt = sweep({**TWO, "loads": [0.5], "metric": "tbt_p99"})["points"][0]
    assert tbt["values"] == {s["scheduler"]: s["tbt_ms"]["p99"] / 1e3 for s in tbt["results"]}


def test_a_metric_of_one_slo_class() -> None:
    config = {**TWO, "loads": [0.5], "slo": ["strict:0.3:tbt=0.1", "relaxed:0.7:tbt=0.5"],
              "metric": "ttft_p90:strict"}
    result = sweep(config)
    assert result["metric"] == "ttft_p90:strict"
    point = result["points"][0]
    for s in point["results"]:
        [strict] = [c for c in s["classes"] if c["name"] == "strict"]
        assert point["values"][s["scheduler"]] == strict["ttft_ms"]["p90"] / 1e3
        assert point["values"][s["scheduler"]] != s["ttft_ms"]["p90"] / 1e3


def test_statistics_parse_like_criteria_metrics() -> None:
    assert parse_statistic("ttft_p50") == Statistic("ttft_p50")
    assert parse_statistic(" TBT_p99 : strict ") == Statistic("tbt_p99", "strict")
    assert parse_statistic("e2e_mean").label == "E2E mean"
    assert parse_statistic("tbt_p99:strict").label == "TBT p99, class strict"
    for bad in ("ttft_p95", "slo_attainment", "stable", "ttft", "ttft_p50:", "", 5):
        with pytest.raises(ConfigError) as info:
            parse_statistic(bad)  # type: ignore[arg-type]
        assert info.value.field == "metric"


def test_runs_that_are_not_confidently_stable_are_marked(swept: dict[str, Any]) -> None:
    assert run_status({"verdict": "stable", "theory_verdict": "stable"}) == "stable"
    assert run_status({"verdict": "inconclusive", "theory_verdict": "stable"}) == "inconclusive"
    assert run_status({"verdict": "unstable", "theory_verdict": "stable"}) == "unstable"
    # Stable by its verdict, but beyond capacity: its backlog grows, only slowly.
    assert run_status({"verdict": "stable", "theory_verdict": "unstable"}) == "unstable"
    for point in swept["points"]:
        assert point["status"] == {s["scheduler"]: run_status(s) for s in point["results"]}
    assert set(swept["points"][-1]["status"].values()) == {"unstable"}  # load 1.5
    text = sweep_text(swept)
    [row] = [line for line in text.splitlines() if line.lstrip().startswith("1.5 ")]
    assert row.count("!") == 2
    assert "! unstable: the verdict or the theory says the queue grows" in text
    line = load_line(swept["points"][-1])
    assert line.startswith("load 1.5 (20.806 req/s): sarathi ")
    assert "(unstable)" in line and line.endswith(" s") and "2 run(s) in " in line


def test_plot_markers_and_scale() -> None:
    assert marker_style("stable", "red")["markerfacecolor"] == "red"
    for status in ("unstable", "inconclusive"):
        style = marker_style(status, "red")
        assert (style["markerfacecolor"], style["markeredgecolor"]) == ("white", "red")
    assert marker_style("inconclusive", "red")["marker"] != marker_style("unstable", "red")[
        "marker"]
    assert spans_orders_of_magnitude([0.2, 30.0]) and not spans_orders_of_magnitude([0.2, 3.0])
    assert not spans_orders_of_magnitude([])


def test_every_load_is_checked_before_the_first_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """At load 90, 10^6 s of arrivals would be 1.2 billion requests: refused before load
    0.001 (14,000 requests) runs."""
    def no_run(*args: Any) -> None:
        raise AssertionError("a run started")

    monkeypatch.setattr(servelab.load_sweep, "run_scheduler", no_run)
    with pytest.raises(ConfigError) as info:
        sweep({"schedulers": ["sarathi"], "duration": 1e6, "loads": [0.001, 90]})
    assert info.value.field == "duration"


@pytest.mark.parametrize(("config", "loads", "field"), [
    ({}, None, "loads"),
    ({"loads": []}, None, "loads"),
    ({"run.loads": [0.5, 0]}, None, "run.loads"),
    ({}, [0.5, 101], "loads"),
    ({}, "0.3,0.3", "loads"),
    ({"rate": 3}, [0.5], "rate"),
    ({"load": 0.9, "run.loads": [0.5]}, None, "load"),
    ({"loads": [0.5], "metric": "ttft_p95"}, None, "metric"),
    ({"loads": [0.5], "metric": "ttft_p50:strict"}, None, "metric"),
    ({"loads": [0.5], "criteria": ["stable"]}, None, "criteria"),
    ({"loads": [0.5], "run.seeds": 2}, None, "run.seeds"),
    ({"loads": [0.5], "schedulers": ["sarathi"], "kp": 2}, None, "kp"),
])
def test_bad_sweeps_are_refused(config: dict[str, Any], loads: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        sweep({**QUICK, **config}, loads)
    assert info.value.field == field


def test_commands_of_one_rate_refuse_the_sweep_settings() -> None:
    for call in (servelab.simulate, servelab.compare, servelab.capacity):
        for setting in ({"loads": [0.5]}, {"run.metric": "ttft_p50"}):
            with pytest.raises(ConfigError) as info:
                call({**QUICK, "rate": 5, **setting})
            assert info.value.field == next(iter(setting))


# The command line.

QUICK_ARGS = ["--requests", "300", "--seed", "1"]
ARGS = ["sweep", "--schedulers", "sarathi,vllm", "--loads", "0.3,0.9,1.5", *QUICK_ARGS]


def test_cli_json_out_and_plot(tmp_path: Path, swept: dict[str, Any]) -> None:
    out = tmp_path / "sweep"
    proc = run(*ARGS, "--json", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # progress goes to a terminal only
    printed = json.loads(proc.stdout)
    assert sorted(p.name for p in out.iterdir()) == ["sweep.json", "sweep.png"]
    assert (out / "sweep.png").read_bytes()[:8] == PNG
    saved = json.loads((out / "sweep.json").read_text())
    assert printed.pop("plot") == str(out / "sweep.png") and "plot" not in saved
    assert [p.pop("wall_s") for p in printed["points"]] and printed.pop("wall_s")
    for point in saved["points"]:
        point.pop("wall_s")
    saved.pop("wall_s")
    assert printed == saved
    assert printed["points"][0]["values"] == swept["points"][0]["values"]  # = the library's


def test_cli_text_and_a_plot_elsewhere(tmp_path: Path) -> None:
    proc = run(*ARGS, "--metric", "tbt_p99", "--plot", "sweep.svg", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == ("servelab sweep: sarathi, vllm at loads 0.3, 0.9, 1.5; tbt_p99 in "
                        "seconds")
    header = next(line for line in lines if line.startswith("load "))
    assert header.split() == ["load", "rate", "theory", "sarathi", "vllm"]
    rows = [line.split()[0] for line in lines if line[:5].strip() in ("0.3", "0.9", "1.5")]
    assert rows == ["0.3", "0.9", "1.5"]
    assert lines[-1] == "plot: sweep.svg"
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.svg"]
    assert (tmp_path / "sweep.svg").read_text().lstrip().startswith("<?xml")
    alone = run(*ARGS, cwd=tmp_path)
    assert alone.stdout.splitlines()[-1] == "plot: none (give --plot FILE or --out DIR)"
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.svg"]  # no plot by default


BAD_SWEEPS = [
    (["--loads", "0.3", "--rate", "3"], "rate"),
    (["--loads", "0.3", "--load", "0.5"], "load"),
    (["--loads", "0,0.5"], "loads"),
    (["--loads", "200"], "loads"),
    (["--loads", "0.3,abc"], "loads"),
    (["--loads", "0.3,0.3"], "loads"),
    ([], "loads"),
    (["--loads", "0.3", "--metric", "ttft_p95"], "metric"),
    (["--loads", "0.3", "--metric", "goodput"], "metric"),
    (["--loads", "0.3", "--metric", "ttft_p50:strict"], "metric"),
    (["--loads", "0.3", "--set", "criteria=[stable]"], "criteria"),
    (["--loads", "0.3", "--plot", "sweep.txt"], "plot"),
    (["--loads", "0.3", "--out", ""], "out"),
    (["--loads", "0.3", "--schedulers", "sarathi", "--kp", "2"], "kp"),
]


@pytest.mark.parametrize(("args", "field"), BAD_SWEEPS, ids=[" ".join(a) for a, _ in BAD_SWEEPS])
def test_bad_sweep_input_is_one_line_exit_2(args: list[str], field: str,
                                            tmp_path: Path) -> None:
    extra = [] if "--out" in args else ["--out", "out"]
    assert_refused(run("sweep", "--requests", "300", *args, *extra, cwd=tmp_path), field)
    assert list(tmp_path.iterdir()) == []


def test_simulate_and_compare_refuse_loads_from_the_command_line() -> None:
    assert_refused(run("simulate", "--rate", "3", "--set", "loads=[0.5]"), "loads")
    assert_refused(run("compare", "--set", "run.loads=0.5"), "run.loads")
    assert_refused(run("simulate", "--rate", "3", "--set", "run.metric=tbt_p99"), "run.metric")


def test_one_scheduler_sweeps_too() -> None:
    result = ok_json("sweep", "--schedulers", "orca", "--loads", "0.5", *QUICK_ARGS)
    assert result["schedulers"] == ["orca"]
    assert result["plot"] is None



def test_progress_is_one_line_per_load_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from servelab import cli

    seen: list[dict[str, Any]] = []
    sweep({**TWO, "loads": [0.3, 0.9]}, on_load=seen.append)
    assert [p["load"] for p in seen] == [0.3, 0.9]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert cli.main(ARGS) == 0
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["load 0.3", "load 0.9", "load 1.5"]


def test_each_scheduler_gets_its_own_colour_when_the_cycle_is_rgb() -> None:
    """Some styles give the colour cycle as RGB tuples; sarathi-spf once took sarathi's blue."""
    cycle = [(0.12156862745098039, 0.4666666666666667, 0.7058823529411765),  # '#1f77b4'
             (1.0, 0.4980392156862745, 0.054901960784313725)]                 # '#ff7f0e'
    colors = _colors(["sarathi", "sarathi-spf", "slai"], cycle)
    assert colors["sarathi"] == "#1f77b4"
    assert len(set(colors.values())) == 3

"""Experiments of many runs from one file: ``servelab run FILE`` with ``loads`` (a sweep),
``criteria`` (a capacity search per scheduler) or both; and ``capacity_searches``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import servelab
from servelab import ConfigError, SimConfig
from test_capacity_search import Boundary
from test_cli import assert_refused, ok_json, run

SCHEDULERS = "schedulers: [sarathi, vllm]\nseed: 3\n"
#: A sweep of short fixed runs.
SWEEP = f"{SCHEDULERS}requests: 300\nloads: [0.5, 0.9]\n"
#: Searches for stability: auto runs up to 20,000 requests, one seed, a 20 % bracket.
SEARCH = (f"{SCHEDULERS}max_requests: 20000\n"
          "run: {criteria: [stable], seeds: 1, tolerance: 0.2}\n")
BOTH = f"{SEARCH}loads: [0.5, 0.9]\n"


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


def points(sweep: dict[str, Any]) -> list[tuple[float, dict, dict]]:
    return [(p["load"], p["values"], p["status"]) for p in sweep["points"]]


def test_a_file_with_loads_runs_the_sweep(tmp_path: Path) -> None:
    payload = ok_json("run", write(tmp_path, SWEEP))
    assert list(payload) == ["sweep"]
    flags = ok_json("sweep", "--schedulers", "sarathi,vllm", "--seed", "3", "--requests", "300",
                    "--loads", "0.9,0.5")
    assert points(payload["sweep"]) == points(flags)
    assert payload["sweep"]["plot"] is None
    overridden = ok_json("run", write(tmp_path, SWEEP), "--set", "run.loads=[0.7]")
    assert overridden["sweep"]["loads"] == [0.7]


def test_a_file_with_criteria_searches_for_each_scheduler(tmp_path: Path) -> None:
    payload = ok_json("run", write(tmp_path, SEARCH))
    assert list(payload) == ["capacity_searches"]
    sarathi, vllm = payload["capacity_searches"]
    assert (sarathi["scheduler"], vllm["scheduler"]) == ("sarathi", "vllm")
    for search in (sarathi, vllm):
        assert search["seeds"] == [3] and search["tolerance"] == 0.2
        assert [c["text"] for c in search["criteria"]] == ["stable"]
    # Sarathi is work-conserving: stable at every load below 1 (Li-Dai-Peng Theorem 2), so
    # the search ends within its 20 % bracket of lambda*; vLLM stalls decodes behind whole
    # prompts and loses stability well inside capacity.
    assert sarathi["max_load"] > 1 / 1.2
    assert vllm["max_load"] < sarathi["max_load"]
    # The same search as the command's, its criteria from flags or from --set alike.
    common = ["--scheduler", "vllm", "--seed", "3", "--max-requests", "20000", "--seeds", "1",
              "--tolerance", "0.2"]
    flags = ok_json("capacity-search", *common, "--criterion", "stable")
    setting = ok_json("capacity-search", *common, "--set", "criteria=[stable]")
    for result in (flags, setting):
        assert [p["rate"] for p in result["probes"]] == [p["rate"] for p in vllm["probes"]]
        assert result["max_rate"] == vllm["max_rate"]


def test_a_file_with_both_sweeps_then_searches(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run("run", write(tmp_path, BOTH), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "sarathi", "sarathi/capacity_search.json", "sweep.json", "sweep.png", "vllm",
        "vllm/capacity_search.json"]
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    heads = [line for line in proc.stdout.splitlines() if line.startswith("servelab ")]
    assert heads[0].startswith("servelab sweep: sarathi, vllm at loads 0.5, 0.9;")
    assert [h.split(";")[0] for h in heads[1:]] == ["servelab capacity-search: sarathi",
                                                    "servelab capacity-search: vllm"]
    assert f"plot: {out / 'sweep.png'}" in proc.stdout
    payload = ok_json("run", write(tmp_path, BOTH))
    assert list(payload) == ["sweep", "capacity_searches"]
    swept = json.loads((out / "sweep.json").read_text())
    assert points(swept) == points(payload["sweep"])
    saved = json.loads((out / "vllm" / "capacity_search.json").read_text())
    assert saved["max_rate"] == payload["capacity_searches"][1]["max_rate"]
    # --set drops a part: the searches' settings go with it.
    alone = ok_json("run", write(tmp_path, BOTH), "--set", "run.criteria=null", "--set",
                    "seeds=null", "--set", "tolerance=null", "--set", "max_requests=null",
                    "--set", "requests=300")
    assert list(alone) == ["sweep"]


REFUSED = [
    # A setting of one experiment where there is none of that kind: it would do nothing.
    ("rate: 5\nrequests: 300\nmetric: tbt_p99\n", [], "metric"),
    (f"{SCHEDULERS}load: 0.5\nrequests: 300\nrun.seeds: 2\n", [], "run.seeds"),
    (f"{SWEEP}seeds: 2\n", [], "seeds"),
    (f"{SEARCH}metric: tbt_p99\n", [], "metric"),
    (f"{SWEEP}rate: 3\n", [], "rate"),
    (f"{SEARCH}load: 0.5\n", [], "load"),
    (SEARCH, ["--plot", "p.png"], "plot"),
    (SWEEP, ["--plot", "p.txt"], "plot"),
    # Mistakes in either part, found before the sweep (the first part) runs.
    (f"{BOTH}workload.decode: 0\n", [], "workload.decode"),
    (SWEEP + "criteria: [tbt_p99<=slo]\n", [], "criteria"),
    (BOTH + "scheduler.kp: 2\n", [], "scheduler.kp"),
    (BOTH, ["--set", "run.tolerance=2"], "run.tolerance"),
    (BOTH, ["--set", "scheduler=orca"], "scheduler"),
]


@pytest.mark.parametrize(("text", "args", "field"), REFUSED,
                         ids=[f"{t.splitlines()[-1]} {' '.join(a)}" for t, a, _ in REFUSED])
def test_refused_before_any_run(text: str, args: list[str], field: str, tmp_path: Path) -> None:
    assert_refused(run("run", write(tmp_path, text), *args, "--out", "out", cwd=tmp_path), field)
    assert [p.name for p in tmp_path.iterdir()] == ["exp.yaml"]


def test_capacity_searches_give_each_scheduler_its_options() -> None:
    seen: list[tuple[str | None, dict[str, Any]]] = []
    probes: list[dict[str, Any]] = []

    def fake(config: SimConfig) -> Mapping[str, Any]:
        seen.append((config.scheduler, dict(config.scheduler_options)))
        return Boundary(0.8)(config)

    results = servelab.capacity_searches({"schedulers": ["kfcfs", "sarathi"], "kp": 2,
                                          "seeds": 1}, ["stable"], run=fake,
                                         on_probe=probes.append)
    assert [r["scheduler"] for r in results] == ["kfcfs", "sarathi"]
    assert dict(seen) == {"kfcfs": {"kp": 2}, "sarathi": {}}
    assert [p["scheduler"] for p in probes] == (
        ["kfcfs"] * len(results[0]["probes"]) + ["sarathi"] * len(results[1]["probes"]))
    one = servelab.capacity_searches({"scheduler": "orca", "criteria": ["stable"], "seeds": 1},
                                     run=fake)
    assert [(r["scheduler"], r["seeds"]) for r in one] == [("orca", [0])]
    with pytest.raises(ConfigError) as info:  # none of them takes it: refused before any run
        servelab.capacity_searches({"schedulers": ["orca", "sarathi"], "kp": 2}, ["stable"],
                                   run=fake)
    assert info.value.field == "kp"  # as written


def test_an_experiment_needs_loads_or_criteria() -> None:
    with pytest.raises(ConfigError) as info:
        servelab.run_experiment({"rate": 3})
    assert info.value.field == "loads"

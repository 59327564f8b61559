"""The command line through its real entry point: every command, every bad-input case."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SMALL = ["--rate", "10", "--requests", "300", "--seed", "1"]


def servelab_command() -> list[str]:
    """The installed console script when there is one, else ``python -m servelab``."""
    script = Path(sys.executable).parent / "servelab"
    found = shutil.which("servelab")
    if script.exists():
        return [str(script)]
    return [found] if found else [sys.executable, "-m", "servelab"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*servelab_command(), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120, check=False)


def ok_json(*args: str, cwd: Path | None = None) -> object:
    proc = run(*args, "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_presets_lists_the_shipped_presets() -> None:
    rows = ok_json("presets")
    names = {r["name"] for r in rows}
    assert {"codellama-34b-a100", "mistral-7b-rtx6000ada", "unit"} <= names
    codellama = next(r for r in rows if r["name"] == "codellama-34b-a100")
    assert codellama["tokens_per_s"] == pytest.approx(512 / 0.15316)
    text = run("presets").stdout
    assert "codellama-34b-a100" in text and "staircase" in text


def test_capacity_json_contract() -> None:
    c = ok_json("capacity", "--preset", "codellama-34b-a100", "--budget", "512",
                "--prefill", "129", "--decode", "112", "--rate", "12")
    assert c["tokens_per_s"] == pytest.approx(512 / 0.15316)
    assert c["max_rate"] == pytest.approx(512 / 0.15316 / 241)
    assert c["load"] == pytest.approx(12 / c["max_rate"])
    assert "load" not in ok_json("capacity", "--prefill", "129", "--decode", "112")


def test_capacity_with_kmax_reports_the_region() -> None:
    c = ok_json("capacity", "--budget", "1024", "--kmax", "100", "--prefill", "290",
                "--decode", "990", "--rate", str(1 / 0.4675))
    region = c["kmax_region"]
    assert region["load"] == pytest.approx(1.0, abs=1e-6)
    assert region["max_rate"] == pytest.approx(1 / 0.4675, rel=1e-6)
    assert region["prompt_tokens_assumed"] == 290
    assert region["assumption"] == "every prompt has 290 tokens"
    assert "region vertices" in run("capacity", "--kmax", "100", "--rate", "1").stdout


def test_capacity_region_for_short_prompts_and_its_fluid_slope() -> None:
    """Issue 7.5's case: 8-token prompts fill a request slot each, so 4 requests per 23 ms."""
    c = ok_json("capacity", "--preset", "mistral-7b-rtx6000ada", "--kmax", "32", "--prefill",
                "8", "--decode", "8", "--rate", "190")
    region = c["kmax_region"]
    assert region["max_rate"] == pytest.approx(4 / 0.023, rel=1e-9)
    assert region["load"] == pytest.approx(190 / (4 / 0.023), rel=1e-9)
    slope = (190 - 4 / 0.023) * 15  # the excess requests/s, 15 token slots each
    assert region["fluid_slope_tokens_per_s"] == pytest.approx(slope, rel=1e-9)
    assert c["fluid_slope_tokens_per_s"] == region["fluid_slope_tokens_per_s"]
    assert c["load"] == pytest.approx(190 / c["max_rate"])  # still the token capacity's
    assert c["verdict"] == "unstable"


def test_capacity_region_states_its_prompt_assumption_for_a_distribution() -> None:
    c = ok_json("capacity", "--kmax", "32", "--prefill", "uniform:1,15", "--decode", "8",
                "--rate", "100")
    assert c["kmax_region"]["prompt_tokens_assumed"] == 8
    assert "mean 8 tokens" in c["kmax_region"]["assumption"]
    assert "if every prompt had the mean length" in c["verdict_reason"]
    assert "mean 8 tokens" in run("capacity", "--kmax", "32", "--prefill", "uniform:1,15").stdout


THEORY_ANSWERS = [
    (["--load", "0.9"], "stable", "Theorem 2"),
    (["--load", "1.1"], "unstable", "no scheduler can keep up"),
    (["--kmax", "8", "--load", "0.9"], "unstable", "outside the k_max region"),
    (["--kmax", "100", "--budget", "128", "--prefill", "290", "--decode", "990", "--rate", "2"],
     "feasible", "point C"),
]


@pytest.mark.parametrize(("args", "verdict", "reason"), THEORY_ANSWERS,
                         ids=[" ".join(a) for a, _, _ in THEORY_ANSWERS])
def test_capacity_gives_one_answer(args: list[str], verdict: str, reason: str) -> None:
    """Issue 7.6: one verdict, the k_max region's when there is one, said once."""
    c = ok_json("capacity", *args)
    assert (c["verdict"], c.get("kmax_region", {}).get("inside")) == (
        verdict, None if "--kmax" not in args else verdict == "feasible")
    assert reason in c["verdict_reason"]
    text = run("capacity", *args).stdout
    answers = [line for line in text.splitlines()
               if re.search(r"\b(stable|unstable|feasible|theorem)\b", line, re.IGNORECASE)]
    assert answers == [f"verdict   {verdict.upper()}: {c['verdict_reason']}"]


def test_capacity_without_a_rate_gives_no_verdict() -> None:
    c = ok_json("capacity", "--kmax", "8")
    assert "verdict" not in c and "verdict_reason" not in c
    assert c["kmax_region"]["max_rate"] > 0 and "load" not in c["kmax_region"]
    assert "verdict" not in run("capacity", "--kmax", "8").stdout


SIMULATE_KEYS = {"scheduler", "rate", "load", "capacity", "verdict", "backlog_slope_tokens_per_s",
                 "fluid_slope_tokens_per_s", "throughput", "completed", "iterations", "ttft_ms",
                 "tbt_ms", "e2e_ms", "wall_s", "in_flight", "convention"}


def test_simulate_json_contract() -> None:
    s = ok_json("simulate", "--preset", "codellama-34b-a100", "--scheduler", "sarathi",
                "--budget", "512", "--prefill", "129", "--decode", "112", *SMALL,
                "--arrivals", "gamma:2", "--convention", "engine")
    assert s.keys() >= SIMULATE_KEYS
    assert {"tokens_per_s", "max_rate"} <= s["capacity"].keys()
    assert {"tokens_per_s", "requests_per_s"} <= s["throughput"].keys()
    for key in ("ttft_ms", "tbt_ms", "e2e_ms"):
        assert set(s[key]) == {"mean", "p50", "p90", "p99"}
    assert s["verdict"] in ("stable", "unstable", "inconclusive")
    assert s["convention"] == "engine"
    assert s["completed"] + s["in_flight"] == 300


def test_simulate_table_prints_theory_beside_measurement() -> None:
    proc = run("simulate", "--scheduler", "orca", *SMALL)
    assert proc.returncode == 0, proc.stderr
    assert "theory" in proc.stdout and "verdict" in proc.stdout and "TTFT" in proc.stdout


@pytest.mark.parametrize("kmax", [[], ["--kmax", "8"]], ids=["tokens", "kmax"])
def test_simulate_states_the_theory_answer_once(kmax: list[str]) -> None:
    """The theory's verdict (Theorem 2's, or the k_max region's) is one line of the theory
    block, and the measured line's fluid slope is the one that verdict rests on."""
    s = ok_json("simulate", *SMALL, *kmax)
    text = run("simulate", *SMALL, *kmax).stdout.splitlines()
    theory = text[text.index(next(x for x in text if x.startswith("theory"))):
                  text.index(next(x for x in text if x.startswith("measured")))]
    answers = [x for x in theory
               if re.search(r"\b(stable|unstable|feasible)\b", x, re.IGNORECASE)]
    assert answers == [f"          {s['theory_verdict'].upper()}: {s['theory_verdict_reason']}"]
    assert s["theory_verdict"] == ("unstable" if kmax else "stable")
    assert ("Theorem 2" in s["theory_verdict_reason"]) == (not kmax)
    fluid = f"fluid {s['fluid_slope_tokens_per_s']:,.1f})"
    assert fluid in next(x for x in text if x.startswith("measured"))
    if kmax:
        assert s["fluid_slope_tokens_per_s"] == s["kmax_region"]["fluid_slope_tokens_per_s"] > 0


def test_simulate_out_writes_three_files(tmp_path: Path) -> None:
    out = tmp_path / "run1"
    proc = run("simulate", "--scheduler", "vllm", *SMALL, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["backlog.csv", "requests.csv",
                                                     "summary.json"]
    header = (out / "requests.csv").read_text().splitlines()[0].split(",")
    assert {"arrival_s", "first_token_s", "finish_s", "prompt_tokens", "output_tokens"} <= set(
        header)
    assert len((out / "requests.csv").read_text().splitlines()) == 301
    assert json.loads((out / "summary.json").read_text())["scheduler"] == "vllm"
    again = run("simulate", "--scheduler", "vllm", *SMALL, "--out", str(out))
    assert again.returncode == 2 and again.stderr.startswith("error: out:")


def test_compare_json_and_out(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    payload = ok_json("compare", "--schedulers", "sarathi,vllm", *SMALL, "--out", str(out))
    assert [s["scheduler"] for s in payload["results"]] == ["sarathi", "vllm"]
    assert payload["theory"]["theory_verdict"] == "stable"
    assert payload["theory"]["kmax_region"] is None
    assert {"compare.json", "backlog.png", "sarathi", "vllm"} == {p.name for p in out.iterdir()}
    assert (out / "backlog.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "sarathi" / "summary.json").exists()


@pytest.mark.slow
def test_compare_without_options_is_the_figure_1_demo(tmp_path: Path) -> None:
    proc = run("compare", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()
            if line.split() and line.split()[0] in ("fastertransformer", "vllm", "orca",
                                                     "sarathi", "kfcfs")}
    assert rows == {"fastertransformer": "unstable", "vllm": "unstable", "orca": "stable",
                    "sarathi": "stable", "kfcfs": "stable"}
    assert "load 0.900" in proc.stdout
    assert (tmp_path / "servelab-compare.png").stat().st_size > 10_000


def test_run_experiment_file_with_overrides(tmp_path: Path) -> None:
    (tmp_path / "exp.yaml").write_text(
        "scheduler: orca\nrate: 8\nrequests: 200\nprefill: uniform:16,64\ndecode: poisson:20\n")
    s = ok_json("run", str(tmp_path / "exp.yaml"), "--set", "scheduler=sarathi",
                "--set", "seed=5")
    assert s["scheduler"] == "sarathi" and s["workload"]["seed"] == 5
    (tmp_path / "cmp.yaml").write_text("schedulers: [orca, kfcfs]\nload: 0.5\nrequests: 200\n")
    payload = ok_json("run", str(tmp_path / "cmp.yaml"), "--plot", str(tmp_path / "p.png"))
    assert [s["scheduler"] for s in payload["results"]] == ["orca", "kfcfs"]


def test_trace_and_preset_file(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens,extra\n"
                     + "".join(f"{i * 0.2},{50 + i % 7},{10 + i % 5},x\n" for i in range(100)))
    (tmp_path / "gpu.yaml").write_text(
        "name: my-gpu\nbudget: 256\ntiming: {model: affine, alpha_ms: 5, beta_prefill_ms: 0.1,"
        " beta_decode_ms: 0.2, gamma_ms: 0.01}\n")
    s = ok_json("simulate", "--preset-file", str(tmp_path / "gpu.yaml"), "--scheduler",
                "sarathi", "--trace", str(trace))
    assert s["preset"] == "my-gpu" and s["budget"] == 256
    assert s["completed"] + s["in_flight"] == 100
    assert s["rate"] == pytest.approx(99 / (99 * 0.2))


BAD_INPUTS = [
    (["simulate", "--scheduler", "nope", "--rate", "1"], "scheduler"),
    (["simulate", "--preset", "nope", "--rate", "1"], "preset"),
    (["simulate", "--rate", "0"], "rate"),
    (["simulate", "--rate", "-3"], "rate"),
    (["simulate", "--rate", "fast"], "rate"),
    (["simulate"], "rate"),
    (["simulate", "--rate", "1", "--budget", "0"], "budget"),
    (["simulate", "--rate", "1", "--prefill", "poisson:"], "prefill"),
    (["simulate", "--rate", "1", "--decode", "lognormal:mean=3"], "decode"),
    (["simulate", "--rate", "1", "--prefill", "-5"], "prefill"),
    (["simulate", "--rate", "1", "--arrivals", "gamma:-1"], "arrivals"),
    (["simulate", "--trace", "/nonexistent/trace.csv"], "trace"),
    (["simulate", "--rate", "1", "--requests", "2.5"], "requests"),
    (["simulate", "--rate", "1", "--scheduler", "vllm", "--prefill", "600"], "prefill"),
    (["simulate", "--rate", "1", "--bogus"], "arguments"),
    (["capacity", "--preset-file", "/nonexistent.yaml"], "preset-file"),
    (["capacity", "--budget", "2000000", "--kmax", "8", "--rate", "1"], "budget"),
    (["run", "/nonexistent/exp.yaml"], "file"),
    (["frobnicate"], "command"),
]


@pytest.mark.parametrize(("args", "field"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(args: list[str], field: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run(*args, "--out", str(out)) if args[0] == "simulate" else run(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {field}: "), lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not out.exists()


def test_bad_trace_files(tmp_path: Path) -> None:
    missing_column = tmp_path / "a.csv"
    missing_column.write_text("arrived_at,num_prefill_tokens\n0.1,5\n")
    unreadable = tmp_path / "dir.csv"
    unreadable.mkdir()
    negative = tmp_path / "neg.csv"
    negative.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.1,-5,3\n")
    for path in (missing_column, unreadable, negative):
        proc = run("simulate", "--trace", str(path))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: trace: ") and len(proc.stderr.splitlines()) == 1

"""The command line through its real entry point: every command, every bad-input case."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from servelab.build import build_kind
from servelab.workload.lengths import parse_lengths

SMALL = ["--rate", "10", "--requests", "300", "--seed", "1"]
ROOT = Path(__file__).resolve().parent.parent


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
                 "tbt_ms", "e2e_ms", "wall_s", "in_flight", "convention", "build"}


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


def test_simulate_draws_sharegpt_pairs() -> None:
    args = ["simulate", "--prefill", "sharegpt", "--decode", "sharegpt", "--load", "0.5",
            "--requests", "2000"]
    proc = run(*args, "--json")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    s = json.loads(proc.stdout)
    assert s["workload"]["prefill"] == s["workload"]["decode"] == "sharegpt"
    assert s["arrived"] == 2000
    assert s["mean_prefill_tokens"] == parse_lengths("sharegpt", "prefill").mean
    assert s["mean_decode_tokens"] == parse_lengths("sharegpt", "decode").mean
    assert "prefill sharegpt, decode sharegpt; mean 110.5 + 300.4 tokens" in run(*args).stdout


def test_simulate_table_prints_theory_beside_measurement() -> None:
    proc = run("simulate", "--scheduler", "orca", *SMALL)
    assert proc.returncode == 0, proc.stderr
    assert "theory" in proc.stdout and "verdict" in proc.stdout and "TTFT" in proc.stdout


def test_simulate_runs_until_sure_by_default_and_says_so() -> None:
    proc = run("simulate", "--load", "0.9", "--seed", "206", "--scheduler", "orca")
    assert proc.returncode == 0, proc.stderr
    assert "verdict STABLE" in proc.stdout
    assert "run       auto: 10,000 requests, grown from 5,000 in 2 steps, until the verdict " \
           "was confident" in proc.stdout
    assert "arrived 12.574 req/s (load 0.906" in proc.stdout
    capped = run("simulate", "--load", "0.995", "--max-requests", "20000", "--seed", "1")
    assert "verdict INCONCLUSIVE: load 0.995 is within 0.5% of capacity; 20,000 requests " \
           "cannot resolve it" in capped.stdout


def test_unstable_runs_warn_that_latencies_describe_survivors(tmp_path: Path) -> None:
    proc = run("simulate", "--scheduler", "vllm", "--load", "0.9", "--seed", "21")
    assert "verdict UNSTABLE" in proc.stdout
    note = [line for line in proc.stdout.splitlines() if line.startswith("note")]
    assert len(note) == 1
    assert "latencies describe the 2,567 completed requests only; 2,433 are still in " \
           "flight" in note[0]
    assert "note" not in run("simulate", "--load", "0.5", "--requests", "5000").stdout
    compared = run("compare", "--schedulers", "vllm,sarathi", "--load", "0.9", "--plot",
                   str(tmp_path / "plot.png"))
    assert "note      vllm: unstable, so their latencies describe completed requests only" \
        in compared.stdout


@pytest.mark.parametrize("kmax", [[], ["--kmax", "8"]], ids=["tokens", "kmax"])
def test_simulate_states_the_theory_answer_once(kmax: list[str]) -> None:
    """The theory's verdict (Theorem 2's, or the k_max region's) is one line of the theory
    block, and the measured line's fluid slope is the one that verdict rests on."""
    args = ["--rate", "10", "--requests", "6000", *kmax]  # long enough to be measured
    s = ok_json("simulate", *args)
    text = run("simulate", *args).stdout.splitlines()
    theory = text[text.index(next(x for x in text if x.startswith("theory"))):
                  text.index(next(x for x in text if x.startswith("measured")))]
    answers = [x for x in theory
               if re.search(r"\b(stable|unstable|feasible)\b", x, re.IGNORECASE)]
    assert answers == [f"          {s['theory_verdict'].upper()}: {s['theory_verdict_reason']}"]
    assert s["theory_verdict"] == ("unstable" if kmax else "stable")
    assert ("Theorem 2" in s["theory_verdict_reason"]) == (not kmax)
    fluid = f"fluid {s['fluid_slope_tokens_per_s']:,.1f}"
    measured = text[text.index(next(x for x in text if x.startswith("measured"))):
                    text.index(next(x for x in text if x.startswith("run")))]
    assert sum(x.endswith(fluid) for x in measured) == 1
    if kmax:
        assert s["fluid_slope_tokens_per_s"] == s["kmax_region"]["fluid_slope_tokens_per_s"] > 0


def test_results_get_the_permissions_of_any_new_file(tmp_path: Path) -> None:
    """Written under a private temporary name, results must not stay private after the
    rename: the folder and plot get what the umask gives a plain create."""
    umask = os.umask(0o022)
    try:
        out, plot = tmp_path / "cmp", tmp_path / "plot.png"
        assert run("compare", "--schedulers", "sarathi", *SMALL, "--out", str(out)).returncode == 0
        assert run("compare", "--schedulers", "sarathi", *SMALL, "--plot", str(plot)).returncode \
            == 0
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o755
    assert plot.stat().st_mode & 0o777 == 0o644


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
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["scheduler"], summary["build"]) == ("vllm", build_kind())
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
    assert json.loads((out / "sarathi" / "summary.json").read_text())["build"] == build_kind()
    assert [s["build"] for s in json.loads((out / "compare.json").read_text())] == [
        build_kind()] * 2


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


def test_settings_by_dotted_path_in_files_and_overrides(tmp_path: Path) -> None:
    """Sections, dotted keys and flat names mix; --set replaces a setting however written."""
    (tmp_path / "exp.yaml").write_text(
        "scheduler: {name: kfcfs, kp: 2}\nworkload: {rate: 8, prefill: 64}\nrun.requests: 200\n")
    s = ok_json("run", str(tmp_path / "exp.yaml"), "--set", "rate=9", "--set",
                "scheduler.priority=prefill")
    assert s["rate"] == 9 and s["workload"]["prefill"] == "64"
    assert s["scheduler_options"] == {"priority": "prefill", "kp": 2, "kd": None}
    proc = run("run", str(tmp_path / "exp.yaml"), "--set", "scheduler.kp=0")
    assert_refused(proc, "scheduler.kp")
    s = ok_json("simulate", *SMALL, "--scheduler", "kfcfs", "--set", "scheduler.kd=3")
    assert s["scheduler_options"]["kd"] == 3


def test_help_lists_every_scheduler_option() -> None:
    text = run("simulate", "--help").stdout
    assert "--set scheduler.OPTION=VALUE" in text
    assert all(knob in text for knob in ("chunked_prefill", "order", "priority", "kp", "kd"))


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
    longer = run("simulate", "--trace", str(trace), "--requests", "101")
    assert longer.returncode == 2
    assert longer.stderr == "error: requests: the trace has 100 requests, fewer than the 101 " \
                            "asked for\n"


def test_an_auto_run_checks_every_prompt_it_may_draw_before_any_work(tmp_path: Path) -> None:
    """Found by review: vllm never splits a prompt; a 599-token one beyond the first auto step
    used to end a finished comparison with an error and lose it."""
    out = tmp_path / "o3"
    proc = run("compare", "--schedulers", "sarathi,vllm", "--load", "0.6", "--prefill",
               "lognormal:median=100,sigma=0.5", "--budget", "590", "--out", str(out))
    assert proc.returncode == 2 and proc.stderr.startswith("error: prefill: a prompt of ")
    assert "an auto run may draw" in proc.stderr and not out.exists()


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
    (["simulate", "--rate", "1", "--requests", "0"], "requests"),
    (["simulate", "--rate", "1", "--requests", "autox"], "requests"),
    (["simulate", "--rate", "1", "--requests", "auto", "--duration", "5"], "requests"),
    (["simulate", "--rate", "1", "--requests", "100", "--max-requests", "1000"], "max_requests"),
    (["simulate", "--rate", "1", "--duration", "10", "--max-requests", "1000"], "max_requests"),
    (["simulate", "--rate", "1", "--max-requests", "0"], "max_requests"),
    (["simulate", "--load", "0.9", "--max-requests", "1"], "max_requests"),
    (["simulate", "--rate", "1", "--scheduler", "vllm", "--prefill", "600"], "prefill"),
    (["simulate", "--rate", "1", "--prefill", "sharegpt:max_prompt=0"], "prefill"),
    (["simulate", "--rate", "1", "--prefill", "sharegpt:max_total=99", "--decode",
      "sharegpt:max_total=98"], "decode"),
    (["simulate", "--rate", "1", "--set", "workload.decode=sharegpt:bogus=1"],
     "workload.decode"),
    (["simulate", "--rate", "1", "--bogus"], "arguments"),
    (["capacity", "--preset-file", "/nonexistent.yaml"], "preset-file"),
    (["capacity", "--budget", "2000000", "--kmax", "8", "--rate", "1"], "budget"),
    (["run", "/nonexistent/exp.yaml"], "file"),
    (["frobnicate"], "command"),
    # Magnitudes that cannot be simulated meaningfully, refused before any work.
    (["simulate", "--rate", "1e308"], "rate"),
    (["capacity", "--rate", "1e308"], "rate"),
    (["simulate", "--rate", "1e6"], "rate"),
    (["simulate", "--load", "1e-300"], "load"),
    (["simulate", "--rate", "10", "--requests", "1e12"], "requests"),
    (["simulate", "--rate", "10", "--duration", "1e9"], "duration"),
    (["simulate", "--rate", "10", "--duration", "1e7"], "duration"),
    (["simulate", "--rate", "10", "--requests", "1"], "requests"),
    (["capacity", "--budget", "1e12", "--kmax", "5", "--rate", "1"], "budget"),
    (["capacity", "--kmax", "1e12"], "kmax"),
    # Options that would do nothing.
    (["simulate", "--trace", "t.csv", "--prefill", "5"], "prefill"),
    (["simulate", "--trace", "t.csv", "--decode", "5"], "decode"),
    (["simulate", "--trace", "t.csv", "--arrivals", "deterministic"], "arrivals"),
    (["capacity", "--preset", "unit", "--preset-file", "p.yaml"], "preset"),
    (["simulate", "--rate", "5", "--kp", "3"], "kp"),
    (["simulate", "--rate", "5", "--scheduler", "orca", "--kd", "3"], "kd"),
    (["simulate", "--rate", "5", "--scheduler", "vllm", "--priority", "prefill"], "priority"),
    (["simulate", "--rate", "5", "--scheduler", "orca", "--chunked-prefill"], "chunked_prefill"),
    (["compare", "--rate", "5", "--schedulers", "orca,sarathi", "--kp", "2"], "kp"),
    (["compare", "--rate", "5", "--schedulers", "sarathi,sarathi"], "schedulers"),
    # Dotted paths: named as written.
    (["simulate", "--set", "workload.rate=0"], "workload.rate"),
    (["simulate", "--rate", "5", "--set", "workload.bogus=1"], "workload.bogus"),
    (["simulate", "--rate", "5", "--set", "scheduler.kp=3"], "scheduler.kp"),
    (["simulate", "--rate", "5", "--scheduler", "kfcfs", "--set", "scheduler.kp=0"],
     "scheduler.kp"),
    (["simulate", "--rate", "5", "--set", "scheduler.order=lifo"], "scheduler.order"),
    (["simulate", "--rate", "5", "--set", "scheduler.order=lifo"], "scheduler.order"),
    (["compare", "--rate", "5", "--set", "scheduler.kp"], "set"),
    # Paths that would not be where the report says, or could not be written.
    (["compare", "--rate", "5", "--out", ""], "out"),
    (["compare", "--rate", "5", "--plot", ""], "plot"),
    (["compare", "--rate", "5", "--plot", "afile"], "plot"),
    (["compare", "--rate", "5", "--plot", "out.txt"], "plot"),
    (["compare", "--rate", "5", "--plot", "no/such/dir/x.png"], "plot"),
    (["capacity", "--preset-file", ""], "preset_file"),
    # Service-level classes.
    (["simulate", "--rate", "5", "--slo", "strict:0.05:tbt=0", "--slo", "relaxed:0.95:tbt=0.5"],
     "slo"),
    (["simulate", "--rate", "5", "--slo", "strict:1:tbt=0.1,ttft=-1"], "slo"),
    (["simulate", "--rate", "5", "--slo", "strict:0.05:tbt=0.1", "--slo", "relaxed:0.9:tbt=1"],
     "slo"),
    (["compare", "--rate", "5", "--slo", "strict:1.5:tbt=0.1"], "slo"),
    (["compare", "--rate", "5", "--slo", "strict:1:tbt=0.1", "--slo", "strict:0:tbt=1"], "slo"),
    (["simulate", "--rate", "5", "--slo", "strict=0.1"], "slo"),
    (["simulate", "--rate", "5", "--set", "workload.slo=[a:1:tbt=x]"], "workload.slo"),
]


@pytest.mark.parametrize(("args", "field"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(args: list[str], field: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = (run(*args, "--out", str(out), cwd=tmp_path) if args[0] == "simulate"
            else run(*args, cwd=tmp_path))
    assert_refused(proc, field)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the default plot


def assert_refused(proc: subprocess.CompletedProcess[str], field: str) -> None:
    """The bad-input contract: one line naming the field, exit 2, no traceback, no report."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {field}: "), lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


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


def test_no_command_prints_the_usage() -> None:
    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: servelab")
    assert all(name in proc.stdout for name in ("presets", "capacity", "simulate", "compare"))


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize(
    ("args", "field"),
    [(["simulate", "--out", "/proc/x"], "out"), (["compare", "--plot", "/proc/x.png"], "plot"),
     (["compare", "--out", "/proc/x"], "out")],
)
def test_unwritable_outputs_are_refused_before_the_run(args: list[str], field: str) -> None:
    """These used to end in a traceback after the whole run, losing its result."""
    assert_refused(run(*args, *SMALL), field)


def test_plot_path_is_where_the_file_goes(tmp_path: Path) -> None:
    """matplotlib used to append .png to a name without a suffix, or write DIR.png beside DIR."""
    (tmp_path / "dir.png").mkdir()
    assert_refused(run("compare", *SMALL, "--plot", "dir.png", cwd=tmp_path), "plot")
    payload = ok_json("compare", "--schedulers", "orca", *SMALL, "--plot", "b.svg", cwd=tmp_path)
    assert payload["plot"] == "b.svg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.svg", "dir.png"]
    assert (tmp_path / "b.svg").read_text().lstrip().startswith("<?xml")


def test_out_below_a_file_is_refused_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("keep me\n")
    proc = run("simulate", *SMALL, "--out", "afile/run", cwd=tmp_path)
    assert_refused(proc, "out")
    assert "afile is not a directory" in proc.stderr
    assert (tmp_path / "afile").read_text() == "keep me\n"


def test_duplicate_schedulers_are_refused_before_writing(tmp_path: Path) -> None:
    """This used to crash creating dup/sarathi twice, after both runs."""
    proc = run("compare", "--schedulers", "sarathi,sarathi", *SMALL, "--out", "dup",
               cwd=tmp_path)
    assert_refused(proc, "schedulers")
    assert list(tmp_path.iterdir()) == []


def test_a_write_failing_after_the_run_keeps_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The paths pass their check, then the disk fills: the report is printed, then one line."""
    from servelab import cli
    from servelab.results import SimResult

    def disk_full(self: SimResult, directory: Path) -> None:
        (directory / "summary.json").write_text("{")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SimResult, "write_into", disk_full)
    out = tmp_path / "run"
    assert cli.main(["simulate", *SMALL, "--out", str(out), "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["arrived"] == 300  # the finished work, not lost
    assert captured.err == f"error: out: cannot write {out}: No space left on device\n"
    assert list(tmp_path.iterdir()) == []  # and nothing half-written


def test_run_file_problems(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(bytes(range(256)))
    assert_refused(run("run", str(binary)), "file")
    if Path("/dev/urandom").exists():  # used to hang reading forever
        assert_refused(run("run", "/dev/urandom"), "file")
        assert_refused(run("capacity", "--preset-file", "/dev/urandom"), "preset-file")
    exp = tmp_path / "exp.yaml"
    exp.write_text("rate: 5\nrequests: 300\nrate: 6\n")
    proc = run("run", str(exp))
    assert_refused(proc, "file")
    assert "line 3: duplicate key 'rate'" in proc.stderr
    exp.write_text("scheduler: orca\nschedulers: [vllm, sarathi]\nrate: 5\nrequests: 300\n")
    assert_refused(run("run", str(exp)), "scheduler")
    exp.write_text("rate: 5\nrequests: 300\n")
    assert_refused(run("run", str(exp), "--plot", str(tmp_path / "p.png")), "plot")
    proc = run("run", str(exp), "--set", "load=")
    assert_refused(proc, "set")
    assert "write load=null" in proc.stderr
    s = ok_json("run", str(exp), "--set", "rate=null", "--set", "load=0.5")
    assert s["load"] == pytest.approx(0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin.yaml", "exp.yaml"]


def test_trace_without_a_rate_is_refused(tmp_path: Path) -> None:
    """A one-row trace used to report inf req/s."""
    trace = tmp_path / "one.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n1.0,5,5\n")
    assert_refused(run("simulate", "--trace", str(trace)), "trace")
    assert_refused(run("capacity", "--trace", str(trace)), "trace")


def test_scheduler_options_need_one_policy_that_takes_them(tmp_path: Path) -> None:
    """compare: an option is refused only when none of the chosen schedulers takes it."""
    payload = ok_json("compare", "--schedulers", "kfcfs,sarathi", "--kp", "1", *SMALL,
                      cwd=tmp_path)
    kfcfs, sarathi = payload["results"]
    assert kfcfs["scheduler_options"]["kp"] == 1
    assert sarathi["scheduler_options"] == {"order": "fcfs"}  # its own knob, not kp


def one_warning(proc: subprocess.CompletedProcess[str], field: str) -> str:
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: {field}: "), proc.stderr
    return lines[0]


def test_heavy_tail_is_run_with_a_one_line_warning() -> None:
    """sigma 50: every draw rounds to 1 token, while the theory's mean is 301."""
    proc = run("simulate", *SMALL, "--prefill", "lognormal:mean=300,sigma=50")
    line = one_warning(proc, "prefill")
    assert "average 1.0 tokens" in line and "theory" in line
    assert "verdict" in proc.stdout


def test_table_preset_that_is_not_monotone_warns(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("tokens,ms\n64,20\n256,40\n512,30\n")
    (tmp_path / "gpu.yaml").write_text("name: odd\ntiming: {model: table, csv: rows.csv}\n")
    proc = run("capacity", "--preset-file", str(tmp_path / "gpu.yaml"))
    assert "not monotone" in one_warning(proc, "timing.csv")


def test_compare_table_headers_stand_apart_and_carry_units() -> None:
    proc = run("compare", *SMALL)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("scheduler "))
    names = re.split(r"\s{2,}", lines[at].strip())
    units = lines[at + 1].split()
    assert names == ["scheduler", "verdict", "slope ± se", "served", "run", "TTFT p50",
                     "TTFT p99", "TBT p50", "TBT p99", "E2E p50", "E2E p99", "in flight"]
    assert units == ["tok/s"] * 2 + ["requests"] + ["ms"] * 6 + ["requests"]
    assert max(len(line) for line in lines[at:at + 8]) <= 140


EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
#: Overrides that keep a test run short; an example not named here runs as shipped.
QUICK = {"experiment.yaml": ["--set", "requests=2000"],
         "load-sweep.yaml": ["--set", "max_requests=20000", "--set", "seeds=1", "--set",
                             "tolerance=0.1"],
         "slai_vs_sarathi.yaml": ["--set", "requests=400", "--set", "loads=[0.3,0.6]", "--set",
                                  "seeds=1", "--set", "tolerance=0.1"]}


def run_summaries(payload: dict) -> list[dict]:
    """Every run in `run FILE --json`: one simulation, a comparison's, a sweep's, a search's."""
    if "results" in payload:
        return payload["results"]
    if "sweep" in payload or "capacity_searches" in payload:
        swept = [s for p in payload.get("sweep", {}).get("points", ()) for s in p["results"]]
        return swept + [r for s in payload.get("capacity_searches", ()) for r in s["runs"]]
    return [payload]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_shipped_example_runs(example: Path, tmp_path: Path) -> None:
    results = run_summaries(ok_json("run", str(example), *QUICK.get(example.name, []),
                                    cwd=tmp_path))
    assert results and all(r["verdict"] in ("stable", "unstable", "inconclusive")
                           for r in results)


def test_point_c_example_is_stable_and_diverges_at_budget_1024() -> None:
    """docs/cli.md: Sarathi-128 is stable at point C, Sarathi-1024 diverges."""
    assert ok_json("run", str(ROOT / "examples" / "point-c.yaml"))["verdict"] == "stable"
    assert ok_json("run", str(ROOT / "examples" / "point-c.yaml"),
                   "--set", "budget=1024")["verdict"] == "unstable"


def test_documented_experiment_files_exist() -> None:
    """The README's `servelab run experiment.yaml` used to name a file nobody had."""
    named = {name for doc in (ROOT / "README.md", ROOT / "docs" / "cli.md",
                              ROOT / "docs" / "reproductions.md")
             for name in re.findall(r"servelab run (\S+\.yaml)", doc.read_text())}
    assert named and all((ROOT / name).is_file() for name in named), named


def test_simulate_replicas_behind_a_router() -> None:
    s = ok_json("simulate", "--replicas", "3", "--router", "power_of_d:2", *SMALL)
    assert (s["replicas"], s["router"]) == (3, "power_of_d:2")
    assert [e["engine"] for e in s["engines"]] == [0, 1, 2]
    assert sum(e["arrived"] for e in s["engines"]) == s["arrived"] == 300
    assert s["capacity"]["max_rate"] == pytest.approx(3 * 512 / 0.15316 / 241)
    text = run("simulate", "--replicas", "3", *SMALL).stdout
    assert "3 replicas behind jsq" in text and re.search(r"^engines +0: ", text, re.MULTILINE)


@pytest.mark.parametrize(("args", "message"), [
    (["--replicas", "2", "--router", "fastest"], "error: router: unknown router 'fastest'"),
    (["--router", "jsq"], "error: router: a router needs engines to choose between"),
    (["--replicas", "0"], "error: replicas: must be >= 1"),
])
def test_simulate_refuses_a_bad_fleet(args: list[str], message: str) -> None:
    proc = run("simulate", *args, *SMALL)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().startswith(message) and len(proc.stderr.strip().splitlines()) == 1


SLO_FLAGS = ["--slo", "strict:0.05:tbt=0.08", "--slo", "relaxed:0.95:tbt=0.5,ttft=1"]


def test_slo_classes_from_flags_and_files_give_per_class_results(tmp_path: Path) -> None:
    s = ok_json("simulate", *SMALL, *SLO_FLAGS)
    assert [(c["name"], c["tbt_target_s"], c["ttft_target_s"]) for c in s["classes"]] == [
        ("strict", 0.08, None), ("relaxed", 0.5, 1.0)]
    assert {"slo_attainment", "goodput_requests_per_s", "preemptions",
            "recomputed_tokens"} <= s.keys()
    (tmp_path / "exp.yaml").write_text(
        "rate: 10\nrequests: 300\nseed: 1\nworkload:\n  slo:\n    - strict:0.05:tbt=0.08\n"
        "    - {name: relaxed, probability: 0.95, tbt: 0.5, ttft: 1}\n")
    from_file = ok_json("run", str(tmp_path / "exp.yaml"))
    assert from_file["classes"] == s["classes"]
    text = run("simulate", *SMALL, *SLO_FLAGS).stdout
    assert re.search(r"^strict +0\.05 +80\.0 +- +\d", text, re.MULTILINE), text
    assert re.search(r"^relaxed +TTFT +\d", text, re.MULTILINE), text
    assert "SLO class" not in run("simulate", *SMALL).stdout
    text = run("compare", *SMALL, "--schedulers", "sarathi,orca", *SLO_FLAGS, "--plot",
               str(tmp_path / "p.png")).stdout
    assert re.search(r"^orca +strict +\d", text, re.MULTILINE), text

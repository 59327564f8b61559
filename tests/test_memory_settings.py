"""KV-memory settings: flags, files and presets; bad input; and runs that ask for no memory,
which must print exactly what they printed before memory existed."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest

from golden.make_no_memory import normalised  # tests/ is on the path, as for reference_engine
from servelab.analysis.theory import MEMORY_KEYS
from servelab.cli import main
from servelab.config import SimConfig
from servelab.core.kv_settings import KVSettings, swap_block_seconds
from servelab.errors import ConfigError
from servelab.simulation import capacity, prepare, resolve_kv
from servelab.timing.presets import load_preset, load_preset_file

GOLDEN = Path(__file__).parent / "golden"


def run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


# --- settings ------------------------------------------------------------------------------


def test_flags_paths_and_sections_are_one_setting() -> None:
    flat = SimConfig.from_dict({"kv_blocks": "100", "block_size": 32, "watermark": 0.05,
                                "preemption": "swap", "swap_block_s": 1e-4})
    dotted = SimConfig.from_dict({"engine.kv_blocks": 100, "engine.block_size": 32,
                                  "engine.watermark": "0.05", "engine.preemption": "SWAP",
                                  "engine.swap_block_s": "1e-4"})
    sections = SimConfig.from_dict({"engine": {"kv_blocks": 100, "block_size": 32,
                                               "watermark": 0.05, "preemption": "swap",
                                               "swap_block_s": 1e-4}})
    assert flat == dotted == sections
    assert SimConfig.from_dict({"kv_blocks": "Preset"}).kv_blocks == "preset"


def test_resolved_settings_and_their_defaults() -> None:
    codellama, mistral = load_preset("codellama-34b-a100"), load_preset("mistral-7b-rtx6000ada")
    assert resolve_kv(SimConfig(), codellama) is None  # a preset's kv alone turns nothing on
    assert resolve_kv(SimConfig(kv_blocks="preset"), mistral) == KVSettings(
        14733, 16, 0.01, "recompute", 16 * 131072 / 25e9)
    # The same memory in blocks of 32: 14,733 * 16 / 32 = 7,366.5, rounded down.
    assert resolve_kv(SimConfig(kv_blocks="preset", block_size=32), mistral).blocks == 7366
    explicit = resolve_kv(SimConfig(kv_blocks=500, watermark=0, preemption="swap"), codellama)
    assert explicit == KVSettings(500, 16, 0.0, "swap", 16 * 196608 / 25e9)
    unit = resolve_kv(SimConfig(kv_blocks=9, preemption="swap", swap_block_s=0.002),
                      load_preset("unit"))
    assert unit == KVSettings(9, 16, 0.01, "swap", 0.002)


def test_swap_cost_arithmetic() -> None:
    # 16 tokens x 128 KiB (Mistral-7B) = 2 MiB = 2,097,152 B; at 25 GB/s, 83.9 us a block.
    assert swap_block_seconds(16, 131072) == pytest.approx(83.886e-6, rel=1e-4)
    assert KVSettings(1).swap_block_s == swap_block_seconds(16, 131072)
    # CodeLlama-34B: 192 KiB a token, 3 MiB a block, 125.8 us.
    assert swap_block_seconds(16, 196608) == pytest.approx(125.83e-6, rel=1e-4)


def test_kv_settings_helpers() -> None:
    kv = KVSettings(200, 16, 0.05)
    assert kv.tokens == 3200 and kv.watermark_blocks == 10
    assert kv.blocks_for(16) == 1 and kv.blocks_for(17) == 2
    # A 100-token prompt (7 blocks) is admitted only with 10 free besides: 17; its 300-token
    # KV at the end needs 19, the more. A 160-token prompt: 10 + 10 = 20, more than the 11
    # blocks of 161 tokens.
    assert kv.blocks_to_run(100, 300) == 19 and kv.blocks_to_run(160, 161) == 20


BAD = [
    (["--kv-blocks", "0"], "kv_blocks: must be >= 1"),
    (["--kv-blocks", "lots"], "kv_blocks: expected an integer, got 'lots'"),
    (["--kv-blocks", "16777217"], "kv_blocks: at most 16,777,216 blocks"),
    (["--kv-blocks", "100", "--block-size", "0"], "block_size: must be >= 1"),
    (["--kv-blocks", "100", "--watermark", "1"], "watermark: must be in [0, 1)"),
    (["--kv-blocks", "100", "--watermark", "-0.1"], "watermark: must be in [0, 1)"),
    (["--kv-blocks", "100", "--preemption", "drop"], "preemption: invalid choice"),
    (["--kv-blocks", "100", "--preemption", "swap", "--swap-block-s", "-1"],
     "swap_block_s: must be >= 0"),
    (["--watermark", "0.1"], "watermark: does nothing without --kv-blocks"),
    (["--block-size", "32"], "block_size: does nothing without --kv-blocks"),
    (["--preemption", "swap"], "preemption: does nothing without --kv-blocks"),
    (["--kv-blocks", "100", "--swap-block-s", "0.001"],
     "swap_block_s: only --preemption swap moves blocks"),
    (["--kv-blocks", "preset", "--preset", "unit"],
     "kv_blocks: preset unit gives no KV capacity"),
    (["--kv-blocks", "preset", "--block-size", "50000"],
     "block_size: 50,000 tokens is more than the preset's whole KV cache (43,040)"),
    # 129 + 112 tokens end with 241 tokens of KV, 16 blocks: 15 cannot hold one request.
    (["--kv-blocks", "15"], "kv_blocks: a request of 129 prompt and 112 output tokens needs 16 "
                            "blocks of 16 tokens"),
    # Its prompt needs 9 blocks, and 10 of 1,000 are kept free when it is admitted: 19.
    (["--kv-blocks", "18", "--watermark", "0.6", "--decode", "1"],
     "kv_blocks: a request of 129 prompt and 1 output tokens needs 19 blocks"),
]


@pytest.mark.parametrize("command", ["capacity", "simulate", "compare"])
@pytest.mark.parametrize(("flags", "message"), BAD)
def test_bad_memory_input_is_one_line_and_exit_2(command: str, flags: list[str],
                                                 message: str) -> None:
    length = [] if command == "capacity" else ["--requests", "300"]
    code, out, err = run([command, "--rate", "5", *length, *flags])
    assert code == 2 and out == ""
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


@pytest.mark.parametrize(("settings", "message"), [
    ({"engine": {"kv_blocks": 100, "preemption": "drop"}},
     "engine.preemption: must be one of recompute, swap, got 'drop'"),
    ({"engine.swap_block_s": 0.001}, "engine.swap_block_s: does nothing without --kv-blocks"),
    ({"kv_blocks": 100, "engine.swap_block_s": 0.001},
     "engine.swap_block_s: only --preemption swap moves blocks"),
])
def test_errors_name_a_setting_as_written(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        SimConfig.from_dict(settings)
    assert str(exc.value).startswith(message)


def test_a_run_checks_the_requests_it_draws(tmp_path: Path) -> None:
    """Poisson prompts have no largest value: capacity computes the bound; a run checks every
    request it may draw (all an auto run may grow to) before it starts."""
    args = ["--rate", "5", "--prefill", "poisson:300", "--kv-blocks", "25"]
    assert run(["capacity", *args])[0] == 0
    code, _, err = run(["simulate", *args])
    assert code == 2 and "an auto run may draw" in err and "kv_blocks:" in err
    code, _, err = run(["simulate", *args, "--requests", "2000", "--out", str(tmp_path / "o")])
    assert code == 2 and "auto" not in err and not (tmp_path / "o").exists()


# --- presets --------------------------------------------------------------------------------


def test_shipped_presets_carry_their_kv_capacity() -> None:
    mistral = load_preset("mistral-7b-rtx6000ada").kv
    assert (mistral.blocks, mistral.block_size, mistral.bytes_per_token) == (14733, 16, 131072)
    # 32 layers x 8 KV heads x 128 dims x 2 (K, V) x 2 bytes.
    assert mistral.bytes_per_token == 32 * 8 * 128 * 2 * 2
    codellama = load_preset("codellama-34b-a100").kv
    assert codellama.bytes_per_token == 48 * 8 * 128 * 2 * 2
    # The derivation its source gives: 0.9 x 79.15 GiB - 2 B x 33,743,970,304 weights - 0.5
    # GiB, in blocks of 16 x 192 KiB = 3 MiB.
    gib = 2**30
    free = 0.9 * 79.15 * gib - 2 * 33_743_970_304 - 0.5 * gib
    assert codellama.blocks == math.floor(free / (16 * codellama.bytes_per_token)) == 2690
    assert load_preset("unit").kv is None


def test_presets_command_shows_the_kv_figure() -> None:
    _, out, _ = run(["presets", "--json"])
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["mistral-7b-rtx6000ada"]["kv"]["blocks"] == 14733
    assert rows["unit"]["kv"] is None
    text = run(["presets"])[1]
    assert "14,733 x 16" in text and "2,690 x 16" in text


@pytest.mark.parametrize(("kv", "field", "reason"), [
    ("[1, 2]", "preset.kv", "must be a mapping"),
    ("{block_size: 16}", "preset.kv.blocks", "missing"),
    ("{blocks: 0}", "preset.kv.blocks", "must be an integer >= 1"),
    ("{blocks: 10, block_size: 1.5}", "preset.kv.block_size", "must be an integer >= 1"),
    ("{blocks: 10, bytes_per_token: true}", "preset.kv.bytes_per_token", "must be an integer"),
    ("{blocks: 10, source: 3}", "preset.kv.source", "must be a non-empty string"),
    ("{blocks: 10, gpu: a100}", "preset.kv.gpu", "unknown key"),
])
def test_bad_preset_kv_sections(tmp_path: Path, kv: str, field: str, reason: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"name: p\ntiming: {{model: constant, t_ms: 10}}\nkv: {kv}\n")
    with pytest.raises(ConfigError) as exc:
        load_preset_file(path)
    assert exc.value.field == field and reason in exc.value.reason


def test_a_preset_file_of_your_own_with_kv(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\ntiming: {model: constant, t_ms: 10}\n"
                    "kv: {blocks: 64, block_size: 8}\n")
    c = capacity({"preset_file": str(path), "kv_blocks": "preset", "prefill": 8, "decode": 8})
    assert (c["memory"]["kv_blocks"], c["memory"]["block_size"]) == (64, 8)


# --- without memory nothing changes ------------------------------------------------------------


def test_capacity_json_has_memory_keys_only_with_memory() -> None:
    without = capacity({"rate": 12})
    assert not {"memory", "memory_max_rate", "binding"} & set(without)
    with_kv = capacity({"rate": 12, "kv_blocks": "preset"})
    assert {"memory", "memory_max_rate", "binding"} <= set(with_kv)
    # Below both bounds the verdict is the token bound's, with the memory's caveat after it.
    assert with_kv["verdict_reason"].startswith(without["verdict_reason"] + "; memory load")
    unchanged = set(without) - {"verdict_reason"}
    assert {k: with_kv[k] for k in unchanged} == {k: without[k] for k in unchanged}


def test_compare_json_theory_carries_memory_keys_only_with_memory() -> None:
    """Through the theory block compare prints (its simulation half waits for the engine)."""
    plain = prepare({"rate": 5, "requests": 500}).theory
    assert not set(MEMORY_KEYS) & set(plain)
    assert set(MEMORY_KEYS) <= set(prepare({"rate": 5, "requests": 500,
                                            "kv_blocks": 3000}).theory)


#: Keys issue 9 added to every summary since (the SLO classes' counters, always 0 without
#: memory, and whether the scheduler is a reconstruction, false for the recorded ones).
NEW_KEYS = {"preemptions": 0, "recomputed_tokens": 0, "reconstructed": False}


@pytest.mark.parametrize("case", sorted(json.loads((GOLDEN / "no_memory.json").read_text())))
def test_runs_without_memory_print_what_they_did_before_it(case: str) -> None:
    """Recorded by tests/golden/make_no_memory.py with the code before KV memory (74f2810);
    exact, every float to the last bit. The only difference allowed: the keys added since,
    each at its value without memory."""
    recorded = json.loads((GOLDEN / "no_memory.json").read_text())[case]
    now = normalised(recorded["args"])
    if isinstance(now, dict) and "preemptions" in now:
        added = {key: now.pop(key) for key in NEW_KEYS}
        assert added == NEW_KEYS
    assert now == recorded["output"]

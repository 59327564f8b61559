"""Batch-time models, their YAML form and the shipped presets."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

import servelab
from servelab.errors import ConfigError, ConfigWarning
from servelab.timing.models import (
    Affine,
    Constant,
    Piecewise,
    Staircase,
    Table,
    TimingModel,
    timing_from_dict,
)
from servelab.timing.presets import list_presets, load_preset, load_preset_file

CODELLAMA = Staircase(c=0.01128, a=0.03547, b0=128)
MISTRAL = Piecewise(c=0.023, a_per_token=0.058e-3, b0=128)
AFFINE = Affine(alpha=0.01, beta_prefill=1e-4, beta_decode=3e-4, gamma=2e-5)
TABLE = Table(tokens=(64, 128, 256), seconds=(0.020, 0.024, 0.030), source="inline")
TOKEN_ONLY: list[TimingModel] = [CODELLAMA, MISTRAL, Constant(1.0), TABLE]


def test_staircase_matches_paper_values() -> None:
    assert CODELLAMA.duration(512, 0, 1) == pytest.approx(0.15316, abs=1e-12)
    assert CODELLAMA.duration(28, 100, 101) == pytest.approx(0.04675, abs=1e-12)
    assert CODELLAMA.tokens_duration(129) == pytest.approx(0.08222, abs=1e-12)
    assert CODELLAMA.tokens_duration(0) == pytest.approx(0.01128)


def test_staircase_capacity() -> None:
    mu, n_star = CODELLAMA.capacity(512)
    assert (mu, n_star) == (pytest.approx(512 / 0.15316), 512)
    mu, n_star = CODELLAMA.capacity(1024)
    assert mu == pytest.approx(3471, abs=1) and n_star == 1024


def test_piecewise_and_constant() -> None:
    assert MISTRAL.tokens_duration(512) == pytest.approx((23 + 0.058 * 384) / 1000)
    assert MISTRAL.tokens_duration(100) == pytest.approx(0.023)
    assert Constant(2.0).duration(300, 7, 8) == 2.0
    assert Constant(2.0).capacity(64) == (32.0, 64)


def test_capacity_ties_go_to_the_largest_n() -> None:
    # t(n) = a * n exactly for n >= 1: every n has the same rate 1/a.
    assert Table(tokens=(0, 1, 2), seconds=(0.5, 0.5, 1.0), source="x").capacity(2)[1] == 2


def test_affine_formula_and_mix() -> None:
    assert AFFINE.duration(100, 20, 21) == pytest.approx(0.01 + 0.01 + 0.006 + 21 * 2e-5)
    f = 0.25
    assert AFFINE.tokens_duration(400, f) == pytest.approx(AFFINE.duration(100, 300, 301))
    assert AFFINE.tokens_duration(400, 0.0) == pytest.approx(AFFINE.duration(0, 400, 400))
    mu, n_star = AFFINE.capacity(1000, f)
    best = max(range(1, 1001), key=lambda n: (n / AFFINE.tokens_duration(n, f), n))
    assert (mu, n_star) == (pytest.approx(best / AFFINE.tokens_duration(best, f)), best)
    with pytest.raises(TypeError):
        AFFINE.token_table(10)


def test_table_interpolates_clamps_and_extrapolates() -> None:
    assert TABLE.tokens_duration(96) == pytest.approx(0.022)
    assert TABLE.tokens_duration(0) == pytest.approx(0.020)
    assert TABLE.tokens_duration(512) == pytest.approx(0.030 + 0.006 / 128 * 256)
    falling = Table(tokens=(64, 128), seconds=(0.03, 0.02), source="x")
    assert falling.tokens_duration(1000) == pytest.approx(0.02)


@pytest.mark.parametrize("model", TOKEN_ONLY, ids=lambda m: m.kind)
def test_token_table_equals_duration(model: TimingModel) -> None:
    table = model.token_table(300)
    assert isinstance(table, list) and len(table) == 301
    for n in (0, 1, 63, 64, 127, 128, 129, 256, 300):
        assert table[n] == pytest.approx(model.duration(n // 3, n - n // 3, 1), abs=1e-15)


@pytest.mark.parametrize(
    "d",
    [
        {"model": "staircase", "c_ms": 11.28, "a_ms": 35.47, "b0": 128},
        {"model": "piecewise", "c_ms": 23, "a_ms_per_token": 0.058, "b0": 128},
        {
            "model": "affine",
            "alpha_ms": 5,
            "beta_prefill_ms": 0.1,
            "beta_decode_ms": 0.3,
            "gamma_ms": 0.02,
        },
        {"model": "constant", "t_ms": 1000},
    ],
    ids=lambda d: d["model"],
)
def test_yaml_round_trip(d: dict) -> None:
    model = timing_from_dict(d, None)
    assert model.to_dict() == d
    assert timing_from_dict(model.to_dict(), None) == model


def test_describe() -> None:
    assert CODELLAMA.describe() == "staircase c=11.28 ms a=35.47 ms b0=128"
    assert MISTRAL.describe() == "piecewise c=23 ms a=0.058 ms/token b0=128"


def _staircase(**change: object) -> dict:
    return {"model": "staircase", "c_ms": 11.28, "a_ms": 35.47, "b0": 128, **change}


@pytest.mark.parametrize(
    ("d", "field"),
    [
        ("staircase", "timing"),
        ({"c_ms": 1}, "timing.model"),
        ({"model": "cubic"}, "timing.model"),
        ({"model": "staircase", "c_ms": 1, "a_ms": 1}, "timing.b0"),
        (_staircase(d_ms=1), "timing.d_ms"),
        (_staircase(c_ms="fast"), "timing.c_ms"),
        (_staircase(c_ms=True), "timing.c_ms"),
        (_staircase(c_ms=math.nan), "timing.c_ms"),
        (_staircase(a_ms=-1), "timing.a_ms"),
        (_staircase(b0=0), "timing.b0"),
        (_staircase(b0=1.5), "timing.b0"),
        (_staircase(c_ms=0, a_ms=0), "timing"),
        ({"model": "constant", "t_ms": 0}, "timing"),
        ({"model": "table", "csv": 3}, "timing.csv"),
    ],
)
def test_bad_timing_raises_config_error(d: object, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        timing_from_dict(d, None)  # type: ignore[arg-type]
    assert err.value.field == field


def test_field_prefix_is_used() -> None:
    with pytest.raises(ConfigError) as err:
        timing_from_dict(_staircase(c_ms=-1), None, field="engines.0.timing")
    assert err.value.field == "engines.0.timing.c_ms"


def test_table_csv_ms_column_and_round_trip(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("tokens,ms,note\n64,22.72,a\n\n128,24.07,b\n")
    model = timing_from_dict({"model": "table", "csv": "rows.csv"}, tmp_path)
    assert model == Table((64, 128), (0.02272, 0.02407), str(tmp_path / "rows.csv"))
    assert timing_from_dict(model.to_dict(), None) == model


@pytest.mark.parametrize(
    "text",
    [
        None,  # no file
        "tokens,time\n1,2\n2,3\n",
        "tokens,seconds\n64,0.02\n128,fast\n",
        "tokens,seconds\n64.5,0.02\n128,0.03\n",
        "tokens,seconds\n64,0.02\n",
        "tokens,seconds\n128,0.02\n64,0.03\n",
        "tokens,seconds\n64,0.02\n128,0\n",
    ],
)
def test_bad_table_csv(tmp_path: Path, text: str | None) -> None:
    if text is not None:
        (tmp_path / "rows.csv").write_text(text)
    with pytest.raises(ConfigError) as err:
        timing_from_dict({"model": "table", "csv": "rows.csv"}, tmp_path)
    assert err.value.field == "timing.csv"


def test_a_table_whose_time_falls_is_accepted_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("tokens,ms\n64,20\n128,30\n256,25\n512,40\n")
    with pytest.warns(ConfigWarning) as record:
        model = timing_from_dict({"model": "table", "csv": "rows.csv"}, tmp_path)
    assert model.tokens_duration(256) == pytest.approx(0.025)
    [warning] = record
    assert warning.message.field == "timing.csv"
    assert "falls from 30 ms at 128 tokens to 25 ms at 256 tokens" in warning.message.reason
    assert "not monotone" in warning.message.reason


def test_shipped_presets() -> None:
    names = [p.name for p in list_presets()]
    assert names == ["codellama-34b-a100", "mistral-7b-rtx6000ada", "unit"]
    codellama = load_preset("codellama-34b-a100")
    assert codellama.timing == timing_from_dict(CODELLAMA.to_dict(), None)
    assert codellama.budget == 512 and codellama.convention == "paper" and codellama.source
    assert load_preset("mistral-7b-rtx6000ada").timing.tokens_duration(512) == pytest.approx(
        MISTRAL.tokens_duration(512)
    )
    assert load_preset("unit").timing == Constant(1.0)


def test_unknown_preset_lists_known() -> None:
    with pytest.raises(ConfigError) as err:
        load_preset("x")
    assert err.value.field == "preset"
    assert "unknown preset 'x'; known: codellama-34b-a100, mistral-7b-rtx6000ada, unit" in str(
        err.value
    )


def test_preset_file_with_relative_table_csv(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.csv").write_text("tokens,seconds\n64,0.02\n128,0.024\n")
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nbudget: 128\ntiming:\n  model: table\n  csv: data/rows.csv\n")
    preset = load_preset_file(path)
    assert (preset.name, preset.budget, preset.convention) == ("mine", 128, "paper")
    assert preset.timing.capacity(128) == (pytest.approx(128 / 0.024), 128)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (None, "preset-file"),
        ("- a list\n", "preset-file"),
        ("name: [unclosed\n", "preset-file"),
        ("timing: {model: constant, t_ms: 1}\n", "preset.name"),
        ("name: x\n", "preset.timing"),
        ("name: x\ncolour: red\ntiming: {model: constant, t_ms: 1}\n", "preset.colour"),
        ("name: x\nbudget: 0\ntiming: {model: constant, t_ms: 1}\n", "preset.budget"),
        ("name: x\nconvention: vllm\ntiming: {model: constant, t_ms: 1}\n", "preset.convention"),
        ("name: x\ndescription: 3\ntiming: {model: constant, t_ms: 1}\n", "preset.description"),
        ("name: x\ntiming: {model: staircase, c_ms: 1, a_ms: -2, b0: 8}\n", "timing.a_ms"),
        ("name: x\nbudget: 8\nbudget: 16\ntiming: {model: constant, t_ms: 1}\n", "preset-file"),
    ],
)
def test_bad_preset_file(tmp_path: Path, text: str | None, field: str) -> None:
    path = tmp_path / "p.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_preset_file(path)
    assert err.value.field == field


# -- tiles: a batch of n tokens costs as ceil(n/T)*T ------------------------------------------

def ceil_to(n: int, tile: int) -> int:
    return -(-n // tile) * tile


@pytest.mark.parametrize("model", TOKEN_ONLY, ids=lambda m: m.kind)
@pytest.mark.parametrize("tile", [1, 3, 64, 128])
def test_a_batch_costs_its_whole_tiles(model: TimingModel, tile: int) -> None:
    tiled = dataclasses.replace(model, tile=tile)
    for n in [1, 2, 3, 4, 5, 63, 64, 65, 127, 128, 129, 300]:
        want = model.tokens_duration(ceil_to(n, tile))
        assert tiled.tokens_duration(n) == want
        assert tiled.duration(n // 3, n - n // 3, 1) == want  # any split of the n tokens
    assert tiled.token_table(300) == [model.tokens_duration(ceil_to(n, tile))
                                      for n in range(301)]


def test_staircase_tile_by_hand() -> None:
    """T = 3 on t(n) = 1 + 2 ceil(n/4) (seconds, exact in binary): 4 tokens cost as 6
    (t = 5), 7 as 9 (t = 7)."""
    tiled = Staircase(c=1.0, a=2.0, b0=4, tile=3)
    assert tiled.token_table(8) == [1.0, 3.0, 3.0, 3.0, 5.0, 5.0, 5.0, 7.0, 7.0]
    assert Staircase(c=1.0, a=2.0, b0=4).token_table(8) == [1.0, 3.0, 3.0, 3.0, 3.0, 5.0, 5.0,
                                                            5.0, 5.0]


def test_the_padding_of_a_mixed_batch_runs_as_prefill_rows() -> None:
    """Affine: 100 prefill + 20 decode tokens with T = 128 pay 8 more prefill rows, and no
    more sequences."""
    tiled = dataclasses.replace(AFFINE, tile=128)
    assert tiled.duration(100, 20, 21) == AFFINE.duration(108, 20, 21)
    f = 0.25  # the theory's curve pads from n itself: 128 tokens are one whole tile
    assert tiled.tokens_duration(128, f) == AFFINE.tokens_duration(128, f)
    assert tiled.tokens_duration(129, f) == pytest.approx(
        AFFINE.durations(129 * f + 127, 129 * (1 - f), 129 * (1 - f) + 1))


def test_theory_takes_the_tiled_cost() -> None:
    """Mistral tiled by 128 at b_max = 500: a batch of n tokens costs t(ceil(n/128)*128), so
    the best rate is 500 tokens in t(512) = 23 + 0.058 * 384 ms (the bucket tops 128, 256, 384
    give 5.57, 8.41, 10.15 tokens/ms; 500 gives 11.04)."""
    tiled = dataclasses.replace(MISTRAL, tile=128)
    mu, n_star = tiled.capacity(500)
    assert (mu, n_star) == (pytest.approx(500 / 0.045272), 500)
    assert MISTRAL.capacity(500) == (pytest.approx(500 / (0.023 + 0.058e-3 * 372)), 500)
    # With a budget that the tile divides, the best rate is the untiled one.
    assert tiled.capacity(512) == MISTRAL.capacity(512)
    c = servelab.capacity({"preset": "mistral-7b-rtx6000ada", "budget": 500, "tile": 128})
    assert c["timing"].endswith(" tile=128")
    assert c["tokens_per_s"] == pytest.approx(500 / 0.045272)


def test_yaml_form_round_trips_and_names_the_tile() -> None:
    d = {"model": "piecewise", "c_ms": 23, "a_ms_per_token": 0.058, "b0": 128, "tile": 64}
    model = timing_from_dict(d, None)
    assert model.tile == 64 and model.to_dict() == {**d, "c_ms": 23.0, "a_ms_per_token": 0.058}
    assert timing_from_dict(model.to_dict(), None) == model
    assert model.describe() == "piecewise c=23 ms a=0.058 ms/token b0=128 tile=64"
    untiled = timing_from_dict({k: v for k, v in d.items() if k != "tile"}, None)
    assert "tile" not in untiled.to_dict() and "tile" not in untiled.describe()


@pytest.mark.parametrize("tile", [0, -3, 1.5, True, "64"])
def test_bad_tile_in_yaml(tile: object) -> None:
    with pytest.raises(ConfigError) as err:
        timing_from_dict({"model": "constant", "t_ms": 1, "tile": tile}, None)
    assert err.value.field == "timing.tile"


def test_unknown_key_lists_tile_as_accepted() -> None:
    with pytest.raises(ConfigError) as err:
        timing_from_dict({"model": "constant", "t_ms": 1, "tiles": 64}, None)
    assert err.value.field == "timing.tiles" and "model, t_ms, tile" in err.value.reason


def test_bad_tile_built_directly() -> None:
    with pytest.raises(ConfigError) as err:
        Constant(1.0, tile=0)
    assert err.value.field == "timing.tile"

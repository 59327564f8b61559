"""The GEMM tile through the engine, the settings and the CLI: a batch of n tokens lasts as
ceil(n/T)*T tokens do; without a tile nothing changes. (The models' own: test_timing.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import servelab
from servelab.cli import main
from servelab.schedulers import make_scheduler
from servelab.sim.engine import Engine
from servelab.sim.run import run_engine
from servelab.timing.models import Staircase


def test_tiled_batches_take_their_tiled_time_in_the_engine() -> None:
    """Every recorded batch lasts t(ceil(n/T)*T) for its n tokens (the token table path)."""
    tiled = Staircase(c=1.0, a=2.0, b0=4, tile=3)
    engine = Engine(make_scheduler("sarathi"), tiled, 10, record_batches=True)
    rng = np.random.default_rng(5)
    arrival = np.sort(rng.uniform(0, 40, 40))
    run_engine(engine, arrival, rng.integers(1, 12, 40), rng.integers(1, 6, 40),
               horizon=40.0, drain=True)
    assert engine.batches
    for b in engine.batches:
        n = sum(m for _, m in b.prefill) + len(b.decode)
        tiles = -(-n // 3)
        # t(3 * tiles) = 1 + 2 ceil(3 * tiles / 4) seconds
        assert b.end - b.start == pytest.approx(1 + 2 * -(-3 * tiles // 4))


def test_tile_setting_tiles_the_preset_and_shows_in_results() -> None:
    base = {"rate": 8, "requests": 400, "seed": 2, "preset": "mistral-7b-rtx6000ada"}
    plain = servelab.simulate(base).summary
    tiled = servelab.simulate({**base, "engine.tile": 128}).summary
    assert tiled["timing"] == plain["timing"] + " tile=128"
    # Light batches cost whole tiles: the same requests take longer.
    assert tiled["e2e_ms"]["mean"] > plain["e2e_ms"]["mean"]
    # A tile of 1 is no tile at all: the same run, to the bit.
    one = servelab.simulate({**base, "tile": 1}).summary
    assert one["e2e_ms"] == plain["e2e_ms"] and one["tbt_ms"] == plain["tbt_ms"]


@pytest.mark.parametrize("args", [["--tile", "0"], ["--tile", "x"], ["--set", "engine.tile=-1"]])
def test_bad_tile_flag_is_one_line_and_exit_2(args: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--rate", "5", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1
    assert err.split(":")[1].strip() in ("tile", "engine.tile")

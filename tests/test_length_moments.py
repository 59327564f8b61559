"""The moments each length distribution gives the KV-memory bound: E[Y^2], how lengths fall
modulo a block size, and the survival function, all exact.

Statistical checks use fixed seeds and 400,000 draws and allow 5 standard errors (about 360
checks here: a correct formula fails one with probability ~2e-4 in all), while the errors they
guard against (a residue table rotated by one token, a second moment that forgets the clip at
1, a geometric off by one in its support) miss by tens of SEs or more.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from servelab.workload.lengths import LengthDist, parse_lengths

N = 400_000


def within_5_se(samples: np.ndarray, expected: float) -> bool:
    se = samples.std(ddof=1) / math.sqrt(len(samples))
    return abs(samples.mean() - expected) <= 5 * se + 1e-12 * max(1.0, abs(expected))


def frequency_within_5_se(hits: np.ndarray, p: float) -> bool:
    """A frequency against its probability, with the binomial SE of p itself (a sample SE is
    0 when p is within 1e-9 of 0 or 1 and no draw shows the difference)."""
    return abs(hits.mean() - p) <= 5 * math.sqrt(p * (1 - p) / len(hits)) + 1e-12


SPECS = ["129", "poisson:32", "poisson:0.7", "poisson:2500", "geometric:50", "geometric:1",
         "uniform:16,512", "uniform:3,3", "lognormal:mean=300,sigma=1",
         "lognormal:median=257,sigma=0.55", "lognormal:median=7,sigma=0", "csv"]


@pytest.fixture
def lengths_csv(tmp_path: Path) -> Path:
    path = tmp_path / "lengths.csv"
    path.write_text("tokens\n10\n0\n30\n7\n300\n17\n")
    return path


def dist_of(spec: str, lengths_csv: Path) -> LengthDist:
    return parse_lengths(f"csv:{lengths_csv}#tokens" if spec == "csv" else spec, "prefill")


@pytest.mark.parametrize("spec", SPECS)
def test_second_moment_residues_and_survival_match_monte_carlo(
        spec: str, lengths_csv: Path) -> None:
    dist = dist_of(spec, lengths_csv)
    draws = dist.sample(np.random.default_rng(5), N)
    assert within_5_se(draws.astype(np.float64) ** 2, dist.second_moment)
    for modulus in (16, 7):
        residues = dist.residues(modulus)
        assert residues.shape == (modulus,)
        assert residues.sum() == pytest.approx(1.0, abs=1e-12)
        for r in range(modulus):
            assert frequency_within_5_se(draws % modulus == r, residues[r]), r
    for k in (0, 1, 5, 40, 300, 2600):
        assert frequency_within_5_se(draws > k, float(dist.survival(np.array(k)))), k


@pytest.mark.parametrize("spec", ["lognormal:median=4,sigma=0.5", "lognormal:mean=8,sigma=0.6",
                                  "lognormal:median=34,sigma=0.9"])
def test_lognormal_second_moment_and_residues_equal_the_direct_pmf_sum(spec: str) -> None:
    """Exact, where the pmf can be summed far enough out (Monte Carlo cannot pin a lognormal's
    second moment to 1e-9: its fourth moment is large). 200,000 terms leave less than 1e-14 of
    E[Y^2] out for these three."""
    dist = parse_lengths(spec, "prefill")
    k = np.arange(1, 200_000)
    scale = dist.sigma * math.sqrt(2)
    above = np.array([0.5 * math.erfc((math.log(x + 0.5) - dist.mu) / scale) for x in k])
    pmf = np.concatenate(([1 - above[0]], above[:-1] - above[1:]))  # P(Y = k), k = 1, 2, ...
    assert dist.second_moment == pytest.approx(float(pmf @ k.astype(np.float64) ** 2), rel=1e-9)
    direct = np.bincount(k % 16, weights=pmf, minlength=16)
    np.testing.assert_allclose(dist.residues(16), direct, rtol=0, atol=1e-11)


def test_moments_in_closed_form() -> None:
    assert parse_lengths("poisson:1", "p").second_moment == pytest.approx(2 + math.exp(-1))
    assert parse_lengths("geometric:50", "p").second_moment == 2 * 50**2 - 50
    assert parse_lengths("uniform:1,3", "p").second_moment == pytest.approx(14 / 3)
    np.testing.assert_allclose(parse_lengths("uniform:1,5", "p").residues(4),
                               [0.2, 0.4, 0.2, 0.2])
    np.testing.assert_allclose(parse_lengths("geometric:2", "p").residues(2), [1 / 3, 2 / 3])

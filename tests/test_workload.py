"""Workload inputs: length distributions, arrival processes and trace files.

Statistical checks use fixed seeds and 200,000 draws and allow 4 standard errors, with the SE
estimated from the sample itself. A correct formula then fails with probability ~6e-5 (two-sided
normal tail), while the errors these tests guard against (e.g. a Poisson mean that forgets the
clip at 1, off by e^-1 for poisson:1) miss by hundreds of SEs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from servelab.errors import ConfigError
from servelab.workload.arrivals import Deterministic, parse_arrivals
from servelab.workload.lengths import parse_lengths
from servelab.workload.trace import load_trace

N = 200_000


def within_4_se(samples: np.ndarray, expected: float) -> bool:
    se = samples.std(ddof=1) / math.sqrt(len(samples))
    return abs(samples.mean() - expected) <= 4 * se + 1e-12 * max(1.0, abs(expected))


@pytest.fixture
def lengths_csv(tmp_path: Path) -> Path:
    path = tmp_path / "lengths.csv"
    path.write_text("id,tokens\n1,10\n2,0\n3,30\n4,7\n")
    return path


# --- length distributions ------------------------------------------------------------------

CANONICAL = [
    ("129", "129"),
    (" poisson:32.0 ", "poisson:32"),
    ("POISSON:1", "poisson:1"),
    ("geometric:50", "geometric:50"),
    ("uniform:16, 512", "uniform:16,512"),
    ("lognormal:mean=300,sigma=1.0", "lognormal:mean=300,sigma=1"),
    ("lognormal:sigma=0.5, median=2", "lognormal:median=2,sigma=0.5"),
    (" ShareGPT: ", "sharegpt"),
    ("sharegpt:max_prompt=1024,max_output=none", "sharegpt"),  # the defaults, written out
    ("sharegpt: max_total = 4096 ", "sharegpt:max_total=4096"),
    ("sharegpt:max_total=none,min_prompt=1", "sharegpt:min_prompt=1,max_total=none"),
]


@pytest.mark.parametrize(("spec", "canonical"), CANONICAL)
def test_lengths_parse_to_canonical_spec(spec: str, canonical: str) -> None:
    dist = parse_lengths(spec, "prefill")
    assert dist.spec == canonical
    assert parse_lengths(dist.spec, "prefill") == dist


def test_csv_lengths_resolve_against_base_dir_and_cwd(
    lengths_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_base = parse_lengths("csv:lengths.csv#tokens", "decode", base_dir=lengths_csv.parent)
    monkeypatch.chdir(lengths_csv.parent)
    from_cwd = parse_lengths("csv:lengths.csv#tokens", "decode")
    assert from_base.spec == from_cwd.spec == f"csv:{lengths_csv.resolve()}#tokens"
    assert parse_lengths(from_base.spec, "decode") == from_base


SPECS = [
    "129",
    "poisson:1",
    "poisson:32",
    "geometric:50",
    "uniform:16,512",
    "lognormal:mean=300,sigma=1.0",
    "lognormal:median=2,sigma=0.5",
    "lognormal:mean=40,sigma=0",
]


@pytest.mark.parametrize("spec", SPECS)
def test_samples_are_int64_at_least_one_and_reproducible(spec: str) -> None:
    dist = parse_lengths(spec, "prefill")
    draws = dist.sample(np.random.default_rng(7), 1000)
    assert draws.shape == (1000,)
    assert draws.dtype == np.int64
    assert draws.min() >= 1
    np.testing.assert_array_equal(draws, dist.sample(np.random.default_rng(7), 1000))


@pytest.mark.parametrize("spec", [*SPECS, "csv"])
def test_exact_mean_matches_empirical_mean(spec: str, lengths_csv: Path) -> None:
    if spec == "csv":
        spec = f"csv:{lengths_csv}#tokens"
    dist = parse_lengths(spec, "prefill")
    assert within_4_se(dist.sample(np.random.default_rng(11), N), dist.mean)


def test_means_in_closed_form(lengths_csv: Path) -> None:
    assert parse_lengths("poisson:1", "prefill").mean == pytest.approx(1 + math.exp(-1))
    assert parse_lengths("uniform:16,512", "prefill").mean == 264
    # The CSV's 0 is clipped to 1 before averaging.
    assert parse_lengths(f"csv:{lengths_csv}#tokens", "decode").mean == (10 + 1 + 30 + 7) / 4
    assert parse_lengths("lognormal:mean=40.4,sigma=0", "prefill").mean == 40


@pytest.mark.parametrize(
    "spec",
    [
        "lognormal:median=4,sigma=0.5",
        "lognormal:median=1,sigma=0.125",
        "lognormal:mean=8,sigma=0.6",
    ],
)
def test_lognormal_mean_equals_direct_pmf_sum(spec: str) -> None:
    """Cross-check the survival-sum mean against sum k * P(max(1, round X) = k)."""
    dist = parse_lengths(spec, "prefill")
    z = [(math.log(k + 0.5) - dist.mu) / (dist.sigma * math.sqrt(2)) for k in range(1, 5000)]
    tail = [0.5 * math.erfc(x) for x in z]  # tail[k - 1] = P(X >= k + 1/2)
    direct = (1 - tail[0]) + sum(k * (tail[k - 2] - tail[k - 1]) for k in range(2, 5000))
    assert dist.mean == pytest.approx(direct, rel=1e-12)


def test_max_value(lengths_csv: Path) -> None:
    expected = {"129": 129, "uniform:16,512": 512, "poisson:32": None, "geometric:50": None}
    expected |= {"lognormal:mean=300,sigma=1": None, "lognormal:median=7,sigma=0": 7}
    expected |= {f"csv:{lengths_csv}#tokens": 30}
    for spec, value in expected.items():
        assert parse_lengths(spec, "prefill").max_value == value, spec


BAD_LENGTHS = [
    ("zipf:3", "unknown distribution"),
    ("banana", "unknown distribution"),
    ("poisson", "needs parameters"),
    ("poisson:abc", "must be a number"),
    ("poisson:nan", "must be finite"),
    ("poisson:0", "must be > 0"),
    ("geometric:-3", "must be > 0"),
    ("geometric:0.5", "must be >= 1"),
    ("0", "must be >= 1"),
    ("-5", "must be >= 1"),
    ("12.5", "must be an integer"),
    ("uniform:-1,5", "must be >= 1"),
    ("uniform:9,3", "LO <= HI"),
    ("uniform:3", "two bounds"),
    ("uniform:a,5", "must be an integer"),
    ("lognormal:mean=300,sigma=-1", "sigma must be >= 0"),
    ("lognormal:mean=0,sigma=1", "must be > 0"),
    ("lognormal:mean=3,median=3,sigma=1", "exactly one of mean/median"),
    ("lognormal:mean=300", "exactly one of mean/median"),
    ("lognormal:mode=3,sigma=1", "takes mean=M"),
    ("csv:nofile.csv", "csv:PATH#COLUMN"),
    ("sharegpt:foo=3", "got 'foo=3'"),
    ("sharegpt:max_total", "got 'max_total'"),
    ("sharegpt:max_total=9,max_total=10", "max_total given twice"),
    ("sharegpt:max_prompt=abc", "max_prompt must be an integer or none, got 'abc'"),
    ("sharegpt:min_prompt=none", "min_prompt must be an integer, got 'none'"),
    ("sharegpt:min_output=0", "min_output must be >= 1, got 0"),
    ("sharegpt:max_output=2.5", "must be an integer or none"),
    ("sharegpt:min_prompt=9,max_prompt=8", "max_prompt=8 is below min_prompt=9"),
    ("sharegpt:max_total=7", "keeps none of the 11,128 pairs"),
]


@pytest.mark.parametrize(("spec", "reason"), BAD_LENGTHS)
def test_bad_length_specs_name_the_field(spec: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_lengths(spec, "decode")
    assert info.value.field == "decode"
    assert reason in info.value.reason


def test_unknown_distribution_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"poisson:MEAN.*csv:PATH#COLUMN"):
        parse_lengths("zipf:3", "prefill")


@pytest.mark.parametrize(
    ("content", "column", "reason"),
    [
        (None, "tokens", "cannot read"),
        ("id,tokens\n1,5\n", "length", "no column 'length' (found: 'id', 'tokens')"),
        ("id,tokens\n", "tokens", "has no values"),
        ("id,tokens\n1,5\n2,5.5\n", "tokens", "line 3, column 'tokens': '5.5' is not an integer"),
        ("id,tokens\n1,5\n2,-4\n", "tokens", "line 3, column 'tokens': '-4' is negative"),
    ],
)
def test_bad_csv_lengths(tmp_path: Path, content: str | None, column: str, reason: str) -> None:
    path = tmp_path / "lengths.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        parse_lengths(f"csv:lengths.csv#{column}", "prefill", base_dir=tmp_path)
    assert info.value.field == "prefill"
    assert reason in info.value.reason


# --- arrival processes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "canonical", "cv"),
    [
        ("poisson", "poisson", 1.0),
        ("Gamma: 2.0", "gamma:2", 2.0),
        ("deterministic", "deterministic", 0.0),
    ],
)
def test_arrivals_parse(spec: str, canonical: str, cv: float) -> None:
    process = parse_arrivals(spec)
    assert (process.spec, process.cv) == (canonical, cv)


@pytest.mark.parametrize("spec", ["poisson", "gamma:2", "gamma:50", "deterministic"])
def test_count_and_duration_semantics(spec: str) -> None:
    process = parse_arrivals(spec)
    by_count = process.times(np.random.default_rng(3), 4.0, count=500)
    by_time = process.times(np.random.default_rng(3), 4.0, duration=100.0)
    for times in (by_count, by_time):
        assert times.dtype == np.float64
        assert times[0] > 0
        assert (np.diff(times) >= 0).all()
    assert len(by_count) == 500
    assert by_time[-1] <= 100.0
    np.testing.assert_array_equal(by_count, process.times(np.random.default_rng(3), 4.0, count=500))


def test_duration_spanning_many_blocks_stitches_exactly() -> None:
    class TinyBlocks(Deterministic):
        def _block(self, rng, rate, done, last, size):  # type: ignore[no-untyped-def]
            return super()._block(rng, rate, done, last, min(size, 3))

    times = TinyBlocks("deterministic", 0.0).times(np.random.default_rng(0), 10.0, duration=5.0)
    np.testing.assert_array_equal(times, np.arange(1, 51) / 10.0)


def test_deterministic_is_exact() -> None:
    process = parse_arrivals("deterministic")
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(process.times(rng, 4.0, count=5), [0.25, 0.5, 0.75, 1.0, 1.25])
    np.testing.assert_array_equal(process.times(rng, 10.0, duration=1.0), np.arange(1, 11) / 10.0)


@pytest.mark.parametrize("spec", ["poisson", "gamma:2"])
def test_mean_interarrival_is_one_over_rate(spec: str) -> None:
    times = parse_arrivals(spec).times(np.random.default_rng(5), 8.0, count=N)
    assert within_4_se(np.diff(times, prepend=0.0), 1 / 8.0)


def test_gamma_interarrival_cv() -> None:
    gaps = np.diff(
        parse_arrivals("gamma:2").times(np.random.default_rng(9), 3.0, count=N), prepend=0
    )
    cv = gaps.std() / gaps.mean()
    # Gamma(shape 1/4) gaps are heavy-tailed (kurtosis 27), so the sample CV's SE has no simple
    # closed form; estimate it by batch means: the spread of the CV over 100 batches of 2,000.
    batch_cvs = [batch.std() / batch.mean() for batch in gaps.reshape(100, -1)]
    se = np.std(batch_cvs, ddof=1) / math.sqrt(100)
    assert abs(cv - 2.0) <= 4 * se
    assert se < 0.02  # the check is sharp enough to tell CV 2 from sqrt(2) or 1


def test_arrival_count_in_window_is_rate_times_duration() -> None:
    # 400 independent windows: each count is Poisson(50), so the mean count has SE sqrt(50/400).
    process = parse_arrivals("poisson")
    rng = np.random.default_rng(2)
    counts = np.array([len(process.times(rng, 5.0, duration=10.0)) for _ in range(400)])
    assert within_4_se(counts.astype(float), 50.0)


def test_times_argument_errors() -> None:
    process = parse_arrivals("poisson")
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="exactly one"):
        process.times(rng, 1.0)
    with pytest.raises(ValueError, match="exactly one"):
        process.times(rng, 1.0, count=3, duration=3.0)
    with pytest.raises(ConfigError) as info:
        process.times(rng, 0.0, count=3)
    assert info.value.field == "rate"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("bursty", "unknown arrival process"),
        ("gamma", "unknown arrival process"),
        ("poisson:3", "unknown arrival process"),
        ("gamma:0", "must be > 0"),
        ("gamma:-1", "must be > 0"),
        ("gamma:x", "must be a number"),
    ],
)
def test_bad_arrival_specs(spec: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_arrivals(spec, "arrivals")
    assert info.value.field == "arrivals"
    assert reason in info.value.reason


def test_unknown_arrivals_list_known_ones() -> None:
    with pytest.raises(ConfigError, match="poisson, gamma:CV"):
        parse_arrivals("bursty")


# --- traces --------------------------------------------------------------------------------

TRACE = """\
num_decode_tokens,arrived_at,extra,num_prefill_tokens
7,2.0,a,200
5,0.5,b,100
9,2.0,c,300
3,1.0,d,150
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return path


def test_trace_loads_sorted_stably_ignoring_extra_columns(tmp_path: Path) -> None:
    path = write(tmp_path, TRACE)
    trace = load_trace(path)
    assert len(trace) == 4
    assert trace.path == str(path)
    np.testing.assert_array_equal(trace.arrived_at, [0.0, 0.5, 1.5, 1.5])  # from the first
    np.testing.assert_array_equal(trace.prefill, [100, 150, 200, 300])
    np.testing.assert_array_equal(trace.decode, [5, 3, 7, 9])
    assert trace.prefill.dtype == trace.decode.dtype == np.int64
    assert trace.arrived_at.dtype == np.float64


def test_trace_rate_and_scaling(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, TRACE))
    assert trace.mean_rate == pytest.approx(3 / 1.5)
    faster = trace.scaled_to(8.0)
    assert faster.mean_rate == pytest.approx(8.0)
    np.testing.assert_allclose(faster.arrived_at, trace.arrived_at / 4)
    np.testing.assert_array_equal(faster.prefill, trace.prefill)


@pytest.mark.parametrize("rows", ["4,1,1\n", "4,1,1\n4,2,2\n"], ids=["one row", "one instant"])
def test_a_trace_without_a_rate_is_refused(tmp_path: Path, rows: str) -> None:
    """One row (or rows all at one instant) has no rate: it used to report inf requests/s."""
    with pytest.raises(ConfigError, match="at least 2 requests with distinct arrival times"):
        load_trace(write(tmp_path, "arrived_at,num_prefill_tokens,num_decode_tokens\n" + rows))


HEADER = "arrived_at,num_prefill_tokens,num_decode_tokens\n"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read"),
        ("", "is empty"),
        (b"\xff\xfe\x00\x81binary", "is not a text file"),
        ('{"arrived_at": [1]}\n', "no column"),
        ("arrived_at,num_decode_tokens\n1,2\n", "no column 'num_prefill_tokens' (found: "),
        (HEADER, "no requests"),
        (HEADER + "0.1,5,5\nsoon,5,5\n", "line 3, column 'arrived_at': 'soon' is not a number"),
        (HEADER + "0.1,5,5\n-2,5,5\n", "line 3, column 'arrived_at': '-2' is negative"),
        (HEADER + "0.1,5,-5\n", "line 2, column 'num_decode_tokens': '-5' is negative"),
        (HEADER + "0.1,5,5\n\n0.2,0,5\n", "line 4, column 'num_prefill_tokens': token counts"),
        (HEADER + "0.1,5.5,5\n", "'5.5' is not an integer"),
        (HEADER + "0.1,5\n", "line 2: missing value for 'num_decode_tokens'"),
        (HEADER + "0.1,5,5\n0.2,99999999999999999999,5\n", "line 3, column "
         "'num_prefill_tokens': '99999999999999999999' is too large"),
    ],
)
def test_bad_traces(tmp_path: Path, content: str | bytes | None, reason: str) -> None:
    path = tmp_path / "trace.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_trace(path, "workload.trace")
    assert info.value.field == "workload.trace"
    assert reason in info.value.reason


def test_scaling_needs_a_positive_rate(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, TRACE))
    with pytest.raises(ConfigError) as info:
        trace.scaled_to(0.0)
    assert info.value.field == "rate"


@pytest.mark.parametrize("spec", ["lognormal:median=20,sigma=50", "2000000000",
                                  "geometric:1e12"])
def test_absurd_mean_lengths_are_refused(spec: str) -> None:
    """A median-20 lognormal with sigma 50 has a mean of e^1253: it used to overflow."""
    with pytest.raises(ConfigError, match="servelab accepts at most 1e\\+09") as info:
        parse_lengths(spec, "prefill")
    assert info.value.field == "prefill"

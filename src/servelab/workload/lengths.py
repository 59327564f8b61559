"""Token-length distributions for prompts (prefill) and outputs (decode).

Every distribution draws integers >= 1 (a request has at least one prompt and one output token)
and reports the *exact* mean of what it draws, clip and rounding included, because the capacity
bound mu / (m_p + m_d) is only as right as those means. The KV-memory bound needs more of each
distribution (``servelab.analysis.memory``): its second moment, how its values fall modulo a
block size, and its survival function at multiples of a chunk size; each is exact too, or, for
the far tail of a lognormal, the continuous integral the mean uses.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from servelab.errors import ConfigError
from servelab.workload.sharegpt import NAME as SHAREGPT
from servelab.workload.sharegpt import PairFilter, pairs, parse_filter
from servelab.workload.trace import read_csv

KNOWN = (
    "an integer (fixed length), poisson:MEAN, geometric:MEAN, uniform:LO,HI, "
    "lognormal:mean=M,sigma=S, lognormal:median=M,sigma=S, csv:PATH#COLUMN, "
    "sharegpt[:KEY=N,...]"
)

# Upper-tail z with P(Z > z) = 1e-12: the lognormal mean sums survival terms up to there.
_TAIL_Z = 7.034483825301132
# A Poisson pmf is tabulated over mean +- (12 sd + 40): the mass outside is below 1e-25.
_POISSON_SDS, _POISSON_PAD = 12.0, 40
# A geometric's survival q^k is treated as 0 from where it drops below this.
_NEGLIGIBLE = 1e-17
#: The largest mean length accepted: a thousand times the longest context windows of today.
MAX_MEAN_TOKENS = 1e9
# Cap on survival terms summed one by one; very heavy tails go on as a closed-form integral.
_MAX_TERMS = 1 << 20
_ERFC = np.frompyfunc(math.erfc, 1, 1)


def format_number(value: float) -> str:
    """Shortest round-trip text for a number, without a trailing ``.0``."""
    text = repr(float(value))
    return text.removesuffix(".0")


def parse_number(text: str, field: str, what: str) -> float:
    """A finite float, or a ConfigError saying which parameter was not one."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(field, f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ConfigError(field, f"{what} must be finite, got {text!r}")
    return value


def _parse_int(text: str, field: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(field, f"{what} must be an integer, got {text!r}") from None


def _parse_positive(text: str, field: str, what: str) -> float:
    value = parse_number(text, field, what)
    if value <= 0:
        raise ConfigError(field, f"{what} must be > 0, got {text!r}")
    return value


def _lognormal_survival(x: np.ndarray | float, mu: float, sigma: float) -> np.ndarray:
    """P(X >= x) for log X ~ N(mu, sigma^2), via erfc so tiny tails keep relative precision."""
    z = (np.log(x) - mu) / (sigma * math.sqrt(2))
    return 0.5 * np.asarray(_ERFC(z), dtype=np.float64)


def _sum_of_squares(n: int) -> int:
    """1^2 + 2^2 + ... + n^2, exact."""
    return n * (n + 1) * (2 * n + 1) // 6


def _residues_of(values: np.ndarray, probs: np.ndarray, modulus: int) -> np.ndarray:
    """P(Y mod modulus = r), r = 0..modulus-1, for Y taking ``values`` with ``probs``."""
    return np.bincount(values % modulus, weights=probs, minlength=modulus)


@dataclass(frozen=True)
class LengthDist(ABC):
    """A distribution of integer token counts >= 1."""

    @property
    @abstractmethod
    def spec(self) -> str:
        """Canonical spec text; parse_lengths(spec) gives back an equal distribution."""

    @property
    @abstractmethod
    def mean(self) -> float:
        """Exact mean of ``sample``, after rounding and the clip at 1."""

    @property
    def max_value(self) -> int | None:
        """Largest value ``sample`` can return; None when unbounded."""
        return None

    @property
    @abstractmethod
    def second_moment(self) -> float:
        """Exact E[Y^2] of ``sample``'s draws Y (the KV-memory bound's o^2 and s^2 terms)."""

    @abstractmethod
    def residues(self, modulus: int) -> np.ndarray:
        """P(Y mod ``modulus`` = r) for r = 0..modulus-1: how lengths fall in KV blocks."""

    @abstractmethod
    def survival(self, k: np.ndarray) -> np.ndarray:
        """P(Y > k), elementwise, for integers k >= 0."""

    @property
    def survival_end(self) -> int:
        """A length beyond which ``survival`` may be taken as 0, or, for a distribution with a
        far tail, as given by ``tail_excess``."""
        assert self.max_value is not None, "an unbounded distribution says where its tail ends"
        return self.max_value

    def tail_excess(self, c: float) -> tuple[float, float]:
        """(E[(Y - c)^+], E[(Y^2 - c^2)^+]) for c >= ``survival_end``: what sums that stop there
        leave out. Zero unless the distribution's tail goes on (a lognormal's)."""
        return 0.0, 0.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent int64 draws, each >= 1."""
        return np.maximum(self._draw(rng, n), 1).astype(np.int64, copy=False)

    @abstractmethod
    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Raw draws before the clip at 1."""


@dataclass(frozen=True)
class Fixed(LengthDist):
    value: int

    @property
    def spec(self) -> str:
        return str(self.value)

    @property
    def mean(self) -> float:
        return float(self.value)

    @property
    def max_value(self) -> int:
        return self.value

    @property
    def second_moment(self) -> float:
        return float(self.value) ** 2

    def residues(self, modulus: int) -> np.ndarray:
        return _residues_of(np.array([self.value]), np.ones(1), modulus)

    def survival(self, k: np.ndarray) -> np.ndarray:
        return (np.asarray(k) < self.value).astype(np.float64)

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value, dtype=np.int64)


@dataclass(frozen=True)
class Poisson(LengthDist):
    lam: float

    @property
    def spec(self) -> str:
        return f"poisson:{format_number(self.lam)}"

    @property
    def mean(self) -> float:
        # The clip moves the mass P(0) = e^-m from 0 to 1.
        return self.lam + math.exp(-self.lam)

    @property
    def second_moment(self) -> float:
        # E[X^2] = m + m^2, and the clip adds 1^2 - 0^2 with probability e^-m.
        return self.lam + self.lam**2 + math.exp(-self.lam)

    @cached_property
    def _pmf(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values, P(Y = value), P(Y >= value)) over the mode +- (12 sd + 40), which holds all
        but 1e-25 of the mass. Built from log p(mode) by the ratios p(k)/p(k-1) = m/k, so a
        mean of 10^9 costs a table of about 10^6 entries, not 10^9."""
        lam, mode = self.lam, math.floor(self.lam)
        width = math.ceil(_POISSON_SDS * math.sqrt(lam)) + _POISSON_PAD
        lo = max(0, mode - width)
        k = np.arange(lo, mode + width + 1)
        step = math.log(lam) - np.log(np.maximum(k, 1))  # log p(k) - log p(k - 1)
        at_mode = mode * math.log(lam) - lam - math.lgamma(mode + 1)
        i = mode - lo
        below = np.cumsum(step[1 : i + 1][::-1])[::-1]  # log p(mode) - log p(k), k < mode
        above = np.cumsum(step[i + 1 :])
        p = np.exp(np.concatenate((at_mode - below, [at_mode], at_mode + above)))
        # log p(mode) cancels large terms (10^6 log 10^6 - 10^6 - log 10^6!) and misses by
        # about 1e-9 relative; the window holds all but 1e-25 of the mass, so normalise.
        p /= p.sum()
        if lo == 0:  # the clip at 1
            p[1] += p[0]
            k, p = k[1:], p[1:]
        return k, p, np.cumsum(p[::-1])[::-1]

    def residues(self, modulus: int) -> np.ndarray:
        values, p, _ = self._pmf
        return _residues_of(values, p, modulus)

    def survival(self, k: np.ndarray) -> np.ndarray:
        values, _, at_least = self._pmf
        return np.append(at_least, 0.0)[np.searchsorted(values, k, side="right")]

    @property
    def survival_end(self) -> int:
        return int(self._pmf[0][-1])

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.poisson(self.lam, n)


@dataclass(frozen=True)
class Geometric(LengthDist):
    """Geometric on {1, 2, ...}: the number of tokens until a stop token of probability 1/mean."""

    average: float

    @property
    def spec(self) -> str:
        return f"geometric:{format_number(self.average)}"

    @property
    def mean(self) -> float:
        return self.average

    @property
    def second_moment(self) -> float:
        # (2 - p) / p^2 with p = 1 / mean.
        return 2 * self.average**2 - self.average

    @property
    def _log_q(self) -> float:
        """log q, q = 1 - 1/mean the chance that a token is not the stop token (log1p keeps it
        exact when the mean is large)."""
        return math.log1p(-1.0 / self.average) if self.average > 1 else -math.inf

    def _q_power(self, n: np.ndarray) -> np.ndarray:
        """q^n for integers n >= 0 (q^0 = 1 also when every request stops at once, q = 0)."""
        n = np.asarray(n)
        if self.average == 1:
            return (n == 0).astype(np.float64)
        return np.exp(n * self._log_q)

    def residues(self, modulus: int) -> np.ndarray:
        # P(Y = k) = p q^(k-1); the k = r, r + m, r + 2m, ... sum to p q^(r-1) / (1 - q^m),
        # with r = m standing for the residue 0.
        r = np.arange(modulus)
        r[0] = modulus
        return self._q_power(r - 1) / self.average / -math.expm1(modulus * self._log_q)

    def survival(self, k: np.ndarray) -> np.ndarray:
        return self._q_power(k)

    @property
    def survival_end(self) -> int:
        if self.average == 1:
            return 1
        return math.ceil(math.log(_NEGLIGIBLE) / self._log_q)

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.geometric(1.0 / self.average, n)


@dataclass(frozen=True)
class Uniform(LengthDist):
    lo: int
    hi: int

    @property
    def spec(self) -> str:
        return f"uniform:{self.lo},{self.hi}"

    @property
    def mean(self) -> float:
        return (self.lo + self.hi) / 2

    @property
    def max_value(self) -> int:
        return self.hi

    @property
    def second_moment(self) -> float:
        count = self.hi - self.lo + 1
        return (_sum_of_squares(self.hi) - _sum_of_squares(self.lo - 1)) / count

    def residues(self, modulus: int) -> np.ndarray:
        # Every whole run of ``modulus`` values hits each residue once; the rest, from lo on,
        # hit one more each.
        count = self.hi - self.lo + 1
        hits = np.full(modulus, count // modulus, dtype=np.float64)
        hits[(self.lo + np.arange(count % modulus)) % modulus] += 1
        return hits / count

    def survival(self, k: np.ndarray) -> np.ndarray:
        return np.clip((self.hi - np.asarray(k)) / (self.hi - self.lo + 1), 0.0, 1.0)

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.lo, self.hi, size=n, endpoint=True)


@dataclass(frozen=True)
class Lognormal(LengthDist):
    """round(X) for lognormal X, parameterised by its continuous mean or median and log-sd."""

    center: str  # "mean" or "median": which the user gave
    value: float
    sigma: float

    @property
    def spec(self) -> str:
        return (
            f"lognormal:{self.center}={format_number(self.value)},sigma={format_number(self.sigma)}"
        )

    @property
    def mu(self) -> float:
        """Mean of log X."""
        shift = self.sigma**2 / 2 if self.center == "mean" else 0.0
        return math.log(self.value) - shift

    @cached_property
    def _terms(self) -> int:
        """Where the sums over lengths stop: P(X > there) < 1e-12, or ``_MAX_TERMS``."""
        tail_start = math.exp(self.mu + _TAIL_Z * self.sigma)
        return int(min(max(math.ceil(tail_start), 1), _MAX_TERMS))

    @cached_property
    def _above(self) -> np.ndarray:
        """P(Y > k) = P(X >= k + 1/2) for k = 1 .. ``_terms`` - 1."""
        k = np.arange(1, self._terms, dtype=np.float64)
        return _lognormal_survival(k + 0.5, self.mu, self.sigma)

    @cached_property
    def mean(self) -> float:
        """E[max(1, round X)] = 1 + sum_{k>=1} P(X >= k + 1/2), summed until the tail is < 1e-12.

        The terms from there on (or from ``_MAX_TERMS``, for very heavy tails) are replaced by
        their integral E[(X - K)^+]; they are midpoint-rule samples of it, so the error is tiny.
        """
        if self.sigma == 0:
            return max(1.0, float(np.rint(math.exp(self.mu))))
        return 1.0 + float(self._above.sum()) + self._excess(float(self._terms))

    @cached_property
    def second_moment(self) -> float:
        """E[Y^2] = 1 + sum_{k>=1} (2k + 1) P(X >= k + 1/2), closed as the mean is, by the
        integral E[(X^2 - K^2)^+] of the terms from K on."""
        if self.sigma == 0:
            return self.mean**2
        k = np.arange(1, self._terms, dtype=np.float64)
        return 1.0 + float(((2 * k + 1) * self._above).sum()) + self._excess_square(self._terms)

    @property
    def max_value(self) -> int | None:
        return int(self.mean) if self.sigma == 0 else None

    def residues(self, modulus: int) -> np.ndarray:
        """From the pmf up to ``_terms``; the mass beyond (below 1e-12, or a very heavy tail
        spread over millions of tokens) falls evenly on the residues."""
        if self.sigma == 0:
            return _residues_of(np.array([int(self.mean)]), np.ones(1), modulus)
        above = np.concatenate(([1.0], self._above))  # P(Y > k), k = 0 .. _terms - 1
        pmf = above[:-1] - above[1:]  # P(Y = k), k = 1 .. _terms - 1
        values = np.arange(1, self._terms)
        return _residues_of(values, pmf, modulus) + above[-1] / modulus

    def survival(self, k: np.ndarray) -> np.ndarray:
        k = np.asarray(k)
        if self.sigma == 0:
            return (k < self.mean).astype(np.float64)
        inside = _lognormal_survival(np.maximum(k, 1) + 0.5, self.mu, self.sigma)
        return np.where(k < 1, 1.0, inside)

    @property
    def survival_end(self) -> int:
        return int(self.mean) if self.sigma == 0 else self._terms - 1

    def tail_excess(self, c: float) -> tuple[float, float]:
        if self.sigma == 0:
            return 0.0, 0.0
        return self._excess(c), self._excess_square(c)

    def _excess(self, c: float) -> float:
        """E[(X - c)^+] = E[X; X > c] - c P(X > c); the first term is a survival of X e^sigma^2."""
        mu, sigma = self.mu, self.sigma
        above = math.exp(mu + sigma**2 / 2) * _lognormal_survival(c, mu + sigma**2, sigma)
        return float(above - c * _lognormal_survival(c, mu, sigma))

    def _excess_square(self, c: float) -> float:
        """E[(X^2 - c^2)^+] = E[X^2; X > c] - c^2 P(X > c), E[X^2; X > c] being a survival of
        X e^(2 sigma^2) times E[X^2] = e^(2 mu + 2 sigma^2)."""
        mu, sigma = self.mu, self.sigma
        above = math.exp(2 * mu + 2 * sigma**2) * _lognormal_survival(c, mu + 2 * sigma**2, sigma)
        return float(above - c * c * _lognormal_survival(c, mu, sigma))

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.rint(rng.lognormal(self.mu, self.sigma, n))


def draw_rows(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """``n`` row indices uniform on [0, rows), with replacement: how every resampled length
    picks its values, so a joint draw of ShareGPT pairs on a stream gives the same prompts as
    the prompt column's own draw on it."""
    return rng.integers(0, rows, size=n)


class Resampled(LengthDist):
    """Uniform resampling, with replacement, of a fixed population: its mean is exact."""

    @property
    @abstractmethod
    def population(self) -> np.ndarray:
        """The values drawn from, each >= 1."""

    @property
    def mean(self) -> float:
        return float(self.population.mean())

    @property
    def max_value(self) -> int:
        return int(self.population.max())

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        population = self.population
        return population[draw_rows(rng, len(population), n)]

    @property
    def second_moment(self) -> float:
        return float(np.mean(self.population.astype(np.float64) ** 2))

    def residues(self, modulus: int) -> np.ndarray:
        population = self.population
        n = len(population)
        return _residues_of(population, np.full(n, 1.0 / n), modulus)

    @cached_property
    def _sorted(self) -> np.ndarray:
        return np.sort(self.population)

    def survival(self, k: np.ndarray) -> np.ndarray:
        below = np.searchsorted(self._sorted, k, side="right")
        return 1.0 - below / len(self.population)


@dataclass(frozen=True)
class Empirical(Resampled):
    """A CSV column, zeros clipped to 1."""

    path: str
    column: str
    values: np.ndarray = dataclasses.field(compare=False, repr=False)

    @property
    def spec(self) -> str:
        return f"csv:{self.path}#{self.column}"

    @property
    def population(self) -> np.ndarray:
        return self.values


@dataclass(frozen=True)
class ShareGPT(Resampled):
    """One column (``prompt`` or ``output``) of the ShareGPT pairs that ``pair_filter`` keeps.

    ``written`` holds the filter settings the spec wrote, so that two sides drawing pairs
    jointly can combine them (``sharegpt.merge_filters``).
    """

    column: str
    pair_filter: PairFilter
    written: tuple[tuple[str, int | None], ...] = dataclasses.field(default=(), compare=False)

    @property
    def spec(self) -> str:
        args = self.pair_filter.args
        return f"{SHAREGPT}:{args}" if args else SHAREGPT

    @property
    def population(self) -> np.ndarray:
        rows = pairs(self.pair_filter)
        return rows.prompt if self.column == "prompt" else rows.output


@dataclass(frozen=True)
class LengthPairs:
    """Joint (prompt, output) lengths, each row equally likely: a trace's, or a joint table's
    (such as ShareGPT conversations), whose lengths are not independent."""

    prompt: np.ndarray
    output: np.ndarray


@dataclass(frozen=True)
class IndependentLengths:
    """Prompt and output lengths drawn independently, as --prefill and --decode are."""

    prefill: LengthDist
    decode: LengthDist


LengthSource = LengthPairs | IndependentLengths


def _fixed(text: str, field: str) -> Fixed:
    value = _parse_int(text, field, "a fixed length")
    if value < 1:
        raise ConfigError(field, f"a fixed length must be >= 1, got {value}")
    return Fixed(value)


def _poisson(args: str, field: str, base_dir: Path | None) -> Poisson:
    return Poisson(_parse_positive(args, field, "poisson mean"))


def _geometric(args: str, field: str, base_dir: Path | None) -> Geometric:
    mean = _parse_positive(args, field, "geometric mean")
    if mean < 1:
        raise ConfigError(
            field, f"geometric mean must be >= 1 (its support is 1, 2, ...), got {args!r}"
        )
    return Geometric(mean)


def _uniform(args: str, field: str, base_dir: Path | None) -> Uniform:
    parts = args.split(",")
    if len(parts) != 2:
        raise ConfigError(field, f"uniform needs two bounds, uniform:LO,HI, got {args!r}")
    lo, hi = (_parse_int(part.strip(), field, "a uniform bound") for part in parts)
    if lo < 1:
        raise ConfigError(field, f"uniform lower bound must be >= 1, got {lo}")
    if lo > hi:
        raise ConfigError(field, f"uniform bounds must satisfy LO <= HI, got {lo} > {hi}")
    return Uniform(lo, hi)


def _lognormal(args: str, field: str, base_dir: Path | None) -> Lognormal:
    params: dict[str, str] = {}
    for part in args.split(","):
        key, sep, text = (piece.strip() for piece in part.partition("="))
        if not sep or key not in ("mean", "median", "sigma") or key in params:
            raise ConfigError(
                field, f"lognormal takes mean=M (or median=M) and sigma=S, got {args!r}"
            )
        params[key] = text
    centers = [key for key in ("mean", "median") if key in params]
    if len(centers) != 1 or "sigma" not in params:
        raise ConfigError(field, f"lognormal needs exactly one of mean/median, and sigma: {args!r}")
    sigma = parse_number(params["sigma"], field, "lognormal sigma")
    if sigma < 0:
        raise ConfigError(field, f"lognormal sigma must be >= 0, got {params['sigma']!r}")
    center = centers[0]
    return Lognormal(center, _parse_positive(params[center], field, f"lognormal {center}"), sigma)


def _csv(args: str, field: str, base_dir: Path | None) -> Empirical:
    location, sep, column = args.rpartition("#")
    if not sep or not location or not column:
        raise ConfigError(field, f"expected csv:PATH#COLUMN, got csv:{args}")
    path = Path(location)
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    table = read_csv(path, [column], field)
    if not len(table):
        raise ConfigError(field, f"column {column!r} of {path} has no values")
    values = np.maximum(table.numbers(column, int), 1)
    return Empirical(str(path.resolve()), column, values)


def _sharegpt(args: str, field: str, base_dir: Path | None) -> ShareGPT:
    column = {"prefill": "prompt", "decode": "output"}.get(field)
    if column is None:
        raise ConfigError(field, "sharegpt gives prefill (prompt) or decode (output) lengths")
    pair_filter, written = parse_filter(args, field)
    return ShareGPT(column, pair_filter, tuple(written.items()))


_PARSERS: dict[str, Callable[[str, str, Path | None], LengthDist]] = {
    "poisson": _poisson,
    "geometric": _geometric,
    "uniform": _uniform,
    "lognormal": _lognormal,
    "csv": _csv,
    SHAREGPT: _sharegpt,
}
#: Distributions whose parameters all have defaults, so that the bare name is a spec.
_BARE = (SHAREGPT,)


def parse_lengths(spec: str, field: str, base_dir: Path | None = None) -> LengthDist:
    """Parse a ``--prefill``/``--decode`` spec; relative CSV paths resolve against base_dir/cwd.

    A mean beyond ``MAX_MEAN_TOKENS`` (a lognormal given by its median with a large sigma
    reaches e^1000) is refused: no engine serves it, and the theory's numbers would overflow.
    """
    dist = _parse_spec(spec, field, base_dir)
    try:
        mean = dist.mean
    except OverflowError:
        mean = math.inf
    if not mean <= MAX_MEAN_TOKENS:
        size = "too large for a float64" if math.isinf(mean) else f"{mean:.3g}"
        raise ConfigError(field, f"{dist.spec} has a mean of {size} tokens per request; "
                                 f"servelab accepts at most {MAX_MEAN_TOKENS:.0e}")
    return dist


def _parse_spec(spec: str, field: str, base_dir: Path | None) -> LengthDist:
    text = spec.strip()
    name, sep, args = text.partition(":")
    key = name.strip().lower()
    parser = _PARSERS.get(key)
    if not sep and key not in _BARE:
        if parser is not None:
            raise ConfigError(field, f"{text!r} needs parameters; known: {KNOWN}")
        try:
            float(text)
        except ValueError:
            raise ConfigError(field, f"unknown distribution {text!r}; known: {KNOWN}") from None
        return _fixed(text, field)
    if parser is None:
        raise ConfigError(field, f"unknown distribution {name!r}; known: {KNOWN}")
    return parser(args.strip(), field, base_dir)

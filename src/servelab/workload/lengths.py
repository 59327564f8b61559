"""Token-length distributions for prompts (prefill) and outputs (decode).

Every distribution draws integers >= 1 (a request has at least one prompt and one output token)
and reports the *exact* mean of what it draws, clip and rounding included, because the capacity
bound mu / (m_p + m_d) is only as right as those means.
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
    def mean(self) -> float:
        """E[max(1, round X)] = 1 + sum_{k>=1} P(X >= k + 1/2), summed until the tail is < 1e-12.

        The terms from there on (or from ``_MAX_TERMS``, for very heavy tails) are replaced by
        their integral E[(X - K)^+]; they are midpoint-rule samples of it, so the error is tiny.
        """
        if self.sigma == 0:
            return max(1.0, float(np.rint(math.exp(self.mu))))
        tail_start = math.exp(self.mu + _TAIL_Z * self.sigma)
        terms = int(min(max(math.ceil(tail_start), 1), _MAX_TERMS))
        k = np.arange(1, terms, dtype=np.float64)
        exact = _lognormal_survival(k + 0.5, self.mu, self.sigma).sum()
        return 1.0 + float(exact) + self._excess(float(terms))

    @property
    def max_value(self) -> int | None:
        return int(self.mean) if self.sigma == 0 else None

    def _excess(self, c: float) -> float:
        """E[(X - c)^+] = E[X; X > c] - c P(X > c); the first term is a survival of X e^sigma^2."""
        mu, sigma = self.mu, self.sigma
        above = math.exp(mu + sigma**2 / 2) * _lognormal_survival(c, mu + sigma**2, sigma)
        return float(above - c * _lognormal_survival(c, mu, sigma))

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

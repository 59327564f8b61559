"""Batch-time models: how long one engine iteration takes, given the shape of its batch.

The simulator needs one duration per batch (cheap, scalar) and the theory needs the whole curve
t(n) for n = 1..budget (vectorized). Each model therefore writes its formula once, as arithmetic
that works on Python numbers and numpy arrays alike, and the base class derives the rest.
Times are seconds internally; the YAML form (``to_dict`` / ``timing_from_dict``) is milliseconds,
as the keys say.

Any model takes an optional GEMM tile size T (``tile``; rad_slai_related.md A.2): the kernels
compute whole tiles of T rows, so a batch of n tokens costs what ceil(n/T)*T tokens cost. The
base class rounds, so every caller (engine, theory, k_max region) sees the tiled cost.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from servelab.errors import ConfigError, ConfigWarning
from servelab.files import CSV_LIMIT, read_text


@dataclass(frozen=True)
class _Param:
    """One numeric parameter: its YAML key, dataclass field, display unit and ms->s scale."""

    key: str
    attr: str
    label: str
    unit: str = "ms"
    scale: float = 1e-3
    integer: bool = False

    def parse(self, d: Mapping[str, Any], field: str) -> float | int:
        """Validate ``d[key]`` and convert it to internal units."""
        where = f"{field}.{self.key}"
        value = d[self.key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(where, f"must be a number, got {value!r}")
        if self.integer:
            if not isinstance(value, int) or value < 1:
                raise ConfigError(where, f"must be an integer >= 1, got {value!r}")
            return value
        if not math.isfinite(value):
            raise ConfigError(where, "must be finite")
        if value < 0:
            raise ConfigError(where, "must be >= 0")
        return value * self.scale

    def to_yaml(self, model: TimingModel) -> float | int:
        """The YAML value, to 12 digits so 11.28 ms does not print as 11.280000000000001."""
        value = getattr(model, self.attr)
        return value if self.integer else float(f"{value / self.scale:.12g}")

    def show(self, model: TimingModel) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.label}={self.to_yaml(model):g}{unit}"


def _check_keys(d: Mapping[str, Any], kind: str, keys: list[str], field: str) -> None:
    """Reject unknown keys (likely typos) before reporting missing ones."""
    expected = ["model", *keys, _TILE.key]  # the tile is optional
    for key in d:
        if key not in expected:
            raise ConfigError(
                f"{field}.{key}", f"unknown key for model {kind}; expected: {', '.join(expected)}"
            )
    for key in keys:
        if key not in d:
            raise ConfigError(f"{field}.{key}", f"missing (model {kind} needs {', '.join(keys)})")


#: The optional tile size: a whole number of tokens, shown and written without a unit.
_TILE = _Param("tile", "tile", "tile", unit="", scale=1, integer=True)


@dataclass(frozen=True)
class TimingModel(ABC):
    """Duration of one iteration as a function of its shape; see the module docstring."""

    kind: ClassVar[str]
    token_only: ClassVar[bool] = False
    _params: ClassVar[tuple[_Param, ...]] = ()

    #: GEMM tile size T: a batch of n tokens costs as ceil(n/T)*T tokens; None: no tiling.
    tile: int | None = dataclasses.field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        tile = self.tile
        if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
            raise ConfigError("timing.tile", f"must be an integer >= 1, got {tile!r}")

    @abstractmethod
    def _durations(self, prefill: ArrayLike, decode: ArrayLike, num_seqs: ArrayLike) -> Any:
        """The model's formula, untiled; numbers or numpy arrays."""

    def tiled(self, n: Any) -> Any:
        """Token counts rounded up to whole tiles (``n`` itself without a tile)."""
        tile = self.tile
        return n if tile is None else -(-n // tile) * tile

    def durations(self, prefill: ArrayLike, decode: ArrayLike, num_seqs: ArrayLike) -> Any:
        """Vectorized ``duration``: accepts numbers or numpy arrays, returns the same shape.

        With a tile, the rows that pad the batch to whole tiles run as prefill rows: they pass
        through the GEMMs like prompt tokens and hold no sequence and no KV.
        """
        if self.tile is not None:
            n = np.add(prefill, decode)
            prefill = np.add(prefill, self.tiled(n) - n)
        return self._durations(prefill, decode, num_seqs)

    def duration(self, prefill_tokens: int, decode_tokens: int, num_seqs: int) -> float:
        """Seconds for one batch of this shape (the simulator's hot loop)."""
        return float(self.durations(prefill_tokens, decode_tokens, num_seqs))

    def _curve(self, n: ArrayLike, prefill_fraction: float) -> Any:
        """t(n) at a workload mix: n*f prefill tokens from one request plus n*(1-f) decodes."""
        n = np.asarray(n, dtype=float)
        decode = n * (1.0 - prefill_fraction)
        # The padding from n itself: n*f + n*(1-f) can round just past a tile boundary.
        prefill = n * prefill_fraction + (self.tiled(n) - n)
        return self._durations(prefill, decode, decode + (prefill_fraction > 0))

    def tokens_duration(self, n: int, prefill_fraction: float = 0.5) -> float:
        """Seconds for a batch of n tokens (``prefill_fraction`` only matters if not token-only)."""
        return float(self._curve(n, prefill_fraction))

    def tokens_durations(self, n: ArrayLike, prefill_fraction: float = 0.5) -> np.ndarray:
        """``tokens_duration`` for an array of token counts."""
        return np.asarray(self._curve(n, prefill_fraction), dtype=float)

    def curve(self, budget: int, prefill_fraction: float = 0.5) -> np.ndarray:
        """t(n) for n = 1..budget at a workload mix (as ``capacity`` evaluates it)."""
        return self.tokens_durations(np.arange(1, budget + 1), prefill_fraction)

    def token_table(self, budget: int) -> list[float]:
        """Durations for n = 0..budget, so the simulator can index instead of calling."""
        if not self.token_only:
            raise TypeError(f"{self.kind} batch time depends on more than the token count")
        return self._curve(np.arange(budget + 1), 0.0).tolist()

    def capacity(self, budget: int, prefill_fraction: float = 0.5) -> tuple[float, int]:
        """(mu, n_star): the best throughput n / t(n) over n = 1..budget in tokens/s, and its n.

        Ties go to the largest n. Models that are not token-only are evaluated at the workload
        mix described in ``_curve``: prefill n*f, decode n*(1-f), seqs n*(1-f) + 1 (one
        prefilling request plus one per decode token; no prefilling request when f = 0).
        """
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ConfigError("budget", f"must be an integer >= 1, got {budget!r}")
        if not 0.0 <= prefill_fraction <= 1.0:
            raise ConfigError("prefill_fraction", f"must be in [0, 1], got {prefill_fraction!r}")
        n = np.arange(1, budget + 1)
        rates = n / self._curve(n, prefill_fraction)
        best = int(np.flatnonzero(rates == rates.max())[-1])
        return float(rates[best]), int(n[best])

    def describe(self) -> str:
        """One line for reports, e.g. ``staircase c=11.28 ms a=35.47 ms b0=128`` (a tile
        adds `` tile=128``)."""
        tile = [] if self.tile is None else [_TILE.show(self)]
        return " ".join([self._describe(), *tile])

    def _describe(self) -> str:
        return " ".join([self.kind, *(p.show(self) for p in self._params)])

    def to_dict(self) -> dict[str, Any]:
        """The YAML form, which ``timing_from_dict`` reads back."""
        tile = {} if self.tile is None else {_TILE.key: _TILE.to_yaml(self)}
        return {**self._to_dict(), **tile}

    def _to_dict(self) -> dict[str, Any]:
        return {"model": self.kind, **{p.key: p.to_yaml(self) for p in self._params}}

    @classmethod
    def _from_yaml(cls, d: Mapping[str, Any], base_dir: Path | None, field: str) -> TimingModel:
        _check_keys(d, cls.kind, [p.key for p in cls._params], field)
        params: dict[str, Any] = {p.attr: p.parse(d, field) for p in cls._params}
        return cls(**params)


class _TokenOnly(TimingModel):
    """Models whose batch time depends only on n = prefill + decode tokens."""

    token_only = True

    @abstractmethod
    def _token_time(self, n: Any) -> Any:
        """t(n) for a number or an array of token counts."""

    def _durations(self, prefill: ArrayLike, decode: ArrayLike, num_seqs: ArrayLike) -> Any:
        return self._token_time(np.add(prefill, decode))

    def _curve(self, n: ArrayLike, prefill_fraction: float) -> Any:
        # Straight to t(n): splitting n into n*f + n*(1-f) could round across a staircase step.
        return self._token_time(self.tiled(np.asarray(n)))


@dataclass(frozen=True)
class Staircase(_TokenOnly):
    """t(n) = c + a * ceil(n / b0): Li/Dai/Peng v3, Assumption 1 (GEMM tile quantization)."""

    c: float
    a: float
    b0: int

    kind = "staircase"
    _params = (
        _Param("c_ms", "c", "c"),
        _Param("a_ms", "a", "a"),
        _Param("b0", "b0", "b0", unit="", scale=1, integer=True),
    )

    def _token_time(self, n: Any) -> Any:
        return self.c + self.a * -(-n // self.b0)


@dataclass(frozen=True)
class Piecewise(_TokenOnly):
    """t(n) = c + a * max(0, n - b0): Li/Dai/Peng v1 (flat while memory-bound, then linear)."""

    c: float
    a_per_token: float
    b0: int

    kind = "piecewise"
    _params = (
        _Param("c_ms", "c", "c"),
        _Param("a_ms_per_token", "a_per_token", "a", unit="ms/token"),
        _Param("b0", "b0", "b0", unit="", scale=1, integer=True),
    )

    def _token_time(self, n: Any) -> Any:
        return self.c + self.a_per_token * np.maximum(0, n - self.b0)


@dataclass(frozen=True)
class Constant(_TokenOnly):
    """Every batch takes t: one time unit per batch, as in the papers' network examples."""

    t: float

    kind = "constant"
    _params = (_Param("t_ms", "t", "t"),)

    def _token_time(self, n: Any) -> Any:
        return np.full(np.shape(n), self.t)


@dataclass(frozen=True)
class Affine(TimingModel):
    """t = alpha + beta_p * prefill + beta_d * decode + gamma * seqs (a Vidur-style linear fit)."""

    alpha: float
    beta_prefill: float
    beta_decode: float
    gamma: float

    kind = "affine"
    _params = (
        _Param("alpha_ms", "alpha", "alpha"),
        _Param("beta_prefill_ms", "beta_prefill", "beta_prefill", unit="ms/token"),
        _Param("beta_decode_ms", "beta_decode", "beta_decode", unit="ms/token"),
        _Param("gamma_ms", "gamma", "gamma", unit="ms/seq"),
    )

    def _durations(self, prefill: ArrayLike, decode: ArrayLike, num_seqs: ArrayLike) -> Any:
        return (
            self.alpha
            + self.beta_prefill * prefill
            + self.beta_decode * decode
            + self.gamma * num_seqs
        )


@dataclass(frozen=True)
class Table(_TokenOnly):
    """Measured batch times, linearly interpolated in tokens.

    Below the first row the first row's time is used (smaller batches are not faster than the
    smallest one measured, to first order). Above the last row the last two rows are
    extrapolated linearly, slope floored at 0: a budget past the measurements needs some value,
    and this one is a guess, not a measurement. ``source`` is the CSV path it was read from.
    Read from a preset, a time that falls as the batch grows is accepted with a warning.
    """

    tokens: tuple[int, ...]
    seconds: tuple[float, ...]
    source: str

    kind = "table"

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.tokens) != len(self.seconds) or len(self.tokens) < 2:
            raise ConfigError("timing.csv", "needs at least 2 rows of (tokens, time)")
        if self.tokens[0] < 0 or any(b <= a for a, b in pairwise(self.tokens)):
            raise ConfigError("timing.csv", "tokens must be >= 0 and strictly increasing")
        if not all(math.isfinite(s) and s > 0 for s in self.seconds):
            raise ConfigError("timing.csv", "times must be finite and > 0")

    def _token_time(self, n: Any) -> Any:
        (n1, n2), (t1, t2) = self.tokens[-2:], self.seconds[-2:]
        slope = max(0.0, (t2 - t1) / (n2 - n1))
        return np.where(n > n2, t2 + slope * (n - n2), np.interp(n, self.tokens, self.seconds))

    def _describe(self) -> str:
        rows = f"{len(self.tokens)} rows {self.tokens[0]}..{self.tokens[-1]} tokens"
        return f"table {rows} ({self.source})"

    def _to_dict(self) -> dict[str, Any]:
        return {"model": self.kind, "csv": self.source}

    @classmethod
    def _from_yaml(cls, d: Mapping[str, Any], base_dir: Path | None, field: str) -> Table:
        _check_keys(d, cls.kind, ["csv"], field)
        where = f"{field}.csv"
        if not isinstance(d["csv"], str) or not d["csv"]:
            raise ConfigError(where, f"must be a path to a CSV file, got {d['csv']!r}")
        path = Path(d["csv"]).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        tokens, seconds = _read_table_csv(path, where)
        try:
            table = cls(tokens, seconds, source=str(path))
        except ConfigError as err:
            raise ConfigError(where, f"{path}: {err.reason}") from None
        falls = [i for i in range(1, len(seconds)) if seconds[i] < seconds[i - 1]]
        if falls:
            i = falls[0]
            more = f" (and {len(falls) - 1} more drops)" if len(falls) > 1 else ""
            warnings.warn(ConfigWarning(
                where, f"{path}: the batch time falls from {seconds[i - 1] * 1e3:g} ms at "
                f"{tokens[i - 1]} tokens to {seconds[i] * 1e3:g} ms at {tokens[i]} tokens{more}: "
                "the timing model is not monotone, a bigger batch costing less than a smaller "
                "one, and the theory and the simulation both take it at its word"), stacklevel=2)
        return table


def _read_table_csv(path: Path, where: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Rows of a CSV with a ``tokens`` column and a ``seconds`` (or ``ms``) column."""
    text = read_text(path, where, CSV_LIMIT)
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise ConfigError(where, f"{path}: not a readable CSV: {err}") from None
    header = [name.strip().lower() for name in rows[0]] if rows else []
    time_column = next((c for c in ("seconds", "ms") if c in header), None)
    if "tokens" not in header or time_column is None:
        raise ConfigError(where, f"{path}: needs header columns 'tokens' and 'seconds' (or 'ms')")
    i_tokens, i_time = header.index("tokens"), header.index(time_column)
    scale = 1.0 if time_column == "seconds" else 1e-3
    tokens: list[int] = []
    seconds: list[float] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            n, t = float(row[i_tokens]), float(row[i_time]) * scale
        except (IndexError, ValueError):
            raise ConfigError(where, f"{path} line {line}: expected numbers, got {row}") from None
        if not n.is_integer():
            raise ConfigError(where, f"{path} line {line}: tokens must be an integer, got {n}")
        tokens.append(int(n))
        seconds.append(t)
    return tuple(tokens), tuple(seconds)


_MODELS: dict[str, type[TimingModel]] = {
    cls.kind: cls for cls in (Affine, Constant, Piecewise, Staircase, Table)
}


def timing_from_dict(
    d: Mapping[str, Any], base_dir: Path | None, field: str = "timing"
) -> TimingModel:
    """Parse the YAML form; ``base_dir`` resolves a relative table CSV path (the preset's folder).

    Forms: ``{model: staircase, c_ms, a_ms, b0}``, ``{model: piecewise, c_ms, a_ms_per_token,
    b0}``, ``{model: affine, alpha_ms, beta_prefill_ms, beta_decode_ms, gamma_ms}``,
    ``{model: constant, t_ms}``, ``{model: table, csv}``; any of them may add ``tile: T``.
    """
    known = ", ".join(_MODELS)
    if not isinstance(d, Mapping):
        raise ConfigError(field, f"must be a mapping with a 'model' key (one of: {known})")
    if "model" not in d:
        raise ConfigError(f"{field}.model", f"missing; one of: {known}")
    cls = _MODELS.get(d["model"]) if isinstance(d["model"], str) else None
    if cls is None:
        raise ConfigError(f"{field}.model", f"unknown model {d['model']!r}; known: {known}")
    model = cls._from_yaml(d, base_dir, field)
    if _TILE.key in d:
        model = dataclasses.replace(model, tile=int(_TILE.parse(d, field)))
    # Every model but a table is nondecreasing in each argument, so a positive 1-token batch
    # suffices; a table's rows are all > 0 (one that falls is warned about above).
    if min(model.tokens_duration(1, 0.0), model.tokens_duration(1, 1.0)) <= 0:
        raise ConfigError(field, "a 1-token batch must take > 0 ms; raise a time coefficient")
    return model

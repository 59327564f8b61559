"""Request traces in the Vidur/Splitwise CSV format, plus the CSV reader the workload shares.

A trace replays real arrivals and token counts; ``Trace.scaled_to`` stretches its clock so the same
request mix can be offered at any rate, as Vidur's time-scale factor does.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from servelab.errors import ConfigError
from servelab.files import CSV_LIMIT, read_text

TRACE_COLUMNS = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")


@dataclass(frozen=True)
class CsvTable:
    """Chosen columns of a headed CSV file, with line numbers so errors can point at a row."""

    path: str
    field: str
    lines: list[int]
    cells: dict[str, list[str]]

    def __len__(self) -> int:
        return len(self.lines)

    def error(self, row: int, column: str, reason: str) -> ConfigError:
        """An error naming the 1-based file line of data row ``row`` (0-based)."""
        return ConfigError(
            self.field, f"{self.path} line {self.lines[row]}, column {column!r}: {reason}"
        )

    def numbers(self, column: str, kind: type[int] | type[float]) -> np.ndarray:
        """The column as int64/float64; non-numeric, non-finite and negative cells are errors."""
        noun = "an integer" if kind is int else "a number"
        values = []
        for row, text in enumerate(self.cells[column]):
            try:
                value = kind(text)
            except ValueError:
                raise self.error(row, column, f"{text!r} is not {noun}") from None
            if not math.isfinite(value):
                raise self.error(row, column, f"{text!r} is not a finite number")
            if value < 0:
                raise self.error(row, column, f"{text!r} is negative")
            if value >= 2**63:  # int64 holds it no more, and no request has that many tokens
                raise self.error(row, column, f"{text!r} is too large")
            values.append(value)
        return np.array(values, dtype=np.int64 if kind is int else np.float64)


def read_csv(path: Path, columns: Sequence[str], field: str) -> CsvTable:
    """Read ``columns`` (by header name, any order; other columns ignored) from a CSV file."""
    reader = csv.reader(io.StringIO(read_text(path, field, CSV_LIMIT), newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        if not header:
            raise ConfigError(field, f"{path} is empty (expected a CSV header row)")
        index = _column_index(header, columns, path, field)
        lines: list[int] = []
        cells: dict[str, list[str]] = {name: [] for name in columns}
        for row in reader:
            if not row:
                continue
            lines.append(reader.line_num)
            for name, i in index.items():
                if i >= len(row):
                    raise ConfigError(
                        field, f"{path} line {reader.line_num}: missing value for {name!r}"
                    )
                cells[name].append(row[i].strip())
    except csv.Error as exc:
        raise ConfigError(field, f"{path} is not valid CSV: {exc}") from None
    return CsvTable(str(path), field, lines, cells)


def _column_index(
    header: list[str], columns: Sequence[str], path: Path, field: str
) -> dict[str, int]:
    """Map each wanted column to its position, or say which are missing and what exists."""
    missing = [name for name in columns if name not in header]
    if missing:
        found = ", ".join(repr(name) for name in header)
        raise ConfigError(
            field, f"{path} has no column {', '.join(map(repr, missing))} (found: {found})"
        )
    return {name: header.index(name) for name in columns}


@dataclass(frozen=True, eq=False)
class Trace:
    """Arrival times (s, sorted) and per-request prefill/decode token counts."""

    path: str
    arrived_at: np.ndarray
    prefill: np.ndarray
    decode: np.ndarray

    def __len__(self) -> int:
        return len(self.arrived_at)

    @property
    def mean_rate(self) -> float:
        """Requests/s: (n - 1) / (last - first arrival); ``load_trace`` ensures it is finite."""
        span = float(self.arrived_at[-1]) - float(self.arrived_at[0])
        return (len(self) - 1) / span

    def scaled_to(self, rate: float) -> Trace:
        """Multiply every arrival time by one factor so ``mean_rate`` becomes ``rate``."""
        if not (math.isfinite(rate) and rate > 0):
            raise ConfigError("rate", f"must be a positive number of requests/s, got {rate}")
        factor = self.mean_rate / rate
        return Trace(self.path, self.arrived_at * factor, self.prefill, self.decode)


def load_trace(path: str | Path, field: str = "trace") -> Trace:
    """Load a Vidur/Splitwise trace, sorting rows stably by arrival time.

    A trace needs two distinct arrival times: its rate, which ``--load`` and ``--rate`` rescale
    and the theory uses, is (n - 1) over the time between its first and last arrivals. Its
    clock is shifted so that the first request arrives at time 0.
    """
    table = read_csv(Path(path), TRACE_COLUMNS, field)
    if not len(table):
        raise ConfigError(field, f"{path} has a header but no requests")
    arrived_at = table.numbers("arrived_at", float)
    tokens = [table.numbers(column, int) for column in TRACE_COLUMNS[1:]]
    for column, counts in zip(TRACE_COLUMNS[1:], tokens, strict=True):
        if (counts < 1).any():
            row = int(np.argmax(counts < 1))
            raise table.error(row, column, "token counts must be >= 1")
    if arrived_at.min() == arrived_at.max():
        raise ConfigError(field, f"{path}: a trace needs at least 2 requests with distinct "
                                 "arrival times, or it has no rate")
    order = np.argsort(arrived_at, kind="stable")
    # The simulated clock starts at the first arrival: a trace cut from the middle of a day
    # would otherwise begin with hours of idle engine, which no measurement should average in.
    start = arrived_at[order[0]]
    return Trace(str(path), arrived_at[order] - start, tokens[0][order], tokens[1][order])

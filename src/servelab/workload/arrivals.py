"""Arrival processes: when requests reach the server.

Renewal processes with gamma interarrivals cover Poisson (CV = 1) and bursty traffic (CV > 1),
the same family as vLLM's ``burstiness = 1/CV^2``; ``deterministic`` is the CV = 0 limit.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from servelab.errors import ConfigError
from servelab.workload.chunks import Chunked
from servelab.workload.lengths import format_number, parse_number

KNOWN = "poisson, gamma:CV (CV > 0), deterministic"

# Gamma draws with a tiny shape (large CV) can underflow to 0; arrivals must come after t = 0.
_MIN_GAP = np.finfo(np.float64).tiny


@dataclass(frozen=True)
class ArrivalProcess(ABC):
    """A stationary arrival process whose rate is chosen per call."""

    spec: str
    cv: float  # coefficient of variation of the interarrival time

    def times(
        self,
        rng: np.random.Generator,
        rate: float,
        count: int | None = None,
        duration: float | None = None,
    ) -> np.ndarray:
        """Nondecreasing arrival times (s): the first ``count``, or all in (0, duration]."""
        stream = ArrivalStream(self, rng, rate)
        if count is not None and duration is None:
            return stream.first(count)
        if duration is not None and count is None:
            return stream.until(duration)
        raise ValueError("give exactly one of count and duration")

    @abstractmethod
    def _block(
        self, rng: np.random.Generator, rate: float, done: int, last: float, size: int
    ) -> np.ndarray:
        """Arrivals number ``done + 1 .. done + size``, given arrival ``done`` was at ``last``."""


class ArrivalStream:
    """The arrivals of one process at one rate, drawn on demand (see ``chunks``)."""

    def __init__(self, process: ArrivalProcess, rng: np.random.Generator, rate: float) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ConfigError("rate", f"must be a positive number of requests/s, got {rate}")
        self._last = 0.0

        def draw(done: int, size: int) -> np.ndarray:
            block = process._block(rng, rate, done, self._last, size)
            self._last = float(block[-1])
            return block

        self._times = Chunked(draw)

    def first(self, count: int) -> np.ndarray:
        """The first ``count`` arrival times."""
        if count < 0:
            raise ConfigError("count", f"must be >= 0, got {count}")
        return self._times.first(count)

    def until(self, duration: float) -> np.ndarray:
        """Every arrival in (0, duration]."""
        if not (math.isfinite(duration) and duration >= 0):
            raise ConfigError("duration", f"must be finite seconds >= 0, got {duration}")
        while self._last <= duration:
            self._times.grow()
        times = self._times.values()
        return times[: np.searchsorted(times, duration, side="right")]


@dataclass(frozen=True)
class Renewal(ArrivalProcess):
    """Gamma interarrivals with mean 1/rate and shape 1/CV^2 (exponential when CV = 1)."""

    def _block(
        self, rng: np.random.Generator, rate: float, done: int, last: float, size: int
    ) -> np.ndarray:
        shape = 1.0 / self.cv**2
        gaps = rng.gamma(shape, 1.0 / (shape * rate), size)
        return last + np.cumsum(np.maximum(gaps, _MIN_GAP))


@dataclass(frozen=True)
class Deterministic(ArrivalProcess):
    """Arrival k at exactly k/rate (computed directly, so no rounding drift accumulates)."""

    def _block(
        self, rng: np.random.Generator, rate: float, done: int, last: float, size: int
    ) -> np.ndarray:
        return np.arange(done + 1, done + size + 1, dtype=np.float64) / rate


def parse_arrivals(spec: str, field: str = "arrivals") -> ArrivalProcess:
    """Parse ``poisson``, ``gamma:CV`` or ``deterministic``."""
    name, sep, args = (part.strip() for part in spec.strip().partition(":"))
    name = name.lower()
    if name in ("poisson", "deterministic") and not sep:
        return Renewal("poisson", 1.0) if name == "poisson" else Deterministic("deterministic", 0.0)
    if name == "gamma" and args:
        cv = parse_number(args, field, "gamma CV")
        if cv <= 0:
            raise ConfigError(field, f"gamma CV must be > 0, got {args!r}")
        return Renewal(f"gamma:{format_number(cv)}", cv)
    raise ConfigError(field, f"unknown arrival process {spec.strip()!r}; known: {KNOWN}")

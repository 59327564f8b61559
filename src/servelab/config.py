"""One run's configuration: the same fields as the CLI flags and the experiment YAML keys.

A ``SimConfig`` is plain data; ``SimConfig.from_dict`` validates a mapping (YAML, ``--set``
overrides, a notebook's dict) and names the offending key in every error, so the CLI can print
``error: <field>: <reason>`` and exit 2.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from servelab.errors import ConfigError

DEFAULT_PRESET = "codellama-34b-a100"
AUTO = "auto"
#: ``--requests auto`` stops here if the verdict is still not confident.
DEFAULT_MAX_REQUESTS = 500_000


@dataclass
class SimConfig:
    """Everything a single-engine run needs; ``None`` means "the preset's or the default"."""

    preset: str = DEFAULT_PRESET
    preset_file: str | None = None
    scheduler: str = "sarathi"
    schedulers: list[str] | None = None
    budget: int | None = None
    kmax: int | None = None
    rate: float | None = None
    load: float | None = None
    prefill: str = "129"
    decode: str = "112"
    arrivals: str = "poisson"
    trace: str | None = None
    #: A number of arrivals, or "auto" (the default without --duration or --trace): grow the
    #: run until the stability verdict is confident or ``max_requests`` is reached.
    requests: int | Literal["auto"] | None = None
    max_requests: int | None = None
    duration: float | None = None
    seed: int = 0
    convention: str | None = None
    drain: bool = False
    chunked_prefill: bool = False
    priority: str = "decode"
    kp: int | None = None
    kd: int | None = None
    record_batches: bool = False
    base_dir: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: str | None = None) -> SimConfig:
        """Build from a mapping, converting types and rejecting unknown keys."""
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "base_dir"}
        values: dict[str, Any] = {}
        for key, raw in data.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(key, f"unknown setting; known: {', '.join(sorted(known))}")
            values[name] = _convert(name, raw)
        return cls(**values, base_dir=base_dir)

    def replace(self, **changes: Any) -> SimConfig:
        return dataclasses.replace(self, **changes)

    @property
    def auto(self) -> bool:
        """Whether the run grows until its verdict is confident (the default length)."""
        return self.requests == AUTO or (self.requests is None and self.duration is None
                                         and self.trace is None)

    @property
    def request_cap(self) -> int:
        """Where ``--requests auto`` stops growing a run."""
        return self.max_requests or DEFAULT_MAX_REQUESTS

    def validate(self) -> None:
        _positive_int("budget", self.budget)
        _positive_int("kmax", self.kmax)
        if self.requests != AUTO:
            _positive_int("requests", self.requests)
        _positive_int("max_requests", self.max_requests)
        _positive_int("kp", self.kp)
        _positive_int("kd", self.kd)
        _positive_number("rate", self.rate)
        _positive_number("load", self.load)
        _positive_number("duration", self.duration)
        if self.rate is not None and self.load is not None:
            raise ConfigError("rate", "give --rate or --load, not both")
        if self.requests is not None and self.duration is not None:
            raise ConfigError("requests", "give --requests or --duration, not both")
        if self.trace is not None and self.duration is not None:
            raise ConfigError("duration", "a trace's length is its own; use --requests to cut it")
        if self.trace is not None and self.requests == AUTO:
            raise ConfigError("requests", "a trace runs to its own length; give a number of "
                                          "requests to cut it")
        if self.max_requests is not None and not self.auto:
            raise ConfigError("max_requests", "only --requests auto grows a run; with a fixed "
                                              "--requests, --duration or --trace it does nothing")
        if self.convention not in (None, "paper", "engine"):
            raise ConfigError("convention", "must be 'paper' or 'engine'")
        if self.seed < 0:
            raise ConfigError("seed", "must be >= 0")
        if self.schedulers is not None and not self.schedulers:
            raise ConfigError("schedulers", "list at least one scheduler")


_INT_FIELDS = {"budget", "kmax", "max_requests", "seed", "kp", "kd"}
_FLOAT_FIELDS = {"rate", "load", "duration"}
_BOOL_FIELDS = {"drain", "chunked_prefill", "record_batches"}
_STR_FIELDS = {"preset", "preset_file", "scheduler", "prefill", "decode", "arrivals", "trace",
               "convention", "priority"}


def _convert(name: str, raw: Any) -> Any:
    """Turn YAML/--set values (often strings) into the field's type, or say why not."""
    if raw is None:
        return None
    if name == "requests":
        if isinstance(raw, str) and raw.strip().lower() == AUTO:
            return AUTO
        return _to_int(name, raw)
    if name in _INT_FIELDS:
        return _to_int(name, raw)
    if name in _FLOAT_FIELDS:
        return _to_float(name, raw)
    if name in _BOOL_FIELDS:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "yes", "1", "on"):
            return True
        if text in ("false", "no", "0", "off"):
            return False
        raise ConfigError(name, f"expected true or false, got {raw!r}")
    if name == "schedulers":
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return [str(s).strip() for s in items if str(s).strip()]
    if name in _STR_FIELDS:
        return str(raw)
    raise AssertionError(f"unhandled field {name}")


def _to_float(name: str, raw: Any, what: str = "a number") -> float:
    if isinstance(raw, bool):
        raise ConfigError(name, f"expected {what}, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(name, f"expected {what}, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(name, f"expected {what}, got {raw!r}")
    return value


def _to_int(name: str, raw: Any) -> int:
    """Integers, also written as ``5.0`` or ``1e3``; exact for large ones like seeds."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lstrip("+-").isdigit():
        return int(raw)
    value = _to_float(name, raw, "an integer")
    if not value.is_integer():
        raise ConfigError(name, f"expected an integer, got {raw!r}")
    return int(value)


def _positive_int(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(name, "must be >= 1")


def _positive_number(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigError(name, "must be > 0")

"""One run's configuration: the same fields as the CLI flags and the experiment YAML keys.

A ``SimConfig`` is plain data; ``SimConfig.from_dict`` validates a mapping (YAML, ``--set``
overrides, a notebook's dict) and names the offending key in every error, so the CLI can print
``error: <field>: <reason>`` and exit 2.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from servelab.core.convention import Convention
from servelab.errors import ConfigError

DEFAULT_PRESET = "codellama-34b-a100"
AUTO = "auto"
#: ``--requests auto`` stops here if the verdict is still not confident.
DEFAULT_MAX_REQUESTS = 500_000
DEFAULT_SCHEDULER = "sarathi"
DEFAULT_PREFILL = "129"
DEFAULT_DECODE = "112"
DEFAULT_ARRIVALS = "poisson"

# Limits on what can be simulated meaningfully; docs/cli.md ("Limits") gives the reasons too.
#: The theory tabulates the batch time at every batch size up to the budget: 2^20 tokens take
#: seconds and half a gigabyte, ten times more would take minutes and gigabytes.
MAX_BUDGET = 1 << 20
#: Each simulated request holds about 300 bytes: ten million of them are 3 GB.
MAX_REQUESTS = 10_000_000
#: Simulated times are float64 seconds and TBT gaps are binned in 0.1 us ticks; up to 1e8 s
#: (about three years) a float64 resolves 15 ns, safely under one tick.
MAX_CLOCK_S = 1e8
#: Arrivals at 100 times what the engine can serve: the backlog only grows, and a larger load
#: says nothing more about stability.
MAX_LOAD = 100.0


@dataclass
class SimConfig:
    """Everything a single-engine run needs; ``None`` means "the preset's or the default".

    Defaults are ``None`` rather than their values so that a setting the run would ignore (a
    length beside a trace, a scheduler option no chosen policy takes) is refused, not dropped.
    """

    preset: str | None = None
    preset_file: str | None = None
    scheduler: str | None = None
    schedulers: list[str] | None = None
    budget: int | None = None
    kmax: int | None = None
    rate: float | None = None
    load: float | None = None
    prefill: str | None = None
    decode: str | None = None
    arrivals: str | None = None
    trace: str | None = None
    #: A number of arrivals, or "auto" (the default without --duration or --trace): grow the
    #: run until the stability verdict is confident or ``max_requests`` is reached.
    requests: int | Literal["auto"] | None = None
    max_requests: int | None = None
    duration: float | None = None
    seed: int = 0
    convention: str | None = None
    drain: bool = False
    chunked_prefill: bool | None = None
    priority: str | None = None
    kp: int | None = None
    kd: int | None = None
    record_batches: bool = False
    base_dir: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name != "base_dir":  # None (YAML null, --set KEY=null) means the default
                value = _convert(f.name, getattr(self, f.name))
                setattr(self, f.name, f.default if value is None else value)
        self.validate()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str | None = None) -> SimConfig:
        """Build from a mapping (YAML, flags, a notebook's dict), rejecting unknown keys."""
        if not isinstance(data, Mapping):
            raise ConfigError("config", f"expected a SimConfig or a mapping of settings, got "
                                        f"{_kind(data)}")
        known = {f.name for f in dataclasses.fields(cls) if f.name != "base_dir"}
        values: dict[str, Any] = {}
        for key, raw in data.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise ConfigError(str(key), f"unknown setting; known: {', '.join(sorted(known))}")
            values[name] = raw
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
        _positive_int("budget", self.budget, MAX_BUDGET, "tokens, which the theory tabulates "
                      "one batch size at a time")
        _positive_int("kmax", self.kmax, MAX_BUDGET, "requests per batch (the budget's limit)")
        if self.requests != AUTO:
            _positive_int("requests", self.requests, MAX_REQUESTS, "(about 300 bytes each)")
        _positive_int("max_requests", self.max_requests, MAX_REQUESTS, "(about 300 bytes each)")
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
        if self.trace is not None:
            for name in ("prefill", "decode", "arrivals"):
                if getattr(self, name) is not None:
                    raise ConfigError(name, "a trace brings its own arrivals and lengths; "
                                            "leave this out with --trace")
        if self.preset is not None and self.preset_file is not None:
            raise ConfigError("preset", "give --preset or --preset-file, not both")
        if self.scheduler is not None and self.schedulers is not None:
            raise ConfigError("scheduler", "give scheduler (one run) or schedulers (a "
                                           "comparison), not both")
        if self.convention is not None:
            Convention.named(self.convention)
        if self.priority not in (None, "decode", "prefill"):
            raise ConfigError("priority", "must be 'decode' or 'prefill'")
        if self.seed < 0:
            raise ConfigError("seed", "must be >= 0")
        if self.schedulers is not None:
            if not self.schedulers:
                raise ConfigError("schedulers", "list at least one scheduler")
            repeated = sorted({s for s in self.schedulers if self.schedulers.count(s) > 1})
            if repeated:
                raise ConfigError("schedulers", f"{', '.join(repeated)} listed twice; each "
                                                "scheduler runs once")


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
        if isinstance(raw, str):  # "a,b", as the --schedulers flag writes it
            raw = raw.split(",")
        if not isinstance(raw, list | tuple):
            raise ConfigError(name, f"expected a list of scheduler names, got {_kind(raw)}")
        return [_to_str(name, item) for item in raw if str(item).strip()]
    if name in _STR_FIELDS:
        return _to_str(name, raw)
    raise AssertionError(f"unhandled field {name}")


def _kind(raw: Any) -> str:
    """How an error names a value of the wrong type: its type, not a repr of any size."""
    if raw is None:
        return "None"
    name = type(raw).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _to_str(name: str, raw: Any) -> str:
    """A name, spec or path: a scalar, and never empty (an empty path would mean '.')."""
    if isinstance(raw, list | tuple | dict | set):
        raise ConfigError(name, f"expected text, got {_kind(raw)}")
    text = str(raw)
    if not text.strip():
        raise ConfigError(name, "is empty")
    return text


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


def _positive_int(name: str, value: int | None, limit: int | None = None, unit: str = "") -> None:
    if value is not None and value < 1:
        raise ConfigError(name, "must be >= 1")
    if value is not None and limit is not None and value > limit:
        raise ConfigError(name, f"at most {limit:,} {unit}")


def _positive_number(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigError(name, "must be > 0")

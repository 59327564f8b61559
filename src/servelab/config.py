"""One run's configuration: every setting has a dotted path, and its flat name still works.

The paths group the settings (``engine.budget``, ``workload.rate``, ``scheduler.name``,
``scheduler.<knob>``, ``run.seed``, ``run.loads``; ``SETTINGS`` lists them) so that an override
or a sweep can name any of them. ``SimConfig.from_dict`` reads a mapping (YAML, flags,
``--set``, a notebook's dict) in any mix of three spellings: flat names (``rate``: the flags'),
dotted paths (``workload.rate``) and sections (``workload: {rate: 5}``; ``scheduler: kfcfs`` or
``scheduler: {name: kfcfs, kp: 4}``). Scheduler knobs are kept as given: each policy's options
class converts and checks them (``servelab.schedulers.options``).

Every error names the setting the way the user wrote it (``rate`` after ``--rate``,
``workload.rate`` after ``--set workload.rate=...``), so the CLI can print
``error: <field>: <reason>`` and exit 2; a setting the user did not write goes by its flat name,
a knob by ``scheduler.<knob>``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, get_type_hints

from servelab.analysis.criteria import Criterion, Statistic, parse_criteria, parse_statistic
from servelab.core.convention import Convention
from servelab.core.kv_settings import Preemption
from servelab.core.slo import SloClass, parse_slo_classes
from servelab.errors import ConfigError, ConfigWarning
from servelab.values import convert, kind_of, to_float, to_int

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
#: Replicas in one run: each engine's index is kept per request in 16 bits.
MAX_REPLICAS = 1024
#: The router when --replicas K > 1 names none.
DEFAULT_ROUTER = "jsq"
#: ``--kv-blocks preset``: the preset's KV capacity (its ``kv:`` section).
PRESET_KV = "preset"
#: KV blocks in one engine: 2^24 is about 300 times the 57,000 blocks of 16 tokens an H200
#: holds for Mistral-7B, and 2^28 tokens at 16 a block.
MAX_KV_BLOCKS = 1 << 24
#: Tokens per KV block: engines use 16 to 256.
MAX_BLOCK_SIZE = 1 << 16
#: What a KV cache's settings mean without one: nothing.
_KV_DETAILS = ("block_size", "watermark", "preemption", "swap_block_s")
#: What a sweep shows against the load when ``metric`` is not given.
DEFAULT_METRIC = "ttft_p50"
#: A capacity search's seeds per rate and its relative tolerance, when not given.
DEFAULT_SEEDS = 3
DEFAULT_TOLERANCE = 0.01
MAX_SEEDS = 1000


def _setting(path: str, default: Any = None, parse: Any = None) -> Any:
    """A field that is a setting, at its dotted ``path``; ``parse(raw)`` reads a value its
    type hint cannot say how to (``values.convert`` reads the others)."""
    return field(default=default, metadata={"path": path, "parse": parse})


#: The scheduler knobs that had flat names and flags before knobs had paths (the CLI's
#: ``--kp``...); a new knob is ``scheduler.<knob>`` only.
KNOB_ALIASES = ("chunked_prefill", "priority", "kp", "kd")
#: The sections a mapping may group settings in.
SECTIONS = ("engine", "workload", "scheduler", "run")
#: Other names of a setting: the flag ``--criterion`` (repeatable) gives ``criteria``.
ALIASES = {"criterion": "criteria"}
#: The settings of experiments made of several runs, and what each belongs to: a command that
#: makes no such experiment refuses them (they would do nothing).
_SWEEP = "a load sweep (servelab sweep)"
_SEARCH = "a capacity search (servelab capacity-search)"
EXPERIMENT_SETTINGS = {"loads": _SWEEP, "metric": _SWEEP, "criteria": _SEARCH,
                       "seeds": _SEARCH, "tolerance": _SEARCH}


def parse_loads(raw: Any) -> tuple[float, ...] | None:
    """The loads of a sweep, ``0.3,0.5`` or a list (one number is a list of one): each > 0 and
    at most ``MAX_LOAD``, none twice; kept in increasing order, as a plot draws them."""
    if raw is None:
        return None
    items = raw.split(",") if isinstance(raw, str) else raw
    if isinstance(items, int | float):
        items = [items]
    if not isinstance(items, list | tuple) or not items:
        raise ConfigError("loads", f"expected a list of loads (fractions of capacity), got "
                                   f"{kind_of(raw) if items else 'an empty list'}")
    loads = [to_float("loads", item, "a load (a fraction of capacity)") for item in items]
    for load in loads:
        if not 0 < load <= MAX_LOAD:
            raise ConfigError("loads", f"each load must be > 0 and at most {MAX_LOAD:g} (times "
                                       f"the capacity), got {load:g}")
    repeated = sorted({f"{x:g}" for x in loads if loads.count(x) > 1})
    if repeated:
        raise ConfigError("loads", f"{', '.join(repeated)} listed twice; each load runs once")
    return tuple(sorted(loads))


def parse_seeds(raw: Any) -> int | tuple[int, ...] | None:
    """A capacity search's seeds: a count (taken from ``seed`` on), or the seeds themselves,
    distinct and >= 0."""
    if raw is None:
        return None
    if not isinstance(raw, list | tuple):
        count = to_int("seeds", raw)
        if not 1 <= count <= MAX_SEEDS:
            raise ConfigError("seeds", f"must be between 1 and {MAX_SEEDS}, got {count}")
        return count
    if not raw or len(raw) > MAX_SEEDS:
        raise ConfigError("seeds", f"list 1 to {MAX_SEEDS} seeds")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in raw):
        raise ConfigError("seeds", f"seeds are integers >= 0, got {list(raw)!r}")
    if len(set(raw)) < len(raw):
        raise ConfigError("seeds", "a seed is listed twice; each runs once per probe")
    return tuple(raw)


def parse_tolerance(raw: Any) -> float | None:
    """A capacity search's relative tolerance, in (0, 1)."""
    if raw is None:
        return None
    tolerance = to_float("tolerance", raw)
    if not 0 < tolerance < 1:
        raise ConfigError("tolerance", f"must be between 0 and 1 (a fraction of the rate), "
                                       f"got {tolerance:g}")
    return tolerance


def _parse_criteria(raw: Any) -> tuple[Criterion, ...] | None:
    return None if raw is None else tuple(parse_criteria(raw))


def _parse_metric(raw: Any) -> Statistic | None:
    return None if raw is None else parse_statistic(raw)


@dataclass
class SimConfig:
    """Everything a single-engine run needs; ``None`` means "the preset's or the default".

    It also holds the settings of experiments made of many runs (``EXPERIMENT_SETTINGS``: a
    sweep's loads, a capacity search's criteria), which the commands that make none refuse.

    Defaults are ``None`` rather than their values so that a setting the run would ignore (a
    length beside a trace, a scheduler option no chosen policy takes) is refused, not dropped.
    """

    preset: str | None = _setting("engine.preset")
    preset_file: str | None = _setting("engine.preset_file")
    scheduler: str | None = _setting("scheduler.name")
    schedulers: list[str] | None = _setting("scheduler.names")  # noqa: RUF009 (a Field)
    budget: int | None = _setting("engine.budget")
    kmax: int | None = _setting("engine.kmax")
    #: GEMM tile size: a batch of n tokens costs as ceil(n/T)*T (overrides the preset's).
    tile: int | None = _setting("engine.tile")
    rate: float | None = _setting("workload.rate")
    load: float | None = _setting("workload.load")
    prefill: str | None = _setting("workload.prefill")
    decode: str | None = _setting("workload.decode")
    arrivals: str | None = _setting("workload.arrivals")
    trace: str | None = _setting("workload.trace")
    #: Service-level classes the requests are drawn from (``core.slo``); empty: none.
    slo: tuple[SloClass, ...] = _setting("workload.slo", (), parse_slo_classes)
    #: A number of arrivals, or "auto" (the default without --duration or --trace): grow the
    #: run until the stability verdict is confident or ``max_requests`` is reached.
    requests: int | Literal["auto"] | None = _setting("run.requests")
    max_requests: int | None = _setting("run.max_requests")
    duration: float | None = _setting("run.duration")
    seed: int = _setting("run.seed", 0)
    convention: str | None = _setting("engine.convention")
    #: Identical engines behind a router (Li-Dai-Peng Proposition 3); 1 is a single engine.
    replicas: int = _setting("engine.replicas", 1)
    router: str | None = _setting("engine.router")
    #: KV memory: None is unlimited (the papers' model); "preset" takes the preset's capacity.
    kv_blocks: int | Literal["preset"] | None = _setting("engine.kv_blocks")
    block_size: int | None = _setting("engine.block_size")
    watermark: float | None = _setting("engine.watermark")
    preemption: Preemption | None = _setting("engine.preemption")  # noqa: RUF009 (a Field)
    swap_block_s: float | None = _setting("engine.swap_block_s")
    drain: bool = _setting("run.drain", False)
    #: Scheduler knobs by name (``scheduler.<knob>``), as given; None is the default.
    scheduler_options: dict[str, Any] = field(default_factory=dict)
    record_batches: bool = _setting("run.record_batches", False)
    #: Experiments of several runs (``EXPERIMENT_SETTINGS``): a sweep's loads (fractions of
    #: capacity) and the statistic it shows; a capacity search's criteria, seeds, tolerance.
    loads: tuple[float, ...] | None = _setting("run.loads", None, parse_loads)
    metric: Statistic | None = _setting("run.metric", None, _parse_metric)  # noqa: RUF009 (a Field)
    criteria: tuple[Criterion, ...] | None = _setting("run.criteria", None, _parse_criteria)
    seeds: int | tuple[int, ...] | None = _setting("run.seeds", None, parse_seeds)
    tolerance: float | None = _setting("run.tolerance", None, parse_tolerance)
    base_dir: str | None = field(default=None, repr=False)
    #: How the user wrote each setting given (flat name, or ``scheduler.<knob>``), for errors.
    written: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        with self.named_as_written():
            hints = _hints()
            for f in _fields():  # None (YAML null, --set KEY=null) means the default
                parse = f.metadata["parse"]
                raw = getattr(self, f.name)
                value = parse(raw) if parse else convert(f.name, hints[f.name], raw)
                setattr(self, f.name, f.default if value is None else value)
            if not isinstance(self.scheduler_options, Mapping):
                raise ConfigError("scheduler", f"expected a mapping of scheduler options, got "
                                               f"{kind_of(self.scheduler_options)}")
            self.scheduler_options = {str(knob): value for knob, value
                                      in self.scheduler_options.items() if value is not None}
            self.validate()

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        base_dir: str | None = None,
        overrides: Iterable[tuple[str, Any]] = (),
    ) -> SimConfig:
        """Build from a mapping (YAML, flags, a notebook's dict), rejecting unknown keys and a
        setting given twice; then each of ``overrides`` (``--set``) replaces its setting,
        whichever spelling ``data`` gave it, the last one winning."""
        if not isinstance(data, Mapping):
            raise ConfigError("config", f"expected a SimConfig or a mapping of settings, got "
                                        f"{kind_of(data)}")
        given = _read(data.items())
        for key, raw in overrides:
            given.update(_read([(key, raw)]))
        knob = "scheduler."
        return cls(
            **{name: raw for name, (_, raw) in given.items() if not name.startswith(knob)},
            scheduler_options={name.removeprefix(knob): raw for name, (_, raw) in given.items()
                               if name.startswith(knob)},
            base_dir=base_dir,
            written={name: spelled for name, (spelled, _) in given.items()},
        )

    def replace(self, **changes: Any) -> SimConfig:
        return dataclasses.replace(self, **changes)

    @contextmanager
    def named_as_written(self) -> Iterator[None]:
        """Errors and warnings raised inside name a setting the way the user wrote it.

        Library code names settings by their flat names (``rate``) and knobs by
        ``scheduler.<knob>``; a user who wrote ``workload.rate`` or ``--kp`` reads that instead.
        """
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                yield
        except (ConfigError, ConfigWarning) as exc:  # a ConfigWarning a filter made an error
            renamed = self._as_written(exc)
            if renamed is exc:
                raise
            raise renamed from None
        finally:
            for w in caught:  # re-issued outside, where the caller's filters see them
                warnings.warn_explicit(self._as_written(w.message), w.category, w.filename,
                                       w.lineno)

    def _as_written(self, problem: Any) -> Any:
        if not isinstance(problem, ConfigError | ConfigWarning):
            return problem
        name = ALIASES.get(problem.field, problem.field)
        spelled = self.written.get(name, problem.field)
        return problem if spelled == problem.field else type(problem)(spelled, problem.reason)

    def refuse_experiments(self, command: str, keep: Iterable[str] = ()) -> None:
        """Refuse the settings of experiments ``command`` does not make (all but ``keep``):
        they would do nothing there."""
        for name, purpose in EXPERIMENT_SETTINGS.items():
            if name not in keep and getattr(self, name) is not None:
                raise ConfigError(name, f"does nothing in {command}; it is a setting of "
                                        f"{purpose}, which servelab run makes from a file too")

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
        _positive_int("tile", self.tile, MAX_BUDGET, "tokens (the budget's limit)")
        if self.requests != AUTO:
            _positive_int("requests", self.requests, MAX_REQUESTS, "(about 300 bytes each)")
        _positive_int("max_requests", self.max_requests, MAX_REQUESTS, "(about 300 bytes each)")
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
        _positive_int("replicas", self.replicas, MAX_REPLICAS, "engines")
        if self.router is not None and self.replicas == 1:
            raise ConfigError("router", "a router needs engines to choose between; give "
                                        "--replicas K with K > 1")
        if self.record_batches and self.replicas > 1:
            raise ConfigError("record_batches", "lists one engine's batches; with --replicas, "
                                                "read each engine's from the library's "
                                                "run_engines records")
        if self.seed < 0:
            raise ConfigError("seed", "must be >= 0")
        self._validate_kv()
        if self.schedulers is not None:
            if not self.schedulers:
                raise ConfigError("schedulers", "list at least one scheduler")
            repeated = sorted({s for s in self.schedulers if self.schedulers.count(s) > 1})
            if repeated:
                raise ConfigError("schedulers", f"{', '.join(repeated)} listed twice; each "
                                                "scheduler runs once")


    def _validate_kv(self) -> None:
        """KV settings: in range, and none without a cache to apply to (it would do nothing)."""
        if self.kv_blocks != PRESET_KV:
            _positive_int("kv_blocks", self.kv_blocks, MAX_KV_BLOCKS, "blocks")
        _positive_int("block_size", self.block_size, MAX_BLOCK_SIZE, "tokens per block")
        if self.watermark is not None and not 0 <= self.watermark < 1:
            raise ConfigError("watermark", f"must be in [0, 1) (the fraction of KV blocks a new "
                                           f"prompt leaves free), got {self.watermark!r}")
        if self.swap_block_s is not None and self.swap_block_s < 0:
            raise ConfigError("swap_block_s", "must be >= 0 (seconds per block)")
        if self.kv_blocks is None:
            for name in _KV_DETAILS:
                if getattr(self, name) is not None:
                    raise ConfigError(name, "does nothing without --kv-blocks: memory is "
                                            "unlimited unless --kv-blocks N (or preset) is given")
        if self.swap_block_s is not None and self.preemption != "swap":
            raise ConfigError("swap_block_s", "only --preemption swap moves blocks (recompute, "
                                              "the default, drops them)")


@cache
def _fields() -> tuple[dataclasses.Field[Any], ...]:
    """SimConfig's fields that are settings (those with a path)."""
    return tuple(f for f in dataclasses.fields(SimConfig) if "path" in f.metadata)


@cache
def _hints() -> dict[str, Any]:
    return get_type_hints(SimConfig)


#: Every setting's flat name (a field's) by its dotted path, in the order of the fields.
SETTINGS: dict[str, str] = {f.metadata["path"]: f.name for f in _fields()}


def _read(items: Iterable[tuple[Any, Any]], section: str = "") -> dict[str, tuple[str, Any]]:
    """Settings by flat name (``scheduler.<knob>`` for a knob): (as written, value).

    A section's mapping (``workload: {rate: 5}``) is read as the dotted paths it holds; a
    setting given twice, in any two spellings, is refused.
    """
    found: dict[str, tuple[str, Any]] = {}
    for key, raw in items:
        written = section + str(key).replace("-", "_")
        if written in SECTIONS and isinstance(raw, Mapping):
            entries = _read(raw.items(), written + ".")
        else:
            entries = {_flat_name(written): (written, raw)}
        for name, entry in entries.items():
            if name in found:
                raise ConfigError(entry[0], f"given twice (also as {found[name][0]})")
            found[name] = entry
    return found


def _flat_name(written: str) -> str:
    """The setting a key names: a flat name, a dotted path, or a knob; else an error."""
    if written in SETTINGS.values():
        return written
    if written in SETTINGS:
        return SETTINGS[written]
    if written in KNOB_ALIASES:
        return f"scheduler.{written}"
    if written in ALIASES:
        return ALIASES[written]
    section, _, knob = written.partition(".")
    if section == "scheduler" and knob.isidentifier():
        return written
    groups: dict[str, list[str]] = {group: [] for group in SECTIONS}
    for path in [*SETTINGS, "scheduler.<option>"]:
        group, _, name = path.partition(".")
        groups[group].append(name)
    paths = ", ".join(f"{group}.{{{', '.join(names)}}}" for group, names in groups.items())
    flat = ", ".join(sorted([*SETTINGS.values(), *KNOB_ALIASES, *ALIASES]))
    raise ConfigError(written, f"unknown setting; known: {paths}; or by flat name: {flat}")


def _positive_int(name: str, value: int | None, limit: int | None = None, unit: str = "") -> None:
    if value is not None and value < 1:
        raise ConfigError(name, "must be >= 1")
    if value is not None and limit is not None and value > limit:
        raise ConfigError(name, f"at most {limit:,} {unit}")


def _positive_number(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigError(name, "must be > 0")

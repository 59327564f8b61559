"""Service-level objective classes: which latency targets a request has to meet.

A workload mixes classes by probability (SLAI's example: 5 % strict users with a 0.1 s TBT
target, 95 % relaxed ones at 0.5 s). A class has a TBT target and optionally a TTFT target. A
request carries its class's index (``Request.slo_class``: 0..C-1 in the order the classes were
given), and a scheduler looks the targets up in the run's table (``view.slo_classes``), so a
request holds one small integer, not a copy of its targets.

A class is written ``NAME:PROB:tbt=SECONDS[,ttft=SECONDS]`` (``--slo``, repeatable), or in YAML
as that string or a mapping ``{name, probability, tbt, ttft}``. The table is checked as a
whole: each target > 0, each probability in [0, 1], the probabilities summing to 1, no name
twice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from servelab.errors import ConfigError
from servelab.values import kind_of, to_float

FIELD = "slo"
FORM = "NAME:PROB:tbt=SECONDS[,ttft=SECONDS]"
#: Classes in one run: a workload keeps each request's class index in 8 bits.
MAX_CLASSES = 255
#: How far the probabilities' sum may miss 1: decimals such as 0.05 + 0.95 are not exact in
#: binary, and their sum misses by about 1e-16; a real mistake misses by far more.
SUM_TOLERANCE = 1e-9
_NAME = re.compile(r"[\w.-]+")
_KEYS = ("name", "probability", "tbt", "ttft")


@dataclass(frozen=True)
class SloClass:
    """One class: its share of the requests and its targets, in seconds."""

    name: str
    probability: float
    tbt_s: float
    ttft_s: float | None = None


def parse_slo_classes(raw: Any) -> tuple[SloClass, ...]:
    """The class table from specs, mappings or ``SloClass`` objects (one, or a list of them);
    empty for None or an empty list. A bad table is a ``ConfigError`` on ``slo``."""
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str | Mapping | SloClass) else raw
    if not isinstance(items, list | tuple):
        raise ConfigError(FIELD, f"expected a list of classes ({FORM}), got {kind_of(raw)}")
    classes = tuple(_one(item) for item in items)
    if len(classes) > MAX_CLASSES:
        raise ConfigError(FIELD, f"at most {MAX_CLASSES} classes (each request keeps its "
                                 f"class in 8 bits), got {len(classes)}")
    names = [c.name for c in classes]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(FIELD, f"class {', '.join(repeated)} given twice; names must differ")
    total = math.fsum(c.probability for c in classes)
    if classes and abs(total - 1) > SUM_TOLERANCE:
        raise ConfigError(FIELD, f"the class probabilities sum to {total:.12g}, not 1")
    return classes


def _one(item: Any) -> SloClass:
    if isinstance(item, SloClass):
        return _checked(item.name, item.probability, item.tbt_s, item.ttft_s)
    if isinstance(item, str):
        return _parse_spec(item)
    if isinstance(item, Mapping):
        unknown = sorted(str(k) for k in item if k not in _KEYS)
        if unknown:
            raise ConfigError(FIELD, f"unknown key {', '.join(unknown)} in a class; a class "
                                     f"has {', '.join(_KEYS)}")
        missing = [k for k in _KEYS[:3] if item.get(k) is None]
        if missing:
            raise ConfigError(FIELD, f"a class needs {', '.join(missing)}")
        return _checked(item["name"], item["probability"], item["tbt"], item.get("ttft"))
    raise ConfigError(FIELD, f"expected {FORM} or a mapping {{{', '.join(_KEYS)}}}, got "
                             f"{kind_of(item)}")


def _parse_spec(spec: str) -> SloClass:
    parts = spec.strip().split(":")
    if len(parts) != 3:
        raise ConfigError(FIELD, f"{spec!r}: expected {FORM}")
    name, probability, targets = parts
    found: dict[str, str] = {}
    for target in targets.split(","):
        key, sep, value = (s.strip() for s in target.partition("="))
        if not sep or key not in ("tbt", "ttft"):
            raise ConfigError(FIELD, f"{spec!r}: expected tbt=SECONDS or ttft=SECONDS, got "
                                     f"{target.strip()!r}")
        if key in found:
            raise ConfigError(FIELD, f"{spec!r}: {key} given twice")
        found[key] = value
    if "tbt" not in found:
        raise ConfigError(FIELD, f"{spec!r}: a class needs a TBT target (tbt=SECONDS)")
    return _checked(name.strip(), probability, found["tbt"], found.get("ttft"))


def _checked(name: Any, probability: Any, tbt: Any, ttft: Any) -> SloClass:
    """A class with its values converted and in range, or an error that names it."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(FIELD, f"class name {name!r}: use letters, digits, '_', '.' or '-'")
    p = to_float(FIELD, probability, f"a number as {name}'s probability")
    if not 0 <= p <= 1:
        raise ConfigError(FIELD, f"{name}: probability {p:g} is outside [0, 1]")
    tbt_s = to_float(FIELD, tbt, f"seconds as {name}'s tbt")
    ttft_s = None if ttft is None else to_float(FIELD, ttft, f"seconds as {name}'s ttft")
    for key, value in (("tbt", tbt_s), ("ttft", ttft_s)):
        if value is not None and not value > 0:
            raise ConfigError(FIELD, f"{name}: {key} must be > 0 seconds, got {value:g}")
    return SloClass(name, p, tbt_s, ttft_s)

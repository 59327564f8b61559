"""What a capacity search holds each run to: ``stable``, ``ttft_p50<=0.5``, ``tbt_p99<=slo``;
and the latency statistics a sweep shows (``Statistic``: ``ttft_p50``, ``tbt_p99:strict``).

A criterion is ``stable`` (the run's stability verdict must be ``stable``), or ``METRIC OP
VALUE``:

- ``METRIC``: a latency ``ttft``, ``tbt``, ``tpot`` or ``e2e``, joined by ``_`` to one of its
  statistics ``mean``, ``p50``, ``p90`` or ``p99``, in **seconds** (the summary keeps
  milliseconds; they are converted here); or ``slo_attainment``, the fraction of requests that
  met their SLO class's targets, which every class must reach.
- ``OP``: ``<=`` or ``<`` for a latency, ``>=`` or ``>`` for ``slo_attainment``. The search
  assumes a criterion that holds at a rate holds at every lower one; latencies grow and
  attainment falls with the rate, so only those directions describe a largest rate.
- ``VALUE``: a number, or ``slo`` for a TTFT or TBT statistic: every SLO class against its own
  target (``tbt_target_s``, ``ttft_target_s``).

A run whose queue grows without bound meets no criterion: one the verdict calls ``unstable``,
or one the theory does (``theory_verdict``: load >= 1, or outside the k_max region). Its
completed requests are the survivors, whose latencies understate what users see
(docs/model.md); and a backlog the verdict calls ``stable`` above the theory's bound grows, only
slower than the verdict's 1 % tolerance (its value is then ``BEYOND_CAPACITY``). A statistic a
run could not measure (no request completed) is not met either.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from servelab.core.slo import SloClass
from servelab.errors import ConfigError
from servelab.values import kind_of, to_float

LATENCIES = ("ttft", "tbt", "tpot", "e2e")
STATISTICS = ("mean", "p50", "p90", "p99")
STABLE = "stable"
ATTAINMENT = "slo_attainment"
SLO = "slo"
#: The latencies an SLO class has a target for, and the key of that target in a class.
SLO_TARGETS = {"ttft": "ttft_target_s", "tbt": "tbt_target_s"}
UPPER = {"<=": operator.le, "<": operator.lt}
LOWER = {">=": operator.ge, ">": operator.gt}
COMPARISONS = {**UPPER, **LOWER}
#: A run the verdict calls stable at a load the theory says no scheduler keeps up with: its
#: backlog grows, only slower than the verdict's tolerance (docs/model.md).
BEYOND_CAPACITY = "stable, theory unstable"
#: ``stable``'s values from the least favourable to the most.
VERDICTS = ("unstable", "inconclusive", BEYOND_CAPACITY, STABLE)
LATENCY_STATISTICS = f"{{{','.join(LATENCIES)}}}_{{{','.join(STATISTICS)}}}"
KNOWN = (f"{STABLE}; {LATENCY_STATISTICS} (seconds) with <= or <; {ATTAINMENT} (a fraction) "
         "with >= or >")
_SHAPE = re.compile(r"\s*([A-Za-z0-9_]+)\s*(<=|>=|==|=<|=>|<|>|=|!=)?\s*(.*?)\s*$")

#: What a criterion measured in one run: a number, a verdict, one number per SLO class, or None
#: where the run could not measure it.
Value = float | str | dict[str, float | None] | None


@dataclass(frozen=True)
class Criterion:
    """One parsed criterion; ``text`` is its canonical spelling (the key of its values)."""

    text: str
    metric: str  # "stable", "slo_attainment", or a latency statistic such as "ttft_p50"
    op: str | None = None
    threshold: float | str | None = None  # a number, or "slo"

    @property
    def is_stability(self) -> bool:
        return self.metric == STABLE

    def to_dict(self) -> dict[str, Any]:
        unit = None if self.is_stability else "fraction" if self.metric == ATTAINMENT else "s"
        return {"text": self.text, "metric": self.metric, "op": self.op,
                "threshold": self.threshold, "unit": unit}

    def evaluate(self, summary: Mapping[str, Any]) -> tuple[Value, bool]:
        """This criterion's value in a run's summary, and whether the run meets it."""
        verdict = summary.get("verdict")
        if self.is_stability:
            value = BEYOND_CAPACITY if verdict == STABLE and _theory_diverges(summary) else verdict
            return value, value == STABLE
        if self.metric == ATTAINMENT or self.threshold == SLO:
            classes = self._classes(summary)
            targets = [self._target(c) for c in classes]  # every class's, even after a miss
            values = {str(c["name"]): self._class_value(c) for c in classes}
            met = all(self._meets(v, t) for v, t in zip(values.values(), targets, strict=True))
            return values, met and not diverges(summary)
        value = _latency_s(summary, self.metric)
        assert isinstance(self.threshold, float)
        return value, self._meets(value, self.threshold) and not diverges(summary)

    def worst(self, values: Sequence[Any]) -> Value:
        """The least favourable of several runs' values (class by class for class values)."""
        if self.is_stability:
            return min(values, key=lambda v: VERDICTS.index(v) if v in VERDICTS else -1)
        if values and isinstance(values[0], dict):
            return {name: self._worst_number([v[name] for v in values]) for name in values[0]}
        return self._worst_number(values)

    def _worst_number(self, values: Sequence[float | None]) -> float | None:
        numbers = [v for v in values if v is not None and not math.isnan(v)]
        if len(numbers) < len(values) or not numbers:  # a run that could not measure it
            return None
        return min(numbers) if self.op in LOWER else max(numbers)

    def _classes(self, summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        classes = summary.get("classes")
        if not classes:
            what, instead = (("compares each SLO class with its own target", ", or a number")
                             if self.threshold == SLO else ("is measured per SLO class", ""))
            raise ConfigError("criterion", f"{self.text} {what}, but the run has no SLO "
                                           f"classes; give the workload classes{instead}")
        return list(classes)

    def _class_value(self, cls: Mapping[str, Any]) -> float | None:
        if self.metric == ATTAINMENT:
            value = cls.get(ATTAINMENT)
            return None if value is None else float(value)
        return _latency_s(cls, self.metric)

    def _target(self, cls: Mapping[str, Any]) -> float:
        if self.threshold != SLO:
            assert isinstance(self.threshold, float)
            return self.threshold
        key = SLO_TARGETS[self.metric.split("_")[0]]
        target = cls.get(key)
        if target is None:
            raise ConfigError("criterion", f"{self.text}: SLO class {cls['name']!r} has no "
                                           f"{key.split('_')[0].upper()} target")
        return float(target)

    def _meets(self, value: float | None, threshold: float) -> bool:
        if value is None or math.isnan(value):
            return False
        assert self.op is not None
        return bool(COMPARISONS[self.op](value, threshold))

    def check_classes(self, classes: Sequence[SloClass]) -> None:
        """Before any run, what ``evaluate`` would find in the first: this criterion needs SLO
        classes the workload lacks, or a target one of its classes lacks."""
        if self.metric != ATTAINMENT and self.threshold != SLO:
            return
        reported = [{"name": c.name, "tbt_target_s": c.tbt_s, "ttft_target_s": c.ttft_s}
                    for c in classes]  # as a run's summary lists them
        for cls in self._classes({"classes": reported}):
            self._target(cls)


def diverges(summary: Mapping[str, Any]) -> bool:
    """Whether a run's queue grows without bound: its verdict, or the theory, says unstable."""
    return summary.get("verdict") == "unstable" or _theory_diverges(summary)


def _theory_diverges(summary: Mapping[str, Any]) -> bool:
    return summary.get("theory_verdict") == "unstable"


def _latency_s(stats_owner: Mapping[str, Any], metric: str) -> float | None:
    """A latency statistic in seconds from a summary (or a class) that keeps milliseconds."""
    name, stat = metric.split("_")
    stats = stats_owner.get(f"{name}_ms")
    value = None if stats is None else stats.get(stat)
    return None if value is None else float(value) / 1e3


def parse_criterion(text: str) -> Criterion:
    """``stable`` or ``METRIC OP VALUE`` (module docstring); a ConfigError on ``criterion``."""
    if not isinstance(text, str):
        raise ConfigError("criterion", f"expected text such as 'ttft_p50<=0.5', got "
                                       f"{type(text).__name__}")
    match = _SHAPE.fullmatch(text)
    if match is None or not text.strip():
        raise ConfigError("criterion", f"cannot read {text!r}; expected METRIC<=VALUE, "
                                       f"METRIC>=VALUE or stable (known: {KNOWN})")
    metric, op, raw = match.groups()
    metric = metric.lower()
    if metric == STABLE:
        if op or raw:
            raise ConfigError("criterion", f"{text.strip()!r}: stable takes no comparison; "
                                           "write just stable")
        return Criterion(STABLE, STABLE)
    if not _known_metric(metric):
        raise ConfigError("criterion", f"unknown metric {metric!r} in {text.strip()!r}; "
                                       f"known: {KNOWN}")
    if op is None or not raw:
        example = f"{metric}>=0.9" if metric == ATTAINMENT else f"{metric}<=0.5"
        raise ConfigError("criterion", f"{text.strip()!r} needs a comparison and a value, "
                                       f"such as {example}")
    if op not in COMPARISONS:
        raise ConfigError("criterion", f"unknown comparison {op!r} in {text.strip()!r}; use "
                                       "<=, <, >= or >")
    allowed = LOWER if metric == ATTAINMENT else UPPER
    if op not in allowed:
        direction = "falls" if metric == ATTAINMENT else "grows"
        raise ConfigError("criterion", f"{text.strip()!r}: {metric} {direction} with the rate, "
                                       f"so a largest rate exists only under "
                                       f"{' or '.join(allowed)}")
    threshold = _threshold(metric, raw, text)
    spelled = threshold if isinstance(threshold, str) else f"{threshold:g}"
    return Criterion(f"{metric}{op}{spelled}", metric, op, threshold)


def _known_metric(metric: str) -> bool:
    return metric == ATTAINMENT or _is_latency_statistic(metric)


def _is_latency_statistic(metric: str) -> bool:
    name, _, stat = metric.partition("_")
    return name in LATENCIES and stat in STATISTICS


def _threshold(metric: str, raw: str, text: str) -> float | str:
    if raw.lower() == SLO:
        if metric.split("_")[0] not in SLO_TARGETS:
            raise ConfigError("criterion", f"{text.strip()!r}: SLO classes have TTFT and TBT "
                                           f"targets only; give {metric} a number of seconds")
        return SLO
    value = to_float("criterion", raw, f"a number or slo in {text.strip()!r}")
    if metric == ATTAINMENT and not 0 < value <= 1:
        raise ConfigError("criterion", f"{text.strip()!r}: slo_attainment is a fraction; "
                                       "give a value in (0, 1]")
    if metric != ATTAINMENT and not value > 0:
        raise ConfigError("criterion", f"{text.strip()!r}: a latency bound must be > 0 s")
    return value


def parse_criteria(items: Iterable[str | Criterion]) -> list[Criterion]:
    """Criteria from text (or already parsed); at least one, none given twice."""
    if isinstance(items, str | Criterion):
        items = [items]
    parsed = [c if isinstance(c, Criterion) else parse_criterion(c) for c in items]
    if not parsed:
        raise ConfigError("criterion", f"give at least one, such as stable or ttft_p50<=0.5 "
                                       f"(known: {KNOWN})")
    seen: set[str] = set()
    for c in parsed:
        if c.text in seen:
            raise ConfigError("criterion", f"{c.text} given twice")
        seen.add(c.text)
    return parsed


def evaluate_all(criteria: Sequence[Criterion], summary: Mapping[str, Any]
                 ) -> tuple[dict[str, Value], list[str]]:
    """Every criterion's value in a run, and the texts of those it does not meet."""
    values: dict[str, Value] = {}
    failed: list[str] = []
    for c in criteria:
        values[c.text], met = c.evaluate(summary)
        if not met:
            failed.append(c.text)
    return values, failed


@dataclass(frozen=True)
class Statistic:
    """A latency statistic of a run, in seconds, over all its completed requests or one SLO
    class's: ``ttft_p50``, ``tbt_p99:strict``. What a sweep shows against the load."""

    metric: str  # a latency statistic, such as "ttft_p50"
    slo_class: str | None = None

    @property
    def text(self) -> str:
        return self.metric if self.slo_class is None else f"{self.metric}:{self.slo_class}"

    @property
    def label(self) -> str:
        """For a plot's axis: ``TTFT p50``, ``TBT p99, class strict``."""
        name, stat = self.metric.split("_")
        return f"{name.upper()} {stat}" + ("" if self.slo_class is None
                                            else f", class {self.slo_class}")

    def check_classes(self, classes: Sequence[SloClass]) -> None:
        """Before any run: a statistic of one class needs the workload to have that class."""
        names = [c.name for c in classes]
        if self.slo_class is not None and self.slo_class not in names:
            have = f"its classes are {', '.join(names)}" if names else "it has no SLO classes"
            raise ConfigError("metric", f"{self.text}: the workload has no SLO class "
                                        f"{self.slo_class!r}; {have}")

    def value_s(self, summary: Mapping[str, Any]) -> float | None:
        """The statistic in a run's summary, in seconds; None where the run measured none."""
        if self.slo_class is None:
            return _latency_s(summary, self.metric)
        for cls in summary.get("classes") or ():
            if cls["name"] == self.slo_class:
                return _latency_s(cls, self.metric)
        raise ConfigError("metric", f"{self.text}: the run has no SLO class {self.slo_class!r}")


def parse_statistic(text: str | Statistic) -> Statistic:
    """``METRIC`` or ``METRIC:CLASS`` (``Statistic``); a ConfigError on ``metric``."""
    if isinstance(text, Statistic):
        return text
    if not isinstance(text, str):
        raise ConfigError("metric", f"expected text such as 'ttft_p50', got {kind_of(text)}")
    metric, colon, slo_class = (part.strip() for part in text.partition(":"))
    if not _is_latency_statistic(metric.lower()):
        raise ConfigError("metric", f"unknown statistic {metric!r}; known: "
                                    f"{LATENCY_STATISTICS} (seconds), and METRIC:CLASS for one "
                                    "SLO class's")
    if colon and not slo_class:
        raise ConfigError("metric", f"{text.strip()!r} names no SLO class after the ':'")
    return Statistic(metric.lower(), slo_class or None)

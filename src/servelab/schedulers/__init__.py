"""Scheduling policies, by name, built from knob values (``options`` describes the knobs).

A policy takes its knobs as keywords and declares them in ``options_type`` (a
``SchedulerOptions`` dataclass), so nothing here knows any policy's knobs: registering a class
is all a new policy needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from servelab.errors import ConfigError
from servelab.schedulers.base import EngineView, Scheduler
from servelab.schedulers.fastertransformer import FasterTransformer
from servelab.schedulers.kfcfs import KFCFS
from servelab.schedulers.nested_wait import NestedWait
from servelab.schedulers.options import SchedulerOptions
from servelab.schedulers.orca import Orca
from servelab.schedulers.rad import RAD
from servelab.schedulers.reserving import FasterTransformerStatic, OrcaReserve
from servelab.schedulers.sarathi import Sarathi, SarathiSPF
from servelab.schedulers.slai import Slai
from servelab.schedulers.vllm import VanillaVLLM
from servelab.schedulers.wait import Wait

SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls for cls in (FasterTransformer, VanillaVLLM, Orca, Sarathi, SarathiSPF, KFCFS,
                              FasterTransformerStatic, OrcaReserve, RAD, Wait, NestedWait,
                              Slai)
}


def options_type(name: str) -> type[SchedulerOptions]:
    """The options class of the policy ``name``."""
    _check_known(name)
    # Every registered policy declares it; base.Scheduler does not yet (the engine rewrite).
    found: type[SchedulerOptions] = SCHEDULERS[name].options_type  # type: ignore[attr-defined]
    return found


def make_scheduler(name: str, /, **knobs: object) -> Scheduler:
    """Build a policy by name from knob values (text as flags give it is fine; None is the
    default); a knob the policy lacks is a ``ConfigError`` naming ``scheduler.<knob>``."""
    _check_known(name)
    return SCHEDULERS[name](**knobs)


def knobs_for(name: str, knobs: Mapping[str, object]) -> dict[str, object]:
    """The knobs of ``knobs`` that policy ``name`` takes: a comparison hands every policy the
    same knobs, and ``refuse_unused_options`` makes sure each is taken by one of them."""
    taken = options_type(name).names()
    return {knob: value for knob, value in knobs.items() if knob in taken}


def _check_known(name: str) -> None:
    if name not in SCHEDULERS:
        known = ", ".join(SCHEDULERS)
        raise ConfigError("scheduler", f"unknown scheduler '{name}'; known: {known}")


def refuse_unused_options(names: Sequence[str], knobs: Mapping[str, object]) -> None:
    """A knob given (not None) that none of ``names`` takes would do nothing: refuse it.

    One of them is enough, not all: running kfcfs with --kp beside sarathi is the natural way
    to see what the window does.
    """
    for name in names:
        _check_known(name)
    for knob, value in knobs.items():
        if value is None or any(knob in options_type(name).names() for name in names):
            continue
        takers = [name for name in SCHEDULERS if knob in options_type(name).names()]
        field = f"scheduler.{knob}"
        if not takers:
            raise ConfigError(field, f"no scheduler has such an option; {_all_options()}")
        have = "has" if len(names) == 1 else "have"
        take = "takes" if len(takers) == 1 else "take"
        raise ConfigError(field, f"{', '.join(names)} {have} no such option (only "
                                 f"{' and '.join(takers)} {take} it)")


def _all_options() -> str:
    each = [f"{name}: {', '.join(options_type(name).names()) or 'none'}" for name in SCHEDULERS]
    return f"the options are {'; '.join(each)}"


__all__ = ["KFCFS", "SCHEDULERS", "EngineView", "Scheduler", "SchedulerOptions", "knobs_for",
           "make_scheduler", "options_type", "refuse_unused_options"]

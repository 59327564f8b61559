"""Scheduling policies, by name. ``make_scheduler`` builds one from CLI/YAML options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from servelab.errors import ConfigError
from servelab.schedulers.base import EngineView, Scheduler
from servelab.schedulers.fastertransformer import FasterTransformer
from servelab.schedulers.kfcfs import KFCFS
from servelab.schedulers.orca import Orca
from servelab.schedulers.sarathi import Sarathi
from servelab.schedulers.vllm import VanillaVLLM

SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls for cls in (FasterTransformer, VanillaVLLM, Orca, Sarathi, KFCFS)
}

#: The options (config names) each policy takes; ``refuse_unused_options`` checks them.
OPTIONS: dict[str, tuple[str, ...]] = {
    FasterTransformer.name: ("chunked_prefill",),
    VanillaVLLM.name: ("chunked_prefill",),
    Orca.name: (),
    Sarathi.name: (),
    KFCFS.name: ("priority", "kp", "kd"),
}


def make_scheduler(
    name: str,
    *,
    chunked_prefill: bool | None = None,
    priority: str | None = None,
    kp: int | None = None,
    kd: int | None = None,
) -> Scheduler:
    """Build a scheduler by name; None is the default, and options it lacks are left out.

    A comparison hands every policy the same options, so leaving out the ones a policy lacks
    is right here; ``refuse_unused_options`` makes sure each option given is used by one.
    """
    _check_known(name)
    if name in (FasterTransformer.name, VanillaVLLM.name):
        return SCHEDULERS[name](chunked_prefill=bool(chunked_prefill))  # type: ignore[call-arg]
    if name == KFCFS.name:
        return KFCFS(priority=priority or "decode", k_prefill=kp, k_decode=kd)
    return SCHEDULERS[name]()


def _check_known(name: str) -> None:
    if name not in SCHEDULERS:
        known = ", ".join(SCHEDULERS)
        raise ConfigError("scheduler", f"unknown scheduler '{name}'; known: {known}")


def refuse_unused_options(names: Sequence[str], options: Mapping[str, object]) -> None:
    """An option given (not None) that none of ``names`` takes would do nothing: refuse it.

    One of them is enough, not all: running kfcfs with --kp beside sarathi is the natural way
    to see what the window does.
    """
    for name in names:
        _check_known(name)
    for option, value in options.items():
        if value is None or any(option in OPTIONS[name] for name in names):
            continue
        takers = [name for name, taken in OPTIONS.items() if option in taken]
        have = "has" if len(names) == 1 else "have"
        take = "takes" if len(takers) == 1 else "take"
        raise ConfigError(option, f"{', '.join(names)} {have} no such option (only "
                                  f"{' and '.join(takers)} {take} it)")


__all__ = ["KFCFS", "OPTIONS", "SCHEDULERS", "EngineView", "Scheduler", "make_scheduler",
           "refuse_unused_options"]

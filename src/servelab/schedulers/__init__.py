"""Scheduling policies, by name. ``make_scheduler`` builds one from CLI/YAML options."""

from __future__ import annotations

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


def make_scheduler(
    name: str,
    *,
    chunked_prefill: bool = False,
    priority: str = "decode",
    kp: int | None = None,
    kd: int | None = None,
) -> Scheduler:
    """Build a scheduler by name; options a policy does not have are ignored."""
    if name not in SCHEDULERS:
        known = ", ".join(SCHEDULERS)
        raise ConfigError("scheduler", f"unknown scheduler '{name}'; known: {known}")
    if name in (FasterTransformer.name, VanillaVLLM.name):
        return SCHEDULERS[name](chunked_prefill=chunked_prefill)  # type: ignore[call-arg]
    if name == KFCFS.name:
        return KFCFS(priority=priority, k_prefill=kp, k_decode=kd)
    return SCHEDULERS[name]()


__all__ = ["KFCFS", "SCHEDULERS", "EngineView", "Scheduler", "make_scheduler"]

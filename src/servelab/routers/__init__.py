"""Routers in front of replicated engines, by name: ``make_router("power_of_d:2", K, rng)``."""

from __future__ import annotations

import numpy as np

from servelab.errors import ConfigError
from servelab.routers.base import Router
from servelab.routers.jsq import JoinShortestQueue
from servelab.routers.lor import LeastOutstanding
from servelab.routers.power_of_d import PowerOfD
from servelab.routers.round_robin import RoundRobin
from servelab.routers.uniform import Uniform

ROUTERS: dict[str, type[Router]] = {
    cls.name: cls for cls in (RoundRobin, Uniform, JoinShortestQueue, LeastOutstanding, PowerOfD)
}
KNOWN = "round_robin, random, jsq, lor, power_of_d:D"


def make_router(spec: str, replicas: int, rng: np.random.Generator) -> Router:
    """The router ``spec`` names, for ``replicas`` engines; a bad spec is a ConfigError."""
    name, sep, arg = (part.strip() for part in spec.strip().partition(":"))
    if name == PowerOfD.name:
        if not arg.isdigit() or int(arg) < 1:
            raise ConfigError("router", f"power_of_d needs a number of choices D >= 1, as in "
                                        f"power_of_d:2; got {spec!r}")
        if int(arg) > replicas:
            raise ConfigError("router", f"power_of_d:{arg} samples more engines than the "
                                        f"{replicas} replicas")
        return PowerOfD(rng, int(arg))
    if name not in ROUTERS or sep:
        raise ConfigError("router", f"unknown router {spec.strip()!r}; known: {KNOWN}")
    return ROUTERS[name](rng)


__all__ = ["KNOWN", "ROUTERS", "Router", "make_router"]

"""A scheduler's knobs in one place: a frozen dataclass of options beside the policy.

Each policy names its options class in ``options_type`` and takes its knobs as keywords,
reading them through ``options_type.from_mapping``. The registry, the config, the CLI's
``--set scheduler.<knob>=VALUE`` and its help all go through that class, so adding a policy
with ten knobs means writing the policy and its options, nothing else. A knob is a field: its
type says how text converts (``servelab.values``; a ``Literal`` lists the allowed values), its
default is the default, and ``knob()`` adds a lower bound and the line of help the CLI shows.
Errors name a knob ``scheduler.<knob>``. A policy with options, registered in
``servelab.schedulers.SCHEDULERS``::

    @dataclass(frozen=True)
    class WindowOptions(SchedulerOptions):
        window: int = knob(2, "how many prompts may prefill at once", minimum=1)

    class Window(Scheduler):
        name = "window"
        options_type = WindowOptions

        def __init__(self, **knobs: object) -> None:
            self.settings = WindowOptions.from_mapping(knobs, self.name)

        def options(self) -> dict[str, object]:
            return self.settings.as_dict()

The classes live in interpreted modules: mypyc cannot compile a dataclass whose base class is
interpreted, so a compiled policy (``KFCFS``) imports its options from a sibling module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self, get_type_hints

from servelab.errors import ConfigError
from servelab.values import accepted, convert


def knob(default: Any, about: str, minimum: float | None = None) -> Any:
    """A knob's field: its default, a line of help, and an optional lower bound."""
    return dataclasses.field(default=default, metadata={"about": about, "minimum": minimum})


@dataclass(frozen=True)
class SchedulerOptions:
    """No knobs (a policy without options uses this class itself); subclasses add fields."""

    def __post_init__(self) -> None:
        """Convert and check every knob, so a policy built directly is checked too."""
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            name = f"scheduler.{f.name}"
            value = convert(name, hints[f.name], getattr(self, f.name))
            minimum = f.metadata.get("minimum")
            if value is not None and minimum is not None and value < minimum:
                raise ConfigError(name, f"must be >= {minimum}")
            object.__setattr__(self, f.name, value)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, knobs: Mapping[str, object], policy: str) -> Self:
        """Options from knob values as flags and YAML give them; None means the default."""
        given = {name: value for name, value in knobs.items() if value is not None}
        for name in given:
            if name not in cls.names():
                takes = f"takes {', '.join(cls.names())}" if cls.names() else "has none"
                raise ConfigError(f"scheduler.{name}", f"{policy} has no such option (it {takes})")
        return cls(**given)

    def as_dict(self) -> dict[str, Any]:
        """The knobs by name, as a policy's ``options()`` reports them for result files."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(knob, its values and default, its help) for each knob, for the CLI's help."""
        hints = get_type_hints(cls)  # the module's names resolve Literal and the like
        rows = []
        for f in dataclasses.fields(cls):
            values = accepted(hints[f.name])
            if f.metadata.get("minimum") is not None:
                values += f" >= {f.metadata['minimum']}"
            default = "none" if f.default is None else str(f.default).lower()
            rows.append((f.name, f"{values}, default {default}", f.metadata["about"]))
        return rows

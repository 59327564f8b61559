"""The token convention: what a request's tokens cost the engine, and when its first one appears.

The one place that decides it, for the theory, the verdict and the simulator alike
(docs/model.md, "Token conventions"). Under ``paper`` (Li-Dai-Peng's model) a request takes P
prefill token slots, then D decode slots, and output token 1 comes from the first decode slot.
Under ``engine`` (what real engines do) the iteration that completes the prefill also emits
output token 1, so only D - 1 decode slots remain.

Plain attributes and integer arithmetic, so that a compiled engine can read it per request.
"""

from __future__ import annotations

from typing import Any, overload

from numpy import ndarray

from servelab.errors import ConfigError


class Convention:
    """One token convention: ``PAPER`` or ``ENGINE``, or ``Convention.named(name)``."""

    __slots__ = ("_emitted_by_prefill", "first_token_at_prefill", "name")

    def __init__(self, name: str, first_token_at_prefill: bool) -> None:
        self.name = name
        #: True when the iteration that completes the prefill emits output token 1.
        self.first_token_at_prefill = first_token_at_prefill
        self._emitted_by_prefill = 1 if first_token_at_prefill else 0

    # Token counts are one request's (int), a workload's means (float) or every request's
    # (an array); the overloads keep an int an int for the compiled engine.
    @overload
    def decode_slots(self, output_tokens: int) -> int: ...
    @overload
    def decode_slots(self, output_tokens: float) -> float: ...
    @overload
    def decode_slots(self, output_tokens: ndarray) -> ndarray: ...

    def decode_slots(self, output_tokens: Any) -> Any:
        """Decode token slots a request of ``output_tokens`` output tokens needs."""
        return output_tokens - self._emitted_by_prefill

    @overload
    def work(self, prompt_tokens: int, output_tokens: int) -> int: ...
    @overload
    def work(self, prompt_tokens: float, output_tokens: float) -> float: ...
    @overload
    def work(self, prompt_tokens: ndarray, output_tokens: ndarray) -> ndarray: ...

    def work(self, prompt_tokens: Any, output_tokens: Any) -> Any:
        """Token slots a request needs in all: the load is the arrival rate times this, over
        the token capacity (Li-Dai-Peng Theorem 2)."""
        return prompt_tokens + self.decode_slots(output_tokens)

    def total_work(self, prompt_tokens: int, output_tokens: int, requests: int) -> int:
        """Token slots of ``requests`` requests whose lengths add up to these totals."""
        return prompt_tokens + output_tokens - requests * self._emitted_by_prefill

    def __repr__(self) -> str:
        return f"Convention({self.name!r})"

    @staticmethod
    def named(name: object, field: str = "convention") -> Convention:
        """The convention called ``name``; anything else is a ``ConfigError`` naming ``field``."""
        found = _BY_NAME.get(name) if isinstance(name, str) else None
        if found is None:
            raise ConfigError(field, f"must be one of {', '.join(CONVENTIONS)}, got {name!r}")
        return found


PAPER = Convention("paper", first_token_at_prefill=False)
ENGINE = Convention("engine", first_token_at_prefill=True)
_BY_NAME = {c.name: c for c in (PAPER, ENGINE)}
#: The names a config, a flag or a preset may give.
CONVENTIONS = tuple(_BY_NAME)

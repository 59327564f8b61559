"""What WAIT and nested WAIT share: their knobs, what they remember per engine, the clock that
opens a gate closed too long, and how they hand out prefill.

Both hold prompts back on purpose until enough have gathered (rad_slai_related.md B1), so
neither is work-conserving, and an engine running one may idle with work waiting: the policy
then returns an empty batch with ``idle_until`` (``core.batch``), the time its gate opens by
itself. That time exists because a gate closed for ``max_wait_s`` opens with whatever waits
(the released 3-segment nested WAIT force-schedules after 1 s the same way), and stays open
until its thresholds are met again; without it the last requests of a drained run, too few to
meet a threshold, would wait forever.

Memory a policy needs between batches is kept per engine (replicated engines share one policy
object): a dict keyed by the view's id that also holds the view, so an id is never reused
while its state lives. A policy therefore keeps the engines it served alive as long as it
lives itself (one run, or the steps of one ``--requests auto`` run).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from servelab.core.batch import Batch
from servelab.core.request import PREFILLING, Request
from servelab.errors import ConfigError
from servelab.schedulers.base import EngineView, Scheduler
from servelab.schedulers.memory import MemoryRoom
from servelab.schedulers.options import SchedulerOptions, knob
from servelab.values import to_float, to_int


@dataclass(frozen=True)
class WaitOptions(SchedulerOptions):
    total_limit: int = knob(64, "N_total: the requests the thresholds let into the system, "
                                "over all stages, shared by the types in proportion to rate "
                                "x stages", minimum=1)
    # knob() is a dataclasses.field, which ruff does not see through; the default is None.
    types: list[str] | None = knob(None, "the known output lengths and their arrival rates, "  # noqa: RUF009
                                         "LEN@RATE,... (only the ratios of the rates matter); "
                                         "none: estimated from the arrivals so far")
    max_wait_s: float = knob(1.0, "seconds a gate stays closed with requests held before it "
                                  "opens with what waits (> 0)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.max_wait_s > 0:
            raise ConfigError("scheduler.max_wait_s", f"must be > 0, got {self.max_wait_s}")
        self.rates()  # a bad list is an error now, not when the first batch forms

    def rates(self) -> dict[int, float] | None:
        """The declared types as {output length: rate}, or None when they are to be learned."""
        if self.types is None:
            return None
        field = "scheduler.types"
        if not self.types:
            raise ConfigError(field, "is empty; give LEN@RATE,... or leave it out")
        rates: dict[int, float] = {}
        for item in self.types:
            length, at, rate = str(item).partition("@")
            if not at:
                raise ConfigError(field, f"expected LEN@RATE (output length @ arrival rate), "
                                         f"got {item!r}")
            tokens = to_int(field, length.strip())
            if tokens < 1:
                raise ConfigError(field, f"an output length must be >= 1, got {item!r}")
            if tokens in rates:
                raise ConfigError(field, f"output length {tokens} is given twice")
            rates[tokens] = to_float(field, rate.strip(), "a rate")
            if rates[tokens] <= 0:
                raise ConfigError(field, f"a rate must be > 0, got {item!r}")
        return rates


class ViewState:
    """What a policy remembers about one engine."""

    def __init__(self) -> None:
        #: The newest request id taken in from the waiting queue (ids grow with arrival).
        self.last_id = -1
        #: Arrivals seen per output length: the rates, when none were declared.
        self.counts: dict[int, float] = {}
        #: Since when a gate has been closed with requests held behind it, or None.
        self.closed_since: float | None = None

    def overdue(self, now: float, max_wait_s: float) -> bool:
        """Whether the gate has been closed for ``max_wait_s``: it opens with what waits.
        (The sum, not ``now - closed_since``: the engine is woken at exactly this sum.)"""
        return self.closed_since is not None and now >= self.closed_since + max_wait_s

    def note_gate(self, now: float, held: bool) -> None:
        """Start the clock when the gate first holds requests back; stop it when it does
        not (its thresholds met, or nothing held)."""
        if not held:
            self.closed_since = None
        elif self.closed_since is None:
            self.closed_since = now


class ThresholdPolicy(Scheduler):
    """The common part of ``wait`` and ``nested-wait``; see the module docstring."""

    work_conserving: ClassVar[bool] = False
    options_type: ClassVar[type[SchedulerOptions]] = WaitOptions

    def __init__(self, **knobs: object) -> None:
        """``total_limit``, ``types``, ``max_wait_s``: see ``WaitOptions``."""
        self.settings = WaitOptions.from_mapping(knobs, self.name)
        self.declared = self.settings.rates()
        self.max_wait_s = self.settings.max_wait_s
        self._views: dict[int, tuple[EngineView, ViewState]] = {}

    def options(self) -> dict[str, object]:
        return self.settings.as_dict()

    def new_state(self) -> ViewState:
        return ViewState()

    def state(self, view: EngineView) -> ViewState:
        """This engine's state, made on its first call."""
        found = self._views.get(id(view))
        if found is not None and found[0] is view:
            return found[1]
        made = self.new_state()
        self._views[id(view)] = (view, made)
        return made

    def arrivals(self, view: EngineView, state: ViewState) -> list[Request]:
        """Requests that joined the waiting queue since the last call, oldest first; without
        declared types each is counted by its output length (a clairvoyant read)."""
        fresh: list[Request] = []
        for req in reversed(view.waiting):
            if req.id <= state.last_id:
                break
            fresh.append(req)
        if not fresh:
            return fresh
        state.last_id = fresh[0].id
        fresh.reverse()
        if self.declared is None:
            counts = state.counts
            for req in fresh:
                counts[req.output_tokens] = counts.get(req.output_tokens, 0.0) + 1.0
        return fresh

    def rates(self, state: ViewState) -> dict[int, float]:
        return self.declared if self.declared is not None else state.counts

    def prefill(self, view: EngineView, room: int, seqs: int, memory: MemoryRoom | None,
                skip: list[Request], entering: Iterable[Request],
                ) -> tuple[list[tuple[Request, int]], list[Request]]:
        """Chunks for begun prefills (a prompt longer than the budget, which no batch holds
        whole), then for the requests entering stage 0, oldest first: each whole, or, if
        longer than the budget, what room is left; the first that does not fit (room, request
        cap or memory) stops them. Returns the chunks and the entering requests taken."""
        chunks: list[tuple[Request, int]] = []
        for req in view.prefilling:
            if not room or not seqs:
                return chunks, []
            if req in skip:
                continue
            m = min(req.prefill_left, room)
            chunks.append((req, m))
            room -= m
            seqs -= 1
        taken: list[Request] = []
        for req in entering:
            left = req.prefill_left
            if not room or not seqs or (room < left <= view.budget):
                break
            if memory is not None and not memory.admits(req):
                break
            m = min(left, room)
            chunks.append((req, m))
            taken.append(req)
            room -= m
            seqs -= 1
        return chunks, taken

    def idle(self, view: EngineView, state: ViewState) -> Batch:
        """Nothing to run now: wait for the gate to open by itself (an arrival may open it
        sooner). With no gate closed, the empty batch goes to the engine, which refuses it."""
        since = state.closed_since
        if since is not None and since + self.max_wait_s > view.now:
            return Batch([], 0, idle_until=since + self.max_wait_s)
        return Batch([], 0)


def not_begun(waiting: Iterable[Request]) -> Iterable[Request]:
    """Waiting requests whose prefill has not begun (stage 0), oldest first."""
    return (req for req in waiting if req.status != PREFILLING)

"""A request as both the simulator and a real engine see it.

A request carries what a scheduler may know: its prompt length, how much of it is still to
prefill, and where it is in its life (``status``). Its progress in decode (tokens emitted, the
last token's time) belongs to the engine that serves it and is read through the engine's view
(``progress``), so it is the same for every way a batch names its decoders.

``output_tokens`` is the true output length: the simulated engine needs it to know when a
request finishes; a real engine has only the user's limit. A scheduler must not read it unless
it declares itself clairvoyant (see ``Scheduler.clairvoyant``); the test suite runs every
policy on requests that refuse to tell.
"""

from __future__ import annotations

from operator import index
from typing import Any, Final, SupportsIndex

from mypy_extensions import mypyc_attr

# The life of a request. Plain ints, so the engine's hot path compares integers.
WAITING: Final = 0  # admitted, no prefill done yet
PREFILLING: Final = 1  # part of its prompt prefilled
DECODING: Final = 2  # prompt done, generating
PREEMPTED: Final = 3  # evicted while decoding; to prefill its prompt and output so far again
FINISHED: Final = 4
CANCELLED: Final = 5
SWAPPED: Final = 6  # preempted with its KV copied to host memory; decodes on when back
STATUS_NAMES = ("waiting", "prefilling", "decoding", "preempted", "finished", "cancelled",
                "swapped")



@mypyc_attr(allow_interpreted_subclasses=True)
class Request:
    """One request: ``prompt_tokens`` to prefill, then ``output_tokens`` to generate.

    Numbers are taken with ``operator.index``, so numpy integers work as plain ones do.
    Subclasses (a real engine's request with its token ids, say) and pickling work in both
    builds.
    """

    def __init__(self, id: SupportsIndex, arrival: float, prompt_tokens: SupportsIndex,
                 output_tokens: SupportsIndex, slo_class: SupportsIndex = 0) -> None:
        # ``type(x) is int`` first: the simulator makes millions of requests from plain ints.
        self.id: int = id if type(id) is int else index(id)
        self.arrival = float(arrival)
        self.prompt_tokens: int = (prompt_tokens if type(prompt_tokens) is int
                                   else index(prompt_tokens))
        self.output_tokens: int = (output_tokens if type(output_tokens) is int
                                   else index(output_tokens))
        #: Its service-level class: an index into the run's table (``view.slo_classes``), 0
        #: when the run has none.
        self.slo_class: int = slo_class if type(slo_class) is int else index(slo_class)
        #: Prompt tokens still to prefill; after a recompute preemption, the prompt plus the
        #: output emitted so far.
        self.prefill_left = self.prompt_tokens
        self.status = WAITING

    @property
    def prefill_computed(self) -> int:
        """Prompt tokens already processed (chunked prefill makes this partial)."""
        return self.prompt_tokens - self.prefill_left

    @property
    def status_name(self) -> str:
        return STATUS_NAMES[self.status]

    def __reduce__(self) -> tuple[Any, ...]:
        state = (self.id, self.arrival, self.prompt_tokens, self.output_tokens,
                 self.slo_class, self.prefill_left, self.status)
        return _restore, (type(self), state), getattr(self, "__dict__", None)

    def __repr__(self) -> str:
        return (
            f"Request(id={self.id}, arrival={self.arrival:.6g}, prompt={self.prompt_tokens}, "
            f"prefill_left={self.prefill_left}, status={self.status_name})"
        )


def _restore(cls: type[Request], state: tuple[Any, ...]) -> Request:
    """Unpickle: rebuild through ``__init__``, then restore the fields it resets."""
    id, arrival, prompt, output, slo_class, prefill_left, status = state
    req = cls.__new__(cls)
    Request.__init__(req, id, arrival, prompt, output, slo_class)
    req.prefill_left = prefill_left
    req.status = status
    return req


def prefill_not_begun(req: Request) -> bool:
    """Whether ``req`` waits for its prefill to begin: new, or preempted to prefill again."""
    status = req.status
    return status in (WAITING, PREEMPTED)

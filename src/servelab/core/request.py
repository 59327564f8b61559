"""A request as both the simulator and a real engine see it.

The scheduler-visible state is the prompt length and how much of it has been computed; the true
output length is present only so the engine can tell when a request finishes. A scheduler must
not read ``output_tokens`` unless it declares itself clairvoyant (see ``Scheduler.clairvoyant``).
"""

from __future__ import annotations

#: ``Request._finish_key`` of a decoder outside the decode pool's served prefix (as every
#: request starts), and of a finished one; otherwise it is the round the request finishes.
UNSERVED = -1
FINISHED = -2


class Request:
    """One request: ``prompt_tokens`` to prefill, then ``output_tokens`` to generate.

    The underscored slots belong to the engine's decode pool (lazy round counters, so that
    serving every decoder costs O(1) instead of a loop over them).
    """

    __slots__ = (
        "_finish_key",
        "_gaps",
        "_last_token",
        "_remaining",
        "_segment_start",
        "_segments",
        "arrival",
        "id",
        "output_tokens",
        "prefill_left",
        "prompt_tokens",
    )
    # Output tokens still to come, set by the decode pool once one has been emitted (on entering
    # decode under the engine convention, or on leaving the served prefix).
    _remaining: int
    # The decode pool's record of where this request's token gaps went, kept only so the gaps of
    # a request still in flight when a run stops can be taken out of the TBT histogram again:
    # the round its current run of consecutive served rounds began, the (first, last) rounds of
    # earlier runs, and the gaps recorded one by one (in ticks).
    _segment_start: int
    _segments: list[int] | None
    _gaps: list[int] | None

    def __init__(self, id: int, arrival: float, prompt_tokens: int, output_tokens: int) -> None:
        self.id = id
        self.arrival = arrival
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.prefill_left = prompt_tokens
        # The decode pool's initial state: outside its served prefix, no token emitted yet.
        self._finish_key = UNSERVED
        self._last_token: float | None = None
        self._segment_start = 0
        self._segments = None
        self._gaps = None

    @property
    def prefill_computed(self) -> int:
        """Prompt tokens already processed (chunked prefill makes this partial)."""
        return self.prompt_tokens - self.prefill_left

    def __repr__(self) -> str:
        return (
            f"Request(id={self.id}, arrival={self.arrival:.6g}, "
            f"prompt={self.prompt_tokens}, prefill_left={self.prefill_left})"
        )

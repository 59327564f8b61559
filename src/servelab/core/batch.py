"""A batch is what one engine iteration processes: prefill chunks plus decode tokens.

Decoders can be named two ways, and a scheduler declares which it uses
(``Scheduler.decode_order``):

- ``decode_first = k``: the k requests that entered decode earliest. Every policy of the
  Li-Dai-Peng paper serves decoders oldest first, and this form lets the engine serve a batch
  without touching each decoding request (see ``sim.decode_pool``);
- ``decode = [requests]``: an explicit list, in any order (deadline order, newest first), for
  policies that choose decoders one by one. The engine then serves exactly those.

``preempt`` lists requests to evict before the batch runs: a decoder loses its KV state and
goes back to the front of the waiting queue, to prefill its prompt and its output so far again
(recompute preemption), or, when the engine swaps, waits in host memory to decode on; a begun
prefill starts its prefill over.

``idle_until`` makes an empty batch a decision: a policy that is not work-conserving (WAIT
holds prompts until enough have gathered) runs nothing now, and the engine asks it again at
that time at the latest, or sooner when a request arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, SupportsIndex

from mypy_extensions import mypyc_attr

from servelab.core.request import Request


@mypyc_attr(allow_interpreted_subclasses=True)
class Batch:
    """``prefill``: ``(request, tokens)`` chunks; decoders as ``decode_first`` or ``decode``.

    Compiled (one is made per iteration), with its fields typed loosely on purpose: a policy
    may hand numpy integers, and the engine converts and validates everything it reads.
    """

    def __init__(
        self,
        prefill: list[tuple[Request, int]],
        decode_first: SupportsIndex = 0,
        *,
        decode: Sequence[Request] | None = None,
        preempt: Sequence[Request] | None = None,
        idle_until: float | None = None,
    ) -> None:
        self.prefill: Any = prefill
        self.decode_first: Any = decode_first
        self.decode: Any = decode
        self.preempt: Any = preempt
        self.idle_until: Any = idle_until

    @property
    def prefill_tokens(self) -> int:
        return sum(n for _, n in self.prefill)

    @property
    def decode_tokens(self) -> int:
        return int(self.decode_first) if self.decode is None else len(self.decode)

    @property
    def num_tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens

    @property
    def num_seqs(self) -> int:
        return len(self.prefill) + self.decode_tokens

    def __repr__(self) -> str:
        chunks = ", ".join(f"{r.id}:{n}" for r, n in self.prefill)
        decodes = (f"decode_first={self.decode_first}" if self.decode is None
                   else f"decode=[{', '.join(str(r.id) for r in self.decode)}]")
        evicted = ("" if not self.preempt
                   else f", preempt=[{', '.join(str(r.id) for r in self.preempt)}]")
        idle = "" if self.idle_until is None else f", idle_until={self.idle_until!r}"
        return f"Batch(prefill=[{chunks}], {decodes}{evicted}{idle})"

"""A batch is what one engine iteration processes: prefill chunks plus decode tokens.

Decodes are named as "the first ``decode_first`` requests in decode order" instead of a list,
because every policy in the papers serves decoders oldest first; the engine can then serve a
batch without touching each decoding request (see ``sim.decode_pool``).
"""

from __future__ import annotations

from servelab.core.request import Request


class Batch:
    """``prefill``: ``(request, tokens)`` chunks; ``decode_first``: how many decoders are
    served, oldest first."""

    __slots__ = ("decode_first", "prefill")

    def __init__(self, prefill: list[tuple[Request, int]], decode_first: int = 0) -> None:
        self.prefill = prefill
        self.decode_first = decode_first

    @property
    def prefill_tokens(self) -> int:
        return sum(n for _, n in self.prefill)

    @property
    def decode_tokens(self) -> int:
        return self.decode_first

    @property
    def num_tokens(self) -> int:
        return self.prefill_tokens + self.decode_first

    @property
    def num_seqs(self) -> int:
        return len(self.prefill) + self.decode_first

    def __repr__(self) -> str:
        chunks = ", ".join(f"{r.id}:{n}" for r, n in self.prefill)
        return f"Batch(prefill=[{chunks}], decode_first={self.decode_first})"

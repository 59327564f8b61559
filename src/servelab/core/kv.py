"""The KV cache as an engine's schedulers see it: blocks of token slots, and how many are free.

A request's KV lives in blocks of ``block_size`` token slots (vLLM's paged attention). Its
prompt's blocks are allocated when its prefill is first scheduled, all at once, as vLLM and
Sarathi-Serve do (``can_allocate`` checks the whole prompt); after that each decode iteration
appends one slot, and takes a new block when the request's blocks are full. Everything is freed
when the request finishes, is cancelled, or is preempted. A policy may reserve more than the
prompt at admission (``Scheduler.kv_reserve_tokens``: FasterTransformer's and Orca's
max-length reservation), and then needs no new block until the reservation is used up.

This module holds the counts; which request holds what is the engine's (``sim.engine``). The
same object serves a real engine's block manager later: it has no simulator in it.
"""

from __future__ import annotations


class KVCache:
    """``num_blocks`` blocks of ``block_size`` slots; ``watermark_blocks`` kept free when a new
    prompt is admitted (vLLM's watermark: int(fraction x blocks)), so that running requests
    can still grow without an immediate preemption."""

    def __init__(self, num_blocks: int, block_size: int = 16, watermark: float = 0.0,
                 preemption: str = "recompute", swap_block_s: float = 0.0) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("a KV cache needs at least one block of at least one slot")
        if not 0.0 <= watermark < 1.0:
            raise ValueError(f"the watermark is a fraction in [0, 1), got {watermark}")
        if preemption not in ("recompute", "swap"):
            raise ValueError(f"preemption is recompute or swap, got {preemption!r}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.watermark = watermark
        self.watermark_blocks = int(watermark * num_blocks)
        #: ``recompute``: a victim's KV is dropped and prefilled again; ``swap``: it is copied
        #: to host memory and back, at ``swap_block_s`` seconds a block each way.
        self.preemption = preemption
        self.swap_block_s = swap_block_s
        self.free_blocks = num_blocks

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - self.free_blocks

    @property
    def used_fraction(self) -> float:
        """Blocks in use over all blocks (SLAI's KV usage)."""
        return self.used_blocks / self.num_blocks

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold ``tokens`` slots."""
        return -(-tokens // self.block_size)

    def capacity_for(self, tokens: int) -> int:
        """The slots of the blocks that hold ``tokens``: what an allocation really gets."""
        return self.blocks_for(tokens) * self.block_size

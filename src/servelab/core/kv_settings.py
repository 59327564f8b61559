"""KV-cache memory settings, resolved: what the block manager and the memory bound both read.

A run without them (``None`` where a ``KVSettings`` would be) has unlimited memory, the
papers' model. ``servelab.simulation.resolve_kv`` builds one from the configuration and the
preset; docs/model.md ("Memory") says what each field means to the engine and to the theory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

#: vLLM's default block size, in tokens.
DEFAULT_BLOCK_SIZE = 16
#: vLLM's default: the fraction of blocks a new prompt may not take (decodes may).
DEFAULT_WATERMARK = 0.01
Preemption = Literal["recompute", "swap"]
PREEMPTION_MODES: tuple[str, ...] = get_args(Preemption)
DEFAULT_PREEMPTION = "recompute"
#: Swapping crosses the GPU's host link. PCIe 4.0 x16 (RTX 6000 Ada, A100) carries 31.5 GB/s
#: each way (16 GT/s x 16 lanes x 128/130); pinned-memory copies reach about 25 GB/s.
PCIE_BYTES_PER_S = 25e9
#: Mistral-7B's KV per token: 32 layers x 8 KV heads x 128 dims x 2 (K and V) x 2 bytes =
#: 128 KiB. The swap cost of a preset that does not give its own.
MISTRAL_7B_KV_BYTES_PER_TOKEN = 131_072


def swap_block_seconds(block_size: int, kv_bytes_per_token: int) -> float:
    """Seconds to move one block across the host link, one way: 16 tokens x 128 KiB = 2 MiB
    for Mistral-7B, 2,097,152 B / 25e9 B/s = 83.9 us."""
    return block_size * kv_bytes_per_token / PCIE_BYTES_PER_S


@dataclass(frozen=True)
class KVSettings:
    """A KV cache of ``blocks`` blocks of ``block_size`` tokens.

    ``watermark``: the fraction of blocks kept free when admitting a new prompt (vLLM: a prompt
    is admitted only if ``watermark_blocks`` stay free after it; decodes may use them).
    ``preemption``: what evicting a request does with its KV, ``recompute`` (drop it and
    prefill again) or ``swap`` (copy it to host memory and back, ``swap_block_s`` seconds per
    block each way).
    """

    blocks: int
    block_size: int = DEFAULT_BLOCK_SIZE
    watermark: float = DEFAULT_WATERMARK
    preemption: str = DEFAULT_PREEMPTION
    swap_block_s: float = swap_block_seconds(DEFAULT_BLOCK_SIZE, MISTRAL_7B_KV_BYTES_PER_TOKEN)

    @property
    def tokens(self) -> int:
        """The capacity M in tokens."""
        return self.blocks * self.block_size

    @property
    def watermark_blocks(self) -> int:
        """Blocks a new prompt must leave free: int(watermark x blocks), as vLLM counts them."""
        return int(self.watermark * self.blocks)

    def blocks_for(self, tokens: Any) -> Any:
        """Blocks that hold ``tokens`` tokens (a number or an integer array): rounded up."""
        return -(-tokens // self.block_size)

    def blocks_to_run(self, prompt_tokens: Any, kv_tokens: Any) -> Any:
        """Blocks a request needs to run alone: those of its KV when it finishes (``kv_tokens``,
        its token slots), or, to be admitted, its prompt's plus the watermark's."""
        return np.maximum(self.blocks_for(kv_tokens),
                          self.blocks_for(prompt_tokens) + self.watermark_blocks)

    def to_dict(self) -> dict[str, Any]:
        return {"kv_blocks": self.blocks, "block_size": self.block_size,
                "kv_tokens": self.tokens, "watermark": self.watermark,
                "preemption": self.preemption, "swap_block_s": self.swap_block_s}


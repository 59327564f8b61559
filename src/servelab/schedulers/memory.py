"""How the FCFS policies live within a KV cache: vLLM's and Sarathi-Serve's rules, shared.

Decodes come first: a decoding request that needs a new block gets one, and when the free
blocks run out the most recently admitted request is preempted, until the rest fit (vLLM's and
Sarathi-Serve's victim rule). "Most recently admitted" is read as: begun prefills, newest
first (they lose the least), then decoders, newest first. New prompts are admitted only while
their whole prefill's blocks leave the watermark free (vLLM's ``can_allocate``), first come
first served: the first that does not fit waits, and so do the new prompts behind it (begun
prefills behind it go on: they hold their blocks already, as vLLM's running list does). With
nothing running the watermark does not apply, so a request that fits the cache alone runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from servelab.core.request import Request

if TYPE_CHECKING:
    from servelab.schedulers.base import EngineView


class MemoryRoom:
    """The blocks a batch may still take for new prompts; ``skip`` holds the requests being
    preempted, which get no chunk."""

    def __init__(self, view: EngineView, free: int, skip: list[Request]) -> None:
        kv = view.kv
        assert kv is not None
        self.view = view
        self.free = free
        self.floor = kv.watermark_blocks
        self.empty = kv.free_blocks == kv.num_blocks  # nothing holds a block
        self.skip = skip
        self.closed = False  # a new prompt did not fit: the ones behind it wait too

    def admits(self, req: Any) -> bool:
        """Whether ``req`` may have a chunk: not one being preempted; a begun prefill always,
        a new prompt while its blocks fit and none before it was refused; its blocks are then
        counted."""
        if self.skip and req in self.skip:
            return False
        blocks = self.view.blocks_to_admit(req)
        if not blocks:
            return True
        if self.closed or (self.free - blocks < self.floor
                           and not (self.empty and blocks <= self.free)):
            self.closed = True
            return False
        self.free -= blocks
        self.empty = False
        return True


def fit_decoders(view: EngineView, d: int) -> tuple[int, list[Request], int]:
    """Serve the first ``d`` decoders within the free blocks, preempting as the module says.

    Returns the decoders still served, the victims, and the blocks left free afterwards."""
    kv = view.kv
    assert kv is not None
    free = kv.free_blocks
    need = view.decode_blocks(d)
    victims: list[Request] = []
    if need <= free:
        return d, victims, free - need
    for req in reversed(view.prefilling):
        victims.append(req)
        free += view.blocks_held(req)
        if need <= free:
            return d, victims, free - need
    n = view.num_decoding
    for position, req in zip(range(n - 1, -1, -1), view.last_decoders(n), strict=True):
        victims.append(req)
        free += view.blocks_held(req)
        if position < d:  # it was to be served
            d = position
            if view.needs_block(req):
                need -= 1
        if need <= free:
            break
    return d, victims, free - need

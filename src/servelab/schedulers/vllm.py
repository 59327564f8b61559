"""Vanilla vLLM as in Li-Dai-Peng section 4: prefill-prioritised, no mixed batching.

While any prompt waits, the batch is whole prompts (oldest first, while they fit) and every
decode waits. Not work-conserving: a batch of a few short prompts leaves budget unused while
decodes are pending.
"""

from typing import ClassVar

from servelab.schedulers.unmixed import Unmixed


class VanillaVLLM(Unmixed):
    name: ClassVar[str] = "vllm"
    decode_first: ClassVar[bool] = False

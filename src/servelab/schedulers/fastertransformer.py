"""FasterTransformer as in Li-Dai-Peng section 4: decode-prioritised, no mixed batching.

"Whenever there are requests in the decoding stage, it batches as many decode tokens as possible
(up to the token budget) ... leaving requests in the prefill queue untouched." Not
work-conserving: prompts wait while small decode-only batches run.
"""

from typing import ClassVar

from servelab.schedulers.unmixed import Unmixed


class FasterTransformer(Unmixed):
    name: ClassVar[str] = "fastertransformer"
    decode_first: ClassVar[bool] = True

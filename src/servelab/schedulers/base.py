"""The scheduler interface and the two ways of taking prefill work from the waiting queue.

A scheduler sees an ``EngineView`` and returns a ``Batch``; it never learns whether the engine
behind the view is simulated or real. The greedy fills here are shared by every policy so that
"FCFS chunked" and "FCFS whole prompts" mean exactly one thing across the library.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import ClassVar, Protocol, TypeVar

from mypy_extensions import mypyc_attr

from servelab.core.batch import Batch
from servelab.core.convention import Convention
from servelab.core.kv import KVCache
from servelab.core.request import Request
from servelab.core.slo import SloClass
from servelab.schedulers.memory import MemoryRoom
from servelab.timing.models import TimingModel


class Queue(Protocol):
    """The waiting queue as a scheduler reads it: in order, with a length and a front;
    ``reversed`` reads it newest first."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Request]: ...
    def __reversed__(self) -> Iterator[Request]: ...
    def __getitem__(self, i: int) -> Request: ...


class EngineView(Protocol):
    """What a scheduler may read. ``waiting`` holds requests with prefill left, oldest first
    (partly prefilled ones included, a preempted one at the front); ``decoding`` iterates
    decode-phase requests in the order they entered decode (O(number decoding)). Nothing here
    tells a true output length: ``progress`` gives what was emitted, not what is left."""

    # Read-only properties: a scheduler reads the view and never assigns to it.
    @property
    def now(self) -> float: ...
    @property
    def budget(self) -> int: ...
    @property
    def max_seqs(self) -> int | None: ...
    @property
    def seq_limit(self) -> int:
        """``max_seqs`` as a number: the budget when there is no cap (a batch of n tokens never
        holds more than n requests)."""
    @property
    def convention(self) -> Convention:
        """The token convention: whether the iteration that ends a prefill emits output
        token 1 (how many iterations a request of a given output length takes)."""
    @property
    def waiting(self) -> Queue: ...
    @property
    def num_decoding(self) -> int: ...
    @property
    def decoding(self) -> Iterable[Request]: ...
    @property
    def prefilling(self) -> Sequence[Request]:
        """Waiting requests whose prefill has begun, in the order it began."""
    @property
    def last_batch_end(self) -> float: ...
    @property
    def mean_batch_s(self) -> float:
        """The mean duration of every batch so far (0 before the first)."""
    @property
    def timing(self) -> TimingModel:
        """The engine's batch-time model (a real engine's: its profiled preset), for a policy
        that sizes its batches by what they cost (RAD)."""
    @property
    def slo_classes(self) -> tuple[SloClass, ...]:
        """The run's service-level classes, indexed by ``Request.slo_class`` (empty: none),
        so a policy can read a request's targets (SLAI orders decodes by TBT deadline)."""
    def shortest_waiting(self) -> Iterator[Request]:
        """Waiting requests: begun prefills first (in the order they began), then the others
        shortest prompt first, then oldest first."""
    def first_decoders(self, k: int) -> list[Request]:
        """The ``k`` decoders that entered decode earliest (what ``decode_first=k`` serves)."""
    def last_decoders(self, k: int) -> list[Request]:
        """The ``k`` decoders that entered decode latest, newest first (preemption victims)."""
    def progress(self, req: Request) -> tuple[int, float]:
        """(output tokens emitted, the last one's time or -1.0), in O(1) for any request."""
    # KV memory: ``kv`` is None when memory is unlimited (and the calls below give 0).
    @property
    def kv(self) -> KVCache | None: ...
    def blocks_to_admit(self, req: Request) -> int:
        """New blocks a first chunk of ``req`` takes (0 once its prefill has begun)."""
    def decode_blocks(self, k: int) -> int:
        """New blocks the next round takes if it serves the first ``k`` decoders."""
    def needs_block(self, req: Request) -> bool:
        """Whether decoding ``req`` next takes a new block."""
    def blocks_held(self, req: Request) -> int:
        """Blocks ``req`` holds: what preempting it frees."""


class _Prefilling(Protocol):
    prefill_left: int


#: Any request type a view holds: the fills only read ``prefill_left``. (Under mypyc, a
#: ``Request`` annotation would be checked at run time and refuse another engine's requests.)
R = TypeVar("R", bound=_Prefilling)


@mypyc_attr(allow_interpreted_subclasses=True)
class Scheduler(ABC):
    """Builds one batch per iteration under the token budget and the optional request cap."""

    name: ClassVar[str]
    #: True when every batch takes min(budget, demand) tokens (li_dai_peng.md 3.1).
    work_conserving: ClassVar[bool]
    #: A policy that reads true output lengths must say so.
    clairvoyant: ClassVar[bool] = False
    #: True for our reconstruction of a policy whose paper gives no algorithm (RAD): results
    #: say so, and docs/model.md says what is known and what is inferred.
    reconstructed: ClassVar[bool] = False
    #: How batches name decoders: "fcfs" (``Batch.decode_first``, the fast path) or
    #: "explicit" (``Batch.decode``, and ``Batch.preempt``); see ``core.batch``.
    decode_order: ClassVar[str] = "fcfs"

    @property
    def whole_prefill(self) -> bool:
        """True when a prompt must fit in one batch (so a prompt over the budget never runs)."""
        return False

    def options(self) -> dict[str, object]:
        """The knobs this instance was built with, for result files."""
        return {}

    def kv_reserve_tokens(self) -> int:
        """KV slots a request's blocks are allocated for when its prefill begins, at least:
        0 allocates its prefill and grows a block at a time; a policy that reserves a
        maximum sequence length at admission (FasterTransformer, Orca) returns it."""
        return 0

    @abstractmethod
    def schedule(self, view: EngineView) -> Batch:
        """Return the next batch; an empty batch is only allowed when there is no work."""


def fill_chunks(
    waiting: Iterable[R], tokens: int, seqs: int, max_requests: int | None = None,
    memory: MemoryRoom | None = None,
) -> tuple[list[tuple[R, int]], int]:
    """Oldest first, give each waiting request as much of its remaining prefill as fits.

    Finishing the oldest prompt before starting the next touches as few requests as possible
    (Sarathi-Serve's rule). ``max_requests`` is the K_p window of K-FCFS; ``memory``, when the
    engine has a KV cache, admits new prompts while their blocks fit (``schedulers.memory``).
    Returns the chunks and the tokens they use.
    """
    chunks: list[tuple[R, int]] = []
    if tokens <= 0 or seqs <= 0:
        return chunks, 0
    limit = seqs if max_requests is None or max_requests > seqs else max_requests
    room = tokens
    for req in waiting:  # not islice: building one per batch costs more than the count
        if memory is not None and not memory.admits(req):
            continue  # begun prefills behind it still get chunks
        left = req.prefill_left
        if left >= room:
            chunks.append((req, room))
            return chunks, tokens
        chunks.append((req, left))
        room -= left
        if len(chunks) == limit:
            break
    return chunks, tokens - room


def fill_whole(
    waiting: Iterable[R], tokens: int, seqs: int, memory: MemoryRoom | None = None
) -> tuple[list[tuple[R, int]], int]:
    """Oldest first, add whole prompts while they fit; stop at the first that does not.

    Stopping (rather than skipping to a smaller prompt) is the head-of-line blocking of
    FasterTransformer and vanilla vLLM in the paper's stylisation. ``memory`` as for
    ``fill_chunks``.
    """
    chunks: list[tuple[R, int]] = []
    used = 0
    for req in waiting:
        n = req.prefill_left
        if used + n > tokens or len(chunks) == seqs:
            break
        if memory is not None and not memory.admits(req):
            break
        chunks.append((req, n))
        used += n
    return chunks, used

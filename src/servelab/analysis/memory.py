"""The KV-memory bound of Nie, Si and Zhou (arXiv 2605.04595), as servelab reconstructs it.

A request holds KV memory while it runs: during the j-th chunk of its prompt the tokens
prefilled so far, during its k-th decode slot s + k, each rounded up to whole blocks. Summed
over its iterations that is g(s, o), its memory-time in block-iterations. The cache holds
``blocks`` blocks at every iteration, so over a long run requests can finish at most at

    mu_mem = blocks / (b_bar * E[g])      requests/s,

b_bar being the mean batch time. Which b_bar: the batch time of an engine whose cache is full.
Each token slot of compute (W a request) comes with E[g] / W block-iterations of memory, so
such an engine processes on average n_mem = blocks W / E[g] tokens per batch, or the token
capacity's batch n* if that is smaller; and its batches may mix sizes, so b_bar is the lower
convex envelope of t(n) at n_bar = min(n_mem, n*). Then mu_mem is the largest request rate
that any mix of batches can sustain within the memory, and it is below the token bound
(memory binds) exactly when n_mem < n*. docs/model.md ("Memory") has the derivation, the
conventions chosen, and what is the paper's and what is reconstruction.

E[g] goes through one function, ``mean_kv_block_iterations``, that takes the length source:
prompt and output lengths drawn independently (the --prefill and --decode distributions,
from their exact moments, block residues and survival functions), or joint (prompt, output)
pairs, each row equally likely (a trace, a joint table), averaged exactly row by row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from servelab.analysis.capacity import _upper_hull
from servelab.core.convention import Convention
from servelab.core.kv_settings import KVSettings
from servelab.errors import ConfigError
from servelab.timing.models import TimingModel
from servelab.workload.lengths import LengthDist, LengthPairs, LengthSource

#: The chunk sum adds P(prompt > j * chunk) one chunk at a time; beyond this many chunks (a
#: prompt of 4 million budgets) the prompt lengths are refused rather than summed for seconds.
MAX_CHUNK_TERMS = 1 << 22


def _waste(tokens: Any, block_size: int) -> Any:
    """Token slots left empty in the last block: ceil(t / bs) * bs - t."""
    return -tokens % block_size


def _cumulative_blocks(n: np.ndarray, block_size: int) -> np.ndarray:
    """F(n) = sum_{m=1..n} ceil(m / bs): the block-iterations of a KV growing by one token an
    iteration from 1 to n tokens; in closed form bs q(q+1)/2 + r(q+1), n = q bs + r."""
    q, r = np.divmod(np.asarray(n, dtype=np.float64), block_size)
    return block_size * q * (q + 1) / 2 + r * (q + 1)


def _earlier_chunk_blocks(chunks: np.ndarray, chunk: int, block_size: int) -> np.ndarray:
    """sum_{j=1..J} ceil(j chunk / bs), J = ``chunks``: the blocks a prompt holds during its
    first J chunks, when each is a whole chunk. The waste ceil(x/bs) bs - x of x = j chunk
    repeats with period p = bs / gcd(chunk, bs), so the sum has a closed form."""
    period = block_size // math.gcd(chunk, block_size)
    prefix = np.concatenate(([0], np.cumsum(_waste(np.arange(1, period + 1) * chunk,
                                                   block_size))))
    j = np.asarray(chunks, dtype=np.int64)
    waste = (j // period) * prefix[period] + prefix[j % period]
    return (chunk * j.astype(np.float64) * (j + 1) / 2 + waste) / block_size


def kv_block_iterations(prompt: np.ndarray, decode_slots: np.ndarray, chunk: int,
                        block_size: int) -> np.ndarray:
    """g(s, o') per request, exact: the block-iterations of a prompt of s tokens prefilled in
    chunks of ``chunk`` (min(j chunk, s) tokens held during chunk j), then o' decode slots
    (s + k tokens held during slot k)."""
    s = np.asarray(prompt, dtype=np.int64)
    chunks = -(-s // chunk)
    prefill = _earlier_chunk_blocks(chunks - 1, chunk, block_size) + -(-s // block_size)
    decode = (_cumulative_blocks(s + decode_slots, block_size)
              - _cumulative_blocks(s, block_size))
    return prefill + decode


def _residue_moment(residues: np.ndarray, block_size: int) -> float:
    """E[phi(N mod bs)], phi(r) = r (bs - r) / (2 bs): what F(N) adds to N^2/(2 bs) + N/2."""
    r = np.arange(block_size)
    return float(residues @ (r * (block_size - r) / (2 * block_size)))


def _chunk_sum(prefill: LengthDist, chunk: int, block_size: int) -> float:
    """E[sum_{j=1..C-1} ceil(j chunk / bs)] = sum_{j>=1} ceil(j chunk / bs) P(s > j chunk),
    C = ceil(s / chunk): the blocks the earlier, whole chunks of a prompt hold. Summed up to
    the distribution's ``survival_end``; a tail that goes on beyond (a lognormal's) is its
    integral, replacing ceil(x / bs) by (x + the mean waste) / bs."""
    last = prefill.survival_end // chunk
    if last > MAX_CHUNK_TERMS:
        raise ConfigError("prefill", f"{prefill.spec} has prompts up to about "
                                     f"{prefill.survival_end:,} tokens, {last:,} chunks of the "
                                     f"{chunk:,}-token budget; the memory bound sums at most "
                                     f"{MAX_CHUNK_TERMS:,}: give a larger --budget")
    j = np.arange(1, last + 1)
    exact = float(np.sum(-(-(j * chunk) // block_size) * prefill.survival(j * chunk)))
    below, below_squared = prefill.tail_excess((last + 0.5) * chunk)
    period = block_size // math.gcd(chunk, block_size)
    mean_waste = float(np.mean(_waste(np.arange(1, period + 1) * chunk, block_size)))
    return exact + (below_squared / 2 + mean_waste * below) / (chunk * block_size)


def _independent_block_iterations(prefill: LengthDist, decode: LengthDist, chunk: int,
                                  block_size: int, convention: Convention) -> float:
    """E[g] for independent s and o, o' = decode slots = o - e (e = 1 when the prefill emits
    the first token). With F(n) = n^2/(2 bs) + n/2 + phi(n mod bs):

        E[g] = E[chunk blocks] + E[ceil(s / bs)] + E[F(s + o')] - E[F(s)],

    from E[s], E[s^2], E[o'], E[o'^2] and the residues of s and of s + o' modulo bs (the
    circular convolution of the two: s and o are independent)."""
    e = int(convention.first_token_at_prefill)
    s1 = prefill.mean
    o1 = decode.mean - e
    o2 = decode.second_moment - 2 * e * decode.mean + e * e
    prompt_res = prefill.residues(block_size)
    slots_res = np.roll(decode.residues(block_size), -e)  # o' = o - e
    sum_res = np.fft.irfft(np.fft.rfft(prompt_res) * np.fft.rfft(slots_res), n=block_size)
    decode_part = ((2 * s1 * o1 + o2) / (2 * block_size) + o1 / 2
                   + _residue_moment(sum_res, block_size)
                   - _residue_moment(prompt_res, block_size))
    waste = float(prompt_res @ _waste(np.arange(block_size), block_size))
    prompt_blocks = (s1 + waste) / block_size
    return _chunk_sum(prefill, chunk, block_size) + prompt_blocks + decode_part


def mean_kv_block_iterations(lengths: LengthSource, chunk: int, block_size: int,
                             convention: Convention) -> float:
    """E[g]: a request's KV memory-time in block-iterations, prompts prefilled in chunks of
    ``chunk`` tokens. Joint pairs are averaged exactly; independent lengths go through their
    moments (``_independent_block_iterations``)."""
    if isinstance(lengths, LengthPairs):
        slots = convention.decode_slots(np.asarray(lengths.output, dtype=np.int64))
        return float(np.mean(kv_block_iterations(lengths.prompt, slots, chunk, block_size)))
    return _independent_block_iterations(lengths.prefill, lengths.decode, chunk, block_size,
                                         convention)


def envelope_time(timing: TimingModel, budget: int, prefill_fraction: float,
                  tokens: float) -> float:
    """The lower convex envelope of t(n), n = 1..budget, at ``tokens``: the least mean batch
    time of any mix of batches averaging that many tokens. For a convex t (piecewise,
    affine, constant) it is t itself; for the staircase it runs through the step corners."""
    n = np.arange(1, budget + 1, dtype=np.float64)
    t = timing.curve(budget, prefill_fraction)
    hull = np.array(_upper_hull(np.column_stack((n, -t))))
    return float(-np.interp(tokens, hull[:, 0], hull[:, 1]))


@dataclass(frozen=True)
class MemoryBound:
    """The KV-memory bound of one engine; ``max_rate`` = kv.blocks / (batch_s x E[g])."""

    kv: KVSettings
    chunk_tokens: int
    block_iterations: float  # E[g] in block-iterations
    batch_tokens: float  # n_bar = min(n_mem, n*), at least 1
    batch_s: float  # b_bar = the envelope's time at n_bar
    max_rate: float  # requests/s

    def to_dict(self, replicas: int = 1) -> dict[str, Any]:
        """The summary's ``memory`` block; rates are the fleet's."""
        return {
            **self.kv.to_dict(),
            "chunk_tokens": self.chunk_tokens,
            "kv_token_iterations_per_request": self.block_iterations * self.kv.block_size,
            "batch_tokens": self.batch_tokens,
            "batch_s": self.batch_s,
            "max_rate": replicas * self.max_rate,
        }


def memory_bound(timing: TimingModel, budget: int, kv: KVSettings, lengths: LengthSource,
                 convention: Convention, work: float, prefill_fraction: float,
                 capacity_batch: int) -> MemoryBound:
    """The memory bound for this engine and workload (module docstring). ``work`` is W, the
    token slots per request; ``capacity_batch`` is n*, the token capacity's batch size."""
    g = mean_kv_block_iterations(lengths, budget, kv.block_size, convention)
    n_mem = kv.blocks * work / g
    n_bar = min(max(n_mem, 1.0), float(capacity_batch))
    b_bar = envelope_time(timing, budget, prefill_fraction, n_bar)
    return MemoryBound(kv, budget, g, n_bar, b_bar, kv.blocks / (b_bar * g))


def check_requests_fit(kv: KVSettings, lengths: LengthPairs, convention: Convention,
                       where: Callable[[int], str] | None = None) -> None:
    """Refuse requests that could never run: a request alone needs ``kv.blocks_to_run``
    blocks. ``where(i)``, if given, says for the error which request row i is."""
    slots = convention.work(lengths.prompt, lengths.output)
    need = kv.blocks_to_run(lengths.prompt, slots)
    worst = int(np.argmax(need))
    if need[worst] <= kv.blocks:
        return
    prompt, output = int(lengths.prompt[worst]), int(lengths.output[worst])
    admit = (f", or its prompt's {int(kv.blocks_for(prompt)):,} plus the watermark's "
             f"{kv.watermark_blocks:,} kept free to admit it" if kv.watermark_blocks else "")
    raise ConfigError(
        "kv_blocks",
        f"a request of {prompt:,} prompt and {output:,} output tokens"
        f"{where(worst) if where else ''} needs "
        f"{int(need[worst]):,} blocks of {kv.block_size} tokens (its KV of {int(slots[worst]):,} "
        f"tokens when it finishes{admit}), more than the cache's {kv.blocks:,}: it could never "
        f"run; give --kv-blocks {int(need[worst])} or more",
    )


def largest_requests(lengths: LengthSource) -> LengthPairs | None:
    """The requests the largest need comes from when it is known without drawing: every
    joint pair, or the longest prompt with the longest output; None when a length is
    unbounded (then only a run's drawn requests can be checked)."""
    if isinstance(lengths, LengthPairs):
        return lengths
    longest = (lengths.prefill.max_value, lengths.decode.max_value)
    if None in longest:
        return None
    return LengthPairs(np.array([longest[0]]), np.array([longest[1]]))

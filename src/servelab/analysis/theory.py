"""The theory printed beside every run: capacity, load, fluid slope, the k_max region, and the
one answer they give.

This is Li-Dai-Peng Theorem 2 made concrete: mu = max_n n/t(n) tokens/s, lambda* = mu / W with
W the token slots per request, load rho = lambda/lambda*, and above capacity the fluid backlog
grows at lambda*W - mu tokens/s. With a request cap k_max the region is two-dimensional
(``capacity.kmax_region``): it has its own lambda* along the workload's mix, it decides the
answer, and the fluid slope comes from it. ``load`` and ``capacity`` stay the token-capacity
(b_max alone) numbers, so ``--load`` means the same with and without a cap. With a KV cache
(``analysis.memory``) the memory bound of Nie, Si and Zhou joins them: whichever of it and the
token (or k_max) bound is lower binds, and decides the answer and the fluid slope.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from servelab.analysis.capacity import kmax_region
from servelab.analysis.memory import MemoryBound
from servelab.core.convention import Convention
from servelab.timing.models import TimingModel

#: The keys a KV cache adds to the theory, and only a KV cache: without one nothing changes.
MEMORY_KEYS = ("memory", "memory_max_rate", "binding")


def request_capacity(
    timing: TimingModel, budget: int, m_p: float, m_d: float, convention: Convention
) -> tuple[float, float, int]:
    """(tokens/s, requests/s, best batch size) for this workload's mean lengths."""
    mu, n_star = timing.capacity(budget, m_p / (m_p + m_d))
    return mu, mu / convention.work(m_p, m_d), n_star


def fluid_slope(rate: float, max_rate: float, work: float) -> float:
    """Backlog growth in tokens/s: requests arrive at ``rate`` and finish at most at
    ``max_rate``, each carrying ``work`` token slots."""
    return max(0.0, (rate - max_rate) * work)


def prompt_assumption(m_p: float, fixed_prompt: bool) -> str:
    """What the k_max region assumes about prompt lengths, said where it is printed."""
    if fixed_prompt:
        return f"every prompt has {m_p:g} tokens"
    return f"prompt lengths vary; every prompt taken to have the mean {m_p:g} tokens"


def theory_verdict(load: float, region_decides: bool, fixed_prompt: bool,
                   full_batch: tuple[float, int, int] | None = None) -> tuple[str, str]:
    """(verdict, reason): the theory's one answer for this load.

    Without a request cap ``load`` is rho and Theorem 2 decides. It holds for the load against
    what a *full* batch of b_max serves, b/t(b): under load a work-conserving policy fills the
    budget. When a smaller batch n* serves more per second (a staircase whose step b_max passes,
    a tile), ``full_batch`` is (that load, n*, b_max): between the two, only a policy that caps
    its batches near n* keeps up ("feasible"). With a request cap (``region_decides``) ``load``
    is the region's 2-D load. Outside, no policy serves the load (the region is an outer bound).
    Inside only means *some* batch mix could: one whose chunks tile the prompts (a cut remainder
    costs a slot the region does not count), and a work-conserving policy with a large budget
    can diverge inside it (Li-Dai-Peng point C).
    """
    if not region_decides:
        if load >= 1:
            return "unstable", (f"load {load:.4f} >= 1: more tokens arrive than the token "
                                "capacity serves, so no scheduler can keep up")
        if full_batch is not None and full_batch[0] >= 1:
            full_load, n_star, budget = full_batch
            return "feasible", (f"load {load:.4f} < 1 at batches of {n_star} tokens, but "
                                f"{full_load:.4f} >= 1 at full batches of {budget}, which "
                                "serve fewer tokens a second: a work-conserving scheduler "
                                "fills the budget under load and cannot keep up (Li-Dai-Peng "
                                f"Theorem 2 needs the load at b_max below 1); one that caps "
                                f"its batches at {n_star} tokens (rad) can")
        return "stable", (f"load {load:.4f} < 1: every work-conserving scheduler is stable "
                          "(Li-Dai-Peng Theorem 2)")
    caveat = "" if fixed_prompt else " (if every prompt had the mean length)"
    if load >= 1:
        return "unstable", (f"outside the k_max region (2-D load {load:.4f} >= 1): no scheduler "
                            f"can serve it{caveat}")
    return "feasible", (f"inside the k_max region (2-D load {load:.4f} < 1): a mix of batches "
                        f"whose prefill chunks tile the prompts can serve it{caveat}; a "
                        "work-conserving policy with a large budget may still diverge "
                        "(Li-Dai-Peng point C)")


def memory_verdict(verdict: str, reason: str, memory_load: float,
                   binding: str) -> tuple[str, str]:
    """The verdict once the KV cache is counted: the memory bound decides when it binds.

    When it does not, its load is below the token (or k_max) load, so it changes the answer
    only by a caveat: Nie-Si-Zhou prove stability below the memory bound less a slack tied to
    the largest request, which they do not give in closed form.
    """
    if binding == "memory" and memory_load >= 1:
        return "unstable", (f"memory load {memory_load:.4f} >= 1: requests need more KV "
                            "memory-time than the cache holds (Nie-Si-Zhou), so no scheduler "
                            "can keep up")
    if verdict == "unstable":
        return verdict, reason
    return verdict, (f"{reason}; memory load {memory_load:.4f} < 1: the KV cache keeps up too "
                     "(Nie-Si-Zhou: stable under a work-conserving policy below the memory "
                     "bound, less a slack tied to the largest request)")


class Bound(NamedTuple):
    """The bound that decides: its load's name, its boundary's, the load (None without a
    rate) and its request capacity."""

    load_name: str
    boundary: str
    load: float | None
    max_rate: float


def binding_bound(theory: Mapping[str, Any]) -> Bound:
    """The bound that decides a run's theory: the KV memory when it binds, else the k_max
    region with a request cap, else the token capacity."""
    region = theory.get("kmax_region")
    if theory.get("binding") == "memory":
        memory = theory["memory"]
        return Bound("memory load", "the KV-memory bound", memory.get("load"),
                     memory["max_rate"])
    if region:
        return Bound("2-D load", "the k_max region's boundary", region.get("load"),
                     region["max_rate"])
    return Bound("load", "capacity", theory.get("load"), theory["capacity"]["max_rate"])


def theory_summary(
    timing: TimingModel,
    budget: int,
    kmax: int | None,
    m_p: float,
    m_d: float,
    convention: Convention,
    rate: float,
    fixed_prompt: bool,
    replicas: int = 1,
    memory: MemoryBound | None = None,
) -> dict[str, Any]:
    """The capacity block, load, fluid slope, k_max region and verdict at ``rate`` requests/s.

    With ``replicas`` identical engines (Li-Dai-Peng Proposition 3) capacities and rates are
    the whole system's, K times one engine's, and the load is each engine's share of the
    arrivals over its own capacity. A rate of 0 (the theory alone) gives no verdict and no
    offered point. With ``memory`` (one engine's KV-memory bound) the summary gains the
    ``memory`` block, ``memory_max_rate`` and ``binding``; without it, nothing changes.
    """
    mu, max_rate, n_star = request_capacity(timing, budget, m_p, m_d, convention)
    work = convention.work(m_p, m_d)
    offered = rate * work
    # What a full batch serves, when a smaller one serves more (the work-conserving bound).
    mu_full = (budget / timing.tokens_duration(budget, m_p / (m_p + m_d))
               if n_star < budget else mu)
    out: dict[str, Any] = {
        "rate": rate,
        "load": rate / (replicas * max_rate),
        "capacity": {
            "tokens_per_s": replicas * mu,
            "max_rate": replicas * max_rate,
            "batch_tokens_at_capacity": n_star,
            "work_per_request_tokens": work,
        },
        "offered_tokens_per_s": offered,
        "fluid_slope_tokens_per_s": fluid_slope(rate, replicas * max_rate, work),
        "kmax_region": None,
    }
    full_batch = None
    if mu_full < mu:
        out["capacity"]["full_batch_tokens_per_s"] = replicas * mu_full
        out["capacity"]["full_batch_max_rate"] = replicas * mu_full / work
        full_batch = (offered / (replicas * mu_full), n_star, budget)
    deciding_load = out["load"]
    if kmax is not None:
        region = kmax_region(timing, budget, kmax, m_p)
        decode_slots = convention.decode_slots(m_d)
        region_rate = replicas / region.load(m_p, decode_slots)
        block = {**region.to_dict(), "assumption": prompt_assumption(m_p, fixed_prompt),
                 "max_rate": region_rate}
        if rate > 0:
            offered_2d = (rate * m_p, rate * decode_slots)
            deciding_load = region.load(offered_2d[0] / replicas, offered_2d[1] / replicas)
            out["fluid_slope_tokens_per_s"] = fluid_slope(rate, region_rate, work)
            block.update(offered_tokens_per_s=list(offered_2d), load=deciding_load,
                         inside=deciding_load < 1.0,
                         fluid_slope_tokens_per_s=out["fluid_slope_tokens_per_s"])
        out["kmax_region"] = block
    if rate > 0:
        out["theory_verdict"], out["theory_verdict_reason"] = theory_verdict(
            deciding_load, kmax is not None, fixed_prompt, full_batch)
    if memory is not None:
        _add_memory(out, memory, replicas, rate, work)
    if replicas > 1:
        out["replicas"] = replicas
    return out


def _add_memory(out: dict[str, Any], memory: MemoryBound, replicas: int, rate: float,
                work: float) -> None:
    """The memory bound beside the token (or k_max) bound; the lower one binds."""
    block = memory.to_dict(replicas)
    other_rate = binding_bound(out).max_rate  # the token capacity's, or the k_max region's
    out["memory"] = block
    out["memory_max_rate"] = block["max_rate"]
    out["binding"] = "memory" if block["max_rate"] < other_rate else "tokens"
    if rate > 0:
        block["load"] = rate / block["max_rate"]
        block["fluid_slope_tokens_per_s"] = fluid_slope(rate, block["max_rate"], work)
        if out["binding"] == "memory":
            out["fluid_slope_tokens_per_s"] = block["fluid_slope_tokens_per_s"]
        out["theory_verdict"], out["theory_verdict_reason"] = memory_verdict(
            out["theory_verdict"], out["theory_verdict_reason"], block["load"], out["binding"])

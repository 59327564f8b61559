"""The theory printed beside every run: capacity, load, fluid slope, and the k_max region.

This is Li-Dai-Peng Theorem 2 made concrete: mu = max_n n/t(n) tokens/s, lambda* = mu / W with
W the token slots per request, load rho = lambda/lambda*, and above capacity the fluid backlog
grows at lambda*W - mu tokens/s. With a request cap k_max the region is two-dimensional
(``capacity.kmax_region``) and its gauge replaces rho as the stability criterion.
"""

from __future__ import annotations

from typing import Any

from servelab.analysis.capacity import kmax_region, work_per_request
from servelab.timing.models import TimingModel


def request_capacity(
    timing: TimingModel, budget: int, m_p: float, m_d: float, convention: str
) -> tuple[float, float, int]:
    """(tokens/s, requests/s, best batch size) for this workload's mean lengths."""
    mu, n_star = timing.capacity(budget, m_p / (m_p + m_d))
    return mu, mu / work_per_request(m_p, m_d, convention), n_star


def theory_summary(
    timing: TimingModel,
    budget: int,
    kmax: int | None,
    m_p: float,
    m_d: float,
    convention: str,
    rate: float,
) -> dict[str, Any]:
    """The capacity block, load and fluid slope for a run at ``rate`` requests/s."""
    mu, max_rate, n_star = request_capacity(timing, budget, m_p, m_d, convention)
    work = work_per_request(m_p, m_d, convention)
    offered = rate * work
    out: dict[str, Any] = {
        "rate": rate,
        "load": rate / max_rate,
        "capacity": {
            "tokens_per_s": mu,
            "max_rate": max_rate,
            "batch_tokens_at_capacity": n_star,
            "work_per_request_tokens": work,
        },
        "offered_tokens_per_s": offered,
        "fluid_slope_tokens_per_s": max(0.0, offered - mu),
        "kmax_region": None,
    }
    if kmax is not None:
        region = kmax_region(timing, budget, kmax, m_p)  # the mean prompt stands in for P
        decode_slots = m_d - (1 if convention == "engine" else 0)
        offered_2d = (rate * m_p, rate * decode_slots)
        load_2d = region.load(*offered_2d)
        out["kmax_region"] = {
            **region.to_dict(),
            "offered_tokens_per_s": list(offered_2d),
            "load": load_2d,
            "inside": load_2d < 1.0,
        }
    return out

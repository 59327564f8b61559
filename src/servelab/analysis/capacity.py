"""Capacity theory: what a single engine can sustain, from its batch-time model alone.

Pure functions, no simulation, so every run can print the bound beside what it measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from servelab.errors import ConfigError
from servelab.timing.models import TimingModel
from servelab.timing.presets import CONVENTIONS


def token_capacity(model: TimingModel, budget: int, prefill_fraction: float = 0.5) -> float:
    """Tokens/s at the best batch size n <= budget (Li/Dai/Peng: b / t_b at b = b_max)."""
    return model.capacity(budget, prefill_fraction)[0]


def work_per_request(m_p: float, m_d: float, convention: str) -> float:
    """Token slots one request needs: the load is lambda times this, over token capacity.

    Under "paper" a request needs P prefill then D decode slots. Under "engine" the iteration
    that finishes the prefill also emits output token 1, so only D - 1 decode slots remain.
    """
    if convention not in CONVENTIONS:
        raise ConfigError(
            "convention", f"must be one of {', '.join(CONVENTIONS)}, got {convention!r}"
        )
    return m_p + m_d - (1 if convention == "engine" else 0)


def _int_at_least_1(value: int, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(field, f"must be an integer >= 1, got {value!r}")


Point = tuple[float, float]


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _upper_hull(points: np.ndarray) -> list[Point]:
    """Andrew's monotone chain, upper half, left to right; collinear points are dropped."""
    order = np.lexsort((-points[:, 1], points[:, 0]))  # x ascending, then y descending
    tol = 1e-12 * float(np.max(points)) ** 2
    hull: list[Point] = []
    for p in map(tuple, points[order].tolist()):
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) >= -tol:
            hull.pop()
        hull.append(p)
    return hull


@dataclass(frozen=True)
class KmaxRegion:
    """Stable (prefill, decode) token rates when a batch holds at most kmax requests.

    Reconstruction of Li/Dai/Peng v3 Theorem 10 (the reading chosen here, which reproduces the
    paper's vertex C): a batch of x prefill and y decode tokens takes t(x + y) (affine models:
    duration(x, y, y + [x > 0])), needs x + y <= budget and y + [x > 0] <= kmax (one prefilling
    request per batch, the most favourable case), and delivers the rate point (x, y) / t. The
    region is the down-closed convex hull of the origin and all such points. ``vertices`` is
    its outer boundary from the y-axis to the x-axis, in tokens/s.
    """

    budget: int
    kmax: int
    vertices: list[Point]

    def load(self, prefill_rate: float, decode_rate: float) -> float:
        """The smallest s > 0 with (prefill_rate, decode_rate) / s in the region.

        Below 1 strictly inside, above 1 outside. The region is convex and holds the origin,
        so this gauge is the largest n.q / n.v over the boundary edges (outward normal n,
        any vertex v of the edge), i.e. where the ray from the origin crosses the boundary.
        """
        for field, rate in (("prefill_rate", prefill_rate), ("decode_rate", decode_rate)):
            if not rate >= 0:
                raise ConfigError(field, f"must be a token rate >= 0, got {rate!r}")
        v = np.array(self.vertices)
        edge = np.diff(v, axis=0)
        normal = np.column_stack((-edge[:, 1], edge[:, 0]))
        offset = np.einsum("ij,ij->i", normal, v[:-1])
        return float(np.max((normal @ np.array([prefill_rate, decode_rate])) / offset))

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "kmax": self.kmax,
            "vertices_tokens_per_s": [[x, y] for x, y in self.vertices],
        }


def _candidate_batches(budget: int, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) batch shapes that can be hull vertices, three per batch size n.

    For fixed n = x + y the feasible shapes with x > 0 form a segment, and (x, y) / t maps a
    segment to a segment when t is token-only or affine in (x, y); only its ends can be
    vertices: (max(1, n - kmax + 1), rest) and (n, 0). The decode-only shape (0, n) has its own
    time formula and is feasible for n <= kmax.
    """
    n = np.arange(1, budget + 1)
    lo = np.maximum(1, n - kmax + 1)
    decode_only = n[n <= kmax]
    x = np.concatenate((np.zeros_like(decode_only), lo, n))
    y = np.concatenate((decode_only, n - lo, np.zeros_like(n)))
    return x, y


def kmax_region(model: TimingModel, budget: int, kmax: int) -> KmaxRegion:
    """The 2-D stability region for token budget ``budget`` and request cap ``kmax``."""
    _int_at_least_1(budget, "budget")
    _int_at_least_1(kmax, "kmax")
    x, y = _candidate_batches(budget, kmax)
    t = np.asarray(model.durations(x, y, y + (x > 0)), dtype=float)
    points = np.column_stack((x / t, y / t))
    x_max, y_max = points.max(axis=0)
    return KmaxRegion(budget, kmax, _upper_hull(np.vstack((points, [[0.0, y_max], [x_max, 0.0]]))))

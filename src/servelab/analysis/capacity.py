"""Capacity theory: what a single engine can sustain, from its batch-time model alone.

Pure functions, no simulation, so every run can print the bound beside what it measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from servelab.errors import ConfigError
from servelab.timing.models import TimingModel


def token_capacity(model: TimingModel, budget: int, prefill_fraction: float = 0.5) -> float:
    """Tokens/s at the best batch size n <= budget (Li/Dai/Peng: b / t_b at b = b_max)."""
    return model.capacity(budget, prefill_fraction)[0]


def _int_at_least_1(value: int, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(field, f"must be an integer >= 1, got {value!r}")


Point = tuple[float, float]
# Pairs of vectorised pruning passes before the hull's loop (few suffice for the region's curves).
_PRUNING_PASSES = 8


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _upper_hull(points: np.ndarray) -> list[Point]:
    """Andrew's monotone chain, upper half, left to right; collinear points are dropped.

    Vectorised passes first drop points on or below the chord of their two neighbours (never
    a vertex), so the loop sees few points even among a large budget's candidates. A pass
    drops only every other point, so each drop leans on neighbours that stay (two copies of a
    vertex must not drop each other). It measures "below" vertically: neighbours a hair apart
    in x (rounding) give a chord too steep for an area test.
    """
    order = np.lexsort((-points[:, 1], points[:, 0]))  # x ascending, then y descending
    scale = float(np.max(points))
    tol = 1e-12 * scale**2
    points = points[order]
    for parity in range(2 * _PRUNING_PASSES):
        ab, ac = points[1:-1] - points[:-2], points[2:] - points[:-2]
        cross = ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0]  # ac.x * (chord - b) at b's x
        keep = np.ones(len(points), dtype=bool)
        keep[1:-1] = cross < -1e-12 * scale * ac[:, 0]
        keep[2 - parity % 2::2] = True
        points = points[keep]
    hull: list[Point] = []
    for p in map(tuple, points.tolist()):
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) >= -tol:
            hull.pop()
        hull.append(p)
    return hull


# Token-only models give the region O(budget) candidate shapes: at this bound (15 times the
# 65,536-token budgets of real engines) about 0.1 GB and 0.4 s; ten times more costs 0.8 GB.
MAX_REGION_BUDGET = 10**6


@dataclass(frozen=True)
class KmaxRegion:
    """Stable (prefill, decode) token rates when a batch holds at most kmax requests.

    Reconstruction of Li/Dai/Peng v3 Theorem 10 (the reading chosen here, which reproduces the
    paper's vertex C), with prompts of ``prompt_tokens`` tokens: a batch of x prefill and y
    decode tokens holds y + ceil(x / prompt_tokens) requests (each prefilling request brings at
    most a whole prompt), takes t(x, y, y + ceil(x / prompt_tokens)), needs x + y <= budget and
    y + ceil(x / prompt_tokens) <= kmax, and delivers the rate point (x, y) / t. The region is
    the down-closed convex hull of the origin and all such points. A prompt longer than the
    budget is cut into at least c = ceil(P / budget) chunks, a request slot each, so requests/s
    times (c + decode slots each) is at most kmax per shortest batch time: when c > 1 that line
    cuts the hull too. For prompts of exactly that length no policy serves a point outside the
    region; inside, only batches whose chunks tile the prompts reach the boundary. ``vertices``
    is its outer boundary from the y-axis to the x-axis, in tokens/s.
    """

    budget: int
    kmax: int
    prompt_tokens: float
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
            "prompt_tokens_assumed": self.prompt_tokens,
            "vertices_tokens_per_s": [[x, y] for x, y in self.vertices],
        }


def _prefilling_requests(x: np.ndarray, prompt_tokens: float) -> np.ndarray:
    """ceil(x / P): the fewest requests that x prefill tokens of P-token prompts come from."""
    return np.ceil(x / prompt_tokens)


def _token_only_points(
    model: TimingModel, budget: int, kmax: int, prompt_tokens: float
) -> tuple[np.ndarray, float]:
    """Rate points of the shapes that can be hull vertices when t depends on n = x + y only.

    For fixed n the rate points (x, n - x) / t(n) lie on one line, so only the ends of the
    feasible range of x can be vertices. With x > 0 the requests held, n - x + ceil(x / P), do
    not grow with x (one more prefill token adds at most one request and removes one decode),
    so the feasible x form an interval [lo(n), n]: lo(n) is the smallest x >= 1 with
    h(x) = x - ceil(x / P) >= n - kmax, found by bisection since h does not decrease, and the
    interval is empty when an all-prefill batch already needs ceil(n / P) > kmax requests.
    The ends (n, 0) and the decode-only shapes (0, n), n <= kmax, lie on the axes, where only
    the farthest point counts. So: one shape per n, plus one point per axis. Also returns the
    shortest batch time.
    """
    n = np.arange(1, budget + 1)
    seqs = _prefilling_requests(n, prompt_tokens)
    t = np.asarray(model.durations(n, 0, seqs), dtype=float)  # any n-token batch
    lo = np.searchsorted(n - seqs, n - kmax) + 1
    ok = lo <= n  # the same as seqs <= kmax
    rate = n / t
    axes = [[0.0, rate[: min(kmax, budget)].max()], [rate[ok].max(), 0.0]]
    shortest = float(t.min())
    n, lo, t = n[ok], lo[ok], t[ok]
    return np.vstack((np.column_stack((lo / t, (n - lo) / t)), axes)), shortest


def _affine_points(
    model: TimingModel, budget: int, kmax: int, prompt_tokens: float
) -> tuple[np.ndarray, float]:
    """Rate points of the shapes that can be hull vertices when t is affine in (x, y, seqs).

    Fix k = ceil(x / P) prefilling requests (1 <= k <= kmax, and (k - 1) P < budget). Then x
    ranges over the integers of ((k - 1) P, kP], capped at the budget, and the feasible shapes
    are the integer points of the polygon {xa <= x <= xb, 0 <= y <= kmax - k, x + y <= budget},
    whose corners are integers. A hull vertex is the unique maximiser of some w . (x, y) / t,
    and with t affine that is a linear-fractional function, whose maximum over a polygon is at
    a corner; so the corners (xa, 0), (xb, 0), (xa, ymax), (xb, ymax) and the one where the
    request cap meets the budget suffice, five per k. Of the decode-only batches (k = 0),
    whose rate points all lie on the y-axis, (0, min(kmax, budget)) is the best: y / t grows
    with y. The count depends on min(kmax, budget / P), not on the budget's size. Also returns
    the shortest batch time, a one-token batch's (no coefficient is negative).
    """
    k = np.arange(1, min(kmax, math.ceil(budget / prompt_tokens)) + 1)
    xa = np.floor((k - 1) * prompt_tokens) + 1
    xb = np.minimum(np.floor(k * prompt_tokens), budget)
    corner = np.clip(budget - (kmax - k), xa, xb)
    x = np.concatenate(([0], xa, xb, xa, xb, corner))
    y = np.concatenate(([min(kmax, budget)], 0 * k, 0 * k,
                        *(np.minimum(kmax - k, budget - end) for end in (xa, xb, corner))))
    t = np.asarray(model.durations(x, y, y + _prefilling_requests(x, prompt_tokens)), dtype=float)
    shortest = float(np.min(model.durations(np.array([1, 0]), np.array([0, 1]), 1)))
    return np.column_stack((x / t, y / t)), shortest


def kmax_region(model: TimingModel, budget: int, kmax: int, prompt_tokens: float) -> KmaxRegion:
    """The 2-D stability region for token budget ``budget``, request cap ``kmax`` and prompts
    of ``prompt_tokens`` tokens (the mean length stands in when lengths vary; see docs)."""
    _int_at_least_1(budget, "budget")
    _int_at_least_1(kmax, "kmax")
    if budget > MAX_REGION_BUDGET:
        raise ConfigError("budget", f"the k_max region is computed for budgets up to "
                                    f"{MAX_REGION_BUDGET:,} tokens, got {budget:,}")
    if not (math.isfinite(prompt_tokens) and prompt_tokens >= 1):
        raise ConfigError("prefill", f"prompts must average >= 1 token, got {prompt_tokens!r}")
    points_of = _token_only_points if model.token_only else _affine_points
    points, shortest = points_of(model, budget, kmax, prompt_tokens)
    x_max, y_max = points.max(axis=0)
    vertices = _upper_hull(np.vstack((points, [[0.0, y_max], [x_max, 0.0]])))
    chunks = math.ceil(prompt_tokens / budget)
    if chunks > 1:  # otherwise every batch point already meets the slot limit
        vertices = _clip(vertices, chunks / prompt_tokens, kmax / shortest)
    return KmaxRegion(budget, kmax, prompt_tokens, vertices)


def _clip(chain: list[Point], slope: float, limit: float) -> list[Point]:
    """The region's boundary cut by the half-plane slope * x + y <= limit, which holds the
    origin (Sutherland-Hodgman on the polygon of the origin and the chain)."""
    polygon = [(0.0, 0.0), *chain]
    side = [slope * x + y - limit for x, y in polygon]
    tol = 1e-12 * limit
    out: list[Point] = []
    for i, (p, sp) in enumerate(zip(polygon, side, strict=True)):
        q, sq = polygon[(i + 1) % len(polygon)], side[(i + 1) % len(polygon)]
        if sp <= tol:
            out.append(p)
        if (sp < -tol and sq > tol) or (sp > tol and sq < -tol):
            s = sp / (sp - sq)
            out.append((p[0] + s * (q[0] - p[0]), p[1] + s * (q[1] - p[1])))
    return out[1:]

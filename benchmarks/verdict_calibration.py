"""How often the stability verdict is confidently wrong, with default settings, over many seeds.

Cells (issue 7): ``orca`` and ``sarathi`` on ``codellama-34b-a100`` (129/112 tokens, b_max 512)
and on ``mistral-7b-rtx6000ada`` with ShareGPT-like lognormal lengths, at loads 0.8 to 1.2;
``vllm`` at 0.6 (stable) and 0.9 (unstable); ``fastertransformer`` at 0.02 and 0.2. Each seed
runs with the defaults users get: ``--requests auto`` up to 500,000 requests.

A verdict is *wrong* when it is confident and contradicts the truth: ``stable`` above lambda*,
``unstable`` below it (for vllm and FT the truth is the paper's: stable at 0.6 / 0.02, unstable
at 0.9 / 0.2). *Coverage* is how often the printed 95 % interval of the backlog slope holds the
true long-run slope: 0 below capacity, the nominal fluid slope above it (work-conserving only;
the others' long-run slope has no formula).

    python benchmarks/verdict_calibration.py [--seeds 200] [--cells orca,sarathi] [--jobs 2]

Prints a Markdown table (docs/model.md keeps the latest one) and, with ``--json FILE``, the
raw counts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

import servelab
from servelab.build import build_kind

CODELLAMA: dict[str, Any] = {"preset": "codellama-34b-a100", "prefill": "129", "decode": "112"}
# ShareGPT V3 first turns in SmolLM2 tokens, filtered as vLLM's benchmark does (research
# env.md 5): prompt median about 34 with mean about 110, output median 257 with mean about 300.
SHAREGPT_LIKE: dict[str, Any] = {"preset": "mistral-7b-rtx6000ada",
                                 "prefill": "lognormal:median=34,sigma=1.5",
                                 "decode": "lognormal:median=257,sigma=0.55"}
LOADS = (0.8, 0.9, 0.95, 1.05, 1.1, 1.2)


@dataclass(frozen=True)
class Cell:
    name: str
    scheduler: str
    load: float
    config: dict[str, Any]
    stable: bool  # the truth

    @property
    def label(self) -> str:
        return f"{self.scheduler} {self.name} {self.load:g}"


def cells() -> list[Cell]:
    out = [Cell(name, scheduler, load, config, load < 1)
           for name, config in (("codellama", CODELLAMA), ("sharegpt-like", SHAREGPT_LIKE))
           for scheduler in ("orca", "sarathi") for load in LOADS]
    out += [Cell("codellama", "vllm", 0.6, CODELLAMA, True),
            Cell("codellama", "vllm", 0.9, CODELLAMA, False),
            Cell("codellama", "fastertransformer", 0.02, CODELLAMA, True),
            Cell("codellama", "fastertransformer", 0.2, CODELLAMA, False)]
    return out


def run_one(cell: Cell, seed: int) -> tuple[str, int, bool | None, float]:
    """(verdict, requests, interval covers the truth or None, wall seconds) for one seed."""
    s = servelab.simulate({**cell.config, "scheduler": cell.scheduler, "load": cell.load,
                           "seed": seed}).summary
    covered = None
    if s["work_conserving"] and math.isfinite(s["served_tokens_per_s"]):
        lo, hi = s["backlog_slope_ci95_tokens_per_s"]
        truth = 0.0 if cell.stable else s["fluid_slope_tokens_per_s"]
        covered = lo <= truth <= hi
    return s["verdict"], s["run_length"]["requests"], covered, s["wall_s"]


def _run_seed(args: tuple[Cell, int]) -> tuple[str, int, bool | None, float]:
    return run_one(*args)


def measure(cell: Cell, seeds: int, jobs: int) -> dict[str, Any]:
    work = [(cell, seed) for seed in range(seeds)]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            rows = list(pool.map(_run_seed, work, chunksize=4))
    else:
        rows = [_run_seed(w) for w in work]
    verdicts = Counter(r[0] for r in rows)
    wrong = verdicts["unstable" if cell.stable else "stable"]
    right = verdicts["stable" if cell.stable else "unstable"]
    covered = [r[2] for r in rows if r[2] is not None]
    requests = np.array([r[1] for r in rows])
    return {
        "cell": cell.label, "seeds": seeds, "stable": verdicts["stable"],
        "unstable": verdicts["unstable"], "inconclusive": verdicts["inconclusive"],
        "wrong_pct": 100 * wrong / seeds, "right_pct": 100 * right / seeds,
        "coverage_pct": 100 * float(np.mean(covered)) if covered else None,
        "median_requests": int(np.median(requests)), "max_requests": int(requests.max()),
        "wall_s_per_seed": float(np.mean([r[3] for r in rows])),
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| cell | stable | unstable | inconclusive | wrong % | right % | coverage % "
             "| median requests | max requests |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cov = "-" if r["coverage_pct"] is None else f"{r['coverage_pct']:.1f}"
        lines.append(f"| {r['cell']} | {r['stable']} | {r['unstable']} | {r['inconclusive']} "
                     f"| {r['wrong_pct']:.1f} | {r['right_pct']:.1f} | {cov} "
                     f"| {r['median_requests']:,} | {r['max_requests']:,} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--cells", help="comma-separated substrings of cell labels to keep")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", metavar="FILE", help="also write the raw results here")
    args = parser.parse_args()
    chosen = [c for c in cells()
              if not args.cells or any(k in c.label for k in args.cells.split(","))]
    print(f"# verdict calibration: {args.seeds} seeds per cell, default settings; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, servelab {build_kind()} build", flush=True)
    results = []
    started = time.perf_counter()
    for cell in chosen:
        results.append(measure(cell, args.seeds, args.jobs))
        r = results[-1]
        print(f"{r['cell']}: {r['stable']} stable, {r['unstable']} unstable, "
              f"{r['inconclusive']} inconclusive; wrong {r['wrong_pct']:.1f}%", file=sys.stderr,
              flush=True)
    print(table(results))
    print(f"\n{time.perf_counter() - started:,.0f} s in all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

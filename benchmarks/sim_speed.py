"""How fast the simulator runs: simulated requests and iterations per wall-second, one core.

The scenario of issue 2: Sarathi on ``codellama-34b-a100``, b_max = 512, 129 prefill and 112
decode tokens, Poisson arrivals at 0.9 of capacity, 200,000 requests, every metric on, through
the same ``Scheduler`` interface every policy uses.

Beside it, in the same process and on the same requests, a loop hand-specialised to this one
scenario (no scheduler interface, no metrics) gives the floor the general design is measured
against: machines here are shared and noisy, so the ratio is the number to trust.

    python benchmarks/sim_speed.py [--requests N] [--repeat R]
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections import deque
from heapq import heappop, heappush

import servelab
from servelab.build import build_kind
from servelab.simulation import build_scheduler, prepare, run_scheduler


def specialised_sarathi(arrival: list[float], prompt: int, output: int, budget: int,
                        table: list[float]) -> int:
    """Sarathi with fixed lengths, written for speed alone; returns the iteration count."""
    n = len(arrival)
    waiting: deque[list[int]] = deque()
    finish_rounds: list[int] = []
    rounds = decoding = iterations = nxt = 0
    now = 0.0
    while nxt < n or waiting or decoding:
        while nxt < n and arrival[nxt] <= now:
            waiting.append([prompt])
            nxt += 1
        if not waiting and not decoding:
            now = arrival[nxt]
            continue
        d = decoding if decoding < budget else budget
        room = budget - d
        done = 0
        while room and waiting:
            head = waiting[0]
            m = head[0] if head[0] < room else room
            head[0] -= m
            room -= m
            if not head[0]:
                waiting.popleft()
                done += 1
        now += table[budget - room]
        iterations += 1
        if d:
            rounds += 1
            while finish_rounds and finish_rounds[0] <= rounds:
                heappop(finish_rounds)
                decoding -= 1
        for _ in range(done):
            heappush(finish_rounds, rounds + output)
            decoding += 1
    return iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    config = {"preset": "codellama-34b-a100", "scheduler": "sarathi", "budget": 512,
              "prefill": "129", "decode": "112", "load": 0.9, "requests": args.requests,
              "seed": 1, "drain": True}
    scenario = prepare(config)
    arrival = scenario.workload.arrival.tolist()
    table = scenario.preset.timing.token_table(512)

    general, special, iterations = [], [], 0
    for _ in range(args.repeat):
        started = time.perf_counter()
        result = run_scheduler(scenario, build_scheduler(scenario, "sarathi"))
        general.append(time.perf_counter() - started)
        iterations = result.summary["iterations"]
        started = time.perf_counter()
        special_iterations = specialised_sarathi(arrival, 129, 112, 512, table)
        special.append(time.perf_counter() - started)
    best, best_special = min(general), min(special)
    n = args.requests
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"servelab {servelab.__version__} ({build_kind()} build)")
    print(f"scenario: sarathi, codellama-34b-a100, b_max=512, 129/112 tokens, Poisson at 0.9 "
          f"lambda*, {n:,} requests, drained ({iterations:,} iterations)")
    print(f"servelab engine (all metrics):   {n / best:>10,.0f} requests/s "
          f"{iterations / best:>10,.0f} iterations/s  ({best:.3f} s, best of {args.repeat})")
    print(f"specialised loop (no metrics):   {n / best_special:>10,.0f} requests/s "
          f"{special_iterations / best_special:>10,.0f} iterations/s  ({best_special:.3f} s)")
    print(f"cost of the general design:      {best / best_special:.2f}x the specialised loop")
    assert special_iterations == iterations, "the specialised loop must simulate the same batches"
    assert math.isfinite(best)


if __name__ == "__main__":
    main()

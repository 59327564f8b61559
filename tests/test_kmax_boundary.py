"""The k_max region's boundary against the simulator: Sarathi at 0.9 and 1.1 of lambda*_kmax.

The region is the set of rates *some* policy can serve; a work-conserving one can fall short
(Li-Dai-Peng point C: Sarathi with b_max 1024). Sarathi reaches the boundary where greed costs
nothing: on CodeLlama at b_max = 128 every batch takes 46.75 ms, and on Mistral every batch
up to 128 tokens takes 23 ms, which the slot-bound boundary batches here never exceed; so
filling request slots and tokens first (decodes, then prefill) is optimal, as long as no
prompt is cut for nothing. A prompt cut to fit beside the decodes takes a second slot for its
remainder, which the region does not count. The grid therefore holds the cases where no
prompt is cut at the boundary (slots bind and whole prompts fit), where the token budget binds
(every batch full) with slots to spare for the remainders, and where a prompt longer than the
budget is cut into exactly ceil(P / b_max) chunks anyway (the region's slot limit). GAPS lists
measured cases outside those, where the region is still an outer bound but Sarathi falls
short of it.

At 1.1x arrivals are deterministic, so the measured slope has no arrival noise to average out
(a Poisson run's arrivals in the window deviate by about 1/sqrt(10,000) = 1 % of the offered
rate, 11 % of the fluid slope): what is left is the discrete batching, and 1 % of the fluid
slope is 0.09 % of lambda*. At 0.9x they are Poisson, so stability is tested with bursts.
"""

from __future__ import annotations

from typing import Any

import pytest

import servelab

REQUESTS = 20_000

CODELLAMA = {"preset": "codellama-34b-a100", "budget": 128}
MISTRAL = {"preset": "mistral-7b-rtx6000ada", "budget": 512}

# (engine, prompt, decode, kmax, why Sarathi reaches the boundary)
ATTAINED = [
    (CODELLAMA, 1, 8, 1, "slots bind; one request per batch"),
    (CODELLAMA, 4, 8, 16, "slots bind; 16 whole 4-token prompts fit in 128 tokens"),
    (CODELLAMA, 8, 64, 16, "slots bind; 16 whole 8-token prompts fit in 128 tokens"),
    (CODELLAMA, 16, 8, 8, "slots bind; 8 whole 16-token prompts fit in 128 tokens"),
    (CODELLAMA, 4, 8, 64, "slots bind; boundary batches use 85 of 128 tokens"),
    (CODELLAMA, 16, 8, 64, "tokens bind; 48 of 64 slots used, spare ones take remainders"),
    (CODELLAMA, 1, 64, 64, "slots bind; 1-token prompts are never cut"),
    (CODELLAMA, 200, 8, 1, "prompt > budget: 2 single-slot chunks, the slot limit"),
    (CODELLAMA, 290, 64, 4, "prompt > budget: 3 chunks beside <= 3 decodes, the slot limit"),
    (CODELLAMA, 290, 8, 16, "prompt > budget, tokens bind with slots to spare"),
    (CODELLAMA, 290, 990, 100, "vertex C: 29-token chunks tile the 290-token prompts"),
    (MISTRAL, 8, 8, 1, "slots bind; one request per 23 ms batch"),
    (MISTRAL, 8, 8, 32, "the issue's case: 4 requests per 23 ms batch"),
    (MISTRAL, 8, 8, 64, "slots bind; boundary batches of 120 tokens cost 23 ms"),
    (MISTRAL, 1000, 8, 8, "prompt > budget, tokens bind with slots to spare"),
]

# Measured (20,000 requests): Sarathi's slope at 1.1x over the region's fluid slope. The region
# counts ceil(x / P) slots for x prefill tokens in a batch, but a prompt that does not fit
# beside the decodes is cut, and its remainder takes a slot (and, on Mistral, a whole batch
# time) of its own; which cuts an optimal policy would make is a cutting-stock problem the
# region does not solve. These points check only that the region is an outer bound.
GAPS = [
    (CODELLAMA, 127, 2, 3, 3.44),  # 127 + 2 decodes > 128: every prompt is cut, 2 slots
    (CODELLAMA, 64, 8, 16, 1.31),
    (CODELLAMA, 200, 8, 6, 1.28),
    (CODELLAMA, 16, 8, 48, 1.016),  # slots and tokens bind together
    (MISTRAL, 600, 8, 1, 1.66),  # the 88-token remainder costs a full 23 ms batch
    (MISTRAL, 1000, 8, 1, 1.03),
]


def _run(engine: dict[str, Any], prompt: int, decode: int, kmax: int, fraction: float,
         arrivals: str) -> dict[str, Any]:
    config = {**engine, "scheduler": "sarathi", "kmax": kmax, "prefill": str(prompt),
              "decode": str(decode), "requests": REQUESTS, "seed": 3, "arrivals": arrivals}
    boundary = servelab.capacity({**config, "rate": 1.0})["kmax_region"]["max_rate"]
    return servelab.simulate({**config, "rate": fraction * boundary}).summary


def _ids(cases: list[tuple[Any, ...]]) -> list[str]:
    return [f"{e['preset'][:7]}-P{p}-D{d}-k{k}" for e, p, d, k, *_ in cases]


@pytest.mark.slow
@pytest.mark.parametrize(("engine", "prompt", "decode", "kmax", "why"), ATTAINED,
                         ids=_ids(ATTAINED))
def test_sarathi_reaches_the_region_boundary(
    engine: dict[str, Any], prompt: int, decode: int, kmax: int, why: str
) -> None:
    below = _run(engine, prompt, decode, kmax, 0.9, "poisson")
    assert below["kmax_region"]["load"] == pytest.approx(0.9)
    assert below["backlog_slope_tokens_per_s"] < 0.01 * below["offered_tokens_per_s"], why
    above = _run(engine, prompt, decode, kmax, 1.1, "deterministic")
    fluid = above["fluid_slope_tokens_per_s"]
    assert fluid == pytest.approx(above["offered_tokens_per_s"] * (1 - 1 / 1.1))
    assert above["backlog_slope_tokens_per_s"] == pytest.approx(fluid, rel=0.01), why


@pytest.mark.slow
@pytest.mark.parametrize(("engine", "prompt", "decode", "kmax", "measured"), GAPS,
                         ids=_ids(GAPS))
def test_region_is_an_outer_bound_where_sarathi_falls_short(
    engine: dict[str, Any], prompt: int, decode: int, kmax: int, measured: float
) -> None:
    """The slope exceeds the region's fluid slope (Sarathi stays below lambda*_kmax) by the
    factor measured and documented in docs/model.md."""
    above = _run(engine, prompt, decode, kmax, 1.1, "deterministic")
    ratio = above["backlog_slope_tokens_per_s"] / above["fluid_slope_tokens_per_s"]
    assert ratio == pytest.approx(measured, abs=0.01)

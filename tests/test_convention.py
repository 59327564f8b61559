"""The token convention: slots per request and where output token 1 comes from."""

from __future__ import annotations

import numpy as np
import pytest

from servelab.core.convention import CONVENTIONS, ENGINE, PAPER, Convention
from servelab.errors import ConfigError


def test_work_and_decode_slots() -> None:
    assert PAPER.work(290, 990) == 1280 and PAPER.decode_slots(990) == 990
    assert ENGINE.work(290, 990) == 1279 and ENGINE.decode_slots(990) == 989
    assert ENGINE.work(129.5, 112.25) == pytest.approx(240.75)  # a workload's means
    assert not PAPER.first_token_at_prefill and ENGINE.first_token_at_prefill


def test_work_of_every_request_at_once() -> None:
    prompt, output = np.array([5, 1]), np.array([3, 1])
    np.testing.assert_array_equal(ENGINE.work(prompt, output), [7, 1])
    np.testing.assert_array_equal(PAPER.work(prompt, output), [8, 2])


def test_named() -> None:
    assert [Convention.named(name) for name in CONVENTIONS] == [PAPER, ENGINE]
    for bad in ("vllm", None, 1):
        with pytest.raises(ConfigError) as err:
            Convention.named(bad, "preset.convention")
        assert err.value.field == "preset.convention" and "paper, engine" in err.value.reason

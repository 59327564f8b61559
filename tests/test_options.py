"""Scheduler options: one dataclass per policy, read the same way by the registry, the config,
the CLI and result files; a new policy needs nothing else."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import pytest

import servelab
from servelab.cli import _scheduler_epilog
from servelab.errors import ConfigError
from servelab.schedulers import SCHEDULERS, make_scheduler, options_type, refuse_unused_options
from servelab.schedulers.kfcfs import KFCFS
from servelab.schedulers.options import SchedulerOptions, knob
from servelab.schedulers.sarathi import Sarathi

SMALL = {"rate": 8, "requests": 300, "seed": 1}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_each_policy_reports_its_options_with_their_defaults(name: str) -> None:
    """options() names every knob, and a policy built with none has the options' defaults."""
    assert make_scheduler(name).options() == options_type(name)().as_dict()


def test_knobs_convert_from_text_as_flags_give_them() -> None:
    kfcfs = make_scheduler("kfcfs", priority="Prefill", kp="4", kd=None)
    assert kfcfs.options() == {"priority": "prefill", "kp": 4, "kd": None}
    assert make_scheduler("vllm", chunked_prefill="yes").options() == {"chunked_prefill": True}


@pytest.mark.parametrize(
    ("name", "knobs", "reason"),
    [("kfcfs", {"kp": 0}, "must be >= 1"), ("kfcfs", {"kd": "x"}, "expected an integer"),
     ("kfcfs", {"priority": "first"}, "must be one of decode, prefill"),
     ("sarathi", {"order": "lifo"}, "must be one of fcfs, spf"),
     ("sarathi", {"kp": 2}, "sarathi has no such option (it takes order)"),
     ("orca", {"chunked_prefill": True}, "orca has no such option (it has none)")],
)
def test_bad_knobs_name_scheduler_dot_knob(name: str, knobs: dict, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_scheduler(name, **knobs)
    assert info.value.field == f"scheduler.{next(iter(knobs))}"
    assert reason in info.value.reason


def test_policies_built_directly_check_their_knobs_too() -> None:
    with pytest.raises(ConfigError) as info:
        KFCFS(kd=0)
    assert info.value.field == "scheduler.kd"


def test_sarathi_order() -> None:
    """The knob is taken and reported; its behaviour is checked against the reference engine
    in test_engine.py."""
    assert Sarathi(order="fcfs").order == "fcfs" and not Sarathi().shortest_first
    assert Sarathi(order="spf").shortest_first and Sarathi(order="spf").options() == {
        "order": "spf"}
    with pytest.raises(ConfigError) as info:
        Sarathi(order="lifo")
    assert info.value.field == "scheduler.order"


def test_a_knob_no_scheduler_has_lists_them_all() -> None:
    with pytest.raises(ConfigError) as info:
        refuse_unused_options(["sarathi"], {"window": 3})
    assert info.value.field == "scheduler.window"
    assert "sarathi: order" in info.value.reason and "kfcfs: priority, kp, kd" in info.value.reason


@dataclass(frozen=True)
class WindowOptions(SchedulerOptions):
    window: int = knob(2, "how many prompts may prefill at once", minimum=1)
    phase: Literal["decode", "prefill"] = knob("decode", "which phase goes first")


class Window(KFCFS):
    """A new policy, as a plugin would write one: the class and its options, nothing else."""

    name: ClassVar[str] = "window"
    options_type: ClassVar[type[SchedulerOptions]] = WindowOptions

    def __init__(self, **knobs: object) -> None:
        options = WindowOptions.from_mapping(knobs, self.name)
        super().__init__(priority=options.phase, kp=options.window)
        self.settings = options

    def options(self) -> dict[str, object]:
        return self.settings.as_dict()


def test_a_new_policy_needs_no_other_edit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SCHEDULERS, Window.name, Window)
    summary = servelab.simulate(
        {**SMALL, "scheduler": {"name": "window", "window": "3", "phase": "prefill"}}).summary
    assert summary["scheduler_options"] == {"window": 3, "phase": "prefill"}
    with pytest.raises(ConfigError) as info:
        servelab.simulate({**SMALL, "scheduler": "window", "scheduler.window": 0})
    assert (info.value.field, info.value.reason) == ("scheduler.window", "must be >= 1")
    assert "window            integer >= 1, default 2: how many prompts" in _scheduler_epilog()


def test_docs_list_every_scheduler_option() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    for name in SCHEDULERS:
        for f in dataclasses.fields(options_type(name)):
            assert f"`scheduler.{f.name}`" in docs, f.name


def test_sarathi_spf_is_sarathi_with_shortest_prompt_first() -> None:
    """A name of its own, so one comparison holds both (the SLAI paper's two baselines)."""
    import servelab

    config = {"load": 0.8, "requests": 3000, "prefill": "lognormal:mean=129,sigma=1.5"}
    named, plain = servelab.compare(config, ["sarathi-spf", "sarathi"]).summaries
    spf = servelab.simulate({**config, "scheduler.order": "spf"}).summary
    assert named["ttft_ms"] == spf["ttft_ms"] and named["tbt_ms"] == spf["tbt_ms"]
    assert named["ttft_ms"] != plain["ttft_ms"]
    with pytest.raises(ConfigError) as info:
        make_scheduler("sarathi-spf", order="fcfs")
    assert info.value.field == "scheduler.order"

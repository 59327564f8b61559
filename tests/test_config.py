"""Settings by dotted path: three spellings of one config, and errors named as written."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

import servelab
from servelab.config import SETTINGS, SimConfig
from servelab.errors import ConfigError, ConfigWarning

SMALL = {"rate": 8, "requests": 300, "seed": 1}


def test_flat_dotted_and_sectioned_settings_are_one_config() -> None:
    flat = SimConfig.from_dict({"rate": 5, "budget": 256, "scheduler": "kfcfs", "kp": 3,
                                "seed": 2, "max-requests": 9000})
    dotted = SimConfig.from_dict({"workload.rate": "5", "engine.budget": 256,
                                  "scheduler.name": "kfcfs", "scheduler.kp": 3,
                                  "run.seed": 2, "run.max_requests": 9000})
    sections = SimConfig.from_dict({"workload": {"rate": 5}, "engine": {"budget": 256},
                                    "scheduler": {"name": "kfcfs", "kp": 3},
                                    "run": {"seed": 2, "max-requests": 9000}})
    assert flat == dotted == sections
    # Knobs stay as given: the chosen policy's options convert them (test_options.py).
    assert SimConfig.from_dict({"scheduler.kp": "3"}).scheduler_options == {"kp": "3"}


def test_every_setting_has_a_path_that_reads_back() -> None:
    paths = {f.metadata["path"] for f in dataclasses.fields(SimConfig) if "path" in f.metadata}
    assert paths == set(SETTINGS)
    assert all(p.split(".")[0] in ("engine", "workload", "scheduler", "run") for p in paths)
    for path, name in SETTINGS.items():
        assert SimConfig.from_dict({path: None}).written == {name: path}


def test_overrides_replace_a_setting_however_it_was_written() -> None:
    config = SimConfig.from_dict({"workload": {"rate": 5}, "kp": 3, "scheduler": "kfcfs"},
                                 overrides=[("rate", 7), ("scheduler.kp", None),
                                            ("scheduler", {"kd": 2})])
    assert config.rate == 7 and config.scheduler_options == {"kd": 2}
    assert config.scheduler == "kfcfs"  # a section override replaces only what it names


@pytest.mark.parametrize(
    ("data", "field"),
    [({"workload.rate": -1}, "workload.rate"), ({"workload": {"rate": "x"}}, "workload.rate"),
     ({"rate": -1}, "rate"), ({"run.seed": -1, "rate": 1}, "run.seed"),
     ({"engine.convention": "gpu", "rate": 1}, "engine.convention"),
     ({"workload.rate": 1, "workload.load": 0.5}, "workload.rate"),
     ({"rate": 1, "scheduler.kp": 2}, "scheduler.kp"), ({"rate": 1, "kp": 2}, "kp"),
     ({"rate": 1, "scheduler": {"name": "kfcfs", "kd": 0}}, "scheduler.kd"),
     ({"workload": {"rate": 1, "prefill": 600}, "scheduler": "vllm"}, "workload.prefill"),
     ({"rate": 1, "scheduler.name": "fcfs"}, "scheduler.name"),
     ({"rate": 1, "workload.rate": 2}, "workload.rate"), ({"run": {"bogus": 1}}, "run.bogus"),
     ({"scheduler.a.b": 1}, "scheduler.a.b")],
)
def test_errors_name_the_setting_as_written(data: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        servelab.simulate(data)
    assert info.value.field == field


def test_a_setting_given_twice_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        SimConfig.from_dict({"scheduler": {"name": "kfcfs", "kp": 2}, "kp": 3})
    assert (info.value.field, info.value.reason) == ("kp", "given twice (also as scheduler.kp)")


def test_warnings_name_the_setting_as_written() -> None:
    with pytest.warns(ConfigWarning) as record:
        servelab.simulate({**SMALL, "workload.decode": "lognormal:mean=100,sigma=50"})
    assert [w.message.field for w in record] == ["workload.decode"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        with pytest.raises(ConfigWarning) as info:
            servelab.simulate({**SMALL, "workload.decode": "lognormal:mean=100,sigma=50"})
    assert info.value.field == "workload.decode"

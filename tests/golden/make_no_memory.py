"""Write no_memory.json: outputs of runs without a KV cache, as the code before it made them.

Run from the repository root with the servelab to record on the path, e.g. a checkout of the
commit before KV memory (74f2810): ``PYTHONPATH=/path/to/old/src python
tests/golden/make_no_memory.py``. tests/test_memory_settings.py checks that today's code prints
exactly the same, bit for bit: a run that does not ask for memory must not change.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

from servelab.cli import main

#: Keys that differ from run to run or build to build, and their text twin.
VOLATILE = ("wall_s", "servelab_version", "build")
VOLATILE_TEXT = re.compile(r"simulated in [0-9.]+ s")

CASES = {
    "capacity": ["capacity", "--rate", "12", "--json"],
    "capacity_kmax_text": ["capacity", "--kmax", "8", "--load", "0.9"],
    "capacity_sharegpt_like": ["capacity", "--preset", "mistral-7b-rtx6000ada", "--prefill",
                               "lognormal:median=34,sigma=1.5", "--decode",
                               "lognormal:median=257,sigma=0.55", "--load", "0.95", "--json"],
    "simulate": ["simulate", "--load", "0.9", "--requests", "3000", "--seed", "3", "--json"],
    "simulate_kmax": ["simulate", "--load", "0.9", "--kmax", "16", "--requests", "3000",
                      "--json"],
    "simulate_text": ["simulate", "--load", "1.1", "--requests", "3000", "--seed", "3"],
}


def normalised(args: list[str]) -> Any:
    """What ``servelab ARGS`` prints, less what varies between runs of the same code."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    if "--json" not in args:
        return VOLATILE_TEXT.sub("simulated in X s", out.getvalue())
    data = json.loads(out.getvalue())
    return {k: v for k, v in data.items() if k not in VOLATILE}


if __name__ == "__main__":
    recorded = {name: {"args": args, "output": normalised(args)} for name, args in CASES.items()}
    path = Path(__file__).with_name("no_memory.json")
    path.write_text(json.dumps(recorded, indent=1) + "\n")

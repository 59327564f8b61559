"""servelab: queueing theory and simulation of LLM inference scheduling.

The library calls a notebook makes are the ones the CLI makes::

    import servelab
    result = servelab.simulate({"scheduler": "sarathi", "load": 0.9, "requests": 5000})
    result.summary["verdict"], result.requests.to_pandas(), result.backlog.tokens
"""

from servelab.config import SimConfig
from servelab.errors import ConfigError, ConfigWarning
from servelab.experiment import run_experiment
from servelab.load_sweep import sweep
from servelab.search import capacity_search, capacity_searches
from servelab.simulation import CompareResult, capacity, compare, prepare, simulate

__version__ = "0.1.0"

__all__ = [
    "CompareResult",
    "ConfigError",
    "ConfigWarning",
    "SimConfig",
    "__version__",
    "capacity",
    "capacity_search",
    "capacity_searches",
    "compare",
    "prepare",
    "run_experiment",
    "simulate",
    "sweep",
]

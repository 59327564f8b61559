"""Compile the simulator's hot path with mypyc; everything else stays plain Python.

The modules below run once per iteration or per request. Compiled, the engine simulates 1.6 to
2 times as many requests per second (docs/performance.md). ``SERVELAB_PURE=1`` skips
compilation, and the package then runs from the same sources unchanged, only slower. There is
no silent fallback: without a C compiler the build fails until ``SERVELAB_PURE=1`` is set.
"""

import os

from setuptools import setup

COMPILED_MODULES = [
    "src/servelab/core/batch.py",
    "src/servelab/core/request.py",
    "src/servelab/schedulers/base.py",
    "src/servelab/schedulers/kfcfs.py",
    "src/servelab/sim/decode_pool.py",
    "src/servelab/sim/engine.py",
    "src/servelab/sim/loop.py",
    "src/servelab/sim/run.py",
    "src/servelab/sim/waiting.py",
]

ext_modules = []
if not os.environ.get("SERVELAB_PURE"):
    from mypyc.build import mypycify

    # Type-check only these modules; the rest of the package is never compiled.
    ext_modules = mypycify(["--follow-imports=silent", *COMPILED_MODULES], opt_level="3")

setup(ext_modules=ext_modules)

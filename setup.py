"""Compile the simulator's hot path with mypyc; everything else stays plain Python.

The modules below run once per iteration or per request. Compiled, the engine simulates 1.6 to
2 times as many requests per second (docs/performance.md). ``SERVELAB_PURE=1`` skips
compilation, and the package then runs from the same sources unchanged, only slower. There is
no silent fallback: without a C compiler the build fails until ``SERVELAB_PURE=1`` is set.
``python setup.py --compiled-sources`` prints the files a compiled build depends on (the
Makefile recompiles when one changes); it needs nothing beyond the standard library.
"""

import ast
import os
import sys
from pathlib import Path

#: The one list of compiled modules; the Makefile follows it. New schedulers, routers, serve/
#: and sweep/ stay interpreted, except SLAI and its cohorts, compiled for issue 9's speed
#: target (docs/performance.md).
COMPILED_MODULES = [
    "src/servelab/core/batch.py",
    "src/servelab/core/kv.py",
    "src/servelab/core/request.py",
    "src/servelab/schedulers/base.py",
    "src/servelab/schedulers/kfcfs.py",
    "src/servelab/schedulers/memory.py",
    "src/servelab/schedulers/cohorts.py",
    "src/servelab/schedulers/slai.py",
    "src/servelab/sim/decode_pool.py",
    "src/servelab/sim/engine.py",
    "src/servelab/sim/loop.py",
    "src/servelab/sim/run.py",
    "src/servelab/sim/waiting.py",
]


def compiled_sources(modules: list[str] = COMPILED_MODULES) -> list[str]:
    """The compiled modules and the servelab modules they import, transitively.

    mypyc compiles against the types those modules declare, so a change to any of them must
    recompile; a change anywhere else need not.
    """
    src = Path("src")
    seen: list[str] = []
    todo = list(modules)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.append(path)
        for node in ast.walk(ast.parse(Path(path).read_text(), path)):
            if isinstance(node, ast.ImportFrom) and node.module:
                # ``from a import b`` imports module a, or module a.b: whichever is a file.
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                file = src / (name.replace(".", "/") + ".py")
                if name.startswith("servelab.") and file.exists():
                    todo.append(file.as_posix())
    return sorted(seen)


def main() -> None:
    if sys.argv[1:] == ["--compiled-sources"]:
        print(" ".join(compiled_sources()))
        return
    from setuptools import setup

    ext_modules = []
    if not os.environ.get("SERVELAB_PURE"):
        from mypyc.build import mypycify

        # Type-check only these modules; the rest of the package is never compiled.
        ext_modules = mypycify(["--follow-imports=silent", *COMPILED_MODULES], opt_level="3")
    setup(ext_modules=ext_modules)


if __name__ == "__main__":  # also under pip: setuptools runs this file as __main__
    main()

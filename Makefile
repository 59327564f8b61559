# The two set-up commands of the README. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The modules setup.py compiles with mypyc and those they import, whose types it bakes in: a
# change to any of them recompiles, a change elsewhere does not. setup.py keeps the list.
COMPILED_SOURCES := setup.py $(shell $(PYTHON) setup.py --compiled-sources)
ifeq ($(COMPILED_SOURCES),setup.py)
$(error `$(PYTHON) setup.py --compiled-sources` listed nothing)
endif

.PHONY: build demo test test-pure lint bench clean

# Installed editable and pure first, then compiled in place: editing a source and running
# make again recompiles, instead of leaving a stale compiled module in front of the source.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "setuptools>=77" mypy==1.13.0 types-PyYAML
	SERVELAB_PURE=1 $(BIN)/pip install -q --no-build-isolation -e .
	touch $@

$(VENV)/.test-extras: $(VENV)/.installed
	SERVELAB_PURE=1 $(BIN)/pip install -q --no-build-isolation -e '.[test]'
	touch $@

# Old compiled modules go first, so none can outlive its source or its place in setup.py.
# build_ext copies a module it did not need to rebuild with its old time; touching them all
# records that they are current, for the stale-source check the test suite makes.
$(VENV)/.compiled: $(VENV)/.installed $(COMPILED_SOURCES)
	find src -name '*.so' -delete
	$(BIN)/python setup.py -q build_ext --inplace
	find src -name '*.so' -exec touch {} +
	touch $@

# SERVELAB_PURE=1 make ...: no compiler needed; the plain sources run.
ifdef SERVELAB_PURE
build: $(VENV)/.installed
	find src -name '*.so' -delete
	rm -f $(VENV)/.compiled
else
build: $(VENV)/.compiled
endif

demo: build
	$(BIN)/servelab compare

test: $(VENV)/.test-extras build
	$(BIN)/ruff check src tests benchmarks
	SERVELAB_BUILD=$(if $(SERVELAB_PURE),pure,compiled) $(BIN)/python -m pytest -q

# The same suite on the plain-Python sources (what an install without a compiler runs).
test-pure: $(VENV)/.test-extras
	rm -rf build/pure && mkdir -p build/pure
	cp -r src/servelab build/pure/servelab
	find build/pure -name '*.so' -delete
	SERVELAB_BUILD=pure PYTHONPATH=build/pure $(BIN)/python -m pytest -q

lint: $(VENV)/.test-extras
	$(BIN)/ruff check src tests benchmarks

bench: build
	$(BIN)/python benchmarks/sim_speed.py

clean:
	rm -rf $(VENV) build src/*.egg-info src/*.so
	find src -name '*.so' -delete

# The two set-up commands of the README. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/servelab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-extras: $(BIN)/servelab
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: $(BIN)/servelab
	$(BIN)/servelab compare

test: $(VENV)/.test-extras
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(VENV)/.test-extras
	$(BIN)/ruff check src tests benchmarks

bench: $(BIN)/servelab
	$(BIN)/python benchmarks/sim_speed.py

clean:
	rm -rf $(VENV) build src/*.egg-info

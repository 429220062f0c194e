# The README's commands. Everything a fresh machine needs (beyond Python 3.11) is installed here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench bench-quick lint structure install clean

# The editable install is compiled as pip compiles a regular one: where PYTHONDONTWRITEBYTECODE is set, every
# worker process would otherwise compile batchnb again at start-up (0.1-0.2 s of CPU each).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m compileall -q batchnb
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m batchnb demo

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py --repeat 2; status=$$?; $(BIN)/python benchmarks/readme_table.py && exit $$status

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/bench.py --quick

# ruff (lint and format) on everything, mypy on the package (configured in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check batchnb tests benchmarks tools
	$(BIN)/ruff format --check batchnb tests benchmarks tools
	$(BIN)/python -m mypy

# Import cycles inside batchnb/, and modules, classes and functions over their size limits; exit 1 if any.
structure: $(STAMP)
	$(BIN)/python tools/structure.py

clean:
	rm -rf $(VENV) demo .pytest_cache

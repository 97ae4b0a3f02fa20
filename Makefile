# Two commands: `make demo` and `make test`. Each sets up its own venv on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch must be installed before anything can pull a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint bench mutate planted clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/lmforge run

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports

# Mutation testing of the core modules (not in CI; 2-3 hours on 2 cores, resumes where it stopped): docs/testing.md.
mutate: setup
	$(PY) -m pip install -q -e '.[dev,mutate]'
	$(PY) tests/mutants/mutate.py

# Re-plant the bugs each correctness test exists for (tests/mutants/planted_*.py); all must be caught.
planted: setup
	$(PY) tests/mutants/plant.py

bench: setup
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf runs .pytest_cache mutants

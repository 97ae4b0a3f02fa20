# Two commands: `make demo` and `make test`. Each sets up its own venv on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch must be installed before anything can pull a CUDA build.
TORCH ?= torch==2.13.0
# Triton Inference Server (CPU build inside nvidia-pytriton's wheel) for the export test; it pins numpy<2,
# so it lives in a venv of its own.
TRITON_VENV ?= .venv-triton

.PHONY: setup services demo test lint bench mutate planted clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/lmforge run

$(TRITON_VENV)/.installed:
	python3 -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q nvidia-pytriton==0.7.0 onnxruntime==1.32.0
	touch $@

# Services the tests start on 127.0.0.1 (Debian packages): redis-server, PostgreSQL, promtool for the alert
# rules, and chromium for the browser tests (Playwright drives it; no browser download).
SERVICES := redis-server:redis-server promtool:prometheus chromium:chromium
# The PostgreSQL server (not only its client) lives off PATH, in /usr/lib/postgresql/<version>/bin.
POSTGRES_SERVER := $(wildcard /usr/lib/postgresql/*/bin/postgres)
services:
	@missing="$(foreach s,$(SERVICES),$(if $(shell command -v $(firstword $(subst :, ,$(s)))),,$(lastword $(subst :, ,$(s))))) $(if $(POSTGRES_SERVER),,postgresql)"; \
	if [ -n "$$(echo $$missing)" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# Two workers (pytest-xdist), a test file per worker at a time: its module fixtures are built once.
test: setup services $(TRITON_VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25

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

# Every target creates/uses .venv itself, so each one works on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test fuzz lint bench demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml backends/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,bench]" -e ./backends
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The door fuzzer at full size (>= 10,000 inputs over every RPC; a nightly job): prints
# the outcome-class x RPC summary and the log / latency figures.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest tests/fuzz -s -q -p no:randomly $(PYTEST_ARGS)

LINT_PATHS := scopemap router backends/router_backends tests bench examples

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/plan.py
	$(PY) bench/backend.py
	$(PY) bench/throughput.py

demo: $(STAMP)
	$(PY) examples/demo.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Every target creates/uses .venv itself, so each one works on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test fuzz lint bench demo docs docs-serve clean image image-test

venv: $(STAMP)

$(STAMP): pyproject.toml backends/pyproject.toml examples/backend-plugin/pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,bench]" -e ./backends -e ./examples/backend-plugin
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The door fuzzer at full size (>= 10,000 inputs over every RPC; a nightly job): prints
# the outcome-class x RPC summary and the log / latency figures.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest tests/fuzz -s -q -p no:randomly $(PYTEST_ARGS)

LINT_PATHS := scopemap router backends/router_backends tests bench examples docs/_hooks deploy

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy examples/backend-plugin/npy_backend

bench: $(STAMP)
	$(PY) bench/plan.py
	$(PY) bench/backend.py
	$(PY) bench/throughput.py
	$(PY) bench/mapload.py

demo: $(STAMP)
	$(PY) examples/demo.py

# The documentation site (docs/, mkdocs.yml). Strict: any warning fails the build.
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --clean --site-dir site

docs-serve: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve --strict

# The container image (Dockerfile), built without any registry: see deploy/docker/.
IMAGE ?= arrakis-router:dev
image: $(STAMP)
	PY=$(PY) IMAGE=$(IMAGE) deploy/docker/build-image.sh

# Runs the image as an operator would and checks it (deploy/docker/image_test.py).
image-test: image
	$(PY) deploy/docker/image_test.py --image $(IMAGE)

clean:
	rm -rf $(VENV) build dist site .pytest_cache .mypy_cache .ruff_cache .hypothesis

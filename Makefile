# Every target creates/uses .venv itself, so each one works on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv native test fuzz lint bench demo docs docs-serve clean image image-test

venv: $(STAMP)

$(STAMP): pyproject.toml backends/pyproject.toml examples/backend-plugin/pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	# the build stack first: the router's native output stage (hatch_build.py) is compiled
	# against this venv's pyarrow (needs g++ and the Python headers)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt hatchling editables Cython pyarrow numpy
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt --no-build-isolation -e ".[test,bench]" -e ./backends -e ./examples/backend-plugin
	touch $(STAMP) $(NATIVE)

# The native output stage (router/_chunkstream, see router/outstream.py), rebuilt in place
# when its sources change (make venv builds it the first time).
NATIVE := $(VENV)/.native
native: $(NATIVE)

$(NATIVE): $(STAMP) router/_chunkstream.pyx router/_chunkstream.h hatch_build.py
	$(PY) hatch_build.py
	touch $(NATIVE)

test: $(STAMP) $(NATIVE)
	$(PY) -m pytest $(PYTEST_ARGS)

# The door fuzzer at full size (>= 10,000 inputs over every RPC; a nightly job): prints
# the outcome-class x RPC summary and the log / latency figures.
fuzz: $(STAMP) $(NATIVE)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest tests/fuzz -s -q -p no:randomly $(PYTEST_ARGS)

LINT_PATHS := scopemap router backends/router_backends tests bench examples docs/_hooks deploy hatch_build.py

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy examples/backend-plugin/npy_backend

bench: $(STAMP) $(NATIVE)
	$(PY) bench/plan.py
	$(PY) bench/backend.py
	$(PY) bench/throughput.py
	$(PY) bench/mapload.py

demo: $(STAMP) $(NATIVE)
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
image: $(STAMP) $(NATIVE)
	PY=$(PY) IMAGE=$(IMAGE) deploy/docker/build-image.sh

# Runs the image as an operator would and checks it (deploy/docker/image_test.py).
image-test: image
	$(PY) deploy/docker/image_test.py --image $(IMAGE)

clean:
	rm -rf $(VENV) build dist site .pytest_cache .mypy_cache .ruff_cache .hypothesis

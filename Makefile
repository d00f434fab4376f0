# `make demo` and `make test` create .venv on first use; re-running them does not reinstall unless
# requirements/, setup.cfg, pyproject.toml or tools/install.sh changed.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= output/demo
BENCH_ARGS ?= --json output/benchmark/benchmark.json

.PHONY: install test demo bench clean-cache

install: $(STAMP)

$(STAMP): requirements/base.txt requirements/constraints.txt requirements/detectron2.txt requirements/data.txt setup.cfg pyproject.toml tools/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash tools/install.sh
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) tools/demo.py --output-dir $(DEMO_DIR)

# CleanAnchors / SWN cost against stock Detectron2 (tools/benchmark.py; about 10 minutes on 2 cores)
bench: $(STAMP)
	$(PY) tools/benchmark.py $(BENCH_ARGS)

clean-cache:
	rm -rf datasets/generated

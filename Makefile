# One-command set-up: every target creates the virtual environment when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARTIFACTS ?= artifacts
DEMO := $(ARTIFACTS)/demo
export HNSWLIB_NO_NATIVE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
SAM_VENV ?= .venv-sam
SAM := $(SAM_VENV)/bin/sam
SAM_STAMP := $(SAM_VENV)/.installed
EVENT ?= events/search-text.json

.PHONY: help setup test test-fast lint demo demo-bundle serve invoke bench bench-report bench-quick bench-encode bench-build clean \
	sam-venv sam-validate footprint browser-deps models-table

help:
	@echo "make setup         create the virtualenv $(VENV) (if missing) and install the development requirements"
	@echo "make demo          export the demo model, build a demo index, run text and image queries end to end"
	@echo "make demo-bundle   only export the demo model to $(DEMO)/bundle"
	@echo "make serve         run the search app under uvicorn on 127.0.0.1:8000 with the demo bundle and index"
	@echo "                   (runs the demo first only when its bundle or index is missing)"
	@echo "make invoke        run a Lambda event through the search function (EVENT=$(EVENT))"
	@echo "make test          set up the virtualenv (if missing) and run the whole test suite (what CI runs)"
	@echo "make test-fast     the edit loop: the suite without the slow tier (no SAM venv, browser, apt, clean installs)"
	@echo "make lint          ruff check, ruff format --check, mypy (strict on handler/core)"
	@echo "make bench         run all benchmarks: numbers to bench/results.json, BENCHMARKS.md rendered from it"
	@echo "make bench-report  render BENCHMARKS.md again from bench/results.json (no measuring)"
	@echo "make bench-quick   the CI smoke run of the benchmarks ($(ARTIFACTS)/bench-quick/BENCHMARKS.md)"
	@echo "make bench-encode  only the encoder benchmarks"
	@echo "make bench-build   only the index rebuild benchmarks"
	@echo "make footprint     deployment footprint: the Lambda runtime dependencies vs the PyTorch stack"
	@echo "make models-table  docs/models.md: export/runtime coverage of the OpenCLIP families (ROWS=ci for a subset)"
	@echo "make sam-venv      install SAM CLI into its own virtualenv $(SAM_VENV)"
	@echo "make sam-validate  sam validate --lint on template.yaml (offline)"
	@echo "make browser-deps  headless Chromium + chromedriver for the web-page tests (apt, root)"
	@echo "make clean         remove $(ARTIFACTS)/ (demo bundle and index, benchmark output)"

$(STAMP): requirements/handler.txt requirements/export.txt requirements/dev.txt requirements/torch.txt \
		requirements/cuda-constraints.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -r requirements/dev.txt -r requirements/torch.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(STAMP)

$(SAM_STAMP): requirements/sam.txt requirements/sam-constraints.txt scripts/install_sam.sh
	PYTHON=$(PYTHON) SAM_VENV=$(SAM_VENV) bash scripts/install_sam.sh
	touch $@

sam-venv: $(SAM_STAMP)

sam-validate: $(SAM_STAMP)
	SAM_CLI_TELEMETRY=0 $(SAM) validate --lint

# Headless Chromium + chromedriver for the web-page tests (Debian packages; needs root and apt).
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "warning: could not install chromium; browser tests will be skipped"; \
	else echo "warning: chromium/chromedriver missing and not root; browser tests will be skipped"; fi

test: $(STAMP) $(SAM_STAMP) browser-deps
	$(PY) -m pytest

# Same suite minus the `slow` marker (see pyproject.toml): no SAM venv, no apt, no pip installs into clean venvs.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

invoke: $(STAMP)
	$(PY) scripts/invoke.py $(EVENT) --env-from-template

# Coverage table of the OpenCLIP families (random init, shrunk towers; docs/models.md). ROWS=ci for a subset.
models-table: $(STAMP)
	$(PY) scripts/models_table.py --out docs/models.md $(if $(ROWS),--only $(ROWS))

footprint: $(STAMP)
	$(PY) scripts/footprint.py

lint: $(STAMP)
	@rc=0; $(PY) -m ruff check . || rc=1; $(PY) -m ruff format --check . || rc=1; $(PY) -m mypy || rc=1; exit $$rc

$(DEMO)/bundle/manifest.json: $(STAMP) demo/model/demo-clip.pt demo/model/demo-clip.json
	$(PY) -m export --model-config demo/model/demo-clip.json --pretrained demo/model/demo-clip.pt \
		--out $(DEMO)/bundle --precision fp32 int8 --force

demo-bundle: $(DEMO)/bundle/manifest.json

demo: demo-bundle
	$(PY) -m demo.run --artifacts $(DEMO)

# The demo's artifacts are built only when missing: re-running the demo would publish a new index version.
serve: $(STAMP)
	@test -f $(DEMO)/bundle/manifest.json -a -f $(DEMO)/index/CURRENT || $(MAKE) demo
	$(PY) -m handler.serve --bundle $(DEMO)/bundle --index $(DEMO)/index --host 127.0.0.1 --port 8000

bench: $(STAMP)
	$(PY) -m bench

bench-report: $(STAMP)
	$(PY) -m bench.report

bench-quick: $(STAMP)
	$(PY) -m bench --quick --out $(ARTIFACTS)/bench-quick/BENCHMARKS.md

bench-encode: $(STAMP)
	$(PY) -m bench --only encode

bench-build: $(STAMP)
	$(PY) -m bench --only rebuild

clean:
	rm -rf $(ARTIFACTS)

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

.PHONY: help setup test lint demo demo-bundle serve invoke bench bench-quick bench-encode bench-build clean \
	sam-venv sam-validate footprint browser-deps models-table

help:
	@echo "make demo    export the demo model, build a demo index, run text and image queries end to end"
	@echo "make test    set up the virtualenv (if missing) and run the whole test suite"
	@echo "make serve   run the search app under uvicorn on 127.0.0.1:8000 with the demo bundle and index"
	@echo "make bench   run all benchmarks and write BENCHMARKS.md"
	@echo "make lint    ruff"

$(STAMP): requirements/handler.txt requirements/dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -r requirements/dev.txt
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

invoke: $(STAMP)
	$(PY) scripts/invoke.py $(EVENT) --env-from-template

# Coverage table of the OpenCLIP families (random init, shrunk towers; docs/models.md). ROWS=ci for a subset.
models-table: $(STAMP)
	$(PY) scripts/models_table.py --out docs/models.md $(if $(ROWS),--only $(ROWS))

footprint: $(STAMP)
	$(PY) scripts/footprint.py

lint: $(STAMP)
	$(PY) -m ruff check .

$(DEMO)/bundle/manifest.json: $(STAMP) demo/model/demo-clip.pt demo/model/demo-clip.json
	$(PY) -m export --model-config demo/model/demo-clip.json --pretrained demo/model/demo-clip.pt \
		--out $(DEMO)/bundle --precision fp32 int8 --force

demo-bundle: $(DEMO)/bundle/manifest.json

demo: demo-bundle
	$(PY) -m demo.run --artifacts $(DEMO)

serve: demo
	$(PY) -m handler.serve --bundle $(DEMO)/bundle --index $(DEMO)/index --host 127.0.0.1 --port 8000

bench: $(STAMP)
	$(PY) -m bench

bench-quick: $(STAMP)
	$(PY) -m bench --quick --out $(ARTIFACTS)/bench-quick/BENCHMARKS.md

bench-encode: $(STAMP)
	$(PY) -m bench --only encode

bench-build: $(STAMP)
	$(PY) -m bench --only rebuild

clean:
	rm -rf $(ARTIFACTS)

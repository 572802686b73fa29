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

.PHONY: help setup test test-fast lint demo demo-bundle serve invoke bench bench-quick bench-encode bench-build clean

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

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

$(DEMO)/bundle/manifest.json: $(STAMP) demo/model/demo-clip.pt demo/model/demo-clip.json
	$(PY) -m export --model-config demo/model/demo-clip.json --pretrained demo/model/demo-clip.pt \
		--out $(DEMO)/bundle --precision fp32 int8 --force

demo-bundle: $(DEMO)/bundle/manifest.json

demo: demo-bundle
	$(PY) -m demo.run --artifacts $(DEMO)

clean:
	rm -rf $(ARTIFACTS)

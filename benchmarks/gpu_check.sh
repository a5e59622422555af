#!/usr/bin/env bash
# The GPU checks in one run: CUDA tests, the gradient-capture overhead on a larger model in fp32
# and bf16, then the whole suite (CPU-pinned tests included) on this machine's library versions.
#   bash benchmarks/gpu_check.sh OUT_DIR
# Needs a CUDA GPU and gradbal's dependencies importable. Writes logs into OUT_DIR.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, lightning, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| lightning', lightning.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"
} 2>&1 | tee "$out/env.txt"
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/gpu -rA 2>&1 | tee "$out/gpu_tests.log" | tail -25
for dtype in bf16 fp32; do
  timeout 240 python3 benchmarks/grad_stats_overhead.py --device cuda --preset gpu --dtype "$dtype" \
    --repeats 20 --warmup 3 2>&1 | tee "$out/overhead_$dtype.md" | tail -9
done
timeout "${SUITE_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider --timeout 120 tests \
  --ignore=tests/gpu --doctest-modules gradbal 2>&1 | tee "$out/suite.log" | tail -15

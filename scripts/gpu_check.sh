#!/usr/bin/env bash
# The accelerator check, for a machine with a GPU (issue 23): about 5 minutes on one H100.
#   bash scripts/gpu_check.sh            # CUDA (MINIGPT2_TEST_DEVICE=mps for Apple GPUs)
# 1. the tests that matter on a device: parity with transformers at the precision's tolerance, the
#    KV cache, exact resume, compiled training, DDP when there are two GPUs (tests/test_device.py);
# 2. bench.py's GPT-2 124M training step (configs/gpt2_124m.py: bf16, compiled, 64 x 1,024 tokens a
#    micro-batch) on random token shards (no download): tokens/s and MFU against the bf16 peak;
# 3. bench.py's 124M greedy decode, batch 1, float32 and bf16: tokens/s against the bandwidth.
# Everything it prints goes to gpu_check.log too (in $OUT when that is set).
set -euo pipefail
cd "$(dirname "$0")/.."
device=${MINIGPT2_TEST_DEVICE:-cuda}
log=${OUT:-.}/gpu_check.log
data=$(mktemp -d)
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  MINIGPT2_TEST_DEVICE=$device timeout 240 python -m pytest -q tests/test_device.py || true
  python - "$data" <<'PY'
import sys
import numpy as np
from data import shard_header
rng = np.random.default_rng(0)  # random GPT-2 ids: the speed of a step does not depend on them
for name, n in (("bench_val_000000.bin", 2**20), ("bench_train_000001.bin", 2**25)):
    tokens = rng.integers(0, 50257, n, dtype=np.uint16)
    open(f"{sys.argv[1]}/{name}", "wb").write(shard_header(n) + tokens.tobytes())
PY
  timeout 300 python bench.py train configs/gpt2_124m.py --dataset="$data" --device="$device" \
      --data_dir="$data/prepared" --max_iters=30 --eval_hellaswag=0 --rounds=1 || true
  timeout 120 python bench.py sample --device="$device" --variants fp32 bf16 --rounds=3 || true
} 2>&1 | tee "$log"
rm -rf "$data"

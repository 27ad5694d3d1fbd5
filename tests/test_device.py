"""The checks that matter on an accelerator, run on the device MINIGPT2_TEST_DEVICE names (cpu by
default, so they run everywhere; cuda or mps on a GPU machine: gpu_check.sh): parity with
transformers at the precision's tolerance, the KV cache against recomputation, exact resume,
compiled training, and DDP where there are two GPUs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from model import GPT, GPTConfig, KVCache
from test_hf_import import TINY, random_hf_model
from test_train import tiny_run, train_losses

DEVICE = os.environ.get("MINIGPT2_TEST_DEVICE", "cpu")
ROOT = Path(__file__).resolve().parents[1]
# The largest logit difference from transformers' float32 model: float32 as the CPU computes it;
# on a GPU float32 matmuls use TF32 (10-bit mantissa), and bf16 autocast rounds every activation.
TOLERANCE = {"float32": 1e-4 if DEVICE == "cpu" else 2e-2, "bfloat16": 0.25}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_logits_match_transformers_on_the_device(dtype):
    from hf_import import hf_to_ours, config_from_hf

    theirs = random_hf_model(**TINY).eval()
    config, _ = config_from_hf(theirs.config.to_dict(), "tiny")
    ours = hf_to_ours(theirs.state_dict(), config, "tiny").to(DEVICE).eval()
    ids = torch.randint(config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast(DEVICE.split(":")[0], torch.bfloat16,
                                         enabled=dtype == "bfloat16"):
        logits, _ = ours(ids.to(DEVICE), targets=ids.to(DEVICE))
    with torch.no_grad():
        reference = theirs(ids).logits
    assert (logits.float().cpu() - reference).abs().max().item() <= TOLERANCE[dtype]


def test_kv_cache_equals_recomputation_on_the_device():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=97, n_layer=2, n_head=2, n_embd=32))
    model = model.to(DEVICE).eval()
    idx = torch.randint(0, 97, (2, 20), device=DEVICE)
    with torch.no_grad():
        full, _ = model(idx, targets=idx)
        cache = KVCache(model.config.n_layer)
        model(idx[:, :8], kv_cache=cache)
        steps = [model(idx[:, t : t + 1], kv_cache=cache)[0][:, -1] for t in range(8, 20)]
    for t, logits in zip(range(8, 20), steps):
        torch.testing.assert_close(logits, full[:, t], atol=TOLERANCE["float32"], rtol=0)


def test_resume_is_exact_on_the_device(tmp_path, monkeypatch):
    if DEVICE.startswith("cuda"):  # CUDA's embedding backward adds with atomics: in any order
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    device = {"device": DEVICE, "dtype": "auto", "dropout": 0.0}
    train.main(tiny_run(tmp_path, "straight", max_iters=6, eval_interval=3, **device))
    train.main(tiny_run(tmp_path, "split", max_iters=3, eval_interval=3, lr_decay_iters=6,
                        **device))
    train.main(tiny_run(tmp_path, "split", max_iters=6, eval_interval=3, init_from="resume",
                        **device))
    torch.use_deterministic_algorithms(False)
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "straight")


def test_compiled_training_learns_as_eager_does_on_the_device(tmp_path):
    device = {"device": DEVICE, "dtype": "auto", "dropout": 0.0, "max_iters": 4}
    train.main(tiny_run(tmp_path, "eager", **device))
    train.main(tiny_run(tmp_path, "compiled", compile=True, **device))
    eager, compiled = train_losses(tmp_path / "eager"), train_losses(tmp_path / "compiled")
    assert compiled.keys() == eager.keys()
    for step in eager:
        assert compiled[step] == pytest.approx(eager[step], rel=2e-2)


@pytest.mark.skipif(not DEVICE.startswith("cuda") or torch.cuda.device_count() < 2,
                    reason="DDP on a device needs two CUDA GPUs")
def test_two_gpus_train_as_one_does(tmp_path):
    options = {"device": "cuda", "dtype": "float32", "dropout": 0.0, "max_iters": 4}
    train.main(tiny_run(tmp_path, "single", **options))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "train.py", *tiny_run(tmp_path, "ddp", **options)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=600)
    single, ddp = train_losses(tmp_path / "single"), train_losses(tmp_path / "ddp")
    assert single.keys() == ddp.keys()
    for step in single:
        assert ddp[step] == pytest.approx(single[step], abs=1e-3)  # TF32 sums in another order

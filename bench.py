"""
Speed measurements (kept out of the tests, which never time anything).

    python bench.py matmul                                  # this device's matmul FLOP/s, fp32 and bf16
    python bench.py train configs/shakespeare.py --max_iters=300 [--dtype=bfloat16 ...]
    python bench.py sample [--device=cpu --dtype=float32]   # GPT-2 124M greedy, with and without KV cache

`train` runs the real training loop of train.py (same step, same data pipeline) on the config, with
evaluation reduced to one batch, and reports the median tokens/s over its log windows after the
first (which includes warm-up and compilation), plus MFU against the measured matmul peak of the
device when no --peak_flops is given. `sample` uses a randomly initialised model of GPT-2 124M's
shape: speed does not depend on the weights.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from config import parse_config, run_main
from data import prepare_lm_data
from model import GPT, GPTConfig
from rundir import RunDirectory
from runtime import setup_runtime
from sample import for_inference, generate
from train import LanguageModelling, TrainConfig, build_model, train_loop


def matmul_flops(device="cpu", dtype=torch.float32, n=2048, repeats=10):
    """Achieved FLOP/s of an n x n matmul: the practical peak that MFU is measured against on a CPU."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def bench_matmul(argv):
    p = argparse.ArgumentParser(prog="bench.py matmul")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    rt = setup_runtime(args.device, "float32")
    for dtype in (torch.float32, torch.bfloat16):
        print(f"{rt.device} {str(dtype)[6:]:>8} matmul: "
              f"{matmul_flops(rt.device, dtype) / 1e9:8.1f} GFLOP/s")


def bench_train(argv):
    cfg = parse_config(TrainConfig, argv, description="bench.py train: tokens/s of train.py's loop")
    rt = setup_runtime(cfg.device, cfg.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        cfg.out_dir, cfg.eval_iters = tmp, 1
        cfg.eval_interval = cfg.max_iters + 1
        cfg.log_interval = max(1, cfg.max_iters // 6)
        cfg.init_from = "scratch"
        data_dir, meta = prepare_lm_data(cfg.dataset, cfg.tokenizer, cfg.data_dir)
        model, _ = build_model(cfg, meta, rt)
        model.to(rt.device)
        peak = cfg.peak_flops or None
        if peak is None and rt.device_type == "cpu":
            peak = matmul_flops("cpu", torch.bfloat16 if rt.dtype == "bfloat16" else torch.float32)
            cfg.peak_flops = peak
        objective = LanguageModelling(cfg, rt, data_dir, meta)
        with RunDirectory(tmp) as run_dir:
            run_dir.open()
            train_loop(cfg, rt, model, objective, run_dir)
        import json

        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "tokens_per_s" in r][1:]  # the first window includes warm-up
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in steps)
    ms = statistics.median(r["ms_per_iter"] for r in steps)
    line = f"train: {model.num_params() / 1e6:.2f}M params, {rt.device} {rt.dtype}, compile {cfg.compile}: " \
           f"{tokens_per_s:,.0f} tokens/s, {ms:.1f} ms/iter"
    if "mfu" in steps[0]:
        line += f", MFU {100 * statistics.median(r['mfu'] for r in steps):.1f}% of {cfg.peak_flops / 1e9:,.0f} GFLOP/s"
    print(line)


def bench_sample(argv):
    p = argparse.ArgumentParser(prog="bench.py sample")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--prompt_tokens", type=int, default=16)
    p.add_argument("--new_tokens", type=int, default=128)
    args = p.parse_args(argv)
    rt = setup_runtime(args.device, args.dtype)
    torch.manual_seed(0)
    model = for_inference(GPT(GPTConfig()).to(rt.device), rt)  # GPT-2 124M's shape, as sample.py runs it
    prompt = torch.randint(0, 50257, (1, args.prompt_tokens), device=rt.device)
    for use_cache in (True, False):
        with torch.no_grad():
            generate(model, prompt, 4, temperature=0, use_cache=use_cache)  # warm-up
            _sync(rt.device)
            start = time.perf_counter()
            generate(model, prompt, args.new_tokens, temperature=0, use_cache=use_cache)
            _sync(rt.device)
        elapsed = time.perf_counter() - start
        name = "with KV cache" if use_cache else "no KV cache  "
        print(f"sample: GPT-2 124M shape, {rt.device} {rt.dtype}, {name}: "
              f"{args.new_tokens / elapsed:6.1f} tokens/s ({args.new_tokens} new tokens after a "
              f"{args.prompt_tokens}-token prompt, greedy)")


def main():
    commands = {"matmul": bench_matmul, "train": bench_train, "sample": bench_sample}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        sys.exit(2)
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    run_main(main)

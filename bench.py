"""
Speed, measured against what the machine can do (the tests never time anything; this does).

    python bench.py machine                 # the peaks: matmul GFLOP/s (fp32, bf16), read GB/s
    python bench.py sample                  # GPT-2 124M greedy decode: tokens/s, % of roofline
    python bench.py train configs/shakespeare.py --max_iters=300       # train.py's loop: MFU
    python bench.py quality out/shakespeare --data held_out.txt       # perplexity, float vs int8
    python bench.py race "python train.py a.py --out_dir=a" "python train.py b.py --out_dir=b"

Every command takes --threads N (default: PyTorch's, usually the number of cores) and --rounds R:
each figure is the median over R rounds with its range, the variants of a round interleaved (A, B,
A, B...) so that a machine whose speed drifts treats them alike. Each prints the thread count and
the machine's peak measured in the same process, and the fraction of it reached:

- decode reads every weight once per token, so its limit is the read bandwidth over the bytes per
  token (the roofline);
- training multiplies matrices, so its limit is the matmul FLOP/s (MFU: model FLOPs over that peak).
"""

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from ring.config import parse_config, run_main
from data import prepare_lm_data, read_text, tokenizer_from_dict
from evaluate import language_model_loss
from model import GPT, GPTConfig, load_model
from ring.rundir import RunDirectory
from ring.runtime import setup_runtime
from sample import for_inference, generate
from train import LanguageModelling, TrainConfig, build_model, train_loop


def median_range(values, fmt="{:.1f}"):
    """'12.3 [11.9-12.8]': the median and the range of a list of measurements."""
    low, mid, high = (fmt.format(v) for v in (min(values), statistics.median(values), max(values)))
    return f"{mid} [{low}-{high}]"


def interleaved(work, rounds):
    """{name: [seconds of each round]} for a dict of callables, run A, B, C, A, B, C, ... after one
    untimed warm-up call each."""
    for fn in work.values():
        fn()
    times = {name: [] for name in work}
    for _ in range(rounds):
        for name, fn in work.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------------
# The machine's peaks


def matmul_flops(device, dtype, n=2048, repeats=5):
    """FLOP/s of an n x n matmul: the practical peak that a CPU's MFU is measured against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


class Bandwidth:
    """Bytes/s that summing a float32 tensor far larger than the caches reads from memory: the speed
    of the one pass over the weights that generating a token makes."""

    def __init__(self, device, mib=512):
        self.device, self.big = device, torch.ones(mib << 18, device=device)  # mib MiB of float32
        self.big.sum()

    def __call__(self):
        sync(self.device)
        start = time.perf_counter()
        self.big.sum()
        sync(self.device)
        return self.big.nbytes / (time.perf_counter() - start)


def bench_machine(args):
    rt = setup_runtime(args.device, "float32")
    bandwidth = Bandwidth(rt.device)
    peaks = {"fp32 matmul": [], "bf16 matmul": [], "read": []}
    for _ in range(args.rounds):
        peaks["fp32 matmul"].append(matmul_flops(rt.device, torch.float32) / 1e9)
        peaks["bf16 matmul"].append(matmul_flops(rt.device, torch.bfloat16) / 1e9)
        peaks["read"].append(bandwidth() / 1e9)
    print(f"machine: {rt.device}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    print(f"  matmul 2048x2048 fp32: {median_range(peaks['fp32 matmul'])} GFLOP/s")
    print(f"  matmul 2048x2048 bf16: {median_range(peaks['bf16 matmul'])} GFLOP/s")
    print(f"  read (sum of 512 MiB): {median_range(peaks['read'])} GB/s")


# --------------------------------------------------------------------------------------------------
# Decode against the memory roofline


def bytes_per_token(model, context):
    """The bytes one generated token reads: every weight of every layer once (the head included),
    one row of each embedding table, and the KV cache of `context` earlier positions."""
    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            total += module.weight[0].nbytes  # one row is looked up
        elif not list(module.children()):  # a leaf layer: it reads all its tensors
            tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
            total += sum(t.nbytes for t in tensors)
    cfg = model.config
    element = next(t for t in model.parameters() if t.is_floating_point()).element_size()
    return total + 2 * cfg.n_layer * context * cfg.n_embd * element  # keys and values, every layer


VARIANTS = {  # name -> (dtype, quantize, compile)
    "fp32": ("float32", "", False),
    "fp32-compiled": ("float32", "", True),
    "bf16": ("bfloat16", "", False),
    "int8": ("bfloat16", "int8", False),
}


def bench_sample(args):
    rt = setup_runtime(args.device, "float32")
    prompt = torch.randint(0, 50257, (1, args.prompt_tokens), device=rt.device,
                           generator=torch.Generator(rt.device).manual_seed(0))
    models, outputs, work = {}, {}, {}
    for name in args.variants:
        dtype, quantize, compile = VARIANTS[name]
        torch.manual_seed(0)  # the same random weights for every variant (speed ignores them)
        variant_rt = setup_runtime(args.device, dtype)
        start = time.perf_counter()
        models[name] = for_inference(GPT(GPTConfig()).to(rt.device), variant_rt, quantize, compile)
        if compile:
            with torch.no_grad():
                generate(models[name], prompt, 4, temperature=0)
            print(f"{name}: compiled in {time.perf_counter() - start:.0f} s")

        def decode(name=name):
            outputs[name] = generate(models[name], prompt, args.new_tokens, temperature=0)
            sync(rt.device)

        work[name] = decode
    reader = Bandwidth(rt.device)
    work["bandwidth"] = reader
    times = interleaved(work, args.rounds)
    bandwidth = [reader.big.nbytes / t for t in times.pop("bandwidth")]
    context = args.prompt_tokens + args.new_tokens / 2  # the average length of the KV cache
    print(f"decode, GPT-2 124M shape, batch 1, greedy, {args.new_tokens} new tokens after "
          f"{args.prompt_tokens}; {rt.device}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds")
    print(f"  read bandwidth in the same rounds: {median_range([b / 1e9 for b in bandwidth])} GB/s")
    reference = {"float32": "fp32", "bfloat16": "bf16"}
    for name, seconds in times.items():
        per_token = bytes_per_token(models[name], context)
        tokens_per_s = [args.new_tokens / s for s in seconds]
        roofline = [b / per_token for b in bandwidth]
        fraction = [t / r * 100 for t, r in zip(tokens_per_s, roofline)]
        same = reference[VARIANTS[name][0]]
        agree = ""
        if same in outputs and same != name:
            agree = torch.equal(outputs[name], outputs[same])
            agree = f"; greedy tokens equal to {same}'s: {agree}"
        print(f"  {name:14} {median_range(tokens_per_s)} tokens/s | {per_token / 1e6:.0f} MB a "
              f"token | roofline {statistics.median(roofline):.0f} tokens/s | "
              f"{median_range(fraction, '{:.0f}')} % of it{agree}")


# --------------------------------------------------------------------------------------------------
# Training against the matmul peak


def bench_train(args, overrides):
    cfg = parse_config(TrainConfig, overrides, description="bench.py train: train.py's loop")
    rt = setup_runtime(cfg.device, cfg.dtype)
    dtype = torch.bfloat16 if rt.dtype == "bfloat16" else torch.float32
    peak = [matmul_flops(rt.device, dtype) for _ in range(3)]
    data_dir, meta = prepare_lm_data(cfg.dataset, cfg.tokenizer, cfg.data_dir)
    speeds, mfus, ms = [], [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            run = TrainConfig(**{**cfg.__dict__, "out_dir": tmp, "eval_iters": 1,
                                 "init_from": "scratch", "eval_interval": cfg.max_iters + 1,
                                 "log_interval": max(1, cfg.max_iters // 6),
                                 "peak_flops": statistics.median(peak)})
            model, _ = build_model(run, meta, None)
            model.to(rt.device)
            objective = LanguageModelling(run, rt, data_dir, meta)
            with RunDirectory(tmp) as run_dir:
                run_dir.open()
                train_loop(run, rt, model, objective, run_dir)
            lines = (Path(tmp) / "metrics.jsonl").read_text().splitlines()
            rows = [json.loads(line) for line in lines]
        steps = [r for r in rows if "tokens_per_s" in r][1:]  # the first window includes warm-up
        speeds.append(statistics.median(r["tokens_per_s"] for r in steps))
        ms.append(statistics.median(r["ms_per_iter"] for r in steps))
        mfus.append(statistics.median(r["mfu"] for r in steps) * 100)
    print(f"train: {model.num_params() / 1e6:.2f}M parameters, {rt.device} {rt.dtype}, compile "
          f"{cfg.compile}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    print(f"  {median_range(speeds, '{:,.0f}')} tokens/s | {median_range(ms)} ms/iter | MFU "
          f"{median_range(mfus)} % of the measured matmul peak, "
          f"{median_range([p / 1e9 for p in peak], '{:.0f}')} GFLOP/s")


# --------------------------------------------------------------------------------------------------
# Quality of int8 weights


def bench_quality(args):
    _, info = load_model(args.checkpoint)
    ids = tokenizer_from_dict(info.tokenizer).encode(read_text(args.data))
    ids = ids[: args.max_tokens or None]
    results = {}
    for dtype in ("float32", "bfloat16"):
        for quantize in ("", "int8"):
            model, _ = load_model(args.checkpoint)
            rt = setup_runtime(args.device, dtype)
            model = for_inference(model, rt, quantize)
            loss, n = language_model_loss(model, ids, 16, rt.device)
            results[(dtype, quantize)] = loss
    print(f"perplexity of {args.checkpoint} on {args.data} ({n:,} tokens predicted):")
    for dtype in ("float32", "bfloat16"):
        plain, int8 = (torch.tensor(results[(dtype, q)]).exp().item() for q in ("", "int8"))
        print(f"  {dtype:9} weights {plain:9.4f} | int8 weights {int8:9.4f} | "
              f"{(int8 / plain - 1) * 100:+.2f} %")


# --------------------------------------------------------------------------------------------------
# Wall time of whole commands


def out_dir_of(command):
    return next(a.split("=", 1)[1] for a in shlex.split(command) if a.startswith("--out_dir="))


def final_val_loss(command):
    """The last val_loss that a train.py / finetune.py command wrote to its metrics.jsonl."""
    rows = (Path(out_dir_of(command)) / "metrics.jsonl").read_text().splitlines()
    return [r["val_loss"] for r in map(json.loads, rows) if "val_loss" in r][-1]


def bench_race(args):
    walls = {c: [] for c in args.commands}
    losses = {c: [] for c in args.commands}
    for _ in range(args.rounds):
        for command in args.commands:  # A, B, A, B, ...
            shutil.rmtree(out_dir_of(command), ignore_errors=True)  # every round starts afresh
            start = time.perf_counter()
            subprocess.run(command, shell=True, check=True, stdout=subprocess.DEVNULL)
            walls[command].append(time.perf_counter() - start)
            losses[command].append(final_val_loss(command))
    print(f"wall time of whole commands (data preparation included), {args.rounds} rounds, "
          "interleaved")
    first = args.commands[0]
    for command in args.commands:
        ratio = [b / a for a, b in zip(walls[first], walls[command])]
        loss = median_range(losses[command], "{:.4f}")
        print(f"  {median_range(walls[command])} s, final val_loss {loss}, "
              f"{median_range(ratio, '{:.2f}')}x the first's time: {command}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["machine", "sample", "train", "quality", "race"])
    p.add_argument("--threads", type=int, default=0, help="PyTorch threads (0: PyTorch's default)")
    p.add_argument("--rounds", type=int, default=5, help="measurements per figure")
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", nargs="+", default=["fp32", "bf16", "int8"],
                   choices=list(VARIANTS), help="sample: what to compare")
    p.add_argument("--prompt_tokens", type=int, default=16)
    p.add_argument("--new_tokens", type=int, default=128)
    p.add_argument("checkpoint", nargs="?", help="quality: a language model's run or checkpoint")
    p.add_argument("--data", help="quality: a text file (held out from training)")
    p.add_argument("--max_tokens", type=int, default=0,
                   help="quality: use the first N tokens (0: all)")
    args, rest = p.parse_known_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "train":
        return bench_train(args, ([args.checkpoint] if args.checkpoint else []) + rest)
    if args.what == "race":
        args.commands = ([args.checkpoint] if args.checkpoint else []) + rest
        return bench_race(args)
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    {"machine": bench_machine, "sample": bench_sample, "quality": bench_quality}[args.what](args)


if __name__ == "__main__":
    run_main(main)

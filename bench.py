"""
Speed, measured against what the machine can do (the tests never time anything; this does).

    python bench.py machine                 # the peaks: matmul GFLOP/s (fp32, bf16), read GB/s
    python bench.py sample                  # GPT-2 124M greedy decode: tokens/s, % of roofline
    python bench.py train configs/shakespeare.py --max_iters=300       # train.py's loop: MFU
    python bench.py quality out/shakespeare --data held_out.txt       # perplexity, float vs int8
    python bench.py race "python train.py a.py --out_dir=a" "python train.py b.py --out_dir=b"

`python bench.py COMMAND --help` lists a command's settings. Every command takes --threads N
(default: PyTorch's, usually the number of cores) and --rounds R:
each figure is the median over R rounds with its range, the variants of a round interleaved (A, B,
A, B...) so that a machine whose speed drifts treats them alike. Each prints the thread count and
the machine's peak measured in the same process, and the fraction of it reached:

- decode reads every weight once per token, so its limit is the read bandwidth over the bytes per
  token (the roofline);
- training multiplies matrices, so its limit is the matmul FLOP/s (MFU: model FLOPs over that peak).

bench.py writes only into temporary directories of its own: `race` runs each command with its
--out_dir (and --data_dir, when given) pointed into a new one every round, so the directories the
commands name are never touched, and every round starts afresh (data preparation included).
"""

import json
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from data import tokenizer_from_dict
from evaluate import language_model_loss
from model import GPT, GPTConfig
from sample import for_inference, generate
from train import LanguageModelling, TrainConfig, build_model, load_model, run_data, train_loop
from ring.config import UserError, check_settings, did_you_mean, parse_config, run_main, setting
from ring.files import read_text
from ring.rundir import RunDirectory
from ring.runtime import peak_flops, setup_runtime


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
    "int8": ("bfloat16", "int8", False),  # PyTorch's int8 kernel, for bf16 activations
    "int8-fp32": ("float32", "int8", False),
    "int8-fp32-compiled": ("float32", "int8", True),  # fastpaths.RowDotInt8Linear
}


def bench_sample(args):
    rt = setup_runtime(args.device, "float32")
    prompt = torch.randint(0, 50257, (args.batch, args.prompt_tokens), device=rt.device,
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
    B = args.batch
    print(f"decode, GPT-2 124M shape, batch {B}, greedy, {args.new_tokens} new tokens after "
          f"{args.prompt_tokens}; {rt.device}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds")
    print(f"  read bandwidth in the same rounds: {median_range([b / 1e9 for b in bandwidth])} GB/s")
    reference = {"float32": "fp32", "bfloat16": "bf16"}
    first = next(iter(times))
    for name, seconds in times.items():
        # a step reads every weight once for all B rows, and each row's own KV cache
        per_step = bytes_per_token(models[name], context * B)
        tokens_per_s = [B * args.new_tokens / s for s in seconds]
        roofline = [B * b / per_step for b in bandwidth]
        fraction = [t / r * 100 for t, r in zip(tokens_per_s, roofline)]
        ratio = [a / b for a, b in zip(times[first], seconds)]  # speed against the first variant's
        same = reference[VARIANTS[name][0]]
        agree = ""
        if same in outputs and same != name:
            agree = torch.equal(outputs[name], outputs[same])
            agree = f"; greedy tokens equal to {same}'s: {agree}"
        speedup = median_range(ratio, '{:.2f}')
        print(f"  {name:18} {median_range(tokens_per_s)} tokens/s, {speedup}x "
              f"{first} | {per_step / 1e6:.0f} MB a step | roofline "
              f"{statistics.median(roofline):.0f} tokens/s | "
              f"{median_range(fraction, '{:.0f}')} % of it{agree}")


# --------------------------------------------------------------------------------------------------
# Training against the matmul peak


def bench_train(args):
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    rt = setup_runtime(cfg.device, cfg.dtype)
    dtype = torch.bfloat16 if rt.dtype == "bfloat16" else torch.float32
    measured = [matmul_flops(rt.device, dtype) for _ in range(3)]
    # MFU against the device's published dense peak where it is known (GPUs), else the measured one
    spec = cfg.peak_flops or peak_flops(rt)
    peak = [spec] if spec else measured
    data_dir, meta = run_data(cfg, rt)
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
    against = "the device's published peak" if spec else "the measured matmul peak"
    print(f"  {median_range(speeds, '{:,.0f}')} tokens/s | {median_range(ms)} ms/iter | MFU "
          f"{median_range(mfus)} % of {against}, {statistics.median(peak) / 1e9:,.0f} GFLOP/s "
          f"(measured: a 2048x2048 matmul at "
          f"{median_range([p / 1e9 for p in measured], '{:,.0f}')} GFLOP/s)")


# --------------------------------------------------------------------------------------------------
# Quality of int8 weights


def bench_quality(args):
    _, info = load_model(args.checkpoint)
    ids = tokenizer_from_dict(info.tokenizer).encode(read_text(args.data, "--data"))
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


# A command's --out_dir and --data_dir, written --key=value or --key value (the value one shell
# word, maybe quoted)
_RUN_PATHS = re.compile(r"--(out_dir|data_dir)(?:=|\s+)('[^']*'|\"[^\"]*\"|\S+)")


def in_scratch(command, scratch):
    """command with its --out_dir (and --data_dir, when it names one) pointed into the directory
    scratch: a race never touches what the commands name, and each run starts afresh."""
    named = set()

    def move(m):
        named.add(m.group(1))
        return f"--{m.group(1)}={shlex.quote(str(Path(scratch) / m.group(1)))}"

    moved = _RUN_PATHS.sub(move, command)
    if "out_dir" not in named:
        raise UserError(f"bench.py race needs --out_dir=DIR in each command (it is run with that "
                        f"pointed into a temporary directory): {command}")
    return moved


def final_val_loss(scratch, command, output):
    """The last val_loss that a train.py / finetune.py command wrote to its metrics.jsonl, or, for
    another program (nanoGPT's train.py, say), the last "val loss X" it printed."""
    path = Path(scratch) / "out_dir" / "metrics.jsonl"
    if path.is_file():
        losses = [json.loads(line).get("val_loss") for line in read_text(path).splitlines()]
    else:
        losses = re.findall(r"val[ _]loss[ :=]+([0-9.]+)", output)
    losses = [float(v) for v in losses if v is not None]
    if not losses:
        raise UserError(f"the command logged no val_loss: {command}")
    return losses[-1]


def run_in_scratch(command):
    """(wall seconds, final val_loss) of one run of command, in a new temporary directory."""
    with tempfile.TemporaryDirectory(prefix="bench-race-") as scratch:
        moved = in_scratch(command, scratch)
        start = time.perf_counter()
        done = subprocess.run(moved, shell=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            raise UserError(f"the command failed (exit status {done.returncode}): {command}")
        return wall, final_val_loss(scratch, command, done.stdout)


def bench_race(args):
    for command in args.commands:
        in_scratch(command, "scratch")  # every command is checked before the first runs
    walls = {c: [] for c in args.commands}
    losses = {c: [] for c in args.commands}
    for _ in range(args.rounds):
        for command in args.commands:  # A, B, A, B, ...
            wall, loss = run_in_scratch(command)
            walls[command].append(wall)
            losses[command].append(loss)
    print(f"wall time of whole commands (data preparation included), {args.rounds} rounds, "
          "interleaved")
    first = args.commands[0]
    for command in args.commands:
        ratio = [b / a for a, b in zip(walls[first], walls[command])]
        loss = median_range(losses[command], "{:.4f}")
        print(f"  {median_range(walls[command])} s, final val_loss {loss}, "
              f"{median_range(ratio, '{:.2f}')}x the first's time: {command}")


# --------------------------------------------------------------------------------------------------
# The settings of each command (python bench.py COMMAND --help)


@dataclass
class Measuring:
    """What every command takes."""

    threads: int = setting("PyTorch threads (0: PyTorch's default)", 0, ">= 0")
    rounds: int = setting("measurements per figure", 5, ">= 1")

    POSITIONAL = ()

    def __post_init__(self):
        check_settings(self)


@dataclass
class MachineBench(Measuring):
    device: str = setting("the device whose peaks are measured", "cpu")


@dataclass
class SampleBench(Measuring):
    device: str = setting("the device to decode on", "cpu")
    variants: tuple = setting("what to compare", ("fp32", "bf16", "int8"), tuple(VARIANTS))
    prompt_tokens: int = setting("tokens of the (random) prompt", 16, ">= 1")
    batch: int = setting("prompts decoded together", 1, ">= 1")
    new_tokens: int = setting("tokens generated per round", 128, ">= 1")


@dataclass
class TrainBench(TrainConfig, Measuring):
    """train.py's settings (config files, --key=value) and --threads, --rounds."""

    POSITIONAL = None  # config files, as train.py takes them


@dataclass
class QualityBench(Measuring):
    checkpoint: str = setting("a language model's run or checkpoint directory", "", "required")
    data: str = setting("a UTF-8 text file (held out from training)", "", "required")
    max_tokens: int = setting("use the first N tokens (0: all)", 0, ">= 0")
    device: str = setting("the device", "cpu")

    POSITIONAL = ("checkpoint",)


@dataclass
class RaceBench(Measuring):
    commands: tuple = setting("the commands, each in quotes and with its --out_dir", (),
                              "required")

    POSITIONAL = ("commands",)


COMMANDS = {"machine": (MachineBench, bench_machine), "sample": (SampleBench, bench_sample),
            "train": (TrainBench, bench_train), "quality": (QualityBench, bench_quality),
            "race": (RaceBench, bench_race)}


def main(argv=None):
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    if not argv:
        raise UserError(f"give a command: {', '.join(COMMANDS)} (python bench.py --help)")
    if argv[0] in ("-h", "--help"):
        print(__doc__.strip() + f"\n\ncommands: {', '.join(COMMANDS)}")
        raise SystemExit(0)
    what = argv[0]
    if what not in COMMANDS:
        raise UserError(f"unknown command '{what}'{did_you_mean(what, COMMANDS)}; the commands "
                        f"are {', '.join(COMMANDS)}")
    settings, bench = COMMANDS[what]
    args = parse_config(settings, argv[1:], description=__doc__, prog=f"bench.py {what}")
    if args.threads:
        torch.set_num_threads(args.threads)
    bench(args)


if __name__ == "__main__":
    run_main(main)

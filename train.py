"""
Pretrain a GPT on a text file.

    python train.py configs/shakespeare.py
    python train.py configs/shakespeare.py --max_iters=2000 --device=cpu
    torchrun --standalone --nproc_per_node=2 train.py configs/shakespeare.py      (DDP)

This file is the recipe, in the order it runs: settings, device and precision, data, model, optimizer, the
loop (learning-rate schedule, gradient accumulation, clipping, evaluation, checkpoints, logging). The pieces
that finetune.py shares (device/precision setup, lr_at, optimizer_step, the loop itself) are defined here once
and imported there.
"""

import contextlib
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from checkpoint import find_checkpoint, load_model, load_train_state, model_config_from, read_info, save_checkpoint
from config import UserError, parse_config, run_main
from data import LMBatches, load_tokens, prepare_lm_data
from model import GPT, GPTConfig


def _help(text, default):
    return field(default=default, metadata={"help": text})


@dataclass
class TrainConfig:
    # where things go
    out_dir: str = _help("run directory: last/ and best/ checkpoints, metrics.jsonl", "out")
    init_from: str = _help("scratch | resume (from out_dir/last) | a GPT-2 name (gpt2, gpt2-medium...) | a checkpoint dir", "scratch")
    # data
    dataset: str = _help("'shakespeare' (downloaded once) or the path of a UTF-8 .txt file", "shakespeare")
    tokenizer: str = _help("char | gpt2", "char")
    data_dir: str = _help("where downloads and tokenized data are cached", "data")
    # the loop
    max_iters: int = _help("optimizer steps in total", 5000)
    eval_interval: int = _help("evaluate and write last/ every this many steps", 250)
    eval_iters: int = _help("batches per split in an evaluation (a fixed, seeded set)", 50)
    log_interval: int = _help("print a progress line every this many steps", 10)
    batch_size: int = _help("sequences per micro-batch", 32)
    gradient_accumulation_steps: int = _help("micro-batches per optimizer step (all ranks together)", 1)
    block_size: int = _help("context length in tokens", 256)
    # the model
    n_layer: int = _help("transformer blocks", 6)
    n_head: int = _help("attention heads", 6)
    n_embd: int = _help("width of the residual stream", 384)
    dropout: float = _help("dropout probability", 0.0)
    bias: bool = _help("biases in Linear and LayerNorm layers (GPT-2: True)", True)
    # the optimizer: AdamW, cosine schedule with linear warmup
    learning_rate: float = _help("peak learning rate", 1e-3)
    min_lr: float = _help("learning rate at the end of the cosine decay", 1e-4)
    warmup_iters: int = _help("steps of linear warmup", 100)
    lr_decay_iters: int = _help("step where the cosine reaches min_lr (0: max_iters)", 0)
    weight_decay: float = _help("AdamW weight decay on matmul weights", 0.1)
    beta1: float = _help("AdamW beta1", 0.9)
    beta2: float = _help("AdamW beta2", 0.99)
    grad_clip: float = _help("clip the global gradient norm to this (0: off)", 1.0)
    # the system
    device: str = _help("auto | cpu | cuda | cuda:N | mps", "auto")
    dtype: str = _help("auto | float32 | bfloat16 | float16 (autocast precision)", "auto")
    compile: bool = _help("torch.compile the model (falls back to eager if it fails)", False)
    seed: int = _help("seed for init, batches and dropout", 1337)
    peak_flops: float = _help("peak FLOP/s of the device for MFU (0: the device's own if known)", 0.0)


# ----------------------------------------------------------------------------------------------------------
# Device and precision


def resolve_device(requested):
    """'auto' picks cuda, then mps, then cpu."""
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = requested.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' asked for, but PyTorch sees no CUDA GPU (use --device=cpu or auto)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps' asked for, but it is not available (use --device=cpu or auto)")
    if kind not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device '{requested}' (use auto, cpu, cuda, cuda:N or mps)")
    return requested




def resolve_dtype(requested, device_type, bf16_native):
    """The autocast precision for a device, and whether it needs a GradScaler.

    bfloat16 has float32's exponent range, so gradients do not underflow and no loss scaling is needed.
    float16 has a 5-bit exponent: small gradients flush to zero unless the loss is scaled up before backward
    and the gradients scaled back down before the step (GradScaler), which is what CUDA GPUs without bf16
    (before Ampere) must do.

    On a CPU, 'auto' means bfloat16 only where the CPU multiplies bf16 natively (AVX-512 BF16 or AMX): there
    it trained 1.2-1.5x faster than float32 with the same loss (README, "bf16 on CPU"); elsewhere bf16 is
    emulated and slower, so float32."""
    if requested == "auto":
        if device_type in ("cuda", "mps"):
            requested = "bfloat16" if bf16_native else "float16"
        else:
            requested = "bfloat16" if bf16_native else "float32"
    if requested not in ("float32", "bfloat16", "float16"):
        raise UserError(f"unknown dtype '{requested}' (use auto, float32, bfloat16 or float16)")
    if requested == "bfloat16" and not bf16_native and device_type != "cpu":  # CPUs can always emulate it
        raise UserError(f"bfloat16 is not supported on this {device_type} device (use float16 or float32)")
    if requested == "float16" and device_type == "cpu":
        raise UserError("float16 autocast on CPU is not supported here (use bfloat16 or float32)")
    return requested, requested == "float16"


def bf16_native(device_type):
    """Does the device compute in bfloat16 natively?"""
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device_type == "mps":
        try:
            torch.ones(1, dtype=torch.bfloat16, device="mps")  # needs macOS 14 or newer
            return True
        except (RuntimeError, TypeError):
            return False
    try:  # a CPU: Linux lists its instruction sets in /proc/cpuinfo
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


@dataclass
class Runtime:
    """Where and how the run computes: device, autocast precision and the DDP rank."""

    device: str
    device_type: str
    dtype: str
    use_scaler: bool
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self):
        return self.rank == 0

    def autocast(self):
        if self.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=getattr(torch, self.dtype))

    def make_scaler(self):
        """A GradScaler for float16, else None."""
        return torch.amp.GradScaler(self.device_type) if self.use_scaler else None


def setup_runtime(device="auto", dtype="auto"):
    """Resolve device and precision; join the process group when launched by torchrun (RANK is set)."""
    rank, local_rank, world_size = 0, 0, 1
    if "RANK" in os.environ:
        import torch.distributed as dist

        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        world_size = int(os.environ["WORLD_SIZE"])
        device = resolve_device(device)
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        if device.startswith("cuda"):
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(device)
    device = resolve_device(device)
    device_type = device.split(":")[0]
    dtype, use_scaler = resolve_dtype(dtype, device_type, bf16_native(device_type))
    if device_type == "cuda":
        # TF32 matmuls for whatever still runs in float32: ~8x faster on Ampere+ at ~1e-3 relative precision.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device, device_type, dtype, use_scaler, rank, local_rank, world_size)


# Dense peak FLOP/s of a few GPUs, for MFU (model FLOPs utilisation): bf16/fp16 tensor cores, then TF32.
PEAK_FLOPS = {
    "H100": (989e12, 495e12),
    "H200": (989e12, 495e12),
    "A100": (312e12, 156e12),
    "A10": (125e12, 62.5e12),
    "L4": (121e12, 60e12),
    "4090": (165e12, 82.6e12),
    "3090": (71e12, 35.6e12),
    "V100": (125e12, 15.7e12),
    "T4": (65e12, 8.1e12),
}


def device_peak_flops(rt):
    """The device's peak FLOP/s at the run's precision if we know it; None on CPU/MPS and unknown GPUs."""
    if rt.device_type != "cuda":
        return None
    name = torch.cuda.get_device_name(rt.device)
    for key, (half, tf32) in PEAK_FLOPS.items():
        if key in name:
            return half if rt.dtype != "float32" else tf32
    return None


def print0(rt, *args, **kwargs):
    """print on rank 0 only."""
    if rt.is_main:
        print(*args, **kwargs, flush=True)


@contextlib.contextmanager
def session(cfg):
    """The setting-up and tearing-down that every run shares: resolve device and precision (joining the DDP
    process group under torchrun), print the settings, and leave the process group however the run ends."""
    rt = setup_runtime(cfg.device, cfg.dtype)
    try:
        print0(rt, json.dumps(asdict(cfg), indent=1))
        print0(rt, f"device {rt.device} | dtype {rt.dtype} | compile {cfg.compile} | processes {rt.world_size}")
        yield rt
    finally:
        if rt.world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def main_process_first(rt, fn):
    """fn() on rank 0, then on the other ranks once rank 0 is done: downloads and caches are written once, by
    one process, and the others read them."""
    if rt.is_main:
        result = fn()
    if rt.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
        if not rt.is_main:
            result = fn()
    return result


# ----------------------------------------------------------------------------------------------------------
# Schedule and optimizer step


def lr_at(step, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    """Linear warmup to learning_rate over warmup_iters steps, then a cosine down to min_lr at
    lr_decay_iters, then min_lr. Warmup keeps Adam's first, badly estimated updates small."""
    if step < warmup_iters:
        return learning_rate * (step + 1) / (warmup_iters + 1)
    if step >= lr_decay_iters:
        return min_lr
    progress = (step - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)


def optimizer_step(model, optimizer, scaler, grad_clip):
    """Unscale (float16), clip the global gradient norm, step, clear gradients. Returns the norm."""
    if scaler is not None:
        scaler.unscale_(optimizer)  # clipping must see the true gradients, not the scaled ones
    params = [p for p in model.parameters() if p.grad is not None]
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    if scaler is not None:
        scaler.step(optimizer)  # skips the step if the gradients overflowed
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def maybe_compile(model, enabled, rt, example_batch, loss_fn):
    """torch.compile the model, or return it unchanged with a one-line warning if compiling fails (compile
    errors only show at the first call, so one is made here, with the RNG state preserved)."""
    if not enabled:
        return model
    compiled = torch.compile(model)
    try:
        with torch.random.fork_rng(devices=[rt.device] if rt.device_type == "cuda" else []), rt.autocast():
            loss_fn(compiled, example_batch)
        return compiled
    except Exception as e:
        print0(rt, f"warning: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); running eager")
        return model


# ----------------------------------------------------------------------------------------------------------
# The training loop, shared by train.py and finetune.py


class StopRequest:
    """Ctrl-C sets a flag; the loop finishes its step, saves last/ and exits cleanly. A second Ctrl-C
    interrupts at once."""

    def __init__(self, verbose=True):
        self.requested = False
        self.verbose = verbose  # rank 0 only: torchrun passes Ctrl-C to every process

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.verbose:
            print("\ninterrupt: finishing this step, saving last/ and stopping (Ctrl-C again to abort)", flush=True)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def rng_state(rt):
    """Every rank's RNG state (a list, rank by rank): under DDP each rank draws its own dropout masks. A
    collective operation: all ranks must call it."""
    state = {"torch": torch.get_rng_state()}
    if rt.device_type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(rt.device)
    if rt.world_size == 1:
        return [state]
    import torch.distributed as dist

    states = [None] * rt.world_size
    dist.all_gather_object(states, {k: v.cpu() for k, v in state.items()})
    return states


def set_rng_state(rt, states):
    if len(states) != rt.world_size:
        print0(rt, f"warning: the checkpoint has the RNG state of {len(states)} processes, this run has "
                   f"{rt.world_size}: dropout masks will differ from an uninterrupted run")
        return
    state = states[rt.rank]
    torch.set_rng_state(state["torch"])
    if rt.device_type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], rt.device)


def any_rank(rt, flag):
    """True on every rank if flag is True on any (Ctrl-C may reach the processes at different steps, and they
    must all stop at the same one)."""
    if rt.world_size == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device=rt.device if rt.device_type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


@dataclass
class Task:
    """What the loop needs to know about a task (language modelling here, classification in finetune.py).

    micro_batches(): this rank's micro-batches for the next optimizer step.
    loss_fn(model, batch) -> (loss, tokens in the batch).
    evaluate(model) -> dict of metrics (must contain best_metric).
    sampler: has state_dict()/load_state_dict() for an exact resume.
    info: what goes into each checkpoint's config.json besides the model config."""

    micro_batches: callable
    loss_fn: callable
    evaluate: callable
    sampler: object
    info: dict
    best_metric: str = "val_loss"
    higher_is_better: bool = False
    patience: int = 0  # evaluations without improvement before stopping early (0: never)
    epoch_of: callable = None  # iteration -> epoch, logged when given
    example_batch: object = None  # any batch, for torch.compile's trial call
    evaluate_at: callable = None  # iteration -> True to evaluate there too (finetune.py: at each epoch's end)
    export: callable = None  # model -> the model whose weights are saved (finetune.py: LoRA merged into a copy)
    extra_state: callable = None  # model -> more for train_state.pt, under "task" (finetune.py: LoRA's own weights)


def train_loop(cfg, rt, model, task, resume_state=None, log_file=None):
    """Optimize model for cfg.max_iters steps. Returns the last evaluation's metrics.

    model is the plain GPT (weights on rt.device). Checkpoints go to cfg.out_dir/{last,best}; train_state in
    resume_state (from load_train_state) continues a run exactly where it stopped."""
    raw_model = model
    optimizer = raw_model.configure_optimizer(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), rt.device_type)
    scaler = rt.make_scaler()
    iter_num, best, evals_without_improvement = 0, None, 0
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        if scaler is not None and resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        task.sampler.load_state_dict(resume_state["sampler"])
        set_rng_state(rt, resume_state["rng"])
        iter_num, best = resume_state["iter_num"], resume_state["best"]
        evals_without_improvement = resume_state.get("evals_without_improvement", 0)
    # The evaluation at the step a run resumes from was done before it stopped, unless Ctrl-C came first.
    evaluated_at = resume_state.get("evaluated_at") if resume_state is not None else None
    metrics = resume_state.get("metrics", {}) if resume_state is not None else {}

    model = maybe_compile(raw_model, cfg.compile, rt, task.example_batch, task.loss_fn)
    if rt.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[rt.local_rank] if rt.device_type == "cuda" else None)

    peak = cfg.peak_flops or device_peak_flops(rt)
    out_dir = Path(cfg.out_dir)

    def log(row):
        if rt.is_main and log_file is not None:
            with open(log_file, "a") as f:
                f.write(json.dumps(row) + "\n")

    def save(name, metrics):
        rng = rng_state(rt)  # collective: every rank takes part
        if not rt.is_main:
            return
        state = {
            "iter_num": iter_num,
            "best": best,
            "evals_without_improvement": evals_without_improvement,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "sampler": task.sampler.state_dict(),
            "rng": rng,
            "evaluated_at": evaluated_at,
            "metrics": metrics,
        }
        if task.extra_state is not None:
            state["task"] = task.extra_state(raw_model)
        info = {**task.info, "iter_num": iter_num, "metrics": metrics, "run": asdict(cfg)}
        save_checkpoint(out_dir / name, raw_model if task.export is None else task.export(raw_model), info, state)

    t_last, tokens_since, steps_since = time.time(), 0, 0
    with StopRequest(verbose=rt.is_main) as stop:
        while True:
            # ---- evaluate, keep best/ and last/
            stopping = any_rank(rt, stop.requested)
            scheduled = iter_num % cfg.eval_interval == 0 or (task.evaluate_at is not None and task.evaluate_at(iter_num))
            due = (scheduled or iter_num >= cfg.max_iters) and evaluated_at != iter_num
            if due or stopping or iter_num >= cfg.max_iters:
                if due and not stopping:
                    with rt.autocast():
                        metrics = task.evaluate(raw_model)
                    evaluated_at = iter_num
                    value = metrics[task.best_metric]
                    improved = best is None or (value > best if task.higher_is_better else value < best)
                    if improved:
                        best, evals_without_improvement = value, 0
                    else:
                        evals_without_improvement += 1
                    row = {"iter": iter_num, **metrics, f"best_{task.best_metric}": best}
                    if task.epoch_of is not None:
                        row["epoch"] = task.epoch_of(iter_num)
                    log(row)
                    print0(rt, "eval " + " ".join(f"{k} {_fmt(v)}" for k, v in row.items() if not isinstance(v, (dict, list))))
                    if improved:
                        save("best", metrics)
                save("last", metrics)
                if stopping:
                    print0(rt, f"saved {out_dir / 'last'} at iter {iter_num}")
                    break
                if task.patience and evals_without_improvement >= task.patience:
                    print0(rt, f"early stop: {task.best_metric} did not improve for {task.patience} evaluations")
                    break
                t_last, tokens_since, steps_since = time.time(), 0, 0  # keep evaluation out of the step timings
            if iter_num >= cfg.max_iters:
                break

            # ---- one optimizer step: gradient accumulation over this rank's micro-batches
            lr = lr_at(iter_num, cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, cfg.lr_decay_iters or cfg.max_iters)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batches = task.micro_batches()
            loss_sum, tokens = torch.zeros((), device=rt.device), 0
            for i, batch in enumerate(batches):
                # DDP averages gradients across ranks during backward; doing that once, on the last
                # micro-batch, instead of after every one saves the communication.
                last_micro = i == len(batches) - 1
                sync = model.no_sync() if (rt.world_size > 1 and not last_micro) else contextlib.nullcontext()
                with sync:
                    with rt.autocast():
                        loss, n_tokens = task.loss_fn(model, batch)
                    # Each micro-batch's loss is a mean over its tokens; dividing by the number of micro-batches
                    # makes the accumulated gradient that of the mean over the whole step's batch.
                    scaled = loss / len(batches)
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                loss_sum += loss.detach()
                tokens += n_tokens
            grad_norm = optimizer_step(model, optimizer, scaler, cfg.grad_clip)
            iter_num += 1
            tokens_since += tokens * rt.world_size
            steps_since += 1

            # ---- log: the mean loss over the step's micro-batches and over all ranks
            if iter_num % cfg.log_interval == 0 or iter_num == cfg.max_iters:
                step_loss = loss_sum / len(batches)
                if rt.world_size > 1:
                    import torch.distributed as dist

                    dist.all_reduce(step_loss, op=dist.ReduceOp.AVG)
                step_loss = step_loss.item()  # waits for the device: timings below are real
                elapsed = time.time() - t_last
                ms_per_iter = 1000 * elapsed / steps_since
                tokens_per_s = tokens_since / elapsed
                eta = (cfg.max_iters - iter_num) * ms_per_iter / 1000  # evaluations not included
                row = {"iter": iter_num, "loss": step_loss, "lr": lr, "grad_norm": grad_norm.item(),
                       "ms_per_iter": ms_per_iter, "tokens_per_s": tokens_per_s}
                if peak:
                    row["mfu"] = raw_model.flops_per_token(batches[-1][0].size(1)) * tokens_per_s / peak
                log(row)
                mfu = f" | mfu {100 * row['mfu']:.1f}%" if peak else ""
                print0(rt, f"iter {iter_num}: loss {step_loss:.4f} | lr {lr:.2e} | {ms_per_iter:.1f} ms/iter | "
                           f"{tokens_per_s:,.0f} tok/s{mfu} | eta {_duration(eta)}")
                t_last, tokens_since, steps_since = time.time(), 0, 0
    return metrics


def _fmt(v):
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _duration(seconds):
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


# ----------------------------------------------------------------------------------------------------------
# Language modelling


class LMTask:
    """Next-token prediction on a tokenized text: the Task that train.py runs."""

    @staticmethod
    def build(cfg, rt, data_dir, meta, tokenizer_info):
        train_tokens = load_tokens(data_dir, "train")
        val_tokens = load_tokens(data_dir, "val")
        if cfg.gradient_accumulation_steps % rt.world_size:
            raise UserError(f"gradient_accumulation_steps ({cfg.gradient_accumulation_steps}) must be divisible "
                            f"by the number of processes ({rt.world_size})")
        per_rank = cfg.gradient_accumulation_steps // rt.world_size
        # Every rank draws the same offsets for the whole step's global batch and takes its own slice, so the
        # global batch (and the loss) does not depend on how many processes share it.
        sampler = LMBatches(train_tokens, cfg.block_size, cfg.batch_size, seed=cfg.seed)

        def to_device(xy):
            x, y = xy
            if rt.device_type == "cuda":  # pinned memory lets the copy overlap with compute
                return x.pin_memory().to(rt.device, non_blocking=True), y.pin_memory().to(rt.device, non_blocking=True)
            return x.to(rt.device), y.to(rt.device)

        def micro_batches():
            offsets = sampler.offsets(cfg.gradient_accumulation_steps)
            mine = offsets[rt.rank * per_rank : (rt.rank + 1) * per_rank]
            return [to_device(sampler.batch_at(row)) for row in mine]

        # Evaluation uses the same batches every time (their own fixed seed), so numbers are comparable
        # across evaluations and across runs.
        eval_sets = {}
        for split, tokens in (("train", train_tokens), ("val", val_tokens)):
            fixed = LMBatches(tokens, cfg.block_size, cfg.batch_size, seed=1234)
            eval_sets[split] = [to_device(fixed.batch_at(row)) for row in fixed.offsets(cfg.eval_iters)]

        def loss_fn(model, batch):
            x, y = batch
            _, loss = model(x, y)
            return loss, x.numel()

        @torch.no_grad()
        def evaluate(model):
            model.eval()
            out = {}
            for split, batches in eval_sets.items():
                losses = [model(x, y)[1].float() for x, y in batches]
                out[f"{split}_loss"] = torch.stack(losses).mean().item()
            # Perplexity, exp(mean cross-entropy): the number of equally likely tokens the model is as unsure as.
            out["val_perplexity"] = math.exp(out["val_loss"])
            model.train()
            return out

        info = {"tokenizer": tokenizer_info, "data": meta, "task": "lm"}
        return Task(micro_batches, loss_fn, evaluate, sampler, info, example_batch=eval_sets["val"][0])


SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias")


def build_model(cfg, meta, rt):
    """The model to train on the data described by meta (prepare_lm_data's), from cfg.init_from.
    Returns (model, resume_state or None)."""
    vocab_size = meta["vocab_size"]
    if cfg.init_from == "scratch":
        torch.manual_seed(cfg.seed)  # the same init on every rank
        config = GPTConfig(block_size=cfg.block_size, vocab_size=vocab_size, n_layer=cfg.n_layer,
                           n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias)
        return GPT(config), None
    if cfg.init_from == "resume":
        directory = find_checkpoint(Path(cfg.out_dir) / "last")
        info = read_info(directory)
        require_language_model(info, directory)
        # Compare the settings with those the run started with, not with the model: a run that started from
        # GPT-2 has GPT-2's shape whatever n_layer and friends say, and resumes with the same command line.
        started = {**info.get("run", {}), "vocab_size": model_config_from(info).vocab_size}
        wanted = {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd,
                  "block_size": cfg.block_size, "vocab_size": vocab_size, "bias": cfg.bias}
        diff = [f"{k} {started[k]} -> {wanted[k]}" for k in SHAPE_KEYS if k in started and started[k] != wanted[k]]
        if diff:
            raise UserError(f"cannot resume {directory}: the model shape differs ({', '.join(diff)}); "
                            "use the run's own settings or a new out_dir")
        model, _ = load_model(directory)
        set_dropout(model, cfg.dropout)
        return model, load_train_state(directory)
    # a pretrained model: a GPT-2 name (imported on first use) or any checkpoint directory
    from hf_import import resolve_pretrained

    directory = main_process_first(rt, lambda: resolve_pretrained(cfg.init_from))  # one download, not one per rank
    model, info = load_model(directory)
    require_language_model(info, cfg.init_from)
    theirs, ours = info["tokenizer"]["type"], meta["tokenizer"]["type"]
    if theirs != ours:
        raise UserError(f"{cfg.init_from} was trained with another tokenizer ({theirs}) than the data's ({ours}); "
                        f"pass --tokenizer={theirs}")
    if info["tokenizer"] != meta["tokenizer"]:  # a char vocabulary is built from its text
        raise UserError(f"{cfg.init_from} was trained with another tokenizer: its characters are not this "
                        "text's; a char-level model can only continue on text with the same characters")
    if cfg.block_size > model.config.block_size:
        raise UserError(f"block_size {cfg.block_size} is longer than the {model.config.block_size} positions that "
                        f"{cfg.init_from} learned; use --block_size={model.config.block_size} or less")
    if cfg.block_size < model.config.block_size:
        model.crop_block_size(cfg.block_size)
    set_dropout(model, cfg.dropout)
    return model, None


def require_language_model(info, where):
    """Refuse a classifier checkpoint (finetune.py --task cls) where a language model is needed."""
    if info.get("task") == "cls":
        labels = ", ".join(info.get("labels", []))
        raise UserError(f"{where} is a classifier ({labels}), not a language model; give a language model's checkpoint")


def set_dropout(model, p):
    """Use the run's dropout, not the one the checkpoint was trained with."""
    model.config.dropout = p
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
        if hasattr(m, "dropout") and isinstance(m.dropout, float):
            m.dropout = p  # attention dropout is an argument of scaled_dot_product_attention


def check_config(cfg):
    """Settings that would fail deep inside the run (or silently do nothing) stop here with one line."""
    positive = ("max_iters", "eval_interval", "eval_iters", "log_interval", "batch_size",
                "gradient_accumulation_steps", "block_size", "n_layer", "n_head", "n_embd")
    for key in positive:
        if getattr(cfg, key) < (0 if key == "max_iters" else 1):
            raise UserError(f"{key} must be {'>= 0' if key == 'max_iters' else '>= 1'}, not {getattr(cfg, key)}")
    if cfg.n_embd % cfg.n_head:
        raise UserError(f"n_embd ({cfg.n_embd}) must be divisible by n_head ({cfg.n_head}): each head gets n_embd / n_head")
    if not 0 <= cfg.dropout < 1:
        raise UserError(f"dropout must be in [0, 1), not {cfg.dropout}")
    if cfg.learning_rate < 0 or cfg.min_lr < 0:
        raise UserError("learning_rate and min_lr must be >= 0")
    return cfg


def main(argv=None):
    run(check_config(parse_config(TrainConfig, argv, description="Pretrain a GPT on a text file.")))


def run(cfg, epochs=None):
    """Train with the settings in cfg, a TrainConfig (finetune.py --task gen comes here too). With epochs,
    max_iters is as many steps as that many passes over the training tokens take."""
    with session(cfg) as rt:
        # data: tokenized once and cached (rank 0 first, the others then read the cache)
        data_dir, meta = main_process_first(rt, lambda: prepare_lm_data(cfg.dataset, cfg.tokenizer, cfg.data_dir))
        print0(rt, f"data: {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens from {meta['source']}")
        if epochs is not None:
            tokens_per_step = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
            cfg = replace(cfg, max_iters=max(1, math.ceil(epochs * meta["train_tokens"] / tokens_per_step)))
            print0(rt, f"{epochs} epochs of {tokens_per_step:,} tokens per step: {cfg.max_iters:,} steps")

        model, resume_state = build_model(cfg, meta, rt)
        model.to(rt.device)
        print0(rt, f"model: {model.num_params() / 1e6:.2f}M parameters")
        torch.manual_seed(cfg.seed + rt.rank)  # dropout differs per rank

        task = LMTask.build(cfg, rt, data_dir, meta, meta["tokenizer"])
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        metrics = train_loop(cfg, rt, model, task, resume_state, log_file=Path(cfg.out_dir) / "metrics.jsonl")
        print0(rt, f"done: {json.dumps(metrics)}")


if __name__ == "__main__":
    run_main(main)

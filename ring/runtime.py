"""
Where and how a run computes: the device and autocast precision (setup_runtime, Runtime), the
processes (print0, main_process_first, any_rank, mean_over_ranks), every rank's random state for
exact resume (rng_state), Ctrl-C and SIGTERM (StopRequest), torch.compile (maybe_compile): plumbing
that the training scripts call by one name each.
"""

import contextlib
import ctypes
import gc
import os
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from ring.config import UserError

# --------------------------------------------------------------------------------------------------
# Device and precision


def resolve_device(requested):
    """'auto' picks cuda, then mps, then cpu."""
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if requested == "auto":
        return next((kind for kind, is_available in available.items() if is_available()), "cpu")
    kind = requested.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device '{requested}' (use auto, cpu, cuda, cuda:N or mps)")
    if kind != "cpu" and not available[kind]():
        why = "PyTorch sees no CUDA GPU" if kind == "cuda" else "it is not available"
        raise UserError(f"device '{kind}' asked for, but {why} (use --device=cpu or auto)")
    return requested


def resolve_dtype(requested, device_type, bf16_native):
    """The autocast precision for a device, and whether it needs a GradScaler. bfloat16 has
    float32's exponent range: gradients do not underflow, no loss scaling is needed. float16 has a
    5-bit exponent: small gradients flush to zero unless the loss is scaled up before backward and
    the gradients back down before the step (GradScaler), as CUDA GPUs without bf16 (before Ampere)
    and Apple GPUs without it must do. On a CPU, 'auto' means bfloat16 only where the CPU multiplies
    bf16 natively (AVX-512 BF16 or AMX): faster than float32 at the same loss
    (docs/results.md); elsewhere bf16 is emulated and slower. float16 on a CPU is slow but
    allowed: it runs a GPU's code path without bf16 (the tests check the GradScaler loop)."""
    if requested == "auto":
        gpu = device_type in ("cuda", "mps")
        requested = "bfloat16" if bf16_native else "float16" if gpu else "float32"
    if requested not in ("float32", "bfloat16", "float16"):
        raise UserError(f"unknown dtype '{requested}' (use auto, float32, bfloat16 or float16)")
    if requested == "bfloat16" and not bf16_native and device_type != "cpu":  # CPUs can emulate it
        raise UserError(f"bfloat16 is not supported on this {device_type} device (use float16 or "
                        "float32)")
    return requested, requested == "float16"


def bf16_native(device_type):
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

    def describe(self):
        return (f"device {self.device} | dtype {self.dtype} | processes {self.world_size} | "
                f"threads {torch.get_num_threads()}")

    def autocast(self):
        if self.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=getattr(torch, self.dtype))

    def make_scaler(self):  # for float16, else None
        return torch.amp.GradScaler(self.device_type) if self.use_scaler else None

    def to_device(self, *tensors):
        """Tensors moved to the device (on CUDA from pinned memory: the copy overlaps compute)."""
        if self.device_type == "cuda":
            return tuple(t.pin_memory().to(self.device, non_blocking=True) for t in tensors)
        return tuple(t.to(self.device) for t in tensors)


def world_size_from_env():
    """The number of processes torchrun started (1 without torchrun): known before any set-up, so
    that settings that cannot work with it are refused before anything is downloaded."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup_runtime(device="auto", dtype="auto"):
    """Resolve device and precision; join the process group under torchrun (RANK is set)."""
    rank, local_rank, world_size = 0, 0, 1
    device = resolve_device(device)
    if "RANK" in os.environ:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        world_size = int(os.environ["WORLD_SIZE"])
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(device)
    device_type = device.split(":")[0]
    dtype, use_scaler = resolve_dtype(dtype, device_type, bf16_native(device_type))
    if device_type == "cuda":
        # TF32 matmuls for whatever still runs in float32: ~8x faster on Ampere+ at ~1e-3 precision.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device, device_type, dtype, use_scaler, rank, local_rank, world_size)


def print0(rt, *args, **kwargs):  # on rank 0 only
    if rt.is_main:
        print(*args, **kwargs, flush=True)


def keep_freed_memory():
    """Have glibc keep freed memory for reuse instead of returning it to the system, and serve
    large blocks from its heap. A training step frees and allocates the same large tensors every
    step (the gradients, 154 MB for GPT-2's token embedding alone); glibc gives any block over 32 MB
    back at once and maps it anew, and every page of it then faults on first touch: 19-22% of the
    CPU time of a 124M fine-tuning step on the reference CPU. Linux with glibc only; a no-op
    elsewhere. Memory stays at its peak, as a GPU's caching allocator keeps it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX: no block is mmap-ed on its own...
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: ...and the heap's free top is kept


@contextlib.contextmanager
def session(device="auto", dtype="auto"):
    """What every run does around its work: setup_runtime, keep_freed_memory on a CPU, and leaving
    the process group however the run ends."""
    rt = setup_runtime(device, dtype)
    if rt.device_type == "cpu":
        keep_freed_memory()
    try:
        yield rt
    finally:
        if rt.world_size > 1:
            # The DDP wrapper is freed by the garbage collector (it holds reference cycles); left to
            # the interpreter's exit, the communication work it holds aborts the process (SIGABRT,
            # "terminate called without an active exception", torch 2.13 with gloo). Free it now.
            gc.collect()
            dist.destroy_process_group()


def main_process_first(rt, fn):
    """fn() on rank 0, then on the other ranks once rank 0 is done: downloads and caches are written
    once. If rank 0 fails, the others stop too (not waiting at a barrier for torchrun's timeout)."""
    failed = None
    if rt.is_main:
        try:
            result = fn()
        except BaseException as e:
            failed = e
    if any_rank(rt, failed is not None):  # one process: the flag itself
        raise failed if failed is not None else UserError("rank 0 failed")
    if not rt.is_main:
        result = fn()
    return result


def any_rank(rt, flag):
    """True on every rank if flag is True on any: a decision all processes take together (a
    collective: every rank must call it)."""
    if rt.world_size == 1:
        return flag
    t = torch.tensor([int(flag)], device=rt.device if rt.device_type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def sum_over_ranks(rt, value):
    """The sum of a tensor over all processes (a collective: on the CPU for gloo, on the GPU for
    NCCL), on value's device."""
    if rt.world_size == 1:
        return value
    reduced = value.to(rt.device if rt.device_type == "cuda" else "cpu", copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(value.device)


def mean_over_ranks(rt, value):
    """The mean of a scalar tensor over all processes (a collective)."""
    return sum_over_ranks(rt, value) / rt.world_size


def peak_flops(rt):
    """The device's dense peak FLOP/s at the run's precision, for MFU, if we know it: bf16/fp16
    tensor cores, then TF32. None on CPU, MPS and unknown GPUs (bench.py measures a CPU's)."""
    if rt.device_type != "cuda":
        return None
    table = {"H100": (989e12, 495e12), "H200": (989e12, 495e12), "A100": (312e12, 156e12),
             "A10": (125e12, 62.5e12), "L4": (121e12, 60e12), "4090": (165e12, 82.6e12),
             "3090": (71e12, 35.6e12), "V100": (125e12, 15.7e12), "T4": (65e12, 8.1e12)}
    name = torch.cuda.get_device_name(rt.device)
    for key, (half, tf32) in table.items():
        if key in name:
            return half if rt.dtype != "float32" else tf32
    return None


def peak_memory(rt):
    """(bytes, what was measured): the GPU's peak allocation, or the process's peak RSS."""
    if rt.device_type == "cuda":
        return torch.cuda.max_memory_allocated(rt.device), "peak GPU memory allocated"
    try:
        import resource
    except ImportError:  # Windows
        return 0, "peak memory unknown"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss * (1 if sys.platform == "darwin" else 1024), "peak process memory (RSS)"


def maybe_compile(model, enabled, rt, trial, parts=None):
    """torch.compile the model (given parts: each of these submodules, in place, for any shape),
    or return it unchanged with a one-line warning if compiling fails. Compile errors only show at
    the first call, so trial(compiled) makes one, the RNG state kept."""
    if not enabled:
        return model
    # Dynamo traces through functools.lru_cache (fastpaths.py's cached masks), as wanted, but warns.
    warnings.filterwarnings("ignore", message=".*functools.lru_cache.*-wrapped function")
    if rt.device_type == "cpu":
        # On CPU, inductor writes the token embedding's gradient as a parallel scatter with atomic
        # adds: with two threads or more the order of the additions, and so the last bits of the
        # weights, change from run to run, and a resumed run stops being bit-identical to one never
        # stopped. In deterministic mode inductor keeps an ordered kernel (measured: no slower).
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        compiled = torch.compile(model) if parts is None else model
        for part in parts or ():
            part.compile(dynamic=True)
        with torch.random.fork_rng(devices=[rt.device] if rt.device_type == "cuda" else []):
            with rt.autocast():
                trial(compiled)
        return compiled
    except Exception as e:
        for part in parts or ():
            part._compiled_call_impl = None  # eager again
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        print0(rt, f"warning: torch.compile failed ({reason}); running eager")
        return model


# --------------------------------------------------------------------------------------------------
# Random state, for exact resume


def rng_state(rt):
    """Every rank's RNG state (a list, rank by rank): under DDP each rank draws its own dropout
    masks. A collective: all ranks must call it."""
    state = {"torch": torch.get_rng_state()}
    if rt.device_type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(rt.device)
    if rt.world_size == 1:
        return [state]
    states = [None] * rt.world_size
    dist.all_gather_object(states, {k: v.cpu() for k, v in state.items()})
    return states


def set_rng_state(rt, states):
    if len(states) != rt.world_size:
        print0(rt, f"warning: the checkpoint has the RNG state of {len(states)} processes, this "
                   f"run has {rt.world_size}: dropout masks will differ from an uninterrupted run")
        return
    state = states[rt.rank]
    torch.set_rng_state(state["torch"])
    if rt.device_type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], rt.device)


# --------------------------------------------------------------------------------------------------
# Stop signals


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM, the signal that Slurm, Kubernetes, systemd and `timeout` send
    before they kill a job, sets a flag; the loop finishes its step, saves last/ and exits. A second
    signal interrupts at once."""

    SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    def __init__(self, verbose=True):  # verbose on rank 0 only: torchrun signals every process
        self.reason, self.verbose = None, verbose  # reason: what was received, e.g. "Ctrl-C"

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.reason is not None:
            raise KeyboardInterrupt
        self.reason = self.SIGNALS[signum]
        if self.verbose:
            print(f"\n{self.reason}: finishing this step, saving last/ and stopping "
                  "(send it again to abort)", flush=True)

    @property
    def requested(self):
        return self.reason is not None

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

"""
Speed paths for one kind of hardware, swapped into a model that model.py built.

model.py computes GPT-2 one way: PyTorch's fused attention kernel, its GELU, plain nn.Linear layers.
Where one of those is measured to be slow on some hardware, a module (or the attention function) is
swapped for one that computes the same numbers faster, once, when the model is prepared:

    prepare_for_training(model, rt, compile)    train.py, before the first step
    prepare_for_inference(model, rt, compile)   sample.for_inference, after the dtype is set
    swap_modules(model, kind, make)             the mechanism (quantize.py's int8 layers use it too)

What each swap saves, and on which machine it was measured, is said where it is defined (the numbers
are in docs/results.md). None changes a result beyond float rounding; tests/test_inference.py and
tests/test_model.py check each against the plain model.
"""

import functools
import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from ring.runtime import maybe_compile

# --------------------------------------------------------------------------------------------------
# The mechanism


def swap_modules(model, kind, make):
    """Replace every submodule of type `kind` (or for which kind(module) is true) by make(module),
    in place; returns model."""
    matches = kind if not isinstance(kind, type) else (lambda module: isinstance(module, kind))
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if matches(child):
                setattr(module, name, make(child))
    return model


def swap_attention(model, attend):
    """Give every attention layer (each module with an `attend` function, model.CausalSelfAttention)
    another implementation of softmax(q k^T / sqrt(hs)) v."""
    for module in model.modules():
        if hasattr(module, "attend"):
            module.attend = attend


def prepare_for_training(model, rt, compile):
    """The swaps that pay for training on rt's hardware; returns model."""
    if rt.device_type == "cpu" and rt.dtype == "bfloat16":
        swap_attention(model, cpu_bf16_attention)
    if compile:
        swap_modules(model, nn.GELU, lambda gelu: CompilableGELU(gelu.approximate))
    return model


def prepare_for_inference(model, rt, compile, new_cache=None):
    """The swaps that pay for generation on rt's hardware (model already in its dtype); returns the
    model to call (compiled for decoding, with compile: new_cache() makes a KV cache)."""
    if rt.device_type == "cpu" and rt.dtype == "bfloat16":
        swap_attention(model, cpu_bf16_attention)
    if compile and hasattr(model, "lm_head"):
        return compile_for_decode(model, rt, new_cache)
    if rt.device_type == "cpu" and rt.dtype == "bfloat16":
        pack_for_cpu(model)
    return model


# --------------------------------------------------------------------------------------------------
# Attention on a CPU in bfloat16


@functools.lru_cache(maxsize=32)
def causal_bias(T, S, device, dtype):
    """The causal mask as numbers added to the scores: 0 where query i (at position S - T + i) may
    look, -inf where it may not. Made once per shape and kept (every layer of every step asks for
    it); an addition is cheaper than masked_fill, forward and backward."""
    allowed = torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)
    return torch.zeros(T, S, dtype=dtype, device=device).masked_fill(~allowed, float("-inf"))


def cpu_bf16_attention(q, k, v, dropout_p=0.0):
    """model.explicit_attention, made fast on a CPU in bf16.

    PyTorch's fused CPU kernel is slow in bf16: forward + backward 4x slower than two plain matmuls
    and a softmax at T=64, 1.5x at T=256 (torch 2.13 on an AVX-512-BF16 CPU), which ate the gain of
    bf16's faster matmuls. For one new query (generation with a KV cache) nothing is masked, and a
    product and a sum do the matmuls' arithmetic without the matmul kernel that oneDNN would build
    for every cache length (~50 us a layer)."""
    T, S = q.size(-2), k.size(-2)
    scale = 1.0 / math.sqrt(k.size(-1))
    if T == 1 and dropout_p == 0:
        att = (q * k).sum(-1, keepdim=True) * scale  # (B, nh, S, 1)
        return (F.softmax(att, dim=-2) * v).sum(-2, keepdim=True)  # (B, nh, 1, hs)
    att = (q @ k.transpose(-2, -1)) * scale + causal_bias(T, S, q.device, q.dtype)
    att = F.softmax(att, dim=-1)
    if dropout_p > 0:
        att = F.dropout(att, dropout_p)
    return att @ v


# --------------------------------------------------------------------------------------------------
# GELU under torch.compile


class CompilableGELU(nn.Module):
    """nn.GELU(approximate="tanh"), whose tanh the compiler turns into slow code on a CPU: under
    torch.compile the same function is written with a sigmoid, since 0.5 (1 + tanh z) = sigmoid(2 z)
    and the compiled exp is ~2.3x faster than the compiled tanh (GELU was 16% of a bf16 training
    step). Eager, it is PyTorch's own kernel."""

    def __init__(self, approximate="tanh"):
        super().__init__()
        assert approximate == "tanh", "GPT-2's GELU is the tanh approximation"

    def forward(self, x):
        if torch.compiler.is_compiling():
            z2 = 1.5957691216057308 * (x + 0.044715 * x * x * x)  # 2 z, with 2 sqrt(2 / pi)
            return x * torch.sigmoid(z2)
        return F.gelu(x, approximate="tanh")


# --------------------------------------------------------------------------------------------------
# Linear layers for generation: every weight is read once per token, so the speed of a token is the
# speed at which the layers read their weights.


class PackedLinear(nn.Module):
    """A bf16 nn.Linear for CPU generation, its weight reordered once into oneDNN's blocked layout.

    nn.Linear hands oneDNN the plain (out, in) weight, and oneDNN reorders it at every call; for one
    token that copy costs as much as the product itself (bf16 decode reached 31% of the memory
    roofline, 59-70% with packing and the one-query attention above, on an AVX-512-BF16 CPU). The
    two ops are PyTorch's own (torch.ops.mkldnn), but private, and need AVX-512 (or AVX-NE-CONVERT)
    for bf16: pack_for_cpu keeps plain layers where they are missing."""

    def __init__(self, linear):
        super().__init__()
        packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1)
        self.register_buffer("packed", packed)
        self.bias = linear.bias

    def forward(self, x):
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


@functools.cache
def can_pack():
    """Can oneDNN pack bf16 weights on this CPU? Tried once on a small layer."""
    ops = torch.ops.mkldnn
    if not (torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
            and hasattr(ops, "_linear_pointwise")):
        return False
    try:
        PackedLinear(nn.Linear(16, 16).to(torch.bfloat16))(torch.zeros(1, 16, dtype=torch.bfloat16))
        return True
    except RuntimeError:  # "bf16 path needs the cpu support avx_ne_convert or avx512bw, ..."
        return False


def pack_for_cpu(model):
    """Every nn.Linear of a bf16 model on a CPU as a PackedLinear (in place), where oneDNN can do
    it; returns whether it did."""
    if not can_pack():
        return False
    swap_modules(model, nn.Linear, PackedLinear)
    return True


class RowDotLinear(nn.Module):
    """For a compiled decode: one row x times W as elementwise products summed along each row of W,
    a loop that torch.compile (inductor) turns into one pass over the weights at memory speed, where
    MKL's matrix-vector product reads them at half that on CPUs it does not tune for (AMD's: 16
    against 38 GB/s). Several rows (the prompt) still go through the ordinary product."""

    def __init__(self, linear):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x):
        if x.shape[:-1].numel() != 1 or not torch.compiler.is_compiling():
            return F.linear(x, self.weight, self.bias)
        y = (self.weight * x.unsqueeze(-2)).sum(-1)  # (..., 1, in) * (out, in) -> (..., out)
        return y if self.bias is None else y + self.bias


class RowDotInt8Linear(nn.Module):
    """RowDotLinear for int8 weight-only layers (quantize.Int8Linear: int8 rows, a scale each): the
    compiled loop converts each int8 weight as it reads it, so a token reads 1 byte a weight instead
    of the 4 of float32 (PyTorch's int8 kernel is for bf16 activations, and compute-bound). Several
    rows go through the layer's own product."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        if x.shape[:-1].numel() != 1 or not torch.compiler.is_compiling():
            return self.layer(x)
        q, scale, bias = self.layer.qweight, self.layer.scale, self.layer.bias
        y = (q.to(x.dtype) * x.unsqueeze(-2)).sum(-1) * scale.to(x.dtype)  # (..., out)
        return y if bias is None else y + bias


def compile_for_decode(model, rt, new_cache):
    """model with RowDotLinear (and RowDotInt8Linear) layers, its blocks and its head compiled, or
    model as it was (one-line warning) if compiling fails. Each block is compiled, not the whole
    model: the blocks are one function of their weights, so inductor compiles it once for all of
    them, and for every model of the process, instead of once per layer. A prompt and a one-token
    step are two graphs, each for any length (dynamic shapes); new_cache() makes a KV cache for the
    trial that compiles them."""
    import torch._dynamo.config as dynamo
    import torch._inductor.config as inductor

    # Without this, inductor recomputes each LayerNorm inside the matrix-vector loop that reads it.
    inductor.realize_reads_threshold = 1
    dynamo.recompile_limit = max(dynamo.recompile_limit, 64)  # two graphs per shape of model
    swap_modules(model, nn.GELU, lambda gelu: CompilableGELU(gelu.approximate))
    swap_modules(model, nn.Linear, RowDotLinear)
    swap_modules(model, lambda m: hasattr(m, "qweight") and hasattr(m, "scale"), RowDotInt8Linear)

    def trial(model):
        cache = new_cache()
        with torch.no_grad():  # a prompt of 2 tokens, then 1 token
            for n in (2, 1):
                model(torch.zeros(1, n, dtype=torch.long, device=rt.device), kv_cache=cache)

    return maybe_compile(model, True, rt, trial, parts=[*model.transformer.h, model.lm_head])

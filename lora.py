"""
Fine-tuning less than the whole model: freezing blocks, and LoRA.

LoRA ("LoRA: Low-Rank Adaptation of Large Language Models", Hu et al. 2021). Fine-tuning changes
each weight matrix W by some dW. LoRA bets that dW has low rank and learns it as a product B A of
two thin matrices, leaving W frozen. For GPT-2's c_fc (768 -> 3072) at rank 8 that is 8 * (768 +
3072) = 30,720 trained numbers instead of 2.4M, and the optimizer keeps state for those only. Once
trained, B A is added into W ("merged"): the result is an ordinary model, so checkpoints hold plain
weights and load, sample and export like any other, with no LoRA code needed to use them.

finetune.py uses it for classification and generation alike; each save merges, and the unmerged
weights go to train_state.pt, so a LoRA run resumes exactly.
"""

import copy
import math

import torch
import torch.nn as nn


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update:  y = x W^T + b + (alpha / r) x A^T B^T.

    A (r, in) starts random and B (out, r) at zero, so at the first step the model is exactly the
    pretrained one. Dividing by r keeps the update's size comparable across ranks, so alpha need not
    be re-tuned when r changes."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base = base.requires_grad_(False)
        like = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **like))  # (r, in)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's init, as in the paper
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **like))  # (out, r)
        self.scale = alpha / rank

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scale

    def merged(self):
        """The plain nn.Linear that computes the same thing: W + (alpha / r) B A."""
        linear = copy.deepcopy(self.base)
        with torch.no_grad():
            linear.weight += self.scale * (self.lora_B @ self.lora_A)
        return linear


def add_lora(block, rank, alpha):
    """Wrap a block's four projections (attention in and out, MLP in and out) in LoRALinear."""
    block.attn.c_attn = LoRALinear(block.attn.c_attn, rank, alpha)
    block.attn.c_proj = LoRALinear(block.attn.c_proj, rank, alpha)
    block.mlp.c_fc = LoRALinear(block.mlp.c_fc, rank, alpha)
    block.mlp.c_proj = LoRALinear(block.mlp.c_proj, rank, alpha)


def choose_trainable(model, freeze, lora_rank, lora_alpha):
    """Decide what trains, and return it as one line of text.

    - everything (freeze -1, lora_rank 0): full fine-tuning;
    - freeze N: ln_f (the LayerNorm below the head) and the last N blocks; N = 0 trains ln_f only;
    - lora_rank R: LoRA's A and B in every block (or in the last N with freeze N), nothing else.
    A classifier's head (`score`) always trains: it is new. A language model's head is the token
    embedding (tied), which stays frozen with the rest."""
    blocks = list(model.transformer.h)
    head = getattr(model, "score", None)
    if freeze < 0 and lora_rank == 0:
        return "everything (full fine-tuning)"
    tuned = blocks[len(blocks) - min(freeze, len(blocks)) :] if freeze >= 0 else blocks
    model.requires_grad_(False)
    if head is not None:
        head.requires_grad_(True)
    also = "the head + " if head is not None else ""
    if lora_rank:
        for block in tuned:
            add_lora(block, lora_rank, lora_alpha)
        return (f"{also}LoRA rank {lora_rank} (alpha {lora_alpha:g}) in {len(tuned)} of "
                f"{len(blocks)} blocks")
    model.transformer.ln_f.requires_grad_(True)
    for block in tuned:
        block.requires_grad_(True)
    return f"{also}ln_f and the last {len(tuned)} of {len(blocks)} blocks"


def has_lora(model):
    return any(isinstance(m, LoRALinear) for m in model.modules())


def merged_copy(model):
    """A copy of model with every LoRALinear merged into a plain nn.Linear: the model that gets
    saved. A copy, so training continues on the unmerged model (merging in place and subtracting
    again would not give back the same bits)."""
    plain = copy.deepcopy(model)
    for module in list(plain.modules()):
        for name, child in module.named_children():
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    return plain


def lora_state(model):
    """The weights that only the unmerged model has (frozen bases, A and B), for train_state.pt:
    resuming continues from them exactly."""
    return {k: v for k, v in model.state_dict().items() if ".base." in k or ".lora_" in k}

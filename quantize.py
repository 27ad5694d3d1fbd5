"""
Weight-only int8 quantization for generation, from first principles.

Generating a token reads every weight once, so its speed is set by how many bytes the weights take:
4 a weight in float32, 2 in bfloat16, 1 in int8. Weight-only quantization stores each weight matrix
as int8 plus one floating-point scale per output row, and keeps the activations in floating point.

For the row w of one output channel, the scale s = max|w| / 127 maps its largest weight to 127:

    q = round(w / s)      integers in [-127, 127], stored as int8
    w ~ s q               each weight is off by at most s / 2

One scale per row, not one per matrix: rows differ in size, and one scale for all of them would
leave the small rows only a few of the 255 levels.

The scale of a row multiplies every term of its output, y_j = sum_i x_i w_ji ~ s_j sum_i x_i q_ji,
so the product can run on the int8 weights and be scaled afterwards: y = (x @ q^T) * s. PyTorch's
CPU kernel _weight_int8pack_mm does that for bf16 activations; the reference form below converts q
on the fly (a compiled decode reads it at memory speed: ring/fastpaths.RowDotInt8Linear).
"""

import torch
import torch.nn as nn

from ring.fastpaths import swap_modules


def quantize_rows(weight):
    """(int8 weights, float32 scale per row) of a (out, in) weight matrix."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127  # (out,); a row of zeros keeps scale > 0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (out, in)
    return q, scale


class Int8Linear(nn.Module):
    """An nn.Linear whose weight is stored as int8 rows with a scale each: y = (x @ q^T) * s + b."""

    def __init__(self, linear):
        super().__init__()
        q, scale = quantize_rows(linear.weight)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)  # follows the model's dtype when it is converted
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x):
        rows = x.reshape(-1, self.in_features)  # (N, in): every position of every sequence
        if self.fused_kernel_applies(rows):
            y = torch._weight_int8pack_mm(rows, self.qweight, self.scale.to(x.dtype))
        else:
            y = (rows @ self.qweight.t().to(x.dtype)) * self.scale.to(x.dtype)  # the reference form
        y = y.view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def fused_kernel_applies(self, rows):
        """The CPU kernel is fast for bf16 activations (about 3x the reference form; for float32 it
        is slower than it) and, in torch 2.13, crashes for two or more rows when in_features is not
        a multiple of 16, so it is used only where it is safe and pays."""
        return (rows.device.type == "cpu" and rows.dtype == torch.bfloat16
                and self.in_features % 16 == 0 and hasattr(torch, "_weight_int8pack_mm"))


def quantize_int8(model):
    """Every nn.Linear of model as an Int8Linear, in place; returns model. The token embedding stays
    in floating point (a lookup reads one row of it per token), so the language-model head, which
    shares its weight, gets an int8 copy of its own."""
    return swap_modules(model, nn.Linear, Int8Linear)

"""GPT-2's numerics, each on its own and independent of the model's size: the tanh GELU, LayerNorm's
eps of 1e-5 (in every block and in ln_f), and the ring's sigmoid form of the GELU. In float64, so
that the tolerances are far below the differences a wrong choice makes."""

import math

import pytest
import torch
from torch.nn import functional as F

from model import GPT, MLP, Block, GPTClassifier
from ring.fastpaths import CompilableGELU
from conftest import tiny_config


def tanh_gelu(x):
    """GPT-2's GELU, as OpenAI's code writes it."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def erf_gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


X = torch.linspace(-4, 4, 801, dtype=torch.float64)


def test_the_two_gelus_differ_where_the_inputs_are():
    assert (tanh_gelu(X) - erf_gelu(X)).abs().max() > 1e-4  # the gap the tests below can see


def test_the_mlp_uses_the_tanh_gelu():
    mlp = MLP(tiny_config()).double()
    assert (mlp.gelu(X) - tanh_gelu(X)).abs().max() < 1e-12
    # and the whole MLP: widen, GELU, project, on inputs whose pre-activations span [-4, 4]
    with torch.no_grad():
        mlp.c_fc.weight.normal_(std=0.4)
        mlp.c_proj.weight.normal_(std=1.0)
    x = torch.randn(64, 16, dtype=torch.float64)
    hidden = F.linear(x, mlp.c_fc.weight, mlp.c_fc.bias)
    assert 2 < hidden.abs().max() < 20
    project = lambda h: F.linear(h, mlp.c_proj.weight, mlp.c_proj.bias)
    with torch.no_grad():
        got = mlp(x)
    assert (got - project(tanh_gelu(hidden))).abs().max() < 1e-10
    assert (got - project(erf_gelu(hidden))).abs().max() > 1e-4


def test_the_compiled_forms_sigmoid_is_the_tanh_gelu(monkeypatch):
    gelu = CompilableGELU("tanh")
    assert (gelu(X) - tanh_gelu(X)).abs().max() < 1e-12  # eager: PyTorch's kernel
    # Under torch.compile it computes x sigmoid(2 z) instead; the same function, to rounding.
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    wide = torch.linspace(-8, 8, 1601, dtype=torch.float64)
    assert (gelu(wide) - tanh_gelu(wide)).abs().max() < 1e-12
    assert (gelu(X.float()) - tanh_gelu(X).float()).abs().max() < 1e-6


def layer_norm(x, ln, eps):
    """LayerNorm written out: (x - mean) / sqrt(biased variance + eps), then gain and bias."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * ln.weight + ln.bias


def with_random_layer_norms(model):
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.split(".")[-1] in ("ln_1", "ln_2", "ln_f"):
                module.weight.normal_(1.0, 0.5)
                module.bias.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize("kind", [GPT, GPTClassifier])
def test_every_layer_norm_has_eps_1e_5(kind):
    config = tiny_config(n_layer=3, n_classes=2 if kind is GPTClassifier else 0)
    model = with_random_layer_norms(kind(config)).double()
    norms = {n: m for n, m in model.named_modules() if n.split(".")[-1] in ("ln_1", "ln_2", "ln_f")}
    assert len(norms) == 2 * config.n_layer + 1
    # a variance of 1e-6, where eps 1e-5 and 1e-6 give outputs 2.3x apart
    x = 3.0 + 1e-3 * torch.randn(4, 7, config.n_embd, dtype=torch.float64)
    for name, ln in norms.items():
        with torch.no_grad():
            got = ln(x)
        assert (got - layer_norm(x, ln, 1e-5)).abs().max() < 1e-10, name
        assert (got - layer_norm(x, ln, 1e-6)).abs().max() > 0.1, name


def test_a_block_is_pre_norm_with_those_layer_norms():
    block = with_random_layer_norms(torch.nn.ModuleDict({"b": Block(tiny_config())}))["b"].double()
    x = 1.0 + 1e-3 * torch.randn(2, 9, 16, dtype=torch.float64)  # tiny variance: eps matters
    with torch.no_grad():
        h = x + block.attn(layer_norm(x, block.ln_1, 1e-5))
        expected = h + block.mlp(layer_norm(h, block.ln_2, 1e-5))
        assert (block(x) - expected).abs().max() < 1e-10


def test_the_final_layer_norm_comes_after_the_embeddings_with_eps_1e_5():
    # No blocks: the hidden state is ln_f(token embedding + position embedding), whose variance is
    # about 8e-4 at GPT-2's init, so eps 1e-5 against 1e-6 changes it by about 0.5%.
    model = with_random_layer_norms(GPT(tiny_config(n_layer=0))).double()
    idx = torch.randint(0, 37, (2, 16))
    x = model.transformer.wte.weight[idx] + model.transformer.wpe.weight[:16]
    with torch.no_grad():
        got = model.hidden_states(idx)
        assert (got - layer_norm(x, model.transformer.ln_f, 1e-5)).abs().max() < 1e-10
        assert (got - layer_norm(x, model.transformer.ln_f, 1e-6)).abs().max() > 1e-3
        logits, _ = model(idx, targets=idx)
        assert (logits - got @ model.transformer.wte.weight.t()).abs().max() < 1e-10  # tied head

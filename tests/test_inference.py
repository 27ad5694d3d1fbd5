"""Generation's fast paths: int8 weights (quantize.py), oneDNN-packed bf16 layers, a compiled decode."""

import copy

import pytest
import torch

import sample
import train
from data import tokenizer_from_dict
from evaluate import language_model_loss
from model import GPT, KVCache, GPTClassifier
from train import load_model
from quantize import Int8Linear, quantize_rows
from ring import fastpaths
from ring.checkpoint import save_checkpoint
from ring.runtime import setup_runtime
from conftest import tiny_config
from test_train import tiny_run


@pytest.mark.parametrize("shape", [(32, 24), (32, 32)])  # square: per-column scales would fit too
def test_int8_rows_are_within_half_a_step_and_the_product_factors_the_scale(shape):
    torch.manual_seed(0)
    linear = torch.nn.Linear(*shape)
    linear.weight.data[3] *= 50  # one large row: per-row scales keep the others precise
    linear.weight.data[:, 5] *= 20  # and one large column, which must not set any scale
    q, scale = quantize_rows(linear.weight)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    torch.testing.assert_close(scale, linear.weight.abs().amax(dim=1) / 127, atol=0, rtol=1e-6)
    assert (q.abs().amax(dim=1) == 127).all()  # every row's largest weight gets the largest level
    error = (linear.weight - scale[:, None] * q.float()).abs()
    assert (error <= scale[:, None] / 2 + 1e-7).all()
    x = torch.randn(5, 7, shape[0])
    dequantized = torch.nn.functional.linear(x, scale[:, None] * q.float(), linear.bias)
    torch.testing.assert_close(Int8Linear(linear)(x), dequantized, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(64, 48), (64, 64)])
def test_the_fused_int8_kernel_agrees_with_the_reference_form(shape):
    torch.manual_seed(0)
    linear = torch.nn.Linear(*shape)
    linear.weight.data[3] *= 50
    int8 = Int8Linear(linear).to(torch.bfloat16)
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    assert int8.fused_kernel_applies(x)
    reference = (x.float() @ int8.qweight.float().t()) * int8.scale.float() + int8.bias.float()
    torch.testing.assert_close(int8(x).float(), reference, atol=0.05, rtol=0.02)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small character-level model trained for a few hundred steps: (checkpoint, held-out text)."""
    tmp = tmp_path_factory.mktemp("trained")
    train.main(tiny_run(tmp, n_layer=2, n_embd=64, block_size=64, batch_size=16, dropout=0.0,
                        max_iters=300, lr_decay_iters=300, eval_interval=300, learning_rate=3e-3))
    return tmp / "out", (tmp / "text.txt").read_text()[-3000:]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_int8_perplexity_is_within_one_percent(trained, dtype):
    checkpoint, text = trained
    perplexity = {}
    for quantize in ("", "int8"):
        model, info = load_model(checkpoint)
        model = sample.for_inference(model, setup_runtime("cpu", dtype), quantize)
        ids = tokenizer_from_dict(info.tokenizer).encode(text)
        perplexity[quantize] = torch.tensor(language_model_loss(model, ids, 8, "cpu")[0]).exp().item()
    assert perplexity[""] < 3  # it learned: these are not random weights
    assert abs(perplexity["int8"] / perplexity[""] - 1) < 0.01


def test_packed_bf16_layers_compute_what_plain_ones_do():
    model = GPT(tiny_config()).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(std=0.5)  # every bias is zero at init: a dropped one would not show
    model.to(torch.bfloat16)
    idx = torch.randint(0, 37, (2, 9))
    with torch.no_grad():
        plain, _ = model(idx, targets=idx)
        if not fastpaths.pack_for_cpu(model):
            pytest.skip("this PyTorch has no oneDNN linear packing")
        assert any(isinstance(m, fastpaths.PackedLinear) for m in model.modules())
        packed, _ = model(idx, targets=idx)
        one, _ = model(idx[:, :1])  # one row: the shape of a decode step
    torch.testing.assert_close(packed.float(), plain.float(), atol=0.02, rtol=0.01)
    torch.testing.assert_close(one[:, -1].float(), plain[:, 0].float(), atol=0.02, rtol=0.01)


def test_sample_with_int8_weights(trained, capsys):
    checkpoint, _ = trained
    sample.main(["--out_dir", str(checkpoint), "--quantize", "int8", "--start", "the ", "--max_new_tokens",
                 "20", "--temperature", "0", "--device", "cpu", "--dtype", "bfloat16"])
    assert capsys.readouterr().out.startswith("the ")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_classify_with_int8_weights(tmp_path, capsys, dtype):
    # A tiny classifier with a head large enough that its probabilities are far from uniform: the
    # int8 copy (every Linear, the head included) must give nearly the same ones.
    model = GPTClassifier(tiny_config(vocab_size=50257, n_classes=3, block_size=32))
    with torch.no_grad():
        model.score.weight.normal_(std=0.3)
        model.transformer.wte.weight.mul_(10)  # texts that differ more than the biases below
        for name, p in model.named_parameters():
            if name.endswith(".bias") and ".c_" in name:  # the Linear layers' biases
                p.normal_(std=0.05)  # zero at init, where a dropped bias would not show
    save_checkpoint(tmp_path / "cls", model, {"task": "cls", "labels": ["a", "b", "c"],
                                              "tokenizer": {"type": "gpt2"}})
    texts = ["a first text", "the second one, a little longer than the first", "3", "four four"]

    def probabilities(*options):
        sample.main(["--out_dir", str(tmp_path / "cls"), *[a for t in texts for a in ("--text", t)],
                     "--device", "cpu", *options])
        lines = capsys.readouterr().out.splitlines()
        return [float(p) for line in lines for p in line.split("[")[1].split("]")[0].split()[1::2]]

    plain = probabilities("--dtype", "float32")
    int8 = probabilities("--dtype", dtype, "--quantize", "int8")
    assert len(plain) == 3 * len(texts) and 0.6 < max(plain) < 0.99  # far from uniform, not 0/1
    assert int8 == pytest.approx(plain, abs=0.015 if dtype == "bfloat16" else 0.01)
    quantized, _, _ = sample.load(tmp_path / "cls", setup_runtime("cpu", dtype), "int8")
    assert isinstance(quantized.score, Int8Linear) and not any(
        isinstance(m, torch.nn.Linear) for m in quantized.modules())


def test_a_decode_that_fails_to_compile_falls_back_to_eager(monkeypatch, capsys):
    def failing(model, *args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", failing)
    model = GPT(tiny_config()).eval()
    prompt = torch.zeros(1, 3, dtype=torch.long)
    expected = sample.generate(model, prompt, 5, temperature=0)
    fast = fastpaths.compile_for_decode(model, setup_runtime("cpu", "float32"),
                                        lambda: KVCache(model.config.n_layer))
    assert "torch.compile failed (RuntimeError: no C++ compiler); running eager" in capsys.readouterr().out
    assert torch.equal(sample.generate(fast, prompt, 5, temperature=0), expected)  # row-dot layers


def test_the_row_dot_layers_of_the_compiled_decode_compute_the_layers_they_replace(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # their compiled form, eager
    torch.manual_seed(0)
    dense = torch.nn.Linear(24, 40)
    torch.nn.init.normal_(dense.bias)
    int8 = Int8Linear(dense)
    for plain, fast in ((dense, fastpaths.RowDotLinear(dense)),
                        (int8, fastpaths.RowDotInt8Linear(int8))):
        for x in (torch.randn(1, 1, 24), torch.randn(2, 3, 24)):  # one row (decode), several
            with torch.no_grad():
                torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)


def test_a_compiled_decode_compiles_each_graph_once_for_every_layer_length_and_model(caplog):
    # The blocks are compiled, not the model: one graph serves every layer of every model of a
    # shape, whatever the prompt's length and the number of new tokens.
    from torch._dynamo.utils import counters

    rt = setup_runtime("cpu", "float32")
    graphs = counters["stats"]["unique_graphs"]
    for seed in (0, 1):  # two models of one shape, each with 4 layers
        torch.manual_seed(seed)
        eager = GPT(tiny_config(n_layer=4, block_size=64)).eval()
        fast = sample.for_inference(copy.deepcopy(eager), rt, compile=True)
        for length, new in ((1, 5), (3, 20), (17, 9), (40, 30)):  # 40 + 30 > block_size
            prompt = torch.randint(0, 37, (1, length))
            assert torch.equal(sample.generate(fast, prompt, new, temperature=0),
                               sample.generate(eager, prompt, new, temperature=0))
    assert counters["stats"]["unique_graphs"] - graphs <= 8  # not one a layer, model or length
    assert "recompile_limit" not in caplog.text

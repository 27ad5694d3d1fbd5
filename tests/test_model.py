"""The model's behaviour: causality, the KV cache, sampling, init and learning."""

import math

import pytest
import torch

from model import GPT, KVCache, crop_block_size, explicit_attention
from sample import generate, sample_next_token
from conftest import tiny_config


def test_changing_a_future_token_leaves_earlier_logits_unchanged():
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 37, (2, 12))
    changed = idx.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 37
    with torch.no_grad():
        a, _ = model(idx, targets=idx)
        b, _ = model(changed, targets=changed)
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_kv_cache_logits_match_full_recomputation():
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 37, (3, 16))
    with torch.no_grad():
        full, _ = model(idx, targets=idx)  # logits at every position
        cache = KVCache(model.config.n_layer)
        first, _ = model(idx[:, :5], kv_cache=cache)  # prefill 5 tokens
        steps = [first[:, -1]]
        chunk, _ = model(idx[:, 5:8], kv_cache=cache)  # several tokens after a cached prefix
        steps.append(chunk[:, -1])
        for t in range(8, 16):  # then one at a time
            logits, _ = model(idx[:, t : t + 1], kv_cache=cache)
            steps.append(logits[:, -1])
    expected = [full[:, 4], full[:, 7]] + [full[:, t] for t in range(8, 16)]
    for got, want in zip(steps, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def naive_greedy(model, idx, n):
    """What generate must equal: re-run the model on the last block_size tokens for every new token."""
    for _ in range(n):
        logits, _ = model(idx[:, -model.config.block_size :])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize("new_tokens", [5, 40])  # 40 goes well past block_size (16)
def test_greedy_generation_with_cache_equals_without(new_tokens):
    model = GPT(tiny_config()).eval()
    prompt = torch.randint(0, 37, (2, 6))
    with_cache = generate(model, prompt, new_tokens, temperature=0)
    without = generate(model, prompt, new_tokens, temperature=0, use_cache=False)
    assert torch.equal(with_cache, naive_greedy(model, prompt, new_tokens))
    assert torch.equal(without, with_cache)


def test_sampling_is_reproducible_with_a_seeded_generator():
    model = GPT(tiny_config()).eval()
    prompt = torch.zeros(1, 1, dtype=torch.long)
    a = generate(model, prompt, 20, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(7))
    b = generate(model, prompt, 20, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_generation_stops_at_the_stop_token():
    # Two different prompts, sampled: with a stop token, each row is the free-running one up to its
    # first stop token, then padded with it, and generation ends once every row has produced it.
    # (The same seed gives the same draws: every step samples all rows, finished or not.)
    model = GPT(tiny_config()).eval()
    prompt = torch.tensor([[1, 2, 3], [20, 30, 5]])
    seeded = lambda: torch.Generator().manual_seed(7)
    free = generate(model, prompt, 30, temperature=1.0, generator=seeded())[:, 3:].tolist()
    # a token that row 0 produces before row 1 does, and not as its first token
    stop, i, j = next((t, i, free[1].index(t)) for i, t in enumerate(free[0])
                      if i > 0 and t not in free[0][:i] and t in free[1][i + 1 :])
    assert free[0][i + 1 :] != [stop] * (29 - i)  # left alone, row 0 goes on with other tokens
    out = generate(model, prompt, 30, temperature=1.0, stop_token=stop, generator=seeded())
    assert out.shape == (2, 3 + j + 1)  # row 1 finished last, at step j + 1
    assert out[:, :3].tolist() == prompt.tolist()
    assert out[0, 3:].tolist() == free[0][: i + 1] + [stop] * (j - i)  # padded after step i + 1
    assert out[1, 3:].tolist() == free[1][: j + 1]


def test_top_k_and_top_p_restrict_the_candidates():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    top2 = {sample_next_token(logits, 1.0, top_k=2, generator=g).item() for _ in range(200)}
    assert top2 == {0, 1}
    # softmax: 0.636, 0.234, 0.086, ... -> the smallest set reaching 0.8 is the first two tokens
    nucleus = {sample_next_token(logits, 1.0, top_p=0.8, generator=g).item() for _ in range(200)}
    assert nucleus == {0, 1}
    assert sample_next_token(logits, 0.0).item() == 0  # greedy


def test_loss_at_init_is_close_to_uniform():
    model = GPT(tiny_config(vocab_size=65, n_embd=32))
    idx = torch.randint(0, 65, (8, 16))
    # targets unrelated to the inputs: with tied embeddings, target == input would be favoured at init
    targets = torch.randint(0, 65, (8, 16))
    _, loss = model(idx, targets=targets)
    assert abs(loss.item() - math.log(65)) < 0.1


def test_residual_projections_have_scaled_init():
    model = GPT(tiny_config(n_layer=8, n_embd=64))
    std = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(16)) < 0.001
    assert model.lm_head.weight is model.transformer.wte.weight  # tied


def test_a_tiny_model_overfits_a_tiny_text():
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=10, n_embd=32))
    data = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8]])
    x, y = data[:, :-1], data[:, 1:]
    opt = model.configure_optimizer(0.0, 3e-3, (0.9, 0.99), "cpu")
    for _ in range(150):
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.05


def test_weight_decay_only_on_matmul_weights():
    model = GPT(tiny_config())
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params(non_embedding=False)


def test_crop_block_size_keeps_the_first_positions():
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 37, (1, 8))
    before, _ = model(idx, targets=idx)
    crop_block_size(model, 8)
    after, _ = model(idx, targets=idx)
    assert model.transformer.wpe.weight.shape[0] == 8
    torch.testing.assert_close(before, after)


@pytest.mark.parametrize("T, S", [(7, 7), (1, 9), (3, 10)])  # no cache; one new token; several after a prefix
def test_explicit_attention_equals_pytorchs_kernel(T, S):
    # The written-out attention (used on CPU under bf16) computes what scaled_dot_product_attention does.
    q, k, v = torch.randn(2, 3, T, 8), torch.randn(2, 3, S, 8), torch.randn(2, 3, S, 8)
    mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(explicit_attention(q, k, v), expected, atol=1e-6, rtol=1e-5)


def scaled_up_model():
    """A tiny GPT with weights 25x GPT-2's init and random biases: logits of a few units and sharp
    attention, so that an error in bf16's code paths stands out from bf16's rounding."""
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.mul_(25)
            elif name.endswith("bias"):
                p.normal_(std=0.5)
    return model


def test_bf16_autocast_on_cpu_matches_float32_closely():
    from torch.nn.functional import scaled_dot_product_attention
    from ring import fastpaths
    from ring.runtime import setup_runtime

    idx = torch.randint(0, 37, (2, 16))
    bf16 = setup_runtime("cpu", "bfloat16")
    with torch.no_grad():
        full, _ = scaled_up_model()(idx, targets=idx)
        tolerance = 0.03 * full.abs().max()  # bf16 keeps 8 bits: about 1% here
        # what the tolerance must see: attention without the causal mask is off by far more
        unmasked = scaled_up_model()
        no_mask = lambda q, k, v, dropout_p=0.0: scaled_dot_product_attention(q, k, v)
        fastpaths.swap_attention(unmasked, no_mask)
        assert (unmasked(idx, targets=idx)[0] - full).abs().max() > 10 * tolerance
        # autocast alone, and as train.py runs it on a CPU (the ring's bf16 attention swapped in)
        for swaps in (False, True):
            model = scaled_up_model()
            if swaps:
                fastpaths.prepare_for_training(model, bf16, compile=False)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                half, _ = model(idx, targets=idx)
            assert (half.float() - full).abs().max() < tolerance
        # generation as sample.py runs it: bf16 weights, the ring's swaps, a KV cache filled by a
        # prompt, then several tokens, then one at a time
        model = fastpaths.prepare_for_inference(scaled_up_model().to(torch.bfloat16), bf16, False)
        cache = KVCache(model.config.n_layer)
        chunks = [(0, 5), (5, 8), *((t, t + 1) for t in range(8, 16))]
        steps = [model(idx[:, a:b], kv_cache=cache)[0][:, -1] for a, b in chunks]
    expected = full[:, [4, 7, *range(8, 16)]]
    assert (torch.stack(steps, dim=1).float() - expected).abs().max() < tolerance

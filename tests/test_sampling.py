"""Sampling, pinned down exactly: the distribution sample_next_token draws from (temperature,
top-k, top-p and their boundaries) and generate's stop token (each row padded once it finished)."""

import pytest
import torch

from model import GPTConfig
from sample import generate, next_token_probs, sample_next_token

# Probabilities that are exact in float32 (softmax of their logs gives them back bit for bit), in
# an order that is not the ranking: token 3 (1/2), 1 (1/4), 4 (1/8), 2 (3/32), 0 (1/32). The mass
# of the tokens ranked above each: 0, 1/2, 3/4, 7/8, 31/32.
P = torch.tensor([[1 / 32, 1 / 4, 3 / 32, 1 / 2, 1 / 8]])
LOGITS = P.log()
RANKED = [3, 1, 4, 2, 0]


def kept(probs):
    return set(torch.nonzero(probs[0]).flatten().tolist())


def test_the_probabilities_are_exact_so_the_boundaries_below_are_exact():
    assert torch.equal(next_token_probs(LOGITS), P)


@pytest.mark.parametrize("top_p, n_kept", [
    (0.0, 1),  # top_p 0 keeps the most likely token: greedy
    (0.3, 1),
    (0.5, 1),  # the first token alone reaches 1/2: the smallest set is {3}
    (0.5001, 2),
    (0.75, 2),  # exactly reached by two tokens: not a third
    (0.7501, 3),
    (0.875, 3),
    (0.96875, 4),
    (0.97, 5),
    (1.0, 5),
])
def test_top_p_keeps_the_smallest_set_whose_probability_reaches_it(top_p, n_kept):
    probs = next_token_probs(LOGITS, 1.0, top_p=top_p)
    assert kept(probs) == set(RANKED[:n_kept])
    expected = torch.zeros_like(P)
    expected[0, RANKED[:n_kept]] = P[0, RANKED[:n_kept]] / P[0, RANKED[:n_kept]].sum()
    torch.testing.assert_close(probs, expected, atol=1e-7, rtol=0)  # renormalised over the kept


@pytest.mark.parametrize("top_k, n_kept", [(1, 1), (2, 2), (4, 4), (5, 5), (50, 5), (0, 5),
                                           (None, 5)])
def test_top_k_keeps_the_k_most_likely_tokens(top_k, n_kept):
    probs = next_token_probs(LOGITS, 1.0, top_k=top_k)
    assert kept(probs) == set(RANKED[:n_kept])
    expected = torch.zeros_like(P)
    expected[0, RANKED[:n_kept]] = P[0, RANKED[:n_kept]] / P[0, RANKED[:n_kept]].sum()
    torch.testing.assert_close(probs, expected, atol=1e-7, rtol=0)


def test_top_p_applies_to_what_top_k_left():
    # top_k 3 leaves 4/7, 2/7, 1/7: the first two reach 0.8 (6/7). Over the full distribution the
    # first two hold only 3/4, so top_p on it would keep a third token.
    probs = next_token_probs(LOGITS, 1.0, top_k=3, top_p=0.8)
    torch.testing.assert_close(probs[0, [3, 1]], torch.tensor([2 / 3, 1 / 3]))
    assert kept(probs) == {3, 1}


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 3.0])
def test_temperature_raises_the_probabilities_to_the_power_one_over_it(temperature):
    # softmax(log p / T) is proportional to p^(1 / T): T < 1 sharpens, T > 1 flattens
    expected = P ** (1 / temperature) / (P ** (1 / temperature)).sum()
    torch.testing.assert_close(next_token_probs(LOGITS, temperature), expected, atol=1e-6, rtol=0)
    # and the cuts are made on the tempered distribution: at T = 0.5 the top token has 256/346
    if temperature == 0.5:
        assert kept(next_token_probs(LOGITS, temperature, top_p=0.7)) == {3}
        assert kept(next_token_probs(LOGITS, 1.0, top_p=0.7)) == {3, 1}


def test_each_row_gets_its_own_cut():
    logits = torch.cat([LOGITS, LOGITS.flip(-1)])  # the second row ranks the tokens in reverse
    top_k = next_token_probs(logits, 1.0, top_k=2)
    assert [set(torch.nonzero(row).flatten().tolist()) for row in top_k] == [{3, 1}, {1, 3}]
    top_p = next_token_probs(torch.cat([LOGITS, torch.zeros(1, 5)]), 1.0, top_p=0.5)
    assert top_p[0].count_nonzero() == 1 and top_p[1].count_nonzero() == 3  # uniform: 3 of 5


def test_sample_next_token_draws_from_that_distribution():
    n = 20_000
    g = torch.Generator().manual_seed(0)
    for temperature, top_k, top_p in [(1.0, None, None), (0.5, None, None), (2.0, None, 0.9),
                                      (1.0, 2, None)]:
        draws = sample_next_token(LOGITS.expand(n, -1), temperature, top_k, top_p, generator=g)
        assert draws.shape == (n, 1)
        frequencies = torch.bincount(draws[:, 0], minlength=5) / n
        expected = next_token_probs(LOGITS, temperature, top_k, top_p)[0]
        torch.testing.assert_close(frequencies, expected, atol=0.015, rtol=0)  # 4 sigma at n=20k
    assert torch.equal(sample_next_token(torch.cat([LOGITS, LOGITS.flip(-1)]), 0.0),
                       torch.tensor([[3], [1]]))  # greedy, per row


class Counting(torch.nn.Module):
    """A stand-in language model that always predicts the token after the last one, mod vocab."""

    def __init__(self, vocab_size=8, block_size=64):
        super().__init__()
        self.config = GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=1)
        self.calls = []

    def forward(self, idx, targets=None, kv_cache=None):
        self.calls.append(idx.clone())
        if kv_cache is not None:
            kv_cache.advance(idx.size(1))
        nxt = (idx[:, -1:] + 1) % self.config.vocab_size  # (B, 1)
        return 10.0 * torch.nn.functional.one_hot(nxt, self.config.vocab_size).float(), None


@pytest.mark.parametrize("use_cache", [True, False])
def test_a_finished_row_is_padded_with_the_stop_token_while_the_others_go_on(use_cache):
    model = Counting()
    prompt = torch.tensor([[0, 1], [3, 5]])
    out = generate(model, prompt, 20, temperature=0, stop_token=4, use_cache=use_cache)
    # row 0 reaches 4 after 3 tokens, row 1 after 7; then every row has finished: 7 new tokens
    assert out.tolist() == [[0, 1, 2, 3, 4, 4, 4, 4, 4],
                            [3, 5, 6, 7, 0, 1, 2, 3, 4]]
    assert len(model.calls) == 7
    # without a stop token, or with one no row reaches in time, every row runs to max_new_tokens
    assert generate(model, prompt, 5, temperature=0).tolist() == [[0, 1, 2, 3, 4, 5, 6],
                                                                 [3, 5, 6, 7, 0, 1, 2]]
    assert generate(model, prompt, 3, temperature=0, stop_token=7).tolist() == [[0, 1, 2, 3, 4],
                                                                               [3, 5, 6, 7, 7]]


def test_a_row_that_starts_with_the_stop_token_is_padded_from_the_first_step():
    out = generate(Counting(), torch.tensor([[3], [6]]), 10, temperature=0, stop_token=4)
    assert out.tolist() == [[3, 4, 4, 4, 4, 4, 4], [6, 7, 0, 1, 2, 3, 4]]


def test_generate_samples_with_the_settings_it_is_given():
    class Fixed(Counting):  # the same logits (LOGITS) whatever the input
        def forward(self, idx, targets=None, kv_cache=None):
            return LOGITS.expand(idx.size(0), -1)[:, None, :], None

    n = 20_000
    prompt = torch.zeros(n, 1, dtype=torch.long)
    g = torch.Generator().manual_seed(1)
    for temperature, top_k, top_p in [(0.5, None, None), (2.0, None, None), (1.0, 2, None),
                                      (1.0, None, 0.8)]:
        out = generate(Fixed(), prompt, 1, temperature, top_k, top_p, generator=g)
        frequencies = torch.bincount(out[:, 1], minlength=5) / n
        expected = next_token_probs(LOGITS, temperature, top_k, top_p)[0]
        torch.testing.assert_close(frequencies, expected, atol=0.015, rtol=0)


@pytest.mark.parametrize("use_cache", [True, False])
def test_past_block_size_the_model_sees_the_last_block_size_tokens(use_cache):
    model = Counting(vocab_size=16, block_size=8)
    out = generate(model, torch.tensor([[0, 1, 2]]), 10, temperature=0, use_cache=use_cache)
    assert out[0].tolist() == list(range(13))
    seen = [call[0].tolist() for call in model.calls]
    if use_cache:  # the prompt, one new token at a time up to 8, then windows of 8 recomputed
        expected = [[0, 1, 2], [3], [4], [5], [6], [7]]
        expected += [list(range(t - 8, t)) for t in range(9, 13)]
    else:  # the whole text, at most its last 8 tokens
        expected = [list(range(max(t - 8, 0), t)) for t in range(3, 13)]
    assert seen == expected

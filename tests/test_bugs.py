"""Behaviour that only a wrong line would change, pinned down where no other test looks: each test
here failed against a deliberate small bug in the spine (data, model, train, finetune, LoRA,
metrics) that the rest of the suite let through."""

import numpy as np
import pytest
import torch

from conftest import tiny_config
from data import CharTokenizer, LengthBatches, LMBatches, load_tokens, prepare_lm_data
from model import GPT

# --------------------------------------------------------------------------------------------------
# data.py


@pytest.mark.parametrize("n, min_size", [(1003, 1), (1003, 2), (1001, 2), (2001, 3), (7, 4)])
def test_length_batches_keep_every_example_and_give_each_process_a_row(n, min_size):
    lengths = np.random.default_rng(0).integers(1, 100, size=n)
    sampler = LengthBatches(lengths, batch_size=10, seed=1, min_size=min_size)
    for epoch in range(2):
        batches = sampler.epoch_batches(epoch)
        assert sorted(np.concatenate(batches).tolist()) == list(range(n))  # short ones too
        assert min(len(b) for b in batches) >= min_size


def test_length_batches_are_shuffled_and_differ_from_epoch_to_epoch():
    lengths = np.random.default_rng(0).integers(1, 1000, size=1000)  # one pool of 100 batches
    sampler = LengthBatches(lengths, batch_size=10, seed=1)
    shortest = [int(lengths[b].min()) for b in sampler.epoch_batches(0)]
    assert shortest != sorted(shortest)  # the pool was sorted, the batches then shuffled
    first, second = sampler.epoch_batches(0), sampler.epoch_batches(1)
    assert [b.tolist() for b in first] != [b.tolist() for b in second]


def test_language_model_windows_reach_the_last_token():
    tokens = np.arange(10, dtype=np.uint16)
    sampler = LMBatches(tokens, block_size=8, batch_size=50, seed=0)
    offsets = sampler.offsets(1)[0]
    assert set(offsets.tolist()) == {0, 1}  # 10 tokens: windows of 9 start at 0 or 1
    x, y = sampler.batch_at(torch.tensor([1]))
    assert x[0].tolist() == list(range(1, 9)) and y[0].tolist() == list(range(2, 10))


def test_the_validation_split_is_the_tail_of_the_text(tmp_path):
    text = "".join(chr(ord("a") + i % 26) * 3 for i in range(100))  # 300 characters, no repeats
    (tmp_path / "t.txt").write_text(text)
    out, meta = prepare_lm_data(str(tmp_path / "t.txt"), "char", tmp_path / "data")
    tokenizer = CharTokenizer(meta["tokenizer"]["chars"])
    assert tokenizer.decode(load_tokens(out, "train").tolist()) == text[:270]
    assert tokenizer.decode(load_tokens(out, "val").tolist()) == text[270:]


# --------------------------------------------------------------------------------------------------
# model.py


def test_dropout_is_off_in_eval_mode_and_on_in_training():
    model = GPT(tiny_config(dropout=0.5))
    plain = GPT(tiny_config(dropout=0.0))
    plain.load_state_dict(model.state_dict())
    idx = torch.randint(0, 37, (2, 16))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(idx, idx)[0], plain.eval()(idx, idx)[0], atol=0, rtol=0)
        model.train()
        assert not torch.allclose(model(idx, idx)[0], model(idx, idx)[0])
    # with no blocks, only the embeddings' dropout is left to make two passes differ
    embeddings_only = GPT(tiny_config(n_layer=0, dropout=0.5)).train()
    with torch.no_grad():
        assert not torch.equal(embeddings_only(idx, idx)[0], embeddings_only(idx, idx)[0])

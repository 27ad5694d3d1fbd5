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


# --------------------------------------------------------------------------------------------------
# train.py


class FixedBatches:
    """An objective whose steps are given micro-batches of (x, y): sizes need not be equal."""

    def __init__(self, steps):
        self.steps = iter(steps)

    def next_step(self):
        batches = next(self.steps)
        return [((x, y), x.numel()) for x, y in batches], sum(x.numel() for x, _ in batches)

    def loss(self, model, batch):
        return model(*batch)[1]


def test_a_step_follows_the_mean_loss_over_micro_batches_of_unequal_size():
    # Micro-batches of 3 and 1 sequences: the step's loss and update are those of the mean over
    # all 4 (weights 3/4 and 1/4, not 1/2 each, and not a sum), at the schedule's learning rate.
    # Two steps: the second must not carry the first one's gradients.
    import copy

    import train
    from ring.runtime import setup_runtime

    cfg = train.TrainConfig(learning_rate=1.0, min_lr=0.0, warmup_iters=2, max_iters=10,
                            grad_clip=0.0)
    model = GPT(tiny_config())
    reference = copy.deepcopy(model)
    data = [torch.randint(0, 37, (4, 9)) for _ in range(2)]
    steps = [[(d[:3, :-1], d[:3, 1:]), (d[3:, :-1], d[3:, 1:])] for d in data]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    training = train.Training(cfg, setup_runtime("cpu", "float32"), model, model, optimizer, None,
                              FixedBatches(steps), None, train.TrainState(), set())
    for it, d in enumerate(data):
        training.state.iter_num = it
        loss, _, lr = train.train_step(training)
        assert lr == train.lr_at(it, 1.0, 0.0, 2, 10) == pytest.approx((it + 1) / 3)
        _, expected = reference(d[:, :-1], d[:, 1:])  # the mean over the 4 sequences at once
        expected.backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= lr * p.grad
                p.grad = None
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)


def test_a_pretrained_model_gets_the_runs_dropout_and_context():
    import train

    model = GPT(tiny_config(dropout=0.0))
    cfg = train.TrainConfig(dropout=0.25, block_size=8)
    train.fit_to_run(model, cfg, "somewhere")
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 1 + 3 * 2 and all(m.p == 0.25 for m in dropouts)
    assert model.config.dropout == 0.25 and model.config.block_size == 8
    assert model.transformer.wpe.weight.shape[0] == 8

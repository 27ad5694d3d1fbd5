"""Behaviour that only a wrong line would change, pinned down where no other test looks: each test
here failed against a deliberate small bug in the spine (data, model, train, finetune, LoRA,
metrics) that the rest of the suite let through."""

import numpy as np
import pytest
import torch

from data import CharTokenizer, LengthBatches, LMBatches, TokenStream, load_tokens, prepare_lm_data
from model import GPT
from conftest import tiny_config

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
    tokens = TokenStream([np.arange(10, dtype=np.uint16)])
    sampler = LMBatches(tokens, block_size=8, batch_size=50, seed=0)
    offsets = sampler.offsets(1)[0]
    assert set(offsets.tolist()) == {0, 1}  # 10 tokens: windows of 9 start at 0 or 1
    x, y = sampler.batch_at(torch.tensor([1]))
    assert x[0].tolist() == list(range(1, 9)) and y[0].tolist() == list(range(2, 10))


def test_a_stream_of_uneven_shards_reads_every_window_as_one_sequence():
    sizes = [5, 1, 9, 3]
    shards = [np.arange(sum(sizes[:i]), sum(sizes[:i + 1]), dtype=np.uint16)
              for i in range(len(sizes))]
    stream, whole = TokenStream(shards), np.arange(sum(sizes))
    for start in range(len(whole)):
        for length in range(1, len(whole) - start + 1):
            assert stream.window(start, length).tolist() == whole[start:start + length].tolist()


def test_the_validation_split_is_the_tail_of_the_text(tmp_path):
    text = "".join(chr(ord("a") + i % 26) * 3 for i in range(100))  # 300 characters, no repeats
    (tmp_path / "t.txt").write_text(text)
    out, meta = prepare_lm_data(str(tmp_path / "t.txt"), "char", tmp_path / "data")
    tokenizer = CharTokenizer(meta["tokenizer"]["chars"])
    for split, part in (("train", text[:270]), ("val", text[270:])):
        stream = load_tokens(out, meta, split)
        assert tokenizer.decode(stream.window(0, len(stream)).tolist()) == part


def test_language_modelling_evaluates_each_split_on_its_own_tokens(tmp_path):
    from ring.runtime import setup_runtime
    from train import LanguageModelling, TrainConfig

    text = "abcdefgh" * 40 + "XYZ" * 20  # the last 10% (the val split) uses only X, Y and Z
    (tmp_path / "t.txt").write_text(text)
    out, meta = prepare_lm_data(str(tmp_path / "t.txt"), "char", tmp_path / "data")
    tokenizer = CharTokenizer(meta["tokenizer"]["chars"])
    cfg = TrainConfig(block_size=8, batch_size=4, eval_iters=3)
    objective = LanguageModelling(cfg, setup_runtime("cpu", "float32"), out, meta)
    seen = {split: {tokenizer.decode(x.flatten().tolist()) for x, _ in batches}
            for split, batches in objective.eval_sets.items()}
    assert all(set(t) <= set("XYZ") for t in seen["val"])
    assert all(set(t) <= set("abcdefghXYZ") and set(t) & set("abcdefgh") for t in seen["train"])


@pytest.mark.parametrize("rank", [0, 1])
def test_each_process_evaluates_its_own_rows_and_share_of_hellaswag(tmp_path, rank):
    # Evaluation scales with processes: of every fixed evaluation batch a process keeps its own
    # rows (as in training), and of the HellaSwag examples its own share, tokenized once.
    from dataclasses import replace

    from ring.runtime import setup_runtime
    from train import LanguageModelling, TrainConfig

    (tmp_path / "t.txt").write_text("abcdefgh" * 100)
    out, meta = prepare_lm_data(str(tmp_path / "t.txt"), "char", tmp_path / "data")
    cfg = TrainConfig(block_size=8, batch_size=4, eval_iters=3)
    one = LanguageModelling(cfg, setup_runtime("cpu", "float32"), out, meta)
    rt = replace(setup_runtime("cpu", "float32"), world_size=2, rank=rank)
    examples = [{"ctx": f"context {i}", "endings": ["a", "b", "c", "d"], "label": 0}
                for i in range(5)]
    mine = LanguageModelling(cfg, rt, out, meta, hellaswag=examples)
    for split, batches in one.eval_sets.items():
        assert [x.tolist() for x, _ in mine.eval_sets[split]] == \
            [x[rank::2].tolist() for x, _ in batches]
    assert [e["ctx"] for e in mine.hellaswag] == [e["ctx"] for e in examples[rank::2]]
    assert all("ctx_ids" in e for e in mine.hellaswag)


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


# --------------------------------------------------------------------------------------------------
# finetune.py


@pytest.mark.parametrize("rank", [0, 1])
def test_a_classification_step_weighs_each_micro_batch_by_its_rows(tmp_path, rank):
    # 19 examples in batches of 4: one batch of 3 per epoch, shared by 2 processes (this is one of
    # them). A micro-batch's items are this process's rows and the step's total is the rows of all
    # processes, so that train_step weighs the micro-batches' mean losses into the mean over the
    # step's examples; the tokens counted are the whole step's.
    from dataclasses import replace

    import finetune
    from data import GPT2Tokenizer
    from ring.runtime import setup_runtime
    from data import load_classification_data
    from test_finetune import separable_rows, write_csv

    write_csv(tmp_path / "train.csv", separable_rows(25, seed=3))
    data = load_classification_data(str(tmp_path / "train.csv"), GPT2Tokenizer(),
                                    tmp_path / "data", val_fraction=0.15)
    cfg = finetune.FinetuneConfig(batch_size=4, gradient_accumulation_steps=3, seed=0)
    rt = replace(setup_runtime("cpu", "float32"), world_size=2, rank=rank)
    objective = finetune.Classification(cfg, rt, data, 50256)
    n = len(data.splits["train"])
    assert n == 19 and objective.sampler.batches_per_epoch == 5
    sampler = LengthBatches(objective.lengths, 4, seed=0, min_size=2)  # the same batches
    tokens = 0
    for _ in range(4):
        step = [sampler.next_batch() for _ in range(3)]
        batches, total = objective.next_step()
        assert [items for _, items in batches] == [len(b[rank::2]) for b in step]
        assert [len(y) for (_, _, y), _ in batches] == [len(b[rank::2]) for b in step]
        assert total == sum(map(len, step))
        tokens += sum(int(objective.lengths[b].sum()) for b in step)
    assert objective.tokens == tokens


def test_epochs_end_with_an_evaluation_unless_they_are_shorter_than_eval_interval(tmp_path):
    # On a few labels an epoch is a few steps: evaluating at each epoch's end would evaluate every
    # few steps. Epochs shorter than eval_interval are then evaluated every eval_interval steps,
    # unless eval_interval is as long as the run (then the epochs' ends are its evaluations).
    import finetune
    from data import GPT2Tokenizer, load_classification_data
    from ring.runtime import setup_runtime
    from test_finetune import separable_rows, write_csv

    write_csv(tmp_path / "train.csv", separable_rows(100, seed=3))
    data = load_classification_data(str(tmp_path / "train.csv"), GPT2Tokenizer(),
                                    tmp_path / "data", val_fraction=0.1)  # 90 rows: 3 batches
    rt = setup_runtime("cpu", "float32")
    epochs = {3, 6, 9, 12}
    for interval, expected in ((2, epochs), (3, epochs), (4, set()), (12, epochs), (20, epochs)):
        cfg = finetune.FinetuneConfig(batch_size=32, eval_interval=interval, seed=0)
        objective = finetune.Classification(cfg, rt, data, 50256)
        assert objective.steps_per_epoch == 3
        assert objective.extra_evaluations(12) == expected  # 12, 20: epochs are all there is


def test_the_test_split_is_scored_with_best_and_the_baseline_is_the_majority(tmp_path, capsys):
    # Accumulating 2 batches a step: an epoch is half as many steps as batches, and evaluations
    # fall at the epochs' ends. Learning rate 0: nothing improves on the first evaluation, so best/
    # is iter 0's, and it, not last/, is scored on the test split.
    import finetune
    from test_finetune import cls_args, metrics

    finetune.main(cls_args(tmp_path, epochs=2, gradient_accumulation_steps=2, batch_size=8,
                           max_train_samples=64, learning_rate=0.0))
    out = capsys.readouterr().out
    assert "training: 8 steps, 4.0 steps per epoch (2.00 epochs)" in out
    rows = metrics(tmp_path / "out")
    evals = [r for r in rows if "val_accuracy" in r]
    assert [(r["iter"], r["epoch"]) for r in evals] == [(0, 0.0), (4, 1.0), (8, 2.0)]
    train_line = next(line for line in out.splitlines() if line.startswith("train: 64 examples"))
    counts = dict(part.split() for part in train_line.split("(")[1].split(")")[0].split(", "))
    test = rows[-1]
    assert test["majority_label"] == max(counts, key=lambda label: int(counts[label]))
    assert test["checkpoint"] == "best" and test["iter"] == 0


# --------------------------------------------------------------------------------------------------
# lora.py


@pytest.mark.parametrize("rank, alpha", [(4, 8.0), (2, 16.0)])
def test_lora_starts_as_the_base_layer_and_adds_alpha_over_r_times_b_a(rank, alpha):
    from lora import LoRALinear

    base = torch.nn.Linear(12, 20)
    lora = LoRALinear(base, rank, alpha)
    x = torch.randn(3, 5, 12)
    assert torch.equal(lora.lora_B, torch.zeros(20, rank)) and lora.lora_A.abs().min() > 0
    with torch.no_grad():
        assert torch.equal(lora(x), base(x))  # B = 0: exactly the pretrained layer at first
        lora.lora_B.normal_()
        expected = base(x) + (alpha / rank) * (x @ lora.lora_A.t() @ lora.lora_B.t())
        torch.testing.assert_close(lora(x), expected)
        torch.testing.assert_close(lora.merged()(x), expected, atol=1e-5, rtol=1e-5)
    trainable = {name for name, p in lora.named_parameters() if p.requires_grad}
    assert trainable == {"lora_A", "lora_B"}  # the base layer is frozen


# --------------------------------------------------------------------------------------------------
# metrics.py


def test_evaluation_is_the_mean_over_examples_and_leaves_the_model_training():
    from data import pad_batch
    from metrics import evaluate_classifier
    from model import GPTClassifier

    model = GPTClassifier(tiny_config(n_classes=3))
    with torch.no_grad():
        model.score.weight.normal_(std=1.0)
    texts = [torch.randint(0, 37, (n,)).tolist() for n in (5, 3, 9, 2, 7)]
    labels = torch.tensor([0, 2, 1, 1, 0])
    batches = [(*pad_batch(texts[:4], 0), labels[:4]), (*pad_batch(texts[4:], 0), labels[4:])]
    model.train()
    metrics = evaluate_classifier(model, batches, 3)
    assert model.training  # finetune.py evaluates between steps: dropout must come back
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(torch.tensor([t]), torch.tensor([len(t)]))[0] for t in texts])
    expected = torch.nn.functional.cross_entropy(logits, labels).item()  # over the 5, not 2 batches
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    accuracy = (logits.argmax(-1) == labels).double().mean().item()
    assert metrics["accuracy"] == pytest.approx(accuracy)


@pytest.mark.parametrize("truncation", ["head", "tail", "head_tail"])
def test_classify_texts_cuts_long_texts_as_training_did(truncation):
    from data import GPT2Tokenizer
    from metrics import classify_texts
    from model import GPTClassifier
    from data import truncate

    model = GPTClassifier(tiny_config(vocab_size=50257, n_classes=2)).eval()
    with torch.no_grad():
        model.score.weight.normal_(std=1.0)
        model.transformer.wte.weight.mul_(20)
    tokenizer = GPT2Tokenizer()
    text = " ".join(f"word{i}" for i in range(40))  # longer than block_size (16 tokens)
    ids = truncate(tokenizer.encode(text), 16, truncation)
    [(label, probs)] = classify_texts(model, tokenizer, [text], ["a", "b"], "cpu",
                                      truncation=truncation)
    with torch.no_grad():
        expected = torch.softmax(model(torch.tensor([ids]), torch.tensor([16]))[0], -1)[0]
    assert probs == pytest.approx(expected.tolist(), abs=1e-6)
    others = [t for t in ("head", "tail", "head_tail") if t != truncation]
    assert all(truncate(tokenizer.encode(text), 16, t) != ids for t in others)

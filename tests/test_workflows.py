"""The users' workflows end to end: see the run (plots, TensorBoard), evaluate and predict, trust the
split (leakage), long texts, schedules that follow the run, honest ends, LoRA for generation,
unconditional samples, and the main example offline."""

import csv
import json
import math

import numpy as np
import pytest
import torch

import data
import evaluate
import finetune
import plot
import sample
import train
from data import GPT2Tokenizer
from model import GPT
from train import load_model
from ring.checkpoint import save_checkpoint
from ring.config import UserError, parse_config
from data import load_classification_data, truncate
from conftest import tiny_config
from test_finetune import cls_args, metrics, write_csv
from test_train import interrupt_during_micro_batch, tiny_run


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    """A tiny classifier trained for 2 epochs on a separable task: (run directory, test file)."""
    tmp = tmp_path_factory.mktemp("cls")
    finetune.main(cls_args(tmp, epochs=2, eval_interval=5))
    return tmp / "out", tmp / "test.csv"


def is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_plots_of_a_language_model_and_a_classifier_render(tmp_path, classifier_run):
    pytest.importorskip("matplotlib")
    train.main(tiny_run(tmp_path))
    plot.main([str(tmp_path / "out"), str(tmp_path / "out"), "--out_dir", str(tmp_path / "lm")])  # overlaid
    assert {p.name for p in (tmp_path / "lm").iterdir()} == {"loss.png", "lr.png"}
    plot.main([str(classifier_run[0]), "--out_dir", str(tmp_path / "cls")])
    names = {p.name for p in (tmp_path / "cls").iterdir()}
    assert names == {"loss.png", "lr.png", "accuracy.png", "confusion-out.png"}
    assert all(is_png(p) for p in (tmp_path / "cls").iterdir())


def test_tensorboard_gets_every_logged_number(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train.main(tiny_run(tmp_path, tensorboard=True))
    events = EventAccumulator(str(tmp_path / "out" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "lr", "grad_norm", "train_loss", "val_loss", "val_perplexity"} <= tags
    assert [e.step for e in events.Scalars("val_loss")] == [0, 4, 8]


def test_the_leakage_check_finds_planted_near_duplicates_and_can_drop_them(tmp_path):
    tokenizer = GPT2Tokenizer()
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron".split()
    posts = [" ".join(rng.choice(words, 30)) for _ in range(60)]
    train_rows = [(p, "a" if i % 2 else "b") for i, p in enumerate(posts)]
    test_rows = [(posts[0] + " https://t.co/xyz", "b"),  # the same post, another link: exact
                 ("“" + posts[1].upper() + "!”", "a"),  # quotes, case, punctuation: exact
                 (posts[2].replace(posts[2].split()[5], "sigma", 1), "b"),  # one word changed: near
                 ("a completely new text about something else", "a")]
    write_csv(tmp_path / "train.csv", train_rows)
    write_csv(tmp_path / "test.csv", test_rows)
    load = dict(test_dataset=str(tmp_path / "test.csv"), val_fraction=0.1, seed=0)
    d = load_classification_data(str(tmp_path / "train.csv"), tokenizer, tmp_path / "data", **load)
    out = "\n".join(d.notes)  # what the run prints
    assert "train & test: 3 test rows (75.0%) have a duplicate in train" in out
    assert "exact: 2 test rows" in out and "near: 1 test rows" in out
    dropped = load_classification_data(str(tmp_path / "train.csv"), tokenizer, tmp_path / "data",
                                       drop_leaked=True, **load)
    assert len(dropped.splits["train"]) == len(d.splits["train"]) - 3
    assert not {posts[0], posts[1], posts[2]} & set(dropped.splits["train"].texts)


def test_evaluate_reproduces_the_test_score_and_predictions_match_sample(tmp_path, classifier_run, capsys):
    run, test_file = classifier_run
    tested = [r for r in metrics(run) if r.get("checkpoint") == "best"][-1]
    capsys.readouterr()
    evaluate.main([str(run), "--data", str(test_file), "--out", str(tmp_path / "m.json"),
                   "--data_dir", str(tmp_path / "data"), "--device=cpu", "--dtype=float32"])
    scored = json.loads((tmp_path / "m.json").read_text())
    assert scored["eval_accuracy"] == tested["test_accuracy"]
    assert scored["eval_confusion"] == tested["test_confusion"]
    assert "true/predicted" in capsys.readouterr().out

    texts = ["horse cat dog", "blue, and\nred", "three five one two"]  # a text with a newline too
    with open(tmp_path / "texts.jsonl", "w") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    evaluate.main([str(run), "--predict", str(tmp_path / "texts.jsonl"), "--out", str(tmp_path / "p.csv"),
                   "--device=cpu", "--dtype=float32"])
    rows = list(csv.DictReader(open(tmp_path / "p.csv", newline="")))
    assert [r["text"] for r in rows] == texts and set(rows[0]) >= {"predicted", "p_animal", "p_colour"}
    capsys.readouterr()
    sample.main(["--out_dir", str(run), *[a for t in texts for a in ("--text", t)], "--device=cpu",
                 "--dtype=float32"])
    printed = capsys.readouterr().out.splitlines()
    for row, line in zip(rows, printed):
        label, probs = line.split()[0], [float(x) for x in line.split("[")[1].split("]")[0].split()[1::2]]
        assert row["predicted"] == label
        assert [float(row[f"p_{n}"]) for n in ("animal", "colour", "number")] == pytest.approx(probs, abs=1e-3)


def test_evaluate_a_language_model_on_a_text(tmp_path):
    train.main(tiny_run(tmp_path))
    model, info = load_model(tmp_path / "out")
    model.eval()
    text = (tmp_path / "text.txt").read_text()[:1000]
    (tmp_path / "held_out.txt").write_text(text)
    evaluate.main([str(tmp_path / "out"), "--data", str(tmp_path / "held_out.txt"), "--out",
                   str(tmp_path / "lm.json"), "--device=cpu", "--dtype=float32", "--batch_size=3"])
    scored = json.loads((tmp_path / "lm.json").read_text())
    # by hand: every token after the first, predicted from at most block_size tokens before it
    ids = data.tokenizer_from_dict(info.tokenizer).encode(text)
    T, losses = model.config.block_size, []
    with torch.no_grad():
        for start in range(0, len(ids) - 1, T):
            window = torch.tensor(ids[start : start + T + 1])[None]
            logits, _ = model(window[:, :-1], window[:, 1:])
            losses.append(torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="sum"))
    assert scored["tokens"] == len(ids) - 1
    assert scored["loss"] == pytest.approx(float(sum(losses)) / (len(ids) - 1), rel=1e-5)
    assert scored["perplexity"] == pytest.approx(math.exp(scored["loss"]))
    # bits per byte: the nats of the predicted characters, in bits, over their UTF-8 bytes
    nats = scored["loss"] * (len(ids) - 1)
    assert scored["bpb"] == pytest.approx(nats / math.log(2) / len(text[1:].encode()), rel=1e-6)


def test_validation_and_test_samples_are_stratified(tmp_path):
    rows = [(f"text {i}", "rare" if i % 10 == 0 else "common") for i in range(1000)]
    write_csv(tmp_path / "train.csv", rows)
    write_csv(tmp_path / "test.csv", rows[:500])
    d = load_classification_data(str(tmp_path / "train.csv"), GPT2Tokenizer(), tmp_path / "data",
                                 test_dataset=str(tmp_path / "test.csv"), max_val_samples=50,
                                 max_test_samples=100)
    assert len(d.splits["val"]) == 50 and (d.splits["val"].labels == "rare").sum() == 5
    assert len(d.splits["test"]) == 100 and (d.splits["test"].labels == "rare").sum() == 10


def test_a_training_sample_is_stratified_seeded_the_same_on_every_process_and_leaves_val_alone(
        tmp_path, capsys):
    rows = [(f"text number {i}", ("neg", "neu", "pos")[i % 3] if i % 10 else "pos")
            for i in range(600)]
    write_csv(tmp_path / "train.csv", rows)

    def load(seed, n=60):
        return load_classification_data(str(tmp_path / "train.csv"), GPT2Tokenizer(),
                                        tmp_path / "data", max_train_samples=n, seed=seed)

    first, again, other, whole = load(1), load(1), load(2), load(1, n=0)
    # the same seed gives the same examples, as every process of a run loads them
    assert first.splits["train"].texts == again.splits["train"].texts
    assert first.splits["train"].texts != other.splits["train"].texts  # another seed, others
    for d in (first, other):  # in the split's proportions, drawn from its own examples
        counts = np.bincount(d.targets("train"), minlength=3)
        expected = np.bincount(whole.targets("train"), minlength=3) * 60 / len(whole.splits["train"])
        assert len(d.splits["train"]) == 60 and np.abs(counts - expected).max() < 1
        assert set(d.splits["train"].texts) <= set(whole.splits["train"].texts)
        for split in ("val", "test"):  # untouched by the sample and by the seed
            assert d.splits[split].texts == whole.splits[split].texts
    shown = [n for n in first.notes if n.startswith("train:")]  # the run says what it trains on
    assert shown == ["train: 60 examples (neg 18, neu 18, pos 24) from 60 of "
                     f"{tmp_path / 'train.csv'}"]


def test_long_texts_keep_their_head_their_tail_or_both():
    ids = list(range(20))
    assert truncate(ids, 8, "head") == list(range(8))
    assert truncate(ids, 8, "tail") == list(range(12, 20))
    assert truncate(ids, 8, "head_tail") == [0, 1] + list(range(14, 20))  # a quarter from the start
    assert truncate(ids[:5], 8, "head_tail") == ids[:5]


def test_html_line_breaks_become_newlines(tmp_path):
    write_csv(tmp_path / "t.csv", [("Great.<br /><br />Really<BR>good", "pos"), ("Bad", "neg")])
    from data import read_labelled

    split = read_labelled(tmp_path / "t.csv", "", "", GPT2Tokenizer(), 64, "head", tmp_path / "c")
    assert split.texts[0] == "Great.\n\nReally\ngood"


def test_the_schedule_follows_max_iters_given_on_the_command_line(tmp_path, capsys):
    config = tmp_path / "c.py"
    config.write_text("max_iters = 2000\nlr_decay_iters = 2000\n")
    cfg = parse_config(train.TrainConfig, [str(config), "--max_iters=1000"])
    assert cfg.lr_decay_iters == 0  # follows max_iters
    assert "lr_decay_iters follows --max_iters" in capsys.readouterr().out
    cfg = parse_config(train.TrainConfig, [str(config), "--max_iters=1000", "--lr_decay_iters=1500"])
    assert cfg.lr_decay_iters == 1500  # unless both are given
    train.main(tiny_run(tmp_path, max_iters=4, lr_decay_iters=8))
    assert "warning: the learning-rate schedule ends at step 8, the run at 4" in capsys.readouterr().out


def test_a_stopped_run_says_where_it_stopped_and_resume_says_where_it_resumed(tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as patch:
        interrupt_during_micro_batch(patch, 5)  # Ctrl-C during step 3; the last evaluation was at 0
        train.main(tiny_run(tmp_path))
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith("stopped by Ctrl-C at iter 3; saved ") and "at iter 0: train_loss" in out[-2]
    info = json.loads((tmp_path / "out" / "last" / "config.json").read_text())
    assert info["iter_num"] == 3 and info["evaluated_at"] == 0  # the metrics say which evaluation they are
    train.main(tiny_run(tmp_path, init_from="resume"))
    assert any(line.startswith("resumed from ") and "at iter 3; its last evaluation, at iter 0" in line
               for line in capsys.readouterr().out.splitlines())


def test_lora_and_freezing_for_generative_fine_tuning(tmp_path, capsys):
    (tmp_path / "book.txt").write_text("The old house remembers every name. " * 200)
    save_checkpoint(tmp_path / "base", GPT(tiny_config(vocab_size=50257, n_embd=32)),
                    {"task": "lm", "tokenizer": {"type": "gpt2"}})
    args = dict(task="gen", init_from=tmp_path / "base", dataset=tmp_path / "book.txt", data_dir=tmp_path / "d",
                block_size=16, batch_size=4, eval_interval=3, eval_iters=1, learning_rate=1e-2, dropout=0.1,
                device="cpu", dtype="float32", lora_rank=2)
    argv = lambda **kw: [f"--{k}={v}" for k, v in {**args, **kw}.items()]
    finetune.main(argv(out_dir=tmp_path / "straight", max_iters=6))
    assert "trains: LoRA rank 2 (alpha 16) in 2 of 2 blocks" in capsys.readouterr().out
    weights = load_model(tmp_path / "straight" / "last")[0].state_dict()
    assert not any("lora" in k or ".base." in k for k in weights)  # merged: a plain checkpoint
    base = load_model(tmp_path / "base")[0].state_dict()
    assert torch.equal(weights["transformer.wte.weight"], base["transformer.wte.weight"])  # frozen
    assert not torch.equal(weights["transformer.h.0.mlp.c_fc.weight"], base["transformer.h.0.mlp.c_fc.weight"])
    finetune.main(argv(out_dir=tmp_path / "split", max_iters=3))
    finetune.main(argv(out_dir=tmp_path / "split", max_iters=6, init_from="resume"))
    assert load_model(tmp_path / "split" / "last")[0].state_dict().keys() == weights.keys()
    split = load_model(tmp_path / "split" / "last")[0].state_dict()
    assert all(torch.equal(split[k], weights[k]) for k in weights)  # LoRA resumes exactly
    finetune.main(argv(out_dir=tmp_path / "frozen", max_iters=2, lora_rank=0, freeze=1))
    assert "trains: ln_f and the last 1 of 2 blocks" in capsys.readouterr().out


def test_an_empty_prompt_samples_from_end_of_text(tmp_path, capsys, monkeypatch):
    save_checkpoint(tmp_path / "gpt2", GPT(tiny_config(vocab_size=50257)), {"task": "lm", "tokenizer": {"type": "gpt2"}})
    calls, original = [], sample.generate

    def generate(model, idx, *args, **kwargs):
        calls.append(idx)
        return original(model, idx, *args, **kwargs)

    monkeypatch.setattr(sample, "generate", generate)
    sample.main(["--out_dir", str(tmp_path / "gpt2"), "--start", "", "--max_new_tokens", "5",
                 "--device=cpu", "--num_samples=2", "--temperature=0"])
    [idx] = calls
    assert idx.tolist() == [[50256], [50256]]  # each sample starts from <|endoftext|> alone
    model = load_model(tmp_path / "gpt2")[0].eval()
    out = original(model, idx[:1], 5, temperature=0, stop_token=50256)
    new = out[0, 1:].tolist()
    expected = GPT2Tokenizer().decode(new[: new.index(50256)] if 50256 in new else new)
    printed = capsys.readouterr().out.split("---------------\n")
    assert printed[0] == printed[1] == expected + "\n"  # the sample, with no prompt before it
    save_checkpoint(tmp_path / "char", GPT(tiny_config()), {"task": "lm", "tokenizer": {
        "type": "char", "chars": "abcdefghijklmnopqrstuvwxyz0123456789 "}})
    with pytest.raises(UserError, match="give --start at least one character"):
        sample.main(["--out_dir", str(tmp_path / "char"), "--start", "", "--device=cpu"])


def test_shakespeare_ships_with_the_code_and_needs_no_network(tmp_path, monkeypatch):
    from ring import download

    monkeypatch.setattr(download.urllib.request, "urlopen", lambda *a, **k: pytest.fail("network"))
    path = data.resolve_dataset("shakespeare", tmp_path)
    assert download.sha256_of(path) == data.TEXT_DATASETS["shakespeare"][1]

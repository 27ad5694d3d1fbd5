"""finetune.py: the classifier (pooling, batching, metrics, LoRA, freezing, exact resume), its data (files,
columns, splits, leakage, cache, bad input) and generative fine-tuning through train.py's loop."""

import csv
import gzip
import io
import json
import random
import subprocess
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import data
import finetune
from data import GPT2Tokenizer, LengthBatches
from lora import LoRALinear, choose_trainable, merged_copy
from metrics import classification_metrics, classify_texts
from model import GPT, GPTClassifier
from train import load_model
from sample import generate
from ring import download
from ring import tables
from ring.checkpoint import save_checkpoint
from ring.config import UserError
from data import load_classification_data
from ring.tables import read_table, resolve_cls_dataset
from conftest import tiny_config

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def tokenizer():
    return GPT2Tokenizer()


def write_csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# Three classes, each with its own words: separable by any token, so a tiny model learns it in seconds.
VOCABULARIES = {"colour": "red green blue yellow purple orange".split(),
                "animal": "cat dog horse mouse tiger rabbit".split(),
                "number": "one two three four five six".split()}


def separable_rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(VOCABULARIES))
        rows.append((" ".join(rng.choices(VOCABULARIES[label], k=rng.randint(1, 8))), label))
    return rows


def cls_args(tmp_path, out="out", **overrides):
    """Command-line arguments for a seconds-long classification run from scratch."""
    if not (tmp_path / "train.csv").exists():
        write_csv(tmp_path / "train.csv", separable_rows(300, seed=1))
        write_csv(tmp_path / "test.csv", separable_rows(60, seed=2))
    args = dict(init_from="scratch", dataset=tmp_path / "train.csv", test_dataset=tmp_path / "test.csv",
                data_dir=tmp_path / "data", out_dir=tmp_path / out, n_layer=2, n_head=2, n_embd=16, block_size=16,
                batch_size=16, learning_rate=3e-3, warmup_iters=2, eval_interval=1000, log_interval=1,
                device="cpu", dtype="float32")
    args.update(overrides)
    return [f"--{k}={v}" for k, v in args.items()]


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------------------------------
# The model: pooling at the last real token


def test_pooling_matches_transformers_gpt2_for_sequence_classification():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    pad = 63  # a pad id that no text below contains: transformers finds the last real token by searching for it
    hf_config = GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2, num_labels=3,
                           pad_token_id=pad, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = GPT2ForSequenceClassification(hf_config).eval()
    ours = GPTClassifier(tiny_config(vocab_size=64, block_size=16, n_embd=32, n_classes=3)).eval()
    state = ours.state_dict()
    with torch.no_grad():
        for name, tensor in hf.state_dict().items():
            if name not in state:
                continue  # causal-mask buffers in some transformers versions
            if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
                tensor = tensor.t()  # Hugging Face's Conv1D stores [in, out]; nn.Linear is [out, in]
            state[name].copy_(tensor)
    lengths = torch.tensor([5, 16, 1, 9])
    x = torch.full((4, 16), pad)
    for i, n in enumerate(lengths.tolist()):
        x[i, :n] = torch.randint(0, pad, (n,))
    mask = (torch.arange(16)[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        expected = hf(input_ids=x, attention_mask=mask).logits
        got = ours(x, lengths)[0]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_batched_logits_equal_each_text_alone_even_when_the_pad_id_occurs_in_a_text():
    model = GPTClassifier(tiny_config(n_classes=3)).eval()
    pad = 7
    texts = [[1, 7, 7, 2], [3], [7, 5, 9, 10, 11, 7, 7], [4, 7]]  # 7, the pad id, inside and at the end of texts
    x, lengths = data.pad_batch(texts, pad)
    with torch.no_grad():
        batched, _ = model(x, lengths=lengths)
        alone = torch.cat([model(torch.tensor([t]), lengths=torch.tensor([len(t)]))[0] for t in texts])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# Metrics


def test_metrics_on_hand_made_cases():
    # true:  0 0 0 1 1 2      predicted: 0 0 1 1 2 2
    m = classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], 3)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx([1.0, 0.5, 0.5])
    assert m["recall"] == pytest.approx([2 / 3, 0.5, 1.0])
    f1 = [0.8, 0.5, 2 / 3]
    assert m["f1"] == pytest.approx(f1)
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["support"] == [3, 2, 1]
    # always predicting the majority class: accuracy looks fine, macro-F1 does not
    m = classification_metrics([0, 0, 0, 1], [0, 0, 0, 0], 2)
    assert m["accuracy"] == 0.75 and m["f1"] == pytest.approx([6 / 7, 0.0])
    assert m["macro_f1"] == pytest.approx(3 / 7)
    # a class that occurs nowhere is left out of the macro average
    assert classification_metrics([0, 1], [0, 1], 3)["macro_f1"] == 1.0


# ----------------------------------------------------------------------------------------------------------
# Training


def test_tiny_model_learns_a_separable_task(tmp_path, capsys):
    finetune.main(cls_args(tmp_path, epochs=4))
    run = tmp_path / "out"
    out = capsys.readouterr().out
    assert "majority baseline (always '" in out and "true/predicted" in out
    assert "train: 269 examples (animal " in out  # what the data is, said before training
    rows = metrics(run)
    evals = [r for r in rows if "val_accuracy" in r]
    assert {"val_loss", "val_accuracy", "val_macro_f1", "val_per_class", "val_confusion", "epoch"} <= set(evals[-1])
    assert [r["epoch"] for r in evals] == [0.0, 1.0, 2.0, 3.0, 4.0]  # one evaluation per epoch end
    test = rows[-1]
    assert test["checkpoint"] == "best" and test["test_accuracy"] >= 0.95 and test["test_macro_f1"] >= 0.95
    assert set(test["test_per_class"]) == {"animal", "colour", "number"}
    assert {p.name for p in run.iterdir()} == {"best", "last", "metrics.jsonl"}  # no per-step checkpoints

    model, info = load_model(run / "best")
    assert info.task == "cls" and info.labels == ["animal", "colour", "number"]
    texts = ["horse cat dog", "blue", "three five one two"]
    results = classify_texts(model, GPT2Tokenizer(), texts, info.labels, "cpu")
    assert [label for label, _ in results] == ["animal", "colour", "number"]
    assert all(abs(sum(probs) - 1) < 1e-5 for _, probs in results)

    import sample

    sample.main(["--out_dir", str(run), "--text", "tiger mouse", "--text", "green red", "--device", "cpu"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "animal" and lines[1].split()[0] == "colour"


@pytest.mark.parametrize("adaptation", [{}, {"lora_rank": 2}], ids=["full", "lora"])
def test_resume_in_the_middle_of_an_epoch_is_exact(tmp_path, adaptation):
    # 7 steps straight, against 3 steps + resume + 4 steps. An epoch is 2.25 steps (72 examples: 9 batches,
    # 4 per step), so the stop falls in the middle of an epoch, and dropout is on: the batch order and the RNG
    # must both continue where they stopped.
    common = dict(max_iters=7, lr_decay_iters=7, dropout=0.1, gradient_accumulation_steps=4, batch_size=8,
                  max_train_samples=72, **adaptation)
    finetune.main(cls_args(tmp_path, "straight", **common))
    finetune.main(cls_args(tmp_path, "split", **{**common, "max_iters": 3}))
    state = torch.load(tmp_path / "split" / "last" / "train_state.pt", weights_only=True)
    assert state["sampler"] == {"seed": 1337, "epoch": 1, "position": 3}  # 12 batches taken: 9 + 3
    finetune.main(cls_args(tmp_path, "split", init_from="resume", **common))

    def losses(run):
        return {r["iter"]: r["loss"] for r in metrics(tmp_path / run) if "loss" in r}

    assert losses("split") == losses("straight") and len(losses("straight")) == 7
    a = load_file(tmp_path / "straight" / "last" / "model.safetensors")
    b = load_file(tmp_path / "split" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_starts_from_a_language_model_checkpoint_or_continues_a_classifier(tmp_path):
    lm = GPT(tiny_config(vocab_size=50257, block_size=32))
    save_checkpoint(tmp_path / "lm", lm, {"task": "lm", "tokenizer": {"type": "gpt2"}})
    finetune.main(cls_args(tmp_path, "from_lm", init_from=tmp_path / "lm", max_iters=2, learning_rate=0.0))
    model, info = load_model(tmp_path / "from_lm" / "best")
    assert (model.config.n_classes, model.config.block_size) == (3, 16)  # a new head; positions cut to max_length
    # learning rate 0: the body is the language model's, untouched
    assert torch.equal(model.transformer.h[1].mlp.c_fc.weight, lm.transformer.h[1].mlp.c_fc.weight)
    assert torch.equal(model.transformer.wpe.weight, lm.transformer.wpe.weight[:16])
    # a classifier for the same labels keeps its head
    finetune.main(cls_args(tmp_path, "again", init_from=tmp_path / "from_lm", max_iters=1, learning_rate=0.0))
    again, _ = load_model(tmp_path / "again" / "best")
    assert torch.equal(again.score.weight, model.score.weight)


def test_lora_trains_few_parameters_and_merges_into_plain_weights(tmp_path):
    model = GPTClassifier(tiny_config(n_layer=2, n_embd=16, n_classes=3))
    choose_trainable(model, freeze=-1, lora_rank=4, lora_alpha=8.0)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    C, r = 16, 4
    # per block: r * (in + out) for c_attn (C -> 3C), attn.c_proj (C -> C), c_fc (C -> 4C), mlp.c_proj (4C -> C)
    assert sum(trainable.values()) == 2 * r * (4 * C + 2 * C + 5 * C + 5 * C) + C * 3  # + the head
    assert all(".lora_" in n for n in trainable if n != "score.weight")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(std=0.5)  # as if trained: B starts at zero, which would make merging trivial
    x, lengths = torch.randint(0, 37, (3, 10)), torch.tensor([10, 4, 7])
    plain = merged_copy(model)
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    with torch.no_grad():
        torch.testing.assert_close(plain(x, lengths=lengths)[0], model(x, lengths=lengths)[0], atol=1e-5, rtol=0)
    # the merged copy saves and loads as an ordinary checkpoint
    save_checkpoint(tmp_path / "c", plain, {"task": "cls", "labels": ["a", "b", "c"], "tokenizer": {"type": "gpt2"}})
    loaded, _ = load_model(tmp_path / "c")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, lengths=lengths)[0], model(x, lengths=lengths)[0], atol=1e-5, rtol=0)


def test_freeze_trains_the_head_ln_f_and_the_last_blocks():
    model = GPTClassifier(tiny_config(n_layer=3, n_classes=2))
    choose_trainable(model, freeze=1, lora_rank=0, lora_alpha=1.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"score.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"} | {
        n for n, _ in model.named_parameters() if n.startswith("transformer.h.2.")}
    model = GPTClassifier(tiny_config(n_classes=2))
    choose_trainable(model, freeze=0, lora_rank=0, lora_alpha=1.0)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "score.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"}


def test_length_batches_cover_each_epoch_once_with_similar_lengths():
    lengths = np.random.default_rng(0).integers(1, 200, size=1000)
    sampler = LengthBatches(lengths, batch_size=10, seed=3)
    epoch = [sampler.next_batch() for _ in range(sampler.batches_per_epoch)]
    assert sorted(np.concatenate(epoch).tolist()) == list(range(1000))
    # sorting within pools of 100 batches: a batch spans a small part of the range of lengths
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in epoch])
    assert spread < 10
    # the state is (seed, epoch, position): a new sampler loaded with it continues identically
    sampler.next_batch()
    state = sampler.state_dict()
    again = LengthBatches(lengths, batch_size=10, seed=3)
    again.load_state_dict(state)
    for _ in range(150):
        assert np.array_equal(again.next_batch(), sampler.next_batch())


# ----------------------------------------------------------------------------------------------------------
# Generative fine-tuning: train.py's loop from a checkpoint


def test_generative_fine_tuning_learns_a_repeated_motif(tmp_path):
    # A text where one motif recurs between random filler. Fine-tuning a (tiny, untrained) GPT-2-vocabulary
    # model on it through finetune.py --task gen must lower the val perplexity, measured before the first step
    # and after, and greedy decoding must continue the motif's start.
    rng = random.Random(0)
    filler = "rain wind stone river bird tree cloud field road lamp".split()
    motif = "The old house remembers every name."
    (tmp_path / "book.txt").write_text(" ".join(" ".join(rng.choices(filler, k=5)) + ". " + motif for _ in range(300)))
    save_checkpoint(tmp_path / "base", GPT(tiny_config(vocab_size=50257, n_embd=32)), {"task": "lm", "tokenizer": {"type": "gpt2"}})
    args = dict(task="gen", init_from=tmp_path / "base", dataset=tmp_path / "book.txt", data_dir=tmp_path / "data",
                out_dir=tmp_path / "book", block_size=16, batch_size=8, max_iters=100, eval_interval=50, eval_iters=2,
                learning_rate=1e-2, warmup_iters=10, dropout=0.0, log_interval=50, device="cpu", dtype="float32")
    finetune.main([f"--{k}={v}" for k, v in args.items()])
    evals = [r for r in metrics(tmp_path / "book") if "val_perplexity" in r]
    assert [r["iter"] for r in evals] == [0, 50, 100]
    assert evals[-1]["val_perplexity"] < evals[0]["val_perplexity"] / 100
    model, _ = load_model(tmp_path / "book" / "best")
    tok = GPT2Tokenizer()
    prompt = tok.encode("river bird. The old house")
    out = generate(model, torch.tensor([prompt]), max_new_tokens=6, temperature=0)
    assert tok.decode(out[0, len(prompt):].tolist()).startswith(" remembers every name.")


def test_generative_run_from_a_checkpoint_resumes_with_the_same_command_line(tmp_path):
    # The model's shape comes from the checkpoint, not from n_layer/n_embd (left at their defaults here): the
    # resumed run is checked against the settings the run started with.
    (tmp_path / "book.txt").write_text("a short text that repeats. " * 200)
    save_checkpoint(tmp_path / "base", GPT(tiny_config(vocab_size=50257)), {"task": "lm", "tokenizer": {"type": "gpt2"}})
    args = dict(task="gen", dataset=tmp_path / "book.txt", data_dir=tmp_path / "data", out_dir=tmp_path / "out",
                block_size=8, batch_size=2, lr_decay_iters=4, eval_interval=2, eval_iters=1, device="cpu")
    finetune.main([f"--{k}={v}" for k, v in {**args, "init_from": tmp_path / "base", "max_iters": 2}.items()])
    finetune.main([f"--{k}={v}" for k, v in {**args, "init_from": "resume", "max_iters": 4}.items()])
    assert [r["iter"] for r in metrics(tmp_path / "out") if "val_perplexity" in r] == [0, 2, 4]
    with pytest.raises(UserError, match="with other settings.*n_embd 384 -> 96"):
        finetune.main([f"--{k}={v}" for k, v in {**args, "init_from": "resume", "max_iters": 6, "n_embd": 96}.items()])


# ----------------------------------------------------------------------------------------------------------
# Data: files, columns, splits, leakage, cache


def test_reads_csv_tsv_jsonl_and_gzip_with_guessed_or_combined_columns(tmp_path, tokenizer):
    write_csv(tmp_path / "a.csv", [("1", "Great", "loved it, truly", "pos"), ("2", "Bad", 'a "meh" film\non two lines', "neg")],
              header=("id", "title", "review", "sentiment"))
    assert read_table(tmp_path / "a.csv")[1][1] == (3, {"id": "2", "title": "Bad", "review": 'a "meh" film\non two lines', "sentiment": "neg"})
    (tmp_path / "b.tsv").write_text('text\tlabel\nshe said "hi\tpos\nno\tneg\n', encoding="utf-8")
    (tmp_path / "c.jsonl").write_text('{"text": "x y", "label": 2, "label_text": "two"}\n\n{"text": "z", "label": 1, "label_text": "one"}\n')
    with gzip.open(tmp_path / "d.csv.gz", "wt", newline="", encoding="utf-8") as f:
        f.write("Sentence,Class\nhello,1\nbye,10\nagain,2\n")
    cache = tmp_path / "cache"
    a = data.read_labelled(tmp_path / "a.csv", "title,review", "", tokenizer, 64, "head", cache)
    assert a.labels.tolist() == ["pos", "neg"] and tokenizer.decode(a.tokens[0].tolist()) == "Great\nloved it, truly"
    b = data.read_labelled(tmp_path / "b.tsv", "", "", tokenizer, 64, "head", cache)
    assert tokenizer.decode(b.tokens[0].tolist()) == 'she said "hi'  # TSV: a quote is just a character
    c = data.read_labelled(tmp_path / "c.jsonl", "", "", tokenizer, 64, "head", cache)
    assert c.labels.tolist() == ["two", "one"]  # label_text (names) is preferred over label (ids)
    d = data.read_labelled(tmp_path / "d.csv.gz", "", "", tokenizer, 64, "head", cache)
    assert tables.sorted_labels(d.labels) == ["1", "2", "10"]  # integer labels sort as numbers


def test_splits_are_stratified_and_leakage_is_reported(tmp_path, tokenizer):
    rows = [(f"text number {i}", "a" if i % 4 else "b") for i in range(200)]
    rows += [("  the SAME   text ", "a"), ("the SAME text", "a")]  # the same after whitespace normalisation
    write_csv(tmp_path / "train.csv", rows)
    write_csv(tmp_path / "test.csv", [("text number 3", "a"), ("text number 4", "b"), ("brand new", "a")])
    d = load_classification_data(str(tmp_path / "train.csv"), tokenizer, tmp_path / "data", val_fraction=0.1,
                                 test_dataset=str(tmp_path / "test.csv"), seed=0)
    val = d.splits["val"]
    assert len(val) == 20 and (val.labels == "b").sum() == 5  # 10% of each label: 15 of 150 "a", 5 of 50 "b"
    assert len(d.splits["train"]) == 182 and d.labels == ["a", "b"]
    out = "\n".join(d.notes)  # what the run prints
    assert "warning: leakage: " in out and "train & test: 2 test rows" in out


def test_token_cache_is_reused_and_rebuilt_when_the_file_or_options_change(tmp_path, tokenizer, monkeypatch):
    write_csv(tmp_path / "t.csv", [("one two three four", "a"), ("five", "b")])
    first = data.read_labelled(tmp_path / "t.csv", "", "", tokenizer, 64, "head", tmp_path / "cache")
    monkeypatch.setattr(tables, "read_table", lambda path: pytest.fail("read the file again"))
    again = data.read_labelled(tmp_path / "t.csv", "", "", tokenizer, 64, "head", tmp_path / "cache")
    assert [t.tolist() for t in again.tokens] == [t.tolist() for t in first.tokens]
    monkeypatch.undo()
    cut = data.read_labelled(tmp_path / "t.csv", "", "", tokenizer, 2, "head", tmp_path / "cache")
    assert [len(t) for t in cut.tokens] == [2, 1]
    write_csv(tmp_path / "t.csv", [("changed", "a"), ("five", "b")])
    changed = data.read_labelled(tmp_path / "t.csv", "", "", tokenizer, 64, "head", tmp_path / "cache")
    assert tokenizer.decode(changed.tokens[0].tolist()) == "changed"


def test_imdb_archive_is_read_without_unpacking(tmp_path):
    archive = tmp_path / "imdb" / "aclImdb_v1.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in [("train/pos/0_9.txt", "Great, really."), ("train/neg/1_2.txt", "Dull."),
                           ("train/unsup/2_0.txt", "no label"), ("test/pos/3_8.txt", "Fine <br />film"),
                           ("test/neg/4_1.txt", "Bad")]:
            payload = text.encode()
            member = tarfile.TarInfo(f"aclImdb/{name}")
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
    paths, text_column, label_column = resolve_cls_dataset("imdb", tmp_path)  # the archive is there: no download
    assert (text_column, label_column) == ("review", "sentiment")
    columns, rows = read_table(paths["train"])
    assert columns == ["id", "review", "sentiment", "rating"]
    assert sorted(r["review"] for _, r in rows) == ["Dull.", "Great, really."]
    assert {r["id"]: (r["sentiment"], r["rating"]) for _, r in read_table(paths["test"])[1]} == {
        "test/pos/3_8": ("positive", "8"), "test/neg/4_1": ("negative", "1")}


# ----------------------------------------------------------------------------------------------------------
# Bad input: one clear line each


def test_named_dataset_offline_says_how_to_pass_local_files(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    with pytest.raises(UserError, match=r"could not download .*--dataset=TRAIN_FILE --test_dataset=TEST_FILE"):
        resolve_cls_dataset("tweet_sentiment", tmp_path)


@pytest.mark.parametrize(
    "content, options, message",
    [
        ("text,label\nhi,a\n", {"label_column": "stars"}, r"has no column 'stars' \(columns: text, label\)"),
        ("words,rating\nhi,a\n", {}, r"cannot tell which column holds the text .*columns: words, rating.*--text_column"),
        ("text,label\na,x\nb,y,extra\nc\nd,x\n", {}, r"line 3 has 3 fields, the header 2 \(text, label\)"),
        ('text,label\n"unclosed,x\n', {}, r"malformed CSV at line"),
        ('{"text": "a", "label": "x"}\nnot json\n', {"suffix": ".jsonl"}, r"line 2 is not valid JSON"),
        ("text,label\na,x\nb,x\n", {}, r"every example has the label 'x'; a classifier needs at least two classes"),
    ],
    ids=["missing-column", "unguessable-column", "malformed-rows", "bad-quoting", "bad-jsonl", "one-class"],
)
def test_bad_files_stop_with_one_clear_line(tmp_path, tokenizer, content, options, message):
    path = tmp_path / f"train{options.pop('suffix', '.csv')}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        load_classification_data(str(path), tokenizer, tmp_path / "data", **options)


def test_not_utf8_names_the_line(tmp_path, tokenizer):
    (tmp_path / "train.csv").write_bytes("text,label\nfine,a\ncaf\xe9,b\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"not UTF-8 text \(line 3"):
        load_classification_data(str(tmp_path / "train.csv"), tokenizer, tmp_path / "data")


def test_empty_texts_are_skipped_and_counted(tmp_path, tokenizer):
    write_csv(tmp_path / "train.csv", [("good", "a"), ("", "b"), ("   ", "a"), ("fine", "")] + [("x y", "a"), ("z", "b")] * 10)
    d = load_classification_data(str(tmp_path / "train.csv"), tokenizer, tmp_path / "data")
    assert sum(len(s) for s in d.splits.values()) == 21
    assert "skipped 3 rows with an empty text or label (lines 3, 4, 5)" in "\n".join(d.notes)


def test_a_test_label_never_seen_in_training_is_refused(tmp_path, tokenizer):
    write_csv(tmp_path / "train.csv", [("a", "pos"), ("b", "neg")] * 10)
    write_csv(tmp_path / "test.csv", [("c", "pos"), ("d", "neutral"), ("e", "neutral")])
    with pytest.raises(UserError, match=r"label 'neutral' \(2 rows\) never occurs in the training data \(labels: neg, pos\)"):
        load_classification_data(str(tmp_path / "train.csv"), tokenizer, tmp_path / "data", test_dataset=str(tmp_path / "test.csv"))


def test_checkpoints_of_the_wrong_kind_are_refused(tmp_path):
    classifier = tmp_path / "classifier"
    save_checkpoint(classifier, GPTClassifier(tiny_config(vocab_size=50257, n_classes=2)),
                    {"task": "cls", "labels": ["fake", "real"], "tokenizer": {"type": "gpt2"}})
    (tmp_path / "book.txt").write_text("some text to continue " * 50)
    with pytest.raises(UserError, match="is a classifier \\(fake, real\\), not a language model"):
        finetune.main(["--task=gen", f"--init_from={classifier}", f"--dataset={tmp_path / 'book.txt'}",
                       f"--data_dir={tmp_path / 'data'}", f"--out_dir={tmp_path / 'out'}", "--device=cpu"])
    with pytest.raises(UserError, match="is a classifier for fake, real; this data's labels are animal, colour, number"):
        finetune.main(cls_args(tmp_path, init_from=classifier))
    char_lm = tmp_path / "char_lm"
    chars = "abcdefghijklmnopqrstuvwxyz0123456789 "  # vocab_size 37, as tiny_config's
    save_checkpoint(char_lm, GPT(tiny_config()), {"task": "lm", "tokenizer": {"type": "char", "chars": chars}})
    with pytest.raises(UserError, match="trained with the char tokenizer"):
        finetune.main(cls_args(tmp_path, init_from=char_lm))


def test_command_line_errors_are_one_line_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "finetune.py", f"--dataset={tmp_path / 'missing.csv'}", "--init_from=scratch",
                             f"--data_dir={tmp_path}", "--device=cpu"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "neither a named dataset (tweet_sentiment, fake_news, imdb) nor an existing file" in result.stderr


def test_help_lists_every_key():
    result = subprocess.run([sys.executable, "finetune.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for key in ("--lora_rank", "--freeze", "--text_column", "--test_dataset", "--epochs",
                "--learning_rate", "--gradient_accumulation_steps", "--best_metric", "--patience"):
        assert key in result.stdout


def test_two_processes_fine_tune_a_classifier_as_one_does(tmp_path):
    # From a pretrained body with a new (seeded) head: 2 processes sharing each batch's rows against one
    # process. The global batch is the same, so the losses agree up to float summation order.
    save_checkpoint(tmp_path / "lm", GPT(tiny_config(vocab_size=50257, block_size=32)),
                    {"task": "lm", "tokenizer": {"type": "gpt2"}})
    common = dict(init_from=tmp_path / "lm", max_iters=4, dropout=0.0, gradient_accumulation_steps=2, batch_size=6)
    finetune.main(cls_args(tmp_path, "one", **common))
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "finetune.py",
           *cls_args(tmp_path, "two", **common)]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    losses = lambda run: {r["iter"]: r["loss"] for r in metrics(tmp_path / run) if "loss" in r}
    assert losses("one").keys() == losses("two").keys() == {1, 2, 3, 4}
    for k, v in losses("one").items():
        assert losses("two")[k] == pytest.approx(v, abs=1e-5)
    assert [r["test_accuracy"] for r in metrics(tmp_path / "two") if "test_accuracy" in r] == \
           [r["test_accuracy"] for r in metrics(tmp_path / "one") if "test_accuracy" in r]

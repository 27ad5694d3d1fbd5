"""HellaSwag, completion style: the scoring against an independent computation on a tiny file in
the real format, bad lines, and the download's checks."""

import json

import pytest
import torch
from torch.nn import functional as F

from data import GPT2Tokenizer
from metrics import hellaswag_scores, hellaswag_tokens
from model import GPT
from ring import download
from ring.config import UserError
from metrics import read_hellaswag
from conftest import tiny_config
from test_hf_import import FakeHub

EXAMPLES = [  # (ctx_a, ctx_b, endings, label), in the style of the real validation file
    ("A man is sitting on a roof.", "he", ["is using wrap to wrap a pair of skis.",
                                           "is ripping level tiles off.",
                                           "is holding a rubik's cube.",
                                           "starts pulling up roofing on a roof."], 3),
    ("A lady walks to a barbell. She bends down and grabs the pole.", "the lady",
     ["swings and lands in her arms.", "pulls the barbell forward.",
      "pulls a rope attached to the barbell.", "stands and lifts the weight over her head."], 3),
    ("Two women in a child are shown in a canoe while a man pulls the canoe.", "", [
        "it shows the boat.", "they row away.", "the woman sits.", "they go down a river."], 1),
    ("How to make tea. Boil water.", "then", ["pour it over the leaves.", "eat the cup.",
                                             "paint the kettle blue.", "sleep."], 0),
    ("A boy throws a ball.", "the dog", ["runs after it.", "sings.", "reads a book.",
                                         "drives away in a car, very fast, with a hat on."], 0),
]


def write_file(path, rows=EXAMPLES):
    with open(path, "w") as f:
        for i, (a, b, endings, label) in enumerate(rows):
            ctx = a + " " + b if b else a  # as the real file: ctx_a + " " + ctx_b
            f.write(json.dumps({"ind": i, "activity_label": "test", "ctx_a": a, "ctx_b": b,
                                "ctx": ctx, "endings": endings, "label": label, "split": "val",
                                "split_type": "indomain", "source_id": f"x~{i}"}) + "\n")
    return path


def by_hand(model, tokenizer, example):
    """Each ending's summed and mean cross-entropy, one text at a time, with log_softmax."""
    total, mean = [], []
    context = tokenizer.encode(example["ctx"])
    for ending in example["endings"]:
        tail = tokenizer.encode(" " + ending)
        ids = torch.tensor([context + tail])
        with torch.no_grad():
            logits, _ = model(ids, targets=ids)  # all positions
        logp = F.log_softmax(logits[0].float(), dim=-1)
        costs = [-logp[len(context) + j - 1, t].item() for j, t in enumerate(tail)]
        total.append(sum(costs))
        mean.append(sum(costs) / len(costs))
    return min(range(4), key=total.__getitem__), min(range(4), key=mean.__getitem__)


def test_scores_equal_an_independent_computation(tmp_path):
    examples = read_hellaswag(write_file(tmp_path / "hellaswag_val.jsonl"))
    assert examples[2]["ctx"] == EXAMPLES[2][0]  # ctx_b empty: ctx is ctx_a
    tokenizer = GPT2Tokenizer()
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=50257, block_size=64, n_embd=32)).eval()
    with torch.no_grad():  # larger weights: choices that differ between sum and mean
        for p in model.parameters():
            p.mul_(8)
    picks = [by_hand(model, tokenizer, e) for e in examples]
    labels = [e["label"] for e in examples]
    expected = {"hellaswag_acc": sum(p[0] == y for p, y in zip(picks, labels)) / len(examples),
                "hellaswag_acc_norm": sum(p[1] == y for p, y in zip(picks, labels)) / len(examples),
                "hellaswag_examples": len(examples)}
    for batch_size in (1, 2, 8):  # padding never changes a score
        assert hellaswag_scores(model, hellaswag_tokens(tokenizer, examples), "cpu", batch_size) == expected
    assert any(p[0] != p[1] for p in picks)  # the two rules disagree somewhere: both are tested


def test_a_line_that_is_not_an_example_is_one_line(tmp_path):
    path = write_file(tmp_path / "h.jsonl")
    with open(path, "a") as f:
        f.write(json.dumps({"ctx": "x", "endings": ["a", "b"], "label": 0}) + "\n")
    with pytest.raises(UserError, match=r"h.jsonl: line 6 is not a HellaSwag example"):
        read_hellaswag(path)
    assert len(read_hellaswag(path, limit=3)) == 3


def test_the_download_is_bounded_and_must_hold_examples(tmp_path, monkeypatch):
    (tmp_path / "hub").mkdir()
    served = write_file(tmp_path / "hub" / "hellaswag_val.jsonl")
    (tmp_path / "hub" / "page.html").write_text("<html>not the file</html>\n")
    hub = FakeHub(tmp_path / "hub")
    try:
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
        monkeypatch.setattr(download, "HELLASWAG_URL", f"{hub.url}/cdn/page.html")
        with pytest.raises(UserError, match="is not the file expected"):
            download.fetch_hellaswag(tmp_path / "data")  # an error page, say
        monkeypatch.setattr(download, "HELLASWAG_URL", f"{hub.url}/cdn/hellaswag_val.jsonl")
        monkeypatch.setattr(download, "HELLASWAG_MAX_BYTES", served.stat().st_size - 1)
        with pytest.raises(UserError, match="sends more than the .* bytes expected; refused"):
            download.fetch_hellaswag(tmp_path / "data")  # stops reading at the bound
        assert not list((tmp_path / "data").glob("hellaswag*"))
        monkeypatch.setattr(download, "HELLASWAG_MAX_BYTES", served.stat().st_size)
        path = download.fetch_hellaswag(tmp_path / "data")
        assert path.read_bytes() == served.read_bytes()
    finally:
        hub.server.shutdown()
        hub.server.server_close()


def test_evaluate_scores_hellaswag_and_a_corpus_validation_split(tmp_path, capsys):
    import evaluate
    from ring.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=50257, block_size=64, n_embd=32)).eval()
    save_checkpoint(tmp_path / "lm", model, {"task": "lm", "tokenizer": {"type": "gpt2"}})
    path = write_file(tmp_path / "h.jsonl")
    evaluate.main([str(tmp_path / "lm"), f"--hellaswag={path}", "--out", str(tmp_path / "h.json"),
                   "--device=cpu", "--dtype=float32"])
    scored = json.loads((tmp_path / "h.json").read_text())
    expected = hellaswag_scores(model, hellaswag_tokens(GPT2Tokenizer(), read_hellaswag(path)), "cpu")
    assert {k: scored[k] for k in expected} == expected
    assert "HellaSwag (" in capsys.readouterr().out
    # a corpus: the loss over its validation split, as train.py prepares it
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"document {i} about rivers and stones"}) + "\n"
                            for i in range(40)))
    evaluate.main([str(tmp_path / "lm"), f"--data={docs}", "--data_dir", str(tmp_path / "data"),
                   "--out", str(tmp_path / "c.json"), "--device=cpu", "--dtype=float32"])
    import data
    from evaluate import language_model_loss

    directory, manifest = data.prepare_lm_data(str(docs), "gpt2", tmp_path / "data")
    val = data.load_tokens(directory, manifest, "val")
    loss, n = language_model_loss(model, val.window(0, len(val)).tolist(), 4, "cpu")
    scored = json.loads((tmp_path / "c.json").read_text())
    assert scored["tokens"] == n == len(val) - 1 and scored["loss"] == pytest.approx(loss)

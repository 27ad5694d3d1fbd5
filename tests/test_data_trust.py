"""Data checked where it enters, like checkpoints: shards, corpora, hub files and HellaSwag each end
in one clear line (or do the right thing), nothing is left half written, and evaluation scores the
split that the run held out. Also what a run fetches from the hub at a shard's exact end."""

import json
import os

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import data
import evaluate
import train
from data import GPT2Tokenizer, prepare_lm_data
from metrics import hellaswag_scores, hellaswag_tokens, read_hellaswag
from model import GPT
from ring import download
from ring.config import UserError
from ring.rundir import release_lock, take_lock
from ring.tables import read_table
from conftest import tiny_config
from test_corpus import documents, fineweb_hub, write_folder, write_shard  # noqa: F401
from test_hellaswag import EXAMPLES, write_file
from test_train import tiny_run

DEEP = "[" * 100_000 + "]" * 100_000


def shards_folder(path, val, train_tokens):
    path.mkdir()
    write_shard(path / "x_val_000000.bin", val)
    write_shard(path / "x_train_000001.bin", train_tokens)
    return path


def test_shard_ids_outside_the_vocabulary_are_refused_before_the_run_starts(tmp_path):
    folder = shards_folder(tmp_path / "shards", range(100), [*range(300), 65535])
    args = tiny_run(tmp_path, dataset=folder, tokenizer="gpt2", n_embd=16)
    with pytest.raises(UserError, match=r"x_train_000001.bin holds token id 65535, outside GPT-2's "
                                        "vocabulary of 50257"):
        train.main(args)
    assert not (tmp_path / "out").exists()  # no run directory left behind


def test_a_shard_longer_than_its_header_says_is_refused(tmp_path):
    folder = shards_folder(tmp_path / "shards", range(100), range(300))
    with open(folder / "x_train_000001.bin", "ab") as f:
        f.write(b"\0\0")  # one token more than the header announces
    with pytest.raises(UserError, match="it announces 300 tokens in 1,626 bytes"):
        prepare_lm_data(str(folder), "gpt2", tmp_path / "data")


def test_json_nested_too_deeply_is_one_line_in_every_reader(tmp_path):
    corpus = tmp_path / "deep.jsonl"
    corpus.write_text(json.dumps({"text": "fine"}) + "\n" + DEEP + "\n")
    with pytest.raises(UserError, match="deep.jsonl: line 2 is not valid JSON"):
        prepare_lm_data(str(corpus), "gpt2", tmp_path / "data")
    assert not list((tmp_path / "data").glob("*"))  # nothing half written
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        read_table(corpus)
    hellaswag = write_file(tmp_path / "h.jsonl")
    with open(hellaswag, "a") as f:
        f.write(DEEP + "\n")
    with pytest.raises(UserError, match=f"h.jsonl: line {len(EXAMPLES) + 1} is not valid JSON"):
        read_hellaswag(hellaswag)


def test_a_corpus_of_empty_texts_is_one_line(tmp_path):
    corpus = tmp_path / "empty.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("", "  ", "\n")))
    with pytest.raises(UserError, match="holds no document"):
        prepare_lm_data(str(corpus), "gpt2", tmp_path / "data")
    # empty documents among others are left out: they would be <|endoftext|> and nothing else
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["", *documents(20)]))
    directory, manifest = prepare_lm_data(str(corpus), "gpt2", tmp_path / "data")
    assert sum(manifest["documents"].values()) == 20


def test_a_manifest_of_the_wrong_shape_is_prepared_again(tmp_path):
    source = write_folder(tmp_path / "docs", documents(30))
    directory, manifest = prepare_lm_data(str(source), "gpt2", tmp_path / "data")
    del manifest["shards"][0]["sha256"]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    again, fixed = prepare_lm_data(str(source), "gpt2", tmp_path / "data")
    assert again == directory and all("sha256" in s for s in fixed["shards"])


def test_a_second_preparation_of_the_same_data_names_the_first(tmp_path, monkeypatch):
    source, data_dir = write_folder(tmp_path / "docs", documents(30)), tmp_path / "data"
    seen = {}

    def stop(path, holder, advice):  # let a preparation start, and stop it at its lock
        seen["path"] = path
        raise KeyboardInterrupt

    monkeypatch.setattr(data.corpus, "take_lock", stop)
    with pytest.raises(KeyboardInterrupt):
        prepare_lm_data(str(source), "gpt2", data_dir)
    monkeypatch.undo()
    held = take_lock(seen["path"], "another preparation of the same data", "finish")  # as a
    try:  # second process that is preparing the same data would hold it
        with pytest.raises(UserError, match=rf"is in use by another preparation of the same "
                                            rf"data, pid {os.getpid()} on "):
            prepare_lm_data(str(source), "gpt2", data_dir)
    finally:
        release_lock(seen["path"], held)
    _, manifest = prepare_lm_data(str(source), "gpt2", data_dir)  # then the next one goes ahead
    assert sum(manifest["documents"].values()) == 30


def test_a_linked_folder_in_a_corpus_is_said_to_be_left_out(tmp_path, capsys):
    write_folder(tmp_path / "docs", documents(20))
    write_folder(tmp_path / "elsewhere", documents(5, seed=1))
    (tmp_path / "docs" / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    _, manifest = prepare_lm_data(str(tmp_path / "docs"), "gpt2", tmp_path / "data")
    assert sum(manifest["documents"].values()) == 20
    assert "1 linked folders in" in capsys.readouterr().err


def test_a_hellaswag_label_must_be_an_integer(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps({"ctx": "a", "endings": ["b", "c", "d", "e"], "label": True}) + "\n")
    with pytest.raises(UserError, match="line 1 is not a HellaSwag example"):
        read_hellaswag(path)


def test_a_hellaswag_example_longer_than_the_block_keeps_its_last_tokens(tmp_path):
    tokenizer, T = GPT2Tokenizer(), 12
    rows = [(a + " " + a, b, endings, label) for a, b, endings, label in EXAMPLES]
    examples = read_hellaswag(write_file(tmp_path / "h.jsonl", rows))
    assert all(len(tokenizer.encode(e["ctx"])) > T + 1 for e in examples)
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=50257, block_size=T, n_embd=32)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8)
    right = {"acc": 0, "acc_norm": 0}
    for e in examples:  # by hand: the last T + 1 tokens of context + ending, the ending scored
        total, mean = [], []
        for ending in e["endings"]:
            tail = tokenizer.encode(" " + ending)
            ids = (tokenizer.encode(e["ctx"]) + tail)[-(T + 1):]
            with torch.no_grad():
                logits, _ = model(torch.tensor([ids[:-1]]), torch.tensor([ids[1:]]))
            logp = F.log_softmax(logits[0].float(), dim=-1)
            costs = [-logp[i - 1, ids[i]].item() for i in range(len(ids) - len(tail), len(ids))]
            total.append(sum(costs))
            mean.append(sum(costs) / len(costs))
        right["acc"] += int(np.argmin(total) == e["label"])
        right["acc_norm"] += int(np.argmin(mean) == e["label"])
    scores = hellaswag_scores(model, hellaswag_tokens(tokenizer, examples), "cpu", batch_size=2)
    assert scores["hellaswag_acc"] == right["acc"] / len(examples)
    assert scores["hellaswag_acc_norm"] == right["acc_norm"] / len(examples)


def test_evaluate_scores_the_split_the_run_held_out(tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in documents(200)))
    train.main(tiny_run(tmp_path, dataset=corpus, tokenizer="gpt2", n_embd=16, max_iters=2,
                        val_fraction=0.05))
    evaluate.main([str(tmp_path / "out"), f"--data={corpus}", "--data_dir",
                   str(tmp_path / "data"), "--out", str(tmp_path / "m.json"), "--device=cpu"])
    scored = json.loads((tmp_path / "m.json").read_text())
    directory, manifest = prepare_lm_data(str(corpus), "gpt2", tmp_path / "data",
                                          val_fraction=0.05)
    assert scored["tokens"] == manifest["val_tokens"] - 1  # the run's 5%, not the default 10%
    _, default = prepare_lm_data(str(corpus), "gpt2", tmp_path / "data")
    assert default["val_tokens"] != manifest["val_tokens"]


def test_a_typed_tokenizer_that_contradicts_the_checkpoint_is_refused(tmp_path):
    train.main(tiny_run(tmp_path, max_iters=2))
    with pytest.raises(UserError, match="was trained with the char tokenizer, not "
                                        "--tokenizer=gpt2; leave --tokenizer out"):
        train.main(tiny_run(tmp_path, max_iters=4, init_from="resume", tokenizer="gpt2"))


# --------------------------------------------------------------------------------------------------
# The hub: listings, sizes, deadlines, and the shards a run fetches


def fetch(tmp_path, **options):
    return download.fetch_hub_corpus("fineweb10B", tmp_path / "data" / "fineweb10B", **options)


def test_a_run_fetches_the_shards_that_hold_its_tokens_and_no_more(tmp_path, fineweb_hub):
    def fetched():
        return sorted(p.name for p in (tmp_path / "data" / "fineweb10B").glob("*train*.bin"))

    fetch(tmp_path, tokens_needed=1000)  # a shard holds 1,000 tokens: its exact end
    assert fetched() == ["fineweb_train_000001.bin"]
    fetch(tmp_path, tokens_needed=1001)
    assert fetched() == ["fineweb_train_000001.bin", "fineweb_train_000002.bin"]
    fetch(tmp_path, shards=3)
    assert len(fetched()) == 3


def test_a_shard_damaged_on_disk_is_found_when_the_folder_is_indexed_again(tmp_path,
                                                                         fineweb_hub):
    prepare_lm_data("fineweb10B", "gpt2", tmp_path / "data", tokens_needed=1000)
    shard = tmp_path / "data" / "fineweb10B" / "fineweb_train_000001.bin"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 1
    shard.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="fineweb_train_000001.bin is damaged: its sha256 is not "
                                        "the one the hub lists"):
        prepare_lm_data("fineweb10B", "gpt2", tmp_path / "data", tokens_needed=1500)  # 2 shards


def test_a_listing_entry_of_the_wrong_shape_is_left_out(tmp_path, fineweb_hub, monkeypatch):
    hub, _ = fineweb_hub
    real = download.parse_json

    def odd_listing(text, where, kind=dict):
        listing = real(text, where, kind)
        return listing + [{"type": "file", "path": 7}, "not an entry", {"type": "file"}]

    monkeypatch.setattr(download, "parse_json", odd_listing)
    info = download.hub_file_info(hub.url, "kjj0/fineweb10B-gpt2", kind="datasets")
    assert "fineweb_val_000000.bin" in info and all(isinstance(k, str) for k in info)


def test_a_server_that_sends_more_than_the_listed_size_is_stopped_there(tmp_path, fineweb_hub):
    hub, repo = fineweb_hub
    hub.padding["fineweb_val_000000.bin"] = 8 << 20  # 8 MB more than the 3 KB listed
    with pytest.raises(UserError, match="sends more than the 3,024 bytes expected; refused"):
        fetch(tmp_path, tokens_needed=10)
    assert not list((tmp_path / "data" / "fineweb10B").glob("*.bin*"))  # nothing kept


def test_a_download_that_makes_no_progress_is_given_up(tmp_path, fineweb_hub, monkeypatch):
    clock = iter(range(0, 10**6, 31))  # every look at the clock: 31 s later (no real waiting)
    monkeypatch.setattr(download.time, "time", lambda: next(clock))
    with pytest.raises(UserError, match="made no progress for 30 s .*; run again to resume"):
        fetch(tmp_path, tokens_needed=10)


def test_the_listing_is_read_up_to_a_bound(tmp_path, fineweb_hub):
    hub, _ = fineweb_hub
    assert download.hub_file_info(hub.url, "kjj0/fineweb10B-gpt2", kind="datasets",
                                  max_bytes=100) == {}  # cut short: not JSON, so not used

"""Corpora of documents into token shards: formats, <|endoftext|>, whole documents held out, the
same bytes for any number of workers, resume after an interruption, bad input, shard folders, the
sampler across shards, and FineWeb from a stand-in for the hub."""

import gzip
import json
import shutil

import numpy as np
import pytest
import torch

import data
from data import GPT2Tokenizer, LMBatches, TokenStream, load_tokens, prepare_lm_data
from ring import corpus
from ring.config import UserError
from test_hf_import import FakeHub

WORDS = "river stone light morning window garden letter silver winter paper".split()


def documents(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(3, 40))) + "." for _ in range(n)]


def write_folder(path, texts):
    path.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (path / f"doc{i:04d}.txt").write_text(text)
    return path


def shard_bytes(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.bin"))}


def prepare(source, tmp_path, tokenizer="gpt2", shard_tokens=500, **options):
    return corpus.prepare(source, {"type": tokenizer}, tmp_path / options.pop("data", "data"),
                          data.RULES, data.tokenizer_from_dict,
                          val_fraction=options.pop("val_fraction", 0.2),
                          text_column=options.pop("text_column", ""),
                          workers=options.pop("workers", 1), shard_tokens=shard_tokens)


def all_tokens(directory, manifest, split):
    stream = load_tokens(directory, manifest, split)
    return stream.window(0, len(stream)).tolist()


def test_every_document_starts_with_end_of_text_and_validation_holds_whole_documents(tmp_path):
    texts = documents(60)
    out, manifest = prepare(write_folder(tmp_path / "docs", texts), tmp_path)
    tok = GPT2Tokenizer()
    train, val = all_tokens(out, manifest, "train"), all_tokens(out, manifest, "val")
    # the stream is documents laid end to end, each preceded by <|endoftext|> (50256)
    pieces = {split: [tok.decode(d) for d in split_at(ids, 50256)] for split, ids in
              (("train", train), ("val", val))}
    assert sorted(pieces["train"] + pieces["val"]) == sorted(texts)  # whole documents, none cut
    assert train[0] == val[0] == 50256
    assert manifest["documents"] == {"train": len(pieces["train"]), "val": len(pieces["val"])}
    assert 0 < len(pieces["val"]) < 30
    held = {t for t in texts if data.held_out(t, 0.2)}
    assert set(pieces["val"]) == held  # seeded: the same documents every time
    assert manifest["train_tokens"] == len(train) and len(manifest["shards"]) > 2  # 500 a shard


def split_at(ids, eot):
    docs, current = [], None
    for t in ids:
        if t == eot:
            if current is not None:
                docs.append(current)
            current = []
        else:
            current.append(t)
    return docs + [current]


@pytest.mark.parametrize("kind", ["folder", "jsonl", "one text", "characters"])
def test_the_streaming_writer_gives_the_tokens_of_the_plain_preparation(tmp_path, kind):
    # ring/corpus.py (batches, threads, shards of 500 tokens, resumable) against data.py's
    # prepare_in_memory (a plain loop over the documents): the same tokens, split by split.
    texts = documents(120) + ["", "  "]  # empty documents are left out by both
    tokenizer = "char" if kind == "characters" else "gpt2"
    if kind == "folder":
        source = write_folder(tmp_path / "docs", texts)
    elif kind == "one text":
        source, texts = tmp_path / "book.txt", [" ".join(texts)]
        source.write_text(texts[0])
    else:
        source = tmp_path / "docs.jsonl"
        source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out, manifest = prepare(source, tmp_path, tokenizer=tokenizer, workers=2)
    tok = data.tokenizer_from_dict(manifest["tokenizer"])
    expected = data.prepare_in_memory(texts, tok, 0.2, one_text=kind == "one text")
    for split in ("train", "val"):
        assert all_tokens(out, manifest, split) == expected[split].tolist()
    assert len(manifest["shards"]) > 2 or kind == "characters"


def test_the_shards_are_the_same_bytes_for_any_number_of_workers(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(corpus.Progress, "EVERY", 0)  # a progress line after every batch
    source = write_folder(tmp_path / "docs", documents(300))
    one, _ = prepare(source, tmp_path, workers=1, data="one")
    two, _ = prepare(source, tmp_path, workers=2, data="two")
    assert shard_bytes(one) == shard_bytes(two) and len(shard_bytes(one)) > 4
    header = np.frombuffer(next(iter(shard_bytes(one).values()))[:1024], dtype="<i4")
    assert list(header[:3]) == [20240520, 1, 500] and not header[3:].any()  # llm.c's format
    assert "MB/s" in capsys.readouterr().err  # the progress line, drawn between two files too


@pytest.mark.parametrize("name, write", [
    ("docs.jsonl", lambda p, t: p.write_text("".join(json.dumps({"id": i, "text": x}) + "\n"
                                                     for i, x in enumerate(t)))),
    ("docs.jsonl.gz", lambda p, t: p.write_bytes(gzip.compress(
        "".join(json.dumps({"text": x}) + "\n" for x in t).encode()))),
    ("docs.csv", lambda p, t: p.write_text("id,text\n" + "".join(f'{i},"{x}"\n'
                                                                for i, x in enumerate(t)))),
    ("docs.tsv", lambda p, t: p.write_text("text\tid\n" + "".join(f"{x}\t{i}\n"
                                                                 for i, x in enumerate(t)))),
])
def test_tables_of_documents_give_the_same_shards_as_a_folder(tmp_path, name, write):
    texts = documents(80)
    folder, _ = prepare(write_folder(tmp_path / "docs", texts), tmp_path, data="folder")
    write(tmp_path / name, texts)
    table, manifest = prepare(tmp_path / name, tmp_path, data="table")
    assert shard_bytes(table) == shard_bytes(folder)
    assert manifest["documents"]["train"] + manifest["documents"]["val"] == 80


def test_an_interrupted_preparation_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    source = write_folder(tmp_path / "docs", documents(400))
    straight, _ = prepare(source, tmp_path, data="straight")
    calls, encode = {"n": 0}, GPT2Tokenizer.encode_batch

    def interrupted(self, texts, workers=1):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return encode(self, texts, workers)

    batches = corpus.batches
    monkeypatch.setattr(corpus, "batches", lambda docs: batches(docs, 2000))  # small batches
    monkeypatch.setattr(GPT2Tokenizer, "encode_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(source, tmp_path, data="split")
    monkeypatch.setattr(GPT2Tokenizer, "encode_batch", encode)
    partial = list((tmp_path / "split").glob("*.partial"))
    assert partial and (partial[0] / "progress.json").is_file()  # what was complete is kept
    resumed, _ = prepare(source, tmp_path, data="split")
    assert "resuming the preparation after document" in capsys.readouterr().err
    assert shard_bytes(resumed) == shard_bytes(straight)
    assert not list((tmp_path / "split").glob("*.partial"))


def test_a_disk_that_fills_up_leaves_no_shards_and_the_preparation_resumes(tmp_path,
                                                                          monkeypatch):
    source = write_folder(tmp_path / "docs", documents(400))
    straight, _ = prepare(source, tmp_path, data="straight")
    calls, add = {"n": 0}, corpus.ShardWriter.add

    def full_disk(self, ids):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(28, "No space left on device")
        return add(self, ids)

    batches = corpus.batches
    monkeypatch.setattr(corpus, "batches", lambda docs: batches(docs, 2000))
    monkeypatch.setattr(corpus.ShardWriter, "add", full_disk)
    with pytest.raises(OSError, match="No space left"):
        prepare(source, tmp_path, data="full")
    assert not list((tmp_path / "full").glob("*/manifest.json"))  # no half-written dataset
    monkeypatch.setattr(corpus.ShardWriter, "add", add)  # space freed
    resumed, _ = prepare(source, tmp_path, data="full")
    assert shard_bytes(resumed) == shard_bytes(straight)
    assert not list((tmp_path / "full").glob("*.partial"))


def test_bad_input_is_one_line_and_leaves_nothing_behind(tmp_path):
    cases = {  # file -> (content, what the one line says)
        "not_object.jsonl": ('{"text": "fine"}\n[1, 2]\n', "line 2 is not a JSON object"),
        "no_column.jsonl": ('{"text": "fine"}\n{"body": "no text"}\n', "line 2 has no 'text'"),
        "ragged.csv": ('text,id\n"a",1\n"b",2,3\n', "line 3 has 3 fields, the header 2"),
        "empty.jsonl": ("\n\n", "holds no document"),
        "empty_dir": (None, "holds no .txt files"),
    }
    for i, (name, (content, message)) in enumerate(cases.items()):
        if content is None:
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text(content)
        with pytest.raises(UserError, match=message) as e:
            prepare(tmp_path / name, tmp_path, data=f"data{i}")
        assert "\n" not in str(e.value)
        written = tmp_path / f"data{i}"
        assert not written.exists() or not any(written.rglob("*"))  # nothing half-written


def write_shard(path, tokens):
    tokens = np.asarray(tokens, dtype=np.uint16)
    path.write_bytes(data.shard_header(len(tokens)) + tokens.tobytes())


def test_a_folder_of_bin_shards_is_used_in_place_and_checked(tmp_path):
    shards = tmp_path / "fineweb"
    shards.mkdir()
    rng = np.random.default_rng(0)
    streams = {name: rng.integers(0, 50257, n) for name, n in
               (("fineweb_val_000000.bin", 300), ("fineweb_train_000001.bin", 700),
                ("fineweb_train_000002.bin", 500))}
    for name, tokens in streams.items():
        write_shard(shards / name, tokens)
    out, manifest = prepare(shards, tmp_path)
    assert manifest["train_tokens"] == 1200 and manifest["val_tokens"] == 300
    train = load_tokens(out, manifest, "train")
    expected = np.concatenate([streams["fineweb_train_000001.bin"],
                               streams["fineweb_train_000002.bin"]])
    assert train.window(650, 100).tolist() == expected[650:750].tolist()  # across the boundary
    with pytest.raises(UserError, match="use --tokenizer=gpt2"):
        prepare(shards, tmp_path, tokenizer="char", data="char")
    # a shard changed after it was checked is refused, in one line
    damaged = bytearray((shards / "fineweb_train_000002.bin").read_bytes())
    damaged[-1] ^= 1
    (shards / "fineweb_train_000002.bin").write_bytes(bytes(damaged))
    with pytest.raises(UserError, match=r"fineweb_train_000002.bin is damaged: its token count or "
                                        "sha256 is not the one in"):
        prepare(shards, tmp_path)


@pytest.mark.parametrize("how, message", [
    ("magic", "is not a whole token shard"), ("short", "it announces 700 tokens in"),
])
def test_a_shard_with_a_wrong_header_or_size_is_one_line(tmp_path, how, message):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "x_val_000000.bin", range(100))
    write_shard(shards / "x_train_000001.bin", range(700))
    path = shards / "x_train_000001.bin"
    raw = bytearray(path.read_bytes())
    if how == "magic":
        raw[0] ^= 0xFF
    else:
        raw = raw[:-10]
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=message):
        prepare(shards, tmp_path)


def test_the_sampler_reads_windows_across_shards_and_resumes_exactly():
    a, b = np.arange(0, 50, dtype=np.uint16), np.arange(50, 120, dtype=np.uint16)
    stream = TokenStream([a, b, np.arange(120, 130, dtype=np.uint16)])
    assert len(stream) == 130 and stream.window(45, 80).tolist() == list(range(45, 125))
    batches = LMBatches(stream, block_size=16, batch_size=8, seed=0)
    x, y = batches.batch_at(batches.offsets(1)[0])
    assert torch.equal(y, x + 1)  # consecutive ids: every window is the true stream
    state = batches.state_dict()
    first = batches.offsets(3)
    batches.load_state_dict(state)
    assert torch.equal(batches.offsets(3), first)


def test_a_character_model_corpus_and_the_single_text_split(tmp_path):
    (tmp_path / "t.txt").write_text("hello world\n" * 50)
    out, manifest = prepare(tmp_path / "t.txt", tmp_path, tokenizer="char", val_fraction=0.1)
    text = "hello world\n" * 50
    assert manifest["train_tokens"] == int(len(text) * 0.9)  # the first 90% of the characters
    assert manifest["tokenizer"] == {"type": "char", "chars": "".join(sorted(set(text)))}


@pytest.fixture
def fineweb_hub(tmp_path, monkeypatch):
    """The hub's kjj0/fineweb10B-gpt2 on 127.0.0.1: a validation shard and three training shards in
    the real names and format, 1,000 tokens each."""
    repo = tmp_path / "hub" / "datasets" / "kjj0" / "fineweb10B-gpt2"
    repo.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["fineweb_val_000000.bin"] + [f"fineweb_train_{i:06d}.bin" for i in (1, 2, 3)]
    for name in names:
        write_shard(repo / name, rng.integers(0, 50257, 1000))
    (repo / "README.md").write_text("not a shard")
    hub = FakeHub(tmp_path / "hub")
    monkeypatch.setenv("MINIGPT2_HF_ENDPOINT", hub.url)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    yield hub, repo
    hub.server.shutdown()
    hub.server.server_close()


def test_fineweb_downloads_only_the_shards_a_run_needs_and_resumes_a_cut(tmp_path, fineweb_hub):
    hub, repo = fineweb_hub
    hub.cut["fineweb_train_000001.bin"] = 700  # the connection drops after 700 bytes, once
    with pytest.raises(UserError, match="stopped after 700 of 3024 bytes; run again to resume"):
        prepare_lm_data("fineweb10B", "gpt2", tmp_path / "data", tokens_needed=1500)
    out, manifest = prepare_lm_data("fineweb10B", "gpt2", tmp_path / "data", tokens_needed=1500)
    got = sorted(p.name for p in (tmp_path / "data" / "fineweb10B").glob("*.bin"))
    assert got == ["fineweb_train_000001.bin", "fineweb_train_000002.bin", "fineweb_val_000000.bin"]
    assert ("bytes=700-", 206) in hub.cdn_requests("fineweb_train_000001.bin")  # resumed
    assert manifest["train_tokens"] == 2000 and manifest["val_tokens"] == 1000
    assert all((repo / p).read_bytes() == (tmp_path / "data" / "fineweb10B" / p).read_bytes()
               for p in got)


def test_a_corrupted_shard_from_the_hub_is_refused_in_one_line(tmp_path, fineweb_hub):
    hub, repo = fineweb_hub
    hub.wrong_sha256 = True
    with pytest.raises(UserError, match="fineweb_val_000000.bin failed its sha256 check") as e:
        prepare_lm_data("fineweb10B", "gpt2", tmp_path / "data", tokens_needed=10)
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "data" / "fineweb10B").glob("*.bin"))

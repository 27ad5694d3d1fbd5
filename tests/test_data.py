"""Tokenizers, data preparation, batches and downloads."""

import json
import os

import numpy as np
import pytest
import torch

from data import (CharTokenizer, GPT2Tokenizer, LMBatches, TokenStream, load_tokens, prepare_lm_data,
                  tokenizer_from_dict)
from ring.config import UserError
from ring.download import download


def test_char_tokenizer_round_trip_and_json():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode(tok.encode("world hello")) == "world hello"
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.encode("low") == tok.encode("low")
    with pytest.raises(UserError, match="not in this model's vocabulary"):
        tok.encode("xyz")


def test_gpt2_tokenizer_known_ids_offline(tmp_path, monkeypatch):
    # An empty tiktoken cache and no network: the files come from tokenizer/, and nothing is cached.
    import tiktoken.load

    from ring.download import gpt2_encoding

    read_file = tiktoken.load.read_file

    def local_only(path):
        assert "://" not in path, f"tried to download {path}"
        return read_file(path)

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("tiktoken.load.read_file", local_only)
    gpt2_encoding.cache_clear()
    tok = GPT2Tokenizer()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.vocab_size == 50257 and tok.eot_token == 50256
    text = "It's 3.14 — naïve café\n\n  spaces  and 日本語"
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|endoftext|>") != [50256]  # special tokens in user text stay plain text
    assert not (tmp_path / "cache").exists()  # nothing written into tiktoken's cache


def test_gpt2_tokenizer_gives_tiktokens_own_gpt2_ids(tmp_path, monkeypatch):
    # tiktoken's stock "gpt2" encoding (what this project used before it shipped the files), its
    # cache filled by hand the way tiktoken fills it, against ours, on the tokenizer tests' strings.
    import hashlib
    import shutil

    import tiktoken
    from tiktoken_ext.openai_public import gpt2

    from ring.download import BPE_DIR
    from test_hf_import import varied_strings

    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    (tmp_path / "cache").mkdir()
    for name in ("vocab.bpe", "encoder.json"):
        key = hashlib.sha1((base + name).encode()).hexdigest()
        shutil.copy(BPE_DIR / name, tmp_path / "cache" / key)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    stock, ours = tiktoken.Encoding(**gpt2()), GPT2Tokenizer()
    for s in varied_strings():
        assert ours.encode(s) == stock.encode_ordinary(s), repr(s)


def test_prepare_caches_and_rebuilds_when_the_text_changes(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("abcdefghij" * 100)
    out, meta = prepare_lm_data(str(src), "char", tmp_path / "data")
    assert meta["train_tokens"] == 900 and meta["val_tokens"] == 100
    train = load_tokens(out, meta, "train")
    assert CharTokenizer(meta["tokenizer"]["chars"]).decode(train.window(0, 3).tolist()) == "abc"
    stamp = os.stat(out / "train_000000.bin").st_mtime_ns
    prepare_lm_data(str(src), "char", tmp_path / "data")
    assert os.stat(out / "train_000000.bin").st_mtime_ns == stamp  # reused
    src.write_text("xyz" * 300)
    _, meta2 = prepare_lm_data(str(src), "char", tmp_path / "data")
    assert meta2["vocab_size"] == 3  # rebuilt


def test_missing_dataset_and_non_utf8(tmp_path):
    with pytest.raises(UserError, match="neither a built-in name"):
        prepare_lm_data(str(tmp_path / "nope.txt"), "char", tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff\xfe not utf8")
    with pytest.raises(UserError, match="not UTF-8"):
        prepare_lm_data(str(bad), "char", tmp_path)


def test_batches_are_shifted_by_one_and_reproducible():
    tokens = TokenStream([np.arange(1000, dtype=np.uint16)])
    a = LMBatches(tokens, block_size=8, batch_size=4, seed=3)
    x, y = a.batch_at(a.offsets(1)[0])
    assert x.shape == (4, 8) and torch.equal(y, x + 1)
    state = a.state_dict()
    first = a.offsets(2)
    a.load_state_dict(state)
    assert torch.equal(a.offsets(2), first)


def test_offline_download_fails_with_one_clear_line(tmp_path):
    # Nothing listens on port 9 of localhost: the connection is refused at once.
    with pytest.raises(UserError, match=r"could not download http://127\.0\.0\.1:9/x\.txt .*pass the path"):
        download("http://127.0.0.1:9/x.txt", tmp_path / "x.txt", what="the path of a local copy")
    assert not (tmp_path / "x.txt").exists()


def test_the_bytes_of_the_tokens_are_the_bytes_of_the_text():
    text = "Café, 東京 and 🙂: the same bytes, however BPE cuts them."
    for tok in (GPT2Tokenizer(), CharTokenizer.from_text(text)):
        ids = tok.encode(text)
        assert int(tok.token_bytes()[ids].sum()) == len(text.encode())
    assert GPT2Tokenizer().token_bytes()[50256] == 0  # <|endoftext|> is no text

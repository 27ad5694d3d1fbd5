"""
Corpora of documents into token shards, at any size: the machinery behind data.prepare_lm_data.

    open_shard(path)                      an llm.c .bin shard's tokens, as a checked memmap
    read_documents(source, text_column)   the documents of a file or folder, streamed, in order
    write_shards(documents, ...)          documents -> train/val shards + manifest.json, resumable
    check_shards(directory, manifest)     every shard there, whole and unchanged (sha256)

The shard format is llm.c's (dev/data/data_common.py), which the community's pre-tokenized FineWeb
uses: a header of 256 little-endian int32 values [20240520, 1, n_tokens, 0, ...], then n_tokens
uint16 token ids. A preparation streams: documents are read one batch at a time, tokenized in
parallel (tiktoken's batch encoding runs on threads, in order), turned into uint16 at once and
appended to the shard being written, so memory stays flat however large the corpus. The output is
the same bytes for any number of workers. It writes into <out>.partial/ and records its progress
each time a shard is complete, so an interrupted preparation resumes there; the directory is renamed
into place, manifest.json last, only when everything is written. Bad input is one line, and then
nothing half-written is left behind.
"""

import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ring.config import UserError
from ring.download import sha256_of
from ring.tables import json_lines, pick_columns, table_texts

SHARD_MAGIC, SHARD_VERSION = 20240520, 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MANIFEST = "manifest.json"
TABLE_KINDS = ("jsonl", "csv", "tsv")

# --------------------------------------------------------------------------------------------------
# The shard format


def shard_header(n_tokens):
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = SHARD_MAGIC, SHARD_VERSION, n_tokens
    return header.tobytes()


def open_shard(path):
    """The tokens of a .bin shard as a read-only uint16 memmap, after checking that its header is
    llm.c's and that the file holds exactly the tokens the header announces."""
    path = Path(path)
    try:
        size = path.stat().st_size
        header = np.fromfile(path, dtype="<i4", count=HEADER_INTS) if size >= HEADER_BYTES else []
    except OSError as e:
        raise UserError(f"cannot read the shard {path} ({e.strerror})") from None
    if len(header) < 3 or header[0] != SHARD_MAGIC or header[1] != SHARD_VERSION:
        raise UserError(f"{path} is not a token shard (llm.c's .bin: a 256-int32 header starting "
                        f"{SHARD_MAGIC}, {SHARD_VERSION}, then uint16 tokens)")
    n_tokens = int(header[2])
    if n_tokens < 0 or size != HEADER_BYTES + 2 * n_tokens:
        raise UserError(f"{path}: its header announces {n_tokens:,} tokens but the file holds "
                        f"{(size - HEADER_BYTES) / 2:,.1f}; the shard is truncated or damaged")
    if n_tokens == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype=np.uint16, mode="r", offset=HEADER_BYTES, shape=(n_tokens,))


def check_shards(directory, manifest, hashed=True):
    """Check every shard the manifest lists: there, with its header and size, holding its token
    count, and (hashed) with its sha256 (about 15 s for FineWeb's 20 GB, once per run; a shard just
    written was hashed as it was). Any difference is one line."""
    directory = Path(directory)
    for shard in manifest["shards"]:
        path = Path(shard["path"]) if "path" in shard else directory / shard["name"]
        if not path.is_file():
            raise UserError(f"{path} is missing: the prepared data in {directory} is incomplete; "
                            "delete it and prepare it again")
        if len(open_shard(path)) != shard["tokens"] or (hashed and
                                                        sha256_of(path) != shard["sha256"]):
            raise UserError(f"{path} is damaged: its token count or sha256 is not the one in "
                            f"{directory / MANIFEST}; delete it and prepare (or download) it again")


# --------------------------------------------------------------------------------------------------
# Documents


def source_files(source):
    """The files of a corpus, in the order their documents are read: a file, or a folder's .txt
    files (one document each) or .bin shards, sorted by path."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise UserError(f"{source} is neither a file nor a folder")
    for suffix in (".txt", ".bin"):
        files = sorted(p for p in source.rglob(f"*{suffix}") if p.is_file())
        if files:
            return files
    raise UserError(f"{source} holds no .txt files (one document each) and no .bin shards")


def table_kind(path):
    """'jsonl', 'csv' or 'tsv' for a table of documents (optionally .gz), else None."""
    kind = Path(path).name.lower().removesuffix(".gz").rsplit(".", 1)[-1]
    return kind if kind in TABLE_KINDS else None


class Reading:
    """The raw bytes of a source as they are read: their sha256 (the source's identity, recorded
    in the manifest) and how far the reading has got (for the progress line)."""

    def __init__(self, total_bytes):
        self.sha256, self.done, self.total = hashlib.sha256(), 0, total_bytes

    def open(self, path, newline=""):
        """path opened for reading as text, every byte counted and hashed on the way."""
        raw = _Counted(open(path, "rb"), self)
        binary = gzip.GzipFile(fileobj=raw) if path.name.lower().endswith(".gz") else raw
        return io.TextIOWrapper(io.BufferedReader(binary) if binary is raw else binary,
                                encoding="utf-8", newline=newline)


class _Counted(io.RawIOBase):
    def __init__(self, f, reading):
        self.f, self.reading = f, reading

    def readable(self):
        return True

    def readinto(self, buffer):
        n = self.f.readinto(buffer)
        self.reading.sha256.update(memoryview(buffer)[:n])
        self.reading.done += n
        return n

    def close(self):
        self.f.close()
        super().close()


def read_documents(files, reading, text_column=""):
    """Yield every document of the corpus's files, in order: a .txt file is one document; a .jsonl,
    .csv or .tsv (optionally .gz) table one document per row, its text_column(s) (guessed when
    empty; several, comma separated, are joined with a newline). Any problem with a file is one
    line naming it and the line."""
    for path in files:
        kind = table_kind(path)
        try:
            # a .txt file is read as Python reads text (\r\n becomes \n); a table's fields keep
            # their line breaks as the csv module needs
            with reading.open(path, newline=None if kind is None else "") as f:
                if kind is None:
                    yield f.read()
                elif kind == "jsonl":
                    yield from _jsonl_documents(f, path, text_column)
                else:
                    yield from _delimited_documents(f, path, kind, text_column)
        except UnicodeDecodeError as e:
            raise UserError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start} of a chunk); "
                            "convert it to UTF-8 first") from None
        except (OSError, EOFError) as e:  # EOFError, BadGzipFile: a cut or damaged .gz
            raise UserError(f"cannot read {path} ({getattr(e, 'strerror', None) or e})") from None


def _jsonl_documents(f, path, text_column):
    columns = None
    for number, row in json_lines(f):
        if row is None:
            raise UserError(f"{path}: line {number} is not a JSON object; each line must be one")
        if columns is None:
            columns, _ = pick_columns(list(row), text_column, None, path, need_label=False)
        missing = [c for c in columns if c not in row]
        if missing:
            raise UserError(f"{path}: line {number} has no '{missing[0]}' (its keys: "
                            f"{', '.join(list(row)[:8])})")
        yield table_texts(row, columns)


def _delimited_documents(f, path, kind, text_column):
    csv.field_size_limit(2**31 - 1)  # a long article is a valid field (see tables.read_table)
    if kind == "csv":
        reader = csv.reader(f, strict=True)
    else:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path} is empty")
        columns, _ = pick_columns(header, text_column, None, path, need_label=False)
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                raise UserError(f"{path}: line {reader.line_num} has {len(fields)} fields, the "
                                f"header {len(header)} ({', '.join(header)})")
            yield table_texts(dict(zip(header, fields)), columns)
    except csv.Error as e:
        raise UserError(f"{path}: malformed {kind.upper()} at line {reader.line_num} "
                        f"({e})") from None


# --------------------------------------------------------------------------------------------------
# Writing shards


def held_out(text, val_fraction, seed):
    """Is this document in the validation split? A seeded hash of its text decides: the same
    documents every time, whatever the order or the number of workers, and a document repeated in
    the corpus lands in one split only."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8,
                             key=seed.to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little") < val_fraction * 2**64


class ShardWriter:
    """The shards of one split: tokens are appended to the shard being written, which is closed,
    hashed and renamed into place when it holds shard_tokens tokens."""

    def __init__(self, directory, split, shard_tokens, done=(), open_tokens=0):
        self.directory, self.split, self.shard_tokens = directory, split, shard_tokens
        self.done = list(done)  # [{"name", "split", "tokens", "sha256"}] of the complete shards
        self.file, self.count = None, 0
        if open_tokens:  # resuming: the open shard as it was when progress was recorded
            self.file = open(self.tmp, "r+b")
            self.file.truncate(HEADER_BYTES + 2 * open_tokens)
            self.file.seek(0, os.SEEK_END)
            self.count = open_tokens

    @property
    def name(self):
        return f"{self.split}_{len(self.done):06d}.bin"

    @property
    def tmp(self):
        return self.directory / f".{self.name}.tmp"

    def add(self, ids):
        """Append token ids (a uint16 array). Returns the number of shards it completed."""
        completed = 0
        while len(ids):
            if self.file is None:
                self.file = open(self.tmp, "wb")
                self.file.write(shard_header(0))
                self.count = 0
            room = self.shard_tokens - self.count
            self.file.write(ids[:room].tobytes())
            self.count += min(room, len(ids))
            ids = ids[room:]
            if self.count == self.shard_tokens:
                self.close()
                completed += 1
        return completed

    def close(self):
        """Finish the shard being written (if it holds any token)."""
        if self.file is None:
            return
        self.file.seek(0)
        self.file.write(shard_header(self.count))
        self.file.close()
        self.file, tmp, path = None, self.tmp, self.directory / self.name
        if self.count == 0:
            tmp.unlink()
            return
        os.replace(tmp, path)
        self.done.append({"name": path.name, "split": self.split, "tokens": self.count,
                          "sha256": sha256_of(path)})
        self.count = 0

    def flush(self):
        if self.file is not None:
            self.file.flush()

    def abandon(self):
        if self.file is not None:
            self.file.close()
            self.file = None

    @property
    def tokens(self):
        return sum(s["tokens"] for s in self.done) + self.count


def batches(documents, max_chars=1 << 22):
    """(document, last) pairs in lists of about max_chars characters (4 M: enough to keep every
    worker busy, little enough to keep memory flat)."""
    batch, size = [], 0
    for item in documents:
        batch.append(item)
        size += len(item[0][0])
        if size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def write_shards(out, documents, encode_batch, reading, *, eot, shard_tokens, val_fraction, seed,
                 identity, extra=None):
    """Tokenize documents into out/{train,val}_NNNNNN.bin and out/manifest.json; returns the
    manifest.

    documents: (text, split, first) triples in order. split is "train", "val" or None (held_out()
    decides; if no document has gone to validation by the last one, that one does, so validation is
    never empty); first says whether the text starts a document, which then begins with eot (when
    eot is not None). encode_batch(texts) -> token lists, in order. identity (the source, tokenizer
    and options, a dict) and extra are recorded in the manifest."""
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    progress = _resume_point(partial, identity)
    partial.mkdir(parents=True, exist_ok=True)
    writers = {split: ShardWriter(partial, split, shard_tokens, progress["shards"][split],
                                  progress["open"][split]) for split in ("train", "val")}
    counts = {"train": 0, "val": 0}
    skip = progress["documents"]  # documents already in the shards: read again, not tokenized
    clock = _Progress(reading)
    index = 0
    try:
        for group in batches(_with_last(documents)):
            splits = []
            for (text, split, first), last in group:
                if split is None:
                    held = held_out(text, val_fraction, seed) or (last and not counts["val"])
                    split = "val" if held else "train"
                splits.append(split)
                counts[split] += first
            todo = [i for i in range(len(group)) if index + i >= skip]
            encoded = encode_batch([group[i][0][0] for i in todo]) if todo else []
            for i, ids in zip(todo, encoded):
                first = group[i][0][2]
                array = np.asarray([eot, *ids] if first and eot is not None else ids, np.uint16)
                if writers[splits[i]].add(array):  # a shard completed: a point to resume from
                    _save_progress(partial, identity, writers, index + i + 1)
            index += len(group)
            clock.show(writers)
        for writer in writers.values():
            writer.close()
    except UserError:  # bad input: nothing half-written is left
        for writer in writers.values():
            writer.abandon()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    except BaseException:  # interrupted, or the disk is full: complete shards stay, to resume
        for writer in writers.values():
            writer.abandon()
        raise
    finally:
        clock.end()
    if not writers["train"].tokens or not writers["val"].tokens:
        shutil.rmtree(partial, ignore_errors=True)
        raise UserError(f"{identity['source']} holds no document, or too little text for a train "
                        "and a validation split: there is nothing to learn from")
    manifest = {**identity, **(extra or {}), "identity": identity,
                "source_sha256": reading.sha256.hexdigest(), "documents": counts,
                "train_tokens": writers["train"].tokens, "val_tokens": writers["val"].tokens,
                "shards": writers["train"].done + writers["val"].done}
    (partial / "progress.json").unlink(missing_ok=True)
    write_atomically(partial / MANIFEST, json.dumps(manifest, indent=1).encode())
    if out.exists():
        shutil.rmtree(out)  # an earlier preparation of the same name whose files have changed
    os.replace(partial, out)
    return manifest


def _with_last(documents):
    """(document, is it the last one) for each document: one document of lookahead."""
    previous = None
    for text in documents:
        if previous is not None:
            yield previous, False
        previous = text
    if previous is not None:
        yield previous, True


def _resume_point(partial, identity):
    """Where an interrupted preparation of the same source and options stopped, else the start."""
    start = {"documents": 0, "shards": {"train": [], "val": []}, "open": {"train": 0, "val": 0}}
    try:
        saved = json.loads((partial / "progress.json").read_text())
    except (OSError, ValueError):
        shutil.rmtree(partial, ignore_errors=True)
        return start
    if not isinstance(saved, dict) or saved.get("identity") != identity:
        shutil.rmtree(partial, ignore_errors=True)
        return start
    kept = {"progress.json"}
    for split, shards in saved["shards"].items():
        kept |= {s["name"] for s in shards}
        if saved["open"][split]:
            kept.add(f".{split}_{len(shards):06d}.bin.tmp")
    for path in partial.iterdir():  # what came after the recorded point
        if path.name not in kept:
            path.unlink()
    done = sum(len(shards) for shards in saved["shards"].values())
    print(f"resuming the preparation after document {saved['documents']:,} ({done} shards were "
          "complete)", file=sys.stderr)
    return saved


def _save_progress(partial, identity, writers, documents):
    """Record a point to resume from, when a shard is complete: every document before `documents`
    is in the complete shards or in the open ones, whose token counts are recorded too."""
    for writer in writers.values():
        writer.flush()
    state = {"identity": identity, "documents": documents,
             "shards": {s: w.done for s, w in writers.items()},
             "open": {s: w.count for s, w in writers.items()}}
    write_atomically(partial / "progress.json", json.dumps(state).encode())


class _Progress:
    """A progress line on stderr every few seconds: MB read, MB/s, tokens, ETA."""

    def __init__(self, reading, every=2.0):
        self.reading, self.every = reading, every
        self.start = self.last = time.time()
        self.shown = False

    def show(self, writers):
        now = time.time()
        if now - self.last < self.every:
            return
        self.last, self.shown = now, True
        done, total = self.reading.done, self.reading.total
        speed = done / max(now - self.start, 1e-9)
        eta = (total - done) / speed if speed > 0 and total else 0
        tokens = sum(w.tokens for w in writers.values())
        sys.stderr.write(f"\r  {done / 1e6:9.1f} / {total / 1e6:.1f} MB  {speed / 1e6:6.1f} MB/s  "
                         f"{tokens / 1e6:8.1f}M tokens  ETA {eta:5.0f} s")
        sys.stderr.flush()

    def end(self):
        if self.shown:
            sys.stderr.write("\n")


def write_atomically(path, data):
    """Write bytes to path through a temporary file renamed into place (never through a link)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# Preparing a dataset, once

FORMAT = 1  # bump when what a preparation holds changes
SHARD_TOKENS = 100_000_000  # as FineWeb's shards: 200 MB files


def prepare(source, tokenizer, data_dir, make_tokenizer, val_fraction, text_column, workers, seed,
            shard_tokens=SHARD_TOKENS, verify=True):
    """data.prepare_lm_data's machinery: (directory, manifest) of the shards of source, prepared in
    data_dir/<name>-<tokenizer>-<key>/ unless an earlier preparation of the same files (by path,
    size and modification time) and options is there, and checked either way (verify: its shards'
    sha256 too; one process of a run does it).

    tokenizer: {"type": "gpt2"}, {"type": "char"} (vocabulary from the text: a first pass reads it)
    or {"type": "char", "chars": ...}; make_tokenizer(dict) builds it."""
    source = Path(source)
    files = source_files(source)
    fingerprint = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    total = sum(size for _, size, _ in fingerprint)
    if files[0].suffix == ".bin":  # shards are checked against their own sha256: a changed one is
        fingerprint = [str(p.resolve()) for p in files]  # damage, not a new corpus
    identity = {"source": str(source), "tokenizer": tokenizer, "val_fraction": val_fraction,
                "text_column": text_column, "format": FORMAT, "files": len(files),
                "fingerprint": hashlib.sha256(json.dumps(fingerprint).encode()).hexdigest()}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    out = Path(data_dir) / f"{source.stem}-{tokenizer['type']}-{key}"
    manifest, fresh = read_manifest(out), False
    if manifest is None or manifest.get("identity") != identity:
        fresh = True
        if files[0].suffix == ".bin":
            manifest = index_shards(out, files, tokenizer, identity)
        else:
            manifest = tokenize_corpus(out, source, files, tokenizer, make_tokenizer, identity,
                                       total, text_column, val_fraction, workers, seed,
                                       shard_tokens)
    check_shards(out, manifest, hashed=verify and not fresh)
    return out, manifest


def tokenize_corpus(out, source, files, tokenizer, make_tokenizer, identity, total, text_column,
                    val_fraction, workers, seed, shard_tokens):
    if tokenizer["type"] == "char" and "chars" not in tokenizer:  # the vocabulary: a first pass
        chars = set()
        for text in read_documents(files, Reading(total), text_column):
            chars.update(text)
        tokenizer = {"type": "char", "chars": "".join(sorted(chars))}
    tok = make_tokenizer(tokenizer)
    if tok.vocab_size > 65536:
        raise UserError(f"a vocabulary of {tok.vocab_size} tokens does not fit uint16 shards")
    reading = Reading(total)
    texts = read_documents(files, reading, text_column)
    if len(files) == 1 and table_kind(files[0]) is None:  # one .txt file: one document
        documents = single_document(texts, val_fraction, source)
    else:
        documents = ((text, None, True) for text in texts)
    extra = {"tokenizer": tok.to_dict(), "vocab_size": tok.vocab_size}
    return write_shards(out, documents, lambda batch: tok.encode_batch(batch, workers), reading,
                        eot=tok.eot_token, shard_tokens=shard_tokens, val_fraction=val_fraction,
                        seed=seed, identity=identity, extra=extra)


def single_document(texts, val_fraction, source):
    """A .txt file is one document: its first 1 - val_fraction of the characters are for training,
    the rest (the same document continued, so no <|endoftext|> before it) for validation."""
    text = next(texts)
    if not text.strip():
        raise UserError(f"{source} is empty: there is no text to learn from")
    split = int(len(text) * (1 - val_fraction))
    yield text[:split], "train", True
    yield text[split:], "val", False


def index_shards(out, files, tokenizer, identity):
    """A folder of .bin shards, already tokenized (GPT-2 ids, as FineWeb's): checked and listed
    in a manifest of their own, in place (20 GB are not copied). Files named *val* are the
    validation split."""
    if tokenizer["type"] != "gpt2":
        raise UserError(f"{identity['source']} holds .bin shards of GPT-2 token ids; use "
                        "--tokenizer=gpt2")
    shards = []
    for path in files:
        tokens = open_shard(path)
        split = "val" if "val" in path.name else "train"
        shards.append({"path": str(path.resolve()), "name": path.name, "split": split,
                       "tokens": len(tokens), "sha256": sha256_of(path)})
    counts = {split: sum(s["tokens"] for s in shards if s["split"] == split)
              for split in ("train", "val")}
    if not counts["val"] or not counts["train"]:
        raise UserError(f"{identity['source']} needs training shards and a validation shard (a "
                        "file with 'val' in its name, e.g. fineweb_val_000000.bin)")
    digest = hashlib.sha256("".join(s["sha256"] for s in shards).encode()).hexdigest()
    manifest = {**identity, "identity": identity, "tokenizer": {"type": "gpt2"},
                "vocab_size": 50257, "source_sha256": digest,
                "documents": None, "train_tokens": counts["train"], "val_tokens": counts["val"],
                "shards": shards}
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


def read_manifest(directory):
    """A preparation's manifest.json, or None if there is none (or it is unreadable: prepared
    again)."""
    try:
        manifest = json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def open_split(directory, manifest, split):
    """The shards of a split as memmaps, in order."""
    return [open_shard(Path(s["path"]) if "path" in s else Path(directory) / s["name"])
            for s in manifest["shards"] if s["split"] == split]

"""
Corpora of documents into token shards, at any size: the machinery behind data.prepare_lm_data.

data.py holds the rules (which split a document goes to, its tokens, the shard format) and applies
them in memory (data.prepare_in_memory); this module applies them at any size. Documents are read
a batch at a time, tokenized on threads (in order) and appended to the open shard: memory stays
flat, and the bytes are the same for any number of workers. It writes into <out>.partial/, locked,
records its progress at each complete shard (an interrupted preparation resumes there), and renames
it into place, manifest.json last, when all is written; bad input leaves nothing half-written. A
folder of .bin shards is indexed in place, its token ids checked.
"""

import hashlib
import json
import os
import shutil
import sys
import time
from collections import namedtuple
from pathlib import Path

from ring.config import UserError
from ring.download import LISTING, sha256_of
from ring.files import read_json, write_file
from ring.rundir import release_lock, take_lock
from ring.tables import open_text, pick_columns, table_kind, table_rows, table_texts

MANIFEST = "manifest.json"
FORMAT = 2  # bump when what a preparation holds changes
SHARD_TOKENS = 100_000_000  # as FineWeb's shards: 200 MB files

# data.py's rules: split_documents(texts, val_fraction, one_text) -> (text, split, starts a
# document); document_tokens(ids, eot) -> uint16 array; shard_header(n) -> bytes; read_shard(path).
Rules = namedtuple("Rules", "split_documents document_tokens shard_header read_shard")

# --------------------------------------------------------------------------------------------------
# Documents


def source_files(source):
    """The files of a corpus, in reading order: a file, or a folder's .txt files (one document each)
    or .bin shards, sorted by path. Links to folders are not followed (a note counts them)."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise UserError(f"{source} is neither a file nor a folder")
    found, linked = [], 0
    for folder, folders, names in os.walk(source):
        linked += sum(os.path.islink(os.path.join(folder, name)) for name in folders)
        found += [Path(folder) / name for name in names]
    if linked:
        print(f"note: {linked} linked folders in {source} were not followed", file=sys.stderr)
    for suffix in (".txt", ".bin"):
        files = sorted(p for p in found if p.suffix == suffix and p.is_file())
        if files:
            return files
    raise UserError(f"{source} holds no .txt files (one document each) and no .bin shards")


def read_documents(files, text_column, reading):
    """Every document of files, in order: a .txt file is one; a table (.jsonl, .csv, .tsv, maybe
    .gz) one per row, its text_column(s). reading["bytes"] counts the bytes read, for progress."""
    for path in files:
        with open_text(path, newline=None if table_kind(path) is None else "") as f:
            reading["file"] = f.raw_file
            if table_kind(path) is None:  # read as Python reads text: \r\n becomes \n
                try:
                    yield f.read()
                except UnicodeDecodeError as e:
                    raise UserError(f"{path} is not UTF-8 text (byte {e.start} of a chunk); "
                                    "convert it to UTF-8 first") from None
            else:
                columns = None
                for number, row in table_rows(f, path):
                    if columns is None:
                        columns, _ = pick_columns(list(row), text_column, None, path, False)
                    missing = [c for c in columns if c not in row]
                    if missing:
                        raise UserError(f"{path}: line {number} has no '{missing[0]}' (its keys: "
                                        f"{', '.join(list(row)[:8])})")
                    yield table_texts(row, columns)
        reading["bytes"] += path.stat().st_size


# --------------------------------------------------------------------------------------------------
# Writing shards


class ShardWriter:
    """The shards of one split: tokens are appended to the open shard, which is closed, hashed and
    renamed into place when it holds shard_tokens tokens."""

    def __init__(self, directory, split, shard_tokens, header, done=(), open_tokens=0):
        self.directory, self.split, self.shard_tokens = directory, split, shard_tokens
        self.header = header  # data.shard_header
        self.done = list(done)  # [{"name", "split", "tokens", "sha256"}] of the complete shards
        self.file, self.count = None, 0
        if open_tokens:  # resuming: the open shard as it was when progress was recorded
            self.file = open(self.tmp, "r+b")
            self.file.truncate(len(header(0)) + 2 * open_tokens)
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
                self.file, self.count = open(self.tmp, "wb"), 0
                self.file.write(self.header(0))
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
        self.file.write(self.header(self.count))
        self.file.close()
        self.file, tmp, path = None, self.tmp, self.directory / self.name
        if self.count == 0:
            tmp.unlink()
            return
        os.replace(tmp, path)
        self.done.append({"name": path.name, "split": self.split, "tokens": self.count,
                          "sha256": sha256_of(path)})
        self.count = 0

    def abandon(self):
        if self.file is not None:
            self.file.close()
            self.file = None

    @property
    def tokens(self):
        return sum(s["tokens"] for s in self.done) + self.count


def batches(documents, max_chars=1 << 22):
    """Documents in lists of about max_chars characters (4 M: enough to keep every worker busy,
    little enough to keep memory flat)."""
    batch, size = [], 0
    for document in documents:
        batch.append(document)
        size += len(document[0])
        if size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def write_shards(partial, documents, encode_batch, rules, eot, shard_tokens, progress, show):
    """Tokenize documents ((text, split, starts a document), as rules.split_documents gives them)
    into partial/{train,val}_NNNNNN.bin, from where progress (_resume_point's) says; returns the
    writers and the documents of each split. encode_batch(texts) -> token lists, in order."""
    writers = {split: ShardWriter(partial, split, shard_tokens, rules.shard_header,
                                  progress["shards"][split], progress["open"][split])
               for split in ("train", "val")}
    counts, skip, index = {"train": 0, "val": 0}, progress["documents"], 0
    try:
        for group in batches(documents):
            for _, split, starts in group:
                counts[split] += starts
            todo = [i for i in range(len(group)) if index + i >= skip]  # not in the shards yet
            for i, ids in zip(todo, encode_batch([group[i][0] for i in todo]) if todo else []):
                _, split, starts = group[i]
                if writers[split].add(rules.document_tokens(ids, eot if starts else None)):
                    _save_progress(partial, progress["identity"], writers, index + i + 1)
            index += len(group)
            show(writers)
        for writer in writers.values():
            writer.close()
    finally:
        for writer in writers.values():
            writer.abandon()
    return writers, counts


def _resume_point(partial, identity):
    """Where an interrupted preparation of the same source and options stopped, else the start;
    what partial/ holds beyond that point goes."""
    try:
        saved = read_json(partial / "progress.json")
    except UserError:
        saved = None
    kept = {".lock"}
    if saved is not None and saved.get("identity") == identity:
        kept.add("progress.json")
        for split, shards in saved["shards"].items():
            kept |= {s["name"] for s in shards}
            if saved["open"][split]:
                kept.add(f".{split}_{len(shards):06d}.bin.tmp")
        done = sum(len(shards) for shards in saved["shards"].values())
        print(f"resuming the preparation after document {saved['documents']:,} ({done} shards were "
              "complete)", file=sys.stderr)
    else:
        saved = {"identity": identity, "documents": 0, "shards": {"train": [], "val": []},
                 "open": {"train": 0, "val": 0}}
    for path in partial.iterdir():
        if path.name not in kept:
            path.unlink()
    return saved


def _save_progress(partial, identity, writers, documents):
    """Record a point to resume from, when a shard is complete: every document before `documents`
    is in the complete shards or in the open ones, whose token counts are recorded too."""
    for writer in writers.values():
        if writer.file is not None:
            writer.file.flush()
    state = {"identity": identity, "documents": documents,
             "shards": {s: w.done for s, w in writers.items()},
             "open": {s: w.count for s, w in writers.items()}}
    write_file(partial / "progress.json", lambda f: f.write(json.dumps(state)))


class Progress:
    """A progress line on stderr every EVERY seconds: MB read, MB/s, tokens, ETA."""

    EVERY = 2.0

    def __init__(self, reading, total):
        self.reading, self.total = reading, total
        self.start = self.last = time.time()
        self.shown = False

    def __call__(self, writers):
        now = time.time()
        if now - self.last < self.EVERY:
            return
        self.last, self.shown = now, True
        file = self.reading["file"]  # the file being read, if one is open
        done = self.reading["bytes"] + (file.tell() if file and not file.closed else 0)
        speed = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / speed if speed > 0 else 0
        tokens = sum(w.tokens for w in writers.values())
        print(f"\r  {done / 1e6:9.1f} / {self.total / 1e6:.1f} MB  {speed / 1e6:6.1f} MB/s  "
              f"{tokens / 1e6:8.1f}M tokens  ETA {eta:5.0f} s", end="", file=sys.stderr, flush=True)

    def end(self):
        if self.shown:
            sys.stderr.write("\n")


# --------------------------------------------------------------------------------------------------
# Preparing a dataset, once


def prepare(source, tokenizer, data_dir, rules, make_tokenizer, *, val_fraction, text_column,
            workers, shard_tokens=SHARD_TOKENS, verify=True):
    """(directory, manifest) of the shards of source, prepared in data_dir/<name>-<tokenizer>-<key>/
    unless an earlier preparation of the same files (path, size, mtime) and options is there;
    checked either way (verify: the shards' sha256 too; one process of a run does it). tokenizer:
    {"type": "gpt2"}, {"type": "char"} (its vocabulary read from the text first) or {"type":
    "char", "chars": ...}; make_tokenizer(dict) builds it."""
    source = Path(source)
    files = source_files(source)
    fingerprint = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    if files[0].suffix == ".bin":  # shards are checked against their own sha256: a changed one is
        fingerprint = [str(p.resolve()) for p in files]  # damage, not a new corpus
    identity = {"source": str(source), "tokenizer": tokenizer, "val_fraction": val_fraction,
                "text_column": text_column, "format": FORMAT, "files": len(files),
                "fingerprint": hashlib.sha256(json.dumps(fingerprint).encode()).hexdigest()}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    out = Path(data_dir) / f"{source.stem}-{tokenizer['type']}-{key}"
    manifest = read_manifest(out, identity)
    if manifest is None:
        if files[0].suffix == ".bin":
            manifest = index_shards(out, files, tokenizer, identity, rules)
        else:
            manifest = tokenize_corpus(out, files, tokenizer, make_tokenizer, identity, rules,
                                       shard_tokens, workers)
        verify = False  # every shard was hashed as it was written or indexed
    check_shards(out, manifest, rules, hashed=verify)
    return out, manifest


def tokenize_corpus(out, files, tokenizer, make_tokenizer, identity, rules, shard_tokens, workers):
    """Write the shards of a corpus of documents into out (through out.partial/, locked)."""
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    lock = take_lock(partial, "another preparation of the same data", "finish")
    try:
        manifest = read_manifest(out, identity)  # another process may have just finished it
        if manifest is not None:
            release_lock(partial, lock)
            shutil.rmtree(partial, ignore_errors=True)
            return manifest
        manifest = _tokenize(out, partial, files, tokenizer, make_tokenizer, identity, rules,
                             shard_tokens, workers)
    except BaseException as e:  # interrupted, or the disk is full: complete shards stay, to resume
        release_lock(partial, lock)
        if isinstance(e, UserError):  # bad input: nothing half-written is left
            shutil.rmtree(partial, ignore_errors=True)
        raise
    release_lock(out, lock)  # partial/ is out/ now
    return manifest


def _tokenize(out, partial, files, tokenizer, make_tokenizer, identity, rules, shard_tokens,
              workers):
    text_column, val_fraction = identity["text_column"], identity["val_fraction"]
    if tokenizer["type"] == "char" and "chars" not in tokenizer:  # the vocabulary: a first pass
        chars = set()
        for text in read_documents(files, text_column, {"bytes": 0}):
            chars.update(text)
        tokenizer = {"type": "char", "chars": "".join(sorted(chars))}
    tok = make_tokenizer(tokenizer)
    if tok.vocab_size > 65536:
        raise UserError(f"a vocabulary of {tok.vocab_size} tokens does not fit uint16 shards")
    progress = _resume_point(partial, identity)
    reading = {"bytes": 0, "file": None}
    one_text = len(files) == 1 and table_kind(files[0]) is None  # one .txt file: one document
    documents = rules.split_documents(read_documents(files, text_column, reading), val_fraction,
                                      one_text)
    show = Progress(reading, sum(p.stat().st_size for p in files))
    try:
        writers, counts = write_shards(partial, documents,
                                       lambda texts: tok.encode_batch(texts, workers), rules,
                                       tok.eot_token, shard_tokens, progress, show)
    finally:
        show.end()
    if not writers["train"].tokens or not writers["val"].tokens:
        raise UserError(f"{identity['source']} holds no document, or too little text for a train "
                        "and a validation split: there is nothing to learn from")
    source_sha256 = hashlib.sha256("".join(sha256_of(p) for p in files).encode()).hexdigest()
    manifest = {**identity, "identity": identity, "tokenizer": tok.to_dict(),
                "vocab_size": tok.vocab_size, "source_sha256": source_sha256, "documents": counts,
                "train_tokens": writers["train"].tokens, "val_tokens": writers["val"].tokens,
                "shards": writers["train"].done + writers["val"].done}
    (partial / "progress.json").unlink(missing_ok=True)
    write_file(partial / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1)))
    (partial / ".lock").unlink()
    if out.exists():
        shutil.rmtree(out)  # an earlier preparation of the same name whose files have changed
    os.replace(partial, out)
    return manifest


def index_shards(out, files, tokenizer, identity, rules, vocab_size=50257):
    """A folder of .bin shards, already tokenized (GPT-2 ids, as FineWeb's): checked and listed
    in a manifest of their own, in place (20 GB are not copied). Files named *val* are the
    validation split. A shard must have the hub's sha256 when the folder holds the hub's listing
    (a shard damaged on disk is found), and its ids must be GPT-2's."""
    if tokenizer["type"] != "gpt2":
        raise UserError(f"{identity['source']} holds .bin shards of GPT-2 token ids; use "
                        "--tokenizer=gpt2")
    listing = files[0].parent / LISTING
    hub = {k: v[1] for k, v in read_json(listing).items()} if listing.is_file() else {}
    shards = []
    for path in files:
        tokens = rules.read_shard(path)
        if len(tokens) and int(tokens.max()) >= vocab_size:
            raise UserError(f"{path} holds token id {int(tokens.max())}, outside GPT-2's "
                            f"vocabulary of {vocab_size}: it is not a shard of GPT-2 tokens")
        sha256 = sha256_of(path)
        if hub.get(path.name) not in (None, sha256):
            raise UserError(f"{path} is damaged: its sha256 is not the one the hub lists in "
                            f"{listing}; delete it to download it again")
        shards.append({"path": str(path.resolve()), "name": path.name, "tokens": len(tokens),
                       "split": "val" if "val" in path.name else "train", "sha256": sha256})
    counts = {split: sum(s["tokens"] for s in shards if s["split"] == split)
              for split in ("train", "val")}
    if not counts["val"] or not counts["train"]:
        raise UserError(f"{identity['source']} needs training shards and a validation shard (a "
                        "file with 'val' in its name, e.g. fineweb_val_000000.bin)")
    digest = hashlib.sha256("".join(s["sha256"] for s in shards).encode()).hexdigest()
    manifest = {**identity, "identity": identity, "tokenizer": {"type": "gpt2"},
                "vocab_size": vocab_size, "source_sha256": digest, "documents": None,
                "train_tokens": counts["train"], "val_tokens": counts["val"], "shards": shards}
    write_file(out / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1)))
    return manifest


SHARD_ENTRY = {"name": str, "split": str, "tokens": int, "sha256": str}


def read_manifest(directory, identity):
    """A preparation's manifest.json, if it is there, of the right shape and of this identity;
    else None (and the data is prepared again)."""
    try:
        manifest = read_json(Path(directory) / MANIFEST)
    except UserError:
        return None
    shards = manifest.get("shards")
    good = manifest.get("identity") == identity and isinstance(shards, list) and all(
        isinstance(s, dict) and all(isinstance(s.get(k), t) for k, t in SHARD_ENTRY.items())
        and s["split"] in ("train", "val") for s in shards)
    return manifest if good else None


def check_shards(directory, manifest, rules, hashed=True):
    """Check every shard the manifest lists: there, with its header and size, holding its token
    count, and (hashed) with its sha256 (about 15 s for FineWeb's 20 GB, once per run). Any
    difference is one line."""
    directory = Path(directory)
    for shard in manifest["shards"]:
        path = Path(shard["path"]) if "path" in shard else directory / shard["name"]
        if not path.is_file():
            raise UserError(f"{path} is missing: the prepared data in {directory} is incomplete; "
                            "delete it and prepare it again")
        if len(rules.read_shard(path)) != shard["tokens"] or (hashed and
                                                             sha256_of(path) != shard["sha256"]):
            raise UserError(f"{path} is damaged: its token count or sha256 is not the one in "
                            f"{directory / MANIFEST}; delete it and prepare (or download) it again")

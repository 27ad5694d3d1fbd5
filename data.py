"""
From text on disk to batches of token ids: tokenizers (characters, or GPT-2's BPE through tiktoken,
its files shipped in tokenizer/); documents into token shards, once; the sampler of (x, y) windows
for a language model, y being x shifted by one token; labelled texts for a classifier, in batches.
"""

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from leakage import report_leakage
from ring import corpus, tables
from ring.config import UserError, parse_config, run_main, setting
from ring.download import HUB_CORPORA, download, fetch_hub_corpus, gpt2_encoding

# --------------------------------------------------------------------------------------------------
# Tokenizers


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of the text's characters."""

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
        except KeyError:
            unknown = "".join(sorted(set(text) - set(self.stoi)))
            raise UserError(f"{len(unknown)} characters are not in this model's vocabulary: "
                            f"{unknown[:20]!r}") from None

    def encode_batch(self, texts, workers=1):
        return [self.encode(text) for text in texts]

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)

    def token_bytes(self):
        """The UTF-8 bytes of each token's text, by id (for bits per byte)."""
        return np.array([len(c.encode("utf-8", "surrogatepass")) for c in self.chars])

    def to_dict(self):
        return {"type": "char", "chars": "".join(self.chars)}


class GPT2Tokenizer:
    """GPT-2's byte-level BPE, via tiktoken: 50,257 tokens (256 bytes, 50,000 merges and
    <|endoftext|>), from OpenAI's files in tokenizer/ (so it works offline)."""

    def __init__(self):
        self.enc = gpt2_encoding()
        self.vocab_size = self.enc.n_vocab
        self.eot_token = self.enc.eot_token  # <|endoftext|>, 50256

    def encode(self, text):
        return self.enc.encode_ordinary(text)  # "<|endoftext|>" in a text is plain text

    def encode_batch(self, texts, workers=1):
        """Many texts at once, in order, on `workers` threads (tiktoken's own batch encoding)."""
        return self.enc.encode_ordinary_batch(texts, num_threads=workers)

    def decode(self, ids):
        return self.enc.decode(list(ids))

    def token_bytes(self):
        """The bytes of each token's text, by id; <|endoftext|> is no text: 0."""
        return gpt2_token_bytes()

    def to_dict(self):
        return {"type": "gpt2"}


@functools.cache
def gpt2_token_bytes():
    enc = gpt2_encoding()
    return np.array([len(enc.decode_single_token_bytes(i)) if i != enc.eot_token else 0
                     for i in range(enc.n_vocab)])


def tokenizer_from_dict(d):
    """Rebuild a tokenizer saved with to_dict() (as stored in a checkpoint's config.json)."""
    return GPT2Tokenizer() if d["type"] == "gpt2" else CharTokenizer(d["chars"])


# --------------------------------------------------------------------------------------------------
# Documents into token shards

# A corpus is a sequence of documents: web pages, books, reviews. GPT-2 was trained on documents
# laid end to end, each preceded by <|endoftext|> (the character tokenizer has no such token): the
# model sees where a text starts, and learns that what follows owes nothing to what came before.
# Whole documents are held out for validation, chosen by a seeded hash of their text; a single .txt
# file is one document, whose first 90% of characters train and the rest validate.
#
# The tokens go into shards: files of uint16 ids (every GPT-2 id is below 2^16, so a token takes 2
# bytes) behind a header of 256 int32s, [20240520, 1, number of tokens, 0, ...]: llm.c's format,
# which the pre-tokenized FineWeb uses. A shard is written once, checked by its sha256, and
# memory-mapped when training: the sampler below reads only the windows it draws, so 10B tokens
# (20 GB) train as easily as 1M, whatever the RAM.
#
# prepare_in_memory is the whole recipe in a few lines. ring/corpus.py follows the same rules (the
# functions here) at any size: streaming, on threads, resumable, 100M tokens a shard; the tests
# check that both give the same tokens.

SPLIT_SEED = 1337  # which documents are held out does not change with a run's --seed
SHARD_MAGIC, SHARD_VERSION, HEADER_INTS = 20240520, 1, 256


def held_out(text, val_fraction, seed=SPLIT_SEED):
    """Is this document in the validation split? A seeded hash of its text decides: the same
    documents every time, whatever the order or the number of workers, and a document repeated in
    the corpus lands in one split only."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8,
                             key=seed.to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little") < val_fraction * 2**64


def split_documents(texts, val_fraction, one_text=False):
    """(text, split, whether it starts a document) for the documents of a corpus, in order. An empty
    document is left out (it teaches nothing). If none has gone to validation by the last one, the
    last one does, so validation is never empty. one_text: the corpus is one document (a .txt
    file): its first 1 - val_fraction of the characters train, the rest validates, as the same
    document continued."""
    if one_text:
        text = next(iter(texts), "")
        cut = int(len(text) * (1 - val_fraction))
        yield from [(text[:cut], "train", True), (text[cut:], "val", False)] if text.strip() else []
        return
    previous, any_val = None, False
    for text in (t for t in texts if t.strip()):
        if previous is not None:  # one document of lookahead: is this one the last?
            val = held_out(previous, val_fraction)
            any_val |= val
            yield previous, "val" if val else "train", True
        previous = text
    if previous is not None:
        yield previous, "val" if held_out(previous, val_fraction) or not any_val else "train", True


def document_tokens(ids, eot):
    """What a document adds to its split's stream: eot (<|endoftext|>; None for a character model
    or a document continued) and then its token ids, as uint16."""
    return np.asarray(ids if eot is None else [eot, *ids], dtype=np.uint16)


def shard_header(n_tokens):
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = SHARD_MAGIC, SHARD_VERSION, n_tokens
    return header.tobytes()


def read_shard(path):
    """The tokens of a shard as a read-only uint16 memmap (nothing is read until used), once its
    header is llm.c's and the file holds exactly the tokens it announces (else a UserError)."""
    header, size = np.fromfile(path, dtype="<i4", count=HEADER_INTS), Path(path).stat().st_size
    n_tokens = int(header[2]) if len(header) == HEADER_INTS else -1
    whole = size == HEADER_INTS * 4 + 2 * n_tokens
    if header[:2].tolist() != [SHARD_MAGIC, SHARD_VERSION] or not whole:
        raise UserError(f"{path} is not a whole token shard (llm.c's .bin: a header of 256 int32s, "
                        f"{SHARD_MAGIC}, {SHARD_VERSION}, n, then n uint16 tokens; it announces "
                        f"{n_tokens:,} tokens in {size:,} bytes): damaged or cut")
    return np.memmap(path, np.uint16, "r", HEADER_INTS * 4, (n_tokens,)) if n_tokens else \
        np.zeros(0, np.uint16)


def prepare_in_memory(texts, tokenizer, val_fraction=0.1, one_text=False):
    """The token stream of each split, {"train": uint16 array, "val": ...}: the reference of what
    prepare_lm_data writes into shards (ring/corpus.py), in memory and in plain order."""
    streams = {"train": [], "val": []}
    for text, split, starts in split_documents(texts, val_fraction, one_text):
        ids = tokenizer.encode(text)
        streams[split].append(document_tokens(ids, tokenizer.eot_token if starts else None))
    return {split: np.concatenate([np.zeros(0, np.uint16), *pieces])
            for split, pieces in streams.items()}


# --------------------------------------------------------------------------------------------------
# The batch sampler


class TokenStream:
    """The tokens of a split as one sequence, shard after shard (each a memmap: nothing is read
    until used). Shards are consecutive pieces of one stream of documents, so a window may run
    from the end of one shard into the next, as the text does."""

    def __init__(self, shards):
        self.shards = shards
        self.starts = np.cumsum([0, *map(len, shards)])  # where each shard begins in the stream

    def __len__(self):
        return int(self.starts[-1])

    def window(self, start, length):
        """tokens[start : start + length], as int64."""
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        pieces = []
        while length > 0:
            begin = start - self.starts[i]
            piece = self.shards[i][begin : begin + length]
            pieces.append(piece.astype(np.int64))
            start, length, i = start + len(piece), length - len(piece), i + 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def load_tokens(directory, manifest, split):
    """The tokens of a split (train or val) of prepared data, as a TokenStream of its shards."""
    return TokenStream([read_shard(Path(s.get("path") or Path(directory) / s["name"]))
                        for s in manifest["shards"] if s["split"] == split])


class LMBatches:
    """Random windows of block_size + 1 tokens from a token stream: x is the first block_size, y
    the last.

    All randomness comes from one seeded torch.Generator, so the batches are reproducible and the
    state (the generator's) can be saved and restored for an exact resume."""

    def __init__(self, tokens, block_size, batch_size, seed):
        if len(tokens) <= block_size + 1:
            raise UserError(f"only {len(tokens)} tokens, fewer than block_size + 2 = "
                            f"{block_size + 2}")
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def offsets(self, n_batches):
        """Start positions for n_batches batches: (n_batches, batch_size)."""
        high = len(self.tokens) - self.block_size - 1
        return torch.randint(high + 1, (n_batches, self.batch_size), generator=self.generator)

    def batch_at(self, offsets):
        """The (x, y) batch for a row of start positions: x, y (B, T) with y[:, t] = x[:, t+1]."""
        T = self.block_size
        windows = [self.tokens.window(i, T + 1) for i in offsets.tolist()]
        xy = torch.from_numpy(np.stack(windows))  # (B, T + 1)
        return xy[:, :-1].contiguous(), xy[:, 1:].contiguous()

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


# --------------------------------------------------------------------------------------------------
# A dataset's shards, prepared once

TEXT_DATASETS = {  # built-in texts: name -> (the copy shipped here, its sha256, its source)
    "shakespeare": (
        Path(__file__).parent / "datasets" / "shakespeare" / "input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    ),
}
# What ring/corpus.py follows when it writes and checks shards: the rules above.
RULES = corpus.Rules(split_documents, document_tokens, shard_header, read_shard)


def prepare_lm_data(dataset, tokenizer, data_dir, *, val_fraction=0.1, text_column="", workers=0,
                    tokens_needed=0, verify=True):
    """The train and val token shards of a dataset, prepared once and cached in data_dir; returns
    (directory, manifest). The manifest says what the shards hold: source, tokenizer, documents and
    tokens per split, each shard's token count and sha256, all checked before it is returned.

    dataset: a built-in name (shakespeare; fineweb10B or finewebedu10B, pre-tokenized shards from
    the Hugging Face hub, of which only the validation shard and the tokens_needed of training are
    fetched), a .txt file, a folder of .txt files (one document each), a .jsonl, .csv or .tsv
    (optionally .gz) with one document a row in text_column, or a folder of .bin shards. tokenizer:
    "char", "gpt2", or a checkpoint's tokenizer dict (a char model's own vocabulary: its text is
    encoded with it). workers: tokenizer threads (0: one per core). verify: check every shard's
    sha256 (one process of a run does it; the others check sizes)."""
    tok = tokenizer if isinstance(tokenizer, dict) else {"type": tokenizer}
    source = resolve_dataset(dataset, data_dir, tokens_needed)
    return corpus.prepare(source, tok, Path(data_dir), RULES, tokenizer_from_dict,
                          val_fraction=val_fraction, text_column=text_column,
                          workers=workers or os.cpu_count() or 1, verify=verify)


def resolve_dataset(dataset, data_dir, tokens_needed=0):
    """The path of a dataset: a built-in name (shipped, or downloaded into data_dir) or a path."""
    if dataset in TEXT_DATASETS:
        shipped, sha256, url = TEXT_DATASETS[dataset]
        if shipped.is_file():
            return shipped
        return download(url, Path(data_dir) / dataset / "input.txt", sha256,
                        what="the path of a local copy as --dataset")
    if dataset in HUB_CORPORA:
        return fetch_hub_corpus(dataset, Path(data_dir) / dataset, tokens_needed)
    path = Path(dataset)
    if not path.exists():
        names = ", ".join([*TEXT_DATASETS, *HUB_CORPORA])
        raise UserError(f"dataset '{dataset}' is neither a built-in name ({names}) nor an existing "
                        "file or folder")
    return path


# --------------------------------------------------------------------------------------------------
# Batches of labelled texts, for a classifier


def pad_batch(sequences, pad_id):
    """Right-pad token sequences to the longest of them: (x (B, T), lengths (B,)). Only the batch's
    own longest counts, so a batch of tweets stays short whatever the longest text allowed."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    x = torch.full((len(sequences), int(lengths.max())), pad_id, dtype=torch.long)
    for i, s in enumerate(sequences):
        x[i, : len(s)] = torch.as_tensor(np.asarray(s, dtype=np.int64))
    return x, lengths


class LengthBatches:
    """Batches of example indices, epoch after epoch: shuffled, yet of similar lengths.

    Padding a batch to its longest example wastes compute on every shorter one. So each epoch
    shuffles the examples, cuts the shuffled order into pools of 100 batches, sorts each pool by
    length and cuts it into batches, and shuffles the batches. A batch then holds neighbours in
    length while the order of batches, and which examples meet, stays random.

    An epoch's batches are a pure function of (seed, epoch), so the state is just (epoch, position
    in it): a resumed run gets exactly the batches it would have got. min_size (the number of
    processes) folds a short last batch into the one before it, so that every process gets a row.
    """

    POOL = 100  # batches per sorting pool

    def __init__(self, lengths, batch_size, seed, min_size=1):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.min_size = min_size
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
            # a short last batch (only the last pool has one) joins the batch before it, even
            # when that one is the previous pool's: a pool of 1 example is a batch of 1
            if len(batches) > 1 and len(batches[-1]) < self.min_size:
                batches[-2:] = [np.concatenate(batches[-2:])]
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


# --------------------------------------------------------------------------------------------------
# Labelled data: the examples a classifier trains on, is chosen by, and is tested on

TRUNCATIONS = ("head", "tail", "head_tail")


def truncate(ids, n, how):
    """At most n of a text's token ids: its start (head), its end (tail) or both (head_tail).

    A classifier reads one vector per text, so a long text must be cut to the model's context. For
    long reviews, keeping the start and the end beats either alone ("How to Fine-Tune BERT for Text
    Classification?", Sun et al. 2019: the first quarter of the budget from the head, the rest from
    the tail): a review's opening sets the subject and its ending gives the verdict."""
    ids = list(ids)
    if len(ids) <= n:
        return ids
    if how == "head":
        return ids[:n]
    if how == "tail":
        return ids[len(ids) - n :]
    head = n // 4
    return ids[:head] + ids[len(ids) - (n - head) :]


def read_labelled(path, text_column, label_column, tokenizer, block_size, truncation, cache_dir):
    """The examples of a table (ring/tables.py reads, checks and caches its tokens), each cut to
    block_size tokens the truncation's way."""
    split = tables.load_labelled_file(path, text_column, label_column, tokenizer, cache_dir)
    cut = sum(len(t) > block_size for t in split.tokens)
    split.tokens = [np.asarray(truncate(t, block_size, truncation), dtype=np.uint16)
                    for t in split.tokens]
    if cut:
        split.note += f"; {cut:,} texts cut to {block_size} tokens ({truncation})"
    return split


def stratified_choice(labels, counts, seed):
    """Indices of counts[label] examples of each label, chosen at random with seed (sorted)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted(counts):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        chosen.extend(members[: counts[label]].tolist())
    return np.array(sorted(chosen), dtype=np.int64)


def stratified_split(labels, fraction, seed):
    """(kept, held out) indices: `fraction` of each label's examples held out, chosen at random with
    seed, so the held-out part has the same label proportions as the whole."""
    names, sizes = np.unique(labels, return_counts=True)
    counts = {label: round(fraction * n) for label, n in zip(names, sizes)}
    held = stratified_choice(labels, counts, seed)
    return np.setdiff1d(np.arange(len(labels)), held), held


def sample_of(split, n, seed):
    """n examples of a split, in the split's label proportions (largest remainders), seeded: for
    the curve of accuracy against the labels a model learns from, and for quick runs. The whole
    split when n is 0 or not smaller than it."""
    if not 0 < n < len(split):
        return split
    names, sizes = np.unique(split.labels, return_counts=True)
    quota = sizes * n / len(split)
    counts = np.floor(quota).astype(int)
    counts[np.argsort(counts - quota, kind="stable")[: n - counts.sum()]] += 1
    chosen = stratified_choice(split.labels, dict(zip(names, counts.tolist())), seed)
    return split.subset(chosen, f"{n:,} of {split.source}")


@dataclass
class ClassificationData:
    labels: list  # the label names; class i is labels[i]
    splits: dict  # "train", "val", "test" -> tables.LabelledTexts
    notes: list  # what reading and checking the data found, to print (on one process)

    def targets(self, split):
        """The class ids of a split's examples."""
        index = {name: i for i, name in enumerate(self.labels)}
        names = self.splits[split].labels.tolist()
        return np.array([index[name] for name in names], dtype=np.int64)


def load_classification_data(dataset, tokenizer, data_dir, *, val_dataset="", test_dataset="",
                             text_column="", label_column="", val_fraction=0.1, block_size=256,
                             truncation="head", max_train_samples=0, max_val_samples=0,
                             max_test_samples=0, drop_leaked=False, seed=1337):
    """Train, validation and test examples of a classification dataset, and its label names.

    A named dataset brings its own test (and maybe validation) file; --val_dataset / --test_dataset
    name them for a local file. A split that is not given is carved out of train: val_fraction of
    each label, always the same (SPLIT_SEED). Texts shared by two splits are reported (leakage.py):
    they make validation and test scores optimistic; drop_leaked removes them from training.
    max_*_samples: a stratified sample of a split, drawn with seed for train (each seed of a study
    trains on other examples), with SPLIT_SEED for val and test (which stay the same)."""
    paths, default_text, default_label = tables.resolve_cls_dataset(dataset, data_dir)
    paths.update({name: Path(p) for name, p in (("val", val_dataset), ("test", test_dataset)) if p})
    splits = {name: read_labelled(paths[name], text_column or default_text,
                                  label_column or default_label, tokenizer, block_size,
                                  truncation, Path(data_dir) / "cls")
              for name in ("train", "val", "test") if name in paths}
    notes = [s.note for s in splits.values()]
    labels = tables.sorted_labels(splits["train"].labels)
    splits = carve_splits(splits, labels, val_fraction)
    splits, leaks = report_leakage(splits, drop_leaked)
    limits = {"train": max_train_samples, "val": max_val_samples, "test": max_test_samples}
    splits = {name: sample_of(splits[name], limits[name], seed if name == "train" else SPLIT_SEED)
              for name in ("train", "val", "test")}
    data = ClassificationData(labels, splits, notes + leaks)
    for name, split in data.splits.items():
        counts = np.bincount(data.targets(name), minlength=len(labels))
        shown = ", ".join(f"{label} {n:,}" for label, n in zip(labels, counts))
        data.notes.append(f"{name}: {len(split):,} examples ({shown}) from {split.source}")
    return data


def carve_splits(splits, labels, val_fraction):
    """train, val and test: those the dataset lacks carved out of train, stratified. Every label of
    val and test must occur in train (a classifier cannot learn a class it never sees)."""
    if len(labels) < 2:
        raise UserError(f"{splits['train'].source}: every example has the label '{labels[0]}'; a "
                        "classifier needs at least two classes")
    for name in ("test", "val"):
        if name not in splits:
            train = splits["train"]
            kept, held = stratified_split(train.labels, val_fraction, SPLIT_SEED)
            if len(held) == 0:
                raise UserError(f"val_fraction {val_fraction} of {len(train)} examples leaves no "
                                f"{name} examples")
            splits[name] = train.subset(held, f"{val_fraction:.0%} of {train.source}")
            splits["train"] = train.subset(kept, train.source)
    for name in ("val", "test"):
        unseen = sorted(set(splits[name].labels.tolist()) - set(labels))
        if unseen:
            rows = int((splits[name].labels == unseen[0]).sum())
            rows = "1 row" if rows == 1 else f"{rows} rows"
            more = f" and {len(unseen) - 1} more new labels" if len(unseen) > 1 else ""
            raise UserError(f"{splits[name].source}: label '{unseen[0]}' ({rows}){more} never "
                            f"occurs in the training data (labels: {', '.join(labels)})")
    return {name: splits[name] for name in ("train", "val", "test")}


# --------------------------------------------------------------------------------------------------
# python data.py DATASET: prepare ahead what train.py --dataset=DATASET prepares on first use


def main(argv=None):
    args = parse_config(PrepareSettings, argv, prog="data.py",
                        description="Prepare a dataset's token shards once, as train.py would on "
                                    "first use (the same options find the same shards).")
    if args.dataset in HUB_CORPORA:
        fetch_hub_corpus(args.dataset, Path(args.data_dir) / args.dataset, shards=args.shards)
    directory, manifest = prepare_lm_data(args.dataset, args.tokenizer, args.data_dir,
                                          val_fraction=args.val_fraction,
                                          text_column=args.text_column, workers=args.workers)
    documents = manifest["documents"]
    held = f" ({documents['train']:,} and {documents['val']:,} documents)" if documents else ""
    print(f"{directory}: {manifest['train_tokens']:,} train and {manifest['val_tokens']:,} val "
          f"tokens{held} in {len(manifest['shards'])} shards")


@dataclass
class PrepareSettings:
    dataset: str = setting("a built-in name (shakespeare, fineweb10B, finewebedu10B), a .txt file, "
                           "a folder of .txt files, a .jsonl/.csv/.tsv(.gz) of documents or a "
                           "folder of .bin shards", "", "required")
    tokenizer: str = setting("the tokenizer (as train.py's --tokenizer)", "char", ("char", "gpt2"))
    text_column: str = setting("the text column(s) of a table of documents (empty: guessed)", "")
    val_fraction: float = setting("share of the documents held out for validation", 0.1,
                                  "(0, 0.5)")
    data_dir: str = setting("where downloads and token shards go", "data")
    workers: int = setting("tokenizer threads (0: one per core); the shards are the same bytes "
                           "for any number", 0, ">= 0")
    shards: int = setting("fineweb10B, finewebedu10B: how many training shards of 100M tokens to "
                          "download ahead (0: one)", 0, ">= 0")

    POSITIONAL = ("dataset",)


if __name__ == "__main__":
    run_main(main)

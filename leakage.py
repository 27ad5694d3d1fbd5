"""Leakage between dataset splits: test texts that are (nearly) training texts.

A classifier does well on a test post it has already seen in training, so such duplicates
inflate the measured accuracy. Byte-identical checks miss most of them: a repost gets a new
short link, curly quotes or one more full stop. So we compare texts after `normalise`, and find
near duplicates with MinHash + LSH, checking every candidate pair with the exact Jaccard
similarity: what MinHash misses is rare (see the banding comment), what we report is real.
"""
import html
import itertools
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ring.config import UserError

# ---------------------------------------------------------------------------- normalisation
# These patterns run on casefolded text. Each starts with a fixed character, so `re` can skip
# straight to possible matches: 10x faster on long reviews than one starting with \b or (?<!).
# URLs: a link shortener (t.co) gives every repost a new URL, and tweets get cut off mid-link
# ("... infection: http"), so a link says nothing about the text. A bare http(s) word goes too.
_URL = re.compile(r"(?:https?\b|www\.|t\.co/)\S*")
# @handles and a leading retweet marker "RT @name:": the same post gets forwarded by, or
# addressed to, other accounts. (An e-mail address loses its @domain part: harmless.)
_RETWEET = re.compile(r"^\s*rt\s+(?=@)")
_HANDLE = re.compile(r"@\w+")
# Thousands separators: "5,000" and "5000" are the same number. (A comma after a digit and
# before exactly three digits; the look-behind comes after the comma to keep the fast start.)
_THOUSANDS = re.compile(r",(?<=\d,)(?=\d{3}(?!\d))")
# Question marks inside a word stand for a character lost to a broken encoding: "Trump???s"
# was "Trump’s" (3 UTF-8 bytes, 3 "?"s), so they are deleted like the apostrophe they replace.
_LOST = re.compile(r"\?(?<=\w\?)\?*(?=\w)")
# HTML tags such as IMDB's <br />: whether markup was kept depends on the scraper.
_TAG = re.compile(r"</?[a-z][^<>]*>")
# Apostrophes are deleted, not turned into spaces, so "don't", "don’t", "don`t" and "dont"
# all become "dont". (The backtick and acute accent are symbols, not punctuation, in Unicode.)
_APOSTROPHES = set("'‘’`´ʼ")


class _CharTable(dict):
    """A `str.translate` table filled in as characters are first seen: all of Unicode."""

    def __missing__(self, code: int):
        char, category = chr(code), unicodedata.category(chr(code))
        # Cf: invisible, e.g. zero-width space. U+FFFD: bytes one copy lost to a bad encoding.
        if char in _APOSTROPHES or category == "Cf" or char == "\ufffd":
            self[code] = None                           # None means: delete
        elif category[0] == "P" or category == "Cc":   # any punctuation or quote; control chars
            self[code] = " "                            # a space, so "end.Next" stays 2 words
        else:
            self[code] = char  # letters and digits of every script, emoji, currency signs: content
        return self[code]


_CHARS = _CharTable()


def normalise(text: str) -> str:
    """Reduce a text to what a reader would call its content: same post, same string."""
    text = html.unescape(text)                   # "&amp;" and "&" are the same character
    text = unicodedata.normalize("NFKC", text)   # full-width letters, ligatures, no-break space
    text = text.casefold()                       # lower case that also knows "ß" is "ss"
    for pattern, replacement in ((_TAG, " "), (_URL, " "), (_RETWEET, ""), (_HANDLE, " "),
                                 (_THOUSANDS, ""), (_LOST, "")):
        text = pattern.sub(replacement, text)
    text = text.translate(_CHARS)                # punctuation, quotes, invisible characters
    return " ".join(text.split())                # any run of Unicode whitespace -> one space


def shingles(text: str, ngram: int = 2) -> set[str]:
    """The word n-grams of the normalised text: Jaccard similarity is |A & B| / |A | B| of
    these sets. A text shorter than `ngram` words is one shingle, the whole text, so it can
    only match exactly. (Reference version, to read and test; `_shingle_hashes` is fast.)"""
    words = normalise(text).split()
    return {" ".join(words[i:i + ngram]) for i in range(max(len(words) - ngram + 1, 1))} - {""}


# ---------------------------------------------------------------------------- MinHash + LSH
# A pair with Jaccard similarity s agrees on one MinHash value with probability s, on a band of
# r values with probability s^r, and shares at least one of b bands (becomes a candidate) with
# probability 1 - (1 - s^r)^b. With b = 20 bands of r = 5 rows (100 hash functions):
#   s = 0.2 -> 0.006,   s = 0.5 -> 0.47,   s = 0.8 -> 0.9996,   s = 0.9 -> 1 - 2e-8.
# So we miss about 1 in 2,800 pairs sitting exactly at 0.8 and fewer above, while unrelated
# pairs rarely become candidates. A lower threshold gets fewer rows per band (`_rows_for`).
BANDS = 20


def _rows_for(threshold: float) -> int:
    """Most rows per band (fewest candidates to check) that still catch 99.9% at threshold."""
    return next((r for r in (5, 4, 3, 2) if 1 - (1 - threshold**r) ** BANDS >= 0.999), 1)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads the bits of x so similar inputs get unrelated hashes."""
    for shift, multiplier in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = (x ^ (x >> np.uint64(shift))) * np.uint64(multiplier)  # uint64 wraps: mod 2^64
    return x ^ (x >> np.uint64(31))


def _shingle_hashes(texts: list[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the word n-grams of all (normalised, non-empty) texts in one array:
    text t owns hashes[offsets[t]:offsets[t + 1]]. The same shingles as `shingles`."""
    # Number the words by first appearance (deterministic, unlike hash()). n - 1 padding words
    # "\0" (never in a normalised text) after each text: its last n-gram, or its only one when
    # it is shorter than n words, ends there. One join/split and C-level dict calls: a Python
    # loop over 11M IMDB words is 2x slower.
    words = (" \0" * (ngram - 1) + " ").join(texts + [""]).split()
    vocab = {word: number for number, word in enumerate(dict.fromkeys(words))}
    ids = np.fromiter(map(vocab.__getitem__, words), np.uint64, count=len(words))
    h = np.zeros(len(ids) - ngram + 1, dtype=np.uint64)
    for j in range(ngram):  # combine the n word ids from each position on
        h = _mix(h * np.uint64(0x9E3779B97F4A7C15) + ids[j:len(h) + j])
    lengths = np.array([t.count(" ") + 1 for t in texts])  # normalised: one space per gap
    counts = np.maximum(lengths - ngram + 1, 1)              # shingles per text
    offsets = np.concatenate([[0], np.cumsum(counts)])
    first = np.cumsum(lengths + ngram - 1) - lengths - ngram + 1  # each text's first word
    return h[np.repeat(first - offsets[:-1], counts) + np.arange(offsets[-1])], offsets


def _minhash(hashes: np.ndarray, offsets: np.ndarray, n_hash: int, seed: int) -> np.ndarray:
    """(texts, n_hash) signatures. Hash i maps (well-mixed) x to the top 32 bits of a_i x + b_i
    mod 2^64; two texts share its minimum with probability ~ their Jaccard similarity."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, size=n_hash, dtype=np.uint64) | np.uint64(1)  # odd
    b = rng.integers(0, 2**64, size=n_hash, dtype=np.uint64)
    signatures = np.empty((len(offsets) - 1, n_hash), dtype=np.uint32)
    # Work through ~1 MB of shingles at a time: it stays in the CPU cache across the n_hash
    # passes, which is 3x faster than streaming the whole 90 MB array (IMDB) 100 times.
    lo = 0
    while lo < len(signatures):  # texts lo..hi-1 form one chunk
        hi = max(int(np.searchsorted(offsets, offsets[lo] + 2**17, "right")) - 1, lo + 1)
        chunk, starts = hashes[offsets[lo]:offsets[hi]], offsets[lo:hi] - offsets[lo]
        for i in range(n_hash):
            values = (chunk * a[i] + b[i]) >> np.uint64(32)
            signatures[lo:hi, i] = np.minimum.reduceat(values, starts)
        lo = hi
    return signatures


def _candidates(bands: np.ndarray):
    """The pairs of texts u < v whose (texts, bands, rows) MinHash values agree on all the rows of
    some band, each once: in the first such band. No set of pairs is kept, so memory is linear in
    the texts however large the buckets (a bucket of n texts still yields n (n - 1) / 2 pairs)."""
    for band in range(bands.shape[1]):
        buckets = defaultdict(list)  # the band's values -> the texts that have them, ascending
        for u, values in enumerate(map(tuple, bands[:, band].tolist())):
            buckets[values].append(u)
        for bucket in (np.array(b) for b in buckets.values() if len(b) > 1):
            for n, u in enumerate(bucket[:-1].tolist()):
                later = bucket[n + 1:]  # less those that shared an earlier band: yielded there
                later = later[(bands[later, :band] != bands[u, :band]).any(axis=2).all(axis=1)]
                yield from ((u, v) for v in later.tolist())


def _near_pairs(texts, where, threshold, ngram, seed):
    """[(u, v, similarity)] for distinct texts u < v with Jaccard >= threshold that are not all
    in one split (where[u] is {split: rows} of text u)."""
    hashes, offsets = _shingle_hashes(texts, ngram)
    rows = _rows_for(threshold)
    signatures = _minhash(hashes, offsets, BANDS * rows, seed)
    found = []
    for u, v in _candidates(signatures.reshape(len(texts), BANDS, rows)):
        if len(where[u].keys() | where[v].keys()) == 1:
            continue  # both texts occur in one and the same split only: not leakage
        x, y = (np.unique(hashes[offsets[t]:offsets[t + 1]]) for t in (u, v))
        common = np.intersect1d(x, y, assume_unique=True).size
        similarity = common / (x.size + y.size - common)  # exact, up to hash clashes
        if similarity >= threshold:  # MinHash only proposes; this check decides
            found.append((u, v, similarity))
    return found


# ---------------------------------------------------------------------------- the report
@dataclass
class Duplicates:
    """Duplicates of one kind ("exact" or "near") between an earlier split a and a later b."""
    pairs: int = 0  # pairs (row of a, row of b)
    rows_b: set[int] = field(default_factory=set)  # rows of b with such a duplicate in a
    examples: list = field(default_factory=list)   # (row i of a, row j of b, similarity, raw
    # text i, raw text j): the first pair of each match of two distinct texts, the first few by j


@dataclass
class LeakageReport:
    sizes: dict[str, int]
    pairs: dict[tuple[str, str], dict[str, Duplicates]]  # {(a, b): {"exact": .., "near": ..}}
    within_exact: dict[str, int]  # rows that repeat an earlier row of the same split
    empty: dict[str, int]         # rows empty after normalising (e.g. only a link): skipped
    train_split: str
    train_drop: set[int]  # rows of train_split that duplicate a row of another split
    threshold: float
    ngram: int


def find_leakage(splits: dict[str, list[str]], threshold: float = 0.8, seed: int = 0,
                 ngram: int = 2, train_split: str | None = None,
                 n_examples: int = 5) -> LeakageReport:
    """Exact duplicates (equal after `normalise`) and near ones (Jaccard >= threshold, and
    not exact) between every two splits, in the dict's order. Dropping `train_drop` from
    `train_split` (default: the first split) removes every leaked text from training."""
    names, groups, empty = list(splits), {}, dict.fromkeys(splits, 0)
    for name, rows in splits.items():  # rows whose texts normalise equal: one distinct text
        for index, norm in enumerate(map(normalise, rows)):
            if norm:
                groups.setdefault(norm, {}).setdefault(name, []).append(index)
            else:
                empty[name] += 1
    where = list(groups.values())  # where[u] = {split: rows holding distinct text u}, ascending
    # Near duplicates among distinct texts, so an exact pair is never also counted as near.
    near = _near_pairs(list(groups), where, threshold, ngram, seed) if groups else []
    matches = [(u, u, 1.0, "exact") for u in range(len(where))]
    matches += [m for u, v, s in near for m in ((u, v, s, "near"), (v, u, s, "near"))]
    within = {n: sum(max(len(w.get(n, ())) - 1, 0) for w in where) for n in names}
    report = LeakageReport({n: len(splits[n]) for n in names}, {}, within, empty,
                           train_split or names[0], set(), threshold, ngram)
    for a, b in itertools.combinations(names, 2):
        dups = report.pairs[a, b] = {"exact": Duplicates(), "near": Duplicates()}
        for u, v, s, kind in matches:
            rows_a, rows_b = where[u].get(a), where[v].get(b)
            if not (rows_a and rows_b):
                continue
            # A text that 1,000 rows of a and 1,000 of b share is a million pairs: counted from
            # the group sizes, never listed. Its example: its first row of a and of b.
            dups[kind].pairs += len(rows_a) * len(rows_b)
            dups[kind].rows_b.update(rows_b)
            dups[kind].examples.append((rows_b[0], rows_a[0], s))
            if report.train_split in (a, b):
                report.train_drop.update(rows_a if a == report.train_split else rows_b)
        dups["near"].rows_b -= dups["exact"].rows_b  # count each leaked row of b only once
        for dup in dups.values():  # the matches whose first rows of b come first
            dup.examples = [(i, j, s, splits[a][i], splits[b][j])
                            for j, i, s in sorted(dup.examples)[:n_examples]]
    return report


def format_report(report: LeakageReport, max_examples: int = 3) -> str:
    """A compact, human-readable summary of a LeakageReport."""
    def per_split(counts):
        return ", ".join(f"{name} {count:,}" for name, count in counts.items())

    def snippet(text, width=80):  # (not textwrap.shorten: it drops a long first word whole)
        text = " ".join(text.split())
        return repr(text if len(text) <= width else text[:width - 1] + "…")

    lines = [f"Leakage check ({per_split(report.sizes)} rows); near duplicate = Jaccard "
             f">= {report.threshold:.2f} on word {report.ngram}-grams",
             f"exact duplicates within a split: {per_split(report.within_exact)}"]
    if any(report.empty.values()):
        lines.append(f"empty after normalising, skipped: {per_split(report.empty)}")
    for (a, b), dups in report.pairs.items():
        leaked = sum(len(dup.rows_b) for dup in dups.values())
        lines.append(f"{a} & {b}: {leaked:,} {b} rows ({leaked / max(report.sizes[b], 1):.1%}) "
                     f"have a duplicate in {a}")
        for kind, dup in dups.items():
            lines.append(f"  {kind}: {len(dup.rows_b):,} {b} rows, {dup.pairs:,} pairs")
            for i, j, s, text_a, text_b in dup.examples[:max_examples]:
                lines += [f"    {s:.2f} {a}#{i}: {snippet(text_a)}",
                          f"         {b}#{j}: {snippet(text_b)}"]
    lines.append(f"drop {len(report.train_drop):,} {report.train_split} rows to remove every "
                 "leaked text from training")
    return "\n".join(lines)


def report_leakage(splits, drop_leaked):
    """The texts that splits ({name: tables.LabelledTexts}) share with train, reported; with
    drop_leaked, the training split without them. Returns (splits, lines to print)."""
    report = find_leakage({name: s.texts for name, s in splits.items()}, train_split="train")
    if not any(d.rows_b for dups in report.pairs.values() for d in dups.values()):
        return splits, []
    advice = "" if drop_leaked else " (--drop_leaked=True removes them from train)"
    notes = [format_report(report), "warning: leakage: scores on a split that shares texts with "
             f"train are optimistic{advice}"]
    train, drop = splits["train"], report.train_drop
    if drop_leaked and drop:
        if len(drop) == len(train):
            raise UserError(f"every one of the {len(train):,} training texts is also in another "
                            "split: --drop_leaked=True leaves nothing to train on")
        kept = [i for i in range(len(train)) if i not in drop]
        source = f"{train.source} less {len(drop):,} texts shared with other splits"
        splits = {**splits, "train": train.subset(kept, source)}
    return splits, notes

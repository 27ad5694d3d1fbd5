"""Leakage between dataset splits: test texts that are (nearly) training texts.

A classifier does well on a test post it has already seen in training, so such duplicates
inflate the measured accuracy. Byte-identical checks miss most of them: a repost gets a new
short link, curly quotes or one more full stop. So we compare texts after `normalise`, and find
near duplicates with MinHash + LSH, checking every candidate pair with the exact Jaccard
similarity: what MinHash misses is rare (see the banding comment), what we report is real.
"""
from __future__ import annotations

import functools
import hashlib
import html
import itertools
import re
import unicodedata
from collections import Counter, defaultdict
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
        char = chr(code)
        category = unicodedata.category(char)
        # Cf: invisible, e.g. zero-width space. U+FFFD: bytes one copy lost to a bad encoding.
        if char in _APOSTROPHES or category == "Cf" or char == "\ufffd":
            out = None                                  # None means: delete
        elif category[0] == "P" or category == "Cc":   # any punctuation or quote; control chars
            out = " "                                   # a space, so "end.Next" stays 2 words
        else:
            out = char  # letters and digits of every script, emoji, currency signs: content
        self[code] = out
        return out


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
    # Number the words by first appearance (deterministic, unlike hash()); 0 is for padding.
    # One join/split and C-level dict calls: a Python loop over 11M IMDB words is 2x slower.
    words = " ".join(texts).split()
    vocab = {word: number for number, word in enumerate(dict.fromkeys(words), start=1)}
    ids = np.fromiter(map(vocab.__getitem__, words), np.uint64, count=len(words))
    ids = np.concatenate([ids, np.zeros(ngram, np.uint64)])  # padding after the last text
    lengths = np.array([t.count(" ") + 1 for t in texts])  # normalised: one space per gap
    word_end = np.cumsum(lengths)
    counts = np.maximum(lengths - ngram + 1, 1)              # shingles per text
    offsets = np.concatenate([[0], np.cumsum(counts)])
    # For each shingle: the position of its first word, and where its text ends.
    pos = np.repeat(word_end - lengths - offsets[:-1], counts) + np.arange(offsets[-1])
    end = np.repeat(word_end, counts)
    h = np.zeros(offsets[-1], dtype=np.uint64)
    for j in range(ngram):  # combine the n word ids; words past the text's end count as 0
        h = _mix(h * np.uint64(0x9E3779B97F4A7C15) + np.where(pos + j < end, ids[pos + j], 0))
    return h, offsets


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


def _near_pairs(texts, masks, threshold, ngram, seed):
    """[(u, v, similarity)] for distinct texts u < v with Jaccard >= threshold that occur in
    different splits (masks[u] is the bit set of the splits text u occurs in); #candidates. A pair
    is a candidate in the first band where the two texts share a bucket, and is checked there,
    once. So no set of candidate pairs is kept: memory is linear in the number of texts, however
    large the buckets (a bucket of n texts still costs n (n - 1) / 2 checks)."""
    hashes, offsets = _shingle_hashes(texts, ngram)
    rows = _rows_for(threshold)
    signatures = _minhash(hashes, offsets, BANDS * rows, seed)
    keys = np.zeros((BANDS, len(signatures)), dtype=np.uint64)  # texts with the same `rows`
    for band in range(BANDS):                                   # values in a band: one key
        for column in signatures[:, band * rows:(band + 1) * rows].T:
            keys[band] = _mix(keys[band] + column)  # a rare clash is harmless
    found, candidates = [], 0
    for band in range(BANDS):
        order = np.argsort(keys[band], kind="stable")
        ranked = keys[band][order]
        starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1], True])
        shared = np.flatnonzero(np.diff(starts) > 1)  # buckets holding 2 or more texts
        for lo, hi in zip(starts[shared].tolist(), starts[shared + 1].tolist()):
            bucket = np.sort(order[lo:hi])
            for n, u in enumerate(bucket[:-1].tolist()):
                later = bucket[n + 1:]
                # pairs that shared a bucket in an earlier band were candidates there
                later = later[(keys[:band, later] != keys[:band, [u]]).all(axis=0)]
                candidates += later.size
                for v in later.tolist():
                    if masks[u] == masks[v] and masks[u] & (masks[u] - 1) == 0:
                        continue  # both texts occur in one and the same split only: not leakage
                    x, y = (np.unique(hashes[offsets[t]:offsets[t + 1]]) for t in (u, v))
                    common = np.intersect1d(x, y, assume_unique=True).size
                    similarity = common / (x.size + y.size - common)  # exact, up to hash clashes
                    if similarity >= threshold:  # MinHash only proposes; this check decides
                        found.append((u, v, similarity))
    return sorted(found), candidates


# ---------------------------------------------------------------------------- the report
@dataclass
class Example:
    """One duplicate pair: row index_a of the earlier split and row index_b of the later."""
    index_a: int
    index_b: int
    similarity: float
    text_a: str  # the start of each raw text
    text_b: str
    label_a: object = None
    label_b: object = None


@dataclass
class Duplicates:
    """Duplicates of one kind ("exact" or "near") between an earlier split a and a later b."""
    pairs: int = 0           # (row of a, row of b) pairs
    rows_b: set[int] = field(default_factory=set)  # rows of b with such a duplicate in a
    byte_identical: int = 0  # pairs identical even before normalising
    same_label: int = 0      # pairs whose labels agree (both counts stay 0 without labels)
    diff_label: int = 0
    examples: list[Example] = field(default_factory=list)

    def add(self, rows_a: _Rows, rows_b: _Rows):
        """Count the row pairs of one match of distinct texts by multiplying group sizes: memory
        stays linear in the rows."""
        pairs = len(rows_a.indices) * len(rows_b.indices)
        self.pairs += pairs
        self.rows_b.update(rows_b.indices)
        self.byte_identical += sum(len(i) * len(rows_b.by_raw.get(raw, ()))
                                   for raw, i in rows_a.by_raw.items())
        if rows_a.labels is not None:
            same = sum(count * rows_b.labels[label] for label, count in rows_a.labels.items())
            self.same_label += same
            self.diff_label += pairs - same


@dataclass
class LeakageReport:
    sizes: dict[str, int]
    pairs: dict[str, dict[str, Duplicates]]  # {"train & test": {"exact": .., "near": ..}, ..}
    within_exact: dict[str, int]  # rows that repeat an earlier row of the same split
    empty: dict[str, int]         # rows empty after normalising (e.g. only a link): skipped
    train_split: str
    train_drop: set[int]  # rows of train_split that duplicate a row of another split
    threshold: float
    ngram: int
    has_labels: bool
    candidates: int       # candidate pairs from MinHash, before the exact check


def find_leakage(splits: dict[str, list[str]], labels: dict[str, list] | None = None,
                 threshold: float = 0.8, seed: int = 0, ngram: int = 2,
                 train_split: str | None = None, n_examples: int = 5) -> LeakageReport:
    """Exact duplicates (equal after `normalise`) and near ones (Jaccard >= threshold, and
    not exact) between every two splits, in the dict's order. Dropping `train_drop` from
    `train_split` (default: the first split) removes every leaked text from training."""
    names = list(splits)
    texts, where, empty = _distinct_texts(splits)  # 1. rows whose texts normalise equal
    within = {n: sum(max(len(w.get(n, ())) - 1, 0) for w in where) for n in names}
    # 2. Near duplicates among distinct texts, so an exact pair is never also counted as near.
    masks = [sum(1 << names.index(n) for n in w) for w in where]
    near, candidates = _near_pairs(texts, masks, threshold, ngram, seed) if texts else ([], 0)
    matches = [(u, u, 1.0, "exact") for u, w in enumerate(where) if len(w) > 1]
    matches += [m for u, v, s in near for m in ((u, v, s, "near"), (v, u, s, "near"))]
    # 3. The pairs of rows the matches stand for, for every two splits a, b: a text that 1,000 rows
    # of a and 1,000 of b share is a million pairs, counted (Duplicates.add), never listed.
    report = LeakageReport({n: len(splits[n]) for n in names}, {}, within, empty,
                           train_split or names[0], set(), threshold, ngram,
                           labels is not None, candidates)

    @functools.cache  # (u, split) -> _Rows, made when first needed
    def rows_of(u, split):
        return _Rows(where[u][split], splits[split], None if labels is None else labels[split],
                     n_examples)

    for a, b in itertools.combinations(names, 2):
        dups = report.pairs[f"{a} & {b}"] = {"exact": Duplicates(), "near": Duplicates()}
        first = {"exact": [], "near": []}  # the first n_examples pairs in the examples' order
        for u, v, s, kind in matches:
            if a not in where[u] or b not in where[v]:
                continue
            rows_a, rows_b = rows_of(u, a), rows_of(v, b)
            dups[kind].add(rows_a, rows_b)
            if report.train_split in (a, b):
                report.train_drop.update((rows_a if report.train_split == a else rows_b).indices)
            found = _first_pairs(rows_a, rows_b, s, splits[a], splits[b], n_examples)
            first[kind] = sorted(first[kind] + found)[:n_examples]
        dups["near"].rows_b -= dups["exact"].rows_b  # count each leaked row of b only once
        for kind, dup in dups.items():
            dup.examples = [Example(i, j, s, _snippet(splits[a][i]), _snippet(splits[b][j]),
                                    *((labels[a][i], labels[b][j]) if labels is not None else ()))
                            for _, s, j, i in first[kind]]
    return report


def _distinct_texts(splits):
    """Rows whose texts normalise equal share one distinct text, numbered u = 0, 1, ...: (the
    distinct texts, where[u] = {split: [row indices]}, {split: rows empty after normalising})."""
    groups = {}  # 8-byte blake2b of the normalised text -> (text, {split: [row indices]})
    empty = dict.fromkeys(splits, 0)
    for name, rows in splits.items():
        for index, raw in enumerate(rows):
            norm = normalise(raw)
            if not norm:
                empty[name] += 1
                continue
            key = hashlib.blake2b(norm.encode(), digest_size=8).digest()  # clash: ~1 in 10^10
            groups.setdefault(key, (norm, defaultdict(list)))[1][name].append(index)
    return [t for t, _ in groups.values()], [w for _, w in groups.values()], empty


class _Rows:
    """The rows of one split that hold one distinct text, grouped as counting their pairs needs:
    by raw text (byte-identical pairs) and by label (same-label pairs)."""

    def __init__(self, indices, raw, labels, n_examples):
        self.indices = indices  # ascending
        self.by_raw = {}        # raw text -> its rows, ascending; in the order first met
        for i in indices:
            self.by_raw.setdefault(raw[i], []).append(i)
        self.labels = Counter(labels[i] for i in indices) if labels is not None else None
        # The first n rows of each of the first n + 1 raw texts: the first n rows whose raw text
        # is not some given one are among them (a row of a later raw text has at least n rows of
        # other raw texts before it).
        heads = itertools.islice(self.by_raw.values(), n_examples + 1)
        self.head = sorted(i for rows in heads for i in rows[:n_examples])


def _first_pairs(rows_a, rows_b, similarity, raw_a, raw_b, n):
    """The first n row pairs (i of rows_a, j of rows_b) in the examples' order, as sort keys
    (byte-identical, similarity, j, i): pairs that differ as raw text first, then by j and i.
    It stops at the n-th row of b that makes a pair of differing raw texts: a few rows, unless
    most of b is byte-identical to all of a."""
    differ, same = [], []
    for j in rows_b.indices:
        if len(differ) >= n:
            break  # n pairs that differ come before every byte-identical one: done
        text = raw_b[j]
        if len(rows_a.by_raw) > 1 or text not in rows_a.by_raw:  # some i differs from j
            differ += [(False, similarity, j, i) for i in rows_a.head
                       if raw_a[i] != text][:n - len(differ)]
        if len(same) < n:
            same += [(True, similarity, j, i) for i in rows_a.by_raw.get(text, [])[:n - len(same)]]
    return differ + same


def _snippet(text: str, width: int = 80) -> str:
    text = " ".join(text.split())  # (not textwrap.shorten: it drops a long first word whole)
    return text if len(text) <= width else text[:width - 1] + "…"


def format_report(report: LeakageReport, max_examples: int = 3) -> str:
    """A compact, human-readable summary of a LeakageReport."""
    def per_split(counts):
        return ", ".join(f"{name} {count:,}" for name, count in counts.items())

    lines = [f"Leakage check ({per_split(report.sizes)} rows); near duplicate = Jaccard "
             f">= {report.threshold:.2f} on word {report.ngram}-grams",
             f"exact duplicates within a split: {per_split(report.within_exact)}"]
    if any(report.empty.values()):
        lines.append(f"empty after normalising, skipped: {per_split(report.empty)}")
    for key, dups in report.pairs.items():
        a, b = key.split(" & ")
        leaked = sum(len(dup.rows_b) for dup in dups.values())
        lines.append(f"{key}: {leaked:,} {b} rows ({leaked / max(report.sizes[b], 1):.1%}) "
                     f"have a duplicate in {a}")
        for kind, dup in dups.items():
            line = f"  {kind}: {len(dup.rows_b):,} {b} rows, {dup.pairs:,} pairs"
            line += f" ({dup.byte_identical:,} byte-identical)" if kind == "exact" else ""
            if report.has_labels:
                line += f", labels same {dup.same_label:,} / different {dup.diff_label:,}"
            lines.append(line)
            for e in dup.examples[:max_examples]:
                tag = f" [{e.label_a} / {e.label_b}]" if report.has_labels else ""
                lines.append(f"    {e.similarity:.2f}{tag} {a}#{e.index_a}: {e.text_a!r}")
                lines.append(f"    {'':4}{' ' * len(tag)} {b}#{e.index_b}: {e.text_b!r}")
    lines.append(f"drop {len(report.train_drop):,} {report.train_split} rows to remove every "
                 "leaked text from training")
    return "\n".join(lines)


def report_leakage(splits, drop_leaked):
    """The texts that splits ({name: tables.LabelledTexts}) share with train, reported; with
    drop_leaked, the training split without them. Returns (splits, lines to print)."""
    report = find_leakage({name: s.texts for name, s in splits.items()},
                          {name: s.labels.tolist() for name, s in splits.items()},
                          train_split="train")
    notes = []
    if any(d.rows_b for dups in report.pairs.values() for d in dups.values()):
        advice = "" if drop_leaked else " (--drop_leaked=True removes them from train)"
        notes += [format_report(report), "warning: leakage: scores on a split that shares texts "
                  f"with train are optimistic{advice}"]
    if drop_leaked and report.train_drop:
        train = splits["train"]
        kept = np.setdiff1d(np.arange(len(train)), np.asarray(sorted(report.train_drop)))
        if not len(kept):
            raise UserError(f"every one of the {len(train):,} training texts is also in another "
                            "split: --drop_leaked=True leaves nothing to train on")
        source = f"{train.source} less {len(train) - len(kept):,} texts shared with other splits"
        splits = {**splits, "train": train.subset(kept, source)}
    return splits, notes

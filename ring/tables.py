"""
Labelled tables for classification: the named datasets and their downloads (resolve_cls_dataset),
reading tables of any kind (CSV, TSV, JSON Lines, gzip-compressed or not: table_rows, read_table),
and their tokens (load_labelled_file). Each file is read, checked and tokenized once, and cached in
data_dir/cls/, keyed by the file's sha256 and the options, so later runs start at once. What a
classifier then makes of the examples (cut to its context, split, sampled, checked for leaks) is
data.py's.
"""

import csv
import gzip
import hashlib
import io
import json
import os
import re
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ring.config import UserError
from ring.download import download, sha256_of
from ring.files import parse_json, write_file

# Named datasets: where their files come from, and which columns hold the text and the label.
_TWEETS = ("https://huggingface.co/datasets/mteb/tweet_sentiment_extraction/resolve/"
           "d604517c81ca91fe16a244d1248fc021f9ecee7a")
_FAKE_NEWS = ("https://raw.githubusercontent.com/diptamath/covid_fake_news/"
              "030deba36d118c124709fd72d7d5f14c7bc69053/data")
CLS_DATASETS = {
    # Kaggle's Tweet Sentiment Extraction (27,481 / 3,534 tweets), as published by MTEB, pinned to a
    # revision of the hub's repository (a file at a fixed revision cannot change: no sha256 needed).
    "tweet_sentiment": {
        "files": {split: (f"{_TWEETS}/{split}.jsonl", None, None) for split in ("train", "test")},
        # label_text has the names (negative, neutral, positive); 'label' has their ids
        "text_column": "text", "label_column": "label_text",
    },
    # CONSTRAINT-2021 COVID-19 fake news (Patwa et al.): 6,420 / 2,140 / 2,140 posts, real or fake.
    "fake_news": {
        "files": {
            "train": (f"{_FAKE_NEWS}/Constraint_Train.csv",
                      "441f3985bb76eb69d1e488cf292f80add96c4dddfa43ba7c060889607837ddce", 1253562),
            "val": (f"{_FAKE_NEWS}/Constraint_Val.csv",
                    "c610931d0641fe1d9b9495c453f99ae7aa45bf294c7db6333ec84ecebb0b6c3c", 412789),
            "test": (f"{_FAKE_NEWS}/english_test_with_labels.csv",
                     "7152fc681884a22013218c5dd9a73c6fd99d4b084705723e1e49d18c97ca8281", 424950),
        },
        "text_column": "tweet", "label_column": "label",
    },
    # The Large Movie Review Dataset (Maas et al. 2011): 25,000 / 25,000 reviews, positive or
    # negative; one archive of 100,000 small files, turned into two CSV files once.
    "imdb": {
        "archive": ("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                    "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe", 84125825),
        "files": {"train": "train.csv.gz", "test": "test.csv.gz"},
        "text_column": "review", "label_column": "sentiment",
    },
}

# Column names tried, in order, when --text_column / --label_column are not given. label_text comes
# before label because datasets that have both keep the names there and the ids in label.
TEXT_COLUMNS = ("text", "sentence", "review", "tweet", "content", "body", "document", "comment")
LABEL_COLUMNS = ("label_text", "label", "labels", "sentiment", "class", "category", "target")


def imdb_archive_to_csv(archive, out_dir):
    """Turn aclImdb_v1.tar.gz into train.csv.gz and test.csv.gz (id, review, sentiment, rating).
    The archive is read as a stream, member by member, so its 100,000 files are never unpacked to
    disk. Reviews are aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt; the unlabelled train/unsup
    ones are skipped."""
    rows = {"train": [], "test": []}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                labelled = len(parts) == 4 and parts[1] in rows and parts[2] in ("pos", "neg")
                if not member.isfile() or not labelled:
                    continue
                stem = parts[3].removesuffix(".txt")
                review = tar.extractfile(member).read().decode("utf-8")
                sentiment = "positive" if parts[2] == "pos" else "negative"
                row_id, rating = f"{parts[1]}/{parts[2]}/{stem}", stem.split("_")[-1]
                rows[parts[1]].append((row_id, review, sentiment, rating))
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as e:
        raise UserError(f"{archive} is not a readable IMDB archive ({type(e).__name__}: {e}); "
                        "delete it and run again") from None
    for split, split_rows in rows.items():
        tmp = Path(out_dir) / f".{split}.csv.gz.tmp{os.getpid()}"
        with gzip.open(tmp, "wt", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([["id", "review", "sentiment", "rating"], *split_rows])
        os.replace(tmp, Path(out_dir) / f"{split}.csv.gz")


def resolve_cls_dataset(dataset, data_dir):
    """({split: path}, text column, label column) of a named dataset (downloaded once into
    data_dir/<name>) or of a file path (only a train split; no column known)."""
    if dataset not in CLS_DATASETS:
        if not Path(dataset).is_file():
            names = ", ".join(CLS_DATASETS)
            raise UserError(f"dataset '{dataset}' is neither a named dataset ({names}) nor an "
                            "existing file")
        return {"train": Path(dataset)}, "", ""
    spec = CLS_DATASETS[dataset]
    directory = Path(data_dir) / dataset
    how = ("local files instead: --dataset=TRAIN_FILE --test_dataset=TEST_FILE (.csv, .tsv or "
           ".jsonl, optionally .gz)")
    if "archive" in spec:
        url, sha256, size = spec["archive"]
        paths = {split: directory / name for split, name in spec["files"].items()}
        if not all(p.exists() for p in paths.values()):
            archive = download(url, directory / url.rsplit("/", 1)[-1], sha256, size, what=how)
            print(f"converting {archive} to "
                  f"{', '.join(p.name for p in paths.values())}", file=sys.stderr)
            imdb_archive_to_csv(archive, directory)
    else:
        paths = {split: download(url, directory / url.rsplit("/", 1)[-1], sha256, size, what=how)
                 for split, (url, sha256, size) in spec["files"].items()}
    return paths, spec["text_column"], spec["label_column"]


def table_kind(path):
    kind = Path(path).name.lower().removesuffix(".gz").rsplit(".", 1)[-1]
    return kind if kind in ("jsonl", "csv", "tsv") else None


def open_text(path, newline=""):
    """A file (gzip-compressed when its name ends in .gz) opened as UTF-8 text; f.raw_file is the
    file on disk, whose position says how far the reading has got. A byte-order mark
    (spreadsheets) is not part of the text."""
    raw = open(path, "rb")
    binary = gzip.GzipFile(fileobj=raw) if Path(path).name.lower().endswith(".gz") else raw
    f = io.TextIOWrapper(binary, encoding="utf-8-sig", newline=newline)
    f.raw_file = raw
    return f


def table_rows(f, path):
    """(line number, {column: value}) for each row of a .csv, .tsv or .jsonl table, read from the
    text file f as a stream. Any problem with the file is one line naming it and the line: the one
    reading of tables, for labelled data (read_table) and corpora alike."""
    kind = table_kind(path)
    # A long review or article is a valid field (the csv module's default limit is 128 KiB).
    csv.field_size_limit(2**31 - 1)
    try:
        if kind == "jsonl":
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield number, parse_json(line, f"{path}: line {number}")
            return
        # CSV fields may be quoted (and then hold commas, quotes and newlines). TSV, by its
        # definition, has no quoting: a field holds no tab or newline, a quote is a character.
        reader = (csv.reader(f, strict=True) if kind == "csv" else
                  csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        header, start = next(reader, None), 2
        if header is None:
            raise UserError(f"{path} is empty")
        for fields in reader:
            if fields and len(fields) != len(header):
                raise UserError(f"{path}: line {start} has {len(fields)} fields, the header "
                                f"{len(header)} ({', '.join(header)})")
            if fields:  # a blank line is not a record
                yield start, dict(zip(header, fields))
            start = reader.line_num + 1  # where the next record starts (a field spans lines)
    except csv.Error as e:
        raise UserError(f"{path}: malformed {kind.upper()} at line {reader.line_num} "
                        f"({e})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text ({first_bad_line(path)}); convert it to UTF-8 "
                        "first") from None
    except (OSError, EOFError) as e:  # EOFError, BadGzipFile: a cut or damaged .gz
        raise UserError(f"cannot read {path} ({getattr(e, 'strerror', None) or e})") from None


def first_bad_line(path):
    """'line N, byte B': where a file stops being UTF-8 (read again whole: only on that error)."""
    with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    start = len(raw)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        start = e.start
    line = raw[:start].count(b"\n") + 1
    return f"line {line}, byte {start}"


def _lines(numbers):
    """'line 7' or 'lines 3, 4, 9, ...' (the first ten)."""
    shown = ", ".join(map(str, numbers[:10])) + (", ..." if len(numbers) > 10 else "")
    return f"line {shown}" if len(numbers) == 1 else f"lines {shown}"


def read_table(path):
    """(columns, rows: (line, {column: value})) of a .csv, .tsv or .jsonl file, maybe .gz."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found")
    if table_kind(path) is None:
        raise UserError(f"{path}: unsupported file type; use .csv, .tsv or .jsonl (optionally .gz)")
    with open_text(path) as f:
        rows = list(table_rows(f, path))
    if not rows:
        raise UserError(f"{path} is empty")
    return list(dict.fromkeys(column for _, row in rows for column in row)), rows


def pick_columns(columns, text_column, label_column, path, need_label=True):
    """(text columns, label column). text_column may name several columns, comma-separated
    ("title,text"): their values are joined. Empty names are guessed from common ones. Without
    need_label, a label column that cannot be guessed is None (texts to predict)."""
    found = ", ".join(columns)
    texts = ([c.strip() for c in text_column.split(",")] if text_column else
             [_guess(columns, TEXT_COLUMNS, f"which column holds the text in {path} (columns: "
                                            f"{found}); pass --text_column")])
    label = label_column or _guess([c for c in columns if c not in texts], LABEL_COLUMNS,
                                   f"which column holds the label in {path} (columns: {found}); "
                                   "pass --label_column", required=need_label)
    for c in (*texts, *([label] if label else [])):
        if c not in columns:
            raise UserError(f"{path} has no column '{c}' (columns: {found})")
    return texts, label


def _guess(columns, candidates, question, required=True):
    by_lower = {c.lower(): c for c in columns}
    found = next((by_lower[name] for name in candidates if name in by_lower), None)
    if found is None and required:
        raise UserError(f"cannot tell {question}")
    return found


@dataclass
class LabelledTexts:
    """The examples of one split: texts, tokens (cut to the model's context) and labels."""

    texts: list  # the full text of each example (str), for the leakage check and for predictions
    tokens: list  # one uint16 array per example, at most block_size tokens (see truncate)
    labels: np.ndarray  # the label name of each example (str)
    source: str  # where they come from, for messages
    note: str = ""  # what reading the file found, to print (rows skipped, texts cut)

    def __len__(self):
        return len(self.labels)

    def lengths(self):
        return np.array([len(t) for t in self.tokens], dtype=np.int64)

    def subset(self, indices, source):
        return LabelledTexts([self.texts[i] for i in indices], [self.tokens[i] for i in indices],
                             self.labels[indices], source)


CLS_CACHE_VERSION = 3  # bump when what the cache holds changes
HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def load_labelled_file(path, text_column, label_column, tokenizer, cache_dir):
    """The examples of one file, tokenized whole (data.read_labelled cuts them to a model's
    context); rows with an empty text or label skipped and counted. Cached in cache_dir, keyed by
    the file's sha256 and every option that changes the result: editing either rebuilds it."""
    path = Path(path)
    options = [sha256_of(path), text_column, label_column, tokenizer.to_dict(), CLS_CACHE_VERSION]
    key = hashlib.sha256(json.dumps(options).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"{path.name}-{key}.npz"
    if not cache.exists():
        _tokenize_file(path, text_column, label_column, tokenizer, cache)
    with np.load(cache, allow_pickle=False) as f:
        ids, offsets, labels = f["ids"], f["offsets"], f["labels"]
        text_bytes, text_offsets = f["texts"].tobytes(), f["text_offsets"]
        stats = json.loads(str(f["stats"]))
    tokens = [ids[offsets[i] : offsets[i + 1]] for i in range(len(labels))]
    texts = [text_bytes[text_offsets[i] : text_offsets[i + 1]].decode() for i in range(len(labels))]
    note = (f"{path}: {len(labels):,} examples (text: {'+'.join(stats['text_columns'])}, "
            f"label: {stats['label_column']})")
    if stats["skipped"]:
        rows = "1 row" if stats["skipped"] == 1 else f"{stats['skipped']:,} rows"
        note += f"; skipped {rows} with an empty text or label ({_lines(stats['skipped_lines'])})"
    return LabelledTexts(texts, tokens, labels, str(path), note)


def classifier_text(text):
    """A text as a classifier reads it: HTML line breaks (<br />, as in the IMDB reviews) become
    newlines. Every text takes this path into a classifier, in training (table_texts) and after
    (metrics.classify_texts: evaluate.py --predict, sample.py --text and --file). Idempotent."""
    return HTML_BREAK.sub("\n", text)


def table_texts(row, text_columns):
    """The text of a row, as a classifier reads it (classifier_text): its text columns joined with
    a newline (a title and its article), empty cells left out."""
    cells = [str(row[c]) for c in text_columns if row.get(c) is not None and str(row[c]).strip()]
    return classifier_text("\n".join(cells))


# A spreadsheet runs a cell that begins with one of these as a formula: a predictions file opened
# there must not run what a text says (CSV injection; OWASP's advice is a single quote in front).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell):
    """A CSV cell that a spreadsheet shows as text and never runs: a string that begins with =, +,
    -, @, a tab or a carriage return gets a single quote in front. Other values are unchanged."""
    return "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) else cell


def _tokenize_file(path, text_column, label_column, tokenizer, cache):
    columns, rows = read_table(path)
    text_columns, label_column = pick_columns(columns, text_column, label_column, path)
    texts, tokens, labels, skipped_lines = [], [], [], []
    for line, row in rows:
        text = table_texts(row, text_columns)
        label = row.get(label_column)
        label = "" if label is None else str(label).strip()
        if not text.strip() or not label:
            skipped_lines.append(line)
            continue
        tokens.append(np.array(tokenizer.encode(text), dtype=np.uint16))
        labels.append(label)
        texts.append(text.encode())
    if not labels:
        raise UserError(f"{path}: no rows with both a text and a label")
    if tokenizer.vocab_size > 65536:
        raise UserError("vocabularies larger than 65536 do not fit the uint16 token cache")
    stats = {"text_columns": text_columns, "label_column": label_column,
             "skipped": len(skipped_lines), "skipped_lines": skipped_lines[:10]}
    arrays = dict(ids=np.concatenate(tokens), offsets=np.cumsum([0] + [len(t) for t in tokens]),
                  labels=np.array(labels), texts=np.frombuffer(b"".join(texts), dtype=np.uint8),
                  text_offsets=np.cumsum([0] + [len(t) for t in texts]),
                  stats=np.array(json.dumps(stats)))
    write_file(cache, lambda f: np.savez(f, **arrays), binary=True)


def sorted_labels(names):
    """The distinct label names in a stable order: numerically when they are all integers ("2" after
    "10" would surprise), else alphabetically."""
    distinct = set(names.tolist())
    return sorted(distinct, key=int if all(n.lstrip("-").isdigit() for n in distinct) else None)

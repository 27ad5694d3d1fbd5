"""Tests for leakage.py: normalisation rules, exact and near duplicates, the report."""
import itertools
import random
import tracemalloc

import pytest

import leakage
from leakage import find_leakage, format_report, normalise, shingles

# ---------------------------------------------------------------------------- normalise


@pytest.mark.parametrize("raw, expected", [
    ("Masks WORK https://t.co/AbC123xyz", "masks work"),            # URL, case
    ("see http://example.com/a?b=1 and www.who.int/covid now", "see and now"),
    ("cut off mid-link: http", "cut off mid link"),                 # truncated link
    ("RT @CDCgov: Wash your hands @WHO", "wash your hands"),        # retweet marker, handles
    ("“Curly” \"straight\" «angle» `back` „low“", "curly straight angle back low"),
    ("don't don’t don`t dont", "dont dont dont dont"),              # apostrophes deleted
    ("Wait...what?!   Really\n\n\tyes", "wait what really yes"),   # punctuation, whitespace
    ("5,000 cases; 1,234,567 tests; 3,14", "5000 cases 1234567 tests 3 14"),
    ("Fish &amp; chips<br /><br />great", "fish chips great"),     # entity, HTML tag
    ("zero\u200bwidth broken\ufffd text", "zerowidth broken text"),  # invisible, U+FFFD
    ("???Trump???s plan??? works?", "trumps plan works"),        # "?" for a lost character
    ("ＦＵＬＬ width Straße", "full width strasse"),                 # NFKC, casefold
])
def test_normalise_rules(raw, expected):
    assert normalise(raw) == expected


def test_normalise_keeps_non_latin_scripts_digits_and_emoji():
    assert normalise("Привет, МИР! 新型コロナ。 كورونا ١٢٣ 😷") == "привет мир 新型コロナ كورونا ١٢٣ 😷"


def test_normalise_is_idempotent_and_empty_for_link_only_texts():
    text = "“Quote” — https://t.co/x @someone!!"
    assert normalise(normalise(text)) == normalise(text) == "quote"
    assert normalise("https://t.co/abc  @bob ...") == ""


def test_shingles_fall_back_to_the_whole_text_when_short():
    assert shingles("A b c", ngram=2) == {"a b", "b c"}
    assert shingles("Hello!", ngram=2) == {"hello"}
    assert shingles("one two", ngram=3) == {"one two"}
    assert shingles("...", ngram=2) == set()


# ---------------------------------------------------------------------------- find_leakage
def jaccard(a, b):
    return len(a & b) / len(a | b)


WORDS = [f"w{i}" for i in range(5000)]


def random_text(rng, n=40):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def change_words(text, positions, rng):
    words = text.split()
    for p in positions:
        words[p] = f"new{rng.randrange(10**6)}"
    return " ".join(words)


@pytest.fixture
def planted():
    """Three splits of unrelated random texts, with duplicates planted across them."""
    rng = random.Random(1)
    splits = {name: [random_text(rng) for _ in range(200)] for name in ("train", "val", "test")}
    labels = {name: [rng.choice("ab") for _ in texts] for name, texts in splits.items()}
    # Exact after normalisation: a link, quotes, punctuation and case differ.
    splits["test"][5] = "“" + splits["train"][10].upper() + ".” https://t.co/Zz9"
    labels["test"][5] = labels["train"][10]
    splits["val"][7] = splits["train"][20] + " @someone!!"
    labels["val"][7] = "b" if labels["train"][20] == "a" else "a"  # label disagrees
    # Near: 2 of 40 words changed (Jaccard of 2-grams 35/43 = 0.81).
    splits["test"][9] = change_words(splits["train"][30], [5, 25], rng)
    labels["test"][9] = labels["train"][30]
    splits["test"][11] = change_words(splits["val"][40], [10, 30], rng)
    labels["test"][11] = labels["val"][40]
    return splits, labels


def test_planted_duplicates_are_found_with_labels(planted):
    splits, labels = planted
    report = find_leakage(splits, labels)
    train_test, train_val, val_test = (report.pairs[k] for k in
                                       ("train & test", "train & val", "val & test"))
    exact, near = train_test["exact"], train_test["near"]
    assert (exact.pairs, exact.rows_b, exact.same_label, exact.byte_identical) == (1, {5}, 1, 0)
    assert (near.pairs, near.rows_b, near.same_label, near.diff_label) == (1, {9}, 1, 0)
    assert (train_val["exact"].pairs, train_val["exact"].diff_label) == (1, 1)
    assert train_val["near"].pairs == 0
    assert (val_test["exact"].pairs, val_test["near"].rows_b) == (0, {11})
    [example] = near.examples
    assert (example.index_a, example.index_b) == (30, 9)
    expected = jaccard(shingles(splits["train"][30]), shingles(splits["test"][9]))
    assert example.similarity == pytest.approx(expected) and 0.8 <= expected < 0.82
    [example] = exact.examples
    assert (example.index_a, example.index_b, example.similarity) == (10, 5, 1.0)
    assert example.text_b.startswith("“" + splits["train"][10][:30].upper())
    assert example.text_b.endswith("…") and len(example.text_b) == 80
    assert example.label_a == example.label_b == labels["train"][10]
    assert report.train_drop == {10, 20, 30}
    assert report.within_exact == {"train": 0, "val": 0, "test": 0}


def test_unrelated_texts_are_not_reported():
    rng = random.Random(2)
    splits = {"train": [random_text(rng) for _ in range(300)],
              "test": [random_text(rng, n=rng.randrange(1, 60)) for _ in range(300)]}
    report = find_leakage(splits)
    pair = report.pairs["train & test"]
    assert pair["exact"].pairs == pair["near"].pairs == 0 and report.train_drop == set()


def test_threshold_is_a_sharp_cut(planted):
    splits, _ = planted
    s = jaccard(shingles(splits["train"][30]), shingles(splits["test"][9]))
    assert find_leakage(splits, threshold=s).pairs["train & test"]["near"].pairs == 1
    just_above = find_leakage(splits, threshold=s + 1e-9)
    assert just_above.pairs["train & test"]["near"].pairs == 0
    # 3 words changed: Jaccard 33/45 = 0.73, below the default 0.8.
    rng = random.Random(3)
    splits["test"][9] = change_words(splits["train"][30], [5, 20, 35], rng)
    assert find_leakage(splits).pairs["train & test"]["near"].pairs == 0


def test_exact_duplicates_are_not_counted_again_as_near_and_repeats_count_as_pairs():
    base = "the quick brown fox jumps over the lazy dog and runs far away into the woods"
    splits = {"train": [base, base + "!", base.replace("woods", "forest"), "other text"],
              "test": [base.upper(), "unrelated words here"]}
    report = find_leakage(splits, {"train": [1, 1, 1, 0], "test": [1, 0]})
    pair = report.pairs["train & test"]
    assert (pair["exact"].pairs, pair["exact"].rows_b, pair["exact"].same_label) == (2, {0}, 2)
    assert (pair["near"].pairs, pair["near"].rows_b) == (1, set())  # row 0 is already exact
    assert report.within_exact["train"] == 1
    assert report.train_drop == {0, 1, 2}


def test_train_split_can_be_named_and_empty_texts_are_skipped():
    splits = {"test": ["hello world again", "https://t.co/a"],
              "train": ["Hello, world again!", "https://t.co/b", "x"]}
    report = find_leakage(splits, train_split="train")
    assert report.train_drop == {0}
    assert report.empty == {"test": 1, "train": 1}


def test_deterministic_across_runs(planted):
    splits, labels = planted
    first = find_leakage(splits, labels, seed=0)
    assert find_leakage(splits, labels, seed=0) == first
    assert format_report(find_leakage(splits, labels, seed=7)) == format_report(first)


def test_format_report_mentions_counts_and_examples(planted):
    splits, labels = planted
    text = format_report(find_leakage(splits, labels), max_examples=1)
    assert "train & test: 2 test rows (1.0%) have a duplicate in train" in text
    assert "labels same 0 / different 1" in text            # train & val exact
    assert "train#30" in text and "test#9" in text
    assert "drop 3 train rows" in text
    no_labels = format_report(find_leakage(splits))
    assert "labels" not in no_labels


# ---------------------------------------------------------------------------- many duplicates
def brute_force(splits, labels, threshold=0.8, n_examples=5, train_split=None):
    """find_leakage's pair counts by looking at every pair of rows: the definition, slowly."""
    names = list(splits)
    train_split = train_split or names[0]
    norm = {n: [normalise(t) for t in texts] for n, texts in splits.items()}
    sets = {n: [shingles(t) for t in texts] for n, texts in splits.items()}
    out, drop = {}, set()
    for a, b in itertools.combinations(names, 2):
        counts = {k: dict(pairs=0, rows_b=set(), byte_identical=0, same_label=0, diff_label=0,
                          examples=[]) for k in ("exact", "near")}
        for i, j in itertools.product(range(len(splits[a])), range(len(splits[b]))):
            if not norm[a][i] or not norm[b][j]:
                continue
            if norm[a][i] == norm[b][j]:
                kind, s = "exact", 1.0
            else:
                kind, s = "near", jaccard(sets[a][i], sets[b][j])
                if s < threshold:
                    continue
            c, raw_equal = counts[kind], splits[a][i] == splits[b][j]
            c["pairs"] += 1
            c["rows_b"].add(j)
            c["byte_identical"] += raw_equal
            c["same_label"] += labels[a][i] == labels[b][j]
            c["diff_label"] += labels[a][i] != labels[b][j]
            c["examples"].append((raw_equal, s, j, i))
            drop |= {i} if a == train_split else {j} if b == train_split else set()
        counts["near"]["rows_b"] -= counts["exact"]["rows_b"]
        for c in counts.values():
            c["examples"] = [(i, j, s) for _, s, j, i in sorted(c["examples"])[:n_examples]]
        out[f"{a} & {b}"] = counts
    return out, drop


def as_counts(report):
    return {key: {kind: dict(pairs=d.pairs, rows_b=d.rows_b, byte_identical=d.byte_identical,
                             same_label=d.same_label, diff_label=d.diff_label,
                             examples=[(e.index_a, e.index_b, e.similarity) for e in d.examples])
                  for kind, d in dups.items()}
            for key, dups in report.pairs.items()}


def candidate_pairs(texts, threshold=0.8, ngram=2, seed=0):
    """The candidate pairs of distinct texts as a set: how _near_pairs found them before it
    stopped keeping one (a pair is a candidate if it shares a bucket in any band)."""
    hashes, offsets = leakage._shingle_hashes(texts, ngram)
    rows = leakage._rows_for(threshold)
    signatures = leakage._minhash(hashes, offsets, leakage.BANDS * rows, seed)
    pairs = set()
    for band in range(leakage.BANDS):
        buckets = {}
        for u, values in enumerate(signatures[:, band * rows:(band + 1) * rows].tolist()):
            buckets.setdefault(tuple(values), []).append(u)
        pairs |= {p for members in buckets.values() for p in itertools.combinations(members, 2)}
    return pairs


@pytest.fixture
def repeated():
    """Three splits drawn with repeats from a small pool: exact copies (some byte-identical, some
    with another case, link or full stop), near copies (one word of 40 changed, all at the same
    place, so they are near each other too), unique texts and empty ones."""
    rng = random.Random(5)
    bases = [random_text(rng) for _ in range(6)]
    pool = []
    for base in bases:
        pool += [base, base, base.upper(), base + " https://t.co/x", base + "."]
        words = base.split()
        pool += [" ".join(words[:20] + [f"near{k}"] + words[21:]) for k in range(3)]
    splits, labels = {}, {}
    for name, n in (("train", 90), ("val", 40), ("test", 60)):
        splits[name] = [rng.choice(pool) if rng.random() < 0.8 else random_text(rng)
                        for _ in range(n)] + ["https://t.co/only-a-link"]
        labels[name] = [rng.choice("abc") for _ in splits[name]]
    return splits, labels


@pytest.mark.parametrize("n_examples", [0, 1, 3, 5, 1000])
def test_counts_and_examples_equal_a_pair_by_pair_count(repeated, n_examples):
    splits, labels = repeated
    report = find_leakage(splits, labels, n_examples=n_examples)
    expected, drop = brute_force(splits, labels, n_examples=n_examples)
    assert as_counts(report) == expected
    assert report.train_drop == drop
    train_test = expected["train & test"]
    assert train_test["exact"]["pairs"] > 100 and train_test["near"]["pairs"] > 50  # it has both
    assert 0 < train_test["exact"]["byte_identical"] < train_test["exact"]["pairs"]
    if n_examples == 5:
        texts = [t for t in dict.fromkeys(normalise(t) for ts in splits.values() for t in ts) if t]
        assert report.candidates == len(candidate_pairs(texts))


def test_a_text_repeated_thousands_of_times_is_counted_not_listed():
    # 20,000 rows of 40 texts, each 300 times in train, 150 in test and 50 in val, in three raw
    # forms: 2.7M pairs of rows, counted from the group sizes, never listed.
    rng = random.Random(7)
    texts = [random_text(rng, n=12) for _ in range(40)]
    forms = ["{}", "{}!", "{} https://t.co/x"]
    splits, labels, counts = {}, {}, {"train": 300, "val": 50, "test": 150}
    for name, n in counts.items():
        rows = [(u, k % 3) for u in range(40) for k in range(n)]
        rng.shuffle(rows)
        splits[name] = [forms[f].format(texts[u]) for u, f in rows]
        labels[name] = [f for _, f in rows]  # the label is the raw form: same label, same bytes
    tracemalloc.start()
    try:
        report = find_leakage(splits, labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20  # bytes: 3 MB; listing the pairs took over 400 MB
    for a, b in itertools.combinations(counts, 2):
        exact = report.pairs[f"{a} & {b}"]["exact"]
        assert exact.pairs == 40 * counts[a] * counts[b]
        assert exact.byte_identical == exact.same_label == 40 * counts[a] * counts[b] // 3
        assert exact.diff_label == exact.pairs - exact.same_label
        assert exact.rows_b == set(range(len(splits[b])))
        assert [splits[a][e.index_a] != splits[b][e.index_b] for e in exact.examples] == [True] * 5
        assert [e.index_b for e in exact.examples] == sorted(e.index_b for e in exact.examples)
    assert report.train_drop == set(range(12_000))
    assert report.within_exact == {name: 40 * (n - 1) for name, n in counts.items()}


@pytest.mark.parametrize("n_examples", [1, 2, 3])
def test_the_first_examples_are_pairs_that_differ_as_raw_text(n_examples):
    # The first test row is byte-identical to the first train row: its first example pair is the
    # train row after it, in another raw form. Then come later test rows; identical pairs last.
    forms = ["Hello world", "hello world!", "HELLO WORLD", "Hello, world", "hello world"]
    splits = {"train": forms[:4] + forms[:1], "test": [forms[0], forms[4], forms[0]]}
    labels = {name: ["x"] * len(rows) for name, rows in splits.items()}
    report = find_leakage(splits, labels, n_examples=n_examples)
    expected, _ = brute_force(splits, labels, n_examples=n_examples)
    assert as_counts(report) == expected
    assert expected["train & test"]["exact"]["examples"][0] == (1, 0, 1.0)

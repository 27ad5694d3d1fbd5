"""Tests for leakage.py: normalisation rules, exact and near duplicates, the report."""
import itertools
import random
import tracemalloc

import numpy as np
import pytest

import leakage
from leakage import find_leakage, format_report, normalise, report_leakage, shingles
from ring.config import UserError
from ring.tables import LabelledTexts

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
    # Exact after normalisation: a link, quotes, punctuation and case differ.
    splits["test"][5] = "“" + splits["train"][10].upper() + ".” https://t.co/Zz9"
    splits["val"][7] = splits["train"][20] + " @someone!!"
    # Near: 2 of 40 words changed (Jaccard of 2-grams 35/43 = 0.81).
    splits["test"][9] = change_words(splits["train"][30], [5, 25], rng)
    splits["test"][11] = change_words(splits["val"][40], [10, 30], rng)
    return splits


def test_planted_duplicates_are_found(planted):
    report = find_leakage(planted)
    train_test, train_val, val_test = (report.pairs[k] for k in
                                       (("train", "test"), ("train", "val"), ("val", "test")))
    exact, near = train_test["exact"], train_test["near"]
    assert (exact.pairs, exact.rows_b, near.pairs, near.rows_b) == (1, {5}, 1, {9})
    assert (train_val["exact"].rows_b, train_val["near"].pairs) == ({7}, 0)
    assert (val_test["exact"].pairs, val_test["near"].rows_b) == (0, {11})
    [(i, j, similarity, text_a, text_b)] = near.examples
    assert (i, j, text_a, text_b) == (30, 9, planted["train"][30], planted["test"][9])
    expected = jaccard(shingles(planted["train"][30]), shingles(planted["test"][9]))
    assert similarity == pytest.approx(expected) and 0.8 <= expected < 0.82
    assert exact.examples == [(10, 5, 1.0, planted["train"][10], planted["test"][5])]
    assert report.train_drop == {10, 20, 30}
    assert report.within_exact == {"train": 0, "val": 0, "test": 0}


def test_unrelated_texts_are_not_reported():
    rng = random.Random(2)
    splits = {"train": [random_text(rng) for _ in range(300)],
              "test": [random_text(rng, n=rng.randrange(1, 60)) for _ in range(300)]}
    report = find_leakage(splits)
    pair = report.pairs["train", "test"]
    assert pair["exact"].pairs == pair["near"].pairs == 0 and report.train_drop == set()


def test_threshold_is_a_sharp_cut(planted):
    s = jaccard(shingles(planted["train"][30]), shingles(planted["test"][9]))
    assert find_leakage(planted, threshold=s).pairs["train", "test"]["near"].pairs == 1
    just_above = find_leakage(planted, threshold=s + 1e-9)
    assert just_above.pairs["train", "test"]["near"].pairs == 0
    # 3 words changed: Jaccard 33/45 = 0.73, below the default 0.8.
    rng = random.Random(3)
    planted["test"][9] = change_words(planted["train"][30], [5, 20, 35], rng)
    assert find_leakage(planted).pairs["train", "test"]["near"].pairs == 0


def test_exact_duplicates_are_not_counted_again_as_near_and_repeats_count_as_pairs():
    base = "the quick brown fox jumps over the lazy dog and runs far away into the woods"
    splits = {"train": [base, base + "!", base.replace("woods", "forest"), "other text"],
              "test": [base.upper(), "unrelated words here"]}
    report = find_leakage(splits)
    pair = report.pairs["train", "test"]
    assert (pair["exact"].pairs, pair["exact"].rows_b) == (2, {0})
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
    first = find_leakage(planted, seed=0)
    assert find_leakage(planted, seed=0) == first
    assert format_report(find_leakage(planted, seed=7)) == format_report(first)


def test_format_report_mentions_counts_and_examples(planted):
    text = format_report(find_leakage(planted), max_examples=1)
    assert "train & test: 2 test rows (1.0%) have a duplicate in train" in text
    assert "  exact: 1 test rows, 1 pairs" in text and "  near: 1 test rows, 1 pairs" in text
    assert "train#30" in text and "test#9" in text
    assert "drop 3 train rows" in text


def labelled(texts):
    return LabelledTexts(texts, [np.zeros(1, np.uint16)] * len(texts),
                         np.array(["x"] * len(texts)), "file.csv")


def test_report_leakage_drops_leaked_training_rows_and_refuses_to_drop_them_all(planted):
    splits = {name: labelled(texts) for name, texts in planted.items()}
    same, notes = report_leakage(splits, drop_leaked=False)
    assert same is splits and "warning: leakage" in notes[-1] and "--drop_leaked=True" in notes[-1]
    dropped, _ = report_leakage(splits, drop_leaked=True)
    kept = [t for i, t in enumerate(planted["train"]) if i not in {10, 20, 30}]
    assert dropped["train"].texts == kept and len(dropped["train"].labels) == 197
    assert dropped["train"].source == "file.csv less 3 texts shared with other splits"
    assert report_leakage({"train": labelled(["a b"]), "test": labelled(["b c"])}, True)[1] == []
    with pytest.raises(UserError, match="leaves nothing to train on"):
        report_leakage({"train": labelled(["a b", "A b!"]), "test": labelled(["a b"])}, True)


# ---------------------------------------------------------------------------- many duplicates
def brute_force(splits, threshold=0.8, n_examples=5, train_split=None):
    """find_leakage's counts by looking at every pair of rows: the definition, slowly."""
    names = list(splits)
    train_split = train_split or names[0]
    norm = {n: [normalise(t) for t in texts] for n, texts in splits.items()}
    sets = {n: [shingles(t) for t in texts] for n, texts in splits.items()}
    out, drop = {}, set()
    for a, b in itertools.combinations(names, 2):
        counts = {k: dict(pairs=0, rows_b=set(), examples={}) for k in ("exact", "near")}
        for i, j in itertools.product(range(len(splits[a])), range(len(splits[b]))):
            if not norm[a][i] or not norm[b][j]:
                continue
            if norm[a][i] == norm[b][j]:
                kind, s = "exact", 1.0
            else:
                kind, s = "near", jaccard(sets[a][i], sets[b][j])
                if s < threshold:
                    continue
            counts[kind]["pairs"] += 1
            counts[kind]["rows_b"].add(j)
            # one example per match of two distinct texts: its first row of b and of a
            first = counts[kind]["examples"].setdefault((norm[a][i], norm[b][j]), (j, i, s))
            counts[kind]["examples"][norm[a][i], norm[b][j]] = min(first, (j, i, s))
            drop |= {i} if a == train_split else {j} if b == train_split else set()
        counts["near"]["rows_b"] -= counts["exact"]["rows_b"]
        for c in counts.values():
            c["examples"] = [(i, j, s) for j, i, s in sorted(c["examples"].values())[:n_examples]]
        out[a, b] = counts
    return out, drop


def as_counts(report):
    return {key: {kind: dict(pairs=d.pairs, rows_b=d.rows_b, examples=[e[:3] for e in d.examples])
                  for kind, d in dups.items()}
            for key, dups in report.pairs.items()}


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
    splits = {}
    for name, n in (("train", 90), ("val", 40), ("test", 60)):
        splits[name] = [rng.choice(pool) if rng.random() < 0.8 else random_text(rng)
                        for _ in range(n)] + ["https://t.co/only-a-link"]
    return splits


@pytest.mark.parametrize("n_examples", [0, 1, 3, 5, 1000])
def test_counts_and_examples_equal_a_pair_by_pair_count(repeated, n_examples):
    report = find_leakage(repeated, n_examples=n_examples)
    expected, drop = brute_force(repeated, n_examples=n_examples)
    assert as_counts(report) == expected
    assert report.train_drop == drop
    train_test = expected["train", "test"]
    assert train_test["exact"]["pairs"] > 100 and train_test["near"]["pairs"] > 50  # it has both
    assert report.empty == {"train": 1, "val": 1, "test": 1}


def test_each_pair_that_shares_a_bucket_in_some_band_is_a_candidate_once():
    bands = np.random.default_rng(0).integers(0, 3, size=(60, 4, 2))  # (texts, bands, rows)
    candidates = list(leakage._candidates(bands))
    expected = {(u, v) for band in range(4) for u, v in itertools.combinations(range(60), 2)
                if (bands[u, band] == bands[v, band]).all()}
    assert sorted(candidates) == sorted(expected) and len(expected) > 500


def test_the_bands_are_those_the_comment_computes(planted, monkeypatch):
    # 20 bands of 5 rows at 0.8: a pair at exactly 0.8 becomes a candidate 99.96% of the time.
    assert leakage._rows_for(0.8) == 5 and 1 - (1 - 0.8**5) ** 20 == pytest.approx(0.9996, abs=1e-4)
    assert (leakage.BANDS, leakage._rows_for(0.7), leakage._rows_for(0.5)) == (20, 3, 1)
    shapes, candidates = [], leakage._candidates
    monkeypatch.setattr(leakage, "_candidates", lambda bands: shapes.append(bands.shape)
                        or candidates(bands))
    find_leakage(planted)
    assert shapes == [(598, 20, 5)]  # 600 rows, 2 of them exact duplicates of others


def test_a_text_repeated_thousands_of_times_is_counted_not_listed():
    # 20,000 rows of 40 texts, each 300 times in train, 150 in test and 50 in val, in three raw
    # forms: 2.7M pairs of rows, counted from the group sizes, never listed.
    rng = random.Random(7)
    texts = [random_text(rng, n=12) for _ in range(40)]
    forms = ["{}", "{}!", "{} https://t.co/x"]
    splits, counts = {}, {"train": 300, "val": 50, "test": 150}
    for name, n in counts.items():
        rows = [(u, k % 3) for u in range(40) for k in range(n)]
        rng.shuffle(rows)
        splits[name] = [forms[f].format(texts[u]) for u, f in rows]
    tracemalloc.start()
    try:
        report = find_leakage(splits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20  # bytes: 3 MB; listing the pairs took over 400 MB
    for a, b in itertools.combinations(counts, 2):
        exact = report.pairs[a, b]["exact"]
        assert exact.pairs == 40 * counts[a] * counts[b]
        assert exact.rows_b == set(range(len(splits[b])))
        # one example for each of the 5 texts that come first in b: their first rows in a and b
        norm_a, norm_b = ([normalise(t) for t in splits[n]] for n in (a, b))
        firsts = list(dict.fromkeys(norm_b))[:5]
        assert [e[:2] for e in exact.examples] == [(norm_a.index(t), norm_b.index(t))
                                                   for t in firsts]
    assert report.train_drop == set(range(12_000))
    assert report.within_exact == {name: 40 * (n - 1) for name, n in counts.items()}

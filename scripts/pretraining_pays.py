"""
Does pretraining pay? The learning curve of docs/pretraining.md, on a laptop: test accuracy against
the number of labelled examples a classifier learns from, from scratch and after an hour of
pretraining, on tweet sentiment and IMDB; and a book's held-out perplexity after fine-tuning on the
rest of it, from scratch and pretrained.

    python scripts/pretraining_pays.py DATA --out study [--jobs 2] [--step pretrain|curve|book]

DATA holds tweet_sentiment/, imdb/ and books/ in the layout of this project's data README. Every
command is one this project's README teaches (train.py, finetune.py, evaluate.py), run in turn, each
skipped when its run directory already holds a result: stop and start again at will. Test splits
are never read before the final scores; the pretraining corpus is IMDB's and the tweets' training
texts (their labels unused). Prints the tables that docs/pretraining.md shows.
"""

import argparse
import csv
import gzip
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (1, 2, 3)  # every N below all: three seeds, each a different sample of labels and init
# An IMDB run reads 128 tokens a review where a tweet is ~18: about 7 minutes on one core, so its
# test score is on a stratified 5,000 of the 25,000 test reviews (one standard error: 0.7 points).
SIZES = {"tweets": (100, 1000, 5000, 0), "imdb": (100, 1000, 5000, 0)}  # 0: all
SHAPE = ["--n_layer=6", "--n_head=6", "--n_embd=192"]  # configs/pretrain_cpu.py's, for scratch
DATASETS = {  # training file, test file, columns, what else the task needs
    "tweets": ("tweet_sentiment/train.csv", "tweet_sentiment/test.csv",
               ["--text_column=text", "--label_column=sentiment"]),
    "imdb": ("imdb/train.csv.gz", "imdb/test.csv.gz",
             ["--text_column=review", "--label_column=sentiment", "--truncation=head_tail",
              "--max_test_samples=5000"]),
}


def run(command, log, threads=1):
    """Run one of the project's commands on `threads` threads, its output in log; stop the study
    if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, *command], cwd=ROOT, stdout=f, stderr=f, env=env)
    if done.returncode:
        sys.exit(f"failed (see {log}): {' '.join(command)}")


def build_corpus(data, out):
    """IMDB's training reviews and the tweets' training texts, one JSON document a line."""
    path = out / "corpus.jsonl"
    if path.exists():
        return path
    with open(path.with_suffix(".tmp"), "w") as f:
        with gzip.open(data / "imdb/train.csv.gz", "rt", encoding="utf-8", newline="") as g:
            f.writelines(json.dumps({"text": r["review"]}) + "\n" for r in csv.DictReader(g))
        with open(data / "tweet_sentiment/train.csv", encoding="utf-8", newline="") as g:
            f.writelines(json.dumps({"text": r["text"]}) + "\n" for r in csv.DictReader(g))
    path.with_suffix(".tmp").rename(path)
    return path


def pretrain(corpus, out):
    if not (out / "pretrain" / "best").exists():
        run(["train.py", "configs/pretrain_cpu.py", f"--dataset={corpus}", "--text_column=text",
             f"--data_dir={out / 'data'}", f"--out_dir={out / 'pretrain'}"], out / "pretrain.log",
            threads=2)
    return out / "pretrain"


def budget(task, n):
    """The fine-tuning budget of a run on n labels (0: all), the same from scratch and pretrained:
    at least 300 steps of 32 (small n: many epochs, the best checkpoint by validation accuracy is
    kept), at most 2 epochs of all the labels; an evaluation every 25 steps when they are few.
    Validation is 500 examples (stratified, the same for every run): few labels come with few
    labels to choose a checkpoint by, and it keeps the evaluations cheap. The settings (full
    fine-tuning at 1e-3) had the best mean validation accuracy over both starting points among
    1e-3, 1e-4, LoRA rank 8 and the head alone, on 100 and 1,000 tweets (seed 1)."""
    if n and n <= 1000:
        return ["--max_iters=300", "--eval_interval=25"]
    return ["--epochs=2", "--eval_interval=100" if n else "--eval_interval=250"]


def finetune(data, out, task, n, seed, init):
    """The test accuracy of one fine-tuning (run once, then read from its metrics.jsonl)."""
    name = f"{task}-{n or 'all'}-{init}-seed{seed}"
    run_dir = out / "runs" / name
    if not (run_dir / "metrics.jsonl").exists() or "test_accuracy" not in tested(run_dir):
        train, test, columns = DATASETS[task]
        start = [f"--init_from={out / 'pretrain'}"] if init == "pretrained" else \
            ["--init_from=scratch", *SHAPE]
        run(["finetune.py", f"--dataset={data / train}", f"--test_dataset={data / test}",
             *columns, *start, *budget(task, n), f"--max_train_samples={n}", f"--seed={seed}",
             "--max_val_samples=500",
             "--block_size=128", "--batch_size=32", "--learning_rate=1e-3", "--min_lr=1e-4",
             "--warmup_iters=30", "--weight_decay=0.1", "--dropout=0.1", "--dtype=float32",
             f"--data_dir={out / 'data'}", f"--out_dir={run_dir}", "--overwrite=True"],
            out / "logs" / f"{name}.log")
    return tested(run_dir)


def tested(run_dir):
    """The last row of a classifier run's metrics.jsonl: the test split, scored with best/."""
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return rows[-1] if rows and rows[-1].get("checkpoint") == "best" else {}


def curve(data, out, jobs, inits=("scratch", "pretrained")):
    """Every fine-tuning of the learning curve, jobs at a time (one thread each); returns {(task,
    n, init): [test accuracy of each seed]}."""
    plan = [(task, n, seed, init) for task, sizes in SIZES.items() for n in sizes
            for seed in (SEEDS if n else SEEDS[:1]) for init in inits]
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(lambda p: finetune(data, out, *p), plan))
    table = {}
    for (task, n, _, init), row in zip(plan, results):
        table.setdefault((task, n, init), []).append(row["test_accuracy"])
        table[task, "baseline"] = row["baseline_test_accuracy"]
    return table


def show(table):
    """The learning curve as a markdown table: mean [range] over the seeds."""
    def cell(values):
        mean = statistics.mean(values)
        return f"{mean:.3f}" if len(values) == 1 else \
            f"{mean:.3f} [{min(values):.3f}-{max(values):.3f}]"

    print("| task | labels | from scratch | pretrained | pretrained - scratch |")
    print("| --- | --- | --- | --- | --- |")
    for task, sizes in SIZES.items():
        for n in sizes:
            s, p = table[task, n, "scratch"], table[task, n, "pretrained"]
            gain = 100 * (statistics.mean(p) - statistics.mean(s))
            print(f"| {task} | {n or 'all':,} | {cell(s)} | {cell(p)} | {gain:+.1f} points |"
                  if n else f"| {task} | all | {cell(s)} | {cell(p)} | {gain:+.1f} points |")
        print(f"| {task} | majority baseline | {table[task, 'baseline']:.3f} | | |")


def book(data, out):
    """Alice: fine-tuned as a language model on its first 90%, from scratch and pretrained; the
    loss and bits per byte of its last 10% (held out: the run's validation text, 4,431 tokens, so
    4 batches of 16 x 128 cover it). A step here runs GPT-2's 50,257-wide output layer on 2,048
    tokens, about 2.5 s on one core: 150 steps (~8 passes over the 36k training tokens)."""
    text = data / "books/alice_in_wonderland.txt"
    for init in ("scratch", "pretrained"):
        run_dir = out / "runs" / f"alice-{init}"
        start = [f"--init_from={out / 'pretrain'}"] if init == "pretrained" else \
            ["--init_from=scratch", "--tokenizer=gpt2", *SHAPE]
        if not (run_dir / "best").exists():
            run(["finetune.py", "--task=gen", f"--dataset={text}", *start, "--block_size=128",
                 "--batch_size=16", "--max_iters=150", "--eval_interval=25", "--eval_iters=4",
                 "--learning_rate=1e-3", "--min_lr=1e-4", "--warmup_iters=30", "--dropout=0.1",
                 "--dtype=float32", f"--data_dir={out / 'data'}", f"--out_dir={run_dir}",
                 "--overwrite=True"], out / "logs" / f"alice-{init}.log")
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        best = min((r for r in rows if "val_loss" in r), key=lambda r: r["val_loss"])
        print(f"| Alice, {init} | {best['val_loss']:.3f} | {best['val_perplexity']:.1f} | "
              f"{best['val_bpb']:.3f} |")
    run(["sample.py", "--compare", str(out / "runs/alice-scratch"),
         str(out / "runs/alice-pretrained"), "--start", "The Queen turned to Alice and said",
         "--temperature=0", "--max_new_tokens=60", "--dtype=float32"], out / "alice-samples.txt")
    print((out / "alice-samples.txt").read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, default=Path("study"))
    parser.add_argument("--jobs", type=int, default=1, help="fine-tunings at a time")
    parser.add_argument("--step", choices=("pretrain", "curve", "book"))
    parser.add_argument("--init", choices=("scratch", "pretrained"), help="one arm only")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(args.data.resolve(), out)
    if args.step in (None, "pretrain"):
        pretrain(corpus, out)
    if args.step in (None, "curve"):
        inits = [args.init] if args.init else ["scratch", "pretrained"]
        table = curve(args.data.resolve(), out, args.jobs, inits)
        if not args.init:
            show(table)
    if args.step in (None, "book"):
        print("| book | val loss | perplexity | bits per byte |\n| --- | --- | --- | --- |")
        book(args.data.resolve(), out)


if __name__ == "__main__":
    main()

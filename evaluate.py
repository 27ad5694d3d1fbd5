"""
Score a checkpoint on a file, or write its predictions, without training.

    python evaluate.py out/cls-tweets --data test.csv          # classifier: report, confusion
    python evaluate.py out/cls-tweets --data test.csv --max_samples 500   # a stratified sample
    python evaluate.py out/shakespeare --data input.txt        # language model: perplexity
    python evaluate.py out/cls-tweets --predict texts.jsonl --out predictions.csv

The checkpoint is a run directory (its best/) or a checkpoint directory. Labelled files are read as
finetune.py reads them (.csv, .tsv, .jsonl, optionally .gz; columns guessed or --text_column /
--label_column). Predictions go to a CSV: the input's row number and text, its label when the file
has one, the predicted label and every label's probability.
"""

import argparse
import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from model import load_model
from ring.config import UserError, run_main
from data import read_text, tokenizer_from_dict
from metrics import classify_texts, evaluate_classifier, format_report, logged, split_batches
from ring.runtime import setup_runtime
from sample import for_inference
from ring.tables import load_labelled_file, pick_columns, read_table, sample_of, table_texts


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="run directory (uses best/) or checkpoint directory")
    p.add_argument("--data", help="a labelled table (classifier) or a UTF-8 text file (language "
                                  "model)")
    p.add_argument("--predict", help="a table of texts to classify (classifier)")
    p.add_argument("--out", help="--predict: the CSV to write (default: predictions.csv); --data: "
                                 "also write the metrics to this JSON file")
    p.add_argument("--text_column", default="", help="the text column(s) (empty: guessed)")
    p.add_argument("--label_column", default="", help="the label column (empty: guessed)")
    p.add_argument("--max_samples", type=int, default=0,
                   help="--data: a stratified sample (0: all)")
    p.add_argument("--batch_size", type=int, default=32, help="texts (or windows) per batch")
    p.add_argument("--data_dir", default="data", help="where tokenized tables are cached")
    p.add_argument("--seed", type=int, default=1337, help="seed of the --max_samples sample")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    p.add_argument("--quantize", default="", choices=["", "int8"], help="int8: weight-only int8")
    args = p.parse_args(argv)
    if (args.data is None) == (args.predict is None):
        p.error("give either --data FILE (evaluate) or --predict FILE (predictions)")
    if args.max_samples < 0 or args.batch_size < 1:
        raise UserError("need --max_samples >= 0 and --batch_size >= 1")
    return args


@torch.inference_mode()
def language_model_loss(model, ids, batch_size, device):
    """(mean cross-entropy, tokens predicted) of a language model over a whole token sequence.

    The text is cut into windows of block_size + 1 tokens that overlap by one, so every token after
    the first is predicted exactly once, from the tokens before it in its window (at most block_size
    of them). The last window may be shorter: it is padded, and the padding's targets (-1) are
    ignored."""
    T = model.config.block_size
    windows = [ids[s : s + T + 1] for s in range(0, len(ids) - 1, T)]
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        group = windows[i : i + batch_size]
        x = torch.zeros(len(group), T, dtype=torch.long)
        y = torch.full((len(group), T), -1, dtype=torch.long)
        for row, window in enumerate(group):
            x[row, : len(window) - 1] = torch.tensor(window[:-1])
            y[row, : len(window) - 1] = torch.tensor(window[1:])
        _, loss = model(x.to(device), y.to(device))  # the mean over the targets that are not -1
        n = int((y != -1).sum())
        total, count = total + loss.float().item() * n, count + n
    return total / count, count


def evaluate_text(model, tokenizer, path, args, device):
    ids = tokenizer.encode(read_text(path))
    if len(ids) < 2:
        raise UserError(f"{path} has fewer than two tokens: nothing to predict")
    loss, n = language_model_loss(model, ids, args.batch_size, device)
    metrics = {"loss": loss, "perplexity": math.exp(loss), "tokens": n}
    print(f"{path}: loss {loss:.4f} | perplexity {math.exp(loss):.3f} | {n:,} tokens predicted")
    return metrics


def evaluate_table(model, tokenizer, info, path, args, device):
    truncation = (info.run or {}).get("truncation", "head")
    split = load_labelled_file(path, args.text_column, args.label_column, tokenizer,
                               model.config.block_size, truncation, Path(args.data_dir) / "cls")
    unknown = sorted(set(split.labels.tolist()) - set(info.labels))
    if unknown:
        raise UserError(f"{path}: label '{unknown[0]}' is not one of the classifier's labels "
                        f"({', '.join(info.labels)})")
    split = sample_of(split, args.max_samples, args.seed)
    index = {name: i for i, name in enumerate(info.labels)}
    targets = np.array([index[name] for name in split.labels.tolist()], dtype=np.int64)
    batches = split_batches(split, targets, args.batch_size, tokenizer.eot_token, device)
    metrics = evaluate_classifier(model, batches, len(info.labels))
    print(f"{split.source}: {len(split):,} examples")
    print(format_report(metrics, info.labels, "eval"))
    return logged(metrics, info.labels, "eval")


def predict_table(model, tokenizer, info, path, args, device):
    """Classify every text of a table and write the predictions CSV; returns its path."""
    columns, rows = read_table(path)
    text_columns, label_column = pick_columns(columns, args.text_column, args.label_column, path,
                                              need_label=False)
    texts = [(line, table_texts(row, text_columns)) for line, row in rows]
    kept = [(line, text) for line, text in texts if text.strip()]
    if not kept:
        raise UserError(f"{path}: no texts to classify")
    truncation = (info.run or {}).get("truncation", "head")
    results = classify_texts(model, tokenizer, [t for _, t in kept], info.labels, device,
                             batch_size=args.batch_size, truncation=truncation)
    labels = {line: str(row.get(label_column, "")) for line, row in rows} if label_column else {}
    out = Path(args.out or "predictions.csv")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["line", "text", *(["label"] if labels else []), "predicted",
                             *(f"p_{name}" for name in info.labels)])
            for (line, text), (predicted, probs) in zip(kept, results):
                writer.writerow([line, text, *([labels[line]] if labels else []), predicted,
                                 *(f"{p:.6f}" for p in probs)])
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {out}: {e.strerror}") from None
    skipped = len(texts) - len(kept)
    note = f" ({skipped:,} empty rows skipped)" if skipped else ""
    print(f"wrote {len(kept):,} predictions to {out}{note}")
    return out


def main(argv=None):
    args = parse_args(argv)
    rt = setup_runtime(args.device, args.dtype)
    model, info = load_model(args.checkpoint, rt.device)
    model = for_inference(model, rt, args.quantize)
    tokenizer = tokenizer_from_dict(info.tokenizer)
    if args.predict:
        if info.task != "cls":
            raise UserError(f"{args.checkpoint} is a language model; --predict needs a classifier")
        predict_table(model, tokenizer, info, args.predict, args, rt.device)
        return
    if info.task == "cls":
        metrics = evaluate_table(model, tokenizer, info, args.data, args, rt.device)
    else:
        metrics = evaluate_text(model, tokenizer, args.data, args, rt.device)
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    run_main(main)

"""
Score a checkpoint on a file, or write its predictions, without training.

    python evaluate.py out/cls-tweets --data test.csv          # classifier: report, confusion
    python evaluate.py out/cls-tweets --data test.csv --max_samples 500   # a stratified sample
    python evaluate.py out/shakespeare --data input.txt        # language model: perplexity
    python evaluate.py out/cls-tweets --predict texts.jsonl --out predictions.csv
    python evaluate.py checkpoints/gpt2 --data fineweb10B      # a corpus's validation split
    python evaluate.py checkpoints/gpt2 --hellaswag            # HellaSwag (downloaded once)

The checkpoint is a run directory (its best/) or a checkpoint directory. Labelled files are read as
finetune.py reads them (.csv, .tsv, .jsonl, optionally .gz; columns guessed or --text_column /
--label_column). Predictions go to a CSV: the input's row number and text, its label when the file
has one, the predicted label and every label's probability. Its cells are safe to open in a
spreadsheet: one that begins with =, +, -, @, a tab or a carriage return, which a spreadsheet would
run as a formula, gets a single quote in front (tables.spreadsheet_safe).

--out must be a new file: it never replaces an existing file, this command's input, or anything
inside a checkpoint; --force replaces an earlier output of evaluate.py, and nothing else.
"""

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data import (TokenStream, load_tokens, prepare_lm_data, read_labelled, sample_of,
                  tokenizer_from_dict)
from metrics import (classify_texts, evaluate_classifier, format_report, hellaswag_scores,
                     hellaswag_tokens, logged, read_hellaswag, split_batches)
from sample import for_inference
from train import bits_per_byte, load_model
from ring.config import UserError, check_settings, parse_config, run_main, setting
from ring.download import fetch_hellaswag
from ring.files import check_output_file, read_text, write_file
from ring.runtime import setup_runtime
from ring.tables import pick_columns, read_table, spreadsheet_safe, table_texts


@torch.inference_mode()
def language_model_loss(model, tokens, batch_size, device):
    """(mean cross-entropy, tokens predicted) of a language model over a whole token sequence (a
    list of ids, or a data.TokenStream: a corpus's validation split).

    The text is cut into windows of block_size + 1 tokens that overlap by one, so every token after
    the first is predicted exactly once, from the tokens before it in its window (at most block_size
    of them). The last window may be shorter: it is padded, and the padding's targets (-1) are
    ignored. The loss is computed from the logits in float32, whatever precision the model runs in
    (a bf16 cross-entropy is off in the third digit)."""
    if not isinstance(tokens, TokenStream):
        tokens = TokenStream([np.asarray(tokens, dtype=np.int64)])
    T, n = model.config.block_size, len(tokens)
    starts = range(0, n - 1, T)
    total, count = 0.0, 0
    for i in range(0, len(starts), batch_size):
        group = [tokens.window(s, min(T + 1, n - s)) for s in starts[i : i + batch_size]]
        x = torch.zeros(len(group), T, dtype=torch.long)
        y = torch.full((len(group), T), -1, dtype=torch.long)
        for row, window in enumerate(group):
            x[row, : len(window) - 1] = torch.from_numpy(window[:-1])
            y[row, : len(window) - 1] = torch.from_numpy(window[1:])
        x, y = x.to(device), y.to(device)
        logits, _ = model(x, y)  # with targets: the logits of every position, (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-1,
                               reduction="sum")
        total, count = total + loss.item(), count + int((y != -1).sum())
    return total / count, count


def evaluate_text(model, tokenizer, info, data, args, device):
    """A language model's loss, perplexity and bits per byte: on a whole .txt file, every token
    after the first; on a corpus (a built-in name such as fineweb10B, a folder, a table of
    documents, shards), on its validation split, prepared as the checkpoint's run prepared its data
    (its val_fraction and text column: the documents it held out, when it trained on this corpus;
    10% of them for a checkpoint trained elsewhere) and cached in --data_dir."""
    path, run = Path(data), info.run or {}
    if path.is_file() and path.suffix == ".txt":
        tokens, where = tokenizer.encode(read_text(path, "--data")), str(path)
    else:
        directory, manifest = prepare_lm_data(
            data, info.tokenizer, args.data_dir, val_fraction=run.get("val_fraction", 0.1),
            text_column=args.text_column or run.get("text_column", ""))
        tokens, where = load_tokens(directory, manifest, "val"), f"the validation split of {data}"
    if args.max_tokens and len(tokens) > args.max_tokens:
        tokens = tokens.window(0, args.max_tokens) if isinstance(tokens, TokenStream) \
            else tokens[: args.max_tokens]
    if len(tokens) < 2:
        raise UserError(f"{data} has fewer than two tokens: nothing to predict")
    loss, n = language_model_loss(model, tokens, args.batch_size, device)
    predicted = tokens.window(1, n) if isinstance(tokens, TokenStream) else tokens[1:]
    bpb = bits_per_byte(loss, float(tokenizer.token_bytes()[np.asarray(predicted)].mean()))
    metrics = {"loss": loss, "perplexity": math.exp(loss), "bpb": bpb, "tokens": n}
    print(f"{where}: loss {loss:.4f} | perplexity {math.exp(loss):.3f} | {bpb:.4f} bits per byte "
          f"| {n:,} tokens predicted")
    return metrics


def evaluate_hellaswag(model, tokenizer, info, args, device):
    """HellaSwag's validation split (downloaded on first use) or a file in its format, completion
    style: metrics.hellaswag_scores."""
    if info.task != "lm" or info.tokenizer["type"] != "gpt2":
        raise UserError(f"{args.checkpoint} is not a GPT-2-tokenizer language model; HellaSwag "
                        "scores those")
    path = args.hellaswag
    if path == "download":
        path = fetch_hellaswag(Path(args.data_dir) / "hellaswag")
    examples = read_hellaswag(path, args.max_samples)
    metrics = hellaswag_scores(model, hellaswag_tokens(tokenizer, examples), device)
    print(f"HellaSwag ({path}, {len(examples):,} examples): acc {metrics['hellaswag_acc']:.4f} | "
          f"acc_norm {metrics['hellaswag_acc_norm']:.4f}")
    return metrics


def evaluate_table(model, tokenizer, info, path, args, device):
    truncation = (info.run or {}).get("truncation", "head")
    split = read_labelled(path, args.text_column, args.label_column, tokenizer,
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


def predict_table(model, tokenizer, info, path, out, args, device):
    """Classify every text of a table and write the predictions CSV to out."""
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

    def fill(f):
        writer = csv.writer(f)
        rows = [["line", "text", *(["label"] if labels else []), "predicted",
                 *(f"p_{name}" for name in info.labels)]]
        for (line, text), (predicted, probs) in zip(kept, results):
            rows.append([line, text, *([labels[line]] if labels else []), predicted,
                         *(f"{p:.6f}" for p in probs)])
        writer.writerows([spreadsheet_safe(cell) for cell in row] for row in rows)

    write_file(out, fill)
    skipped = len(texts) - len(kept)
    note = f" ({skipped:,} empty rows skipped)" if skipped else ""
    print(f"wrote {len(kept):,} predictions to {out}{note}")


# --------------------------------------------------------------------------------------------------
# What --out may replace: only an earlier output of this command (--force)

METRICS_MARK = "minigpt2_evaluate"  # in the metrics JSON: this command wrote it


def is_earlier_predictions(path):
    """Does path begin with the header of a predictions CSV (predict_table)?"""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    rest = header[3:] if header[2:3] == ["label"] else header[2:]
    return (header[:2] == ["line", "text"] and rest[:1] == ["predicted"] and len(rest) > 1
            and all(name.startswith("p_") for name in rest[1:]))


def is_earlier_metrics(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get(METRICS_MARK) is True
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def output_of(args):
    """The file --out names (predictions.csv by default for --predict; none for --data without
    --out), checked before any work: refused in one line if it would replace anything else than an
    earlier output of this command, or that without --force."""
    out = args.out or ("predictions.csv" if args.predict else "")
    if out:
        ours = is_earlier_predictions if args.predict else is_earlier_metrics
        check_output_file(out, ours, args.force, inputs=(args.data, args.predict), flag="--out")
    return out


def main(argv=None):
    args = parse_config(EvaluateSettings, argv, description=__doc__, prog="evaluate.py")
    out = output_of(args)
    rt = setup_runtime(args.device, args.dtype)
    model, info = load_model(args.checkpoint, rt.device)
    model = for_inference(model, rt, args.quantize)
    tokenizer = tokenizer_from_dict(info.tokenizer)
    if args.predict:
        if info.task != "cls":
            raise UserError(f"{args.checkpoint} is a language model; --predict needs a classifier")
        predict_table(model, tokenizer, info, args.predict, out, args, rt.device)
        return
    if args.hellaswag:
        metrics = evaluate_hellaswag(model, tokenizer, info, args, rt.device)
    elif info.task == "cls":
        metrics = evaluate_table(model, tokenizer, info, args.data, args, rt.device)
    else:
        metrics = evaluate_text(model, tokenizer, info, args.data, args, rt.device)
    if out:
        write_file(out, lambda f: f.write(json.dumps({**metrics, METRICS_MARK: True}, indent=1)))


# --------------------------------------------------------------------------------------------------
# The settings (python evaluate.py --help)


@dataclass
class EvaluateSettings:
    checkpoint: str = setting("a run directory (its best/ is used) or a checkpoint directory", "",
                              "required")
    data: str = setting("score on this file: a labelled table (classifier) or a UTF-8 text file "
                        "(language model)", "")
    predict: str = setting("classify the texts of this table (classifier)", "")
    hellaswag: str = setting("score HellaSwag's validation split, downloaded on first use "
                             "(--hellaswag), or a file in its format (--hellaswag=FILE)", "",
                             bare="download")
    out: str = setting("--predict: the CSV to write (empty: predictions.csv); --data: also write "
                       "the metrics to this JSON file", "")
    force: bool = setting("replace --out if it holds an earlier output of evaluate.py (never "
                          "anything else)", False)
    text_column: str = setting("the text column(s), comma-separated (empty: guessed)", "")
    label_column: str = setting("the label column (empty: guessed)", "")
    max_samples: int = setting("--data: a stratified sample of this many; --hellaswag: the first "
                               "this many (0: all)", 0, ">= 0")
    max_tokens: int = setting("--data, a language model: the first this many tokens (0: all)", 0,
                              ">= 0")
    batch_size: int = setting("texts (or windows) per batch", 32, ">= 1")
    data_dir: str = setting("where downloads and tokenized data are cached", "data")
    seed: int = setting("seed of the --max_samples sample", 1337, "[0, 9223372036854775807]")
    device: str = setting("auto | cpu | cuda | cuda:N | mps", "auto")
    dtype: str = setting("precision of the weights", "auto",
                         ("auto", "float32", "bfloat16", "float16"))
    quantize: str = setting("int8: weight-only int8 weights (quantize.py), a quarter of "
                            "float32's memory", "", ("", "int8"))

    POSITIONAL = ("checkpoint",)

    def __post_init__(self):
        check_settings(self)
        if sum(map(bool, (self.data, self.predict, self.hellaswag))) != 1:
            raise UserError("give one of --data FILE (score the checkpoint), --predict FILE (write "
                            "predictions) and --hellaswag[=FILE]")


if __name__ == "__main__":
    run_main(main)

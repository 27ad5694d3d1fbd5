"""
Measuring a classifier, and using one.

    evaluate_classifier(model, batches, n_classes)   loss, accuracy, macro-F1, per class, confusion
    format_report(metrics, labels, split)            the same as a table to print
    classify_texts(model, tokenizer, texts, labels)  each text's label and every label's probability
    split_batches(split, targets, ...)               a labelled split in padded batches

finetune.py evaluates with these during training, evaluate.py on a checkpoint and a file, sample.py
classifies the texts it is given.
"""

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from data import pad_batch, truncate
from ring.config import UserError
from ring.tables import classifier_text, open_text, table_rows


def classification_metrics(y_true, y_pred, n_classes):
    """Accuracy, macro-F1, per-class precision / recall / F1 / support and the confusion matrix.

    confusion[i][j] counts examples of class i predicted as class j. A class's F1 is 0 when it has
    no correct prediction; macro-F1 is the plain mean over the classes that occur (as true or
    predicted labels), so a rare class weighs as much as a frequent one, unlike accuracy."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    correct = np.diag(confusion)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    precision = np.divide(correct, predicted, out=np.zeros(n_classes), where=predicted > 0)
    recall = np.divide(correct, support, out=np.zeros(n_classes), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n_classes),
                   where=precision + recall > 0)
    present = (support + predicted) > 0
    return {
        "accuracy": float(correct.sum() / max(len(y_true), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.tolist(),
        "confusion": confusion.tolist(),
    }


def format_report(metrics, labels, split):
    """The per-class table and the confusion matrix, as lines of text."""
    width = max(10, *(len(label) for label in labels))
    lines = [f"{split}: loss {metrics['loss']:.4f} | accuracy {metrics['accuracy']:.4f} | "
             f"macro-F1 {metrics['macro_f1']:.4f}",
             f"{'':>{width}}  precision  recall     F1  support"]
    for i, label in enumerate(labels):
        p, r, f1, n = (metrics[k][i] for k in ("precision", "recall", "f1", "support"))
        lines.append(f"{label:>{width}}  {p:9.3f}  {r:6.3f}  {f1:5.3f}  {n:7,}")
    columns = [max(len(label), 6) for label in labels]
    heading = "  ".join(f"{label:>{w}}" for label, w in zip(labels, columns))
    lines.append(f"{'true/predicted':>{width}}  {heading}")
    for i, label in enumerate(labels):
        counts = "  ".join(f"{n:>{w},}" for n, w in zip(metrics["confusion"][i], columns))
        lines.append(f"{label:>{width}}  {counts}")
    return "\n".join(lines)


def logged(metrics, labels, split):
    """metrics as metrics.jsonl rows carry them: split-prefixed, per-class numbers by label."""
    per_class = {label: {k: metrics[k][i] for k in ("precision", "recall", "f1", "support")}
                 for i, label in enumerate(labels)}
    return {f"{split}_loss": metrics["loss"], f"{split}_accuracy": metrics["accuracy"],
            f"{split}_macro_f1": metrics["macro_f1"], f"{split}_per_class": per_class,
            f"{split}_confusion": metrics["confusion"]}


def split_batches(split, targets, batch_size, pad_id, device, order=None):
    """(x, lengths, y) on device for a split, batch_size examples at a time, sorted by length so
    that padding is short (evaluation); order, when given, lists the example indices of each batch.
    """
    if order is None:
        by_length = np.argsort(split.lengths(), kind="stable")
        order = [by_length[i : i + batch_size] for i in range(0, len(by_length), batch_size)]
    out = []
    for indices in order:
        x, lengths = pad_batch([split.tokens[i] for i in indices], pad_id)
        y = torch.from_numpy(targets[indices])
        out.append((x.to(device), lengths.to(device), y.to(device)))
    return out


@torch.inference_mode()
def evaluate_classifier(model, batches, n_classes):
    """Loss and classification metrics of model over batches of (x, lengths, y). The loss is
    computed from the logits in float32, whatever precision the model runs in: a bf16
    cross-entropy is off in the third digit."""
    model.eval()
    loss_sum, true, predicted = 0.0, [], []
    for x, lengths, y in batches:
        logits, _ = model(x, lengths)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        true.append(y.cpu())
        predicted.append(logits.argmax(dim=-1).cpu())
    model.train()
    true, predicted = torch.cat(true).numpy(), torch.cat(predicted).numpy()
    return {"loss": loss_sum / len(true), **classification_metrics(true, predicted, n_classes)}


@torch.inference_mode()
def classify_texts(model, tokenizer, texts, labels, device, batch_size=32, truncation="head"):
    """[(label name, [probability of each label])] for texts, in order. Each text is read as in
    training: prepared by tables.classifier_text, and when longer than the model's context cut to
    block_size tokens (truncation: head, tail or head_tail)."""
    model.eval()
    n = model.config.block_size
    encoded = [truncate(tokenizer.encode(classifier_text(text)), n, truncation) for text in texts]
    empty = [i + 1 for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise UserError(f"text {empty[0]} is empty; there is nothing to classify")
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))  # similar lengths together
    results = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        x, lengths = pad_batch([encoded[i] for i in chunk], tokenizer.eot_token)
        logits, _ = model(x.to(device), lengths.to(device))
        for i, probs in zip(chunk, torch.softmax(logits.float(), dim=-1).tolist()):
            results[i] = (labels[int(np.argmax(probs))], probs)
    return results


# --------------------------------------------------------------------------------------------------
# HellaSwag: common-sense completion, scored the way GPT-2's were


def hellaswag_tokens(tokenizer, examples):
    """The examples with their context and endings as token ids (ctx_ids, ending_ids): tokenized
    once per run, scored at every evaluation."""
    return [{**e, "ctx_ids": tokenizer.encode(e["ctx"]),
             "ending_ids": [tokenizer.encode(" " + ending) for ending in e["endings"]]}
            for e in examples]


@torch.inference_mode()
def hellaswag_scores(model, examples, device, batch_size=8, total=lambda counts: counts):
    """acc and acc_norm of a language model on HellaSwag examples, completion style ("HellaSwag: Can
    a Machine Really Finish Your Sentence?", Zellers et al. 2019; as build-nanogpt and llm.c score
    GPT-2): each of the four endings is appended to the context, " " + ending, and the model's
    cross-entropy on the ending's tokens alone (given the context) is its cost. acc picks the ending
    with the lowest summed cost, acc_norm the lowest mean cost per token, which does not favour
    short endings. A text longer than the model's context keeps its last block_size + 1 tokens.
    Published in this style on the 10,042 validation examples: GPT-2 124M acc 0.2859, acc_norm
    0.2955; GPT-2 XL 0.3842, 0.4893; chance 0.25.

    examples: hellaswag_tokens's. total(counts) adds up the counts of every process when each
    scores its share of the examples (train.py); one process scores them all."""
    model.eval()
    T = model.config.block_size
    right = torch.zeros(3, dtype=torch.float64)  # acc, acc_norm, examples
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        rows = [(e["ctx_ids"] + ending)[-(T + 1) :] for e in batch for ending in e["ending_ids"]]
        ending_lengths = [len(ending) for e in batch for ending in e["ending_ids"]]
        width = max(map(len, rows)) - 1
        x = torch.zeros(len(rows), width, dtype=torch.long)
        y = torch.full((len(rows), width), -1, dtype=torch.long)  # -1: not scored
        for i, (ids, n) in enumerate(zip(rows, ending_lengths)):
            begin = max(len(ids) - n, 1)  # where the ending starts (the first token has no target)
            x[i, : len(ids) - 1] = torch.tensor(ids[:-1])
            # target t is token t + 1: the ending's tokens are targets begin - 1 ... len - 2
            y[i, begin - 1 : len(ids) - 1] = torch.tensor(ids[begin:])
        logits, _ = model(x.to(device), y.to(device))
        cost = F.cross_entropy(logits.float().transpose(1, 2), y.to(device), ignore_index=-1,
                               reduction="none")  # (rows, width), 0 where not scored
        summed = cost.sum(1).view(-1, 4)
        mean = (cost.sum(1) / (y != -1).sum(1).to(device)).view(-1, 4)
        labels = torch.tensor([e["label"] for e in batch], device=device)
        right += torch.tensor([int((summed.argmin(1) == labels).sum()),
                               int((mean.argmin(1) == labels).sum()), len(batch)])
    model.train()
    acc, acc_norm, n = total(right).tolist()
    return {"hellaswag_acc": acc / n, "hellaswag_acc_norm": acc_norm / n,
            "hellaswag_examples": int(n)}


def read_hellaswag(path, limit=0):
    """The examples of a HellaSwag .jsonl file (the format of rowanz/hellaswag's data/: one object
    a line with ctx, endings, label, ...) as dicts {ctx, endings, label}; the first `limit` of them
    (0: all). A line that is not such an example is one line naming it."""
    if not Path(path).is_file():
        raise UserError(f"{path} not found")
    examples = []
    with open_text(path) as f:
        for number, row in table_rows(f, path):
            endings, label = row.get("endings"), row.get("label")
            if not (isinstance(row.get("ctx"), str) and isinstance(endings, list)
                    and len(endings) == 4 and all(isinstance(e, str) for e in endings)
                    and type(label) is int and 0 <= label <= 3):
                raise UserError(f"{path}: line {number} is not a HellaSwag example (an object "
                                "with ctx, four endings and a label 0-3)")
            examples.append({"ctx": row["ctx"], "endings": endings, "label": label})
            if len(examples) == limit:
                break
    if not examples:
        raise UserError(f"{path} holds no HellaSwag example")
    return examples

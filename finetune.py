"""
Fine-tune GPT-2: text classification (sentiment, fake news, ...) or more language modelling on a text.

    python finetune.py --task cls --dataset tweet_sentiment --init_from gpt2
    python finetune.py configs/finetune_tweets.py                    (the same run, from a config file)
    python finetune.py --dataset reviews.csv.gz --test_dataset test.csv.gz --text_column title,text
    python finetune.py --task gen --dataset book.txt --init_from gpt2
    python sample.py --out_dir out/cls-tweets --text "This is a great product!"

Classification (--task cls) puts a linear head on the model (GPT.classify in model.py) and trains it with
train.py's loop, so device and precision, the schedule, clipping, gradient accumulation, checkpoints, exact
resume and DDP are train.py's, imported. What this file adds is what classification needs besides: labelled
data in batches of similar length, accuracy / F1 / confusion matrix, the test evaluation of the best
checkpoint, and the two cheaper ways to fine-tune that users compare with full fine-tuning: training only the
last blocks (--freeze) and LoRA (--lora_rank).

Generative fine-tuning (--task gen) is train.py itself, started from a pretrained model: the settings are
handed to train.run.
"""

import contextlib
import copy
import io
import json
import math
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from checkpoint import find_checkpoint, load_model, load_train_state
from config import UserError, parse_config, run_main
from data import GPT2Tokenizer, LengthBatches, load_classification_data, pad_batch
from model import GPT, GPTConfig
from train import Task, TrainConfig, _help, check_config, main_process_first, print0, run, session, set_dropout, train_loop


@dataclass
class FinetuneConfig(TrainConfig):
    # TrainConfig's settings, with defaults for fine-tuning a pretrained model (same order, new defaults)
    out_dir: str = _help("run directory: last/ and best/ checkpoints, metrics.jsonl", "out/finetune")
    init_from: str = _help("a GPT-2 name (gpt2, gpt2-medium...; imported on first use) | a checkpoint or run "
                           "directory | scratch (a new model shaped by n_layer/n_head/n_embd) | resume", "gpt2")
    dataset: str = _help("cls: tweet_sentiment | imdb | fake_news (downloaded once) or a .csv/.tsv/.jsonl file "
                         "(.gz too); gen: a UTF-8 .txt file", "tweet_sentiment")
    tokenizer: str = _help("gpt2 (gen from scratch may use char; cls always uses gpt2)", "gpt2")
    max_iters: int = _help("optimizer steps in total (0: as many as --epochs take)", 0)
    eval_interval: int = _help("evaluate and write last/ every this many steps (cls: also at each epoch's end)", 200)
    eval_iters: int = _help("gen: batches per split in an evaluation (cls evaluates the whole validation split)", 50)
    block_size: int = _help("gen: context length in tokens (cls: see max_length)", 256)
    dropout: float = _help("dropout probability", 0.1)
    learning_rate: float = _help("peak learning rate", 5e-5)
    min_lr: float = _help("learning rate at the end of the cosine decay", 0.0)
    lr_decay_iters: int = _help("step where the cosine reaches min_lr (0: the last step)", 0)
    weight_decay: float = _help("AdamW weight decay on matmul weights", 0.01)
    beta2: float = _help("AdamW beta2", 0.999)
    # what is particular to fine-tuning
    task: str = _help("cls (text classification) | gen (language modelling on a text, as train.py)", "cls")
    epochs: float = _help("passes over the training data, when max_iters is 0 (fractions allowed)", 3.0)
    text_column: str = _help("cls: the text column; several are joined, e.g. title,text (empty: guessed)", "")
    label_column: str = _help("cls: the label column, names or integers (empty: guessed)", "")
    val_dataset: str = _help("cls: a validation file (empty: the dataset's own, else val_fraction of train)", "")
    test_dataset: str = _help("cls: a test file (empty: the dataset's own, else val_fraction of train)", "")
    val_fraction: float = _help("cls: share of each label carved out of train for a missing val or test split", 0.1)
    max_length: int = _help("cls: texts are cut to this many tokens (batches are padded only to their longest)", 256)
    max_train_samples: int = _help("cls: train on at most this many examples, for quick runs (0: all)", 0)
    freeze: int = _help("cls: train only the head, ln_f and the last N blocks (-1: train everything)", -1)
    lora_rank: int = _help("cls: LoRA of this rank on the attention and MLP projections (0: off)", 0)
    lora_alpha: float = _help("cls: LoRA scale numerator: the update is (lora_alpha / lora_rank) B A", 16.0)
    best_metric: str = _help("cls: what best/ is chosen by: val_accuracy | val_macro_f1 | val_loss", "val_accuracy")
    patience: int = _help("cls: stop after this many evaluations without a better best_metric (0: never)", 0)


# ----------------------------------------------------------------------------------------------------------
# LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models")
#
# Fine-tuning changes each weight matrix W by some dW. LoRA bets that dW has low rank and learns it as a
# product B A of two thin matrices, leaving W frozen. For GPT-2's c_fc (768 -> 3072) at rank 8 that is
# 8 * (768 + 3072) = 30,720 trained numbers instead of 2.4M, and the optimizer keeps state for those only.
# Once trained, B A is added into W ("merged"): the result is an ordinary model, so checkpoints hold plain
# weights and load, sample and export like any other, with no LoRA code needed to use them.


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update:  y = x W^T + b + (alpha / r) x A^T B^T.

    A (r, in) starts random and B (out, r) at zero, so at the first step the model is exactly the pretrained
    one. Dividing by r keeps the update's size comparable across ranks, so alpha need not be re-tuned."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base = base.requires_grad_(False)
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init, as in the paper's code
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=weight.device, dtype=weight.dtype))
        self.scale = alpha / rank

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scale

    def merged(self):
        """The plain nn.Linear that computes the same thing: W + (alpha / r) B A."""
        linear = copy.deepcopy(self.base)
        with torch.no_grad():
            linear.weight += self.scale * (self.lora_B @ self.lora_A)
        return linear


def add_lora(block, rank, alpha):
    """Wrap a block's four projections (attention in and out, MLP in and out) in LoRALinear."""
    block.attn.c_attn = LoRALinear(block.attn.c_attn, rank, alpha)
    block.attn.c_proj = LoRALinear(block.attn.c_proj, rank, alpha)
    block.mlp.c_fc = LoRALinear(block.mlp.c_fc, rank, alpha)
    block.mlp.c_proj = LoRALinear(block.mlp.c_proj, rank, alpha)


def merged_copy(model):
    """A copy of model with every LoRALinear merged into a plain nn.Linear: the model that gets saved. A copy,
    so training continues on the unmerged model (merging in place and subtracting again would not give back
    the same bits)."""
    plain = copy.deepcopy(model)
    for module in list(plain.modules()):
        for name, child in module.named_children():
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    return plain


def lora_state(model):
    """The weights that only the unmerged model has (frozen bases, A and B), for train_state.pt: resuming
    continues from them exactly."""
    return {k: v for k, v in model.state_dict().items() if ".base." in k or ".lora_" in k}


def choose_trainable(model, freeze, lora_rank, lora_alpha):
    """Decide what trains. Returns a one-line description.

    - everything (freeze -1, lora_rank 0): full fine-tuning;
    - freeze N: the head, ln_f (the LayerNorm right below it) and the last N blocks; N = 0 trains the head only;
    - lora_rank R: the head and LoRA's A and B in every block (or in the last N with freeze N), nothing else."""
    blocks = list(model.transformer.h)
    if freeze < 0 and lora_rank == 0:
        return "everything (full fine-tuning)"
    tuned = blocks[len(blocks) - min(freeze, len(blocks)) :] if freeze >= 0 else blocks
    model.requires_grad_(False)
    model.score.requires_grad_(True)  # the head is new: it must learn
    if lora_rank:
        for block in tuned:
            add_lora(block, lora_rank, lora_alpha)
        return f"the head + LoRA rank {lora_rank} (alpha {lora_alpha:g}) in {len(tuned)} of {len(blocks)} blocks"
    model.transformer.ln_f.requires_grad_(True)
    for block in tuned:
        block.requires_grad_(True)
    return f"the head, ln_f and the last {len(tuned)} of {len(blocks)} blocks"


# ----------------------------------------------------------------------------------------------------------
# Metrics


def classification_metrics(y_true, y_pred, n_classes):
    """Accuracy, macro-F1, per-class precision / recall / F1 / support and the confusion matrix.

    confusion[i][j] counts examples of class i predicted as class j. A class's F1 is 0 when it has no correct
    prediction; macro-F1 is the plain mean over the classes that occur (as true or predicted labels), so a
    rare class weighs as much as a frequent one, unlike accuracy."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    correct = np.diag(confusion)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    precision = np.divide(correct, predicted, out=np.zeros(n_classes), where=predicted > 0)
    recall = np.divide(correct, support, out=np.zeros(n_classes), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n_classes), where=precision + recall > 0)
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
    lines = [f"{split}: loss {metrics['loss']:.4f} | accuracy {metrics['accuracy']:.4f} | macro-F1 {metrics['macro_f1']:.4f}",
             f"{'':>{width}}  precision  recall     F1  support"]
    for i, label in enumerate(labels):
        lines.append(f"{label:>{width}}  {metrics['precision'][i]:9.3f}  {metrics['recall'][i]:6.3f}  "
                     f"{metrics['f1'][i]:5.3f}  {metrics['support'][i]:7,}")
    columns = [max(len(label), 6) for label in labels]
    lines.append(f"{'true/predicted':>{width}}  " + "  ".join(f"{label:>{w}}" for label, w in zip(labels, columns)))
    for i, label in enumerate(labels):
        lines.append(f"{label:>{width}}  " + "  ".join(f"{n:>{w},}" for n, w in zip(metrics["confusion"][i], columns)))
    return "\n".join(lines)


@torch.no_grad()
def evaluate_classifier(model, batches, n_classes):
    """Loss and classification metrics of model over batches of (x, lengths, y, n_tokens)."""
    model.eval()
    loss_sum, true, predicted = 0.0, [], []
    for x, lengths, y, _ in batches:
        logits, loss = model(x, y, lengths=lengths)
        loss_sum += loss.float().item() * len(y)
        true.append(y.cpu())
        predicted.append(logits.argmax(dim=-1).cpu())
    model.train()
    true, predicted = torch.cat(true).numpy(), torch.cat(predicted).numpy()
    return {"loss": loss_sum / len(true), **classification_metrics(true, predicted, n_classes)}


def logged(metrics, labels, split):
    """metrics as metrics.jsonl rows carry them: split-prefixed, per-class numbers keyed by label name."""
    per_class = {label: {k: metrics[k][i] for k in ("precision", "recall", "f1", "support")} for i, label in enumerate(labels)}
    return {f"{split}_loss": metrics["loss"], f"{split}_accuracy": metrics["accuracy"],
            f"{split}_macro_f1": metrics["macro_f1"], f"{split}_per_class": per_class,
            f"{split}_confusion": metrics["confusion"]}


# ----------------------------------------------------------------------------------------------------------
# The classification task, for train.py's loop


def to_batches(split, targets, index_batches, pad_id, device):
    """(x, lengths, y, real tokens) on device for each list of example indices."""
    out = []
    for indices in index_batches:
        x, lengths = pad_batch([split.tokens[i] for i in indices], pad_id)
        y = torch.from_numpy(targets[indices])
        out.append((x.to(device), lengths.to(device), y.to(device), int(lengths.sum())))
    return out


def fixed_batches(split, targets, batch_size, pad_id, device):
    """A split in batches of similar length, in a fixed order: for evaluation."""
    order = np.argsort(split.lengths(), kind="stable")
    return to_batches(split, targets, [order[i : i + batch_size] for i in range(0, len(order), batch_size)], pad_id, device)


def classification_task(cfg, rt, data, pad_id, info, export, extra_state):
    """The Task that train_loop runs for classification (see train.Task), and a counter of trained tokens."""
    if cfg.gradient_accumulation_steps % rt.world_size:
        raise UserError(f"gradient_accumulation_steps ({cfg.gradient_accumulation_steps}) must be divisible "
                        f"by the number of processes ({rt.world_size})")
    per_rank = cfg.gradient_accumulation_steps // rt.world_size
    train, targets = data.splits["train"], data.targets("train")
    # As in train.py's LMTask, every rank draws the same batches for the whole step and takes its own share,
    # so the step's global batch does not depend on the number of processes.
    sampler = LengthBatches(train.lengths(), cfg.batch_size, cfg.seed)
    seen = {"steps": 0, "tokens": 0}  # in this process's run, for the throughput summary

    def micro_batches():
        step = [sampler.next_batch() for _ in range(cfg.gradient_accumulation_steps)]
        batches = to_batches(train, targets, step[rt.rank * per_rank : (rt.rank + 1) * per_rank], pad_id, rt.device)
        seen["steps"] += 1
        seen["tokens"] += sum(b[3] for b in batches) * rt.world_size
        return batches

    def loss_fn(model, batch):
        x, lengths, y, n_tokens = batch
        _, loss = model(x, y, lengths=lengths)  # forward, not classify: DDP syncs gradients for forward calls
        return loss, n_tokens

    val_batches = fixed_batches(data.splits["val"], data.targets("val"), cfg.batch_size, pad_id, rt.device)

    def evaluate(model):
        metrics = evaluate_classifier(model, val_batches, len(data.labels))
        print0(rt, format_report(metrics, data.labels, "val"))
        return logged(metrics, data.labels, "val")

    # Epochs, in optimizer steps. A step takes gradient_accumulation_steps batches, which need not divide an
    # epoch's batches, so an epoch ends during the step that takes its last batch.
    batches, accumulation = sampler.batches_per_epoch, cfg.gradient_accumulation_steps

    def epochs_done(step):
        return step * accumulation // batches

    task = Task(micro_batches, loss_fn, evaluate, sampler, info,
                best_metric=cfg.best_metric, higher_is_better=not cfg.best_metric.endswith("loss"),
                patience=cfg.patience, epoch_of=lambda step: round(step * accumulation / batches, 3),
                example_batch=val_batches[0], evaluate_at=lambda step: epochs_done(step) > epochs_done(step - 1),
                export=export, extra_state=extra_state)
    return task, batches / accumulation, seen


# ----------------------------------------------------------------------------------------------------------
# The model


def build_classifier(cfg, labels, tokenizer, rt):
    """The model to fine-tune, from cfg.init_from, with a head for labels. Returns (model, resume_state)."""
    if cfg.init_from == "scratch":
        torch.manual_seed(cfg.seed)
        config = GPTConfig(block_size=cfg.max_length, vocab_size=tokenizer.vocab_size, n_layer=cfg.n_layer,
                           n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias,
                           n_classes=len(labels))
        return GPT(config), None
    resume_state = None
    if cfg.init_from == "resume":
        where = find_checkpoint(Path(cfg.out_dir) / "last")
        model, info = load_model(where)
        if info.get("task") != "cls":
            raise UserError(f"{where} is not a classifier's checkpoint; resume a finetune.py --task cls run")
        run_cfg = info.get("run", {})
        changed = [f"{k} {run_cfg[k]} -> {getattr(cfg, k)}" for k in ("max_length", "freeze", "lora_rank", "lora_alpha")
                   if k in run_cfg and run_cfg[k] != getattr(cfg, k)]
        if changed:
            raise UserError(f"cannot resume {where} with other settings ({', '.join(changed)}); use the run's own or a new out_dir")
        resume_state = load_train_state(where)
    else:
        from hf_import import resolve_pretrained

        where = main_process_first(rt, lambda: resolve_pretrained(cfg.init_from))  # one download, not one per rank
        model, info = load_model(where)
    if info.get("tokenizer", {}).get("type") != "gpt2":
        raise UserError(f"{where} was trained with the {info.get('tokenizer', {}).get('type')} tokenizer; "
                        "classification reads GPT-2 BPE tokens, so start from a GPT-2 model or checkpoint")
    if info.get("task") == "cls":
        if info.get("labels") != labels:
            raise UserError(f"{where} is a classifier for {', '.join(info.get('labels', []))}; this data's labels are "
                            f"{', '.join(labels)}. Start from a language model (e.g. gpt2) to train a new head")
    else:
        # A language model gets a new, randomly initialised head (as GPT2ForSequenceClassification's).
        model.config.n_classes = len(labels)
        model.score = nn.Linear(model.config.n_embd, len(labels), bias=False)
        nn.init.normal_(model.score.weight, mean=0.0, std=0.02)
    if cfg.max_length > model.config.block_size:
        raise UserError(f"max_length {cfg.max_length} is longer than the {model.config.block_size} positions of {where}")
    if cfg.max_length < model.config.block_size:
        model.crop_block_size(cfg.max_length)
    set_dropout(model, cfg.dropout)
    return model, resume_state


# ----------------------------------------------------------------------------------------------------------
# Inference (sample.py calls this for classifier checkpoints)


@torch.no_grad()
def classify_texts(model, tokenizer, texts, labels, device, batch_size=32):
    """[(label name, [probability of each label])] for texts, in order. A text longer than the model's context
    is cut to its first block_size tokens, as in training."""
    model.eval()
    encoded = [tokenizer.encode(text)[: model.config.block_size] for text in texts]
    empty = [i + 1 for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise UserError(f"text {empty[0]} is empty; there is nothing to classify")
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))  # similar lengths together: less padding
    results = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        x, lengths = pad_batch([encoded[i] for i in chunk], tokenizer.eot_token)
        logits, _ = model(x.to(device), lengths=lengths.to(device))
        for i, probs in zip(chunk, torch.softmax(logits.float(), dim=-1).tolist()):
            results[i] = (labels[int(np.argmax(probs))], probs)
    return results


# ----------------------------------------------------------------------------------------------------------
# The runs


def peak_memory(rt):
    """(bytes, what was measured): the GPU's peak allocation, or the process's peak resident memory."""
    if rt.device_type == "cuda":
        return torch.cuda.max_memory_allocated(rt.device), "peak GPU memory allocated"
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss * (1 if sys.platform == "darwin" else 1024), "peak process memory (RSS)"  # bytes on macOS, KiB on Linux
    except ImportError:  # Windows
        return 0, "peak memory unknown"


def run_classification(cfg):
    with session(cfg) as rt:
        if cfg.tokenizer != "gpt2":
            raise UserError("classification uses the gpt2 tokenizer (--tokenizer=gpt2)")
        if cfg.best_metric not in ("val_accuracy", "val_macro_f1", "val_loss"):
            raise UserError(f"best_metric '{cfg.best_metric}' is not one of val_accuracy, val_macro_f1, val_loss")
        if not 0 < cfg.val_fraction < 0.5:
            raise UserError(f"val_fraction must be between 0 and 0.5, not {cfg.val_fraction}")
        if cfg.lora_rank < 0 or cfg.freeze < -1 or cfg.max_length < 1:
            raise UserError("lora_rank must be >= 0, freeze >= -1 and max_length >= 1")
        tokenizer = GPT2Tokenizer()

        def load():
            quiet = contextlib.redirect_stdout(io.StringIO()) if not rt.is_main else contextlib.nullcontext()
            with quiet:  # each rank loads the data (from rank 0's cache); one of them says what it found
                return load_classification_data(
                    cfg.dataset, tokenizer, cfg.data_dir, val_dataset=cfg.val_dataset, test_dataset=cfg.test_dataset,
                    text_column=cfg.text_column, label_column=cfg.label_column, val_fraction=cfg.val_fraction,
                    max_length=cfg.max_length, max_train_samples=cfg.max_train_samples, seed=cfg.seed)

        data = main_process_first(rt, load)
        labels = data.labels
        majority = int(np.bincount(data.targets("train"), minlength=len(labels)).argmax())
        baseline = {split: float((data.targets(split) == majority).mean()) for split in ("val", "test")}
        print0(rt, f"majority baseline (always '{labels[majority]}'): val accuracy {baseline['val']:.4f}, "
                   f"test accuracy {baseline['test']:.4f}")

        model, resume_state = build_classifier(cfg, labels, tokenizer, rt)
        torch.manual_seed(cfg.seed)  # LoRA's A matrices
        trains = choose_trainable(model, cfg.freeze, cfg.lora_rank, cfg.lora_alpha)
        if resume_state is not None and cfg.lora_rank:
            # last/ holds the merged weights; the unmerged ones (frozen bases, A and B) continue from train_state.pt
            saved = resume_state.get("task") or {}
            if set(saved) != set(lora_state(model)):
                raise UserError(f"the LoRA weights in {cfg.out_dir}/last do not fit this model; resume with the run's settings")
            model.load_state_dict(saved, strict=False)
        model.to(rt.device)
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print0(rt, f"model: {total / 1e6:.2f}M parameters, {trainable / 1e6:.3f}M trainable ({100 * trainable / total:.2f}%): {trains}")
        torch.manual_seed(cfg.seed + rt.rank)  # dropout differs per rank

        info = {"task": "cls", "tokenizer": tokenizer.to_dict(), "labels": labels,
                "data": {split: texts.source for split, texts in data.splits.items()}}
        lora = cfg.lora_rank > 0
        task, per_epoch, seen = classification_task(cfg, rt, data, tokenizer.eot_token, info,
                                                    export=merged_copy if lora else None,
                                                    extra_state=lora_state if lora else None)
        max_iters = cfg.max_iters or max(1, math.ceil(cfg.epochs * per_epoch))
        cfg = replace(cfg, max_iters=max_iters, lr_decay_iters=cfg.lr_decay_iters or max_iters)
        print0(rt, f"training: {max_iters:,} steps, {per_epoch:.1f} steps per epoch ({max_iters / per_epoch:.2f} epochs)")

        out_dir = Path(cfg.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        start = time.time()
        train_loop(cfg, rt, model, task, resume_state, log_file=out_dir / "metrics.jsonl")
        elapsed = time.time() - start
        steps = seen["steps"]
        memory, what = peak_memory(rt)
        print0(rt, f"trained {steps:,} steps in {elapsed:.0f} s: {elapsed * per_epoch / max(steps, 1):.0f} s per epoch "
                   f"(evaluations included), {seen['tokens'] / elapsed:,.0f} tokens/s, {trainable / 1e6:.3f}M trainable "
                   f"parameters, {what} {memory / 2**30:.2f} GiB")

        # the final word: the best checkpoint (by validation) on the test split, which nothing was chosen by
        if rt.is_main and (out_dir / "best").exists():
            best, best_info = load_model(out_dir / "best", rt.device)
            test_batches = fixed_batches(data.splits["test"], data.targets("test"), cfg.batch_size, tokenizer.eot_token, rt.device)
            with rt.autocast():
                metrics = evaluate_classifier(best, test_batches, len(labels))
            print0(rt, f"best checkpoint (iter {best_info['iter_num']}) on the test split:\n" + format_report(metrics, labels, "test"))
            row = {"iter": best_info["iter_num"], "checkpoint": "best", **logged(metrics, labels, "test"),
                   "baseline_test_accuracy": baseline["test"], "majority_label": labels[majority]}
            with open(out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")


def run_generative(cfg):
    """Causal-LM fine-tuning: train.py's run, with the settings that fine-tuning shares with it."""
    if cfg.lora_rank or cfg.freeze >= 0:
        raise UserError("--lora_rank and --freeze are options of --task cls")
    settings = {f.name: getattr(cfg, f.name) for f in fields(TrainConfig)}
    run(TrainConfig(**settings), epochs=None if cfg.max_iters else cfg.epochs)


def main(argv=None):
    cfg = check_config(parse_config(FinetuneConfig, argv, description="Fine-tune GPT-2 for text classification (--task cls) "
                                                          "or on a text (--task gen)."))
    if cfg.task == "cls":
        run_classification(cfg)
    elif cfg.task == "gen":
        run_generative(cfg)
    else:
        raise UserError(f"unknown task '{cfg.task}' (use cls or gen)")


if __name__ == "__main__":
    run_main(main)

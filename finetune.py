"""
Fine-tune GPT-2: text classification (sentiment, fake news, ...) or more language modelling on a
text.

    python finetune.py --task cls --dataset tweet_sentiment --init_from gpt2
    python finetune.py configs/finetune_tweets.py               (the same run, from a config file)
    python finetune.py --dataset reviews.csv.gz --test_dataset test.csv.gz --text_column title,text
    python finetune.py --task gen --dataset book.txt --init_from gpt2 --lora_rank 8
    python sample.py --out_dir out/cls-tweets --text "This is a great product!"

Classification (--task cls) trains a GPTClassifier (model.py: GPT-2 with a linear head read at each
text's last token) with train.py's loop, handing it the Classification objective below: labelled
texts in batches of similar length, evaluated by accuracy, macro-F1 and the confusion matrix. Device
and precision, the schedule, clipping, accumulation, checkpoints, exact resume and DDP are
train.py's. At the end the best checkpoint is evaluated once on the test split.

Generative fine-tuning (--task gen) is train.py's run started from a pretrained model.

Both can train less than the whole model (lora.py): the last blocks only (--freeze) or LoRA
(--lora_rank), merged into plain weights whenever a checkpoint is saved.
"""

import contextlib
import io
import math
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from ring.checkpoint import find_checkpoint, load_model, load_train_state, read_info
from ring.config import UserError, check_settings, parse_config, run_main, setting
from data import GPT2Tokenizer, LengthBatches
from metrics import evaluate_classifier, format_report, logged, split_batches
from lora import choose_trainable, lora_state
from model import GPTClassifier, GPTConfig
from ring.rundir import RunDirectory
from ring.runtime import main_process_first, peak_memory, print0, session, world_size_from_env
from ring.tables import TRUNCATIONS, load_classification_data
from train import Objective, TrainConfig, run, set_dropout, train_loop


@dataclass
class FinetuneConfig(TrainConfig):
    # TrainConfig's settings with defaults for fine-tuning a pretrained model (same order)
    out_dir: str = setting("run directory: last/ and best/ checkpoints, metrics.jsonl",
                           "out/finetune")
    init_from: str = setting("a GPT-2 name (gpt2, gpt2-medium...; imported on first use) | a "
                             "checkpoint or run directory | scratch (shaped by "
                             "n_layer/n_head/n_embd) | resume",
                             "gpt2")
    dataset: str = setting("cls: tweet_sentiment | imdb | fake_news (downloaded once) or a "
                           ".csv/.tsv/.jsonl file (.gz too); gen: a UTF-8 .txt file",
                           "tweet_sentiment")
    tokenizer: str = setting("the tokenizer (cls always uses gpt2; gen from scratch may use char)",
                             "gpt2", ("char", "gpt2"))
    max_iters: int = setting("optimizer steps in total (0: as many as --epochs take)", 0, ">= 0")
    eval_interval: int = setting("evaluate and write last/ every this many steps (cls: also at "
                                 "each epoch's end)", 200, ">= 1")
    eval_iters: int = setting("gen: batches per split in an evaluation (cls evaluates the whole "
                              "validation split)", 50, ">= 1")
    block_size: int = setting("context length in tokens; cls: texts are cut to it (batches are "
                              "padded only to their longest)", 256, ">= 1")
    dropout: float = setting("dropout probability", 0.1, "[0, 1)")
    learning_rate: float = setting("peak learning rate", 5e-5, ">= 0")
    min_lr: float = setting("learning rate at the end of the cosine decay", 0.0, ">= 0")
    weight_decay: float = setting("AdamW weight decay on matmul weights", 0.01, ">= 0")
    beta2: float = setting("AdamW beta2", 0.999, "[0, 1)")
    # what is particular to fine-tuning
    task: str = setting("cls: text classification | gen: language modelling on a text, as train.py",
                        "cls", ("cls", "gen"))
    epochs: float = setting("passes over the training data, when max_iters is 0 (fractions "
                            "allowed)", 3.0, "> 0")
    freeze: int = setting("train only ln_f and the last N blocks (and a classifier's head); -1: "
                          "train everything", -1, ">= -1")
    lora_rank: int = setting("LoRA of this rank on the attention and MLP projections (0: off)",
                             0, ">= 0")
    lora_alpha: float = setting("LoRA scale numerator: the update is (lora_alpha / lora_rank) "
                                "B A", 16.0, "> 0")
    text_column: str = setting("cls: the text column; several are joined, e.g. title,text (empty: "
                               "guessed)", "")
    label_column: str = setting("cls: the label column, names or integers (empty: guessed)", "")
    val_dataset: str = setting("cls: a validation file (empty: the dataset's own, else "
                               "val_fraction of train)", "")
    test_dataset: str = setting("cls: a test file (empty: the dataset's own, else val_fraction "
                                "of train)", "")
    val_fraction: float = setting("cls: share of each label carved out of train for a missing val "
                                  "or test split", 0.1, "(0, 0.5)")
    truncation: str = setting("cls: which tokens of a text longer than block_size are kept",
                              "head", TRUNCATIONS)
    drop_leaked: bool = setting("cls: drop training texts that duplicate a val or test text", False)
    max_train_samples: int = setting("cls: train on a stratified sample of this many (0: all)",
                                     0, ">= 0")
    max_val_samples: int = setting("cls: validate on a stratified sample of this many (0: all)", 0,
                                   ">= 0")
    max_test_samples: int = setting("cls: test on a stratified sample of this many (0: all)", 0,
                                    ">= 0")
    best_metric: str = setting("cls: what best/ is chosen by", "val_accuracy",
                               ("val_accuracy", "val_macro_f1", "val_loss"))
    patience: int = setting("cls: stop after this many evaluations without a better best_metric "
                            "(0: never)", 0, ">= 0")

    ALIASES = {"max_length": "block_size"}  # cls's older name for it (see config.parse_config)


# --------------------------------------------------------------------------------------------------
# Classification: the objective for train.py's loop


class Classification(Objective):
    """Labelled texts, batched by length, scored by accuracy, macro-F1 and the confusion matrix."""

    def __init__(self, cfg, rt, data, pad_id):
        self.cfg, self.rt, self.data, self.pad_id = cfg, rt, data, pad_id
        self.train, self.targets = data.splits["train"], data.targets("train")
        self.lengths = self.train.lengths()
        # As in LanguageModelling, every process draws the same batches for the whole step and takes
        # its own rows of each, so the step's batch does not depend on the number of processes.
        self.sampler = LengthBatches(self.lengths, cfg.batch_size, cfg.seed, min_size=rt.world_size)
        val = data.splits["val"]
        targets = data.targets("val")
        self.val_batches = split_batches(val, targets, cfg.batch_size, pad_id, rt.device)
        self.best_metric, self.patience = cfg.best_metric, cfg.patience
        self.higher_is_better = not cfg.best_metric.endswith("loss")
        self.info = {"task": "cls", "tokenizer": {"type": "gpt2"}, "labels": data.labels,
                     "data": {split: texts.source for split, texts in data.splits.items()}}
        # An epoch, in optimizer steps. A step takes gradient_accumulation_steps batches, which need
        # not divide an epoch's batches, so an epoch ends during the step that takes its last batch.
        self.steps_per_epoch = self.sampler.batches_per_epoch / cfg.gradient_accumulation_steps

    def next_step(self):
        rt = self.rt
        step = [self.sampler.next_batch() for _ in range(self.cfg.gradient_accumulation_steps)]
        mine = [indices[rt.rank :: rt.world_size] for indices in step]
        batches = split_batches(self.train, self.targets, None, self.pad_id, rt.device, order=mine)
        self.tokens += sum(int(self.lengths[indices].sum()) for indices in step)
        return [(batch, len(indices)) for batch, indices in zip(batches, mine)], sum(map(len, step))

    def loss(self, model, batch):
        x, lengths, y = batch
        return model(x, lengths, y)[1]

    def evaluate(self, model):
        metrics = evaluate_classifier(model, self.val_batches, len(self.data.labels))
        print0(self.rt, format_report(metrics, self.data.labels, "val"))
        return logged(metrics, self.data.labels, "val")

    def example_batch(self):
        return self.val_batches[0]

    def epochs_done(self, step):
        return math.floor(step / self.steps_per_epoch)

    def extra_evaluation(self, iter_num):
        return iter_num > 0 and self.epochs_done(iter_num) > self.epochs_done(iter_num - 1)

    def evaluations_left(self, iter_num, max_iters):
        return self.epochs_done(max_iters) - self.epochs_done(iter_num)

    def epoch_of(self, iter_num):
        return round(iter_num / self.steps_per_epoch, 3)


def build_classifier(cfg, labels, rt):
    """The classifier to fine-tune, from cfg.init_from. Returns (model, train state to resume or
    None). A language model gets a new head, seeded by cfg.seed (the same command gives the same
    model); a classifier keeps its head if its labels are the data's."""
    resume = None
    if cfg.init_from == "scratch":
        torch.manual_seed(cfg.seed)
        config = GPTConfig(block_size=cfg.block_size, vocab_size=GPT2Tokenizer().vocab_size,
                           n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                           dropout=cfg.dropout, bias=cfg.bias, n_classes=len(labels))
        return GPTClassifier(config), None
    if cfg.init_from == "resume":
        where = find_checkpoint(Path(cfg.out_dir) / "last")
        info = read_info(where)
        if info.task != "cls":
            raise UserError(f"{where} is not a classifier's checkpoint; resume a finetune.py "
                            "--task cls run")
        started = {FinetuneConfig.ALIASES.get(k, k): v for k, v in (info.run or {}).items()}
        keys = ("block_size", "truncation", "freeze", "lora_rank", "lora_alpha")
        changed = [f"{k} {started[k]} -> {getattr(cfg, k)}" for k in keys
                   if k in started and started[k] != getattr(cfg, k)]
        if changed:
            raise UserError(f"cannot resume {where} with other settings ({', '.join(changed)}); "
                            "use the run's own or a new out_dir")
        resume = load_train_state(where)
    else:
        from hf_import import resolve_pretrained

        where = main_process_first(rt, lambda: resolve_pretrained(cfg.init_from))  # one download
        info = read_info(find_checkpoint(where))
    if info.tokenizer["type"] != "gpt2":
        raise UserError(f"{where} was trained with the {info.tokenizer['type']} tokenizer; "
                        "classification reads GPT-2 BPE tokens, so start from a GPT-2 model or "
                        "checkpoint")
    if info.task == "cls" and info.labels != labels:
        raise UserError(f"{where} is a classifier for {', '.join(info.labels)}; this data's labels "
                        f"are {', '.join(labels)}. Start from a language model (e.g. gpt2) to "
                        "train a new head")
    if cfg.block_size > info.model.block_size:
        raise UserError(f"block_size {cfg.block_size} is longer than the {info.model.block_size} "
                        f"positions of {where}")
    model, _ = load_model(where)
    if info.task == "lm":
        model = GPTClassifier.from_language_model(model, len(labels),
                                                  torch.Generator().manual_seed(cfg.seed))
    if cfg.block_size < model.config.block_size:
        model.crop_block_size(cfg.block_size)
    set_dropout(model, cfg.dropout)
    return model, resume


def adapt(model, resume, rt, cfg):
    """Decide what trains (lora.choose_trainable); when resuming a LoRA run, take the unmerged LoRA
    weights back from train_state.pt (last/ holds them merged)."""
    torch.manual_seed(cfg.seed)  # LoRA's A matrices
    print0(rt, f"trains: {choose_trainable(model, cfg.freeze, cfg.lora_rank, cfg.lora_alpha)}")
    if resume is not None and cfg.lora_rank:
        saved = resume.get("lora", resume.get("task")) or {}  # "task": checkpoints before lora.py
        if set(saved) != set(lora_state(model)):
            raise UserError(f"the LoRA weights in {cfg.out_dir}/last do not fit this model; resume "
                            "with the run's settings")
        model.load_state_dict(saved, strict=False)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print0(rt, f"parameters: {total / 1e6:.2f}M, {trainable / 1e6:.3f}M trainable "
               f"({100 * trainable / total:.2f}%)")


# --------------------------------------------------------------------------------------------------
# The runs


def run_classification(cfg):
    check_settings(cfg)
    cfg.check_processes(world_size_from_env())
    if cfg.tokenizer != "gpt2":
        raise UserError("classification uses the gpt2 tokenizer (--tokenizer=gpt2)")
    with session(cfg) as rt, RunDirectory(cfg.out_dir, resume=cfg.init_from == "resume",
                                          overwrite=cfg.overwrite, tensorboard=cfg.tensorboard,
                                          is_main=rt.is_main) as run_dir:
        main_process_first(rt, run_dir.open)
        tokenizer = GPT2Tokenizer()

        def load():
            # each rank loads the data (from rank 0's cache); one of them says what it found
            with contextlib.redirect_stdout(sys.stdout if rt.is_main else io.StringIO()):
                return load_classification_data(
                    cfg.dataset, tokenizer, cfg.data_dir, val_dataset=cfg.val_dataset,
                    test_dataset=cfg.test_dataset, text_column=cfg.text_column,
                    label_column=cfg.label_column, val_fraction=cfg.val_fraction,
                    block_size=cfg.block_size, truncation=cfg.truncation,
                    max_train_samples=cfg.max_train_samples, max_val_samples=cfg.max_val_samples,
                    max_test_samples=cfg.max_test_samples, drop_leaked=cfg.drop_leaked,
                    seed=cfg.seed)

        data = main_process_first(rt, load)
        labels = data.labels
        majority = int(np.bincount(data.targets("train"), minlength=len(labels)).argmax())
        baseline = {split: float((data.targets(split) == majority).mean())
                    for split in ("val", "test")}
        print0(rt, f"majority baseline (always '{labels[majority]}'): val accuracy "
                   f"{baseline['val']:.4f}, test accuracy {baseline['test']:.4f}")

        model, resume = build_classifier(cfg, labels, rt)
        adapt(model, resume, rt, cfg)
        model.to(rt.device)
        torch.manual_seed(cfg.seed + rt.rank)  # dropout differs per rank
        objective = Classification(cfg, rt, data, tokenizer.eot_token)
        per_epoch = objective.steps_per_epoch
        cfg = replace(cfg, max_iters=cfg.max_iters or max(1, math.ceil(cfg.epochs * per_epoch)))
        print0(rt, f"training: {cfg.max_iters:,} steps, {per_epoch:.1f} steps per epoch "
                   f"({cfg.max_iters / per_epoch:.2f} epochs)")

        start, tokens = time.time(), objective.tokens
        t = train_loop(cfg, rt, model, objective, run_dir, resume)
        elapsed, steps = time.time() - start, t.state.iter_num - (resume or {}).get("iter_num", 0)
        memory, what = peak_memory(rt)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print0(rt, f"trained {steps:,} steps in {elapsed:.0f} s: "
                   f"{elapsed * per_epoch / max(steps, 1):.0f} s per epoch (evaluations included), "
                   f"{(objective.tokens - tokens) / elapsed:,.0f} tokens/s, {trainable / 1e6:.3f}M "
                   f"trainable parameters, {what} {memory / 2**30:.2f} GiB")
        if not t.stopped_by:  # a run stopped by Ctrl-C or SIGTERM is tested when it is finished
            test_best(run_dir, data, cfg, rt, tokenizer.eot_token, baseline["test"],
                      labels[majority])


def test_best(run_dir, data, cfg, rt, pad_id, baseline, majority_label):
    """The final word: the best checkpoint (by validation) on the test split, which nothing was
    chosen by. Logged as the last row of metrics.jsonl."""
    if not rt.is_main or not (run_dir.path / "best").exists():
        return
    best, info = load_model(run_dir.path / "best", rt.device)
    test = data.splits["test"]
    batches = split_batches(test, data.targets("test"), cfg.batch_size, pad_id, rt.device)
    with rt.autocast():
        metrics = evaluate_classifier(best, batches, len(data.labels))
    print0(rt, f"best checkpoint (iter {info.iter_num}) on the test split:\n"
               + format_report(metrics, data.labels, "test"))
    run_dir.log({"iter": info.iter_num, "checkpoint": "best",
                 **logged(metrics, data.labels, "test"),
                 "baseline_test_accuracy": baseline, "majority_label": majority_label})


def run_generative(cfg):
    """Causal-LM fine-tuning: train.py's run, with the settings that fine-tuning shares with it, and
    freezing or LoRA when asked for."""
    settings = TrainConfig(**{f.name: getattr(cfg, f.name) for f in fields(TrainConfig)})
    epochs = None if cfg.max_iters else cfg.epochs
    run(settings, epochs=epochs, adapt=lambda model, resume, rt: adapt(model, resume, rt, cfg))


def main(argv=None):
    cfg = parse_config(FinetuneConfig, argv, description="Fine-tune GPT-2 for text classification "
                                                        "(--task cls) or on a text (--task gen).")
    if cfg.task == "cls":
        run_classification(cfg)
    else:
        run_generative(cfg)


if __name__ == "__main__":
    run_main(main)

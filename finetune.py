"""
Fine-tune GPT-2: text classification (sentiment, fake news, ...) or more language modelling.

    python finetune.py --task cls --dataset tweet_sentiment --init_from gpt2
    python finetune.py configs/finetune_tweets.py               (the same run, from a config file)
    python finetune.py --dataset reviews.csv.gz --test_dataset test.csv.gz --text_column title,text
    python finetune.py --task gen --dataset book.txt --init_from gpt2 --lora_rank 8

Classification (--task cls) trains a GPTClassifier (model.py: GPT-2 with a linear head read at each
text's last token) with train.py's loop, handing it the Classification objective below: labelled
texts in batches of similar length, scored by accuracy, macro-F1 and the confusion matrix; at the
end the best checkpoint is tested once. Generative fine-tuning (--task gen) is train.py's run from a
pretrained model. The set-up, the schedule, checkpoints, exact resume and DDP are train.py's. Both
may train less than the whole model (lora.py): the last blocks (--freeze) or LoRA (--lora_rank).
"""

import math
import time
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from data import TRUNCATIONS, GPT2Tokenizer, LengthBatches, load_classification_data
from lora import choose_trainable, lora_state
from metrics import evaluate_classifier, format_report, logged, split_batches
from model import GPTClassifier, GPTConfig
from train import (TrainConfig, fit_to_run, load_model, run, run_session, starting_point,
                   train_loop)
from ring.config import UserError, parse_config, run_main, setting, with_defaults
from ring.runtime import main_process_first, peak_memory, print0

# --------------------------------------------------------------------------------------------------
# Classification: the objective for train.py's loop


class Classification:
    """Labelled texts, batched by length, scored by accuracy, macro-F1 and the confusion matrix (see
    train.LanguageModelling for what the loop asks of an objective)."""

    def __init__(self, cfg, rt, data, pad_id):
        self.cfg, self.rt, self.data, self.pad_id, self.tokens = cfg, rt, data, pad_id, 0
        self.train, self.targets = data.splits["train"], data.targets("train")
        self.lengths = self.train.lengths()
        # As in LanguageModelling, every process draws the same batches for the whole step and takes
        # its own rows of each, so the step's batch does not depend on the number of processes.
        self.sampler = LengthBatches(self.lengths, cfg.batch_size, cfg.seed, min_size=rt.world_size)
        self.val_batches = split_batches(data.splits["val"], data.targets("val"), cfg.batch_size,
                                         pad_id, rt.device)
        self.best_metric = cfg.best_metric
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
        drawn = self.sampler.epoch * self.sampler.batches_per_epoch + self.sampler.position
        epoch = round(drawn / self.sampler.batches_per_epoch, 3)  # the epochs trained so far
        return {**logged(metrics, self.data.labels, "val"), "epoch": epoch}

    def example_batch(self):
        return self.val_batches[0]

    def extra_evaluations(self, max_iters):
        """The end of each epoch (the steps that take an epoch's last batch), unless epochs are
        shorter than eval_interval and eval_interval is shorter than the run: on a few labels an
        epoch is a few steps, and every eval_interval steps is then enough."""
        if self.steps_per_epoch < self.cfg.eval_interval < max_iters:
            return set()
        done = [math.floor(step / self.steps_per_epoch) for step in range(max_iters + 1)]
        return {step for step in range(1, max_iters + 1) if done[step] > done[step - 1]}


def build_classifier(cfg, labels, rt):
    """The classifier to fine-tune, from cfg.init_from. Returns (model, train state to resume or
    None). A language model gets a new head, seeded by cfg.seed (the same command gives the same
    model); a classifier keeps its head if its labels are the data's."""
    if cfg.init_from == "scratch":
        torch.manual_seed(cfg.seed)
        config = GPTConfig(block_size=cfg.block_size, vocab_size=GPT2Tokenizer().vocab_size,
                           n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                           dropout=cfg.dropout, bias=cfg.bias, n_classes=len(labels))
        return GPTClassifier(config), None
    where, info, resume = starting_point(cfg, rt, RESUME_KEYS)
    if resume is not None and info.task != "cls":
        raise UserError(f"{where} is not a classifier's checkpoint; resume a finetune.py --task "
                        "cls run")
    if info.tokenizer["type"] != "gpt2":
        raise UserError(f"{where} was trained with the {info.tokenizer['type']} tokenizer; "
                        "classification reads GPT-2 BPE tokens, so start from a GPT-2 model or "
                        "checkpoint")
    if info.task == "cls" and info.labels != labels:
        raise UserError(f"{where} is a classifier for {', '.join(info.labels)}; this data's labels "
                        f"are {', '.join(labels)}. Start from a language model (e.g. gpt2) to "
                        "train a new head")
    model, _ = load_model(where)
    if info.task == "lm":
        model = GPTClassifier.from_language_model(model, len(labels),
                                                  torch.Generator().manual_seed(cfg.seed))
    return fit_to_run(model, cfg, where), resume


RESUME_KEYS = ("block_size", "truncation", "freeze", "lora_rank", "lora_alpha")


# --------------------------------------------------------------------------------------------------
# The runs


def adapt(model, resume, rt, cfg):
    """Decide what trains (lora.choose_trainable); when resuming a LoRA run, take the unmerged LoRA
    weights back from train_state.pt (last/ holds them merged)."""
    torch.manual_seed(cfg.seed)  # LoRA's A matrices
    print0(rt, f"trains: {choose_trainable(model, cfg.freeze, cfg.lora_rank, cfg.lora_alpha)}")
    if resume is not None and cfg.lora_rank:
        saved = resume.get("lora") or {}
        if set(saved) != set(lora_state(model)):
            raise UserError(f"the LoRA weights in {cfg.out_dir}/last do not fit this model; resume "
                            "with the run's settings")
        model.load_state_dict(saved, strict=False)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print0(rt, f"parameters: {total / 1e6:.2f}M, {trainable / 1e6:.3f}M trainable "
               f"({100 * trainable / total:.2f}%)")


def run_classification(cfg):
    if cfg.tokenizer not in ("", "gpt2"):
        raise UserError("classification uses the gpt2 tokenizer (leave --tokenizer out)")
    with run_session(cfg) as (rt, run_dir):
        tokenizer = GPT2Tokenizer()
        # every process loads the data (rank 0 first, which builds the cache); one of them says what
        # it found
        data = main_process_first(rt, lambda: load_classification_data(
            cfg.dataset, tokenizer, cfg.data_dir, val_dataset=cfg.val_dataset,
            test_dataset=cfg.test_dataset, text_column=cfg.text_column,
            label_column=cfg.label_column, val_fraction=cfg.val_fraction,
            block_size=cfg.block_size, truncation=cfg.truncation,
            max_train_samples=cfg.max_train_samples, max_val_samples=cfg.max_val_samples,
            max_test_samples=cfg.max_test_samples, drop_leaked=cfg.drop_leaked, seed=cfg.seed))
        print0(rt, "\n".join(data.notes))
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
        run_dir.start()  # everything checked: only now is an earlier run replaced (--overwrite)

        start, tokens = time.time(), objective.tokens
        training = train_loop(cfg, rt, model, objective, run_dir, resume)
        elapsed = time.time() - start
        steps = training.state.iter_num - (resume or {}).get("iter_num", 0)
        memory, what = peak_memory(rt)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print0(rt, f"trained {steps:,} steps in {elapsed:.0f} s: "
                   f"{elapsed * per_epoch / max(steps, 1):.0f} s per epoch (evaluations included), "
                   f"{(objective.tokens - tokens) / elapsed:,.0f} tokens/s, {trainable / 1e6:.3f}M "
                   f"trainable parameters, {what} {memory / 2**30:.2f} GiB")
        if not training.stopped_by:  # a run stopped by Ctrl-C or SIGTERM is tested when finished
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


# --------------------------------------------------------------------------------------------------
# The settings: train.py's, with defaults for fine-tuning a pretrained model, and these


FINETUNING = dict(out_dir="out/finetune", init_from="gpt2", dataset="tweet_sentiment",
                  tokenizer="", max_iters=0, eval_interval=200, dropout=0.1,
                  learning_rate=5e-5, min_lr=0.0, weight_decay=0.01, beta2=0.999)
HELP = {
    "init_from": "a GPT-2 name (gpt2, gpt2-medium...; imported on first use) | a checkpoint or "
                 "run directory | scratch (shaped by n_layer/n_head/n_embd) | resume",
    "dataset": "cls: tweet_sentiment | imdb | fake_news (downloaded once) or a .csv/.tsv/.jsonl "
               "file (.gz too); gen: a UTF-8 .txt file",
    "tokenizer": "cls: gpt2 (always); gen: as train.py's --tokenizer",
    "max_iters": "optimizer steps in total (0: as many as --epochs take)",
    "eval_interval": "evaluate and write last/ every this many steps (cls: also at each epoch's "
                     "end, unless epochs are shorter than this and this is shorter than the run)",
    "eval_iters": "gen: batches per split in an evaluation (cls evaluates the whole validation "
                  "split)",
    "block_size": "context length in tokens; cls: texts are cut to it (batches are padded only to "
                  "their longest)",
    "text_column": "the text column; several are joined, e.g. title,text (empty: guessed)",
    "val_fraction": "cls: share of each label carved out of train for a missing val or test split; "
                    "gen: of the documents held out for validation",
}


@dataclass
class FinetuneConfig(with_defaults(TrainConfig, FINETUNING, HELP)):
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
    label_column: str = setting("cls: the label column, names or integers (empty: guessed)", "")
    val_dataset: str = setting("cls: a validation file (empty: the dataset's own, else "
                               "val_fraction of train)", "")
    test_dataset: str = setting("cls: a test file (empty: the dataset's own, else val_fraction "
                                "of train)", "")
    truncation: str = setting("cls: which tokens of a text longer than block_size are kept",
                              "head", TRUNCATIONS)
    drop_leaked: bool = setting("cls: drop training texts that duplicate a val or test text", False)
    max_train_samples: int = setting("cls: train on a stratified sample of this many, drawn with "
                                     "--seed (val and test stay the same) (0: all)",
                                     0, ">= 0")
    max_val_samples: int = setting("cls: validate on a stratified sample of this many (0: all)", 0,
                                   ">= 0")
    max_test_samples: int = setting("cls: test on a stratified sample of this many (0: all)", 0,
                                    ">= 0")
    best_metric: str = setting("cls: what best/ is chosen by", "val_accuracy",
                               ("val_accuracy", "val_macro_f1", "val_loss"))


if __name__ == "__main__":
    run_main(main)

"""
Pretrain a GPT: the training recipe, in the order it runs.

    python train.py configs/shakespeare.py
    python train.py configs/shakespeare.py --max_iters=2000 --device=cpu
    torchrun --standalone --nproc_per_node=2 train.py configs/shakespeare.py      (DDP)

Top to bottom: the learning-rate schedule (lr_at); what is learned, next-token prediction
(LanguageModelling); one optimizer step (train_step); evaluating and saving; the loop (train_loop);
building the model and running it all (run). The settings, TrainConfig, come last. finetune.py
runs the same loop with another objective (Classification).
"""

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from data import GPT2Tokenizer, LMBatches, load_tokens, prepare_lm_data, tokenizer_from_dict
from lora import has_lora, lora_state, merged_copy
from metrics import hellaswag_scores, hellaswag_tokens, read_hellaswag
from model import GPT, GPTConfig, crop_block_size, model_from_state
from ring.checkpoint import (CheckpointInfo, check_same_meaning, check_unchanged, find_checkpoint,
                             load_train_state, read_checkpoint, read_info, save_checkpoint)
from ring.config import UserError, check_settings, parse_config, run_main, setting
from ring.download import fetch_hellaswag
from ring.fastpaths import prepare_for_training
from ring.rundir import Progress, RunDirectory, last_evaluation, report_end
from ring.runtime import (StopRequest, any_rank, main_process_first, maybe_compile, mean_over_ranks,
                          peak_flops, print0, rng_state, session, set_rng_state, sum_over_ranks,
                          world_size_from_env)

# --------------------------------------------------------------------------------------------------
# The learning-rate schedule


def lr_at(step, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    """Linear warmup to learning_rate over warmup_iters steps, then a cosine down to min_lr at
    lr_decay_iters ("SGDR", Loshchilov & Hutter, 2017), then min_lr. Warmup keeps Adam's first,
    badly estimated updates small."""
    if step < warmup_iters:
        return learning_rate * (step + 1) / (warmup_iters + 1)
    if step >= lr_decay_iters:
        return min_lr
    progress = (step - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)


# --------------------------------------------------------------------------------------------------
# What is learned: the next token


def bits_per_byte(loss, bytes_per_token):
    """A language model's loss in bits per byte of text: the mean cross-entropy in nats per token,
    / ln 2 (bits per token), / the bytes a token of the text holds. A character model's token is
    about one byte and a GPT-2 token about four: per token their losses cannot be compared, per
    byte of the same text they can (nanochat reports it for this reason)."""
    return loss / math.log(2) / bytes_per_token


class LanguageModelling:
    """Next-token prediction on tokenized text: what train.py trains for. An objective is all the
    loop knows of the task (finetune.Classification is the other one): next_step() (this process's
    micro-batches, [(batch, items)], and the step's items over all processes), loss(model, batch),
    evaluate(model) ({metric: value}; best/ follows best_metric), example_batch() (for compile's
    trial), extra_evaluations(max_iters), and sampler, info, tokens (where the batches have got to,
    what goes into config.json, the tokens trained on so far)."""

    best_metric = "val_loss"

    def __init__(self, cfg, rt, data_dir, meta, hellaswag=None):
        self.cfg, self.rt, self.tokens, self.hellaswag = cfg, rt, 0, None
        train_tokens = load_tokens(data_dir, meta, "train")
        # Every process draws the same windows for the whole step and takes its own rows of each
        # micro-batch, so the step's batch does not depend on the number of processes.
        self.sampler = LMBatches(train_tokens, cfg.block_size, cfg.batch_size, seed=cfg.seed)
        self.eval_sets = {"train": self.fixed_batches(train_tokens),
                          "val": self.fixed_batches(load_tokens(data_dir, meta, "val"))}
        token_bytes = tokenizer_from_dict(meta["tokenizer"]).token_bytes()
        self.token_bytes = torch.as_tensor(token_bytes, device=rt.device)  # for bits per byte
        if hellaswag:  # tokenized once; this process's share
            self.hellaswag = hellaswag_tokens(GPT2Tokenizer(), hellaswag[rt.rank :: rt.world_size])
        self.info = {"task": "lm", "tokenizer": meta["tokenizer"], "data": meta}

    def fixed_batches(self, tokens):
        """eval_iters batches drawn with their own seed: the same at every evaluation, so numbers
        compare across evaluations and runs. This process keeps its rows of each."""
        cfg, rt = self.cfg, self.rt
        fixed = LMBatches(tokens, cfg.block_size, cfg.batch_size, seed=1234)
        return [rt.to_device(x[rt.rank :: rt.world_size], y[rt.rank :: rt.world_size])
                for x, y in map(fixed.batch_at, fixed.offsets(cfg.eval_iters))]

    def next_step(self):
        cfg, rt = self.cfg, self.rt
        offsets = self.sampler.offsets(cfg.gradient_accumulation_steps)  # (G, B): the whole step
        mine = [row[rt.rank :: rt.world_size] for row in offsets]  # this process's rows of each
        batches = [rt.to_device(*self.sampler.batch_at(row)) for row in mine]
        total = offsets.numel() * cfg.block_size
        self.tokens += total
        return [((x, y), x.numel()) for x, y in batches], total

    def loss(self, model, batch):
        x, y = batch
        return model(x, y)[1]

    @torch.inference_mode()
    def evaluate(self, model):
        """The loss on each split's fixed batches (the sums over every process's rows), the val
        perplexity and bits per byte, and HellaSwag when asked for."""
        model.eval()
        out = {}
        for split, batches in self.eval_sets.items():
            # each batch's loss summed over this process's rows, their targets and bytes; added up
            # over the processes, and divided back into the batch's mean (exactly, in float64)
            sums = torch.tensor([[model(x, y)[1].item() * y.numel(), y.numel(),
                                  self.token_bytes[y].sum().item()] for x, y in batches],
                                dtype=torch.float64)
            sums = sum_over_ranks(self.rt, sums)
            out[f"{split}_loss"] = (sums[:, 0] / sums[:, 1]).float().mean().item()
            bytes_per_token = (sums[:, 2].sum() / sums[:, 1].sum()).item()
        # Perplexity, exp(mean cross-entropy): the number of equally likely tokens the model is as
        # unsure as. Bits per byte: see bits_per_byte.
        out["val_perplexity"] = math.exp(out["val_loss"])
        out["val_bpb"] = bits_per_byte(out["val_loss"], bytes_per_token)  # val: the last split
        if self.hellaswag is not None:  # common-sense completion: see metrics.hellaswag_scores
            out.update(hellaswag_scores(model, self.hellaswag, self.rt.device,
                                        total=lambda counts: sum_over_ranks(self.rt, counts)))
        model.train()
        return out

    def example_batch(self):
        return self.eval_sets["val"][0]

    def extra_evaluations(self, max_iters):
        return set()


# --------------------------------------------------------------------------------------------------
# One optimizer step


@dataclass
class TrainState:
    """The loop's counters, saved whole in train_state.pt and restored whole on resume."""

    iter_num: int = 0  # optimizer steps taken
    best: float = None  # the best value of the objective's best_metric so far
    evals_without_improvement: int = 0  # for early stopping (patience)
    evaluated_at: int = None  # the iteration of the last evaluation...
    metrics: dict = field(default_factory=dict)  # ...and its numbers


@dataclass
class Training:
    """One run, passed around whole: settings and runtime, the model (`raw`, the plain module that
    is evaluated and saved; `model`, what the steps call: maybe compiled, maybe DDP-wrapped), the
    optimizer and gradient scaler, the objective, the run directory and the counters."""

    cfg: object
    rt: object
    raw: torch.nn.Module
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: object
    objective: object
    run_dir: RunDirectory
    state: TrainState
    extra_evaluations: set  # the objective's (classification: each epoch's end)
    eval_seconds: float = 0.0  # how long the last evaluation took, for the ETA
    saved_at: int = None  # the iteration last/ was last written at
    stopped_by: str = None  # "Ctrl-C" or "SIGTERM" when a signal ended the run


class Diverged(UserError):
    """The loss or the gradient norm stopped being a finite number."""


def train_step(training):
    """One optimizer step. Returns the mean loss over the step's batch, the gradient norm before
    clipping and the learning rate.

    Gradient accumulation: backward() adds into .grad, so the micro-batches run one after another
    and their gradients sum. Each micro-batch's loss is a mean over its items, so it is weighted by
    its share of the step's items: the sum is then the gradient of the mean loss over the whole
    step's batch, however it is split into micro-batches and processes. (Under DDP, gradients are
    averaged across the processes during the last micro-batch's backward, hence the world_size
    factor.)"""
    cfg, rt, scaler, optimizer = training.cfg, training.rt, training.scaler, training.optimizer
    lr = lr_at(training.state.iter_num, cfg.learning_rate, cfg.min_lr, cfg.warmup_iters,
               cfg.lr_decay_iters or cfg.max_iters)
    for group in optimizer.param_groups:
        group["lr"] = lr
    batches, total = training.objective.next_step()
    loss = torch.zeros((), device=rt.device)
    for i, (batch, items) in enumerate(batches):
        # this micro-batch's share of the step's items; DDP then averages the world_size
        # processes' gradients, so each is counted world_size times over to make a sum
        weight = items / total * rt.world_size
        with no_sync_unless(training.model, rt, last=i == len(batches) - 1):
            with rt.autocast():  # the forward pass in the run's precision; the weights stay float32
                micro_loss = training.objective.loss(training.model, batch)
            scaled = micro_loss * weight
            # float16: scale the loss up so that small gradients survive the 5-bit exponent
            (scaled if scaler is None else scaler.scale(scaled)).backward()
        loss += micro_loss.detach() * weight
    if scaler is not None:
        scaler.unscale_(optimizer)  # clipping must see the true gradients, not the scaled ones
    params = [p for p in training.raw.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if cfg.grad_clip > 0:  # one bad batch must not throw the weights far: cap the update's size
        torch.nn.utils.clip_grads_with_norm_(params, cfg.grad_clip, grad_norm)
    stop_if_diverged(training, loss, grad_norm)
    if scaler is not None:
        scaler.step(optimizer)  # skipped if the gradients overflowed; the scale is then lowered
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss, grad_norm, lr


def no_sync_unless(model, rt, last):
    """DDP averages gradients across processes during backward; doing that once, on the step's last
    micro-batch, instead of after every one saves the communication."""
    if rt.world_size > 1 and not last:
        return model.no_sync()
    return contextlib.nullcontext()


def stop_if_diverged(training, loss, grad_norm):
    """Stop at the first non-finite loss or gradient norm, before the step writes it into the
    weights. With float16 an overflowing gradient is normal: the GradScaler skips that step and
    lowers its scale, so there only the loss is checked. All processes decide together."""
    bad = not torch.isfinite(loss) or (training.scaler is None and not torch.isfinite(grad_norm))
    if any_rank(training.rt, bool(bad)):
        raise Diverged(f"the loss became {loss.item()} (gradient norm {grad_norm.item():.3g}) at "
                       f"iter {training.state.iter_num + 1}: training diverged, and last/ keeps "
                       f"the weights of iter {training.saved_at}; lower the learning rate (or "
                       "check the data) and start again")


# --------------------------------------------------------------------------------------------------
# Evaluation and checkpoints


def evaluation_due(training):
    """Every eval_interval steps, at the objective's extra steps, and at the end; once a step."""
    it, cfg = training.state.iter_num, training.cfg
    due = it % cfg.eval_interval == 0 or it in training.extra_evaluations or it >= cfg.max_iters
    return due and training.state.evaluated_at != it


def evaluate_and_save(training, evaluate=True):
    """Evaluate (unless the run is stopping: Ctrl-C must not wait for it), write best/ if the metric
    improved, and last/ always. Returns True when early stopping's patience has run out."""
    state, objective, metric = training.state, training.objective, training.objective.best_metric
    if evaluate:
        start = time.time()
        with training.rt.autocast():
            metrics = objective.evaluate(training.raw)
        training.eval_seconds = time.time() - start
        state.evaluated_at, state.metrics = state.iter_num, metrics
        value, higher_is_better = metrics[metric], not metric.endswith("loss")
        improved = state.best is None or (value > state.best if higher_is_better
                                          else value < state.best)
        if improved:
            state.best, state.evals_without_improvement = value, 0
        else:
            state.evals_without_improvement += 1
        row = {"iter": state.iter_num, **metrics, f"best_{metric}": state.best,
               "eval_seconds": round(training.eval_seconds, 3)}
        training.run_dir.log(row)
        shown = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in row.items() if not isinstance(v, (dict, list)))
        print0(training.rt, f"eval {shown}")
        if improved:
            save(training, "best", resumable=False)
    save(training, "last", resumable=True)
    patience = training.cfg.patience
    return bool(patience) and state.evals_without_improvement >= patience


def save(training, name, resumable):
    """Write out_dir/name: the weights (LoRA merged into them) and config.json, and for last/ what
    resuming needs. Collective under DDP (every process's RNG state is gathered); rank 0 writes."""
    rng = rng_state(training.rt) if resumable else None
    if not training.rt.is_main:
        return
    state, raw = training.state, training.raw
    info = CheckpointInfo(raw.config, **training.objective.info, iter_num=state.iter_num,
                          metrics=state.metrics, evaluated_at=state.evaluated_at,
                          run=asdict(training.cfg))
    train_state = None
    if resumable:
        train_state = {**asdict(state), **training.run_dir.log_position(), "rng": rng,
                       "optimizer": training.optimizer.state_dict(),
                       "sampler": training.objective.sampler.state_dict(),
                       "scaler": training.scaler.state_dict() if training.scaler else None}
        if has_lora(raw):
            train_state["lora"] = lora_state(raw)
    save_checkpoint(training.run_dir.path / name, merged_copy(raw) if has_lora(raw) else raw, info,
                    train_state)
    if resumable:
        training.saved_at = state.iter_num


# --------------------------------------------------------------------------------------------------
# The loop


def train_loop(cfg, rt, model, objective, run_dir, resume=None):
    """Train model (the plain module, on rt.device) for cfg.max_iters steps, from `resume` (a
    train_state.pt's contents) if given. Returns the Training at the end."""
    training = start(cfg, rt, model, objective, run_dir, resume)
    state = training.state
    progress = Progress(run_dir, rt.is_main, model.flops_per_token(), cfg.peak_flops or
                        peak_flops(rt))
    with StopRequest(verbose=rt.is_main) as stop:
        while True:
            stopping = any_rank(rt, stop.requested)  # all processes stop at the same step
            if stopping or evaluation_due(training):
                out_of_patience = evaluate_and_save(training, evaluate=not stopping)
                progress.restart(state.iter_num, objective.tokens)  # evaluations are not steps
                if stopping or out_of_patience:
                    break
            if state.iter_num >= cfg.max_iters:
                break
            loss, grad_norm, lr = train_step(training)
            state.iter_num += 1
            if state.iter_num % cfg.log_interval == 0 or state.iter_num == cfg.max_iters:
                loss = mean_over_ranks(rt, loss).item()  # waits for the device: timings are real
                progress.report(state.iter_num, loss, grad_norm.item(), lr, objective.tokens,
                                cfg.max_iters - state.iter_num,
                                evaluations_left(training) * training.eval_seconds)
    training.stopped_by = stop.reason
    training.model = training.raw  # drop the DDP wrapper now (see runtime.session)
    report_end(rt.is_main, run_dir.path / "last", state.iter_num, stop.reason, state.evaluated_at,
               state.metrics)
    return training


# --------------------------------------------------------------------------------------------------
# Setting up: the loop's state, the model, the data


def evaluations_left(training):
    """How many evaluations come after this step (for the ETA)."""
    it, cfg = training.state.iter_num, training.cfg
    extra = sum(1 for e in training.extra_evaluations if e > it)
    return cfg.max_iters // cfg.eval_interval - it // cfg.eval_interval + extra + 1


def start(cfg, rt, model, objective, run_dir, resume):
    """The optimizer, the gradient scaler and the counters, restored when resuming; the model
    compiled and DDP-wrapped for the steps (the plain one is kept for evaluation and saving)."""
    optimizer = model.configure_optimizer(cfg.weight_decay, cfg.learning_rate,
                                          (cfg.beta1, cfg.beta2), rt.device_type)
    scaler = rt.make_scaler()
    state = TrainState()
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        if scaler is not None and resume["scaler"]:
            scaler.load_state_dict(resume["scaler"])
        objective.sampler.load_state_dict(resume["sampler"])
        set_rng_state(rt, resume["rng"])
        state = TrainState(**{f.name: resume[f.name] for f in fields(TrainState)})
        run_dir.continue_log(resume, state.iter_num)
        print0(rt, f"resumed from {Path(cfg.out_dir) / 'last'} at iter {state.iter_num}"
                   f"{last_evaluation(state.evaluated_at, state.metrics)}")
    prepare_for_training(model, rt, cfg.compile)  # faster kernels for this hardware, if any
    steps = maybe_compile(model, cfg.compile, rt,
                          lambda compiled: objective.loss(compiled, objective.example_batch()))
    if rt.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        steps = DDP(steps, device_ids=[rt.local_rank] if rt.device_type == "cuda" else None)
    if cfg.lr_decay_iters not in (0, cfg.max_iters):
        print0(rt, f"warning: the learning-rate schedule ends at step {cfg.lr_decay_iters}, the "
                   f"run at {cfg.max_iters}: the cosine does not end with the run")
    return Training(cfg, rt, model, steps, optimizer, scaler, objective, run_dir, state,
                    set(objective.extra_evaluations(cfg.max_iters)),
                    saved_at=state.iter_num if resume is not None else None)


def load_model(path, device="cpu"):
    """(model, CheckpointInfo) of what save wrote: a checkpoint directory, or a run directory (its
    best/, else its last/). Reading the files and checking them is the ring's part."""
    info, state = read_checkpoint(path)
    try:
        model = model_from_state(GPTConfig(**info.model), state)
    except ValueError as e:
        raise UserError(f"{path}: {e}; the checkpoint is damaged") from None
    return model.to(device), info

def build_model(cfg, meta, start):
    """The model to train on the data described by meta (prepare_lm_data's), from cfg.init_from
    (start: what starting_point found, None from scratch). Returns (model, the train state to
    resume from or None)."""
    if start is None:
        torch.manual_seed(cfg.seed)  # the same init on every rank
        config = GPTConfig(block_size=cfg.block_size, vocab_size=meta["vocab_size"],
                           n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                           dropout=cfg.dropout, bias=cfg.bias)
        return GPT(config), None
    where, info, resume = start
    check_same_meaning(info, meta, where, resume=resume is not None)
    model, _ = load_model(where)
    return fit_to_run(model, cfg, where), resume


SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias")


def starting_point(cfg, rt, keys):
    """(checkpoint directory, its CheckpointInfo, the train state to resume from or None) for
    cfg.init_from, or None for scratch: resume (out_dir/last, whose settings `keys` must not have
    changed), a GPT-2 name (downloaded and imported on first use, by one process) or a directory."""
    if cfg.init_from == "scratch":
        return None
    if cfg.init_from == "resume":
        where = find_checkpoint(Path(cfg.out_dir) / "last")
        info = read_info(where)
        check_unchanged(where, info.run, asdict(cfg), keys)
        return where, info, load_train_state(where, [f.name for f in fields(TrainState)])
    from hf_import import resolve_pretrained

    where = find_checkpoint(main_process_first(rt, lambda: resolve_pretrained(cfg.init_from)))
    return where, read_info(where), None


def run_data(cfg, rt, start=None):
    """(directory, manifest) of the run's data, tokenized once and cached (rank 0 first, the
    others then read the cache): with cfg.tokenizer from scratch, else the starting checkpoint's
    own (a character model's vocabulary included: a text that uses only some of its characters
    keeps their ids, and one that uses others is refused, naming them)."""
    tokenizer = cfg.tokenizer or "char"
    if start is not None:
        tokenizer = start[1].tokenizer
        if cfg.tokenizer not in ("", tokenizer["type"]):
            raise UserError(f"{start[0]} was trained with the {tokenizer['type']} tokenizer, not "
                            f"--tokenizer={cfg.tokenizer}; leave --tokenizer out (a checkpoint "
                            "brings its own)")
    tokens = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps * cfg.max_iters
    return main_process_first(rt, lambda: prepare_lm_data(
        cfg.dataset, tokenizer, cfg.data_dir, val_fraction=cfg.val_fraction,
        text_column=cfg.text_column, tokens_needed=tokens, verify=rt.is_main))


def fit_to_run(model, cfg, where):
    """A pretrained model cut to the run's context (block_size) and given the run's dropout: the
    first block_size learned positions are kept; a longer context than it learned is refused."""
    if cfg.block_size > model.config.block_size:
        raise UserError(f"block_size {cfg.block_size} is longer than the {model.config.block_size} "
                        f"positions that {where} learned; use "
                        f"--block_size={model.config.block_size} or less")
    if cfg.block_size < model.config.block_size:
        crop_block_size(model, cfg.block_size)
    model.config.dropout = cfg.dropout
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = cfg.dropout
    return model


# --------------------------------------------------------------------------------------------------
# The run


@contextlib.contextmanager
def run_session(cfg):
    """What every training run does first: check the settings (before anything is downloaded or
    prepared), set up device, precision and processes, print the settings, and take the run
    directory. Yields (runtime, run directory)."""
    check_settings(cfg)
    cfg.check_processes(world_size_from_env())
    with session(cfg.device, cfg.dtype) as rt:
        print0(rt, json.dumps(asdict(cfg), indent=1))
        print0(rt, f"{rt.describe()} | compile {cfg.compile}")
        with RunDirectory(cfg.out_dir, resume=cfg.init_from == "resume", overwrite=cfg.overwrite,
                          tensorboard=cfg.tensorboard, is_main=rt.is_main) as run_dir:
            main_process_first(rt, run_dir.open)  # checked and locked before anything else is done
            yield rt, run_dir


def run(cfg, epochs=None, adapt=None):
    """Train with the settings in cfg, a TrainConfig. With epochs, max_iters is as many steps as
    that many passes over the training tokens take. adapt(model, resume, rt), when given, decides
    what trains (finetune.py: freezing, LoRA) before the loop starts."""
    with run_session(cfg) as (rt, run_dir):
        start = starting_point(cfg, rt, SHAPE_KEYS)
        data_dir, meta = run_data(cfg, rt, start)
        steps_tokens = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
        print0(rt, f"data: {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens "
                   f"from {meta['source']}")
        if epochs is not None:
            steps = max(1, math.ceil(epochs * meta["train_tokens"] / steps_tokens))
            cfg = replace(cfg, max_iters=steps)
            print0(rt, f"{epochs} epochs of {steps_tokens:,} tokens per step: {steps:,} steps")
        model, resume = build_model(cfg, meta, start)
        if adapt is not None:
            adapt(model, resume, rt)
        model.to(rt.device)
        print0(rt, f"model: {model.num_params() / 1e6:.2f}M parameters")
        hellaswag = None
        if cfg.eval_hellaswag:
            if meta["tokenizer"]["type"] != "gpt2":
                raise UserError("HellaSwag is scored in GPT-2 tokens: --eval_hellaswag needs "
                                "--tokenizer=gpt2")
            path = main_process_first(rt, lambda: fetch_hellaswag(Path(cfg.data_dir) / "hellaswag"))
            hellaswag = read_hellaswag(path, cfg.eval_hellaswag)
        torch.manual_seed(cfg.seed + rt.rank)  # dropout differs per rank
        objective = LanguageModelling(cfg, rt, data_dir, meta, hellaswag)
        run_dir.start()  # everything checked: only now is an earlier run replaced (--overwrite)
        train_loop(cfg, rt, model, objective, run_dir, resume)


def main(argv=None):
    run(parse_config(TrainConfig, argv, description="Pretrain a GPT on a text."))


# --------------------------------------------------------------------------------------------------
# The settings


@dataclass
class TrainConfig:
    # where things go
    out_dir: str = setting("run directory: last/ and best/ checkpoints, metrics.jsonl", "out")
    init_from: str = setting("scratch | resume (out_dir/last) | a GPT-2 name (gpt2, "
                             "gpt2-medium...) | a checkpoint or run directory", "scratch")
    overwrite: bool = setting("start over in an out_dir that holds a run (its best/, last/ and "
                              "metrics.jsonl are replaced)", False)
    tensorboard: bool = setting("also write TensorBoard events to out_dir/tensorboard", False)
    # data
    dataset: str = setting("shakespeare (ships with the code), fineweb10B | finewebedu10B (the "
                           "hub's GPT-2 shards), a .txt file, a folder of .txt files, a "
                           ".jsonl/.csv/.tsv(.gz) of documents or a folder of .bin shards",
                           "shakespeare")
    tokenizer: str = setting("char | gpt2 (empty: char from scratch; a checkpoint brings its own, "
                             "and another one given here is refused)", "", ("", "char", "gpt2"))
    text_column: str = setting("the text column(s) of a table of documents, comma separated "
                               "(empty: guessed)", "")
    val_fraction: float = setting("share of the documents held out for validation (of a single "
                                  "text: its last characters)", 0.1, "(0, 0.5)")
    data_dir: str = setting("where downloads and tokenized data are cached", "data")
    # the loop
    max_iters: int = setting("optimizer steps in total", 5000, ">= 0")
    eval_interval: int = setting("evaluate and write last/ every this many steps", 250, ">= 1")
    eval_iters: int = setting("batches per split in an evaluation (a fixed, seeded set)", 50,
                              ">= 1")
    eval_hellaswag: int = setting("also score this many HellaSwag validation examples at each "
                                  "evaluation (0: none; 10042: all; downloaded on first use)", 0,
                                  ">= 0")
    log_interval: int = setting("print a progress line every this many steps", 10, ">= 1")
    patience: int = setting("stop after this many evaluations without a better best metric (0: "
                            "never)", 0, ">= 0")
    batch_size: int = setting("sequences per micro-batch, all processes together", 32, ">= 1")
    gradient_accumulation_steps: int = setting("micro-batches per optimizer step", 1, ">= 1")
    block_size: int = setting("context length in tokens", 256, ">= 1")
    # the model
    n_layer: int = setting("transformer blocks", 6, ">= 1")
    n_head: int = setting("attention heads", 6, ">= 1")
    n_embd: int = setting("width of the residual stream", 384, ">= 1")
    dropout: float = setting("dropout probability", 0.0, "[0, 1)")
    bias: bool = setting("biases in Linear and LayerNorm layers (GPT-2: True)", True)
    # the optimizer: AdamW, cosine schedule with linear warmup
    learning_rate: float = setting("peak learning rate", 1e-3, ">= 0")
    min_lr: float = setting("learning rate at the end of the cosine decay", 1e-4, ">= 0")
    warmup_iters: int = setting("steps of linear warmup", 100, ">= 0")
    lr_decay_iters: int = setting("step where the cosine reaches min_lr (0: max_iters; follows "
                                  "--max_iters unless given too)", 0, ">= 0")
    weight_decay: float = setting("AdamW weight decay on matmul weights", 0.1, ">= 0")
    beta1: float = setting("AdamW beta1", 0.9, "[0, 1)")
    beta2: float = setting("AdamW beta2", 0.99, "[0, 1)")
    grad_clip: float = setting("clip the global gradient norm to this (0: off)", 1.0, ">= 0")
    # the system
    device: str = setting("auto | cpu | cuda | cuda:N | mps", "auto")
    dtype: str = setting("autocast precision", "auto", ("auto", "float32", "bfloat16", "float16"))
    compile: bool = setting("torch.compile the model (falls back to eager if it fails)", False)
    seed: int = setting("seed for init, batches and dropout", 1337, "[0, 9223372036854775807]")
    peak_flops: float = setting("peak FLOP/s of the device for MFU (0: the device's own if known)",
                                0.0, ">= 0")

    FOLLOWS = {"lr_decay_iters": "max_iters"}  # see config.parse_config

    def __post_init__(self):
        check_settings(self)
        if self.n_embd % self.n_head:
            raise UserError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                            "each head gets n_embd / n_head")

    def check_processes(self, world_size):
        """Each micro-batch is shared out row by row across the processes (see train_step), so every
        process needs a row. Checked before anything is downloaded or prepared."""
        if self.batch_size < world_size:
            raise UserError(f"batch_size {self.batch_size} cannot be shared by {world_size} "
                            "processes (each needs at least one row); use "
                            f"--batch_size={world_size} or more")


if __name__ == "__main__":
    run_main(main)

"""
Checkpoints: one directory per checkpoint, written atomically, checked when read.

    model.safetensors   the weights (safetensors: plain tensors, nothing is unpickled)
    config.json         CheckpointInfo (below): shape, task, tokenizer, labels, data, settings
    train_state.pt      what resuming needs besides the weights (last/ only): optimizer, grad
                        scaler, counters, RNG and sampler state; only tensors, numbers and
                        strings, so torch.load(weights_only=True) reads it without unpickling code
    SHA256SUMS          the sha256 of the other files, checked on every load (by hand: sha256sum -c)

A run directory holds last/ (written at every evaluation and at the end) and best/ (when validation
improves; weights and config only). This module knows the files, not the model (train.load_model).
"""

import errno
import json
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ring.config import UserError
from ring.download import sha256_of
from ring.files import read_json, read_text

WEIGHTS, CONFIG, SUMS = "model.safetensors", "config.json", "SHA256SUMS"
TRAIN_STATE = "train_state.pt"

# --------------------------------------------------------------------------------------------------
# config.json


# The model's shape, as config.json and Hugging Face's config.json give it: every field of
# model.GPTConfig, the defaults of those a file may leave out, and the largest value accepted (far
# above any GPT-2: a bound, so that a downloaded config cannot make us allocate without limit).
SHAPE = {"block_size": 1 << 20, "vocab_size": 1 << 24, "n_layer": 1024, "n_head": 1024,
         "n_embd": 1 << 16, "n_classes": 1 << 16}
SHAPE_DEFAULTS = {"dropout": 0.0, "bias": True, "n_classes": 0}


def check_shape(model, where):
    """The model's shape (model.GPTConfig's fields, a dict) checked, with SHAPE_DEFAULTS filled in:
    the one check of a shape read from a file, ours (config.json) or Hugging Face's."""
    if not isinstance(model, dict):
        raise UserError(f"{where} is damaged: it has no 'model' section")
    model = {**SHAPE_DEFAULTS, **{k: model[k] for k in (*SHAPE, *SHAPE_DEFAULTS) if k in model}}
    for key, limit in SHAPE.items():
        value, low = model.get(key), 0 if key == "n_classes" else 1
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= limit:
            raise UserError(f"{where}: {key} is {value!r:.60}, not an integer in [{low}, {limit}]")
    if model["n_embd"] % model["n_head"]:
        raise UserError(f"{where}: n_embd {model['n_embd']} is not divisible by n_head "
                        f"{model['n_head']}")
    dropout = model["dropout"]
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise UserError(f"{where}: dropout is {dropout!r:.60}, not a number in [0, 1)")
    if not isinstance(model["bias"], bool):
        raise UserError(f"{where}: bias is {model['bias']!r:.60}, not true or false")
    return model


@dataclass
class CheckpointInfo:
    """What config.json holds, and who reads it."""

    model: dict  # the shape: model.GPTConfig's fields as a dict
    task: str = "lm"  # "lm" (a GPT, next-token prediction) or "cls" (GPTClassifier, n_classes > 0)
    # data.<Tokenizer>.to_dict(): {"type": "gpt2"} or {"type": "char", "chars": "..."}; train.py
    # compares it with the data's before resuming or starting from the checkpoint
    tokenizer: dict = None
    labels: list = None  # cls: class i is labels[i] (sample.py, evaluate.py, the HF export)
    # lm: the data's manifest (its source_sha256 must match to resume; evaluate.py takes the split
    # from it); cls: where each split came from
    data: dict = None
    iter_num: int = None  # the optimizer steps behind these weights
    metrics: dict = None  # the evaluation these weights were saved with, made at evaluated_at
    evaluated_at: int = None
    run: dict = None  # the settings of the run that wrote it (resume checks the shape against them)
    source: str = None  # hf_import: where the weights were imported from (not imported twice)

    @classmethod
    def from_dict(cls, d, where):
        """Read and check a config.json's contents; anything wrong is one line naming the file."""
        model = check_shape(d.get("model"), where)
        task, tokenizer, labels = d.get("task"), d.get("tokenizer"), d.get("labels")
        if task not in ("lm", "cls") or (task == "cls") != (model["n_classes"] > 0):
            raise UserError(f"{where} is damaged: task {task!r} does not fit n_classes "
                            f"{model['n_classes']}")
        if not isinstance(tokenizer, dict) or tokenizer.get("type") not in ("char", "gpt2"):
            raise UserError(f"{where} is damaged: it names no tokenizer")
        if task == "cls" and not (isinstance(labels, list) and len(labels) == model["n_classes"]):
            raise UserError(f"{where} is damaged: a classifier with {model['n_classes']} classes "
                            "needs as many label names")
        names = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in d.items() if k in names}, "model": model})


# --------------------------------------------------------------------------------------------------
# Writing


def unwrap(model):
    """The model inside DDP and torch.compile wrappers: saved keys never start 'module.' or
    '_orig_mod.'."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def remove(path):
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def usual_permissions(directory):
    """Give every file in `directory` the mode a new file usually gets (0666 less the umask):
    safetensors creates its files readable by their owner only, which surprises whoever shares a
    checkpoint with another user."""
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def write_directory(directory, fill):
    """Create `directory` atomically with fill(tmp), which writes its files into tmp: a hidden
    sibling directory, then swapped in with renames. If the process dies at any point, either the
    previous directory or the new one is complete on disk (between the two renames the previous
    one is at .<name>.old, where find_checkpoint also looks). An OS error (disk full, read-only) is
    one line; the previous directory is left as it was."""
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    old = directory.with_name(f".{directory.name}.old")
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        remove(tmp)
        tmp.mkdir()
        try:
            fill(tmp)
            usual_permissions(tmp)
        except BaseException:
            remove(tmp)
            raise
        if directory.exists():
            remove(old)
            os.replace(directory, old)
        os.replace(tmp, directory)
        remove(old)
    except OSError as e:
        raise UserError(f"could not write {directory}: {e.strerror or e} ({e.filename or directory}"
                        "); the previous copy, if any, is intact") from None


def save_checkpoint(directory, model, info, train_state=None):
    """Write a checkpoint directory atomically (see write_directory). Non-finite weights are
    refused: a checkpoint must never hold a model that diverged."""
    model = unwrap(model)
    # safetensors refuses tensors that share memory, and one copy is enough: a tensor that shares
    # its storage with one already kept (lm_head.weight is transformer.wte.weight, weight tying) is
    # left out, and loading ties them again.
    state, seen = {}, set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            state[name] = tensor.detach().contiguous().cpu()
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise UserError(f"refusing to write {directory}: {broken[0]} holds NaN or inf")
    if isinstance(info, dict):  # the fields as a dict, e.g. {"task": "lm", "tokenizer": {...}}
        info = CheckpointInfo(model={}, **info)
    info = CheckpointInfo.from_dict({**asdict(info), "model": asdict(model.config)}, directory)

    def fill(tmp):
        save_file(state, tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(asdict(info), indent=2, default=str))
        if train_state is not None:
            try:
                torch.save(train_state, tmp / TRAIN_STATE)
            except RuntimeError as e:  # torch reports a failed write (a full disk) this way
                raise OSError(errno.EIO, str(e).splitlines()[-1].strip(),
                              str(tmp / TRAIN_STATE)) from None
        names = sorted(p.name for p in tmp.iterdir())
        (tmp / SUMS).write_text("".join(f"{sha256_of(tmp / n)}  {n}\n" for n in names))

    write_directory(directory, fill)


# --------------------------------------------------------------------------------------------------
# Reading


def find_checkpoint(path):
    """A checkpoint directory from what a user passes: the checkpoint itself, or a run directory
    (its best/, else its last/). Falls back to the .old copy left by a save interrupted mid-swap."""
    path = Path(path)
    for candidate in (path, path / "best", path / "last"):
        if (candidate / CONFIG).is_file():
            return candidate
        old = candidate.with_name(f".{candidate.name}.old")
        if not candidate.exists() and (old / CONFIG).is_file():
            return old
    raise UserError(f"no checkpoint in {path} (expected {CONFIG} and {WEIGHTS} there or in best/ "
                    "or last/)")


def verify(directory, name):
    """Check one file of a checkpoint against its SHA256SUMS. Checks fail closed: without
    SHA256SUMS, with a garbled one, or a file it does not list, the checkpoint is damaged."""
    directory, sums = Path(directory), Path(directory) / SUMS
    if not sums.is_file():
        raise UserError(f"{directory} is damaged: it has no {SUMS}, so its files cannot be checked")
    expected = {}
    for number, line in enumerate(read_text(sums).splitlines(), start=1):
        digest, _, listed = line.partition("  ")
        if len(digest) != 64 or not listed:
            raise UserError(f"{sums} is damaged: line {number} is not '<sha256>  <file name>'")
        expected[listed] = digest
    if name not in expected:
        raise UserError(f"{directory / name} is not listed in {SUMS}, so it cannot be checked; the "
                        "checkpoint is damaged")
    if not (directory / name).is_file():
        raise UserError(f"{directory / name} is missing: the checkpoint is incomplete")
    if sha256_of(directory / name) != expected[name]:
        raise UserError(f"{directory / name} is damaged: its sha256 is not the one in {SUMS}")


def read_info(directory):
    verify(directory, CONFIG)
    path = Path(directory) / CONFIG
    return CheckpointInfo.from_dict(read_json(path), path)


def read_checkpoint(path):
    """(CheckpointInfo, {name: float32 tensor}) of a checkpoint directory, or of a run directory
    (its best/, else its last/): every file checked against SHA256SUMS, the shape in config.json
    bounded. train.load_model builds the model (and checks the tensors' shapes against it)."""
    directory = find_checkpoint(path)
    info = read_info(directory)
    verify(directory, WEIGHTS)
    try:
        state = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{directory / WEIGHTS} is not a readable safetensors file ({e}); the "
                        "checkpoint is damaged") from None
    return info, {k: v.float() for k, v in state.items()}


def load_train_state(directory, counters=()):
    """What resuming needs: the optimizer, sampler and RNG states, the metrics log's position, and
    the loop's `counters` (train.TrainState's fields), each checked to be there."""
    path = Path(directory) / TRAIN_STATE
    if not path.is_file():
        raise UserError(f"{path} not found: this checkpoint cannot be resumed (it has weights "
                        "only)")
    verify(directory, TRAIN_STATE)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is unreadable ({type(e).__name__}); the checkpoint is "
                        "damaged") from None
    parts = ("optimizer", "sampler", "rng", "scaler", "log_bytes", *counters)
    missing = [k for k in parts if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserError(f"{path} has no {missing[0]} state: the checkpoint is damaged")
    return state


def check_unchanged(where, started, wanted, keys):
    """Refuse to resume `where` with settings `keys` other than those the run started with (both
    dicts of settings): a resumed run must be the run that was stopped."""
    started = started if isinstance(started, dict) else {}
    changed = [f"{k} {started[k]} -> {wanted[k]}" for k in keys
               if k in started and started[k] != wanted[k]]
    if changed:
        raise UserError(f"cannot resume {where} with other settings ({', '.join(changed)}); use "
                        "the run's own settings or a new out_dir")


def check_same_meaning(info, meta, where, resume):
    """Refuse a starting point whose weights would mean something else on this data: a classifier
    where a language model is needed, another tokenizer or character vocabulary (the same ids would
    stand for other characters), and, to resume, another text than the run was training on."""
    if info.task == "cls":
        raise UserError(f"{where} is a classifier ({', '.join(info.labels)}), not a language "
                        "model; give a language model's checkpoint")
    theirs, ours = info.tokenizer, meta["tokenizer"]
    if theirs["type"] != ours["type"]:
        raise UserError(f"{where} was trained with another tokenizer ({theirs['type']}) than the "
                        f"data's ({ours['type']}); pass --tokenizer={theirs['type']}")
    if theirs != ours:
        changed = sorted(set(theirs["chars"]) ^ set(ours["chars"]))
        raise UserError(f"{where} was trained with another tokenizer: its characters are not this "
                        f"text's ({len(changed)} differ, e.g. {changed[:5]}); a char-level model "
                        "can only continue on text with the same characters")
    source = (info.data or {}).get("source_sha256")
    if resume and source is not None and source != meta["source_sha256"]:
        raise UserError(f"cannot resume {where}: the run trained on {info.data.get('source')} and "
                        f"this text ({meta['source']}) is another one; to continue training on new "
                        f"text, start a new run with --init_from={Path(where).parent}")
